"""Run ``torchrun`` (``python -m torch.distributed.run``) as a supervised child process.

``torchrun`` is the elastic agent: it does the rendezvous, starts ``nproc`` workers per node,
watches them, and on a worker failure stops the group and restarts it up to ``max_restarts``
times (each worker then resumes from the newest valid checkpoint). This module wraps it for the
CLI (``rho train --nproc N``) and the Prefect train task:

- the agent runs in a **new session**, so a Ctrl-C or a cancelled flow run never leaves it behind
  half-signalled; its output (and the workers', which inherit its stdout) is streamed line by
  line to ``log_callback``;
- on *any* exception in the caller (KeyboardInterrupt, a Prefect cancellation, an error raised
  by ``log_callback``) the whole tree is stopped: SIGTERM to the agent's process group and to
  every descendant (torchrun starts each worker in a session of its own), a grace period, then
  SIGKILL to whatever is still alive;
- if the caller dies without running any handler (SIGKILL, a Prefect flow-run process killed
  on cancellation), Linux's parent-death signal delivers SIGTERM to the agent, which stops its
  workers;
- a non-zero exit raises :class:`RhoError` carrying the worker failures torchrun reported (rank,
  exit code or signal) and the log lines that came just before the last of them — what the
  dying worker printed, not torchrun's own traceback (:class:`LogTail`).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from rho_core.errors import ConfigError, RhoError

log = logging.getLogger(__name__)

LogCallback = Callable[[str], None]

#: Lines of output kept for the error message of a failed run.
TAIL_LINES = 40

#: torchrun's report of a failed worker: ``... failed (exitcode: -6) local_rank: 1 (pid: 263)``.
_WORKER_FAILED = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+)(?: \(pid: (\d+)\))?")


def _exit_text(code: int) -> str:
    """``-6`` → ``"signal SIGABRT"``, ``3`` → ``"exit status 3"``."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


class LogTail:
    """The last ``n`` lines of a torchrun log, and the ``n`` lines before each worker failure.

    After a failure torchrun prints its own traceback (twice: the agent's log and the raised
    ``ChildFailedError``), which alone fills a short tail and hides what the worker printed as
    it died (a Python traceback, ``terminate called after throwing …``). :meth:`report` gives
    the failures torchrun reported and the lines that came just before the last one.
    """

    def __init__(self, n: int = TAIL_LINES) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=n)
        self.failures: list[tuple[int, int, str]] = []  # (local_rank, exit code, pid or "")
        self.before_last_failure: list[str] = []

    def add(self, line: str) -> None:
        """Record one output line (without its newline)."""
        m = _WORKER_FAILED.search(line)
        if m:
            self.failures.append((int(m.group(2)), int(m.group(1)), m.group(3) or ""))
            self.before_last_failure = list(self.lines)
        self.lines.append(line)

    def report(self) -> str:
        """Text for the error message: the failures, then the lines before the last one (or,
        when torchrun reported none, the last lines)."""
        if not self.failures:
            return f"last {len(self.lines)} lines of its log:\n" + "\n".join(self.lines)
        failed = "; ".join(
            f"local rank {rank} ({_exit_text(code)}{', pid ' + pid if pid else ''})"
            for rank, code, pid in self.failures
        )
        before = self.before_last_failure
        return (
            f"failed workers, in order: {failed}; the {len(before)} log lines before the last "
            "failure:\n" + "\n".join(before)
        )


#: With torchrun's default (the agent's rendezvous TCPStore shared with the workers) the store
#: keeps the previous attempt's keys, so after a restart a rank can read a dead peer's address
#: and gloo/NCCL initialisation fails or hangs (pytorch/pytorch#135712, #167288). ``1`` gives
#: every attempt a fresh store hosted by its rank 0. Set by :func:`launch_torchrun` unless the
#: caller's environment sets it.
SHARED_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def torchrun_command(
    args: Sequence[str],
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    max_restarts: int = 0,
    *,
    python: str | None = None,
    monitor_interval_s: float = 0.5,
) -> list[str]:
    """The ``python -m torch.distributed.run ...`` argument list (validated, not run).

    ``args`` is the worker program as torchrun takes it: a script path and its arguments, or
    ``["-m", "package.module", ...]``. A single node without an endpoint uses ``--standalone``
    (a private c10d rendezvous on a free local port, so concurrent jobs never collide); otherwise
    the c10d rendezvous at ``rdzv_endpoint`` (``host:port``) with job id ``rdzv_id`` — the same
    command on every node, only ``node_rank`` differs.
    """
    if not args:
        raise ConfigError("no worker program given to torchrun")
    if nproc < 1:
        raise ConfigError(f"--nproc must be ≥ 1, got {nproc}")
    if nnodes < 1:
        raise ConfigError(f"--nnodes must be ≥ 1, got {nnodes}")
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"--node-rank {node_rank} must lie in [0, --nnodes {nnodes})")
    if max_restarts < 0:
        raise ConfigError(f"--max-restarts must be ≥ 0, got {max_restarts}")
    if nnodes > 1 and not rdzv_endpoint:
        raise ConfigError(
            "a multi-node run needs --rdzv-endpoint HOST:PORT (the address of node 0, the same "
            "on every node)"
        )
    if rdzv_endpoint is not None and ":" not in rdzv_endpoint:
        raise ConfigError(f"--rdzv-endpoint {rdzv_endpoint!r} must be HOST:PORT")
    if nnodes > 1 and not rdzv_id:
        raise ConfigError(
            "a multi-node run needs --rdzv-id: one job id shared by all nodes (e.g. $SLURM_JOB_ID)"
        )
    cmd = [python or sys.executable, "-m", "torch.distributed.run"]
    cmd += [f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}"]
    cmd += [f"--monitor-interval={monitor_interval_s}"]
    if rdzv_endpoint is None:
        cmd += ["--standalone"]
    else:
        cmd += [
            f"--nnodes={nnodes}",
            f"--node-rank={node_rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-id={rdzv_id or 'rho-' + uuid.uuid4().hex[:12]}",
        ]
    return cmd + list(args)


def _descendants(pid: int) -> list[int]:
    """All descendant process ids of ``pid`` (children first), via psutil or /proc."""
    try:
        import psutil

        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    except ImportError:  # pragma: no cover - psutil ships with the project's dependencies
        children: dict[int, list[int]] = collections.defaultdict(list)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry))
        out, todo = [], [pid]
        while todo:
            for c in children.get(todo.pop(), []):
                out.append(c)
                todo.append(c)
        return out


def _signal_tree(root: int, pids: Sequence[int], sig: int) -> None:
    """Send ``sig`` to the process group led by ``root`` and to each of ``pids``' groups."""
    own_group = os.getpgrp()
    groups = {root}
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for pgid in groups:
        if pgid == own_group:  # never signal the caller's own group
            continue
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def terminate_tree(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop ``proc`` (started with ``start_new_session=True``) and everything below it.

    SIGTERM first — torchrun forwards it to its workers and exits — then, after ``grace_s``,
    SIGKILL to every process of the tree that is still alive (recorded before the first signal,
    since workers live in their own sessions and are re-parented when the agent dies).
    """
    if proc.poll() is not None and not _descendants(proc.pid):
        return
    tree = _descendants(proc.pid)
    _signal_tree(proc.pid, tree, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not any(_alive(p) for p in tree):
            return
        time.sleep(0.05)
    tree = sorted(set(tree) | set(_descendants(proc.pid)))
    _signal_tree(proc.pid, tree, signal.SIGKILL)
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        log.error("torchrun (pid %d) survived SIGKILL", proc.pid)


#: Runs before torchrun (then ``exec``s it, same pid): asks Linux to send SIGTERM to torchrun when
#: the launching thread dies — e.g. a Prefect flow-run process killed on cancellation, or any
#: SIGKILL of the caller — so its workers are stopped even when no exception handler could run.
#: The death signal survives ``execv``; a parent already gone (ppid changed) means exit at once.
_PARENT_DEATH_SHIM = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(143)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM received by the launching process (e.g. ``kill`` of ``rho train``)."""


def _raise_on_sigterm() -> Callable[[], None]:
    """Turn SIGTERM into a :class:`Terminated` exception while torchrun runs, so the tree is
    stopped; only in the main thread and only when nobody else handles SIGTERM (Prefect does)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return lambda: None

    def _handler(signum: int, frame: object) -> None:
        raise Terminated(f"received signal {signum}")

    signal.signal(signal.SIGTERM, _handler)
    return lambda: signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)


def launch_torchrun(
    args: Sequence[str],
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    max_restarts: int = 0,
    log_callback: LogCallback | None = None,
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    grace_s: float = 10.0,
    python: str | None = None,
) -> int:
    """Run ``torchrun`` with ``args`` as the worker program and wait for it; returns 0.

    Every output line (agent and workers, stdout and stderr merged) goes to ``log_callback``
    (default: this module's logger at INFO) without its newline. ``env`` is added to the current
    environment (``PYTHONUNBUFFERED=1`` is always set so lines arrive as they are printed).
    Raises :class:`RhoError` with :meth:`LogTail.report` when torchrun exits non-zero
    (after using up ``max_restarts``); on any exception while waiting the process tree is
    terminated (:func:`terminate_tree`) and the exception re-raised.
    """
    cmd = torchrun_command(
        args, nproc, nnodes, node_rank, rdzv_endpoint, rdzv_id, max_restarts, python=python
    )
    if sys.platform.startswith("linux"):
        cmd = [cmd[0], "-c", _PARENT_DEATH_SHIM, str(os.getpid()), *cmd]
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    # torchrun sets OMP_NUM_THREADS=1 per worker with a warning when it is unset; say it explicitly.
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.setdefault(SHARED_STORE_ENV, "1")
    emit: LogCallback = log_callback or (lambda line: log.info("%s", line))
    tail = LogTail(TAIL_LINES)
    log.debug("launching: %s", " ".join(cmd))
    restore = _raise_on_sigterm()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=cwd,
        text=True,
        bufsize=1,
        errors="replace",
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.add(line)
            emit(line)
        code = proc.wait()
    except BaseException:
        terminate_tree(proc, grace_s=grace_s)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        restore()
    if code != 0:
        raise RhoError(
            f"torchrun exited with status {code} after at most {max_restarts} restart(s); "
            + tail.report()
        )
    return 0

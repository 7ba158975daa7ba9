"""Run the real Bonsai GPU tree code on an initial-conditions file and collect its snapshots.

The command is Bonsai's own::

    [mpirun -np R] bonsai2_slowdust -i IC -T t_end -t dt --snapiter snap_every \
        --snapname OUT/snap [--eps eps] [--theta theta] [extra args]

run in ``OUT`` in a new session (its own process group): on a timeout, an interrupt or any error
the whole group (mpirun and every rank) gets SIGTERM, then SIGKILL after a grace period. Bonsai
writes ``OUT/snap_<t %010.4f>`` (``-<rank>`` per MPI rank); these are collected, grouped per
snapshot and sorted by time. stdout/stderr go to ``OUT/bonsai.log``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from rho_core.data.particles import group_snapshot_paths, parse_snapshot_name
from rho_core.errors import ConfigError, RhoError


class SimulationError(RhoError):
    """A simulation run failed (non-zero exit, timeout, no snapshots); the message has the log."""


@dataclass(frozen=True)
class BonsaiConfig:
    """How to call Bonsai.

    Attributes:
        binary: path or name of the Bonsai executable (``bonsai2_slowdust``).
        mpirun: MPI launcher (``"mpirun"``, ``"srun"``...) or ``None`` for a single process.
        n_ranks: MPI ranks (``-np``) when ``mpirun`` is set.
        theta: opening angle (``--theta``); ``None`` leaves Bonsai's default.
        softening: ``--eps`` [kpc]; ``None`` leaves Bonsai's default.
        extra_args: appended verbatim.
        timeout: seconds before the run is killed (``None``: no limit).
        grace: seconds between SIGTERM and SIGKILL.
    """

    binary: str = "bonsai2_slowdust"
    mpirun: str | None = None
    n_ranks: int = 1
    theta: float | None = 0.4
    softening: float | None = None
    extra_args: tuple[str, ...] = ()
    timeout: float | None = None
    grace: float = 5.0
    env: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.n_ranks < 1:
            raise ConfigError(f"MPI ranks must be >= 1, got {self.n_ranks}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout}")


def resolve_binary(binary: str) -> str:
    """The executable's full path, or :class:`ConfigError` saying how to configure it."""
    found = shutil.which(binary) if os.sep not in binary else binary
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise ConfigError(
            f"Bonsai binary {binary!r} not found or not executable; pass --bonsai-binary PATH "
            "(or use --engine builtin)"
        )
    return found


def bonsai_command(
    config: BonsaiConfig,
    ic_path: Path,
    out_dir: Path,
    *,
    t_end: float,
    dt: float,
    snap_every: float,
    snapname: str = "snap",
) -> list[str]:
    """The argument vector for one run."""
    cmd: list[str] = []
    if config.mpirun:
        cmd += shlex.split(config.mpirun) + ["-np", str(config.n_ranks)]
    cmd += [
        resolve_binary(config.binary),
        "-i",
        str(ic_path),
        "-T",
        repr(float(t_end)),
        "-t",
        repr(float(dt)),
        "--snapiter",
        repr(float(snap_every)),
        "--snapname",
        str(out_dir / snapname),
    ]
    if config.softening is not None:
        cmd += ["--eps", repr(float(config.softening))]
    if config.theta is not None:
        cmd += ["--theta", repr(float(config.theta))]
    return cmd + list(config.extra_args)


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def collect_snapshots(out_dir: Path, snapname: str = "snap") -> list[tuple[Path, ...]]:
    """Bonsai snapshots ``<snapname>_<time>[-rank]`` in ``out_dir``, grouped, by time."""
    files = []
    for p in sorted(out_dir.iterdir()):
        parsed = parse_snapshot_name(p)
        if parsed and parsed.snapname == snapname and p.is_file() and not p.name.endswith(".tmp"):
            files.append(p)
    groups = group_snapshot_paths(files)
    groups.sort(key=lambda g: parse_snapshot_name(g[0]).time)
    return groups


def run_bonsai(
    config: BonsaiConfig,
    ic_path: str | Path,
    out_dir: str | Path,
    *,
    t_end: float,
    dt: float,
    snap_every: float,
    snapname: str = "snap",
) -> list[tuple[Path, ...]]:
    """Run Bonsai to ``t_end`` and return its snapshots (one tuple of rank files each).

    Raises:
        ConfigError: no usable binary. SimulationError: non-zero exit, timeout or no snapshots
        (with the tail of ``bonsai.log``).
    """
    ic_path = Path(ic_path).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = bonsai_command(
        config, ic_path, out_dir, t_end=t_end, dt=dt, snap_every=snap_every, snapname=snapname
    )
    log_path = out_dir / "bonsai.log"
    env = {**os.environ, **config.env}
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=out_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=config.timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc, config.grace)
            raise SimulationError(
                f"Bonsai run for {ic_path.name} exceeded {config.timeout} s and was killed; "
                f"log: {log_path}{_tail(log_path)}"
            ) from exc
        except BaseException:
            _kill_group(proc, config.grace)
            raise
    if rc != 0:
        raise SimulationError(
            f"Bonsai exited with status {rc} after {time.monotonic() - started:.1f} s "
            f"({shlex.join(cmd)}); log: {log_path}{_tail(log_path)}"
        )
    snaps = collect_snapshots(out_dir, snapname)
    if not snaps:
        raise SimulationError(
            f"Bonsai wrote no snapshots {snapname}_* in {out_dir}; log: {log_path}{_tail(log_path)}"
        )
    return snaps


def _tail(path: Path, n: int = 1500) -> str:
    """``" (last line: ...)"`` with the log's last non-empty line (the error message stays one
    line; the whole log is in the file), or ``""``."""
    try:
        text = path.read_bytes()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f" (last line: {lines[-1][:300]})" if lines else ""

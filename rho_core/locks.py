"""Advisory exclusive locks for writers of stores and run directories (``fcntl.flock``).

A lock is a small file holding the owner's pid. It is taken non-blocking: a second writer gets a
project error naming the path and the pid of the process that holds it, instead of waiting or
silently sharing the path. The kernel releases a lock when its process dies (SIGKILL included),
so a crashed writer never leaves a stale lock behind; the lock *file* stays (deleting it would let
two processes lock two different files of the same name), and is reused by the next writer.

- A store ``DIR/NAME`` is locked through ``DIR/.NAME.lock`` — a sibling, because a store that is
  created or overwritten is built under a temporary sibling name and renamed into place, so the
  lock cannot live inside the directory it protects.
- A run directory ``RUN`` is locked through ``RUN/.rho-train.lock`` (:func:`lock_run_dir`).

Locks are per open file description, so a second writer in the *same* process is refused too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from rho_core.errors import ConfigError, RhoError, StoreError

__all__ = [
    "FileLock",
    "LockBusy",
    "RUN_LOCK_NAME",
    "RUN_LOCK_ENV",
    "acquire",
    "lock_store",
    "lock_run_dir",
    "holder_pid",
    "store_lock_path",
]

RUN_LOCK_NAME = ".rho-train.lock"
RUN_LOCK_ENV = "RHO_RUN_DIR_LOCKED"
"""Set by a launcher that holds a run directory's lock for its torchrun workers (the real path);
:func:`lock_run_dir` on that path then does not lock again (the workers would block on it)."""


class LockBusy(RhoError):
    """The lock is held by another process (``pid`` when known)."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def store_lock_path(store: str | os.PathLike) -> Path:
    """``DIR/.NAME.lock`` for the store ``DIR/NAME``."""
    p = Path(os.path.abspath(store))
    return p.parent / f".{p.name}.lock"


def holder_pid(lock_path: str | os.PathLike) -> int | None:
    """The pid written in a lock file (``None`` if unreadable or empty)."""
    try:
        text = Path(lock_path).read_text().strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


class FileLock:
    """An exclusive ``flock`` held on ``path``; :meth:`release` (or leaving ``with``) drops it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.release()


def acquire(lock_path: str | os.PathLike, busy_message: str) -> FileLock:
    """Take the exclusive lock ``lock_path`` (created if missing) without waiting.

    ``busy_message`` may contain ``{pid}`` (the holder's pid, or "unknown").

    Raises:
        LockBusy: another process holds it.
        OSError: the lock file cannot be created (unwritable or missing directory).
    """
    lock_path = Path(lock_path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        pid = holder_pid(lock_path)
        raise LockBusy(
            busy_message.format(pid=pid if pid is not None else "unknown"), pid
        ) from None
    with contextlib.suppress(OSError):  # the pid is informative only
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return FileLock(lock_path, fd)


def lock_store(store: str | os.PathLike) -> FileLock:
    """Lock the store path ``store`` for writing (whether or not it exists yet).

    Raises:
        StoreError: another process is writing it, or its directory cannot hold the lock file.
    """
    store = Path(store)
    lock_path = store_lock_path(store)
    try:
        return acquire(
            lock_path,
            f"store '{store}' is in use: being written by another process (pid {{pid}}); "
            "wait for it to finish (or stop it) and run again",
        )
    except LockBusy as exc:
        raise StoreError(str(exc)) from None
    except OSError as exc:
        raise StoreError(
            f"cannot create store '{store}': cannot create its lock file {lock_path} "
            f"({exc.strerror or exc}); choose a writable location"
        ) from None


@contextlib.contextmanager
def lock_run_dir(path: str | os.PathLike) -> Iterator[FileLock | None]:
    """Hold the exclusive lock of the run directory ``path`` (created if missing) while inside.

    Two trainings writing checkpoints into one run directory would interleave their files
    (``ckpt-N.pt`` holding either run's weights); the second one gets a :class:`ConfigError`.

    Raises:
        ConfigError: ``path`` is a file, cannot be created, or another process trains in it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run directory '{path}' is an existing file; give a directory for --out")
    if os.environ.get(RUN_LOCK_ENV) and os.environ[RUN_LOCK_ENV] == os.path.realpath(path):
        yield None  # type: ignore[misc] - the launcher of this worker holds it
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the run directory '{path}' ({exc.strerror or exc}); "
            "choose another --out"
        ) from None
    try:
        lock = acquire(
            path / RUN_LOCK_NAME,
            f"run directory '{path}' is in use: another training process (pid {{pid}}) writes "
            "its checkpoints; wait for it to finish or choose another --out",
        )
    except LockBusy as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot lock the run directory '{path}' ({exc.strerror or exc}); "
            "choose a writable --out"
        ) from None
    try:
        yield lock
    finally:
        lock.release()

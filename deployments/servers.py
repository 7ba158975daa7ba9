"""Start, probe and stop the local services: a Prefect API server and an MLflow tracking server.

Each service runs as a child process in its own session (process group), so stopping it stops
every process it spawned (uvicorn workers, job consumers): SIGTERM to the group, a grace period,
then SIGKILL. Both bind to 127.0.0.1 only. Used by ``rho ui``, ``rho serve`` and the tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
PREFECT_PORT = 4200
MLFLOW_PORT = 5000


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (racy by nature, fine for tests and local use)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _bin(name: str) -> str:
    """The console script ``name`` next to this interpreter (the venv's), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def start_prefect_server(
    port: int = PREFECT_PORT, env: dict[str, str] | None = None, log_file=None
) -> subprocess.Popen:
    """``prefect server start --host 127.0.0.1 --port PORT`` in its own process group."""
    e = dict(os.environ if env is None else env)
    e.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    e.setdefault("PREFECT_UI_ENABLED", "true")
    # The server must not talk to itself through a stale client setting.
    e.pop("PREFECT_API_URL", None)
    cmd = [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    return subprocess.Popen(
        cmd,
        env=e,
        stdout=log_file or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_mlflow_server(
    backend_uri: str,
    artifacts: str | os.PathLike | None = None,
    port: int = MLFLOW_PORT,
    env: dict[str, str] | None = None,
    log_file=None,
) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1 with one worker and job execution off (starts in ≈ 8 s)."""
    e = dict(os.environ if env is None else env)
    e["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [
        _bin("mlflow"),
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri,
    ]
    if artifacts is not None:
        cmd += ["--artifacts-destination", str(artifacts)]
    return subprocess.Popen(
        cmd,
        env=e,
        stdout=log_file or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_healthy(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers HTTP 200; raise ``TimeoutError`` (or if ``proc`` dies)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not become healthy within {timeout:.0f} s ({last})")


def prefect_health_url(port: int) -> str:
    return f"http://{HOST}:{port}/api/health"


def mlflow_health_url(port: int) -> str:
    return f"http://{HOST}:{port}/health"


def stop(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """Stop a process started here and its whole group: SIGTERM, wait ``grace`` s, SIGKILL."""
    if proc is None or proc.poll() is not None and not _group_alive(proc.pid):
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(proc.pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

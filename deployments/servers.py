"""Start, probe and stop the local services: a Prefect API server and an MLflow tracking server.

Each service runs as a child process in its own session (process group), so stopping it stops
every process it spawned (uvicorn workers, job consumers): SIGTERM to the group, a grace period,
then SIGKILL. Both bind to 127.0.0.1 only. Used by ``rho ui``, ``rho serve`` and the tests.

Binding to loopback does not keep web pages out: any page open in the user's browser can send
requests to ``127.0.0.1``. The Prefect server is therefore started with

- CORS restricted to its own UI's origins (``PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS`` =
  ``http://127.0.0.1:PORT,http://localhost:PORT``; Prefect's default is ``*``), so other pages
  cannot read its answers or send preflighted (JSON) requests;
- CSRF protection on (``PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED``): a state-changing request
  (e.g. creating a flow run) needs a token that only a same-origin page can read — this stops
  the "simple" cross-origin POSTs that CORS does not (a body without a content type);
- optionally Basic authentication (``PREFECT_SERVER_API_AUTH_STRING='user:password'``, passed
  through from the environment or ``rho ui --auth``), which also covers DNS-rebinding pages;
  clients then need ``PREFECT_API_AUTH_STRING`` with the same value.

Each setting is only a default: a value already in the environment wins (documented in
``docs/reliability.md``). MLflow's server already refuses cross-origin requests (403).
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


def check_port(port: int, option: str = "port") -> int:
    """``port`` if it is a TCP port number (1–65535), else :class:`ConfigError`."""
    from rho_core.errors import ConfigError

    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"{option} must be a TCP port in 1–65535, got {port}")
    return int(port)


def prefect_security_env(port: int, auth_string: str | None = None) -> dict[str, str]:
    """The Prefect server settings that keep other web pages out (see the module docstring)."""
    env = {
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": f"http://{HOST}:{port},http://localhost:{port}",
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
    }
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    return env


def start_prefect_server(
    port: int = PREFECT_PORT,
    env: dict[str, str] | None = None,
    log_file=None,
    auth_string: str | None = None,
) -> subprocess.Popen:
    """``prefect server start --host 127.0.0.1 --port PORT`` in its own process group, with CORS
    limited to its own origin, CSRF protection on and, with ``auth_string`` ('user:password'),
    Basic authentication (values already in the environment win)."""
    e = dict(os.environ if env is None else env)
    e.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    e.setdefault("PREFECT_UI_ENABLED", "true")
    for key, value in prefect_security_env(port, auth_string).items():
        e.setdefault(key, value)
    # The web UI calls the API at PREFECT_UI_API_URL, which Prefect derives from its own default
    # port, not from --port: on any other port the UI would show "Can't connect to Server API".
    e.setdefault("PREFECT_UI_API_URL", f"http://{HOST}:{port}/api")
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

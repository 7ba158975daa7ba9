"""`rho ui` against a real Prefect server (issue 14, items 9 and 11): other web origins are kept
out (CORS limited to the UI's own origin, CSRF token required for changes), a Prefect client
still works, and SIGTERM stops every server process like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deployments import servers

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # a Prefect server takes 10-40 s to start on a busy machine


def _request(url: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    port = servers.free_port()
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(tmp / "prefect"),
        RHO_DATA_DIR=str(tmp / "data"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    for key in list(env):
        if key.startswith(("PREFECT_SERVER_API_", "PREFECT_API_")):
            env.pop(key)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rho_cli.main", "ui", "--no-mlflow", "--prefect-port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        servers.wait_healthy(servers.prefect_health_url(port), timeout=180, proc=proc)
        yield proc, port, env
    finally:
        if proc.poll() is None:
            # SIGTERM, not SIGKILL: `rho ui` then stops the servers it started in their own
            # sessions (a SIGKILL would leave them running after the tests).
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_other_origins_are_kept_out(ui):
    _, port, _ = ui
    api = f"http://127.0.0.1:{port}/api"
    evil = {"Origin": "http://evil.example"}
    # preflight of a JSON request from another page: refused, no Allow-Origin header
    code, headers, _ = _request(
        f"{api}/flows/", "OPTIONS", {**evil, "Access-Control-Request-Method": "POST"}
    )
    assert code == 400 and "access-control-allow-origin" not in {k.lower() for k in headers}
    own = {"Origin": f"http://127.0.0.1:{port}", "Access-Control-Request-Method": "POST"}
    code, headers, _ = _request(f"{api}/flows/", "OPTIONS", own)
    assert code == 200
    assert {k.lower(): v for k, v in headers.items()}["access-control-allow-origin"] == own[
        "Origin"
    ]
    # a "simple" cross-origin POST (no preflight; Prefect defaults its body to JSON): no token
    code, _, body = _request(f"{api}/flows/", "POST", evil, b'{"name": "evil"}')
    assert code == 403 and b"CSRF" in body


def test_a_prefect_client_still_runs_flows(ui):
    _, port, env = ui
    code = "from prefect import flow\n@flow\ndef f():\n    return 41 + 1\nprint('result', f())\n"
    run_env = dict(env, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    out = subprocess.run(
        [sys.executable, "-c", code], env=run_env, capture_output=True, text=True, timeout=180
    )
    assert "result 42" in out.stdout, out.stderr[-2000:]


def test_the_web_ui_calls_the_api_on_its_own_port(ui):
    """The UI reads its API address from /ui-settings; on a port other than 4200 it must
    still point at this server (Prefect derives it from its default port otherwise)."""
    import json

    _, port, _ = ui
    code, _, body = _request(f"http://127.0.0.1:{port}/ui-settings")
    assert code == 200
    assert json.loads(body)["api_url"] == f"http://127.0.0.1:{port}/api"


def test_sigterm_stops_both_like_ctrl_c(ui):
    proc, port, _ = ui
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM: stopping the servers" in out
    deadline = time.monotonic() + 20
    while servers.port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not servers.port_in_use(port)

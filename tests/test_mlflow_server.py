"""A real ``mlflow server`` on 127.0.0.1 (free port) serves a run logged by the tracking module.

The run is logged straight into a temporary SQLite database, then the server (one worker, job
execution off, its own process group) is started on that database and asked over REST.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

from deployments import servers


def _get(port: int, endpoint: str, **query) -> dict:
    url = f"http://127.0.0.1:{port}{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, _mlflow_template_db):
    """A run with params, metrics and an artifact in a fresh SQLite store (module scope)."""
    import os
    import shutil

    from tasks import tracking

    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copyfile(_mlflow_template_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        run_id = tracking.start_run("server_test", run_name="rest")
        tracking.log_params(run_id, {"train": {"steps": 7}})
        tracking.log_metrics(run_id, {"wasserstein": 0.125, "rel_l2": 0.5})
        note = root / "note.txt"
        note.write_text("hello")
        tracking.log_artifact(run_id, note, "notes")
        tracking.end_run(run_id)
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return uri, root, run_id


@pytest.fixture(scope="module")
def mlflow_server(logged_run):
    uri, root, _ = logged_run
    port = servers.free_port()
    log = open(root / "server.log", "wb")
    proc = servers.start_mlflow_server(uri, root / "mlartifacts", port, log_file=log)
    try:
        servers.wait_healthy(servers.mlflow_health_url(port), timeout=120, proc=proc)
        yield port, proc
    finally:
        servers.stop(proc)
        log.close()


def test_server_returns_the_run_over_rest(mlflow_server, logged_run):
    port, _ = mlflow_server
    _, _, run_id = logged_run
    run = _get(port, "/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert params == {"train.steps": "7"}
    assert metrics == {"wasserstein": 0.125, "rel_l2": 0.5}
    exps = _get(port, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="rho-server_test")
    assert exps["experiment"]["experiment_id"] == run["info"]["experiment_id"]
    files = _get(port, "/api/2.0/mlflow/artifacts/list", run_id=run_id, path="notes")
    assert [f["path"] for f in files["files"]] == ["notes/note.txt"]


def test_stop_ends_the_whole_process_group(mlflow_server):
    """Runs last in this module: stopping leaves no process of the server's group behind."""
    port, proc = mlflow_server
    servers.stop(proc)
    assert proc.poll() is not None
    assert not servers._group_alive(proc.pid)
    assert not servers.port_in_use(port)

"""A real ``prefect server`` on 127.0.0.1 (free port) and ``python -m deployments.serve`` in a
subprocess: the deployments and the retrain schedule are found through the Prefect client and
a ``pipeline`` run triggered with tiny parameters completes.
Everything started here is stopped here (process-group kills).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments import servers
from rho_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CRON = "30 3 * * *"
TINY = {
    "data": {"size": 8, "l_max": 1},
    "model": {"base_channels": 8, "channel_mult": [1, 2], "attention": False, "cond_dim": 16},
    "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 1},
    "evaluate": {"steps": 2, "n_conditions": 2},
    "register_model": False,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, _mlflow_template_db):
    """(api_url, tmp root): a Prefect server plus the served deployments, both torn down."""
    import shutil

    root = tmp_path_factory.mktemp("deploy")
    shutil.copyfile(_mlflow_template_db, root / "mlflow.db")
    port = servers.free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = dict(os.environ, PREFECT_HOME=str(root / "server-home"))
    server_log = open(root / "server.log", "wb")
    server = servers.start_prefect_server(port, env=server_env, log_file=server_log)
    serve_log = open(root / "serve.log", "wb")
    serve = None
    try:
        servers.wait_healthy(servers.prefect_health_url(port), timeout=120, proc=server)
        serve_env = dict(
            os.environ,
            PREFECT_API_URL=api,
            PREFECT_HOME=str(root / "client-home"),
            PREFECT_RUNNER_POLL_FREQUENCY="1",
            MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
            RHO_DATA_DIR=str(root / "data"),
            RHO_RETRAIN_CRON=CRON,
        )
        serve = subprocess.Popen(
            [sys.executable, "-m", "deployments.serve"],
            cwd=REPO,
            env=serve_env,
            stdout=serve_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        yield api, root
    finally:
        servers.stop(serve)
        servers.stop(server)
        serve_log.close()
        server_log.close()


def _client(api: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ctx = temporary_settings({PREFECT_API_URL: api})
    ctx.__enter__()
    return ctx, get_client(sync_client=True)


def _wait_for_deployment(client, name: str, timeout: float = 150.0):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _wait_final(client, run_id, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1.0)
    raise TimeoutError(f"flow run {run_id} did not finish within {timeout} s")


def test_deployments_schedule_and_runs(served):
    api, root = served
    ctx, client = _client(api)
    try:
        with client:
            pipe = _wait_for_deployment(client, "pipeline/pipeline")
            retrain = _wait_for_deployment(client, "retrain/retrain")
            ingest = _wait_for_deployment(client, "ingest-bonsai/ingest-bonsai")
            # the form is prefilled with what runs: the quick preset in full
            from deployments.serve import pipeline_form_defaults

            assert pipe.parameters == pipeline_form_defaults() and not pipe.schedules
            assert [s.schedule.cron for s in retrain.schedules] == [CRON]
            assert retrain.schedules[0].active
            schema = ingest.parameter_openapi_schema
            assert "params" in schema["properties"]

            # Trigger the pipeline with tiny parameters (failing inputs: see test_flows.py).
            good = client.create_flow_run_from_deployment(
                pipe.id, parameters={"params": TINY, "quick": True}
            )
            good_run = _wait_final(client, good.id)
            log_tail = (root / "serve.log").read_text(errors="replace")[-3000:]
            assert good_run.state.is_completed(), log_tail
            assert good_run.parameters["params"]["train"]["steps"] == 3
    finally:
        ctx.__exit__(None, None, None)
    # the good run wrote its store and run folder under the served data folder
    assert list((root / "data" / "stores").glob("sh-8-l1-real.zarr"))
    assert list((root / "data" / "runs").glob("spherical_harmonics-*/eval/samples.npz"))


def test_serve_refuses_without_an_api(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.serve import require_api, retrain_cron

    with temporary_settings({PREFECT_API_URL: None}):
        with pytest.raises(ConfigError, match="rho ui"):
            require_api()
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{servers.free_port()}/api"}):
        with pytest.raises(ConfigError, match="does not answer"):
            require_api()
    monkeypatch.setenv("RHO_RETRAIN_CRON", "5 4 * * 1")
    assert retrain_cron() == "5 4 * * 1"
    with pytest.raises(ConfigError, match="not a valid cron"):
        retrain_cron("every night")


def test_prefect_yaml_points_at_real_flows():
    import importlib

    import yaml

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert names == {"pipeline", "retrain", "ingest-bonsai"}
    for d in spec["deployments"]:
        path, func = d["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert hasattr(getattr(module, func), "to_deployment")
        assert d["work_pool"]["name"] == "rho-process"
    (retrain,) = [d for d in spec["deployments"] if d["name"] == "retrain"]
    assert retrain["schedules"][0]["cron"] == "0 2 * * *"


def test_cli_user_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from rho_cli.main import main

    with temporary_settings({PREFECT_API_URL: None}):
        assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rho serve: error: no Prefect API") and "rho ui" in err
    assert "\n" not in err

    assert main(["pipeline", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {size: 2}\n")
    assert main(["pipeline", "--quick", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rho pipeline: error: pipeline parameter data.size") and "\n" not in err

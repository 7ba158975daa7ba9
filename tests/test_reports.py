"""Prefect report artifacts (keys, types, content) read back from a real Prefect API, and the
Prefect flow-run tags on an MLflow run."""

from __future__ import annotations

import pytest

from tasks import reports

RESULT = {
    "store": "/data/stores/sh.zarr",
    "run_dir": "/data/runs/sh-1",
    "figures": {"denoising": "/data/runs/sh-1/eval/figures/denoising.png"},
    "mlflow_run_id": "abc123",
    "mlflow_figure_urls": {
        "denoising": "http://mlflow.example:5000/get-artifact?path=figures%2Fdenoising.png&run_uuid=abc123"
    },
    "mlflow_experiment": "rho-spherical_harmonics",
    "mlflow_url": "http://127.0.0.1:5000/#/experiments/1/runs/abc123",
    "mlflow_tracking_uri": "sqlite:////data/mlflow.db",
    "mlflow_model_name": "rho-spherical_harmonics",
    "mlflow_model_version": "3",
    "mlflow_champion": True,
    "train_steps": 300,
    "train_samples_per_s": 12.5,
}
SCORES = {
    "per_condition": {
        "l=1,m=0": {"wasserstein": 0.0123, "rel_l2": 0.2},
        "l=2,m=-1": {"wasserstein": 0.05, "rel_l2": 0.4},
    },
    "wasserstein_mean": 0.03115,
    "rel_l2_mean": 0.3,
    "n_conditions": 2,
}


@pytest.mark.parametrize(
    ("parts", "key"),
    [
        (("spherical_harmonics", "report"), "spherical-harmonics-report"),
        (("Galaxy Merger", "fig", "slices.png"), "galaxy-merger-fig-slices-png"),
        (("--", ""), "rho"),
    ],
)
def test_artifact_keys_are_valid(parts, key):
    assert reports.artifact_key(*parts) == key


def test_report_markdown_has_scores_link_and_decision():
    md = reports.report_markdown(RESULT, SCORES, {"denoising": "http://x/get-artifact?p=1"})
    assert "| condition | wasserstein | rel_l2 |" in md
    assert "| l=2,m=-1 | 0.05 | 0.4 |" in md
    assert "[abc123](http://127.0.0.1:5000/#/experiments/1/runs/abc123)" in md
    assert "version 3 **became the champion**" in md
    assert "![denoising](http://x/get-artifact?p=1)" in md
    assert "wasserstein 0.03115, rel_l2 0.3" in md
    lost = reports.report_markdown({**RESULT, "mlflow_champion": False}, SCORES)
    assert "did not beat the champion" in lost


def test_artifacts_are_listed_by_the_prefect_api(prefect_harness):
    """Inside a flow run: a keyed markdown report, a scores table, one image per figure (an MLflow
    artifact URL) and a progress artifact that ends at 100 %; all listed for the flow run."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runtime import flow_run

    assert reports.publish_report(RESULT, SCORES) == {}  # outside a run: nothing, no error

    @flow(name="report-test")
    def publish() -> str:
        ids = reports.publish_report(RESULT, SCORES)
        assert set(ids) == {
            "spherical-harmonics-report",
            "spherical-harmonics-scores",
            "spherical-harmonics-fig-denoising",
        }
        art = None
        for frac in (0.0, 0.5, 1.0):
            art = reports.training_progress(frac, art, key="spherical_harmonics-training-progress")
        return str(flow_run.id)

    run_id = publish()
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    by_key = {a.key: a for a in arts}
    assert set(by_key) == {
        "spherical-harmonics-report",
        "spherical-harmonics-scores",
        "spherical-harmonics-fig-denoising",
        "spherical-harmonics-training-progress",
    }
    assert by_key["spherical-harmonics-report"].type == "markdown"
    assert "became the champion" in by_key["spherical-harmonics-report"].data
    assert by_key["spherical-harmonics-scores"].type == "table"
    assert "l=2,m=-1" in str(by_key["spherical-harmonics-scores"].data)
    image = by_key["spherical-harmonics-fig-denoising"]
    assert image.type == "image"
    assert image.data.startswith("http://mlflow.example:5000/get-artifact?")
    assert "run_uuid=abc123" in image.data and "figures%2Fdenoising.png" in image.data
    progress = by_key["spherical-harmonics-training-progress"]
    assert progress.type == "progress" and float(progress.data) == 100.0


def test_mlflow_run_is_tagged_with_the_prefect_flow_run(prefect_harness, mlflow_uri):
    from prefect import flow
    from prefect.runtime import flow_run

    from tasks import tracking

    @flow(name="tag-test")
    def opened() -> tuple[str, str]:
        return tracking.start_run("unit_test"), str(flow_run.id)

    run_id, fr_id = opened()
    tags = tracking.client().get_run(run_id).data.tags
    assert tags["prefect.flow_run_id"] == fr_id
    assert tags["prefect.flow_name"] == "tag-test"
    assert tags["prefect.flow_run_url"].endswith(f"/runs/flow-run/{fr_id}")
    assert tracking.prefect_context() == {}  # outside a flow run


@pytest.mark.slow  # an MLflow server takes 8-25 s to start on a busy machine
def test_image_urls_are_served_by_the_mlflow_server(mlflow_uri, tmp_path, monkeypatch):
    """The URL an image artifact points at returns the PNG from a real MLflow server, and the
    server reports the experiment's model-development kind (what selects the UI's view)."""
    import json
    import urllib.request

    from deployments import servers
    from rho_core import plots
    from tasks import tracking

    run_id = tracking.start_run("unit_test")
    tracking.log_figure(run_id, plots.loss_curve([1, 2], [1.0, 0.5]), "figures/loss.png")
    tracking.end_run(run_id)
    port = servers.free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("RHO_MLFLOW_UI", base)
    root = tmp_path / "mlflow"
    with open(tmp_path / "server.log", "wb") as log:
        proc = servers.start_mlflow_server(mlflow_uri, root / "mlartifacts", port, log_file=log)
        try:
            servers.wait_healthy(servers.mlflow_health_url(port), timeout=120, proc=proc)
            with urllib.request.urlopen(tracking.artifact_url(run_id, "figures/loss.png")) as r:
                assert r.read(8) == b"\x89PNG\r\n\x1a\n"
            url = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=rho-unit_test"
            with urllib.request.urlopen(url) as r:
                tags = {t["key"]: t["value"] for t in json.loads(r.read())["experiment"]["tags"]}
            assert tags["mlflow.experimentKind"] == "custom_model_development"
            assert tracking.run_url(run_id).startswith(f"{base}/#/experiments/")
        finally:
            servers.stop(proc)

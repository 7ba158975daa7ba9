"""`rho infer --mlflow-run`: the posterior summary lands in a real (SQLite) MLflow run."""

from __future__ import annotations

import json

import pytest

from rho_cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_infer_logs_posterior_to_mlflow(tmp_path, mlflow_uri) -> None:
    from test_cli_likelihood import _checkpoint, _store

    from tasks import tracking

    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path)
    run_id = tracking.start_run("test", run_name="infer-test")
    out = tmp_path / "inf"
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0.2:0.8:3", "--method", "elbo", "--samples", "4", "--quiet",
                 "--out", str(out), "--mlflow-run", run_id])  # fmt: skip
    assert code == 0
    meta = json.loads((out / "summary.json").read_text())
    run = tracking.client().get_run(run_id)
    m = run.data.metrics
    assert m["infer/a/mean"] == pytest.approx(meta["posterior"]["a"]["mean"])
    assert m["infer/a/ci95_hi"] == pytest.approx(meta["posterior"]["a"]["ci95"][1])
    assert m["infer/a/true"] == pytest.approx(0.5) and 0.0 <= m["infer/a/pit"] <= 1.0
    assert run.data.params["infer.method"] == "elbo"
    assert run.data.params["infer.grid.a"] == "0.2:0.8:3"
    arts = {a.path for a in tracking.client().list_artifacts(run_id, "infer")}
    assert {"infer/posterior.csv", "infer/summary.json", "infer/posterior.png"} <= arts

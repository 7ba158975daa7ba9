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


def test_aggregate_metrics_over_fields() -> None:
    """The pipeline's aggregates: mean |mean − true|/std, mean |mean − exact|/exact std and the
    median std ratio, from the per-field summaries (hand-computed values)."""
    from types import SimpleNamespace

    from tasks.inference import aggregate_metrics

    def field(mean, std, true, ex_m, ex_s):
        post = {
            "n": {"mean": mean, "std": std, "true": true, "exact_mean": ex_m, "exact_std": ex_s}
        }
        return SimpleNamespace(meta={"posterior": post}, posterior=SimpleNamespace(names=("n",)))

    infs = [field(-1.5, 0.1, -1.6, -1.55, 0.05), field(-2.0, 0.2, -2.0, -2.1, 0.1),
            field(-1.0, 0.3, -1.3, -1.0, 0.3)]  # fmt: skip
    agg = aggregate_metrics(infs)
    assert agg["infer/n/abs_z_true"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert agg["infer/n/abs_z_exact"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert agg["infer/n/std_ratio"] == pytest.approx(2.0)  # median of 2, 2, 1
    assert aggregate_metrics([]) == {}

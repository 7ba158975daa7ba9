"""Flows under the Prefect test harness with a temporary SQLite MLflow: the pipeline end to end
(tiny sizes), the data flow's cache, and failing inputs.

Real components throughout: Prefect (harness server), MLflow (SQLite), Zarr, torch on CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from flows.params import PipelineParams, quick_preset, resolve

TINY = {
    "data": {"size": 8, "l_max": 1},
    "model": {"base_channels": 8, "channel_mult": [1, 2], "attention": False, "cond_dim": 16},
    "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 2},
    "evaluate": {"steps": 3, "n_conditions": 2},
}


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RHO_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def _task_states(flow_run_id) -> dict[str, str]:
    """Task name -> state name of one flow run, read back from the Prefect API."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    # Prefect 3 reports task-run states through events, processed by the server shortly after
    # the flow returns: poll until every task run has its final state.
    deadline = time.monotonic() + 20
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = runs and all(r.state is not None and r.state.is_final() for r in runs)
            if done or time.monotonic() > deadline:
                return {r.name: (r.state.name if r.state else None) for r in runs}
            time.sleep(0.2)


# ----------------------------------------------------------------------------- parameters
def test_resolve_merges_explicit_fields_over_the_quick_preset():
    q = quick_preset()
    assert (q.data.size, q.data.l_max, q.train.steps) == (16, 2, 300)
    p = resolve(PipelineParams.model_validate({"train": {"steps": 5}}), quick=True)
    assert p.train.steps == 5 and p.train.batch_size == q.train.batch_size
    assert p.data.size == 16 and p.model.base_channels == q.model.base_channels
    full = resolve(None, quick=False)
    assert full.data.size == 32 and full.data.l_max == 6  # the paper's experiment
    # The Prefect UI form sends every field, defaults included: the preset must survive that,
    # while a field the user changed in the form still wins.
    form = PipelineParams().model_dump(mode="json")
    form["train"]["steps"] = 7
    ui = resolve(form, quick=True)
    assert (ui.data.size, ui.data.l_max, ui.train.steps) == (16, 2, 7)
    assert ui.model.base_channels == q.model.base_channels
    with pytest.raises(ValueError, match="size"):
        PipelineParams.model_validate({"data": {"size": 2}})


def test_flow_parameters_render_as_a_form():
    """The Prefect UI builds its form from the parameter schema: types, defaults, descriptions."""
    from flows.pipeline import pipeline, retrain
    from flows.train import train

    schema = pipeline.parameters.model_dump()
    assert set(schema["properties"]) == {"params", "quick"}
    defs = schema["definitions"]
    sh = defs["SphericalHarmonicsParams"]["properties"]
    assert sh["size"]["default"] == 32 and "Grid points" in sh["size"]["description"]
    assert schema["properties"]["quick"]["description"].startswith("Start from the quick")
    assert "store" in retrain.parameters.model_dump()["properties"]
    tschema = train.parameters.model_dump()
    assert tschema["required"] == ["store"]
    assert "Zarr store" in tschema["properties"]["store"]["description"]


# ----------------------------------------------------------------------------- end to end
def test_failing_input_then_pipeline_end_to_end(prefect_harness, mlflow_uri, data_home):
    """A missing store fails the run with a readable message and changes nothing; the next
    (good) run — the pipeline at tiny size — then logs everything to MLflow."""
    from flows.params import SphericalHarmonicsParams
    from flows.pipeline import pipeline, retrain
    from flows.spherical_harmonics import spherical_harmonics
    from tasks import tracking

    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    store = spherical_harmonics(SphericalHarmonicsParams(size=8, l_max=1))
    tracking.ensure_experiment("spherical_harmonics")
    before_store, before_db = _mtimes(Path(store)), db.stat().st_mtime_ns

    missing = str(data_home / "stores" / "nope.zarr")
    state = retrain(store=missing, params=PipelineParams.model_validate(TINY), return_state=True)
    assert state.is_failed()
    message = str(state.message) + str(state.result(raise_on_failure=False))
    assert "nope.zarr does not exist" in message
    assert _mtimes(Path(store)) == before_store
    assert db.stat().st_mtime_ns == before_db
    assert not os.path.exists(missing)

    result = pipeline(params=PipelineParams.model_validate(TINY), quick=True)
    assert result["store"] == store  # the data flow's cache: same parameters, same store
    c = tracking.client()
    run = c.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    # params: the flattened config and the dataset provenance
    assert run.data.params["train.steps"] == "4"
    assert run.data.params["data.size"] == "8"
    assert run.data.params["data.store"] == store
    assert run.data.params["model.unet.dims"] == "3"
    assert any(k.startswith("data.provenance.") for k in run.data.params)
    # metrics: the scores (means and per condition) and the training curves
    m = run.data.metrics
    assert m["wasserstein"] == pytest.approx(result["wasserstein_mean"])
    assert m["rel_l2"] == pytest.approx(result["rel_l2_mean"])
    # per-condition scores: one table, not one single-point chart per condition
    assert not any(k.startswith(("wasserstein/", "rel_l2/")) for k in m)
    table = c.load_table(run.info.experiment_id, "scores/per_condition.json", [run.info.run_id])
    scored = json.loads(Path(result["run_dir"], "eval", "metrics.json").read_text())
    assert sorted(table["condition"]) == sorted(scored["per_condition"])
    assert {"wasserstein", "rel_l2"} <= set(table.columns)
    # the store is the run's dataset input; the run names its Prefect flow run
    assert run.inputs.dataset_inputs[0].dataset.name == Path(store).name
    assert run.data.tags["prefect.flow_run_id"]
    assert [h.step for h in c.get_metric_history(run.info.run_id, "loss")] == [2, 4]
    assert c.get_metric_history(run.info.run_id, "samples_per_s")
    # artifacts: figures, samples
    figs = {Path(a.path).name for a in c.list_artifacts(run.info.run_id, "figures")}
    assert figs == {"denoising.png", "slices.png", "loss.png"}
    samples = {Path(a.path).name for a in c.list_artifacts(run.info.run_id, "samples")}
    assert {"samples.npz", "metrics.json"} <= samples
    # a registered model version, the first one becoming the champion
    mv = c.get_model_version("rho-spherical_harmonics", result["mlflow_model_version"])
    assert mv.run_id == run.info.run_id
    assert result["mlflow_champion"] is True
    assert c.get_model_version_by_alias("rho-spherical_harmonics", "champion").version == mv.version
    # the registered model (a pickle-free pyfunc) samples fields by parameters
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model("models:/rho-spherical_harmonics@champion")
    rows = pd.DataFrame({"l": [0.0, 1.0, 1.0], "m": [0.0, -1.0, 1.0]})
    out = model.predict(rows, params={"n": 1, "steps": 2})
    assert out.shape == (3, 1, 8, 8, 8) and np.isfinite(out).all()
    assert mv.description and mv.tags["wasserstein_mean"]
    # Prefect artifacts: the report and scores of this flow run, training progress at 100 %
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["spherical-harmonics-report", "spherical-harmonics-training-progress"]
    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    by_key = {a.key: a for a in arts}
    report = by_key["spherical-harmonics-report"]
    assert str(report.flow_run_id) == run.data.tags["prefect.flow_run_id"]
    assert result["mlflow_run_id"] in report.data and "became the champion" in report.data
    assert float(by_key["spherical-harmonics-training-progress"].data) == 100.0
    assert "get-artifact?path=figures%2Fslices.png" in result["mlflow_figure_urls"]["slices"]
    # the denoising grid's rows: x_t and x̂₀ at steps spaced in log-SNR, the sample last
    z = np.load(result["samples"])
    assert z["frames_x0"].shape == z["frames"].shape and z["frame_times"][-1] == 0
    assert np.all(np.diff(z["frame_log_snr"][:-1]) > 0)
    # everything local sits under the data folder
    assert Path(result["store"]).is_relative_to(data_home)
    assert Path(result["run_dir"], "eval", "figures", "denoising.png").is_file()


def test_random_field_pipeline_infers_parameters(prefect_harness, mlflow_uri, data_home):
    """dataset gaussian_random_field: after training, the pipeline infers the spectral index of
    fresh realisations at a held-out condition and logs the model's and the exact posterior to
    the MLflow run; the exact log-likelihood column is checked against an independent
    Fourier-sum formula (differences across the grid: the constant drops out)."""
    import csv

    from flows.pipeline import pipeline, summary_lines
    from tasks import tracking

    params = {
        "dataset": "gaussian_random_field",
        "random_field": {
            "size": 8,
            "amplitudes": [1.0],
            "spectral_indices": [-1.0, -2.0],
            "realizations": 4,
        },  # fmt: skip
        "model": {
            "base_channels": 8,
            "channel_mult": [1, 2],
            "cond_dim": 16,
            "spectral_head": 8,
        },  # fmt: skip
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 2},
        "evaluate": {"steps": 3, "n_conditions": 2},
        "infer": {"fields": 1, "samples": 8, "points": 9, "zoom": 0, "temperature": 0.8},
    }
    result = pipeline(params=PipelineParams.model_validate(params), quick=True)
    inf = result["inference"]
    assert "error" not in inf and inf["fields"] == 1
    from rho_core.data.store import open_store

    obs = open_store(inf["observed"])  # a fresh realisation at the held-out index −1.5
    assert obs.n == 1 and obs.params.tolist() == [[1.0, -1.5]]
    train_store = open_store(result["store"])
    x_obs = obs.read(0)[0][0].astype(np.float64)
    assert not any(np.allclose(x_obs, train_store.read(i)[0][0]) for i in range(train_store.n))
    run = tracking.client().get_run(result["mlflow_run_id"])
    m = run.data.metrics
    for key in ("mean", "std", "exact_mean", "exact_std", "true", "pit"):
        assert f"infer/field0/spectral_index/{key}" in m, key
    assert m["infer/field0/spectral_index/true"] == -1.5
    assert {"infer/spectral_index/std_ratio", "infer/spectral_index/abs_z_exact"} <= set(m)
    assert run.data.params["infer/field0.method"] == "elbo"
    assert float(run.data.params["infer/field0.temperature"]) == 0.8  # the form reached rho infer
    with pytest.raises(ValueError, match="temperature"):
        PipelineParams.model_validate({**params, "infer": {"temperature": 0}})
    arts = {a.path for a in tracking.client().list_artifacts(run.info.run_id, "infer/field0")}
    assert {"infer/field0/posterior.csv", "infer/field0/posterior.png"} <= arts
    rows = list(csv.DictReader(open(Path(inf["dir"], "field0", "posterior.csv"))))
    n_grid = np.array([float(r["spectral_index"]) for r in rows])
    assert n_grid.size == 9 and n_grid[0] == -2.0 and n_grid[-1] == -1.0  # the training range
    exact = np.array([float(r["exact_log_likelihood"]) for r in rows])
    f2 = np.abs(np.fft.fft2(x_obs)) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(8) * 8, np.fft.fftfreq(8) * 8, indexing="ij"))
    nz = k > 0
    indep = np.array(
        [-0.5 * np.sum(f2[nz] / (64 * k[nz] ** n) + n * np.log(k[nz])) for n in n_grid]
    )  # A = 1: P = |κ|^n
    assert np.allclose(exact - exact[0], indep - indep[0], atol=1e-6 * np.abs(indep).max())
    assert any("parameter inference on 1 field" in line for line in summary_lines(result))


def test_data_flow_reuses_the_store(prefect_harness, data_home, monkeypatch):
    """Same parameters twice: the second run is a cache hit and the store is not rewritten."""
    from flows.params import SphericalHarmonicsParams
    from flows.spherical_harmonics import spherical_harmonics
    from rho_core.data import spherical_harmonics as sh

    calls = []
    real = sh.generate_spherical_harmonics

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(sh, "generate_spherical_harmonics", counting)
    params = SphericalHarmonicsParams(size=8, l_max=1, store=str(data_home / "cache.zarr"))
    first = spherical_harmonics(params)
    before = _mtimes(Path(first))
    state = spherical_harmonics(params, return_state=True)
    assert state.is_completed() and state.result() == first
    assert len(calls) == 1
    states = _task_states(state.state_details.flow_run_id)
    assert [v for k, v in states.items() if k.startswith("generate sh")] == ["Cached"]
    assert _mtimes(Path(first)) == before
    # A store deleted behind the cache's back is rebuilt rather than returned dangling.
    import shutil

    shutil.rmtree(first)
    assert spherical_harmonics(params) == first
    assert len(calls) == 2 and Path(first, "zarr.json").is_file()


def test_merger_flow_and_corrupt_snapshot(prefect_harness, data_home):
    """Simulate + ingest a tiny merger grid; a corrupt snapshot fails the ingest flow with the
    file named, leaves the existing store untouched, and a good ingest afterwards succeeds."""
    from flows.galaxy_merger import galaxy_merger, ingest_bonsai
    from flows.params import GalaxyMergerParams, IngestBonsaiParams
    from rho_core.data.particles import snapshot_filename
    from rho_core.data.store import open_store

    params = GalaxyMergerParams(
        n_particles=100,
        mass_ratios=[1.0],
        pericenters=[5.0],
        t_end=2.0,
        snap_every=1.0,
        image_size=16,
    )
    store = galaxy_merger(params)
    s = open_store(store)
    assert s.kind == "galaxy_merger" and s.n >= 2 and s.field_shape[1:] == (16, 16)
    assert s.normalization["transform"] == "minmax"
    before = _mtimes(Path(store))

    bad = data_home / "incoming" / snapshot_filename("snap", 2.0)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00\x01 not a tipsy file")
    other = str(data_home / "stores" / "ingested.zarr")
    state = ingest_bonsai(
        IngestBonsaiParams(snapshots=[str(bad)], store=other, image_size=16), return_state=True
    )
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert bad.name in message and "could not be ingested" in message
    assert _mtimes(Path(store)) == before
    assert not Path(other, "zarr.json").exists()

    sims = str(data_home / "sims" / "merger")
    good = ingest_bonsai(IngestBonsaiParams(snapshots=[sims], store=other, image_size=16))
    assert open_store(good).n == s.n


def test_train_task_with_two_processes(tmp_path):
    """nproc=2 goes through torchrun (rho_core.train_worker); the task still returns the
    checkpoint and a loss history thinned to log_every."""
    import json

    from flows.params import ModelParams, TrainParams
    from flows.train import training_config
    from rho_core.data.normalization import fit_normalization, write_normalization
    from rho_core.data.spherical_harmonics import generate_spherical_harmonics
    from tasks.training import build_model_config, train_model

    store = str(tmp_path / "sh.zarr")
    generate_spherical_harmonics(store, size=8, l_max=1)
    write_normalization(store, fit_normalization(store, "minmax"))
    model = ModelParams.model_validate(TINY["model"]).model_dump()
    train = training_config(TrainParams.model_validate({**TINY["train"], "device": "cpu"}))
    out = train_model.fn(store, str(tmp_path / "run"), build_model_config(store, model), train, 2)
    assert out["world_size"] == 2 and out["step"] == 4
    assert Path(out["checkpoint"]).is_file()
    history = json.loads(Path(out["history"]).read_text())
    assert [row["step"] for row in history] == [2, 4]
    assert all(row["loss"] > 0 for row in history)

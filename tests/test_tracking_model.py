"""The registered model stands alone and holds no pickle; runs carry live metrics and a dataset.

Real MLflow on a temporary SQLite database; the model is a tiny untrained network (its fields are
not meaningful, but sampling is deterministic given the seed, which is what is compared).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rho_core import packaging
from rho_core.errors import CheckpointError, ConfigError
from tasks import tracking
from tests.test_tracking import _tiny_bundle

_LOAD_AND_SAMPLE = """
import json, sys
import mlflow, pandas as pd, numpy as np
uri, out = sys.argv[1], sys.argv[2]
model = mlflow.pyfunc.load_model(uri)
import rho_core
x = model.predict(pd.DataFrame([{"l": 1.0, "m": 0.0}, {"l": 2.0, "m": -1.0}]),
                  params={"n": 2, "steps": 3, "seed": 7})
np.save(out, x)
print(json.dumps({"rho_core": rho_core.__file__, "shape": list(x.shape)}))
"""


@pytest.mark.slow  # a fresh interpreter importing mlflow + torch: 20-30 s on a busy machine
@pytest.mark.parametrize("conditioning", ["hash"])
def test_registered_model_loads_and_samples_in_a_fresh_process(mlflow_uri, tmp_path, conditioning):
    """Only MLFLOW_TRACKING_URI set, run from an empty folder: the champion loads as a pyfunc with
    its own copy of rho_core, samples by parameters in physical units, and equals the bundle."""
    bundle = _tiny_bundle(tmp_path / "bundle", conditioning=conditioning, seed=5)
    run_id = tracking.start_run("unit_test")
    logged = tracking.log_pyfunc_model(
        run_id, bundle, "rho-unit_test", example_rows=[{"l": 1.0, "m": 0.0}]
    )
    tracking.end_run(run_id)
    assert tracking.promote_if_better(logged.name, logged.version, 0.1)

    # Nothing pickled in the logged model: weights are tensors, the model is code.
    root = tmp_path / "mlflow" / "mlartifacts"
    files = [p for p in root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle")]
    model_dir = next(p.parent for p in files if p.name == "MLmodel")
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "python_model.pkl" not in mlmodel
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel
    reqs = (model_dir / "requirements.txt").read_text().split()
    assert any(r.startswith("torch==") for r in reqs) and any(
        r.startswith("mlflow==") for r in reqs
    )
    assert (model_dir / "code" / "rho_core" / "packaging.py").is_file()
    example = json.loads((model_dir / "input_example.json").read_text())
    assert example["inputs"]["columns"] == ["l", "m"] and example["params"]["steps"] == 2

    work = tmp_path / "elsewhere"
    work.mkdir()
    (tmp_path / "home").mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(tmp_path / "home")}
    env["MLFLOW_TRACKING_URI"] = mlflow_uri
    out = work / "x.npy"
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_SAMPLE, "models:/rho-unit_test@champion", str(out)],
        cwd=work, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["shape"] == [4, 1, 8, 8, 8]
    # rho_core came from the model's own code folder, not from this checkout.
    assert "/code/rho_core/" in info["rho_core"]
    assert not info["rho_core"].startswith(str(tracking.REPO_ROOT))
    assert sorted(p.name for p in work.iterdir()) == ["x.npy"]  # no stray mlflow.db / mlruns
    got = np.load(out)
    ref = packaging.load_bundle(bundle).sample(
        [{"l": 1.0, "m": 0.0}, {"l": 2.0, "m": -1.0}], n=2, steps=3, seed=7
    )
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

    # The CLI helper: same fields from the registry by alias, loaded by this package's code only.
    from rho_cli.main import main

    npz = tmp_path / "cli.npz"
    rows = '[{"l": 1, "m": 0}, {"l": 2, "m": -1}]'
    argv = ["model", "sample", "--model", "models:/rho-unit_test@champion", "--params", rows]
    assert main([*argv, "--n", "2", "--steps", "3", "--seed", "7", "--out", str(npz)]) == 0
    z = np.load(npz)
    np.testing.assert_allclose(z["fields"], ref, rtol=1e-5, atol=1e-6)
    assert z["params"].tolist() == [[1, 0], [1, 0], [2, -1], [2, -1]]
    assert main(["model", "sample", "--model", "models:/rho-unit_test@nope", "--params", rows]) == 2
    assert main([*argv[:-1], '{"l": 1}']) == 2  # a missing parameter: one-line error


def test_bundle_round_trip_and_refusals(tmp_path):
    """Physical units via the normaliser, parameter tables by name, and clean refusals of a
    tampered weights file, a config that does not match its weights, and bad parameter rows."""
    bundle = _tiny_bundle(tmp_path / "b", seed=2)
    b = packaging.load_bundle(bundle)
    norm = b.sample({"l": 1, "m": 0}, n=2, steps=2, seed=3, normalized=True)
    phys = b.sample({"l": 1, "m": 0}, n=2, steps=2, seed=3)
    # minmax on [-3, 5]: x = (y + 1) / 2 * 8 - 3
    np.testing.assert_allclose(phys, (norm + 1.0) / 2.0 * 8.0 - 3.0, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown \\['n'\\]"):
        b.sample({"l": 1, "m": 0, "n": 3})
    with pytest.raises(ConfigError, match="finite"):
        b.sample([[1.0, float("nan")]])

    meta = json.loads((bundle / "model.json").read_text())
    meta["model_config"]["unet"]["base_channels"] = 4096  # would allocate gigabytes
    (bundle / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="describes .* weights"):
        packaging.load_bundle(bundle)

    bundle2 = _tiny_bundle(tmp_path / "c", seed=2)
    state = torch.load(bundle2 / "weights.pt", weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, bundle2 / "weights.pt")
    with pytest.raises(CheckpointError, match="SHA-256"):
        packaging.load_bundle(bundle2)


def test_live_metrics_dataset_input_scores_table(mlflow_uri, tmp_path):
    """A run opened before training receives the training callback's rows live, has the store as
    its dataset input (shapes, ranges, fingerprint) and the per-condition scores as one table."""
    from rho_core.data.spherical_harmonics import generate_spherical_harmonics

    store = generate_spherical_harmonics(tmp_path / "sh.zarr", size=8, l_max=1)
    run_dir = tmp_path / "run"
    run_id = tracking.open_run("unit_test", "live", str(run_dir), str(store), total_steps=4)
    live = tracking.live_hook(run_dir)
    assert live is not None and tracking.live_hook(tmp_path / "other") is None
    live.min_interval_s = 1e9  # only the last step flushes
    for step in (1, 2, 3):
        live(step, {"loss": 1.0 / step, "lr": 1e-3, "samples_per_s": 5.0, "unrelated": 1})
    c = tracking.client()
    assert c.get_metric_history(run_id, "loss") == []  # buffered
    live(4, {"loss": 0.25, "lr": 1e-3, "samples_per_s": 5.0})
    hist = c.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in hist) == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    assert c.get_metric_history(run_id, "unrelated") == []
    assert c.get_run(run_id).info.status == "RUNNING"  # open while training

    inputs = c.get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert ds.name == "sh.zarr" and json.loads(ds.source)["uri"] == str(Path(store).resolve())
    profile = json.loads(ds.profile)
    assert profile["n_samples"] == 4 and profile["field_shape"] == [1, 8, 8, 8]
    assert profile["param_ranges"] == {"l": [0.0, 1.0], "m": [-1.0, 1.0]}
    assert ds.digest == profile["fingerprint"][:16]
    assert "fields" in ds.schema and "params" in ds.schema
    assert inputs[0].tags[0].value == "training"

    scores = {"per_condition": {"l=1,m=0": {"wasserstein": 0.1, "rel_l2": 0.2},
                                "l=1,m=1": {"wasserstein": 0.3, "rel_l2": 0.4}}}  # fmt: skip
    path = tracking.log_scores_table(run_id, scores)
    tracking.end_run(run_id)
    exp_id = c.get_run(run_id).info.experiment_id
    table = c.load_table(exp_id, path, run_ids=[run_id])
    assert list(table["condition"]) == ["l=1,m=0", "l=1,m=1"]
    assert list(table["rel_l2"]) == [0.2, 0.4]
    assert c.get_run(run_id).info.status == "FINISHED"


def test_store_fingerprint_changes_with_content(tmp_path):
    from rho_core.data.spherical_harmonics import generate_spherical_harmonics
    from rho_core.data.store import open_store

    a = generate_spherical_harmonics(tmp_path / "a.zarr", size=8, l_max=1)
    b = generate_spherical_harmonics(tmp_path / "b.zarr", size=8, l_max=1)
    c = generate_spherical_harmonics(tmp_path / "c.zarr", size=8, l_max=2)
    fa, fb, fc = (tracking.store_fingerprint(open_store(p)) for p in (a, b, c))
    assert fa == fb != fc

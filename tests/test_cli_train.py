"""`rho train` → `rho sample` → `rho evaluate` end to end on a tiny real Zarr store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rho_cli.main import main
from rho_core.checkpoint import load_for_sampling
from rho_core.data.normalization import Normalizer
from rho_core.data.store import create_store, open_store
from rho_core.data.synthetic import GaussianBlobs
from rho_core.evaluation import generate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """12 1-D blobs of length 16 in physical units 10·(field + 2), minmax-normalised."""
    path = tmp_path_factory.mktemp("cli") / "blobs.zarr"
    ds = GaussianBlobs(n=12, spatial_dims=1, size=16, seed=5)
    phys = 10.0 * (ds.fields + 2.0)
    with create_store(
        path, kind="synthetic_blobs", spatial_dims=1, param_names=list(ds.param_names),
        field_shape=(1, 16), provenance={"test": True},
    ) as w:  # fmt: skip
        w.append(phys, ds.params)
    norm = Normalizer("minmax", min=float(phys.min()), max=float(phys.max()))
    from rho_core.data.normalization import write_normalization

    write_normalization(path, norm)
    return path, phys, ds.params


@pytest.fixture(scope="module")
def trained(tiny_store, tmp_path_factory):
    store, _, _ = tiny_store
    run = tmp_path_factory.mktemp("run")
    cfg = run / "cfg.yaml"
    cfg.write_text(
        "train:\n  batch_size: 4\n  lr: 0.002\n  warmup_steps: 2\n  checkpoint_every: 4\n"
        "  ema_half_life_samples: 20\n  log_every: 100\n"
        "model:\n  base_channels: 8\n  channel_mult: [1, 2]\n  cond_dim: 8\n  timesteps: 50\n"
    )
    code = main(
        ["train", "--data", str(store), "--out", str(run / "r"), "--config", str(cfg),
         "--steps", "6", "--device", "cpu", "--quiet"]
    )  # fmt: skip
    assert code == 0
    return run / "r"


def test_train_writes_config_and_checkpoints(trained) -> None:
    resolved = json.loads((trained / "config.json").read_text())
    assert resolved["train"]["steps"] == 6 and resolved["train"]["batch_size"] == 4
    assert resolved["model"]["unet"]["base_channels"] == 8
    assert resolved["model"]["timesteps"] == 50
    assert resolved["model"]["conditioning"]["param_names"] == ["amplitude", "width"]
    assert resolved["normalization"]["transform"] == "minmax"
    names = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert names == ["ckpt-00000004.pt", "ckpt-00000006.pt"]


def test_sample_writes_a_physical_store(trained, tiny_store, tmp_path, capsys) -> None:
    _, phys, _ = tiny_store
    out = tmp_path / "gen.zarr"
    code = main(
        ["sample", "--checkpoint", str(trained), "--params",
         '[{"amplitude": 0.7, "width": 0.3}, {"width": 0.25, "amplitude": 0.9}]',
         "--n", "2", "--sampler", "ddim", "--steps", "5", "--seed", "3", "--device", "cpu",
         "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    s = open_store(out)
    assert s.n == 4 and s.field_shape == (1, 16) and s.kind == "synthetic_blobs"
    assert s.param_names == ["amplitude", "width"]
    assert np.allclose(s.params, [[0.7, 0.3], [0.7, 0.3], [0.9, 0.25], [0.9, 0.25]])
    assert s.provenance["sampler"] == "ddim" and s.provenance["steps"] == 5
    assert s.normalization["transform"] == "minmax"
    fields = np.asarray(s.fields[:])
    assert np.isfinite(fields).all()
    # Physical units: the store holds the inverse-normalised network samples. Regenerate in
    # normalised space through the library and map back with the store's own normaliser.
    loaded = load_for_sampling(trained, "cpu")
    norm_samples, _ = generate(
        loaded, s.params, sampler="ddim", steps=5, seed=3, batch_size=16, physical=False
    )
    expected = Normalizer.from_dict(s.normalization).inverse(norm_samples)
    assert np.allclose(fields, expected, rtol=1e-5, atol=1e-3)
    assert not np.allclose(fields, norm_samples)  # the normaliser is not the identity
    # The same seed gives the same samples (DDIM, η = 0).
    out2 = tmp_path / "gen2.zarr"
    main(
        ["sample", "--checkpoint", str(trained), "--params",
         '[{"amplitude": 0.7, "width": 0.3}, {"width": 0.25, "amplitude": 0.9}]',
         "--n", "2", "--sampler", "ddim", "--steps", "5", "--seed", "3", "--device", "cpu",
         "--out", str(out2), "--quiet"]
    )  # fmt: skip
    assert np.array_equal(np.asarray(open_store(out2).fields[:]), fields)


def test_sample_rejects_unknown_parameter_names(trained, tmp_path, capsys) -> None:
    code = main(
        ["sample", "--checkpoint", str(trained), "--params", '{"amplitude": 1, "depth": 2}',
         "--out", str(tmp_path / "x.zarr"), "--device", "cpu", "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "unknown parameter(s) ['depth']" in err and "Traceback" not in err
    assert not (tmp_path / "x.zarr").exists()
    code = main(
        ["sample", "--checkpoint", str(trained), "--params", "{l: 1}",
         "--out", str(tmp_path / "y.zarr"), "--quiet"]
    )  # fmt: skip
    assert code == 2 and "not valid JSON" in capsys.readouterr().err


def test_evaluate_prints_metrics_json(trained, tiny_store, capsys) -> None:
    store, _, params = tiny_store
    code = main(
        ["evaluate", "--checkpoint", str(trained / "checkpoints" / "ckpt-00000006.pt"),
         "--data", str(store), "--sampler", "dpmpp", "--steps", "4", "--max-conditions", "3",
         "--device", "cpu", "--quiet"]
    )  # fmt: skip
    assert code == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n_conditions"] == 3 and len(scores["per_condition"]) == 3
    for label, v in scores["per_condition"].items():
        assert label.startswith("amplitude=") and ",width=" in label
        assert v["wasserstein"] >= 0 and v["rel_l2"] > 0
    w = [v["wasserstein"] for v in scores["per_condition"].values()]
    assert scores["wasserstein_mean"] == pytest.approx(np.mean(w))
    assert scores["step"] == 6


def test_train_errors_are_one_line(tiny_store, tmp_path, capsys) -> None:
    store, _, _ = tiny_store
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stpes: 3\n")
    code = main(["train", "--data", str(store), "--out", str(tmp_path / "r"), "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown training config keys ['stpes']" in err
    code = main(["train", "--data", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "r")])
    assert code == 2 and "none.zarr" in capsys.readouterr().err


def test_fit_schedule_plans_steps_into_the_budget(tiny_store, trained, tmp_path, capsys) -> None:
    """--fit-schedule: a 24-step calibration shortens --steps so the schedule ends in the budget
    (steps × measured s/step ≤ 93 % of the budget); the run then ends its whole schedule; a
    resume keeps the first plan; without a budget it is a one-line error."""
    store, _, _ = tiny_store
    cfg = trained.parent / "cfg.yaml"
    run = tmp_path / "fit"
    args = ["train", "--data", str(store), "--out", str(run), "--config", str(cfg),
            "--steps", "100000", "--max-minutes", "0.3", "--fit-schedule", "--quiet"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("--fit-schedule:"))
    step_s, planned = float(line.split()[1]), int(line.split("→ ")[1].split()[0])
    # the plan: floor(0.93 × (budget − 15 s) / step_s); step_s is printed to 4 digits
    fit = 0.93 * (0.3 * 60 - 15) / step_s
    assert 1 <= planned < 100000 and fit * (1 - 1e-3) - 1 <= planned <= fit * (1 + 1e-3)
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["train"]["steps"] == planned
    result = json.loads((run / "result.json").read_text())
    assert result["step"] == planned  # the plan fits: the schedule ran to its end
    assert main(args) == 0  # resume: nothing left, same plan
    assert f"keeping its {planned} planned steps" in capsys.readouterr().err
    bad = ["train", "--data", str(store), "--out", str(tmp_path / "x"), "--fit-schedule"]
    assert main(bad) == 2
    assert "--fit-schedule needs a budget" in capsys.readouterr().err


def test_generate_field_mean_is_the_projection_onto_that_mean(trained) -> None:
    from rho_core.config import EvalConfig
    from rho_core.errors import ConfigError
    from rho_core.evaluation import set_field_mean

    loaded = load_for_sampling(trained, "cpu")
    params = [{"amplitude": 0.7, "width": 0.3}, {"amplitude": 0.9, "width": 0.25}]
    kw = {"sampler": "ddim", "steps": 5, "seed": 3}
    raw, _ = generate(loaded, params, **kw)
    proj, _ = generate(loaded, params, field_mean=0.25, **kw)
    assert not np.allclose(raw.mean(axis=-1), 0.25, atol=1e-3)  # the check has work to do
    assert np.allclose(proj.mean(axis=-1), 0.25, atol=1e-6)
    centred = lambda x: x - x.mean(axis=-1, keepdims=True)  # noqa: E731
    assert np.allclose(centred(proj), centred(raw), atol=1e-5)  # nothing else changes
    norm, _ = generate(loaded, params, field_mean=0.25, physical=False, **kw)
    assert np.allclose(loaded.normalizer.inverse(norm), proj, atol=1e-5)
    with pytest.raises(ConfigError, match="n, C"):
        set_field_mean(np.zeros((3, 4)), 0.0)
    assert EvalConfig().field_mean == "auto" and EvalConfig(field_mean=0.0).field_mean == 0.0
    assert EvalConfig(field_mean=None).field_mean is None

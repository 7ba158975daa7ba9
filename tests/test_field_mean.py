"""``field_mean: auto`` — Gaussian random fields are drawn with their exact zero mean by default.

Real parts: stores written by ``rho generate gaussian-random-field`` (Gaussian and log-normal),
a real (untrained, randomly perturbed) network saved as a checkpoint, ``rho evaluate``'s
``draw_for_scoring``, ``rho sample`` through the CLI, the config resolver and the Prefect form.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rho_cli.main import main
from rho_core.checkpoint import save_checkpoint
from rho_core.config import EvalConfig, resolve_section
from rho_core.data.normalization import Normalizer
from rho_core.data.store import open_store
from rho_core.errors import ConfigError
from rho_core.field_mean import (
    describe_field_mean,
    exact_field_mean,
    parse_field_mean,
    resolve_field_mean,
)

pytestmark = pytest.mark.usefixtures("one_thread")

GRF = "gaussian_random_field"


def test_exact_mean_only_for_gaussian_random_fields() -> None:
    assert exact_field_mean(GRF, {"lognormal": False}) == 0.0
    assert exact_field_mean(GRF, {}) == 0.0  # stores from before the flag were Gaussian
    assert exact_field_mean(GRF, {"lognormal": True}) is None  # mean 0 only in expectation
    assert exact_field_mean(GRF, None) is None  # provenance unknown: could be log-normal
    assert exact_field_mean("spherical_harmonics", {"lognormal": False}) is None
    assert exact_field_mean(None, None) is None


def test_resolve_and_parse_settings() -> None:
    assert resolve_field_mean("auto", GRF, {}) == 0.0
    assert resolve_field_mean("auto", "bonsai", {}) is None
    assert resolve_field_mean(None, GRF, {}) is None
    assert resolve_field_mean(0.25, "bonsai", {}) == 0.25
    for bad in ("mean", float("nan"), True):
        with pytest.raises(ConfigError, match="field_mean"):
            resolve_field_mean(bad, GRF, {})
    assert parse_field_mean("AUTO") == "auto"
    assert parse_field_mean("off") is None and parse_field_mean("null") is None
    assert parse_field_mean("-1.5") == -1.5
    with pytest.raises(ConfigError, match="auto, off or a finite number"):
        parse_field_mean("inf")
    assert "auto" in describe_field_mean("auto", 0.0)
    assert describe_field_mean("auto", None).startswith("off")
    assert describe_field_mean(None, None) == "off"


def test_config_accepts_auto_numbers_and_null() -> None:
    assert EvalConfig().field_mean == "auto"
    assert resolve_section("evaluate", {"field_mean": "auto"}).field_mean == "auto"
    assert resolve_section("evaluate", {"field_mean": 0}).field_mean == 0.0
    assert resolve_section("evaluate", {"field_mean": "0.5"}).field_mean == 0.5
    assert resolve_section("evaluate", {"field_mean": None}).field_mean is None
    with pytest.raises(ConfigError, match="a float or 'auto' or null"):
        resolve_section("evaluate", {"field_mean": "zero"})
    with pytest.raises(ConfigError, match="field_mean"):
        EvalConfig(field_mean=float("inf"))
    from flows.params import EvalParams

    assert EvalParams().to_config().field_mean == "auto"
    assert EvalParams(field_mean=0.5).to_config().field_mean == 0.5
    assert EvalParams(field_mean=None).to_config().field_mean is None
    with pytest.raises(ValueError):
        EvalParams(field_mean="zero")


def _grf_store(tmp_path, name: str, lognormal: bool):
    path = tmp_path / name
    argv = ["generate", "gaussian-random-field", "--out", str(path), "--size", "8",
            "--dims", "2", "--amplitude", "0.5,2", "--spectral-index=-2", "--realizations", "2",
            "--seed", "3"]  # fmt: skip
    assert main(argv + (["--lognormal"] if lognormal else [])) == 0
    return path


def _checkpoint(tmp_path, store) -> str:
    """A real network (untrained, perturbed so its outputs have non-zero means) for 8² GRFs."""
    from rho_core.model import DiffusionModel, default_model_config

    torch.manual_seed(0)
    cfg = default_model_config(
        2, 1, ("amplitude", "spectral_index"), (0.5, -2.5), (2.0, -1.0), conditioning="continuous",
        cond_dim=8, base_channels=8, channel_mult=(1, 2), prediction="eps", timesteps=50,
        schedule_shift=0.0, attention_levels=(),
    )  # fmt: skip
    model = DiffusionModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {
        "model": model.state_dict(),
        "ema": None,
        "step": 3,
        "model_config": cfg.to_dict(),
        "train_config": {},
        "normalization": Normalizer("standard", mean=0.0, std=0.1).to_dict(),
        "param_names": ["amplitude", "spectral_index"],
        "kind": GRF,
        "spatial_dims": 2,
        "field_shape": [1, 8, 8],
        "data_path": str(store),
    }
    return str(save_checkpoint(state, tmp_path / "ckpt", 3))


def _means(fields: np.ndarray) -> np.ndarray:
    return np.asarray(fields, np.float64).mean(axis=(-2, -1)).ravel()


@pytest.fixture(scope="module")
def grf(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fm")
    gauss = _grf_store(tmp, "g.zarr", lognormal=False)
    logn = _grf_store(tmp, "ln.zarr", lognormal=True)
    return tmp, gauss, logn, _checkpoint(tmp, gauss)


def test_evaluate_draws_gaussian_fields_with_zero_mean_by_default(grf) -> None:
    from rho_core.evaluation import draw_for_scoring, evaluate

    _, gauss, logn, ckpt = grf
    kw = {"steps": 3, "max_conditions": 0, "seed": 1}
    auto = draw_for_scoring(ckpt, gauss, None, **kw)
    raw = draw_for_scoring(ckpt, gauss, None, field_mean=None, **kw)
    assert auto["field_mean"] == 0.0 and "auto" in auto["field_mean_rule"]
    assert np.abs(_means(auto["generated"])).max() < 1e-6
    assert np.abs(_means(raw["generated"])).max() > 1e-4  # the network's own means
    # the projection removes the mean and nothing else: same draws, same fluctuations
    centred = raw["generated"] - raw["generated"].mean(axis=(-2, -1), keepdims=True)
    np.testing.assert_allclose(auto["generated"], centred, atol=1e-5)
    # normalised outputs are the physical ones through the normaliser (mean 0 → −mean/std)
    np.testing.assert_allclose(auto["generated_norm"], auto["generated"] / 0.1, atol=1e-4)
    # log-normal fields have mean 0 only in expectation: auto leaves them alone
    ln = draw_for_scoring(ckpt, logn, None, **kw)
    assert ln["field_mean"] is None and ln["field_mean_rule"].startswith("off")
    assert np.abs(_means(ln["generated"])).max() > 1e-4
    out = evaluate(ckpt, gauss, None, **kw)
    assert out["field_mean"] == 0.0 and "auto" in out["field_mean_rule"]


def test_rho_evaluate_and_sample_field_mean_flags(grf, capsys) -> None:
    tmp, gauss, _, ckpt = grf
    base = ["evaluate", "--checkpoint", ckpt, "--data", str(gauss), "--steps", "2", "--quiet"]
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["field_mean"] == 0.0
    assert main(base + ["--field-mean", "off"]) == 0
    assert json.loads(capsys.readouterr().out)["field_mean"] is None
    assert main(base + ["--field-mean", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["field_mean"] == 0.5

    params = '{"amplitude": 1.0, "spectral_index": -2.0}'
    sample = ["sample", "--checkpoint", ckpt, "--params", params, "--n", "3", "--steps", "2",
              "--quiet"]  # fmt: skip
    assert main(sample + ["--out", str(tmp / "s-auto.zarr")]) == 0
    assert main(sample + ["--out", str(tmp / "s-off.zarr"), "--field-mean", "off"]) == 0
    auto = open_store(tmp / "s-auto.zarr")
    off = open_store(tmp / "s-off.zarr")
    assert auto.provenance["field_mean"] == 0.0 and off.provenance["field_mean"] is None
    fa, _ = auto.read_batch(np.arange(3))
    fo, _ = off.read_batch(np.arange(3))
    assert np.abs(_means(fa)).max() < 1e-6 < np.abs(_means(fo)).max()
    with pytest.raises(SystemExit) as exc:
        main(sample + ["--out", str(tmp / "bad.zarr"), "--field-mean", "zero"])
    assert exc.value.code == 2
    assert "--field-mean must be auto, off or a finite number" in capsys.readouterr().err
    assert not (tmp / "bad.zarr").exists()

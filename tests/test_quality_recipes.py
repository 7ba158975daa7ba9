"""Every recipe under configs/quality/ builds a model for a 32³ store and runs one forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rho_cli.train import build_configs
from rho_core.data.store import create_store
from rho_core.errors import ConfigError
from rho_core.model import DiffusionModel

# spectra*.yaml are 1-D recipes for rotational spectra (fixed 8,192-point grid); they are built
# and run in tests/test_rotational.py
RECIPES = sorted(
    p
    for p in (Path(__file__).parents[1] / "configs" / "quality").glob("*.yaml")
    if not p.name.startswith("spectra")
)


@pytest.fixture(scope="module")
def sh_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipes") / "sh.zarr"
    rng = np.random.default_rng(0)
    with create_store(
        path, kind="spherical_harmonics", spatial_dims=3, param_names=["l", "m"],
        field_shape=(1, 32, 32, 32), provenance={"test": True},
    ) as w:  # fmt: skip
        w.append(rng.normal(size=(2, 1, 32, 32, 32)), np.array([[0.0, 0.0], [6.0, -6.0]]))
    return path


@pytest.fixture(scope="module")
def grf_store(tmp_path_factory):
    """A 32³ store conditioned on (amplitude, spectral_index), for recipes with log_params."""
    path = tmp_path_factory.mktemp("recipes") / "grf.zarr"
    rng = np.random.default_rng(1)
    with create_store(
        path, kind="gaussian_random_field", spatial_dims=3,
        param_names=["amplitude", "spectral_index"], field_shape=(1, 32, 32, 32),
        provenance={"test": True},
    ) as w:  # fmt: skip
        w.append(rng.normal(size=(2, 1, 32, 32, 32)), np.array([[0.3, -2.5], [3.2, -1.0]]))
    return path


def test_there_are_recipes() -> None:
    assert {p.name for p in RECIPES} >= {"sh32.yaml", "sh32-refine.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_builds_and_runs(recipe: Path, sh_store, grf_store) -> None:
    torch.set_num_threads(1)
    file_model = yaml.safe_load(recipe.read_text())["model"]
    store = sh_store
    if file_model.get("log_params"):  # names parameters of its own data: a store without them
        with pytest.raises(ConfigError, match="not a conditioning parameter"):  # is refused
            build_configs(str(sh_store), str(recipe))
        store = grf_store
    mcfg, tcfg = build_configs(str(store), str(recipe))
    for key in ("patch_size", "base_channels", "refine_channels"):
        if key in file_model:
            assert getattr(mcfg.unet, key) == file_model[key], key
    assert mcfg.schedule_shift == file_model["schedule_shift"]
    assert tcfg.lr == yaml.safe_load(recipe.read_text())["train"]["lr"]
    model = DiffusionModel(mcfg).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.inference_mode():
        out = model(x, torch.tensor([999]), torch.tensor([[5.0, 2.0]], dtype=torch.float64))
    assert out.shape == x.shape and torch.isfinite(out).all()

"""error_anatomy: the within-block share and the radial shells against constructed errors."""

from __future__ import annotations

import numpy as np
import pytest

from rho_core.errors import DataError
from rho_core.metrics import error_anatomy


def test_block_constant_error_has_no_within_block_share() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(size=(1, 8, 8, 8))
    coarse = rng.normal(size=(1, 2, 2, 2))
    err = np.kron(coarse, np.ones((1, 4, 4, 4)))  # constant on every 4³ block
    a = error_anatomy(true + err, true, block=4)
    assert a["within_block_fraction"] == pytest.approx(0.0, abs=1e-12)
    # the same error seen with 2³ blocks is still constant on them
    assert error_anatomy(true + err, true, block=2)["within_block_fraction"] == pytest.approx(0.0)


def test_zero_mean_pattern_inside_blocks_is_all_within() -> None:
    true = np.zeros((1, 8, 8))
    checker = np.indices((8, 8)).sum(0) % 2 * 2.0 - 1.0  # ±1, sums to 0 on every 2×2 block
    a = error_anatomy(true + checker[None], true, block=2)
    assert a["within_block_fraction"] == pytest.approx(1.0)


def test_mixture_splits_energy_exactly() -> None:
    true = np.zeros((1, 8, 8))
    checker = np.indices((8, 8)).sum(0) % 2 * 2.0 - 1.0
    const = np.full((8, 8), 2.0)  # block-constant, orthogonal to the checkerboard
    a = error_anatomy((const + checker)[None], true, block=2)
    assert a["within_block_fraction"] == pytest.approx(1.0 / (1.0 + 4.0))


def test_radial_shells_locate_a_central_error_and_sum_to_one() -> None:
    n = 16
    true = np.ones((1, n, n, n))
    err = np.zeros_like(true)
    err[0, 7:9, 7:9, 7:9] = 3.0  # the 8 voxels around the centre, r = √3/2
    err[0, 0, 0, 0] = 1.0  # one corner voxel, r = 7.5·√3 ≈ 13
    a = error_anatomy(true + err, true, block=4, edges=(2.0, 8.0))
    fr = [s["energy_fraction"] for s in a["radial"]]
    assert sum(fr) == pytest.approx(1.0)
    assert fr[0] == pytest.approx(72.0 / 73.0) and fr[1] == 0.0 and fr[2] == pytest.approx(1 / 73)
    assert a["radial"][0]["rms_true"] == pytest.approx(1.0)
    assert sum(s["voxels"] for s in a["radial"]) == n**3


def test_stack_with_dims_and_bad_input() -> None:
    rng = np.random.default_rng(1)
    true = rng.normal(size=(5, 1, 8, 8, 8))
    a = error_anatomy(true + 1.0, true, block=4, dims=3)
    assert a["within_block_fraction"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(DataError, match="divisible"):
        error_anatomy(true[..., :6], true[..., :6], block=4, dims=3)
    with pytest.raises(DataError, match="shape"):
        error_anatomy(true, true[:1], block=4, dims=3)
    assert error_anatomy(true, true, block=4, dims=3) == {
        "within_block_fraction": 0.0,
        "radial": [],
    }

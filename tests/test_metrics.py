"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from rho_core.errors import DataError
from rho_core.metrics import power_spectrum_error, radial_power_spectrum, rel_l2, wasserstein

RNG = np.random.default_rng(0)


def test_wasserstein_of_shifted_constants_is_the_shift() -> None:
    a = np.full((1, 8, 8, 8), 0.25)
    assert wasserstein(a + 0.5, a) == pytest.approx(0.5)
    assert wasserstein(a, a - 0.1) == pytest.approx(0.1)


def test_wasserstein_hand_computed_and_matches_scipy() -> None:
    # {0, 1} vs {0, 3}: the CDFs differ by 1/2 on [1, 3] → W1 = 1
    assert wasserstein(np.array([[0.0, 1.0]]), np.array([[0.0, 3.0]])) == pytest.approx(1.0)
    x, y = RNG.normal(size=(2, 6, 7)), RNG.normal(0.3, 2.0, size=(2, 6, 7))
    assert wasserstein(x, y) == pytest.approx(
        scipy.stats.wasserstein_distance(x.ravel(), y.ravel())
    )


def test_shuffled_volume_w1_zero_but_spatial_scores_not() -> None:
    vol = RNG.normal(size=(1, 8, 8, 8)).cumsum(axis=1)  # correlated along one axis
    shuffled = RNG.permutation(vol.ravel()).reshape(vol.shape)
    assert wasserstein(shuffled, vol) == pytest.approx(0.0, abs=1e-12)
    assert rel_l2(shuffled, vol) > 0.5
    assert power_spectrum_error(shuffled, vol) > 0.3


def test_rel_l2_hand_computed() -> None:
    t = np.array([[3.0, 4.0]])  # ‖t‖ = 5
    assert rel_l2(np.array([[3.0, 5.0]]), t) == pytest.approx(0.2)
    assert rel_l2(t, t) == 0.0
    with pytest.raises(DataError, match="all zeros"):
        rel_l2(t, np.zeros_like(t))


@pytest.mark.parametrize("shape", [(2, 32), (1, 16, 16), (1, 8, 8, 8)])
def test_power_spectrum_any_dims(shape) -> None:
    x = RNG.normal(size=shape)
    assert power_spectrum_error(x, x) == 0.0
    # translation invariance (periodic shift) and the a² scaling law
    shifted = np.roll(x, 3, axis=-1)
    assert power_spectrum_error(shifted, x) == pytest.approx(0.0, abs=1e-10)
    assert power_spectrum_error(2.0 * x, x) == pytest.approx(3.0)
    # adding a constant does not change P(k > 0)
    assert power_spectrum_error(x + 5.0, x) == pytest.approx(0.0, abs=1e-10)
    # a constant field has no power: error 1
    assert power_spectrum_error(np.zeros(shape), x) == pytest.approx(1.0)


def test_radial_spectrum_of_a_single_mode() -> None:
    """cos(2π·3x/n) on a 1-D grid: all power (n²/4 per ±k, summed = n²/2 at |k| = 3)."""
    n = 32
    x = np.cos(2 * np.pi * 3 * np.arange(n) / n)[None]
    p = radial_power_spectrum(x)
    assert p.shape == (n // 2,)
    assert p[2] == pytest.approx(n**2 / 4)  # shell |k| = 3 averages the two modes ±3
    assert np.delete(p, 2).max() < 1e-20
    # 2-D plane wave along axis 0, wave number 2: shell k = 2 holds it
    y = np.cos(2 * np.pi * 2 * np.arange(16) / 16)[:, None] * np.ones((16, 16))
    p2 = radial_power_spectrum(y[None])
    assert int(np.argmax(p2)) == 1


def test_shape_mismatch_and_bad_values() -> None:
    a = np.zeros((1, 4, 4))
    for fn in (wasserstein, rel_l2, power_spectrum_error):
        with pytest.raises(DataError, match="shape"):
            fn(a, np.zeros((1, 4, 5)))
        with pytest.raises(DataError, match="NaN"):
            fn(np.full((1, 4, 4), np.nan), a + 1)
    with pytest.raises(DataError, match="constant"):
        power_spectrum_error(a, a)
    with pytest.raises(DataError, match="spatial"):
        power_spectrum_error(np.ones((1, 2, 2, 2, 2)), np.ones((1, 2, 2, 2, 2)))

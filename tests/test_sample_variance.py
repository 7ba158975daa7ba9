"""rho_core.sample_variance: a finite set's spectrum scatter and the gain it costs a denoiser.

Checked against Monte Carlo of the generator (the closed-form σ of the empirical band power)
and against the exact Fourier Wiener denoiser of rho_core.exact (the predicted gain slope).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rho_core.data.random_fields import gaussian_field, realization_rng, spectrum_grid
from rho_core.errors import ConfigError
from rho_core.exact import FourierGaussianDenoiser
from rho_core.field_stats import shell_index
from rho_core.sample_variance import (
    band_mask,
    band_power_ratio,
    shell_power_ratio,
    wiener_gain_slope,
)
from rho_core.schedules import make_schedule


def _fields(size, amp, idx, k, seed):
    return np.stack(
        [gaussian_field(size, 2, amp, idx, realization_rng(seed, i)) for i in range(k)]
    )[:, None]


def test_band_ratio_scatter_matches_the_closed_form():
    """600 independent 'stores' of K = 4 fields: the empirical band ratio has mean 1 and the
    closed-form standard deviation (its own estimate is good to ≈ 3 % at this M)."""
    size, amp, idx, k, m = 16, 1.3, -1.5, 4, 600
    power = spectrum_grid(size, 2, amp, idx)
    mask = band_mask(size, 2, 3, 6)
    out = [band_power_ratio(_fields(size, amp, idx, k, 1000 + j), power, mask) for j in range(m)]
    ratios = np.array([r for r, _ in out])
    sigma = out[0][1]
    assert all(s == sigma for _, s in out)
    assert abs(ratios.mean() - 1.0) < 4 * sigma / np.sqrt(m)
    assert ratios.std(ddof=1) == pytest.approx(sigma, rel=0.12)
    # the whole grid (self-conjugate modes included) follows the same formula
    full = band_mask(size, 2, 0, 99)
    whole = np.array(
        [band_power_ratio(_fields(size, amp, idx, k, 5000 + j), power, full)[0] for j in range(m)]
    )
    sig_full = band_power_ratio(_fields(size, amp, idx, k, 1), power, full)[1]
    assert whole.std(ddof=1) == pytest.approx(sig_full, rel=0.12)


def test_shell_ratio_agrees_with_band_ratio_per_shell():
    size = 16
    power = spectrum_grid(size, 2, 0.7, -2.0)
    f = _fields(size, 0.7, -2.0, 8, 3)
    per_point = shell_power_ratio(f, power)
    s = shell_index(size, 2)
    assert per_point.shape == (size * size,)
    assert per_point[s == 0][0] == 1.0  # κ = 0 carries no power: ratio 1 by convention
    for shell in (1, 4, 7):
        r, _ = band_power_ratio(f, power, s == shell)
        assert np.allclose(per_point[s == shell], r, rtol=1e-12)


def test_gain_slope_closed_forms():
    p = np.array([0.0, 0.5, 2.0, 40.0])
    assert wiener_gain_slope(p, 1.0, 0.3) == pytest.approx(1.0, abs=1e-14)
    # one mode: slope = g(rP)/g(P) = r (ᾱP + 1 − ᾱ) / (ᾱ r P + 1 − ᾱ)
    a, r = 0.3, 1.04
    for pk in (0.5, 2.0, 40.0):
        mask = p == pk
        expect = r * (a * pk + 1 - a) / (a * r * pk + 1 - a)
        assert wiener_gain_slope(p, r, a, mask) == pytest.approx(expect, rel=1e-13)
    # signal-dominated modes pass a spectrum error through less than noise-dominated ones
    assert wiener_gain_slope(p, r, a, p == 40.0) - 1 < wiener_gain_slope(p, r, a, p == 0.5) - 1


def test_gain_slope_matches_the_exact_denoiser_on_fresh_fields():
    """The Wiener filter of P·r applied to x_t of true fields, regressed on the exact filter of P
    over a band, as benchmarks/denoiser_error.py measures a network."""
    size, amp, idx, t = 32, 1.0, -1.2, 300
    sch = make_schedule("cosine", 1000, shift=-4.0)
    scale = 1 / 0.15  # a normalised space: field units × scale
    p = spectrum_grid(size, 2, amp, idx) * scale**2
    s = shell_index(size, 2).reshape(size, size)
    ratio = 1.0 + 0.002 * s + 0.01 * np.sin(s)
    true = FourierGaussianDenoiser(sch, torch.as_tensor(p))
    learned = FourierGaussianDenoiser(sch, torch.as_tensor(p * ratio))
    x0 = torch.as_tensor(_fields(size, amp, idx, 64, 7) * scale)
    tt = torch.full((64,), t, dtype=torch.long)
    abar = float(sch.alpha_bar_at(tt[:1].double())[0])
    g = torch.Generator().manual_seed(0)
    xt = abar**0.5 * x0 + (1 - abar) ** 0.5 * torch.randn(
        x0.shape, generator=g, dtype=torch.float64
    )
    f_true = np.fft.fft2(true.x0(xt, tt).numpy()[:, 0])
    f_learn = np.fft.fft2(learned.x0(xt, tt).numpy()[:, 0])
    band = (s >= 5) & (s <= 14)
    measured = (f_learn * f_true.conj()).real[:, band].sum() / (np.abs(f_true) ** 2)[:, band].sum()
    predicted = wiener_gain_slope(p, ratio, abar, band)
    assert predicted != pytest.approx(1.0, abs=5e-3)  # the check has something to find
    assert measured == pytest.approx(predicted, abs=5e-4)


def test_errors_say_what_is_wrong():
    power = spectrum_grid(8, 2, 1.0, -2.0)
    f = _fields(8, 1.0, -2.0, 2, 0)
    with pytest.raises(ConfigError, match="match the fields"):
        band_power_ratio(f, power[:4], band_mask(8, 2, 1, 3))
    with pytest.raises(ConfigError, match="no mode with positive power"):
        band_power_ratio(f, power, band_mask(8, 2, 0, 0))
    with pytest.raises(ConfigError, match="upper edge"):
        band_mask(8, 2, 5, 2)
    with pytest.raises(ConfigError, match="abar"):
        wiener_gain_slope(power, 1.0, 0.0)
    with pytest.raises(ConfigError, match="fields' grid"):
        shell_power_ratio(f, power[:4])

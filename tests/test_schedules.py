"""Noise schedules: float64 tables, ᾱ in (0, 1], strictly decreasing SNR, the published formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rho_core.errors import ConfigError
from rho_core.schedules import SCHEDULES, make_schedule


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [2, 10, 257, 1000])
def test_tables_are_float64_consistent_and_monotone(name: str, T: int) -> None:
    s = make_schedule(name, T)
    assert s.T == T and s.betas.shape == (T,) and s.alphas_cumprod.shape == (T,)
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.dtype == torch.float64
    a = s.alphas_cumprod
    assert bool(((a > 0) & (a <= 1)).all())
    assert torch.allclose(a, torch.cumprod(1 - s.betas, 0), rtol=0, atol=0)
    assert bool((s.betas <= 0.999).all()) and bool((s.betas > 0).all())
    log_snr = s.log_snr_table
    assert bool((log_snr.diff() < 0).all()), "SNR must decrease strictly with t"
    # gathers agree with the tables and α² + σ² = 1
    t = torch.arange(T)
    assert torch.allclose(s.alpha(t) ** 2 + s.sigma(t) ** 2, torch.ones(T, dtype=torch.float64))
    assert torch.allclose(s.snr(t), a / (1 - a))
    assert torch.allclose(s.log_snr(t), torch.log(s.snr(t)))
    assert s.alpha(t).dtype == torch.float64


def test_linear_is_ho_et_al_at_1000() -> None:
    s = make_schedule("linear", 1000)
    ref = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(s.betas.numpy(), ref, rtol=0, atol=1e-15)
    # at other T the same noise range is covered
    s4 = make_schedule("linear", 4000)
    assert abs(math.log(s4.alphas_cumprod[-1].item()) - math.log(s.alphas_cumprod[-1].item())) < 0.1


def test_cosine_matches_nichol_dhariwal() -> None:
    T, s_ = 1000, 0.008
    s = make_schedule("cosine", T)
    f = lambda u: math.cos((u + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    for t in [0, 1, 10, 500, 900, 998]:
        expect = f((t + 1) / T) / f(0)
        assert s.alphas_cumprod[t].item() == pytest.approx(expect, rel=1e-9)
    assert s.betas[-1].item() == pytest.approx(0.999)  # the usual clip
    assert s.alphas_cumprod[-1].item() < 1e-8


def test_sigmoid_endpoints() -> None:
    s = make_schedule("sigmoid", 1000)
    assert s.alphas_cumprod[0].item() > 0.999
    assert s.alphas_cumprod[-1].item() < 1e-5
    # symmetric sigmoid: ᾱ ≈ 1/2 at mid-way
    assert s.alphas_cumprod[499].item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    "bad", [("quadratic", 1000), ("cosine", 1), ("cosine", 0), ("linear", 2.5)]
)
def test_bad_schedule_arguments(bad) -> None:
    with pytest.raises(ConfigError):
        make_schedule(*bad)


def test_numpy_integer_timesteps_and_device_of_gathers() -> None:
    s = make_schedule("cosine", np.int64(50))
    assert s.T == 50
    t = torch.tensor([[0, 49], [3, 4]])
    assert s.alpha(t).shape == (2, 2)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("shift", [-2.0, -4.0])
def test_shift_moves_log_snr_by_a_ramp(name: str, shift: float) -> None:
    """λ'_t = λ_t + Δ·t/(T − 1): unchanged at t = 0, Δ lower at the noisy end, still a valid
    strictly decreasing table (the last few t where β' hits the 0.999 clip excepted)."""
    T = 1000
    plain, shifted = make_schedule(name, T), make_schedule(name, T, shift=shift)
    assert plain.shift == 0.0 and shifted.shift == shift and "shift=" in repr(shifted)
    a = shifted.alphas_cumprod
    assert torch.allclose(a, torch.cumprod(1 - shifted.betas, 0), rtol=0, atol=0)
    assert bool((shifted.log_snr_table.diff() < 0).all())
    dlam = 0.5 * (shifted.log_snr_table - plain.log_snr_table)
    ramp = shift * torch.arange(T, dtype=torch.float64) / (T - 1)
    ok = slice(0, 990)
    assert torch.allclose(dlam[ok], ramp[ok], atol=1e-6)
    assert float(dlam[0]) == pytest.approx(0.0, abs=1e-9)
    assert make_schedule(name, T, shift=0.0).alphas_cumprod.equal(plain.alphas_cumprod)


@pytest.mark.parametrize("bad", [0.5, -10.5, math.nan, "a"])
def test_bad_shift(bad) -> None:
    with pytest.raises(ConfigError, match="shift"):
        make_schedule("cosine", 1000, shift=bad)

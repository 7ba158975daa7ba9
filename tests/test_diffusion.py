"""Forward process, targets, conversions, posterior and loss weighting against their formulas."""

from __future__ import annotations

import pytest
import torch

from rho_core import diffusion as D
from rho_core.errors import ConfigError
from rho_core.schedules import make_schedule
from rho_core.utils import append_dims

SHAPES = [(4, 1, 6), (4, 2, 5, 3), (4, 1, 3, 4, 2)]  # 1-D, 2-D, 3-D fields


def test_append_dims() -> None:
    x = torch.arange(3.0)
    assert append_dims(x, 5).shape == (3, 1, 1, 1, 1)
    assert append_dims(x, 1).shape == (3,)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_forward_moments_monte_carlo(name: str) -> None:
    """x_t = α x0 + σ ε: for fixed x0, mean α x0 and variance σ² (Monte Carlo, 200k draws)."""
    s = make_schedule(name)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    for t_int in [0, 100, 500, 999]:
        t = torch.full((n,), t_int)
        x0 = torch.full((n, 1, 1), 0.7, dtype=torch.float64)
        eps = torch.randn(n, 1, 1, generator=g, dtype=torch.float64)
        xt = D.q_sample(s, x0, t, eps)
        abar = s.alphas_cumprod[t_int].item()
        se = (1 - abar) ** 0.5 / n**0.5
        assert xt.mean().item() == pytest.approx(abar**0.5 * 0.7, abs=5 * se + 1e-12)
        assert xt.var().item() == pytest.approx(1 - abar, rel=0.02, abs=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_targets_and_conversions_round_trip(shape, prediction) -> None:
    s = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 998])
    xt = D.q_sample(s, x0, t, eps)
    y = D.target(prediction, s, x0, eps, t)
    # A perfect network outputs the target; the conversions recover ε and x0.
    assert torch.allclose(D.eps_from_output(prediction, s, xt, t, y), eps, atol=1e-8)
    assert torch.allclose(D.x0_from_output(prediction, s, xt, t, y), x0, atol=1e-6)
    assert torch.allclose(D.x0_from_eps(s, xt, t, eps), x0, atol=1e-6)
    assert torch.allclose(D.eps_from_x0(s, xt, t, x0), eps, atol=1e-8)
    if prediction == "v":
        a = s.alphas_cumprod[t].sqrt().view(-1, *[1] * (len(shape) - 1))
        assert torch.allclose(y, a * eps - (1 - a**2).sqrt() * x0)


def test_posterior_against_formula_and_bayes() -> None:
    """Posterior mean/var equal Ho et al. eq. 7 and the Gaussian conditioning of the joint."""
    s = make_schedule("linear", 1000)
    x0 = torch.randn(5, 1, 3, dtype=torch.float64)
    xt = torch.randn(5, 1, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 700, 999])
    mean, var = D.posterior_mean_variance(s, x0, xt, t)
    assert var.shape == (5, 1, 1)
    a, b = s.alphas_cumprod, s.betas
    for i, ti in enumerate(t.tolist()):
        a_prev = a[ti - 1].item() if ti > 0 else 1.0
        at, bt = a[ti].item(), b[ti].item()
        # Independent route: x_{t-1} = √ā_{t-1} x0 + √(1-ā_{t-1}) z and x_t = √(1-β) x_{t-1} + √β e.
        # Conditioning the Gaussian x_{t-1} | x0 on x_t gives precision 1/(1-ā_{t-1}) + (1-β)/β.
        if ti == 0:
            exp_var, exp_mean = 0.0, x0[i]
        else:
            prec = 1 / (1 - a_prev) + (1 - bt) / bt
            exp_var = 1 / prec
            exp_mean = exp_var * (a_prev**0.5 * x0[i] / (1 - a_prev) + (1 - bt) ** 0.5 * xt[i] / bt)
            assert exp_var == pytest.approx((1 - a_prev) / (1 - at) * bt, rel=1e-9)
        assert var[i].item() == pytest.approx(exp_var, rel=1e-9, abs=1e-15)
        assert torch.allclose(mean[i], exp_mean, rtol=1e-9, atol=1e-12)


def test_posterior_monte_carlo() -> None:
    """Sampling x_{t-1} ~ q(·|x0) then x_t ~ q(x_t|x_{t-1}): regress x_{t-1} on x_t for fixed x0."""
    s = make_schedule("cosine", 100)
    g = torch.Generator().manual_seed(3)
    n, ti, x0v = 400_000, 40, 0.5
    a_prev = s.alphas_cumprod[ti - 1].item()
    bt = s.betas[ti].item()
    x_prev = a_prev**0.5 * x0v + (1 - a_prev) ** 0.5 * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    x_t = (1 - bt) ** 0.5 * x_prev + bt**0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    mean, var = D.posterior_mean_variance(
        s, torch.full((n, 1), x0v, dtype=torch.float64), x_t[:, None], torch.full((n,), ti)
    )
    resid = x_prev - mean[:, 0]
    assert abs(resid.mean().item()) < 5 * var[0].item() ** 0.5 / n**0.5
    assert resid.var().item() == pytest.approx(var[0].item(), rel=0.01)
    # residual uncorrelated with x_t (mean is the regression of x_{t-1} on x_t)
    assert abs(torch.corrcoef(torch.stack([resid, x_t]))[0, 1].item()) < 0.01


def test_min_snr_weights_formula_and_clamp_direction() -> None:
    s = make_schedule("cosine", 1000)
    t = torch.arange(1000)
    snr = s.snr(t)
    gamma = 5.0
    w_eps = D.loss_weight("min_snr", s, t, "eps", gamma)
    w_x0 = D.loss_weight("min_snr", s, t, "x0", gamma)
    w_v = D.loss_weight("min_snr", s, t, "v", gamma)
    assert torch.allclose(w_eps, torch.minimum(snr, torch.tensor(gamma, dtype=torch.float64)) / snr)
    assert torch.allclose(w_x0, snr.clamp(max=gamma))
    assert torch.allclose(w_v, snr.clamp(max=gamma) / (snr + 1))
    # Clamp direction: low-noise steps (high SNR, small t) are DOWN-weighted for eps, and noisy
    # steps (SNR < γ) keep the plain eps loss (weight exactly 1) — not the other way round.
    assert w_eps[0].item() == pytest.approx(gamma / snr[0].item()) and w_eps[0].item() < 1e-3
    assert bool((w_eps[snr < gamma] == 1).all()) and bool((w_eps <= 1).all())
    assert bool((w_x0 <= gamma).all()) and w_x0[-1].item() == pytest.approx(snr[-1].item())
    # All three give the same effective weight min(SNR, γ) on the x0 error.
    assert torch.allclose(w_eps * snr, w_x0) and torch.allclose(w_v * (snr + 1), w_x0)
    assert torch.equal(D.loss_weight("uniform", s, t, "v"), torch.ones(1000, dtype=torch.float64))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_equalises_x0_error(prediction) -> None:
    """Effective-weight check through the loss: a network whose x̂0 is off by δ everywhere gets
    loss min(SNR, γ) δ² under every parameterisation."""
    s = make_schedule("linear", 1000)
    t = torch.tensor([5, 200, 600, 990])
    x0 = torch.zeros(4, 1, 8, dtype=torch.float64)
    eps = torch.randn(4, 1, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    delta = 0.1

    def model_fn(xt, tt):
        x0_hat = x0 + delta
        eps_hat = D.eps_from_x0(s, xt, tt, x0_hat)
        if prediction == "eps":
            return eps_hat
        if prediction == "x0":
            return x0_hat
        a, sg = s.alpha(tt).view(-1, 1, 1), s.sigma(tt).view(-1, 1, 1)
        return a * eps_hat - sg * x0_hat

    loss = D.diffusion_loss(model_fn, x0, t, eps, s, prediction, "min_snr", 5.0)
    assert loss.shape == (4,)
    assert torch.allclose(loss, s.snr(t).clamp(max=5.0) * delta**2, rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_diffusion_loss_zero_for_perfect_model_and_shape_errors(shape) -> None:
    s = make_schedule("cosine", 100)
    x0 = torch.randn(shape)
    eps = torch.randn(shape)
    t = torch.tensor([0, 1, 50, 99])
    loss = D.diffusion_loss(lambda xt, tt: eps.clone(), x0, t, eps, s, "eps", "uniform")
    assert loss.shape == (4,) and loss.dtype == torch.float32 and float(loss.abs().max()) == 0.0
    bad_out = lambda xt, tt: xt[:, :1, ...][..., :1]  # noqa: E731
    with pytest.raises(ConfigError, match="out_channels"):
        D.diffusion_loss(bad_out, x0, t, eps, s)


def test_unknown_names() -> None:
    s = make_schedule("cosine", 10)
    t = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ConfigError):
        D.loss_weight("snr", s, t, "eps")
    with pytest.raises(ConfigError):
        D.target("score", s, torch.zeros(2, 1), torch.zeros(2, 1), t)

"""rho_core.likelihood: the probability-flow log-likelihood against closed forms.

The exact Gaussian denoiser (rho_core.exact) gives the reference: for N(μ, diag s²) data the ODE's
density must equal log N(x; μ, s²); with the continuation switched off it must equal the density
of the t = 0 noised data instead. Also: the fractional-t network path (rho_core.model), the
Hutchinson estimator and its reported standard error, and the physical-units Jacobians.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gaussian_cases import gaussian_case  # tests/gaussian_cases.py

from rho_core.data.normalization import Normalizer
from rho_core.errors import ConfigError
from rho_core.exact import GaussianDenoiser
from rho_core.likelihood import (
    log_abs_det_inverse,
    log_likelihood,
    physical_log_prob,
    time_from_log_snr,
)
from rho_core.schedules import make_schedule

LN2 = math.log(2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _gaussian_case(name: str, d: int = 32, b: int = 12, seed: int = 0):
    return gaussian_case(name, d, b, seed)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_time_from_log_snr_inverts_the_schedule_convention(name: str) -> None:
    for shift in (0.0, -3.0):
        sch = make_schedule(name, 200, shift=shift)
        t = torch.tensor([0.0, 0.25, 1.0, 7.5, 100.125, 198.9, 199.0], dtype=torch.float64)
        back = time_from_log_snr(sch, sch.log_snr_at(t))
        assert torch.allclose(back, t, atol=1e-9)
    # outside the table: clamped to the ends
    lam = torch.tensor([1e3, -1e3], dtype=torch.float64)
    assert time_from_log_snr(sch, lam).tolist() == [0.0, 199.0]


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_exact_gaussian_bits_per_dim_match_closed_form(name: str) -> None:
    sch, den, mu, s, x = _gaussian_case(name)
    x[0] = mu + 4.0 * s  # an outlier: must score lower than every typical sample
    den.calls = 0
    res = log_likelihood(den, x, sch)
    d = x.shape[1]
    ref_bpd = -den.log_prob(x) / (d * LN2)
    err = (res.bits_per_dim - ref_bpd).abs()
    assert float(err.mean()) <= 0.002, err
    corr = torch.corrcoef(torch.stack([res.bits_per_dim, ref_bpd]))[0, 1]
    assert float(corr) >= 0.99
    assert float(res.log_prob[0]) < float(res.log_prob[1:].min())
    assert res.nfe == den.calls > 0
    assert res.divergence == "exact" and res.probes == 0
    assert torch.equal(res.log_prob_std, torch.zeros_like(res.log_prob_std))
    assert res.log_prob.dtype == torch.float64 and res.log_prob.shape == (x.shape[0],)
    assert torch.allclose(res.bits_per_dim, -res.log_prob / (d * LN2))


def test_without_continuation_it_is_the_density_of_the_noised_data() -> None:
    """continuation='none' ends at t = 0: log p_0(α₀x) + D log α₀ with p_0 = N(α₀μ, α₀²s² + σ₀²),
    which differs from the clean density by far more than the tolerance (why the continuation
    exists)."""
    sch, _, mu, _, x = _gaussian_case("linear", seed=1)
    s = torch.full_like(mu, 0.05)  # fine structure: σ₀²/s² = 0.04
    den = GaussianDenoiser(sch, mu, s)
    sign = torch.where(x > mu, 1.0, -1.0).to(torch.float64)
    x = mu + 2.0 * s * sign  # 2σ in every coordinate: the per-sample gap is ½(σ₀²/s²)(z² − 1)
    d = x.shape[1]
    res = log_likelihood(den, x, sch, continuation="none")
    a0 = float(sch.alphas_cumprod[0].sqrt())
    t0 = torch.zeros(x.shape[0], dtype=torch.int64)
    ref = den.log_prob_t(a0 * x, t0) + d * math.log(a0)
    assert float(((res.log_prob - ref) / (d * LN2)).abs().mean()) < 5e-4
    gap = ((res.log_prob - den.log_prob(x)) / (d * LN2)).abs().mean()
    assert float(gap) > 0.02  # the t = 0 noise matters at this accuracy
    full = log_likelihood(den, x, sch)  # …and the continuation removes it
    assert float(((full.log_prob - den.log_prob(x)) / (d * LN2)).abs().mean()) < 0.002


def test_start_t_gives_the_noised_marginal() -> None:
    sch, den, mu, s, x0 = _gaussian_case("cosine", d=16, b=6, seed=5)
    t = 123.4
    a = float(sch.alpha_bar_at(torch.tensor(t, dtype=torch.float64)).sqrt())
    xt = a * x0 + math.sqrt(1 - a * a) * torch.randn(x0.shape, dtype=torch.float64)
    res = log_likelihood(den, xt, sch, start_t=t)
    ref = den.log_prob_t(xt, torch.full((6,), t, dtype=torch.float64))
    assert float(((res.log_prob - ref) / (16 * LN2)).abs().max()) < 1e-4
    with pytest.raises(ConfigError, match="start_t"):
        log_likelihood(den, xt, sch, start_t=999.0)


def test_multidimensional_fields_and_float32_evaluation() -> None:
    sch = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(3)
    s = torch.linspace(0.1, 1.0, 16, dtype=torch.float64).reshape(1, 4, 4)
    den = GaussianDenoiser(sch, 0.0, s)
    x = s * torch.randn(4, 1, 4, 4, generator=g, dtype=torch.float64)
    ref = -den.log_prob(x) / (16 * LN2)
    r64 = log_likelihood(den, x, sch)
    assert float((r64.bits_per_dim - ref).abs().max()) < 1e-3
    r32 = log_likelihood(den, x.float(), sch)  # denoiser evaluated in float32
    assert float((r32.bits_per_dim - ref).abs().mean()) < 0.01
    assert r32.latent.shape == x.shape


def test_hutchinson_estimates_and_reports_its_error() -> None:
    sch, den, mu, s, x = _gaussian_case("cosine", d=24, b=6, seed=2)
    ref = den.log_prob(x)
    exact = log_likelihood(den, x, sch)
    # Rademacher probes are exact for a diagonal Jacobian: zero spread, same answer.
    rad = log_likelihood(
        den, x, sch, divergence="hutchinson", probes=3, generator=torch.Generator().manual_seed(0)
    )
    assert rad.divergence == "hutchinson" and rad.probes == 3
    assert torch.allclose(rad.log_prob, exact.log_prob, atol=1e-6)
    assert float(rad.log_prob_std.abs().max()) < 1e-9
    # Gaussian probes: unbiased with a real spread, and the reported standard error describes it.
    gau = log_likelihood(
        den,
        x,
        sch,
        divergence="hutchinson",
        probe="gaussian",
        probes=8,
        generator=torch.Generator().manual_seed(0),
    )
    assert bool((gau.log_prob_std > 0.1).all())
    z = (gau.log_prob - ref) / gau.log_prob_std
    assert float(z.abs().max()) < 5.0
    # shared probes: identical samples get identical estimates
    same = x[:1].expand(3, -1).clone()
    sh = log_likelihood(
        den,
        same,
        sch,
        divergence="hutchinson",
        probe="gaussian",
        probes=2,
        shared_probes=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(sh.log_prob.max() - sh.log_prob.min()) < 1e-9
    one = log_likelihood(
        den, x[:2], sch, divergence="hutchinson", probes=1, generator=torch.Generator()
    )
    assert bool(one.log_prob_std.isnan().all())


def test_bad_options_raise_config_errors() -> None:
    sch, den, mu, s, x = _gaussian_case("linear", d=4, b=2)
    for kw, word in (
        ({"divergence": "magic"}, "divergence"),
        ({"probe": "uniform"}, "probe"),
        ({"continuation": "x"}, "continuation"),
        ({"rtol": 0.0}, "rtol"),
        ({"max_steps": 2}, "max_steps"),
        ({"divergence": "hutchinson", "probes": 0}, "probes"),
    ):
        with pytest.raises(ConfigError, match=word):
            log_likelihood(den, x, sch, **kw)
    with pytest.raises(ConfigError, match="non-empty"):
        log_likelihood(den, x[:0], sch)


# ----- physical units ------------------------------------------------------------------------


def _normalizers() -> list[Normalizer]:
    return [
        Normalizer.identity(),
        Normalizer("minmax", min=-2.0, max=6.0),
        Normalizer("standard", mean=1.5, std=3.0),
        Normalizer("asinh", min=-50.0, max=4000.0, scale=2.5),
        Normalizer("log", min=0.01, max=300.0, floor=1e-3),
    ]


@pytest.mark.parametrize("norm", _normalizers(), ids=lambda n: n.transform)
def test_log_abs_det_inverse_matches_autograd(norm: Normalizer) -> None:
    y = torch.linspace(-1.3, 1.3, 40, dtype=torch.float64).reshape(2, 1, 20)
    yy = y.clone().requires_grad_(True)
    x = norm.inverse(yy)
    if norm.transform == "identity":
        ref = torch.zeros(2, dtype=torch.float64)
    else:
        (dxdy,) = torch.autograd.grad(x.sum(), yy)  # elementwise map: the Jacobian diagonal
        ref = dxdy.abs().log().flatten(1).sum(1)
    got = log_abs_det_inverse(norm, y)
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-9)
    assert log_abs_det_inverse(None, y).abs().max() == 0


def test_physical_log_prob_is_the_transformed_gaussian() -> None:
    """Model N(μ, s²) in normalised space + 'standard' normaliser (x = m + σ y) ⇒ the physical
    density is N(m + σμ, (σs)²) exactly."""
    sch, den, mu, s, y = _gaussian_case("cosine", d=8, b=5, seed=4)
    norm = Normalizer("standard", mean=1.5, std=3.0)
    res = log_likelihood(den, y, sch, normalizer=norm)
    xp = norm.inverse(y)
    m, sd = 1.5 + 3.0 * mu, 3.0 * s
    ref = -0.5 * (((xp - m) / sd) ** 2 + torch.log(2 * math.pi * sd * sd)).sum(1)
    assert res.physical_log_prob is not None
    assert torch.allclose(res.physical_log_prob, ref, atol=5e-3 * y.shape[1])
    assert torch.allclose(
        physical_log_prob(res.log_prob, y, norm), res.physical_log_prob, atol=0, rtol=0
    )
    assert "physical_log_prob" in res.to_dict()
    np.testing.assert_allclose(res.to_dict()["bits_per_dim"], res.bits_per_dim.numpy())


# ----- the network path: fractional t --------------------------------------------------------


def _tiny_model(prediction: str):
    from rho_core.model import DiffusionModel, default_model_config

    torch.manual_seed(0)
    cfg = default_model_config(
        1,
        1,
        ("a",),
        (0.0,),
        (1.0,),
        cond_dim=8,
        base_channels=8,
        channel_mult=(1, 2),
        prediction=prediction,
        timesteps=50,
        schedule_shift=0.0,
        attention_levels=(),
    )
    model = DiffusionModel(cfg).eval().requires_grad_(False)
    with torch.no_grad():  # the output layer starts at zero: make the network a real function
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    return model


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_model_denoiser_accepts_fractional_t(prediction: str) -> None:
    from rho_core.diffusion import eps_from_output

    model = _tiny_model(prediction)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, generator=g)
    p = torch.tensor([[0.2], [0.5], [0.9]], dtype=torch.float64)
    ti = torch.tensor([0, 7, 49])
    ref = eps_from_output(prediction, model.schedule, x, ti, model.net(x, ti, model.embed(p, 3)))
    # integer t — int64 or integral floats — is bit-identical to the previous int64 path
    assert torch.equal(model.denoiser(x, ti, p), ref)
    assert torch.equal(model.denoiser(x, ti.to(torch.float64), p), ref)
    assert torch.equal(model.denoiser(x, ti.float(), p), ref)
    # fractional t: continuous in t and converted with ᾱ(t) = sigmoid(λ(t))
    tf = torch.tensor([0.5, 7.25, 48.5], dtype=torch.float64)
    out = model(x, tf, p)
    e = model.denoiser(x, tf, p)
    abar = model.schedule.alpha_bar_at(tf)[:, None, None]
    a, sg = abar.sqrt().float(), (1 - abar).sqrt().float()
    want = {"eps": out, "x0": (x - a * out) / sg, "v": sg * x + a * out}[prediction]
    assert torch.allclose(e, want, atol=1e-5)
    near = model.denoiser(x, ti.to(torch.float64) + 1e-4, p)
    assert torch.allclose(near, ref, atol=1e-2 * (1 + ref.abs().max()))
    assert not torch.equal(model.denoiser(x, tf, p), model.denoiser(x, tf.floor(), p))


def test_network_divergence_exact_and_hutchinson_agree() -> None:
    """On a (random) network: the batched exact divergence equals D single VJPs, and the mean of
    many Rademacher probes agrees with it within its standard error."""
    from rho_core.likelihood import _exact_divergence, _hutchinson

    model = _tiny_model("x0")
    x = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    p = torch.tensor([[0.3]], dtype=torch.float64).expand(2, 1)
    t = torch.full((2,), 10.5, dtype=torch.float64)
    with torch.enable_grad():
        y = x.clone().requires_grad_(True)
        e = model.denoiser(y.float().reshape(2, 1, 8), t, p).reshape(2, 8).double()
        exact = _exact_divergence(e, y)
        loop = torch.zeros(2, dtype=torch.float64)
        for i in range(8):
            (g,) = torch.autograd.grad(e[:, i].sum(), y, retain_graph=True)
            loop += g[:, i]
        probes = torch.randint(0, 2, (400, 2, 8), generator=torch.Generator().manual_seed(0))
        est = _hutchinson(e, y, probes.double() * 2 - 1)
    assert torch.allclose(exact, loop, rtol=1e-6, atol=1e-6)
    se = est.std(1) / math.sqrt(est.shape[1])
    assert bool(((est.mean(1) - exact).abs() < 5 * se + 1e-9).all())
    assert float(exact.abs().min()) > 0


def test_network_likelihood_runs_and_depends_on_the_condition() -> None:
    model = _tiny_model("eps")
    x = torch.randn(2, 1, 8, generator=torch.Generator().manual_seed(1)) * 0.5
    p = torch.tensor([[0.3]], dtype=torch.float64).expand(2, 1)
    kw = {"rtol": 1e-2, "atol": 1e-2, "divergence": "hutchinson", "probes": 1}
    g = torch.Generator().manual_seed(0)
    ex = log_likelihood(model.denoiser, x, model.schedule, cond=p, generator=g, **kw)
    assert bool(torch.isfinite(ex.log_prob).all()) and ex.nfe > 0 and ex.steps > 0
    g = torch.Generator().manual_seed(0)
    other = log_likelihood(model.denoiser, x, model.schedule, cond=p * 0 + 0.9, generator=g, **kw)
    assert float((other.log_prob - ex.log_prob).abs().max()) > 1e-6

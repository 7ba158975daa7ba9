"""The ODE likelihood's Fourier control variate (rho_core.likelihood, ``control_variate``).

Reference: the exact Fourier denoiser of a 32² Gaussian random field, whose density is known in
closed form (``grf_log_prob`` on the zero-mean subspace plus the value the continued ODE gives
the zero-variance mean mode, docs/likelihood.md §4). Plain Hutchinson with four probes scatters
by nats; with the field's own spectrum as the reference the scatter must vanish (the model *is*
the reference), with a power law fitted to the field's periodogram it must shrink more than
tenfold, and every estimate must stay unbiased within its reported standard error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rho_core.data.random_fields import gaussian_field, grf_log_prob, spectrum_grid
from rho_core.errors import ConfigError
from rho_core.exact import FourierGaussianDenoiser
from rho_core.likelihood import log_likelihood
from rho_core.schedules import make_schedule

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, AMP, IDX = 32, 1.0, -2.0


@pytest.fixture(scope="module")
def grf_case():
    sch = make_schedule("cosine", 1000, shift=-4.0)
    rng = np.random.default_rng(3)
    fields = np.stack([gaussian_field(SIZE, 2, AMP, IDX, rng)[None] for _ in range(6)])
    power = spectrum_grid(SIZE, 2, AMP, IDX)
    scale = float(np.sqrt(power.sum() / SIZE**2))
    pw = torch.as_tensor(power / scale**2)
    den = FourierGaussianDenoiser(sch, pw)
    y = torch.as_tensor(fields / scale)
    tau0 = math.exp(-float(sch.log_snr_table[0]))
    m = SIZE * SIZE
    ref = grf_log_prob(fields, AMP, IDX) + (m - 1) * math.log(scale)
    ref = ref - 0.5 * math.log(2 * math.pi * tau0) + 0.5  # the continued ODE's mean mode
    return sch, den, y, pw, ref


def _ode(den, y, sch, **kw):
    return log_likelihood(
        den, y, sch, divergence="hutchinson", probes=4, rtol=1e-6, atol=1e-6,
        generator=torch.Generator().manual_seed(0), **kw,
    )  # fmt: skip


def test_exact_reference_removes_the_hutchinson_noise(grf_case) -> None:
    sch, den, y, pw, ref = grf_case
    plain = _ode(den, y, sch)
    exact_cv = _ode(den, y, sch, control_variate=("fourier", pw[None, None]))
    # plain Hutchinson: unbiased, with a real spread (nats on D = 1024); four probes estimate
    # their own spread poorly (t with 3 d.o.f.), so the errors are scaled by the pooled one
    assert float(plain.log_prob_std.min()) > 0.3, plain.log_prob_std
    pooled = float(plain.log_prob_std.pow(2).mean().sqrt())
    z = (plain.log_prob.numpy() - ref) / pooled
    assert float(np.abs(z).max()) < 4.0, z
    # the model is the reference: nothing left to sample, the closed form to solver accuracy
    assert float(exact_cv.log_prob_std.max()) < 1e-6, exact_cv.log_prob_std
    err = exact_cv.log_prob.numpy() - ref  # a common offset of ~0.01 nats (5e-5 bits/dim) is
    assert float(np.abs(err).max()) < 0.03 and float(err.std()) < 1e-3, err  # the noise end
    # per-probe values are reported and average to log_prob
    assert plain.log_prob_probes is not None and plain.log_prob_probes.shape == (6, 4)
    assert torch.allclose(plain.log_prob_probes.mean(1), plain.log_prob, atol=1e-9)


def test_fitted_references_shrink_the_noise_and_stay_unbiased(grf_case) -> None:
    sch, den, y, pw, ref = grf_case
    plain = _ode(den, y, sch)
    law = _ode(den, y, sch, control_variate="powerlaw")
    spec = _ode(den, y, sch, control_variate="spectral")
    pooled = {k: float(r.log_prob_std.pow(2).mean().sqrt()) for k, r in
              (("plain", plain), ("powerlaw", law), ("spectral", spec))}  # fmt: skip
    assert pooled["plain"] / pooled["powerlaw"] > 10.0, pooled
    assert pooled["plain"] / pooled["spectral"] > 1.5, pooled
    for res, key in ((law, "powerlaw"), (spec, "spectral")):
        err = res.log_prob.numpy() - ref
        # unbiased: within the reported error (plus the solver's ~0.01 nats)
        assert float(np.abs(err).max()) < 4.0 * pooled[key] + 0.02, (key, err)
    # the reference is a function of x only: shared probes give one value per identical field
    same = y[:1].expand(3, -1, -1, -1).clone()
    sh = _ode(den, same, sch, control_variate="powerlaw", shared_probes=True)
    assert float(sh.log_prob.max() - sh.log_prob.min()) < 1e-9


def test_power_law_fit_recovers_a_power_law_spectrum() -> None:
    """A field whose periodogram is exactly A|κ|^n (unit-modulus white noise coloured by √P)
    gets back A|κ|^n up to the shell-rounding bias (a shell averages |κ|^n over |κ| ± ½: a
    few per cent), for each sample and channel."""
    from rho_core.reference_spectra import shell_periodogram, shell_power_law

    size = 64
    gen = torch.Generator().manual_seed(0)
    white = torch.fft.fftn(torch.randn(2, 3, size, size, generator=gen, dtype=torch.float64),
                           dim=(2, 3), norm="ortho")  # fmt: skip
    out = []
    for amp, idx in ((1.0, -2.0), (0.3, -1.0), (5.0, -2.7)):
        p = torch.as_tensor(spectrum_grid(size, 2, amp, idx))
        f = white / white.abs().clamp(min=1e-30) * p.sqrt()
        out.append(torch.fft.ifftn(f, dim=(2, 3), norm="ortho").real)
    x = torch.cat(out, dim=1)  # (2, 9, N, N), channel c has spectrum c // 3
    fit = shell_power_law(x, 2)
    assert fit.shape == x.shape and fit.dtype == torch.float64
    for c in range(x.shape[1]):
        amp, idx = ((1.0, -2.0), (0.3, -1.0), (5.0, -2.7))[c // 3]
        p = torch.as_tensor(spectrum_grid(size, 2, amp, idx))
        ratio = fit[:, c][:, p > 0] / p[p > 0]
        assert float((ratio - 1).abs().max()) < 0.1, (amp, idx, float((ratio - 1).abs().max()))
        assert float((ratio.median() - 1).abs()) < 0.03
    # the periodogram reference is exact on average over each shell, and both keep κ = 0
    per = shell_periodogram(x, 2)
    assert torch.allclose(per[..., 0, 0], fit[..., 0, 0])


def test_a_wrong_reference_is_still_unbiased(grf_case) -> None:
    """A reference with 3× the true power costs variance, not bias."""
    sch, den, y, pw, ref = grf_case
    k = torch.as_tensor(spectrum_grid(SIZE, 2, 1.0, -1.0) > 0)
    wrong = pw * torch.where(k, 3.0, 1.0)
    res = _ode(den, y, sch, control_variate=("fourier", wrong))
    z = (res.log_prob.numpy() - ref) / float(res.log_prob_std.pow(2).mean().sqrt())
    assert float(np.abs(z).max()) < 4.0, z


def test_control_variate_options_are_checked(grf_case) -> None:
    sch, den, y, pw, _ = grf_case
    with pytest.raises(ConfigError, match="control_variate for the ODE"):
        _ode(den, y[:1], sch, control_variate="bogus")
    with pytest.raises(ConfigError, match=r"power must be \(B \| 1"):
        _ode(den, y[:1], sch, control_variate=("fourier", pw[:8]))
    flat = y[:1].reshape(1, -1)
    for cv in ("spectral", "powerlaw"):
        with pytest.raises(ConfigError, match="needs \\(B, C, \\*spatial\\) inputs"):
            _ode(den, flat, sch, control_variate=cv)
    # the exact divergence ignores it (nothing to reduce)
    small = log_likelihood(den, y[:1], sch, divergence="exact", control_variate="spectral")
    assert small.log_prob_std.item() == 0.0 and small.log_prob_probes is None


def _head_model(spectral_head: int = 8, prediction: str = "v", unet_out: bool = False):
    """A tiny 2-D model with a spectral head; with ``unet_out=False`` the U-Net's own output
    layer is zeroed, so the network output *is* the head (ε̂ exactly affine in x_t)."""
    from rho_core.model import DiffusionModel, default_model_config

    torch.manual_seed(0)
    cfg = default_model_config(
        2, 1, ("a",), (0.0,), (1.0,), conditioning="continuous", cond_dim=4, base_channels=8,
        channel_mult=(1, 2), prediction=prediction, timesteps=100, schedule_shift=0.0,
        attention_levels=(), spectral_head=spectral_head, circular=True,
    )  # fmt: skip
    model = DiffusionModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if not unet_out:
            for p in model.net.out.parameters():
                p.zero_()
    return model.eval()


@pytest.mark.parametrize("prediction", ["v", "eps", "x0"])
def test_eps_linear_multiplier_is_the_heads_part_of_the_denoiser(prediction) -> None:
    model = _head_model(prediction=prediction)
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0.0, 12.5, 80.25], dtype=torch.float64)
    cond = torch.tensor([[0.2], [0.5], [0.9]], dtype=torch.float64)
    with torch.no_grad():
        eps = model.denoiser(x, t, cond).double()
        m = model.eps_linear_multiplier(t, cond, (8, 8))
    assert m.shape == (3, 1, 8, 8) and m.dtype == torch.float64
    lin = torch.fft.ifftn(m * torch.fft.fftn(x.double(), dim=(2, 3)), dim=(2, 3)).real
    abar = model.schedule.alpha_bar_at(t).view(-1, 1, 1, 1)
    sigma = (1 - abar).sqrt()
    # the rest of ε̂ is what the zeroed U-Net leaves: nothing (ε), σ x_t (v), x_t/σ (x₀)
    rest = {"eps": 0 * x, "v": sigma * x, "x0": x / sigma}[prediction]
    torch.testing.assert_close(eps, lin + rest, atol=2e-5 * float(eps.abs().max()), rtol=0)


def test_head_control_variate_is_exact_when_the_network_is_its_head() -> None:
    """ε̂ = σ x_t + α·head(x_t): the head's part is taken exactly, the rest is diagonal, so four
    Rademacher probes give the exact divergence's answer with zero spread."""
    model = _head_model()
    x = torch.randn(2, 1, 8, 8)
    cond = torch.tensor([[0.3], [0.7]], dtype=torch.float64)
    kw = dict(rtol=1e-6, atol=1e-6)
    exact = log_likelihood(model.denoiser, x, model.schedule, cond, divergence="exact", **kw)
    plain = log_likelihood(model.denoiser, x, model.schedule, cond, divergence="hutchinson",
                           probes=4, generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip
    head = log_likelihood(model.denoiser, x, model.schedule, cond, divergence="hutchinson",
                          probes=4, control_variate="head",
                          generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip
    assert float(plain.log_prob_std.min()) > 1e-3  # the head's Jacobian is not diagonal
    assert float(head.log_prob_std.max()) < 1e-6, head.log_prob_std
    torch.testing.assert_close(head.log_prob, exact.log_prob, atol=1e-3, rtol=0)


def test_head_control_variate_needs_a_model_with_a_head() -> None:
    x = torch.randn(1, 1, 8, 8)
    cond = torch.tensor([[0.5]], dtype=torch.float64)
    model = _head_model(spectral_head=0, unet_out=True)
    with pytest.raises(ConfigError, match="no spectral head"):
        log_likelihood(model.denoiser, x, model.schedule, cond, divergence="hutchinson",
                       control_variate="head", rtol=1e-2, atol=1e-2)  # fmt: skip
    sch = make_schedule("cosine", 1000, shift=-4.0)
    den = FourierGaussianDenoiser(sch, torch.ones(8, 8, dtype=torch.float64))
    with pytest.raises(ConfigError, match="needs a trained model's denoiser"):
        log_likelihood(den, x.double(), sch, divergence="hutchinson", control_variate="head")

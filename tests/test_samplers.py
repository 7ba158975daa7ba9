"""Samplers without training: the exact ε-predictor of Gaussian data must give back the data.

For x₀ ~ N(μ, s²) per dimension, x_t ~ N(α μ, α² s² + σ²), so the exact (MMSE) ε-predictor is
ε̂(x_t, t) = σ (x_t − α μ) / (α² s² + σ²). Every sampler run with it should reproduce μ and s,
up to its known discretisation error.
"""

from __future__ import annotations

import math

import pytest
import torch

from rho_core.errors import ConfigError
from rho_core.samplers import SPACINGS, sample, timesteps_for
from rho_core.schedules import make_schedule

# 20k scalars: 4000 samples of a 1-channel 1-D field of 5 points, each point its own Gaussian.
SHAPE = (4000, 1, 5)
MU = torch.tensor([-0.5, -0.2, 0.0, 0.3, 0.6], dtype=torch.float64).view(1, 1, 5)
STD = torch.tensor([0.3, 0.4, 0.5, 0.6, 0.8], dtype=torch.float64).view(1, 1, 5)


def gaussian_denoiser(schedule, mu=MU, std=STD, calls=None):
    abar = schedule.alphas_cumprod

    def denoiser(x, t, cond):
        assert t.dtype == torch.int64 and t.shape == (x.shape[0],)
        assert bool((t == t[0]).all())  # the samplers evaluate one timestep per call
        if calls is not None:
            calls.append((int(t[0]), cond))
        a = float(abar[int(t[0])])
        m = mu if cond is None else cond
        eps = math.sqrt(1 - a) * (x.double() - math.sqrt(a) * m) / (a * std**2 + 1 - a)
        return eps.to(x.dtype)

    return denoiser


pytestmark = pytest.mark.usefixtures("one_thread")


def moments(x):
    x = x.double()
    return x.mean(0, keepdim=True), x.std(0, keepdim=True)


def standard_noise(seed: int) -> torch.Tensor:
    """x_T ~ N(0, I), standardised per dimension over the batch: deterministic samplers then
    have no Monte Carlo error in the mean and std they produce."""
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (z - z.mean(0, keepdim=True)) / z.std(0, keepdim=True)


def check(x, mean_tol, std_lo, std_hi):
    """Per-dim mean error (in units of the std) below ``mean_tol``, pooled std ratio in range."""
    m, s = moments(x)
    assert x.shape == SHAPE
    assert float(((m - MU) / STD).abs().max()) < mean_tol
    ratio = float((s / STD).mean())
    assert std_lo < ratio < std_hi, ratio
    return ratio


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_1000_steps_reproduces_the_data(name) -> None:
    """Stochastic: MC error of a per-dim mean is 1/√4000 ≈ 1.6 % of s, of the pooled std ≈ 0.5 %.
    Measured (200k scalars): std −0.7 % (linear), the discrete chain's σ² = β̃ deficit."""
    sch = make_schedule(name, 1000)
    x = sample(
        gaussian_denoiser(sch),
        SHAPE,
        sch,
        method="ddpm",
        steps=1000,
        generator=torch.Generator().manual_seed(0),
    )
    check(x, 0.08, 0.975, 1.015)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_50_reproduces_the_data(name) -> None:
    """DDIM is first order: at 50 λ-uniform steps it is ~4.5 % short in std (documented in
    docs/samplers.md); ten times the steps cut the deficit about tenfold."""
    sch = make_schedule(name, 1000)
    den = gaussian_denoiser(sch)
    x_T = standard_noise(1)
    r50 = check(sample(den, SHAPE, sch, "ddim", 50, x_T=x_T, dtype=torch.float64), 0.01, 0.94, 0.97)
    r500 = check(
        sample(den, SHAPE, sch, "ddim", 500, x_T=x_T, dtype=torch.float64), 0.01, 0.99, 1.0
    )
    assert abs(r500 - 1) < 0.15 * abs(r50 - 1)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_dpmpp_20_reproduces_the_data(name) -> None:
    sch = make_schedule(name, 1000)
    x = sample(gaussian_denoiser(sch), SHAPE, sch, "dpmpp", 20, x_T=standard_noise(2))
    check(x, 0.01, 0.995, 1.02)


def test_deterministic_linear_map_std_is_exact() -> None:
    """η = 0 samplers are affine maps x_T ↦ x₀; for the exact denoiser the slope is the generated
    std. Default DPM-Solver++(2M) at 20 steps on cosine: within 2 % for data stds 0.1 … 2."""
    sch = make_schedule("cosine", 1000)
    for s in [0.1, 0.25, 0.5, 1.0, 2.0]:
        den = gaussian_denoiser(sch, mu=torch.tensor(0.3), std=torch.tensor(s, dtype=torch.float64))
        ends = [
            sample(den, (1, 1), sch, "dpmpp", 20, x_T=torch.full((1, 1), v), dtype=torch.float64)
            for v in (0.0, 1.0)
        ]
        slope = float(ends[1] - ends[0])
        assert abs(slope / s - 1) < 0.02, (s, slope)


def test_ddim_eta0_is_deterministic_and_seed_dependent() -> None:
    sch = make_schedule("cosine", 100)
    den = gaussian_denoiser(sch)
    a = sample(den, SHAPE, sch, "ddim", 10, generator=torch.Generator().manual_seed(7))
    b = sample(den, SHAPE, sch, "ddim", 10, generator=torch.Generator().manual_seed(7))
    c = sample(den, SHAPE, sch, "ddim", 10, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32


def test_ddim_eta1_equals_strided_ddpm_and_ddpm_is_reproducible() -> None:
    sch = make_schedule("linear", 200)
    den = gaussian_denoiser(sch)
    kw = dict(dtype=torch.float64)
    a = sample(
        den, SHAPE, sch, "ddim", 25, eta=1.0, generator=torch.Generator().manual_seed(3), **kw
    )
    b = sample(den, SHAPE, sch, "ddpm", 25, generator=torch.Generator().manual_seed(3), **kw)
    c = sample(den, SHAPE, sch, "ddpm", 25, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.allclose(a, b, atol=1e-9) and torch.equal(b, c)
    # η interpolates: η = 0.5 differs from both
    d = sample(
        den, SHAPE, sch, "ddim", 25, eta=0.5, generator=torch.Generator().manual_seed(3), **kw
    )
    assert not torch.allclose(d, a, atol=1e-3)


def test_classifier_free_guidance_follows_the_formula() -> None:
    """ε = ε_u + g (ε_c − ε_u): with Gaussian ε_c (mean μ_c) and ε_u (mean 0), same std, the
    guided ε is exactly the ε of N(g μ_c, s²) — so samples have mean g μ_c."""
    sch = make_schedule("cosine", 1000)
    std = torch.tensor(0.5, dtype=torch.float64)
    calls: list = []
    den = gaussian_denoiser(sch, mu=torch.tensor(0.0, dtype=torch.float64), std=std, calls=calls)
    mu_c = torch.full((20000, 1), 0.4, dtype=torch.float64)
    g = 2.5
    x = sample(
        den,
        (20000, 1),
        sch,
        "dpmpp",
        20,
        cond=mu_c,
        guidance=g,
        generator=torch.Generator().manual_seed(4),
        dtype=torch.float64,
    )
    assert x.mean().item() == pytest.approx(g * 0.4, abs=0.02)
    assert x.std().item() == pytest.approx(0.5, rel=0.03)
    # two calls per step, the unconditional one with cond=None
    assert len(calls) == 40 and sum(c is None for _, c in calls) == 20
    # guidance == 1: one conditional call per step, mean μ_c
    calls.clear()
    x1 = sample(
        den,
        (20000, 1),
        sch,
        "dpmpp",
        20,
        cond=mu_c,
        guidance=1.0,
        generator=torch.Generator().manual_seed(4),
        dtype=torch.float64,
    )
    assert len(calls) == 20 and all(c is mu_c for _, c in calls)
    assert x1.mean().item() == pytest.approx(0.4, abs=0.02)


@pytest.mark.parametrize("method", ["ddpm", "ddim", "dpmpp"])
def test_callback_sees_every_step(method) -> None:
    sch = make_schedule("cosine", 100)
    seen: list = []
    x = sample(
        gaussian_denoiser(sch),
        (3, 1, 5),
        sch,
        method,
        12,
        generator=torch.Generator().manual_seed(0),
        callback=seen.append,
    )
    assert [d["i"] for d in seen] == list(range(12))
    assert [d["t"] for d in seen] == timesteps_for(sch, 12, "lambda")
    assert all(d["x_t"].shape == (3, 1, 5) and d["x0_hat"].shape == (3, 1, 5) for d in seen)
    assert torch.equal(seen[-1]["x_next"], x)
    assert torch.equal(seen[1]["x_t"], seen[0]["x_next"])


def test_full_ddpm_chain_visits_every_timestep() -> None:
    sch = make_schedule("linear", 50)
    ts: list = []
    sample(gaussian_denoiser(sch), (2, 1, 5), sch, "ddpm", 50, callback=lambda d: ts.append(d["t"]))
    assert ts == list(range(49, -1, -1))


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("T", [10, 1000])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_timestep_grids(spacing, T, name) -> None:
    sch = make_schedule(name, T)
    lam = (0.5 * sch.log_snr_table).tolist()
    for n in sorted({1, 2, 3, 7, T // 2, T}):
        ts = timesteps_for(sch, n, spacing)
        assert len(ts) == n and all(0 <= t < T for t in ts)
        assert all(a > b for a, b in zip(ts, ts[1:], strict=False))
        if spacing in ("linspace", "trailing"):
            assert ts[0] == T - 1
        if spacing == "lambda" and n < T:
            # starts at T − 1, or at the timestep nearest λ = −5 when the schedule ends noisier
            t_start = next((t for t in range(T) if lam[t] <= -5.0), T - 1)
            assert ts[0] == min(max(t_start, n - 1), T - 1)
        if spacing in ("lambda", "linspace", "leading") and n > 1:
            assert ts[-1] == 0
    assert timesteps_for(sch, T, spacing) == list(range(T - 1, -1, -1))


def test_lambda_grid_is_uniform_in_log_snr() -> None:
    sch = make_schedule("cosine", 1000)
    ts = timesteps_for(sch, 20, "lambda")
    lam = (0.5 * sch.log_snr_table)[ts]
    assert -5.3 < lam[0].item() <= -5.0 and ts[-1] == 0
    h = lam.diff()
    # integer rounding perturbs the last few steps (λ moves fast per step near t = 0)
    assert float(h[:-4].max() - h[:-4].min()) < 0.1 * float(h.mean())
    assert float(h.max()) < 1.3 * float(h.mean()) and float(h.min()) > 0.7 * float(h.mean())


def test_default_grid_is_robust_to_network_error() -> None:
    """A 1 % error on ε̂ must not blow up the samples (it did by ~+290 % when the grid started at
    t = T − 1 on cosine, where x̂₀ divides the error by α ≈ 5e-5)."""
    sch = make_schedule("cosine", 1000)
    exact = gaussian_denoiser(sch)
    g = torch.Generator().manual_seed(11)

    def noisy(x, t, cond):
        return exact(x, t, cond) + 0.01 * torch.randn(x.shape, generator=g, dtype=x.dtype)

    x = sample(noisy, SHAPE, sch, "dpmpp", 20, x_T=standard_noise(5), dtype=torch.float64)
    check(x, 0.03, 0.98, 1.05)


def test_clip_x0_is_optional_and_applied() -> None:
    sch = make_schedule("cosine", 100)
    seen: list = []
    sample(
        gaussian_denoiser(sch),
        (50, 1, 5),
        sch,
        "ddim",
        10,
        clip_x0=0.1,
        generator=torch.Generator().manual_seed(0),
        callback=seen.append,
    )
    assert max(float(d["x0_hat"].abs().max()) for d in seen) <= 0.1 + 1e-6
    seen.clear()
    sample(
        gaussian_denoiser(sch),
        (50, 1, 5),
        sch,
        "ddim",
        10,
        generator=torch.Generator().manual_seed(0),
        callback=seen.append,
    )
    assert max(float(d["x0_hat"].abs().max()) for d in seen) > 1.0  # no clipping by default


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="euler"), "unknown sampler"),
        (dict(steps=0), "steps"),
        (dict(steps=101), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(method="dpmpp", eta=0.5), "eta"),
        (dict(eta=1.5), "eta"),
        (dict(guidance=math.nan), "guidance"),
        (dict(spacing="quadratic"), "spacing"),
        (dict(clip_x0=0.0), "clip_x0"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    sch = make_schedule("cosine", 100)
    args = dict(method="ddim", steps=10) | kwargs
    with pytest.raises(ConfigError, match=match):
        sample(gaussian_denoiser(sch), (2, 1, 5), sch, **args)


def test_wrong_denoiser_output_shape() -> None:
    sch = make_schedule("cosine", 100)
    with pytest.raises(ConfigError, match="denoiser returned shape"):
        sample(lambda x, t, c: x[:, :, :1], (2, 1, 5), sch, "ddim", 5)


def test_guidance_batches_cond_and_uncond_into_one_model_call() -> None:
    # A DiffusionModel's denoiser accepts a drop mask, so ε_c and ε_u come from ONE forward of
    # the doubled batch; the result must equal the two-call formula ε_u + g (ε_c − ε_u).
    from rho_core.model import DiffusionModel, default_model_config

    torch.manual_seed(0)
    cfg = default_model_config(
        1,
        1,
        ("a", "b"),
        (0.0, 0.0),
        (1.0, 1.0),
        cond_dim=8,
        base_channels=8,
        channel_mult=(1, 2),
        attention_levels=(),
        timesteps=50,
        prediction="eps",
    )  # fmt: skip  (ε output: no x₀→ε conversion amplifying float32 round-off at small σ)
    model = DiffusionModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batches = []
    model.net.register_forward_hook(lambda m, inp, out: batches.append(inp[0].shape[0]))
    cond = torch.tensor([[0.2, 0.7], [0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    kw = dict(method="dpmpp", steps=4, cond=cond, guidance=2.5)
    fast = sample(
        model.denoiser, (3, 1, 8), model.schedule, generator=torch.Generator().manual_seed(1), **kw
    )
    assert batches == [6] * 4  # one batched call per step
    batches.clear()
    slow = sample(
        lambda x, t, c: model.denoiser(x, t, c),
        (3, 1, 8),
        model.schedule,
        generator=torch.Generator().manual_seed(1),
        **kw,
    )
    assert batches == [3] * 8  # two calls per step without drop support
    assert torch.allclose(fast, slow, atol=1e-5)
    assert not fast.is_inference()  # an ordinary tensor: usable in place and in autograd
    fast += 1.0


def test_bf16_autocast_sampling_stays_close_to_fp32() -> None:
    # The optional bf16 path of rho_core.evaluation.generate: same noise, a tiny perturbed 3-D
    # model (patch 2, batch 1 → the oneDNN conv path); bf16 has an 8-bit mantissa (≈ 0.4 %
    # per op), so the sample must agree with fp32 to a few per cent of its scale.
    from rho_core.evaluation import _autocast_denoiser
    from rho_core.model import DiffusionModel, default_model_config

    torch.manual_seed(0)
    cfg = default_model_config(
        3,
        1,
        ("a",),
        (0.0,),
        (1.0,),
        cond_dim=8,
        base_channels=8,
        channel_mult=(1, 2),
        attention_levels=(),
        timesteps=50,
        prediction="eps",
    )  # fmt: skip  (an x₀-output net deviates more in bf16: see docs/samplers.md, "bf16")
    assert cfg.unet.patch_size == 2
    model = DiffusionModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cond = torch.tensor([[0.3]], dtype=torch.float64)
    dev = torch.device("cpu")
    out = {}
    for prec in ("fp32", "bf16"):
        den = _autocast_denoiser(model, dev, prec)
        assert (den == model.denoiser) == (prec == "fp32")
        out[prec] = sample(
            den, (1, 1, 8, 8, 8), model.schedule, "dpmpp", 5, cond=cond,
            generator=torch.Generator().manual_seed(2),
        )  # fmt: skip
    scale = out["fp32"].std()
    err = (out["bf16"] - out["fp32"]).abs().max() / scale
    assert 0 < err < 0.05, float(err)


@pytest.mark.parametrize("method, steps, std_hi", [("dpmpp", 20, 1.035), ("ddim", 500, 1.02)])
def test_shifted_schedule_reproduces_the_data_and_starts_noisier(method, steps, std_hi) -> None:
    """A shifted cosine (Δ = −4) with the exact denoiser still gives the data's moments, and the
    λ grid starts Δ·t/(T−1) below the plain start (≈ −9 instead of −5). Measured: DPM++ 20
    steps +2.6 % std (plain cosine +1.6 %: the grid spans 14 units of λ instead of 10)."""
    sch = make_schedule("cosine", 1000, shift=-4.0)
    ts = timesteps_for(sch, 20, "lambda")
    lam = 0.5 * sch.log_snr_table
    assert -9.3 < lam[ts[0]].item() <= -8.9 and ts[-1] == 0
    assert lam[ts[0] - 1].item() > -5.0 - 4.0 * (ts[0] - 1) / 999  # least noisy t at the start
    x = sample(gaussian_denoiser(sch), SHAPE, sch, method, steps, x_T=standard_noise(3),
               dtype=torch.float64)  # fmt: skip
    check(x, 0.01, 0.99, std_hi)

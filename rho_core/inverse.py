"""Posterior sampling from partial and noisy linear observations: draw x ~ p(x | y) with a
diffusion prior, for y = A x + σ_y n (inpainting, super-resolution, projections).

The reverse process needs the score of the *conditional* noisy marginal,
∇ log p(x_t | y) = ∇ log p(x_t) + ∇ log p(y | x_t). The first term is the denoiser's; the
second is intractable because p(y | x_t) = ∫ p(y | x₀) p(x₀ | x_t) dx₀. Both methods here
approximate p(x₀ | x_t) and feed the sampler a corrected x̂₀, so any sampler of
:mod:`rho_core.samplers` (DDPM, DDIM, DPM-Solver++) runs unchanged on top.

Notation (VP, :mod:`rho_core.schedules`): x_t = α_t x₀ + σ_t ε, x̂₀ = (x_t − σ_t ε̂)/α_t = E[x₀ | x_t]
(Tweedie), J = ∂x̂₀/∂x_t, A the linear operator, r = y − A x̂₀ the residual.

Moment matching (``method="mmps"``, the default; Rozet et al. 2024, "Learning diffusion priors
from observations by expectation maximization", arXiv:2405.13712)
    Tweedie's second-order formula gives the covariance of p(x₀ | x_t) from the same network:
    x̂₀ = (x_t + σ² ∇ log p(x_t))/α, so J = (I + σ² ∇² log p(x_t))/α and::

        Σ = Cov[x₀ | x_t] = σ²/α² (I + σ² ∇² log p(x_t)) = (σ_t²/α_t) J.

    (Check with x₀ ~ N(μ, s²): J = α s²/(α² s² + σ²), Σ = s² σ²/(α² s² + σ²), the exact
    posterior variance.) Approximating p(x₀ | x_t) ≈ N(x̂₀, Σ) makes p(y | x_t) Gaussian,
    N(A x̂₀, A Σ Aᵀ + σ_y² I), whose score (Σ held fixed) is::

        ∇_{x_t} log p(y | x_t) = Jᵀ Aᵀ u,   (A Σ Aᵀ + σ_y² I) u = r.

    The solve uses ``cg_iters`` conjugate-gradient iterations; each applies Σ to a vector as
    (σ²/α) Jᵀv, one vector–Jacobian product (backward pass) through the denoiser, and one more
    gives Jᵀ Aᵀ u. The corrected posterior mean handed to the sampler is::

        x̂₀(x_t, y) = x̂₀ + (σ_t²/α_t) Jᵀ Aᵀ u      (= x̂₀ + Σ Aᵀ u, a Kalman update, when J = Jᵀ)

    For a Gaussian prior p(x₀ | x_t) *is* N(x̂₀, Σ), so this is the exact E[x₀ | x_t, y] and the
    exact conditional score: the sampler then samples p(x | y) up to its discretisation error.
    Cost per step: one forward and ``cg_iters + 1`` backward passes through the denoiser.

Diffusion posterior sampling (``method="dps"``; Chung et al. 2023, arXiv:2209.14687)
    Σ = 0 (p(x₀ | x_t) ≈ δ(x₀ − x̂₀)) with the step size normalised by the residual: after each
    ancestral (DDPM) step, x_s ← x_s − ζ ∇_{x_t} ‖y − A x̂₀(x_t)‖ per sample (ζ = ``dps_scale``;
    Chung et al. write ζ'/‖r‖ · ∇‖r‖², i.e. ζ = 2ζ'). Implemented as the equivalent shift of
    x̂₀ by −ζ ∇‖r‖ / c₀ (c₀ the DDPM step's coefficient of x̂₀). Cheap (one backward pass per
    step) and a good point estimate, but it ignores σ_y and the prior's uncertainty, so its
    spread is not the posterior's (measured in ``benchmarks/posterior.py``, docs/posterior.md).

Default settings: ``steps=DEFAULT_STEPS`` (50) of DPM-Solver++(2M) on the λ-uniform grid and
``cg_iters=DEFAULT_CG_ITERS`` (8). They reproduce the closed-form posterior of an exact Gaussian
prior (32 coordinates, prior std 0.05 … 1, a random 8 × 32 operator, σ_y = 0.05) within
Monte-Carlo error, and the Wiener filter of a 64² Gaussian random field from 2,048 masked pixels
(tests/test_inverse.py, benchmarks/posterior.py, docs/posterior.md). The ancestral DDPM sampler
is first order: with the same exact guidance it is 10 % short in std at 50 steps, 2.5 % at 200.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rho_core.errors import ConfigError
from rho_core.samplers import (
    SAMPLERS,
    Callback,
    Denoiser,
    _infer_device,
    initial_noise,
    timesteps_for,
)
from rho_core.schedules import Schedule
from rho_core.utils import append_dims

Forward = Callable[[Tensor], Tensor]

METHODS = ("mmps", "dps")
DEFAULT_STEPS = 50
DEFAULT_CG_ITERS = 8
DEFAULT_TWEEDIE_MIN_LOG_SNR = -3.0
MAX_CORRECTION = 5.0
"""An MMPS correction whose rms exceeds this many prior-scale posterior stds r_t = √(v σ²/(α² v
+ σ²)) is replaced by the isotropic one (a Jacobian that is not a covariance)."""
DEFAULT_SAMPLER = {"mmps": "dpmpp", "dps": "ddpm"}


# --------------------------------------------------------------------------------------------
# Linear algebra
# --------------------------------------------------------------------------------------------


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int,
    rtol: float = 0.0,
    shift: Tensor | None = None,
    info: dict | None = None,
) -> Tensor:
    """Solve ``matvec(u) = b`` for a symmetric positive-definite operator, one system per row.

    Args:
        matvec: ``(B, M) -> (B, M)``, applies each row's own matrix to that row.
        b: right-hand sides ``(B, M)``.
        iters: CG iterations (exact in exact arithmetic after M of them).
        rtol: stop early once every row's residual norm is ≤ rtol · ‖b‖ (0: run all ``iters``).
        shift: a known positive diagonal D inside the operator, K = K₀ + D with K₀ meant to be
            positive semi-definite (``(B, M)``-broadcastable): then a curvature pᵀKp ≤ pᵀDp
            already means pᵀK₀p ≤ 0, and the row stops there.
        info: if given, ``info["curvature_stops"]`` (rows stopped by a non-positive curvature
            while their residual was still above 10⁻³ ‖b‖, i.e. a solve left unfinished) and
            ``info["matvecs"]`` (operator applications) are added to.

    Returns:
        u ``(B, M)`` from a zero start. A row stops where its residual vanishes or where it meets
        a direction of non-positive curvature pᵀ K₀ p ≤ 0 (truncated CG: a learned denoiser's
        Jacobian need not be symmetric positive, so A Σ Aᵀ can fail to be), keeping the iterate
        it had: a partial solve, never an overflow.
    """
    u = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(-1, keepdim=True)
    stop = (rtol * rtol) * rs
    unfinished = 1e-6 * rs
    tiny = torch.finfo(b.dtype).tiny
    active = rs > tiny
    for _ in range(iters):
        if not bool(active.any()) or (rtol > 0 and bool((rs <= stop).all())):
            break
        ap = matvec(p)
        curv = (p * ap).sum(-1, keepdim=True)
        floor = torch.zeros_like(curv) if shift is None else (shift * p * p).sum(-1, keepdim=True)
        ok = (curv > floor + tiny) & torch.isfinite(curv)
        if info is not None:
            info["matvecs"] = info.get("matvecs", 0) + 1
            cut = active & ~ok & (rs > unfinished)
            info["curvature_stops"] = info.get("curvature_stops", 0) + int(cut.sum())
        active = active & ok
        step = torch.where(active, rs / torch.where(active, curv, 1.0), 0.0)
        u = u + step * p
        r = r - step * ap
        rs_new = (r * r).sum(-1, keepdim=True)
        p = r + torch.where(active, rs_new / rs.clamp_min(tiny), 0.0) * p
        rs = torch.where(active, rs_new, rs)
        active = active & (rs > tiny)
    return u


def _adjoint(forward: Forward, like: Tensor) -> Callable[[Tensor], Tensor]:
    """Aᵀ for a linear ``forward``: one vector–Jacobian product at zero, graph kept for reuse."""
    z = torch.zeros_like(like, requires_grad=True)
    with torch.enable_grad():
        yz = forward(z)

    def adjoint(u: Tensor) -> Tensor:
        (g,) = torch.autograd.grad(yz, z, u, retain_graph=True)
        return g

    return adjoint


# --------------------------------------------------------------------------------------------
# The guided x̂₀
# --------------------------------------------------------------------------------------------


def _flat_forward(forward: Forward, x: Tensor, m: int | None = None) -> Tensor:
    out = forward(x)
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ConfigError(
            f"forward must map (B, *shape) to (B, M); got {tuple(out.shape)} for a batch of "
            f"{x.shape[0]}"
        )
    if m is not None and out.shape[1] != m:
        raise ConfigError(f"forward returns {out.shape[1]} values per sample but y has {m}")
    return out


def _mmps_x0(
    x0: Tensor,
    x_req: Tensor,
    gamma: float,
    y: Tensor,
    forward: Forward,
    adjoint: Callable[[Tensor], Tensor],
    noise_var: Tensor,
    cg_iters: int,
    cg_rtol: float,
    info: dict | None = None,
) -> Tensor:
    """x̂₀ + γ Jᵀ Aᵀ u with (A Σ Aᵀ + σ_y²) u = y − A x̂₀, Σ v = γ Jᵀ v (module docstring)."""

    def cov(v: Tensor) -> Tensor:  # Σ v ≈ γ Jᵀ v (J symmetric for an exact score)
        (g,) = torch.autograd.grad(x0, x_req, v, retain_graph=True)
        return gamma * g

    def gram(u: Tensor) -> Tensor:
        return forward(cov(adjoint(u))) + noise_var * u

    with torch.no_grad():
        resid = y - forward(x0.detach())
    u = conjugate_gradient(lambda v: gram(v).detach(), resid, cg_iters, cg_rtol, noise_var, info)
    (g,) = torch.autograd.grad(x0, x_req, adjoint(u))
    return (x0 + gamma * g).detach()


def _isotropic_x0(
    x0: Tensor,
    y: Tensor,
    forward: Forward,
    adjoint: Callable[[Tensor], Tensor],
    noise_var: Tensor,
    var: float,
    cg_iters: int,
) -> Tensor:
    """x̂₀ + v Aᵀ u with (v A Aᵀ + σ_y²) u = y − A x̂₀: the update with Σ = v I (no network
    derivative; ΠGDM's covariance). One CG iteration is exact when A Aᵀ ∝ I (masks, block
    averages)."""
    x0 = x0.detach()
    with torch.no_grad():
        resid = y - forward(x0)
        u = conjugate_gradient(
            lambda w: var * forward(adjoint(w)) + noise_var * w, resid, max(cg_iters, 1)
        )
        return x0 + var * adjoint(u)


def _dps_x0(
    x0: Tensor, x_req: Tensor, y: Tensor, forward: Forward, zeta: float, c0: float
) -> Tensor:
    """x̂₀ − ζ ∇_{x_t}‖y − A x̂₀‖ / c₀ per sample (Chung et al.'s step moved into x̂₀)."""
    norm = torch.linalg.vector_norm(y - forward(x0), dim=-1)
    (g,) = torch.autograd.grad(norm.sum(), x_req)
    return (x0 - (zeta / c0) * g).detach()


def _x0_predictor(
    denoiser: Denoiser, cond: Any, guidance: float, schedule: Schedule
) -> Callable[[Tensor, Tensor, float, float], Tensor]:
    """x̂₀(x_t, t) for the guidance, differentiable in x_t, without a needless ε round trip.

    Why: Σ = (σ²/α) J needs J = ∂x̂₀/∂x_t to an accuracy of O(α) at the noisy end (σ²/α ≈ 8,600
    at λ = −9, where a shifted schedule starts). Through ε̂, x̂₀ = (x_t − σ ε̂)/α cancels two
    nearly equal float32 terms and divides by α, so its Jacobian carries a round-off of
    ~10⁻⁷/α: measured on the 64² GRF model, the covariance's Rayleigh quotient came out −36
    where the exact one is +0.19, and the guided x̂₀ was off by 2× the field. So a
    :class:`rho_core.model.DiffusionModel`'s raw output is converted directly
    (``x0_from_output``: x₀-prediction is x̂₀ itself, v-prediction α x_t − σ v), an exact
    denoiser's ``x0`` is used in float64, and only other denoisers go through ε̂ (then pass
    ``dtype=torch.float64`` if the denoiser supports it). Classifier-free guidance mixes
    x̂₀ = x̂₀(∅) + g (x̂₀(c) − x̂₀(∅)), the same affine mix as in ε.
    """
    from rho_core.diffusion import x0_from_output

    model = getattr(denoiser, "__self__", None)
    is_model = (
        model is not None
        and hasattr(model, "prediction")
        and getattr(denoiser, "__func__", None) is getattr(type(model), "denoiser", None)
    )
    exact_x0 = getattr(denoiser, "x0", None) if not is_model else None

    def one(x: Tensor, tt: Tensor, c: Any, alpha: float, sigma: float) -> Tensor:
        if is_model:
            out = model(x, tt, c).to(x.dtype)
            return x0_from_output(model.prediction, model.schedule, x, tt, out).to(x.dtype)
        if callable(exact_x0):
            if hasattr(denoiser, "calls"):
                denoiser.calls += 1
            return exact_x0(x, tt).to(x.dtype)
        eps = denoiser(x, tt, c).to(x.dtype)
        return (x - sigma * eps) / alpha

    def x0_fn(x: Tensor, tt: Tensor, alpha: float, sigma: float) -> Tensor:
        if guidance == 1.0 or cond is None:
            return one(x, tt, cond, alpha, sigma)
        x_u = one(x, tt, None, alpha, sigma)
        return x_u + guidance * (one(x, tt, cond, alpha, sigma) - x_u)

    return x0_fn


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def sample_posterior(
    denoiser: Denoiser,
    shape: tuple[int, ...] | torch.Size,
    schedule: Schedule,
    y: Tensor,
    forward: Forward,
    noise_std: float | Tensor,
    cond: Any = None,
    generator: torch.Generator | None = None,
    *,
    method: str = "mmps",
    steps: int = DEFAULT_STEPS,
    cg_iters: int = DEFAULT_CG_ITERS,
    cg_rtol: float = 0.0,
    tweedie_min_log_snr: float | None = DEFAULT_TWEEDIE_MIN_LOG_SNR,
    prior_var: float = 1.0,
    sampler: str | None = None,
    eta: float = 0.0,
    dps_scale: float = 1.0,
    guidance: float = 1.0,
    spacing: str | None = None,
    x_T: Tensor | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    stats: dict | None = None,
) -> Tensor:
    """Draw ``shape[0]`` samples of p(x | y, cond) for y = A x + σ_y n (module docstring).

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> ε̂`` as for :func:`rho_core.samplers.sample`; it
            must be differentiable in ``x_t`` (a network in eval mode, any ``requires_grad`` of
            its weights).
        shape: ``(B, C, *spatial)``, in the model's (normalised) space.
        schedule: the schedule the denoiser was trained with.
        y: observations ``(M,)`` shared by all B samples, or ``(B, M)``, in model space.
        forward: the linear operator A, ``(B, C, *spatial) -> (B, M)``, differentiable (e.g.
            one of :mod:`rho_core.operators`).
        noise_std: σ_y > 0, a number or a tensor broadcastable to ``(B, M)`` (per observation).
        cond: the denoiser's condition (e.g. a ``(B, P)`` parameter table) or ``None``.
        generator: the only source of noise (x_T, ancestral noise), as for the samplers.
        method: ``"mmps"`` (default) or ``"dps"``.
        steps: denoiser evaluations on the timestep grid (default ``DEFAULT_STEPS``).
        cg_iters: conjugate-gradient iterations per step (``mmps``; default ``DEFAULT_CG_ITERS``).
        cg_rtol: stop CG early at this relative residual (0: always ``cg_iters``).
        tweedie_min_log_snr: λ = log(α/σ) below which the Tweedie covariance (σ²/α) J is
            replaced by the isotropic Σ = v σ²/(α² v + σ²) I, v = ``prior_var`` (``mmps``; default
            ``DEFAULT_TWEEDIE_MIN_LOG_SNR`` = −3, SNR ≈ 0.0025; None: Tweedie everywhere). A
            trained network's Jacobian is not accurate to the O(α) that (σ²/α) J needs at the
            noisy end (docs/posterior.md, "Trained networks").
        prior_var: v, the per-value prior variance assumed by that isotropic covariance (1 for
            data normalised to unit scale).
        sampler: the reverse-process update, ``"ddpm"`` (default), ``"ddim"`` or ``"dpmpp"``
            (``dps`` requires ``"ddpm"``).
        eta: DDIM stochasticity (``sampler="ddim"`` only).
        dps_scale: ζ, the DPS step size (``method="dps"``).
        guidance: classifier-free guidance scale of the prior (1 = plain conditional).
        spacing, x_T, callback, device, dtype: as for :func:`rho_core.samplers.sample`.
        stats: a dict to fill with what the guards did (``mmps``; diagnostics): ``steps``,
            ``isotropic_steps`` (steps below ``tweedie_min_log_snr``), ``tweedie_steps``,
            ``fallbacks`` (sample-steps whose Tweedie correction was replaced by the isotropic
            one), ``curvature_stops`` (sample-steps whose CG stopped at a non-positive
            curvature with its residual still above 10⁻³ of the start), ``matvecs`` (CG
            operator applications), ``sample_steps`` (B × steps).

    Returns:
        ``(B, C, *spatial)`` samples (ordinary tensor, no autograd history).

    Raises:
        ConfigError: unknown method/sampler, bad steps/CG settings, σ_y ≤ 0, shapes of ``y`` or
            ``forward``'s output that do not match.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown posterior method {method!r}; choose one of {METHODS}")
    sampler = DEFAULT_SAMPLER[method] if sampler is None else sampler
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {tuple(SAMPLERS)}")
    if method == "dps" and sampler != "ddpm":
        raise ConfigError("method='dps' is defined on the ancestral sampler; use sampler='ddpm'")
    if not isinstance(schedule, Schedule):
        raise ConfigError(f"schedule must be a rho_core.schedules.Schedule, got {type(schedule)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= schedule.T:
        raise ConfigError(f"steps must be an integer in [1, {schedule.T}], got {steps!r}")
    if isinstance(cg_iters, bool) or not isinstance(cg_iters, int) or cg_iters < 0:
        raise ConfigError(f"cg_iters must be an integer ≥ 0, got {cg_iters!r}")
    if not 0.0 <= float(eta) <= 1.0 or (eta and sampler != "ddim"):
        raise ConfigError(f"eta must lie in [0, 1] and applies to sampler='ddim' only, got {eta}")
    if not (math.isfinite(dps_scale) and dps_scale > 0):
        raise ConfigError(f"dps_scale must be a positive number, got {dps_scale}")
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2 or any(n < 1 for n in shape):
        raise ConfigError(f"shape must be (B, C, *spatial) with positive sizes, got {shape}")
    batch = shape[0]

    dev = _infer_device(device, cond, denoiser, generator)
    yv = torch.as_tensor(y).to(device=dev, dtype=dtype)
    if yv.ndim == 1:
        yv = yv.expand(batch, -1)
    if yv.ndim != 2 or yv.shape[0] != batch:
        raise ConfigError(f"y must be (M,) or (B={batch}, M), got {tuple(yv.shape)}")
    m = yv.shape[1]
    sig = torch.as_tensor(noise_std, dtype=torch.float64)
    if not bool(torch.isfinite(sig).all()) or not bool((sig > 0).all()):
        raise ConfigError("noise_std must be positive and finite (σ_y > 0)")
    try:
        noise_var = (sig.to(device=dev, dtype=dtype) ** 2).expand(batch, m)
    except RuntimeError:
        raise ConfigError(
            f"noise_std of shape {tuple(sig.shape)} does not broadcast to (B, M) = ({batch}, {m})"
        ) from None
    probe = torch.zeros((batch, *shape[1:]), device=dev, dtype=dtype)
    _flat_forward(forward, probe, m)
    adjoint = _adjoint(lambda v: _flat_forward(forward, v), probe)

    grid = timesteps_for(schedule, steps, spacing or "lambda")
    nxt = {t: (grid[i + 1] if i + 1 < len(grid) else -1) for i, t in enumerate(grid)}
    x0_fn = _x0_predictor(denoiser, cond, guidance, schedule)
    info = stats
    if info is not None:
        for key in ("steps", "isotropic_steps", "tweedie_steps", "fallbacks", "curvature_stops",
                    "matvecs", "sample_steps"):  # fmt: skip
            info.setdefault(key, 0)

    def count(key: str, n: int = 1) -> None:
        if info is not None:
            info[key] += n

    def abar(t: int) -> float:
        return 1.0 if t < 0 else float(schedule.alphas_cumprod[t])

    def eps_fn(x: Tensor, t: int) -> Tensor:
        a_t = abar(t)
        alpha, sigma = math.sqrt(a_t), math.sqrt(1.0 - a_t)
        tt = torch.full((batch,), t, dtype=torch.int64, device=x.device)
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            x0 = x0_fn(x_req, tt, alpha, sigma)
            if x0.shape != x.shape:
                raise ConfigError(
                    f"denoiser returned shape {tuple(x0.shape)} for input {tuple(x.shape)}"
                )
            count("steps")
            count("sample_steps", batch)
            if (
                method == "mmps"
                and tweedie_min_log_snr is not None
                and (math.log(alpha / sigma) < tweedie_min_log_snr)
            ):
                r2 = prior_var * sigma * sigma / (alpha * alpha * prior_var + sigma * sigma)
                x0g = _isotropic_x0(x0, yv, forward, adjoint, noise_var, r2, cg_iters)
                count("isotropic_steps")
            elif method == "mmps":
                x0g = _mmps_x0(
                    x0, x_req, sigma * sigma / alpha, yv, forward, adjoint, noise_var,
                    cg_iters, cg_rtol, info,
                )  # fmt: skip
                count("tweedie_steps")
                # Guard: a Kalman correction far beyond the spread of p(x₀ | x_t) comes from a
                # Jacobian that is not a covariance (measured: ×10³ jumps with an under-trained
                # net); those samples take the isotropic update instead.
                r2 = prior_var * sigma * sigma / (alpha * alpha * prior_var + sigma * sigma)
                jump = (x0g - x0.detach()).flatten(1).pow(2).mean(1).sqrt()
                bad = ~torch.isfinite(jump) | (jump > MAX_CORRECTION * math.sqrt(r2))
                count("fallbacks", int(bad.sum()))
                if bool(bad.any()):
                    iso = _isotropic_x0(x0, yv, forward, adjoint, noise_var, r2, cg_iters)
                    x0g = torch.where(append_dims(bad, x0g.ndim), iso, x0g)
            else:
                a_s = abar(nxt[t])
                c0 = math.sqrt(a_s) * (1.0 - a_t / a_s) / (1.0 - a_t)
                x0g = _dps_x0(x0, x_req, yv, forward, float(dps_scale), c0)
        return (x - alpha * x0g) / sigma

    x = initial_noise(shape, dev, dtype, generator, x_T)
    with torch.no_grad():
        out = SAMPLERS[sampler](
            eps_fn, x, schedule, grid, eta=float(eta), generator=generator, callback=callback
        )
    return out.detach().clone()


# --------------------------------------------------------------------------------------------
# Observations in physical units
# --------------------------------------------------------------------------------------------

AFFINE_TRANSFORMS = ("identity", "minmax", "standard")


def observation_in_model_space(
    field: Any, forward: Forward, noise_std: float, normalizer: Any = None
) -> tuple[Tensor, Tensor]:
    """Observe a physical field and express y and σ_y in the model's normalised space.

    The model samples z = T(x), T the store's normalisation (elementwise). The observation is
    ``forward`` applied to the field, y = A T(field), with the noise σ (physical units) carried
    through T:

    - affine T (``identity``, ``minmax``, ``standard``: T(x) = a x + b): A T(x) = a A x + b A 1,
      so any linear A of physical values is a linear function of z, and σ_z = |a| σ;
    - non-linear T (``asinh``, ``log``): only a mask commutes with T (y_i = T(x_i)); the noise is
      linearised per observed value, σ_{z,i} = |T'(x_i)| σ. A block average or projection of
      physical values is not a linear function of the normalised values, so it is refused.

    Args:
        field: one sample ``(C, *spatial)`` in physical units (numpy array or tensor).
        forward: the operator (:mod:`rho_core.operators`).
        noise_std: σ > 0 in physical units.
        normalizer: :class:`rho_core.data.normalization.Normalizer` or ``None`` (identity).

    Returns:
        ``(y (M,), σ_y (M,))`` float64 tensors in model space.

    Raises:
        ConfigError: σ ≤ 0, or a non-linear normalisation with an operator that is not a mask.
    """
    from rho_core.operators import Mask

    if not (math.isfinite(noise_std) and noise_std > 0):
        raise ConfigError(f"the noise std must be positive, got {noise_std}")
    x = torch.as_tensor(field, dtype=torch.float64)[None]
    transform = getattr(normalizer, "transform", "identity")
    if normalizer is None or transform == "identity":
        y = forward(x)[0]
        return y, torch.full_like(y, float(noise_std))
    if transform not in AFFINE_TRANSFORMS and not isinstance(forward, Mask):
        raise ConfigError(
            f"the model's normalisation '{transform}' is non-linear, so {forward!r} of physical "
            "values is not a linear function of the normalised values the model samples (e.g. "
            "a block average of physical values is not the block average of their "
            f"{transform}); use a mask operator, or a model trained with an affine "
            f"normalisation ({', '.join(AFFINE_TRANSFORMS)})"
        )
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        z = normalizer.forward(xr)
        (slope,) = torch.autograd.grad(z.sum(), xr)  # T'(x) per value (T is elementwise)
    y = forward(z.detach())[0]
    if transform in AFFINE_TRANSFORMS:
        return y, torch.full_like(y, float(noise_std) * float(slope.abs().flatten()[0]))
    sig = forward(slope.abs())[0] * float(noise_std)
    if not bool((sig > 0).all()):  # below a log floor T' = 0: keep the smallest positive σ
        pos = sig[sig > 0]
        sig = sig.clamp_min(float(pos.min()) if pos.numel() else float(noise_std))
    return y, sig

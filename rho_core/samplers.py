"""Samplers for the reverse process: DDPM ancestral, DDIM (η) and DPM-Solver++(2M).

``sample(denoiser, shape, schedule, method, steps, ...)`` is the entry point. It validates the
request, draws x_T ~ N(0, I) from the injected generator, chooses the timestep grid, wraps the
denoiser with classifier-free guidance and runs one of the stateless sampler functions, which
all share the signature ``f(eps_fn, x, schedule, timesteps, *, generator, callback, ...)``.

Notation: ᾱ_t from the schedule, α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), λ_t = log(α_t/σ_t). A grid is
``steps`` distinct integer timesteps t_0 > t_1 > … > t_{N−1}; the denoiser is evaluated once per
grid point (twice with guidance), and the step after t_{N−1} goes to the clean data (ᾱ = 1), whose
"sample" is the final x̂₀ — so ``steps`` is exactly the number of network evaluations.

Timestep spacing (``spacing=``) and why the default is what it is
----------------------------------------------------------------
``trailing`` (t_i = round(T − iT/N) − 1) starts at T − 1 but ends at T/N − 1 (t = 49 for N = 20):
the final jump from there to the data outputs the posterior mean E[x₀ | x_t], which has *less*
variance than the data (for Gaussian data by the factor α²s²/(α²s² + σ²)); that is the ~5 %
standard-deviation deficit of a textbook DPM-Solver++(2M) on the cosine schedule.
``leading`` ends at t = 0 but starts at T − T/N, not from pure noise. ``linspace`` (rounded
linspace(T − 1, 0, N)) includes both ends, but takes huge steps in λ at the start and the end.
``lambda`` (the default for every method): ``steps`` points uniform in λ from λ_{t_s} to λ_0,
where t_s is the least noisy timestep with λ ≤ −5 (T − 1 if none), each rounded to the nearest
integer timestep (collisions pushed apart).

- It ends at t = 0, so the final x̂₀ is taken where σ_0 is tiny (σ_0² = 1e-4 linear, 4e-5
  cosine), and every step has the same size h in λ, the quantity the local error of
  DDIM/DPM-Solver depends on: the error no longer depends on where the data's scale puts its
  signal (trailing DPM-Solver++ at 20 steps: −0.3 % for data std 0.5 but −4.8 % for 0.25 and
  −26 % for 0.1; λ-uniform: +1.0 … +1.6 % for every std from 0.1 to 2).
- It starts at λ = −5 (SNR ≈ 4.5e-5) rather than at T − 1 when the schedule ends noisier (cosine:
  λ_{T−1} ≈ −9.9 at t = 999, so sampling starts at t = 995): x_T ~ N(0, I) is then a (very
  slightly) wrong start, mean off by α·μ ≈ 0.007 μ, but no network output is ever divided by
  α_{999} ≈ 5e-5. x̂₀ = (x − σ ε̂)/α multiplies the network's ε error by σ/α; a first step from
  t = 999 to the next grid point carries that into x with a gain of α_{t_1}/α_{999} (≈ 1600
  for trailing's t = 949). With the exact denoiser plus a 1 % ε error, starting at t = 999
  inflated the generated std by +290 % (λ grid) to +1400 % (trailing/linspace), starting at
  λ = −5 by +2 %. A shifted schedule (``schedule.shift`` = Δ, :mod:`rho_core.schedules`) starts
  at λ = −5 + Δ instead: the data was declared e^{−Δ} times more redundant, so the start must be
  that much noisier to carry no trace of a field (else the sampler locks onto a pattern that
  the noise happens to resemble).
- ``steps == T`` still visits every timestep T − 1 … 0 (the full DDPM chain).

Measured with the exact Gaussian denoiser (``benchmarks/sampling.py``, ``docs/samplers.md``):
DPM-Solver++(2M) at 20 steps is within +1.6 % of the data std on linear and cosine; DDIM is
first order and ~4.5 % short at 50 steps.

No clipping of x̂₀ by default (physical data is not an image); ``clip_x0=c`` clamps x̂₀ to [−c, c]
and recomputes ε̂ from it, for data known to lie in a range.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rho_core.errors import ConfigError
from rho_core.schedules import Schedule

Denoiser = Callable[[Tensor, Tensor, Any], Tensor]
EpsFn = Callable[[Tensor, int], Tensor]
Callback = Callable[[dict[str, Any]], None]

METHODS = ("ddpm", "ddim", "dpmpp")
SPACINGS = ("lambda", "linspace", "trailing", "leading")
# The ``lambda`` grid starts at the least noisy timestep with λ ≤ this (cosine: λ_{T−1} ≈ −9.9):
# SNR = e^{-10} ≈ 4.5e-5, indistinguishable from pure noise for normalised data.
LAMBDA_START = -5.0
DEFAULT_SPACING = {"ddpm": "lambda", "ddim": "lambda", "dpmpp": "lambda"}


# --------------------------------------------------------------------------------------------
# Timestep grids
# --------------------------------------------------------------------------------------------


def _make_distinct(ts: list[int], T: int) -> list[int]:
    """Force a rounded, non-increasing grid to be strictly decreasing within [0, T) by pushing
    colliding points apart (keeps t_0 and t_{N−1} where feasible)."""
    n = len(ts)
    out = [min(max(t, n - 1 - k), T - 1 - k) for k, t in enumerate(ts)]
    for k in range(1, n):
        out[k] = min(out[k], out[k - 1] - 1)
    return out


def _nearest_t(lam: list[float], target: float) -> int:
    """The integer t whose λ_t is nearest to ``target`` (λ strictly decreasing in t)."""
    a, b = 0, len(lam) - 1
    if target >= lam[a]:
        return a
    if target <= lam[b]:
        return b
    while b - a > 1:  # invariant: lam[a] >= target >= lam[b]
        m = (a + b) // 2
        if lam[m] >= target:
            a = m
        else:
            b = m
    return a if lam[a] - target <= target - lam[b] else b


def timesteps_for(schedule: Schedule, steps: int, spacing: str = "lambda") -> list[int]:
    """The descending grid of ``steps`` distinct integer timesteps in [0, T) (module docstring).

    With ``steps == T`` every spacing gives T − 1, T − 2, …, 0 (the full DDPM chain).
    """
    T = schedule.T
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")
    if not 1 <= steps <= T:
        raise ConfigError(f"steps must be in [1, {T}] for this {T}-step schedule, got {steps}")
    if spacing == "trailing":
        ts = [int(round(T - i * T / steps)) - 1 for i in range(steps)]
    elif spacing == "leading":
        ts = [(steps - 1 - i) * (T // steps) for i in range(steps)]
    elif spacing == "linspace":
        ts = [int(round((T - 1) * (1 - i / max(steps - 1, 1)))) for i in range(steps)]
    else:
        lam = (0.5 * schedule.log_snr_table).tolist()  # increases as t decreases
        # start at the least noisy timestep that is still at or below λ = LAMBDA_START (moved
        # by a shifted schedule's Δ, so the start is as uninformative as the unshifted one's)
        lam_start = LAMBDA_START + float(getattr(schedule, "shift", 0.0))
        t_start = next((t for t in range(T) if lam[t] <= lam_start), T - 1)
        start, hi = lam[t_start], lam[0]
        targets = [start + (hi - start) * i / max(steps - 1, 1) for i in range(steps)]
        ts = [_nearest_t(lam, x) for x in targets]
    return _make_distinct(ts, T)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _abar(schedule: Schedule, t: int) -> float:
    """ᾱ_t as a Python float (float64); ᾱ_{−1} = 1 is the clean data."""
    return 1.0 if t < 0 else float(schedule.alphas_cumprod[t])


def _x0_and_eps(
    eps_fn: EpsFn, x: Tensor, schedule: Schedule, t: int, clip_x0: float | None
) -> tuple[Tensor, Tensor]:
    """ε̂ at (x, t) and x̂₀ = (x − σ_t ε̂)/α_t; with ``clip_x0`` clamp x̂₀ and recompute ε̂."""
    eps = eps_fn(x, t)
    a = _abar(schedule, t)
    alpha, sigma = math.sqrt(a), math.sqrt(1.0 - a)
    x0 = (x - sigma * eps) / alpha
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = (x - alpha * x0) / sigma
    return x0, eps


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


def _report(callback: Callback | None, i: int, t: int, x: Tensor, x0: Tensor, x_next: Tensor):
    if callback is not None:
        callback({"i": i, "t": t, "x_t": x, "x0_hat": x0, "x_next": x_next})


# --------------------------------------------------------------------------------------------
# Samplers: one shared signature, noise only from ``generator``
# --------------------------------------------------------------------------------------------


def sample_ddpm(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: list[int],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    clip_x0: float | None = None,
    **_: Any,
) -> Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2, posterior form), strided.

    From grid point t to the next s (ᾱ_{−1} = 1 after the last), with β = 1 − ᾱ_t/ᾱ_s::

        x_s = √ᾱ_s β/(1 − ᾱ_t) · x̂₀ + √(1 − β) (1 − ᾱ_s)/(1 − ᾱ_t) · x_t + √β̃ z,
        β̃ = (1 − ᾱ_s)/(1 − ᾱ_t) · β,   z ~ N(0, I)  (β̃ = 0 for the last step)

    i.e. a draw from q(x_s | x_t, x̂₀). With the full grid (s = t − 1) this is exactly the
    paper's 1000-step sampler with σ_t² = β̃_t; with a strided grid it equals DDIM with η = 1.
    """
    for i, t in enumerate(timesteps):
        s = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x0, _eps = _x0_and_eps(eps_fn, x, schedule, t, clip_x0)
        a_t, a_s = _abar(schedule, t), _abar(schedule, s)
        beta = 1.0 - a_t / a_s
        c0 = math.sqrt(a_s) * beta / (1.0 - a_t)
        ct = math.sqrt(1.0 - beta) * (1.0 - a_s) / (1.0 - a_t)
        x_next = c0 * x0 + ct * x
        if s >= 0:
            var = (1.0 - a_s) / (1.0 - a_t) * beta
            x_next = x_next + math.sqrt(var) * _randn_like(x, generator)
        _report(callback, i, t, x, x0, x_next)
        x = x_next
    return x


def sample_ddim(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: list[int],
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    clip_x0: float | None = None,
    **_: Any,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) from grid point t to the next s (ᾱ_{−1} = 1 at the end)::

        c = η √((1 − ᾱ_s)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_s)
        x_s = √ᾱ_s x̂₀ + √(1 − ᾱ_s − c²) ε̂ + c z,   z ~ N(0, I)

    η = 0 is deterministic (the first-order solver of the probability-flow ODE, = DPM-Solver-1);
    η = 1 is the ancestral DDPM step on the same grid.
    """
    for i, t in enumerate(timesteps):
        s = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x0, eps = _x0_and_eps(eps_fn, x, schedule, t, clip_x0)
        a_t, a_s = _abar(schedule, t), _abar(schedule, s)
        c = eta * math.sqrt((1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s))
        x_next = math.sqrt(a_s) * x0 + math.sqrt(max(1.0 - a_s - c * c, 0.0)) * eps
        if c > 0:
            x_next = x_next + c * _randn_like(x, generator)
        _report(callback, i, t, x, x0, x_next)
        x = x_next
    return x


def sample_dpmpp_2m(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: list[int],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    clip_x0: float | None = None,
    **_: Any,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), multistep second order in x̂₀.

    From grid point t_i to t_{i+1}, h_i = λ_{t_{i+1}} − λ_{t_i}, r_i = h_{i−1}/h_i::

        D_i = (1 + 1/(2 r_i)) x̂₀(t_i) − 1/(2 r_i) x̂₀(t_{i−1})      (D_0 = x̂₀(t_0): first order)
        x_{t_{i+1}} = (σ_{t_{i+1}}/σ_{t_i}) x_{t_i} − α_{t_{i+1}} (e^{−h_i} − 1) D_i

    The step after the last grid point goes to the clean data (λ = ∞) and returns x̂₀ there,
    i.e. the solver's first-order final step (the last grid point is t = 0 on the default grid).
    Deterministic: ``generator`` is unused.
    """
    lam_table = 0.5 * schedule.log_snr_table
    x0_prev: Tensor | None = None
    h_prev = 0.0
    for i, t in enumerate(timesteps):
        x0, _eps = _x0_and_eps(eps_fn, x, schedule, t, clip_x0)
        if i + 1 == len(timesteps):
            x_next = x0
        else:
            s = timesteps[i + 1]
            a_t, a_s = _abar(schedule, t), _abar(schedule, s)
            h = float(lam_table[s] - lam_table[t])
            if x0_prev is None:
                d = x0
            else:
                r = h_prev / h
                d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
            x_next = math.sqrt((1.0 - a_s) / (1.0 - a_t)) * x - math.sqrt(a_s) * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        _report(callback, i, t, x, x0, x_next)
        x = x_next
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp": sample_dpmpp_2m,
}


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _infer_device(
    device: torch.device | str | None, cond: Any, denoiser: Denoiser, generator
) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(cond, Tensor):
        return cond.device
    owner = getattr(denoiser, "__self__", None)
    if isinstance(owner, nn.Module):
        for p in owner.parameters():
            return p.device
    if generator is not None:
        return generator.device
    return torch.device("cpu")


def initial_noise(
    shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
) -> Tensor:
    """The sampler's start x_T ~ N(0, I) of ``shape`` on ``device``, drawn on the generator's
    device (so a seed gives the same noise whatever the model's device), or the given ``x_T``
    checked against ``shape``."""
    if x_T is None:
        gen_dev = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=gen_dev, dtype=dtype).to(device)
    if tuple(x_T.shape) != tuple(shape):
        raise ConfigError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
    return x_T.to(device=device, dtype=dtype)


def guided_eps(
    denoiser: Denoiser, cond: Any, guidance: float
) -> Callable[[Tensor, Tensor], Tensor]:
    """Classifier-free guidance: ε = ε_u + g (ε_c − ε_u), ε_u = denoiser(x, t, None).

    With ``guidance == 1`` (or no condition) only one call is made: ε = denoiser(x, t, cond).
    When the denoiser has ``accepts_drop`` (``DiffusionModel.denoiser``) and ``cond`` is a
    tensor, ε_c and ε_u come from ONE call on the doubled batch ``[x; x]`` with
    ``drop = [0…0; 1…1]`` (the second half gets the null condition): one network pass of batch
    2B instead of two of batch B, the same numbers.
    """
    if cond is None or guidance == 1.0:
        return lambda x, t: denoiser(x, t, cond)

    if getattr(denoiser, "accepts_drop", False) and isinstance(cond, Tensor):

        def eps_batched(x: Tensor, t: Tensor) -> Tensor:
            b = x.shape[0]
            c = cond[None] if cond.ndim == 1 else cond
            if c.shape[0] == 1 and b != 1:
                c = c.expand(b, *c.shape[1:])
            drop = torch.arange(2 * b, device=x.device) >= b
            e = denoiser(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, c]), drop=drop)
            e_c, e_u = e[:b], e[b:]
            return e_u + guidance * (e_c - e_u)

        return eps_batched

    def eps(x: Tensor, t: Tensor) -> Tensor:
        e_c = denoiser(x, t, cond)
        e_u = denoiser(x, t, None)
        return e_u + guidance * (e_c - e_u)

    return eps


def _sample(
    denoiser: Denoiser,
    shape: tuple[int, ...] | torch.Size,
    schedule: Schedule,
    method: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    cond: Any = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    *,
    spacing: str | None = None,
    clip_x0: float | None = None,
    x_T: Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw samples of ``shape`` = ``(B, C, *spatial)`` by running the reverse process.

    Runs under ``torch.inference_mode`` and returns an ordinary (non-inference) tensor;
    classifier-free guidance with a ``DiffusionModel.denoiser`` batches the conditional and
    unconditional passes into one (see :func:`guided_eps`).

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> ε̂`` with ``t`` int64 ``(B,)`` in [0, T) and
            ``cond=None`` meaning unconditional.
        shape: output shape; B = ``shape[0]``.
        schedule: the :class:`~rho_core.schedules.Schedule` the denoiser was trained with.
        method: ``"ddpm"`` (ancestral), ``"ddim"`` or ``"dpmpp"`` (DPM-Solver++(2M)).
        steps: number of denoiser evaluations, 1 ≤ steps ≤ T (``ddpm`` with steps = T is the
            paper's full chain).
        eta: DDIM stochasticity in [0, 1] (``ddim`` only).
        cond: passed to the denoiser (e.g. a ``(B, P)`` parameter table), or ``None``.
        guidance: classifier-free guidance scale g (1 = plain conditional sampling).
        generator: the only source of noise (x_T and ancestral noise); its device is where the
            noise is drawn, so a CPU generator gives the same draws on any device.
        callback: called after every step with ``{"i", "t", "x_t", "x0_hat", "x_next"}``: the
            step index, the timestep (int), the state the denoiser saw at t, its x̂₀, and the
            state after the step.
        spacing: timestep grid (see module docstring); ``None`` → ``"lambda"``.
        clip_x0: clamp x̂₀ to [−clip_x0, clip_x0] (off by default).
        x_T: start from this noise instead of drawing it (shape ``shape``).
        device, dtype: where and in which precision to sample; the device defaults to that of
            ``cond`` (if a tensor), else of the denoiser's module, else the generator's.

    Raises:
        ConfigError: unknown method/spacing, steps outside [1, T], bad eta, guidance or shape.
    """
    if method not in SAMPLERS:
        raise ConfigError(f"unknown sampler {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(schedule, Schedule):
        raise ConfigError(f"schedule must be a rho_core.schedules.Schedule, got {type(schedule)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= schedule.T:
        raise ConfigError(
            f"steps must be an integer in [1, {schedule.T}] (the schedule's T), got {steps!r}"
        )
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must lie in [0, 1], got {eta}")
    if eta != 0.0 and method != "ddim":
        raise ConfigError(f"eta applies only to method='ddim' (got eta={eta} with {method!r})")
    guidance = float(guidance)
    if not math.isfinite(guidance):
        raise ConfigError(f"guidance must be a finite number, got {guidance}")
    if clip_x0 is not None and not clip_x0 > 0:
        raise ConfigError(f"clip_x0 must be positive or None, got {clip_x0!r}")
    shape = tuple(int(n) for n in shape)
    if len(shape) < 1 or any(n < 1 for n in shape):
        raise ConfigError(f"shape must be (B, C, *spatial) with positive sizes, got {shape}")
    spacing = DEFAULT_SPACING[method] if spacing is None else spacing
    grid = timesteps_for(schedule, steps, spacing)

    dev = _infer_device(device, cond, denoiser, generator)
    x = initial_noise(shape, dev, dtype, generator, x_T)

    eps_guided = guided_eps(denoiser, cond, guidance)
    batch = shape[0]
    checked = False

    def eps_fn(x_t: Tensor, t: int) -> Tensor:
        nonlocal checked
        tt = torch.full((batch,), t, dtype=torch.int64, device=x_t.device)
        eps = eps_guided(x_t, tt)
        if not checked:
            if tuple(eps.shape) != tuple(x_t.shape):
                raise ConfigError(
                    f"denoiser returned shape {tuple(eps.shape)} for input {tuple(x_t.shape)}"
                )
            checked = True
        return eps.to(x_t.dtype)

    return SAMPLERS[method](
        eps_fn, x, schedule, grid, eta=eta, generator=generator, callback=callback, clip_x0=clip_x0
    )


@functools.wraps(_sample)
def sample(*args: Any, **kwargs: Any) -> Tensor:
    # The public entry point (signature and docstring of ``_sample``, via ``functools.wraps``):
    # the whole chain runs under ``torch.inference_mode`` (no autograd bookkeeping, no version
    # counters); the result is cloned outside it, so callers get an ordinary tensor they may
    # modify in place or use in autograd.
    with torch.inference_mode():
        x = _sample(*args, **kwargs)
    return x.clone()

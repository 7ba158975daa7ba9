r"""The Gaussian forward process in closed form, training targets, conversions and the loss.

Notation (see :mod:`rho_core.schedules`): α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), SNR_t = α_t²/σ_t².
Tensors are ``(B, C, *spatial)`` with any number of spatial dims; ``t`` is int64 ``(B,)``.
Schedule coefficients are gathered in float64 and cast once to the data's dtype.

Forward process (Ho et al. 2020, eq. 4)::

    x_t = α_t x₀ + σ_t ε,   ε ~ N(0, I)

Parameterisations (the network's raw output) and their conversions given x_t
(Salimans & Ho 2022 for v; the v identities use α_t² + σ_t² = 1)::

    eps:  ε                      x̂₀ = (x_t − σ_t ε̂) / α_t
    x0:   x₀                     ε̂  = (x_t − α_t x̂₀) / σ_t
    v:    v = α_t ε − σ_t x₀     ε̂  = σ_t x_t + α_t v̂,    x̂₀ = α_t x_t − σ_t v̂

Posterior (Ho et al. eqs. 6-7), with ᾱ_{−1} = 1::

    q(x_{t−1} | x_t, x₀) = N( c₀ x₀ + c_t x_t,  β̃_t )
    c₀ = √ᾱ_{t−1} β_t / (1 − ᾱ_t),   c_t = √(1 − β_t) (1 − ᾱ_{t−1}) / (1 − ᾱ_t),
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t        (so β̃_0 = 0)

Loss weighting, a per-sample factor on the mean squared error of the chosen target:

- ``uniform``: w = 1.
- ``min_snr``: Min-SNR-γ (Hang et al. 2023). The *effective* weight on the x₀ error is
  min(SNR_t, γ): high-SNR (low-noise) steps are capped. Since ‖ε̂ − ε‖² = SNR_t ‖x̂₀ − x₀‖² and
  ‖v̂ − v‖² = (SNR_t + 1) ‖x̂₀ − x₀‖², the weight on each target's own MSE is::

      eps: min(SNR_t, γ) / SNR_t         (≤ 1; below 1 only where SNR_t > γ, i.e. low noise)
      x0:  min(SNR_t, γ)
      v:   min(SNR_t, γ) / (SNR_t + 1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from rho_core.errors import ConfigError
from rho_core.schedules import Schedule
from rho_core.utils import coef, gather

Prediction = Literal["eps", "x0", "v"]
Weighting = Literal["uniform", "min_snr"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v")
WEIGHTINGS: tuple[str, ...] = ("uniform", "min_snr")


def check_prediction(prediction: str) -> None:
    """Raise :class:`ConfigError` unless ``prediction`` is one of ``eps``, ``x0``, ``v``."""
    if prediction not in PREDICTIONS:
        raise ConfigError(
            f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}"
        )


def _alpha_sigma(schedule: Schedule, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    a = schedule.alphas_cumprod
    return coef(a.sqrt(), t, like), coef((1.0 - a).sqrt(), t, like)


def q_sample(schedule: Schedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Draw x_t = α_t x₀ + σ_t ε for the given ``noise`` ε (same shape as ``x0``)."""
    alpha, sigma = _alpha_sigma(schedule, t, x0)
    return alpha * x0 + sigma * noise


def target(
    prediction: Prediction, schedule: Schedule, x0: Tensor, noise: Tensor, t: Tensor
) -> Tensor:
    """The regression target for ``prediction``: ε, x₀ or v = α_t ε − σ_t x₀."""
    check_prediction(prediction)
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    alpha, sigma = _alpha_sigma(schedule, t, x0)
    return alpha * noise - sigma * x0


def eps_from_output(
    prediction: Prediction, schedule: Schedule, x_t: Tensor, t: Tensor, out: Tensor
) -> Tensor:
    """Convert a raw network output to the ε prediction (table in the module docstring)."""
    check_prediction(prediction)
    if prediction == "eps":
        return out
    alpha, sigma = _alpha_sigma(schedule, t, x_t)
    if prediction == "x0":
        return (x_t - alpha * out) / sigma
    return sigma * x_t + alpha * out


def x0_from_output(
    prediction: Prediction, schedule: Schedule, x_t: Tensor, t: Tensor, out: Tensor
) -> Tensor:
    """Convert a raw network output to the x̂₀ prediction."""
    check_prediction(prediction)
    if prediction == "x0":
        return out
    alpha, sigma = _alpha_sigma(schedule, t, x_t)
    if prediction == "eps":
        return (x_t - sigma * out) / alpha
    return alpha * x_t - sigma * out


def x0_from_eps(schedule: Schedule, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x̂₀ = (x_t − σ_t ε̂) / α_t."""
    alpha, sigma = _alpha_sigma(schedule, t, x_t)
    return (x_t - sigma * eps) / alpha


def eps_from_x0(schedule: Schedule, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """ε̂ = (x_t − α_t x̂₀) / σ_t."""
    alpha, sigma = _alpha_sigma(schedule, t, x_t)
    return (x_t - alpha * x0) / sigma


def posterior_mean_variance(
    schedule: Schedule, x0: Tensor, x_t: Tensor, t: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t−1} | x_t, x₀) (formulas in the module docstring; β̃_0 = 0).

    Returns:
        ``mean`` shaped like ``x_t`` and ``var`` shaped ``(B, 1, ..., 1)`` (broadcastable).
    """
    a = schedule.alphas_cumprod
    a_prev = schedule.alphas_cumprod_prev
    b = schedule.betas
    c0 = coef(a_prev.sqrt() * b / (1.0 - a), t, x_t)
    ct = coef((1.0 - b).sqrt() * (1.0 - a_prev) / (1.0 - a), t, x_t)
    var = coef((1.0 - a_prev) / (1.0 - a) * b, t, x_t)
    return c0 * x0 + ct * x_t, var


def loss_weight(
    weighting: Weighting,
    schedule: Schedule,
    t: Tensor,
    prediction: Prediction = "eps",
    gamma: float = 5.0,
) -> Tensor:
    """Per-sample loss weight ``(B,)`` (float64, on ``t``'s device) for the MSE of ``prediction``.

    ``uniform``: 1. ``min_snr``: min(SNR_t, γ)/SNR_t for eps, min(SNR_t, γ) for x0,
    min(SNR_t, γ)/(SNR_t + 1) for v.
    """
    check_prediction(prediction)
    if weighting == "uniform":
        return gather(torch.ones(schedule.T, dtype=torch.float64), t)
    if weighting != "min_snr":
        raise ConfigError(
            f"unknown loss weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}"
        )
    if not gamma > 0:
        raise ConfigError(f"min_snr gamma must be > 0, got {gamma!r}")
    a = schedule.alphas_cumprod
    snr = a / (1.0 - a)
    clamped = snr.clamp(max=float(gamma))
    if prediction == "eps":
        table = clamped / snr
    elif prediction == "x0":
        table = clamped
    else:
        table = clamped / (snr + 1.0)
    return gather(table, t)


def diffusion_loss(
    model_fn: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    schedule: Schedule,
    prediction: Prediction = "eps",
    weighting: Weighting = "uniform",
    gamma: float = 5.0,
) -> Tensor:
    """Per-sample weighted denoising loss ``(B,)``: w_t · mean((f(x_t, t) − y)²).

    ``x_t = q_sample(x0, t, noise)``, ``y = target(prediction, ...)``, ``f = model_fn`` (raw
    network output, any dtype, e.g. bf16 under autocast; the error is taken in float32 or wider),
    the mean runs over all non-batch dims and ``w = loss_weight(weighting, ...)``. Reduce with
    ``.mean()`` for the batch loss.
    """
    check_prediction(prediction)
    if x0.shape != noise.shape:
        raise ConfigError(
            f"noise shape {tuple(noise.shape)} differs from data shape {tuple(x0.shape)}"
        )
    if t.shape != x0.shape[:1]:
        raise ConfigError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    weight = loss_weight(weighting, schedule, t, prediction, gamma)
    x_t = q_sample(schedule, x0, t, noise)
    out = model_fn(x_t, t)
    if out.shape != x0.shape:
        raise ConfigError(
            f"network output shape {tuple(out.shape)} differs from data shape {tuple(x0.shape)}; "
            "check the model's out_channels"
        )
    y = target(prediction, schedule, x0, noise, t)
    dtype = torch.promote_types(x0.dtype, torch.float32)
    err = (out.to(dtype) - y.to(dtype)).square().flatten(1).mean(dim=1)
    return err * weight.to(dtype)

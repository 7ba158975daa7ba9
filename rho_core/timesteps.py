"""Which diffusion steps ``t`` a training batch sees: the sampling density over ``0 … T−1``.

``uniform`` (the default) draws every step with probability ``1/T`` — exactly
``torch.randint(0, T, (n,), generator=gen)``, so runs trained before this option existed resume
bit-for-bit. ``logit_normal`` concentrates the training signal on a band of noise levels (the
logit-normal sampling of Esser et al. 2024, on ``t/T``):

    s = sigmoid(loc + scale · z),   z ~ N(0, 1),   t = min(⌊s · T⌋, T − 1),

mixed with the uniform density by ``uniform_mix`` (a fraction of the batch drawn uniformly, so no
step is ever starved). The probability of step ``k`` is, in closed form,

    p(k) = mix / T + (1 − mix) · [Φ(z_{k+1}) − Φ(z_k)],   z_k = (logit(k/T) − loc) / scale,

with ``logit(0) = −∞``, ``logit(1) = +∞`` (:func:`timestep_probabilities`). The sampling changes
the loss's weighting over t (not the optimum of an unlimited network, which is the posterior mean
at every t): a finite network and a finite budget spend more of their accuracy where the density
is high. Why one would: the one-point variance of a blue-spectrum random field is decided by the
denoiser's small-scale gain at ``ᾱ ≈ 0.1–0.4`` (docs/results.md 6.2), a band a uniform draw visits
20 % of the time.

Shapes: ``(n,)`` int64 steps; probabilities ``(T,)`` float64.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from rho_core.errors import ConfigError

if TYPE_CHECKING:  # torch is imported lazily: rho_core.config (light) validates through here
    import torch

__all__ = [
    "TimestepSampling",
    "TIMESTEP_SAMPLINGS",
    "check_timestep_sampling",
    "sample_timesteps",
    "timestep_probabilities",
]

TimestepSampling = Literal["uniform", "logit_normal"]
TIMESTEP_SAMPLINGS: tuple[str, ...] = get_args(TimestepSampling)


def check_timestep_sampling(mode: str, loc: float, scale: float, uniform_mix: float) -> None:
    """Raise :class:`ConfigError` naming the first invalid setting."""
    if mode not in TIMESTEP_SAMPLINGS:
        raise ConfigError(f"timestep_sampling must be one of {TIMESTEP_SAMPLINGS}, got {mode!r}")
    if not math.isfinite(loc):
        raise ConfigError(f"timestep_loc must be finite, got {loc!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"timestep_scale must be > 0, got {scale!r}")
    if not 0.0 <= uniform_mix <= 1.0:
        raise ConfigError(f"timestep_uniform_mix must be in [0, 1], got {uniform_mix!r}")


def sample_timesteps(
    n: int,
    T: int,
    gen: torch.Generator,
    mode: str = "uniform",
    loc: float = 0.0,
    scale: float = 1.0,
    uniform_mix: float = 0.0,
) -> torch.Tensor:
    """``n`` steps in ``[0, T)`` (int64, CPU) drawn from ``gen`` with the density of the module
    docstring. ``uniform`` consumes the generator exactly like ``torch.randint(0, T, (n,))``."""
    import torch

    check_timestep_sampling(mode, loc, scale, uniform_mix)
    if mode == "uniform":
        return torch.randint(0, T, (n,), generator=gen)
    uni = torch.randint(0, T, (n,), generator=gen)
    pick_uniform = torch.rand(n, generator=gen, dtype=torch.float64) < uniform_mix
    z = torch.randn(n, generator=gen, dtype=torch.float64)
    s = torch.sigmoid(loc + scale * z)
    band = torch.clamp(torch.floor(s * T).long(), 0, T - 1)
    return torch.where(pick_uniform, uni, band)


def timestep_probabilities(
    T: int, mode: str = "uniform", loc: float = 0.0, scale: float = 1.0, uniform_mix: float = 0.0
) -> np.ndarray:
    """The exact probability of each step ``(T,)`` (sums to 1) under :func:`sample_timesteps`."""
    check_timestep_sampling(mode, loc, scale, uniform_mix)
    flat = np.full(T, 1.0 / T)
    if mode == "uniform":
        return flat
    from scipy.special import logit, ndtr

    edges = np.arange(T + 1, dtype=np.float64) / T
    with np.errstate(divide="ignore"):
        cdf = ndtr((logit(edges) - loc) / scale)  # logit(0) = −∞ → 0, logit(1) = +∞ → 1
    return uniform_mix * flat + (1.0 - uniform_mix) * np.diff(cdf)

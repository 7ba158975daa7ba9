"""Exact denoisers of Gaussian data: the closed-form references that samplers, the likelihood
and posterior sampling are checked against without any training.

For data x₀ ~ N(μ, diag s²) (independent coordinates), the forward process
x_t = α x₀ + σ ε (α² = ᾱ(t), σ² = 1 − ᾱ(t)) gives x_t ~ N(α μ, α² s² + σ²), so the MMSE
ε-predictor and x₀-predictor are

    ε̂(x_t, t) = σ (x_t − α μ) / (α² s² + σ²),
    x̂₀(x_t, t) = μ + α s² (x_t − α μ) / (α² s² + σ²),

and the exact log-density of a clean sample is the Gaussian
    log p(x₀) = −½ Σ_i [ (x₀_i − μ_i)² / s_i² + log(2π s_i²) ].

``t`` may be an int64 step or a fractional float tensor; fractional t follows the schedule's
convention (:meth:`rho_core.schedules.Schedule.alpha_bar_at`: log-SNR linear between steps).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rho_core.schedules import Schedule


class GaussianDenoiser:
    """Exact ε-predictor of N(μ, diag s²) data under ``schedule``.

    Args:
        schedule: the noise schedule.
        mean: μ, broadcastable to one sample ``(C, *spatial)`` (or a scalar).
        std: s > 0, broadcastable to one sample.

    Call as ``denoiser(x_t, t, cond) -> ε̂`` with ``x_t`` of shape ``(B, C, *spatial)`` and ``t``
    of shape ``(B,)`` (int64 or float); ``cond`` is ignored. Computed in float64, returned in
    ``x_t``'s dtype. ``calls`` counts evaluations (NFE).
    """

    def __init__(self, schedule: Schedule, mean: Tensor | float, std: Tensor | float) -> None:
        self.schedule = schedule
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.std = torch.as_tensor(std, dtype=torch.float64)
        assert bool((self.std > 0).all()), "std must be positive"
        self.calls = 0

    def _alpha_sigma(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        abar = self.schedule.alpha_bar_at(t.to(x.device)).to(torch.float64)
        abar = abar.view(-1, *([1] * (x.ndim - 1)))
        return abar.sqrt(), (1.0 - abar).sqrt()

    def __call__(self, x: Tensor, t: Tensor, cond: object = None) -> Tensor:
        self.calls += 1
        xd = x.to(torch.float64)
        a, s = self._alpha_sigma(xd, t)
        mu, sd = self.mean.to(xd.device), self.std.to(xd.device)
        eps = s * (xd - a * mu) / (a * a * sd * sd + s * s)
        return eps.to(x.dtype)

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        """x̂₀ = E[x₀ | x_t], float64."""
        xd = x.to(torch.float64)
        a, s = self._alpha_sigma(xd, t)
        mu, sd = self.mean.to(xd.device), self.std.to(xd.device)
        return mu + a * sd * sd * (xd - a * mu) / (a * a * sd * sd + s * s)

    def log_prob(self, x0: Tensor) -> Tensor:
        """Exact log N(x₀; μ, diag s²) per sample, nats, float64 ``(B,)``."""
        xd = x0.to(torch.float64)
        mu, sd = self.mean.to(xd.device), self.std.to(xd.device)
        z = ((xd - mu) / sd) ** 2 + torch.log(2 * math.pi * sd * sd)
        z = z.expand_as(xd)
        return -0.5 * z.flatten(1).sum(1)

    def log_prob_t(self, x: Tensor, t: Tensor) -> Tensor:
        """Exact log-density of the *noised* marginal x_t ~ N(α μ, α² s² + σ²), float64 ``(B,)``."""
        xd = x.to(torch.float64)
        a, s = self._alpha_sigma(xd, t)
        mu, sd = self.mean.to(xd.device), self.std.to(xd.device)
        var = a * a * sd * sd + s * s
        z = (xd - a * mu) ** 2 / var + torch.log(2 * math.pi * var)
        return -0.5 * z.expand_as(xd).flatten(1).sum(1)


def gaussian_posterior(
    mean: Tensor | float,
    std: Tensor | float,
    matrix: Tensor,
    y: Tensor,
    noise_std: Tensor | float,
) -> tuple[Tensor, Tensor]:
    """Closed-form posterior of x ~ N(μ, diag s²) observed through y = A x + σ_y n, n ~ N(0, I).

    With S = diag(s²) and K = S Aᵀ (A S Aᵀ + diag σ_y²)⁻¹ (the Kalman gain)::

        E[x | y] = μ + K (y − A μ),    Cov[x | y] = S − K A S.

    Args:
        mean, std: μ and s > 0, broadcastable to ``(N,)`` (a sample flattened).
        matrix: A, ``(M, N)``.
        y: the observation ``(M,)``.
        noise_std: σ_y > 0, a scalar or ``(M,)``.

    Returns:
        ``(posterior mean (N,), posterior covariance (N, N))``, float64.
    """
    a = torch.as_tensor(matrix, dtype=torch.float64)
    n = a.shape[1]
    mu = torch.as_tensor(mean, dtype=torch.float64).expand(n)
    var = torch.as_tensor(std, dtype=torch.float64).expand(n) ** 2
    yv = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    noise_var = torch.as_tensor(noise_std, dtype=torch.float64).expand(a.shape[0]) ** 2
    sat = var[:, None] * a.T  # S Aᵀ, (N, M)
    gram = a @ sat + torch.diag(noise_var)
    gain = torch.linalg.solve(gram, sat.T).T  # K = S Aᵀ G⁻¹, (N, M)
    post_mean = mu + gain @ (yv - a @ mu)
    post_cov = torch.diag(var) - gain @ sat.T
    return post_mean, 0.5 * (post_cov + post_cov.T)


class FourierGaussianDenoiser:
    """Exact ε-predictor of a *stationary* Gaussian field on a periodic grid: x₀ = μ + δ with δ
    of covariance C = Σ_κ P(κ) u_κ u_κᴴ (u_κ the orthonormal Fourier modes; a Gaussian random
    field, :mod:`rho_core.data.random_fields`), so every Fourier mode is denoised on its own::

        x̂₀ = μ + ifftn( α P / (α² P + σ²) · fftn(x_t − α μ) ),   ε̂ = (x_t − α x̂₀)/σ.

    A mode with P = 0 (e.g. κ = 0 of a zero-mean field) is known exactly: x̂₀ has no component
    there beyond μ's.

    Args:
        schedule: the noise schedule.
        power: P(κ) ≥ 0 on the full FFT grid ``(N₁, …, N_D)`` (eigenvalues of C, field units²).
        mean: μ, a scalar (the field's constant mean).

    Call as ``denoiser(x_t, t, cond) -> ε̂`` with ``x_t`` ``(B, C, N₁, …, N_D)`` (every channel
    an independent field of this spectrum) and int or float ``t`` ``(B,)``; float64 inside,
    returned in ``x_t``'s dtype, differentiable in ``x_t``. ``calls`` counts evaluations.
    """

    def __init__(self, schedule: Schedule, power: Tensor, mean: float = 0.0) -> None:
        self.schedule = schedule
        self.power = torch.as_tensor(power, dtype=torch.float64)
        assert bool((self.power >= 0).all()), "power must be non-negative"
        self.mean = float(mean)
        self.calls = 0

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        """x̂₀ = E[x₀ | x_t], float64."""
        xd = x.to(torch.float64)
        abar = self.schedule.alpha_bar_at(t.to(x.device)).to(torch.float64)
        abar = abar.view(-1, *([1] * (x.ndim - 1)))
        a, s2 = abar.sqrt(), 1.0 - abar
        p = self.power.to(xd.device)
        dims = tuple(range(2, x.ndim))
        gain = a * p / (a * a * p + s2)
        f = torch.fft.fftn(xd - a * self.mean, dim=dims)
        return self.mean + torch.fft.ifftn(gain * f, dim=dims).real

    def __call__(self, x: Tensor, t: Tensor, cond: object = None) -> Tensor:
        self.calls += 1
        abar = self.schedule.alpha_bar_at(t.to(x.device)).to(torch.float64)
        abar = abar.view(-1, *([1] * (x.ndim - 1)))
        eps = (x.to(torch.float64) - abar.sqrt() * self.x0(x, t)) / (1.0 - abar).sqrt()
        return eps.to(x.dtype)

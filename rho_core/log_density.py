"""What both log-likelihood estimators share: the result type, the step ↔ log-SNR map and the
change of variables to physical units.

:mod:`rho_core.likelihood` (the probability-flow ODE) and :mod:`rho_core.elbo` (the variational
bound) return the same :class:`LikelihoodResult`; ``log_prob`` is in the model's normalised space
and :func:`physical_log_prob` adds the normaliser's exact log-Jacobian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rho_core.errors import ConfigError
from rho_core.schedules import Schedule

__all__ = [
    "LikelihoodResult",
    "time_from_log_snr",
    "standard_normal_log_prob",
    "log_abs_det_inverse",
    "physical_log_prob",
]

LN2 = math.log(2.0)


@dataclass
class LikelihoodResult:
    """Per-sample log-likelihoods from :func:`log_likelihood`.

    Attributes:
        log_prob: log p(x) in nats, float64 ``(B,)`` — the continuous density in the model's
            (normalised) space.
        bits_per_dim: −log_prob / (D ln 2), float64 ``(B,)``.
        nfe: denoiser evaluations (forward calls, each on the whole batch).
        log_prob_std: standard error of ``log_prob`` from the Hutchinson probes, float64
            ``(B,)`` (0 with the exact divergence; ``nan`` with a single probe).
        dim: D, elements per sample.
        divergence: ``"exact"`` or ``"hutchinson"``; probes: Hutchinson probes used (0 exact).
        steps / rejected: accepted and rejected solver steps.
        prior_log_prob: log p_{λ_min}(x_{λ_min}) (``prior`` option), ``(B,)``; delta_log_prob:
            the ODE part, ``(B,)``.
        latent: x at λ_min, ``(B, *shape)`` float64.
        seconds: wall time.
        physical_log_prob: log-density in physical units (when a normaliser was given), else None.
        method: ``"ode"`` (exact up to the solver) or ``"elbo"`` (the variational bound's
            Monte-Carlo estimate, :mod:`rho_core.elbo`: ``steps`` are its draws).
        log_prob_probes: the ODE's estimate per Hutchinson probe, float64 ``(B, K)`` (their
            mean is ``log_prob``), or None (exact divergence, ELBO). With probes shared by a
            batch (one field under many parameters) the spread over K of a *difference* of two
            rows is the Hutchinson noise of that difference.
    """

    log_prob: Tensor
    bits_per_dim: Tensor
    nfe: int
    log_prob_std: Tensor
    dim: int
    divergence: str
    probes: int
    steps: int
    rejected: int
    prior_log_prob: Tensor
    delta_log_prob: Tensor
    latent: Tensor = field(repr=False)
    seconds: float = 0.0
    physical_log_prob: Tensor | None = None
    method: str = "ode"
    log_prob_probes: Tensor | None = field(default=None, repr=False)

    @property
    def bits_per_dim_std(self) -> Tensor:
        """Standard error of ``bits_per_dim`` (float64 ``(B,)``)."""
        return self.log_prob_std / (self.dim * LN2)

    def to_dict(self) -> dict:
        """Plain-JSON summary (lists of floats)."""
        out = {
            "log_prob": self.log_prob.tolist(),
            "bits_per_dim": self.bits_per_dim.tolist(),
            "log_prob_std": self.log_prob_std.tolist(),
            "nfe": int(self.nfe),
            "dim": int(self.dim),
            "divergence": self.divergence,
            "probes": int(self.probes),
            "steps": int(self.steps),
            "rejected": int(self.rejected),
            "seconds": float(self.seconds),
            "method": self.method,
        }
        if self.physical_log_prob is not None:
            out["physical_log_prob"] = self.physical_log_prob.tolist()
        return out


# ----- time map ------------------------------------------------------------------------------


def time_from_log_snr(schedule: Schedule, lam: Tensor) -> Tensor:
    """The fractional step t(λ) whose :meth:`Schedule.log_snr_at` is ``lam`` (float64).

    Inverse of the piecewise-linear convention: for λ_{k+1} ≤ λ ≤ λ_k,
    t = k + (λ_k − λ)/(λ_k − λ_{k+1}). Values outside [λ_{T−1}, λ₀] are clamped to the ends
    (t = 0 above λ₀, T−1 below λ_{T−1}). Returns float64 of ``lam``'s shape on CPU.
    """
    table = schedule.log_snr_table  # strictly decreasing, float64 (T,)
    lam = lam.detach().to("cpu", torch.float64)
    flipped = table.flip(0)  # increasing
    lam_c = lam.clamp(float(table[-1]), float(table[0]))
    # index j in flipped with flipped[j-1] <= lam < flipped[j]
    j = torch.searchsorted(flipped, lam_c, right=False).clamp(1, table.numel() - 1)
    hi = flipped[j]  # = table[T-1-j]
    lo = flipped[j - 1]  # = table[T-j]
    k = (table.numel() - 1 - j).to(torch.float64)  # integer step of `hi`
    w = (hi - lam_c) / (hi - lo)
    return k + w


# ----- the density of the prior and the normalisation ----------------------------------------


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """log N(x; 0, I) per sample, float64 ``(B,)``."""
    xf = x.to(torch.float64).flatten(1)
    return -0.5 * (xf * xf).sum(1) - 0.5 * xf.shape[1] * math.log(2 * math.pi)


def log_abs_det_inverse(normalizer: Any, y: Tensor) -> Tensor:
    """Σ log |dx/dy| per sample of the normaliser's inverse x = inverse(y), float64 ``(B,)``.

    ``y`` is a normalised batch ``(B, *shape)``; the maps are elementwise, so the Jacobian is
    diagonal and exact (:mod:`rho_core.data.normalization`; with u the intermediate variable
    mapped linearly between (lo, hi) onto [−1, 1], du/dy = (hi − lo)/2):

    - identity: 0;   minmax: log((M − m)/2);   standard: log σ;
    - asinh: x = s·sinh(u): log(s·cosh u) + log((hi − lo)/2);
    - log: x = exp(u): u + log((hi − lo)/2) — the inverse maps R onto (0, ∞) one-to-one, so the
      pushed-forward density is proper (values below the floor were mapped to it by the forward
      transform; their physical density is that of the floor's preimage).

    ``normalizer=None`` is the identity.
    """
    yf = y.to(torch.float64).flatten(1)
    if normalizer is None or normalizer.transform == "identity":
        return torch.zeros(yf.shape[0], dtype=torch.float64, device=yf.device)
    d = yf.shape[1]
    t = normalizer.transform
    if t == "standard":
        return torch.full((yf.shape[0],), d * math.log(normalizer.std), dtype=torch.float64)
    if t == "minmax":
        return torch.full(
            (yf.shape[0],),
            d * math.log((normalizer.max - normalizer.min) / 2.0),
            dtype=torch.float64,
        )
    lo, hi = normalizer._bounds()  # noqa: SLF001 - the one definition of the bounds
    half = (hi - lo) / 2.0
    u = (yf + 1.0) * half + lo
    if t == "asinh":
        # log cosh u, stable for large |u|: |u| + log1p(e^{-2|u|}) − log 2
        au = u.abs()
        logcosh = au + torch.log1p(torch.exp(-2.0 * au)) - LN2
        per = logcosh + math.log(normalizer.scale) + math.log(half)
    elif t == "log":
        per = u + math.log(half)
    else:  # pragma: no cover - Normalizer validates the transform
        raise ConfigError(f"unknown normalisation transform {t!r}")
    return per.sum(1)


def physical_log_prob(log_prob: Tensor, y: Tensor, normalizer: Any) -> Tensor:
    """Log-density in *physical* units: log p_x(x) = log p_y(y) − Σ log|dx/dy|, ``(B,)`` float64.

    ``log_prob`` is the model-space log-density of the normalised batch ``y`` (``(B, *shape)``);
    units: nats, density per physical unit^D.
    """
    return log_prob.to(torch.float64) - log_abs_det_inverse(normalizer, y).to(log_prob.device)

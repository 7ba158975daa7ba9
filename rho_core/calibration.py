"""Simulation-based recalibration of posterior widths: a likelihood temperature.

A trained model's log p(x | θ) can vary with θ more steeply than the true density (the network's
error differs field by field and node by node, and a fit through it tends to a sharper peak):
its posteriors are then too narrow and their credible intervals cover the truth less often than
they claim. The standard remedy that needs no exact answer is a *tempered* (power) likelihood,
p(θ | x) ∝ p(x | θ)^τ π(θ), with τ fitted on **separate** simulated fields whose true θ is
known — never on the fields being scored.

Convention. For a Gaussian posterior under a flat prior, tempering leaves the mean and scales
every standard deviation by 1/√τ, so the standardised errors z = (θ_true − mean) / std of
calibration fields scale by √τ. A calibrated posterior has |z| with median Φ⁻¹(¾) ≈ 0.6745
(z ~ N(0, 1)); the fit is

    τ = (Φ⁻¹(¾) / median |z|)²,

pooling the |z| of every parameter and field (one τ scales the whole log-likelihood). The median
(the 50 % central interval's coverage) is used rather than the mean of z², which a few fields
far off (a fit that extrapolated) would dominate. The interval of τ comes from the exact
binomial confidence interval of the median's order statistics. τ < 1 widens, τ > 1 narrows.

With a non-flat prior tempering also moves the mean; :func:`fit_temperature` then only
approximates, which :func:`standardized_errors`' callers should keep in mind (the GRF
experiments use flat priors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rho_core.errors import ConfigError

__all__ = ["HALF_NORMAL_MEDIAN", "TemperatureFit", "fit_temperature", "standardized_errors"]

HALF_NORMAL_MEDIAN = 0.6744897501960817
"""Φ⁻¹(¾): the median of |z| for z ~ N(0, 1)."""


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted likelihood temperature.

    Attributes:
        temperature: τ, the power of the likelihood (1 = untouched; < 1 widens).
        low, high: the ``confidence`` interval of τ (order statistics of the median |z|).
        values: number of |z| values pooled (fields × parameters).
        median_abs_z: the median |z| before tempering (0.6745 when already calibrated).
        confidence: the interval's confidence level.
    """

    temperature: float
    low: float
    high: float
    values: int
    median_abs_z: float
    confidence: float

    @property
    def width_factor(self) -> float:
        """Factor on every posterior std: 1/√τ."""
        return 1.0 / math.sqrt(self.temperature)

    def describe(self) -> str:
        return (
            f"temperature {self.temperature:.3f} ({100 * self.confidence:.0f} % interval "
            f"{self.low:.3f}–{self.high:.3f}; posterior std × {self.width_factor:.3f}) from "
            f"{self.values} standardised errors, median |z| {self.median_abs_z:.3f} "
            f"(calibrated: {HALF_NORMAL_MEDIAN:.4f})"
        )


def standardized_errors(
    truth: Sequence[float] | np.ndarray,
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """z = (truth − mean) / std, elementwise; any shape, e.g. (fields, parameters).

    Raises:
        ConfigError: shapes that do not broadcast, or a std that is not positive and finite.
    """
    t, m, s = (np.asarray(v, dtype=np.float64) for v in (truth, mean, std))
    try:
        shape = np.broadcast_shapes(t.shape, m.shape, s.shape)
    except ValueError as exc:
        raise ConfigError(f"truth {t.shape}, mean {m.shape} and std {s.shape} differ") from exc
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ConfigError("every posterior std must be positive and finite")
    return np.broadcast_to((t - m) / s, shape).copy()


def fit_temperature(z: Sequence[float] | np.ndarray, confidence: float = 0.9) -> TemperatureFit:
    """τ making the median |z| of calibration fields that of N(0, 1) (module docstring).

    Args:
        z: standardised errors of *separate* simulated fields (any shape; pooled). Non-finite
            values are refused, not dropped: a failed fit is the caller's to report.
        confidence: level of the interval of τ.

    Raises:
        ConfigError: fewer than 8 values, non-finite values, all z = 0, or a confidence
            outside (0, 1).
    """
    from scipy.stats import binom

    a = np.abs(np.asarray(z, dtype=np.float64).reshape(-1))
    if a.size < 8:
        raise ConfigError(f"a temperature needs ≥ 8 standardised errors, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise ConfigError("standardised errors must be finite (drop or refit the failed fields)")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    med = float(np.median(a))
    if med <= 0:
        raise ConfigError("the median |z| is 0: the posterior means equal the truth exactly")
    srt = np.sort(a)
    n = a.size
    alpha = (1 - confidence) / 2
    lo_k = int(binom.ppf(alpha, n, 0.5))  # order statistics bracketing the median
    hi_k = min(int(binom.ppf(1 - alpha, n, 0.5)), n - 1)
    lo_z, hi_z = max(srt[max(lo_k - 1, 0)], 1e-300), srt[hi_k]

    def tau(m: float) -> float:
        return (HALF_NORMAL_MEDIAN / m) ** 2

    return TemperatureFit(tau(med), tau(hi_z), tau(lo_z), n, med, confidence)

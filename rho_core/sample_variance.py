"""How far a finite training set's own spectrum is from the truth, and what that does to a denoiser.

A store with ``K`` realisations of a Gaussian random field of spectrum ``P`` (docs/data.md) does
not hold ``P``: its empirical power over a set of Fourier modes ``B`` (a |κ| band),

    r_B = Σ_k Σ_{κ∈B} |F_k[κ]|² / (K N^D Σ_{κ∈B} P(κ)),

scatters around 1 with the closed-form relative standard deviation (every complex mode's
|F|²/N^D is exponential with mean P, its conjugate partner is the same number, a self-conjugate
mode is P·χ²₁; summed over the full FFT grid all three give var = 2 P² per grid point)

    σ_B = √(2 Σ_{κ∈B} P²) / (√K Σ_{κ∈B} P).

A network that learns its training set perfectly learns ``P·r`` instead of ``P``. Its x̂₀ is
then the Wiener filter of ``P·r``; measured against the exact denoiser of ``P`` on fresh fields
the way ``benchmarks/denoiser_error.py`` does (least-squares slope over a band of modes, in the
normalised space where the noise has unit power per mode), its gain is

    slope = Σ g_r g v / Σ g² v,   g = √ᾱ P / (ᾱ P + 1 − ᾱ),  g_r = g at P·r,  v = ᾱ P + 1 − ᾱ

(v = E|x_t[κ]|²/N^D). That is the *data floor* of the gain: the part of a trained network's
error that more training steps cannot remove, only more realisations can.

Pure NumPy; shapes are stated per function. P is in the units of E|F|²/N^D of the fields it is
compared with (physical units² for a store's raw fields, × scale² in a normalised space).
"""

from __future__ import annotations

import numpy as np

from rho_core.errors import ConfigError
from rho_core.field_stats import as_fields, field_power, shell_index


def band_mask(size: int, dims: int, lo: float, hi: float) -> np.ndarray:
    """Flat ``(N^D,)`` bool: the grid points whose integer shell round(|κ|) lies in [lo, hi]."""
    if not hi >= lo:
        raise ConfigError(f"band [{lo}, {hi}]: the upper edge must be ≥ the lower one")
    s = shell_index(size, dims)
    return (s >= lo) & (s <= hi)


def band_power_ratio(fields, power: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """``(r_B, σ_B)`` of the module docstring for one condition.

    Args:
        fields: ``(K, [1,] N, …, N)`` realisations of one condition.
        power: P(κ) on the full FFT grid, ``(N,) * D`` or flat ``(N^D,)``, in the fields' units².
        mask: flat ``(N^D,)`` bool, the band (e.g. :func:`band_mask`); must hold a mode with P > 0.
    """
    a = as_fields(fields)
    p = np.asarray(power, dtype=np.float64).reshape(-1)
    m = np.asarray(mask, dtype=bool).reshape(-1)
    if p.size != a[0].size or m.size != p.size:
        raise ConfigError(
            f"power ({p.size} points) and mask ({m.size}) must match the fields' grid "
            f"({a[0].size} points)"
        )
    total = float(p[m].sum())
    if not total > 0:
        raise ConfigError("the band holds no mode with positive power")
    emp = float(field_power(a)[:, m].sum()) / len(a)
    sigma = float(np.sqrt(2.0 * np.sum(p[m] ** 2)) / total / np.sqrt(len(a)))
    return emp / total, sigma


def shell_power_ratio(fields, power: np.ndarray) -> np.ndarray:
    """Empirical over analytic power per integer shell, ``(N^D,)`` on the flat grid: every grid
    point carries the ratio of its shell (1 where the shell's analytic power is 0).

    Args:
        fields: ``(K, [1,] N, …, N)``. power: P(κ) on the full grid (as :func:`band_power_ratio`).
    """
    a = as_fields(fields)
    p = np.asarray(power, dtype=np.float64).reshape(-1)
    if p.size != a[0].size:
        raise ConfigError(f"power has {p.size} points, the fields' grid {a[0].size}")
    s = shell_index(a.shape[1], a.ndim - 1)
    emp = np.bincount(s, field_power(a).mean(axis=0), minlength=s.max() + 1)
    true = np.bincount(s, p, minlength=s.max() + 1)
    ratio = np.divide(emp, true, out=np.ones_like(emp), where=true > 0)
    return ratio[s]


def wiener_gain_slope(power: np.ndarray, ratio, abar: float, mask: np.ndarray | None = None):
    """The gain (slope) of the Wiener filter of ``P·ratio`` on that of ``P`` over ``mask``
    (module docstring): what ``benchmarks/denoiser_error.py``'s ``gain`` would read for a network
    that learned a spectrum off by ``ratio``.

    Args:
        power: P(κ) in the *normalised* space (noise power 1 per mode), any shape; flattened.
        ratio: scalar, or as many points as ``power`` (any shape): learned over true spectrum.
        abar: ᾱ_t ∈ (0, 1].
        mask: optional bool like ``power``; default every mode with P > 0.

    Returns:
        float, 1 where ``ratio`` ≡ 1.
    """
    p = np.asarray(power, dtype=np.float64).reshape(-1)
    r = np.asarray(ratio, dtype=np.float64).reshape(-1)
    r = np.full(p.shape, float(r[0])) if r.size == 1 else r
    if r.size != p.size:
        raise ConfigError(f"ratio has {r.size} points, power {p.size}")
    m = p > 0 if mask is None else np.asarray(mask, dtype=bool).reshape(-1) & (p > 0)
    if not 0.0 < abar <= 1.0:
        raise ConfigError(f"abar must be in (0, 1], got {abar}")
    if not m.any():
        raise ConfigError("no mode with positive power in the mask")
    p, r = p[m], r[m]
    a, s2 = float(abar), 1.0 - float(abar)
    g = np.sqrt(a) * p / (a * p + s2)
    g_r = np.sqrt(a) * p * r / (a * p * r + s2)
    v = a * p + s2
    return float(np.sum(g_r * g * v) / np.sum(g * g * v))

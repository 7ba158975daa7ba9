"""Scores of a generated field against its ground truth (numpy in, float out).

Arrays are ``(C, *spatial)`` with 1, 2 or 3 spatial dims; ``gen`` and ``true`` must have the same
shape. Three complementary scores (design.md, "Metrics"):

``wasserstein``
    The paper's score: the 1-D Wasserstein-1 distance between the value distributions of the two
    fields, W1 = ∫ |F_gen(v) − F_true(v)| dv over the flattened values
    (``scipy.stats.wasserstein_distance``), computed in the normalised space. It ignores *where*
    values sit: a shuffled volume scores 0.
``rel_l2``
    ‖gen − true‖₂ / ‖true‖₂ over all values, in physical units: the spatial agreement.
``power_spectrum_error``
    Radially averaged power spectra P(k) = ⟨|FFT(x − mean x)|²⟩ over shells of integer wave
    number k = round(|k⃗|), k⃗ the per-axis integer wave numbers, summed over channels, for
    k = 1 … ⌊min(n)/2⌋ (full shells up to the Nyquist of the shortest axis; k = 0 is the mean,
    which the other scores cover). The score is the mean fractional error
    mean_k |P_gen(k) − P_true(k)| / P_true(k): 0 for identical two-point statistics (a field
    and its periodic translate score 0), 1 for a constant field against a structured one, and
    |a² − 1| for a field against itself scaled by a.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from rho_core.errors import DataError


def _pair(gen, true, name: str) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(gen, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if g.shape != t.shape:
        raise DataError(f"{name}: generated shape {g.shape} differs from true shape {t.shape}")
    if g.size == 0:
        raise DataError(f"{name}: empty arrays")
    if not (np.isfinite(g).all() and np.isfinite(t).all()):
        raise DataError(f"{name}: arrays contain NaN/inf values")
    return g, t


def wasserstein(gen: np.ndarray, true: np.ndarray) -> float:
    """W1 distance between the flattened value distributions of ``gen`` and ``true``."""
    g, t = _pair(gen, true, "wasserstein")
    return float(scipy.stats.wasserstein_distance(g.ravel(), t.ravel()))


def rel_l2(gen: np.ndarray, true: np.ndarray) -> float:
    """Relative L2 error ‖gen − true‖₂ / ‖true‖₂ (raises DataError for an all-zero truth)."""
    g, t = _pair(gen, true, "rel_l2")
    norm = float(np.linalg.norm(t.ravel()))
    if norm == 0.0:
        raise DataError("rel_l2: the true field is all zeros; the relative error is undefined")
    return float(np.linalg.norm((g - t).ravel()) / norm)


def radial_power_spectrum(x: np.ndarray) -> np.ndarray:
    """P(k), k = 1 … ⌊min(n)/2⌋, of a ``(C, *spatial)`` array (module docstring), float64."""
    x = np.asarray(x, dtype=np.float64)
    dims = x.ndim - 1
    if not 1 <= dims <= 3:
        raise DataError(f"power spectrum needs (C, *spatial) with 1-3 spatial dims, got {x.shape}")
    spatial = x.shape[1:]
    kmax = min(spatial) // 2
    if kmax < 1:
        raise DataError(f"power spectrum needs at least 2 points per axis, got {spatial}")
    axes = tuple(range(1, x.ndim))
    centred = x - x.mean(axis=axes, keepdims=True)
    power = (np.abs(np.fft.fftn(centred, axes=axes)) ** 2).sum(axis=0)
    grids = np.meshgrid(*[np.fft.fftfreq(n, d=1.0 / n) for n in spatial], indexing="ij")
    k = np.rint(np.sqrt(sum(gk**2 for gk in grids))).astype(np.int64).ravel()
    sums = np.bincount(k, weights=power.ravel(), minlength=kmax + 1)
    counts = np.bincount(k, minlength=kmax + 1)
    return sums[1 : kmax + 1] / counts[1 : kmax + 1]


def power_spectrum_error(gen: np.ndarray, true: np.ndarray) -> float:
    """Mean fractional error of the radially averaged power spectrum, mean_k |ΔP(k)| / P_true(k).

    Shells where the truth has no power are skipped; a truth with no power at all (a constant
    field) raises DataError.
    """
    g, t = _pair(gen, true, "power_spectrum_error")
    pg, pt = radial_power_spectrum(g), radial_power_spectrum(t)
    valid = pt > 1e-12 * max(float(pt.max()), 0.0)
    if not valid.any() or float(pt.max()) <= 0.0:
        raise DataError("power_spectrum_error: the true field is constant (no power at k > 0)")
    return float(np.mean(np.abs(pg[valid] - pt[valid]) / pt[valid]))


def error_anatomy(
    gen: np.ndarray, true: np.ndarray, block: int, edges=(4.0, 8.0, 12.0), dims: int | None = None
) -> dict:
    """Where the error e = gen − true sits: inside blocks or between them, near the centre or out.

    ``gen``/``true``: ``(..., *spatial)`` with ``dims`` trailing spatial axes (default
    ``ndim − 1``: one ``(C, *spatial)`` field; pass ``dims`` for a stack ``(N, C, *spatial)``,
    scored as a whole); every spatial size must be divisible by ``block``.

    - ``within_block_fraction``: the share of ‖e‖² left after subtracting the mean of ``e`` over
      each ``block × … × block`` block, i.e. variation *inside* blocks (0: e is constant on
      blocks, 1: e averages to zero on every block). A patch-``p`` network emits a block as one
      read-out, so with ``block = p`` a fraction near 1 says the read-out is what fails.
    - ``radial``: for the shells r ∈ [0, e₁), [e₁, e₂), …, [e_last, ∞) of voxel-centre distance
      r to the grid centre (in voxels, centre at ``(n − 1)/2`` per axis), the share of ‖e‖² and the
      rms of e and of ``true`` in that shell.
    """
    g, t = _pair(gen, true, "error_anatomy")
    dims = g.ndim - 1 if dims is None else int(dims)
    if not 1 <= dims <= 3 or g.ndim <= dims:
        raise DataError(f"error_anatomy: need 1-3 spatial dims after a leading axis, got {g.shape}")
    spatial = g.shape[-dims:]
    if block < 1 or any(n % block for n in spatial):
        raise DataError(f"error_anatomy: spatial {spatial} not divisible by block {block}")
    e = (g - t).reshape(-1, *spatial)
    total = float((e**2).sum())
    if total == 0.0:
        return {"within_block_fraction": 0.0, "radial": []}
    split = [e.shape[0]]
    for n in spatial:
        split += [n // block, block]
    eb = e.reshape(split)
    mean = eb.mean(axis=tuple(range(2, len(split), 2)), keepdims=True)
    within = float(((eb - mean) ** 2).sum()) / total
    axes = [np.arange(n) - (n - 1) / 2 for n in spatial]
    r = np.sqrt(sum(a**2 for a in np.meshgrid(*axes, indexing="ij")))
    tt = t.reshape(-1, *spatial)
    bounds = [0.0, *edges, np.inf]
    shells = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        m = (r >= lo) & (r < hi)
        if not m.any():
            continue
        shells.append({
            "r_lo": lo, "r_hi": hi, "voxels": int(m.sum()),
            "energy_fraction": float((e[:, m] ** 2).sum()) / total,
            "rms_error": float(np.sqrt((e[:, m] ** 2).mean())),
            "rms_true": float(np.sqrt((tt[:, m] ** 2).mean())),
        })  # fmt: skip
    return {"within_block_fraction": within, "radial": shells}

"""Line recovery scores for 1-D line spectra: peak detection, line recall/precision, position and
intensity errors, beside the generic W1/rel_l2.

Inputs: a generated and a true spectrum on the same grid (n,) (physical units, ≥ 0 apart from
model noise), and the true line list (frequencies in the grid's unit, integrated intensities).
Positions are in **grid points** p = (ν − f_min)/Δ.

Definitions (``decades`` = d, default 2; ``H`` = max of the true spectrum):

- **detector** (the same on both spectra): local maxima (``scipy.signal.find_peaks``); the
  sub-grid position is the vertex of the parabola through the logarithms of the three values
  around the maximum (exact for a sampled Gaussian).
- **lines** (the reference): the peaks of the *true* spectrum with height ≥ H·10^−d ("within d
  decades of the strongest"). These are the resolvable features of the line list: lines closer
  than the resolution form one peak, and a weak line on the shoulder of a strong one forms none
  (``n_listed`` counts the line-list entries within d decades, for comparison).
- **detections**: peaks of the generated spectrum with height ≥ H·10^−d / 2 (a factor-2
  margin, so a line just above the threshold generated 10 % too weak still counts).
- **recall**: the fraction of lines with a detection within ``tolerance`` points.
- **precision**: among detections of height ≥ H·10^−d, the fraction within ``tolerance`` points
  of something real — a true-spectrum peak or a line-list line of height ≥ H·10^−(d+1) (a
  detection of a real line just below the threshold is not a false line).
- **position error**: |detected − true| peak position in points for each recalled line (nearest
  detection); reported as the median (``position_error``), mean and 90th percentile.
- **intensity error**: for each recalled line, |A_gen − A_true| / A_true with A the sum of the
  spectrum over ±``window`` points around the true peak (the same window on both spectra, so
  blends and profile shape cancel; ∝ the integrated line intensity for an isolated line);
  median (``intensity_error``) and per decade below H (``intensity_error_by_decade``: the
  dynamic range the model covers).
- **wasserstein** (normalised space, with ``normalizer``) and **rel_l2** (physical), as in
  :mod:`rho_core.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rho_core.errors import DataError

__all__ = ["find_lines", "reference_lines", "line_scores", "aggregate_scores"]


def find_lines(spectrum: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``spectrum`` (n,) with value ≥ ``height``: ``(positions (k,) float64 in
    points, sub-grid by the log-parabola vertex; heights (k,))``."""
    from scipy.signal import find_peaks

    y = np.asarray(spectrum, dtype=np.float64)
    idx, _ = find_peaks(y, height=height)
    # a flat-topped or edge maximum is still a line: include the ends when they qualify
    if y.size > 1 and y[0] >= height and y[0] > y[1]:
        idx = np.concatenate([[0], idx])
    if y.size > 1 and y[-1] >= height and y[-1] > y[-2]:
        idx = np.concatenate([idx, [y.size - 1]])
    pos = idx.astype(np.float64)
    inner = (idx > 0) & (idx < y.size - 1)
    i = idx[inner]
    floor = max(float(height) * 1e-6, 1e-300)
    a, b, c = (np.log(np.maximum(y[j], floor)) for j in (i - 1, i, i + 1))
    den = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(den < 0, 0.5 * (a - c) / den, 0.0)
    pos[inner] += np.clip(shift, -0.5, 0.5)
    return pos, y[idx]


def reference_lines(
    positions: np.ndarray, intensities: np.ndarray, merge: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Merge lines (positions in points, sorted or not) closer than ``merge`` points into
    blends: ``(positions, intensities)`` with intensity-weighted positions and summed
    intensities, sorted by position."""
    p = np.asarray(positions, dtype=np.float64)
    w = np.asarray(intensities, dtype=np.float64)
    if p.size == 0:
        return p, w
    o = np.argsort(p, kind="stable")
    p, w = p[o], w[o]
    new = np.concatenate([[True], np.diff(p) >= merge])
    g = np.cumsum(new) - 1
    tot = np.bincount(g, weights=w)
    wsum = np.where(tot > 0, tot, 1.0)
    cen = np.bincount(g, weights=p * np.where(tot[g] > 0, w, 1.0)) / np.where(
        tot > 0, wsum, np.bincount(g)
    )
    return cen, tot


def _nearest(sorted_x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Distance from each ``q`` to the nearest element of ``sorted_x`` (inf if empty)."""
    if sorted_x.size == 0:
        return np.full(q.shape, np.inf), np.full(q.shape, -1)
    j = np.clip(np.searchsorted(sorted_x, q), 1, sorted_x.size - 1) if sorted_x.size > 1 else None
    if j is None:
        return np.abs(q - sorted_x[0]), np.zeros(q.shape, dtype=np.int64)
    left, right = sorted_x[j - 1], sorted_x[j]
    use_left = np.abs(q - left) <= np.abs(q - right)
    k = np.where(use_left, j - 1, j)
    return np.abs(q - sorted_x[k]), k


def line_scores(
    generated: np.ndarray,
    truth: np.ndarray,
    line_list: tuple[Sequence[float], Sequence[float]],
    grid: Any = None,
    *,
    decades: float = 2.0,
    tolerance: float = 2.0,
    merge: float = 2.0,
    window: int = 3,
    normalizer: Any = None,
) -> dict:
    """Line-recovery scores of one generated spectrum against its truth (module docstring).

    Args:
        generated, truth: spectra (n,) or (1, n), physical units, same grid.
        line_list: ``(frequencies, intensities)`` of the true lines; frequencies in the grid's
            unit (MHz) when ``grid`` is given, else already in grid points.
        grid: an object with ``f_min`` and ``step`` (e.g. :class:`rho_core.data.rotational.Grid`)
            or None (positions in points).
        decades: lines within this many decades of the strongest are scored.
        tolerance: match radius in points. merge: blend radius in points.
        window: half-width (points) of the intensity sums.
        normalizer: a :class:`~rho_core.data.normalization.Normalizer` for the W1 score in the
            normalised space (omitted without one).

    Returns a dict of floats: ``recall``, ``precision``, ``position_error`` (median, points),
    ``position_error_mean``, ``position_error_p90``, ``intensity_error`` (median relative),
    ``intensity_error_by_decade`` ({"0-1": …, "1-2": …}), ``n_lines`` (true peaks within
    ``decades``), ``n_listed`` (line-list entries within ``decades``), ``n_detected``,
    ``n_matched``, ``rel_l2``, ``wasserstein`` (with a normalizer).
    """
    from rho_core import metrics

    g = np.asarray(generated, dtype=np.float64).reshape(-1)
    t = np.asarray(truth, dtype=np.float64).reshape(-1)
    if g.shape != t.shape:
        raise DataError(f"generated spectrum has {g.size} points, the true one {t.size}")
    if not (np.isfinite(g).all() and np.isfinite(t).all()):
        raise DataError("spectra contain NaN/inf values")
    if decades <= 0 or tolerance <= 0:
        raise DataError(f"need decades > 0 and tolerance > 0, got {decades}, {tolerance}")
    freq, inten = (np.asarray(a, dtype=np.float64).reshape(-1) for a in line_list)
    if freq.shape != inten.shape:
        raise DataError("line list frequencies and intensities differ in length")
    pos = freq if grid is None else (freq - float(grid.f_min)) / float(grid.step)
    inside = (pos >= -0.5) & (pos <= t.size - 0.5)
    ref_pos, ref_int = reference_lines(pos[inside], inten[inside], merge)
    H = float(t.max())
    if H <= 0 or ref_pos.size == 0:
        raise DataError("the true spectrum has no lines to score against")
    out: dict[str, Any] = {"rel_l2": metrics.rel_l2(g[None], t[None])}
    if normalizer is not None:
        out["wasserstein"] = metrics.wasserstein(
            np.asarray(normalizer.forward(g[None])), np.asarray(normalizer.forward(t[None]))
        )
    thr = H * 10.0 ** (-decades)
    # the reference: peaks of the true spectrum (resolvable lines)
    true_pos, true_h = find_lines(t, 0.1 * thr)
    strong = true_h >= thr
    line_pos = true_pos[strong]
    ii = np.clip(np.round(ref_pos).astype(np.int64), 0, t.size - 1)
    lo, hi = np.clip(ii - 1, 0, t.size - 1), np.clip(ii + 1, 0, t.size - 1)
    ref_h = np.maximum(np.maximum(t[lo], t[ii]), t[hi])
    n_listed = int((ref_h >= thr).sum())
    det_pos, det_h = find_lines(g, 0.5 * thr)
    # recall and position error
    d_ref, _ = _nearest(det_pos, line_pos)
    hit = d_ref <= tolerance
    n_strong = int(strong.sum())
    pos_err = d_ref[hit]
    # precision against every real feature at most one decade below the threshold
    real = np.sort(np.concatenate([true_pos, ref_pos[ref_h >= thr * 0.1]]))
    det_strong = det_pos[det_h >= thr]
    d_det, _ = _nearest(real, det_strong)
    # intensity error over the same window on both spectra
    cs_g = np.concatenate([[0.0], np.cumsum(g)])
    cs_t = np.concatenate([[0.0], np.cumsum(t)])
    c = np.clip(np.round(line_pos[hit]).astype(np.int64), 0, t.size - 1)
    a, b = np.clip(c - window, 0, t.size), np.clip(c + window + 1, 0, t.size)
    A_g, A_t = cs_g[b] - cs_g[a], cs_t[b] - cs_t[a]
    rel = np.abs(A_g - A_t) / np.maximum(A_t, 1e-300)
    dec = np.log10(H / np.maximum(true_h[strong][hit], 1e-300))
    by_decade = {}
    for k in range(int(math.ceil(decades))):
        sel = (dec >= k) & (dec < k + 1)
        by_decade[f"{k}-{k + 1}"] = float(np.median(rel[sel])) if sel.any() else float("nan")
    nan = float("nan")
    out.update(
        {
            "recall": float(hit.mean()) if n_strong else nan,
            "precision": float((d_det <= tolerance).mean()) if det_strong.size else 0.0,
            "position_error": float(np.median(pos_err)) if pos_err.size else nan,
            "position_error_mean": float(pos_err.mean()) if pos_err.size else nan,
            "position_error_p90": float(np.percentile(pos_err, 90)) if pos_err.size else nan,
            "intensity_error": float(np.median(rel)) if rel.size else nan,
            "intensity_error_by_decade": by_decade,
            "n_lines": n_strong,
            "n_listed": n_listed,
            "n_detected": int(det_strong.size),
            "n_matched": int(hit.sum()),
        }
    )
    return out


def aggregate_scores(per_sample: Sequence[dict]) -> dict:
    """Combine :func:`line_scores` dicts of several spectra: recall and precision pooled over
    all lines/detections (micro-average) and as the mean and minimum per spectrum; errors as
    the mean of the per-spectrum medians (and their max); W1/rel_l2 as means."""
    if not per_sample:
        raise DataError("no scores to aggregate")

    def arr(key: str) -> np.ndarray:
        return np.array([float(s.get(key, np.nan)) for s in per_sample])

    n_lines, n_match = arr("n_lines"), arr("n_matched")
    n_det = arr("n_detected")
    prec = arr("precision")
    out = {
        "recall": float(n_match.sum() / max(n_lines.sum(), 1)),
        "precision": float(np.nansum(prec * n_det) / max(n_det.sum(), 1)),
        "recall_mean": float(np.nanmean(arr("recall"))),
        "recall_min": float(np.nanmin(arr("recall"))),
        "precision_mean": float(np.nanmean(prec)),
        "precision_min": float(np.nanmin(prec)),
        "position_error": float(np.nanmean(arr("position_error"))),
        "position_error_max": float(np.nanmax(arr("position_error"))),
        "position_error_p90": float(np.nanmean(arr("position_error_p90"))),
        "intensity_error": float(np.nanmean(arr("intensity_error"))),
        "intensity_error_max": float(np.nanmax(arr("intensity_error"))),
        "rel_l2": float(np.nanmean(arr("rel_l2"))),
        "n_lines": int(n_lines.sum()),
    }
    if "wasserstein" in per_sample[0]:
        out["wasserstein"] = float(np.nanmean(arr("wasserstein")))
    keys = per_sample[0].get("intensity_error_by_decade", {}).keys()
    out["intensity_error_by_decade"] = {
        k: float(np.nanmean([s["intensity_error_by_decade"][k] for s in per_sample])) for k in keys
    }
    return out

"""Figures for stochastic-field scores (issue 13), pure functions: arrays/dicts in, a matplotlib
``Figure`` out, no I/O (``Agg`` canvas, no ``pyplot`` state), like :mod:`rho_core.plots`.

- :func:`power_ratio_figure` — P_gen/P_true per |κ| shell for each condition, with the ±1σ and
  ±3σ cosmic-variance bands of that many realisations (``field_stats.power_ratio_scores``).
- :func:`sample_grid_figure` — a grid of generated fields above a grid of true ones, one shared
  colour scale.
- :func:`pdf_overlay_figure` — histograms of the pooled one-point values, generated vs true.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def power_ratio_figure(scores: Sequence[dict], labels: Sequence[str] | None = None) -> Figure:
    """One panel per condition: ratio vs shell, shaded ±1σ/±3σ bands around 1.

    Args:
        scores: dicts with ``shells``, ``ratio``, ``sigma`` (lists), e.g. from
            :func:`rho_core.field_stats.random_field_scores`.
        labels: panel titles (default: amplitude / spectral index when present).
    """
    n = len(scores)
    cols = min(4, max(1, n))
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), constrained_layout=True)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        s = scores[i]
        k = np.asarray(s["shells"], dtype=float)
        r = np.asarray(s["ratio"], dtype=float)
        sig = np.asarray(s["sigma"], dtype=float)
        ax.fill_between(k, 1 - 3 * sig, 1 + 3 * sig, color="0.85", lw=0, label="±3σ")
        ax.fill_between(k, 1 - sig, 1 + sig, color="0.65", lw=0, label="±1σ")
        ax.axhline(1.0, color="k", lw=0.6)
        ax.plot(k, r, "o-", ms=2.5, lw=1, color="C0", label="generated")
        ax.set_xscale("log")
        if labels is not None:
            title = labels[i]
        elif "amplitude" in s:
            title = f"A={s['amplitude']:g}, n={s['spectral_index']:g}"
        else:
            title = f"condition {i}"
        err = s.get("pk_mean_abs_err")
        if err is not None:
            title += f"\nmean|R−1|={err:.3f}, worst {s.get('pk_worst_sigma', float('nan')):.1f}σ"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("|κ| shell", fontsize=8)
        ax.set_ylabel("P_gen / P_true", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6, loc="best")
    return fig


def sample_grid_figure(
    generated: np.ndarray, truth: np.ndarray, n: int = 8, title: str = ""
) -> Figure:
    """Top rows: ``n`` generated fields; bottom rows: ``n`` true ones (shared colour scale).

    Fields ``(K, 1, H, W)`` or ``(K, H, W)``; 3-D volumes show their central z-slice."""

    def img(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim in (3, 4) and a.shape[0] == 1:  # (1, N, N) or (1, N, N, N): drop the channel
            a = a[0]
        if a.ndim == 3:  # a volume: its central slice
            a = a[:, :, a.shape[2] // 2]
        if a.ndim == 1:
            a = a[None, :]
        return a

    g = [img(x) for x in generated[:n]]
    t = [img(x) for x in truth[:n]]
    cols = max(len(g), len(t), 1)
    fig = Figure(figsize=(1.4 * cols + 0.8, 3.0), constrained_layout=True)
    axes = fig.subplots(2, cols, squeeze=False)
    vals = np.concatenate([x.ravel() for x in g + t]) if g + t else np.zeros(1)
    lim = float(np.max(np.abs(vals))) or 1.0
    im = None
    for row, (name, imgs) in enumerate((("generated", g), ("true", t))):
        for j in range(cols):
            ax = axes[row, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(imgs):
                im = ax.imshow(imgs[j].T, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def pdf_overlay_figure(
    generated: np.ndarray, truth: np.ndarray, bins: int = 80, title: str = ""
) -> Figure:
    """Density histograms of the pooled values of generated and true fields (log y axis)."""
    g = np.ravel(np.asarray(generated, dtype=np.float64))
    t = np.ravel(np.asarray(truth, dtype=np.float64))
    lo, hi = float(min(g.min(), t.min())), float(max(g.max(), t.max()))
    edges = np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(4.0, 3.0), constrained_layout=True)
    ax = fig.subplots()
    ax.hist(t, edges, density=True, histtype="stepfilled", color="0.75", label="true")
    ax.hist(g, edges, density=True, histtype="step", color="C3", lw=1.2, label="generated")
    ax.set_yscale("log")
    ax.set_xlabel("δ (physical units)", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return fig

"""Figures for 1-D line spectra: true and generated spectrum on a log scale, line list marked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def spectrum_figure(
    frequency: np.ndarray,
    truth: np.ndarray,
    generated: np.ndarray | None,
    lines: tuple[Sequence[float], Sequence[float]] | None = None,
    *,
    decades: float = 2.0,
    floor_decades: float = 5.0,
    title: str | None = None,
    zoom: tuple[float, float] | None = None,
):
    """True vs generated spectrum, log intensity axis, the true lines marked.

    Args:
        frequency: (n,) grid (MHz).
        truth, generated: (n,) spectra in physical units (``generated`` may be None).
        lines: ``(frequencies, intensities)`` of the true line list; lines within ``decades`` of
            the strongest (by the true spectrum's height at the line) are marked with ticks on top,
            weaker ones in grey.
        floor_decades: the y axis spans this many decades below the true maximum.
        zoom: optional (f_lo, f_hi) MHz for a second, zoomed panel.

    Returns a matplotlib ``Figure`` (Agg; no display needed).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    f = np.asarray(frequency, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64).reshape(-1)
    H = float(t.max()) if t.size else 1.0
    lo = H * 10.0 ** (-floor_decades)
    panels = 2 if zoom is None else 3
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.6 * panels), squeeze=False)
    axes = axes[:, 0]
    if zoom is None:
        # the default second panel zooms on the densest tenth of the band around the peak
        k = int(np.argmax(t))
        w = max(8, f.size // 20)
        zoom = (f[max(0, k - w)], f[min(f.size - 1, k + w)])
    views = [(None, axes[0]), (zoom, axes[1])]
    if panels == 3:
        views.append((None, axes[2]))
    for rng, ax in views[:2]:
        ax.semilogy(f, np.maximum(t, lo * 0.5), color="black", lw=0.8, label="true")
        if generated is not None:
            g = np.asarray(generated, dtype=np.float64).reshape(-1)
            ax.semilogy(f, np.maximum(g, lo * 0.5), color="tab:red", lw=0.7, alpha=0.8,
                        label="generated")  # fmt: skip
        if lines is not None and len(lines[0]):
            lf = np.asarray(lines[0], dtype=np.float64)
            idx = np.clip(np.searchsorted(f, lf), 0, f.size - 1)
            strong = t[idx] >= H * 10.0 ** (-decades)
            top = H * 3.0
            ax.vlines(lf[strong], top, top * 2.0, color="tab:blue", lw=0.6,
                      label=f"lines within {decades:g} decades")  # fmt: skip
            ax.vlines(lf[~strong], top, top * 1.4, color="0.6", lw=0.4)
        ax.axhline(H * 10.0 ** (-decades), color="tab:blue", ls=":", lw=0.6)
        ax.set_ylim(lo, H * 8.0)
        if rng is not None:
            ax.set_xlim(*rng)
        ax.set_xlabel("frequency (MHz)")
        ax.set_ylabel("intensity (nm²)")
    axes[0].legend(loc="upper right", fontsize=7, ncol=3)
    if title:
        axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    return fig

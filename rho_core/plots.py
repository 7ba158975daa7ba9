"""Paper-style figures as pure functions: arrays in, a matplotlib ``Figure`` out, no I/O.

- :func:`denoising_grid` — the denoising process like the paper's Fig. 1: one row per diffusion
  time t (900, 800, …, 0), one column per condition, each cell the predicted field at that time.
- :func:`slices_figure` — true vs generated fields like Fig. 2, one shared colour bar so the two
  rows are directly comparable.
- :func:`loss_curve` — training loss (log scale) against step, optionally the learning rate.
- :func:`quality_vs_steps` — a score against the number of sampler steps (log axis), one line per
  sampler, with optional reference values (e.g. the paper's) as horizontal lines.

Fields are ``(C, *spatial)`` with 1, 2 or 3 spatial dims; :func:`to_image` reduces each to a 2-D
image (channel 0; the central slice along the last axis of a volume; a 1-D field as one row).
Uses the non-interactive ``Agg`` canvas directly, so it never opens a window and never depends on
``pyplot``'s global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator


def to_image(field: np.ndarray) -> np.ndarray:
    """A 2-D view of one field ``(C, *spatial)``: channel 0, central z-slice for volumes.

    Shapes: ``(C, L) -> (1, L)``; ``(C, H, W) -> (H, W)``; ``(C, X, Y, Z) -> (X, Y)`` at
    ``z = Z // 2``.
    """
    a = np.asarray(field, dtype=np.float64)
    if a.ndim < 2 or a.ndim > 4:
        raise ValueError(f"expected a field (C, *spatial) with 1-3 spatial dims, got {a.shape}")
    a = a[0]
    if a.ndim == 1:
        return a[None, :]
    if a.ndim == 3:
        return a[:, :, a.shape[2] // 2]
    return a


def _limits(images: Sequence[np.ndarray], symmetric: bool) -> tuple[float, float]:
    finite = np.concatenate([im[np.isfinite(im)].ravel() for im in images] or [np.zeros(1)])
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if symmetric:
        m = max(abs(lo), abs(hi)) or 1.0
        return -m, m
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def denoising_grid(
    frames: np.ndarray,
    times: Sequence[int],
    labels: Sequence[str],
    title: str = "Denoising process",
    cmap: str = "RdBu_r",
) -> Figure:
    """Grid of predicted fields: ``frames[r, c]`` is condition ``c`` at diffusion time ``times[r]``.

    ``frames``: ``(R, K, C, *spatial)`` — R times (rows, top = noisiest), K conditions (columns).
    Each row has its own symmetric colour range (early rows are noise of a different scale).
    """
    frames = np.asarray(frames)
    if frames.ndim < 4:
        raise ValueError(f"frames must be (rows, conditions, C, *spatial), got {frames.shape}")
    n_rows, n_cols = frames.shape[:2]
    if len(times) != n_rows or len(labels) != n_cols:
        raise ValueError(
            f"{n_rows} rows / {n_cols} columns need as many times / labels "
            f"(got {len(times)} / {len(labels)})"
        )
    fig = _new_figure(1.6 * n_cols + 0.8, 1.5 * n_rows + 0.6)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r in range(n_rows):
        images = [to_image(frames[r, c]) for c in range(n_cols)]
        lo, hi = _limits(images, symmetric=True)
        for c, im in enumerate(images):
            ax = axes[r, c]
            ax.imshow(im.T, origin="lower", cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(labels[c]), fontsize=8)
            if c == 0:
                ax.set_ylabel(f"t = {int(times[r])}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def slices_figure(
    true: np.ndarray,
    generated: np.ndarray,
    labels: Sequence[str],
    title: str = "True vs generated",
    cmap: str = "viridis",
) -> Figure:
    """Two rows — true (top) and generated (bottom) — per condition, one shared colour bar.

    ``true``, ``generated``: ``(K, C, *spatial)`` for K conditions. The colour range spans both
    rows, so equal colours mean equal values.
    """
    true = np.asarray(true)
    generated = np.asarray(generated)
    if true.shape != generated.shape:
        raise ValueError(f"true {true.shape} and generated {generated.shape} shapes differ")
    k = true.shape[0]
    if len(labels) != k:
        raise ValueError(f"{k} conditions need {k} labels, got {len(labels)}")
    t_imgs = [to_image(x) for x in true]
    g_imgs = [to_image(x) for x in generated]
    lo, hi = _limits(t_imgs + g_imgs, symmetric=False)
    fig = _new_figure(1.8 * k + 1.2, 4.0)
    axes = fig.subplots(2, k, squeeze=False)
    mappable = None
    for c in range(k):
        for r, (name, im) in enumerate((("true", t_imgs[c]), ("generated", g_imgs[c]))):
            ax = axes[r, c]
            mappable = ax.imshow(im.T, origin="lower", cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(labels[c]), fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.colorbar(mappable, ax=axes, shrink=0.8, label="field value")
    fig.suptitle(title, fontsize=10)
    return fig


def loss_curve(
    steps: Sequence[int],
    losses: Sequence[float],
    lrs: Sequence[float] | None = None,
    title: str = "Training loss",
) -> Figure:
    """Loss against step on a log axis; learning rate on a twin axis when given."""
    steps = np.asarray(steps)
    losses = np.asarray(losses, dtype=np.float64)
    if steps.shape != losses.shape:
        raise ValueError(f"steps {steps.shape} and losses {losses.shape} differ in length")
    fig = _new_figure(6.0, 3.5)
    ax = fig.add_subplot()
    ax.plot(steps, losses, color="tab:blue", lw=1.2, label="loss")
    if losses.size and np.all(losses[np.isfinite(losses)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if lrs is not None:
        lrs = np.asarray(lrs, dtype=np.float64)
        if lrs.shape != steps.shape:
            raise ValueError(f"lrs {lrs.shape} and steps {steps.shape} differ in length")
        ax2 = ax.twinx()
        ax2.plot(steps, lrs, color="tab:orange", lw=1.0, ls="--", label="lr")
        ax2.set_ylabel("learning rate")
    ax.set_title(title, fontsize=10)
    return fig


def quality_vs_steps(
    curves: Mapping[str, Mapping[int, float]],
    metric: str,
    references: Mapping[str, float] | None = None,
    title: str | None = None,
    log_y: bool = False,
) -> Figure:
    """A score against sampler steps: one line per sampler, steps on a log axis.

    Args:
        curves: ``{sampler: {steps: score}}``, e.g. ``{"ddim": {10: 0.09, 50: 0.05}}``; each
            line is drawn in increasing steps (all ≥ 1), labelled with the sampler's name.
        metric: the score's name, used as the y-axis label (e.g. ``"wasserstein"``).
        references: ``{label: value}`` drawn as grey horizontal lines (dashed, dotted, dash-dot
            in turn) across the axis, e.g.
            ``{"paper W1": 0.035}``.
        title: figure title (default ``"<metric> vs sampler steps"``).
        log_y: log scale on the score axis too (all plotted scores must then be > 0).

    The x ticks sit at the step counts that occur, written as plain integers.
    """
    if not curves:
        raise ValueError("curves is empty: need at least one sampler's {steps: score}")
    fig = _new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    all_steps: set[int] = set()
    for name, points in curves.items():
        if not points:
            raise ValueError(f"sampler {name!r} has no (steps, score) points")
        steps = sorted(points)
        if steps[0] < 1:
            raise ValueError(f"sampler {name!r}: steps must be ≥ 1 on a log axis, got {steps[0]}")
        all_steps.update(int(k) for k in steps)
        ax.plot(steps, [float(points[k]) for k in steps], marker="o", ms=4, lw=1.4, label=name)
    for i, (label, value) in enumerate((references or {}).items()):
        ax.axhline(float(value), color="0.35", lw=1.0, ls=("--", ":", "-.")[i % 3], label=label)
    ax.set_xscale("log")
    ticks = sorted(all_steps)
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.xaxis.set_minor_locator(NullLocator())  # no unlabelled log sub-ticks between them
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("sampler steps")
    ax.set_ylabel(metric)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title if title is not None else f"{metric} vs sampler steps", fontsize=10)
    return fig

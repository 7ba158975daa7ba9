"""Paper-style figures as pure functions: arrays in, a matplotlib ``Figure`` out, no I/O.

- :func:`denoising_grid` — the denoising process like the paper's Fig. 1: rows are sampler steps
  (spaced evenly in log-SNR, :func:`rows_by_log_snr`), columns conditions, each with x_t and the
  denoiser's x̂₀ side by side; one colour bar; the title names the slice shown.
- :func:`slices_figure` — true vs generated fields like Fig. 2 plus a residual row, with axes,
  one colour bar for the fields and one for the residual.
- :func:`loss_curve` — training loss (log scale) against step, optionally the learning rate on a
  twin axis in its own colour, with a legend.
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


def slice_description(field_shape: Sequence[int]) -> str:
    """Which 2-D view :func:`to_image` shows for fields of ``field_shape`` = ``(C, *spatial)``."""
    spatial = tuple(field_shape)[1:]
    chan = "channel 0" if tuple(field_shape)[0] > 1 else "the field"
    if len(spatial) == 3:
        return f"central z-slice (z = {spatial[2] // 2} of {spatial[2]}) of {chan}, x → right"
    if len(spatial) == 1:
        return f"{chan} as one row"
    return f"{chan}, x → right"


def rows_by_log_snr(log_snr: Sequence[float], n_rows: int) -> list[int]:
    """Indices of ``n_rows`` sampler steps spaced evenly in log-SNR λ (noisiest first).

    With a schedule shifted towards noise, structure appears only in the last few hundred steps,
    so rows spaced evenly in t show mostly identical noise; spaced in λ each row shows a new stage.
    ``log_snr``: λ of each recorded step in sampling order (increasing). Returns increasing,
    distinct indices (fewer than ``n_rows`` when there are fewer steps).
    """
    lam = np.asarray(log_snr, dtype=np.float64)
    if lam.size == 0 or n_rows < 1:
        return []
    if lam.size <= n_rows:
        return list(range(lam.size))
    targets = np.linspace(lam.min(), lam.max(), n_rows)
    picked: list[int] = []
    for target in targets:
        order = np.argsort(np.abs(lam - target), kind="stable")
        for i in order:
            if int(i) not in picked:
                picked.append(int(i))
                break
    return sorted(picked)


def denoising_grid(
    frames: np.ndarray,
    times: Sequence[int],
    labels: Sequence[str],
    title: str = "Denoising process",
    cmap: str = "RdBu_r",
    x0_frames: np.ndarray | None = None,
    log_snr: Sequence[float] | None = None,
    slice_label: str | None = None,
) -> Figure:
    """Grid of the reverse process: ``frames[r, c]`` is condition ``c`` at time ``times[r]``.

    ``frames``: ``(R, K, C, *spatial)`` x_t — R rows (top = noisiest), K conditions.
    ``x0_frames`` (same shape, optional): the denoiser's estimate x̂₀ at the same steps, drawn in
    a second column beside each x_t (x_t is mostly noise until late; x̂₀ shows what the model
    already "sees"). ``log_snr``: λ of each row, written beside t. One symmetric colour range
    for all panels (both live in the normalised space, where x_t has unit variance), with one
    colour bar; ``slice_label`` (default from :func:`slice_description`) names the view shown.
    """
    frames = np.asarray(frames)
    if frames.ndim < 4:
        raise ValueError(f"frames must be (rows, conditions, C, *spatial), got {frames.shape}")
    n_rows, n_cond = frames.shape[:2]
    if len(times) != n_rows or len(labels) != n_cond:
        raise ValueError(
            f"{n_rows} rows / {n_cond} columns need as many times / labels "
            f"(got {len(times)} / {len(labels)})"
        )
    if x0_frames is not None:
        x0_frames = np.asarray(x0_frames)
        if x0_frames.shape != frames.shape:
            raise ValueError(f"x0_frames {x0_frames.shape} and frames {frames.shape} differ")
    if log_snr is not None and len(log_snr) != n_rows:
        raise ValueError(f"{n_rows} rows need as many log_snr values, got {len(log_snr)}")
    per = 1 if x0_frames is None else 2
    n_cols = n_cond * per
    fig = _new_figure(1.45 * n_cols + 1.6, 1.35 * n_rows + 1.0)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    images = [[to_image(frames[r, c]) for c in range(n_cond)] for r in range(n_rows)]
    x0_images = (
        [[to_image(x0_frames[r, c]) for c in range(n_cond)] for r in range(n_rows)]
        if x0_frames is not None
        else None
    )
    flat = [im for row in images for im in row]
    if x0_images is not None:
        flat += [im for row in x0_images for im in row]
    lo, hi = _limits(flat, symmetric=True)
    mappable = None
    for r in range(n_rows):
        for c in range(n_cond):
            cells = [("x_t", images[r][c])]
            if x0_images is not None:
                cells.append(("x̂₀", x0_images[r][c]))
            for j, (name, im) in enumerate(cells):
                ax = axes[r, c * per + j]
                mappable = ax.imshow(
                    im.T, origin="lower", cmap=cmap, vmin=lo, vmax=hi, aspect="auto"
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    head = str(labels[c]) if per == 1 else f"{labels[c]}\n{name}"
                    ax.set_title(head, fontsize=8)
                if c == 0 and j == 0:
                    text = f"t = {int(times[r])}"
                    if log_snr is not None and np.isfinite(log_snr[r]):
                        text += f"\nλ = {float(log_snr[r]):.1f}"
                    ax.set_ylabel(text, fontsize=8)
    fig.colorbar(mappable, ax=axes, shrink=0.6, label="normalised value")
    view = slice_label if slice_label is not None else slice_description(frames.shape[2:])
    spacing = "rows evenly spaced in log-SNR λ" if log_snr is not None else "rows by time t"
    fig.suptitle(f"{title} — {spacing}; {view}", fontsize=9)
    return fig


def slices_figure(
    true: np.ndarray,
    generated: np.ndarray,
    labels: Sequence[str],
    title: str = "True vs generated",
    cmap: str = "viridis",
    slice_label: str | None = None,
) -> Figure:
    """Three rows per condition — true, generated, residual (generated − true) — with axes.

    ``true``, ``generated``: ``(K, C, *spatial)`` for K conditions. The first two rows share one
    colour range and bar (equal colours mean equal values); the residual row has its own
    symmetric range and bar, so the size of the error reads off directly. Axes are voxel indices.
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
    r_imgs = [g - t for g, t in zip(g_imgs, t_imgs, strict=True)]
    lo, hi = _limits(t_imgs + g_imgs, symmetric=False)
    rlo, rhi = _limits(r_imgs, symmetric=True)
    fig = _new_figure(2.0 * k + 1.8, 6.4)
    axes = fig.subplots(3, k, squeeze=False)
    field_map = resid_map = None
    rows = (("true", t_imgs), ("generated", g_imgs), ("generated − true", r_imgs))
    for r, (name, imgs) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            im = imgs[c]
            if r < 2:
                field_map = ax.imshow(
                    im.T, origin="lower", cmap=cmap, vmin=lo, vmax=hi, aspect="auto"
                )
            else:
                resid_map = ax.imshow(
                    im.T, origin="lower", cmap="RdBu_r", vmin=rlo, vmax=rhi, aspect="auto"
                )
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(str(labels[c]), fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{name}\ny (voxel)" if im.shape[0] > 1 else name, fontsize=8)
            if r == 2:
                ax.set_xlabel("x (voxel)", fontsize=7)
    fig.colorbar(field_map, ax=axes[:2, :], shrink=0.8, label="field value")
    fig.colorbar(resid_map, ax=axes[2:, :], shrink=0.8, label="residual")
    view = slice_label if slice_label is not None else slice_description(true.shape[1:])
    fig.suptitle(f"{title} — {view}", fontsize=9)
    return fig


def loss_curve(
    steps: Sequence[int],
    losses: Sequence[float],
    lrs: Sequence[float] | None = None,
    title: str = "Training loss",
) -> Figure:
    """Loss against step on a log axis (blue, left); the learning rate on a twin axis (orange,
    right, its label and ticks in the same colour) when given; one legend for both lines."""
    steps = np.asarray(steps)
    losses = np.asarray(losses, dtype=np.float64)
    if steps.shape != losses.shape:
        raise ValueError(f"steps {steps.shape} and losses {losses.shape} differ in length")
    loss_c, lr_c = "tab:blue", "tab:orange"
    fig = _new_figure(6.0, 3.5)
    ax = fig.add_subplot()
    lines = ax.plot(steps, losses, color=loss_c, lw=1.2, label="loss")
    if losses.size and np.all(losses[np.isfinite(losses)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color=loss_c)
    ax.tick_params(axis="y", which="both", colors=loss_c)
    if lrs is not None:
        lrs = np.asarray(lrs, dtype=np.float64)
        if lrs.shape != steps.shape:
            raise ValueError(f"lrs {lrs.shape} and steps {steps.shape} differ in length")
        ax2 = ax.twinx()
        lines += ax2.plot(steps, lrs, color=lr_c, lw=1.0, ls="--", label="learning rate")
        ax2.set_ylabel("learning rate", color=lr_c)
        ax2.tick_params(axis="y", which="both", colors=lr_c)
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best", framealpha=0.8)
    ax.grid(True, alpha=0.3)
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

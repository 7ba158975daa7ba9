"""Prefect task: render the paper-style figures of a run to PNG files; returns their paths.

- ``denoising.png`` — Fig. 1 style: rows = sampler steps (spaced in log-SNR when the samples
  file records ``frame_log_snr``), columns = conditions, x_t beside x̂₀ when it records
  ``frames_x0``; one colour bar; the slice shown is named;
- ``slices.png`` — Fig. 2 style: true, generated and residual rows with axes and colour bars;
- ``loss.png`` — the training loss and learning-rate curves, with a legend.
The drawing itself is :mod:`rho_core.plots` (pure functions); this task only loads and saves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from prefect import task

from tasks.sampling import condition_label


def render_figures(samples: str, history: str | None, out_dir: str) -> dict[str, str]:
    """Write the figures for ``samples`` (and ``history``) into ``out_dir``; name → path."""
    from rho_core import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    z = np.load(samples)
    names = [str(n) for n in z["param_names"]]
    labels = [condition_label(names, row) for row in z["params"]]
    paths: dict[str, str] = {}

    fig = plots.denoising_grid(
        z["frames"],
        [int(t) for t in z["frame_times"]],
        labels,
        x0_frames=z["frames_x0"] if "frames_x0" in z.files else None,
        log_snr=z["frame_log_snr"] if "frame_log_snr" in z.files else None,
    )
    paths["denoising"] = _save(fig, out / "denoising.png")
    fig = plots.slices_figure(z["true"], z["generated"], labels)
    paths["slices"] = _save(fig, out / "slices.png")
    if history and Path(history).is_file():
        rows = json.loads(Path(history).read_text())
        if rows:
            steps = [r["step"] for r in rows]
            losses = [r.get("loss", float("nan")) for r in rows]
            has_lr = all("lr" in r for r in rows)
            lrs = [r["lr"] for r in rows] if has_lr else None
            paths["loss"] = _save(plots.loss_curve(steps, losses, lrs), out / "loss.png")
    return paths


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110)
    return str(path)


@task(name="figures", task_run_name="figures -> {out_dir}")
def make_figures(samples: str, history: str | None, out_dir: str) -> dict[str, str]:
    """Task wrapper of :func:`render_figures`."""
    return render_figures(samples, history, out_dir)

"""Prefect tasks: draw conditioned samples from a checkpoint, and score them against the store.

Both are thin wrappers of :mod:`rho_core.evaluation`, the one implementation ``rho evaluate``
and the benchmarks use (same conditions, seeding, condition accuracy, no clipping unless asked,
scores chosen by the store's kind):

``sample_conditions`` runs :func:`rho_core.evaluation.draw_for_scoring` — one generated field
per chosen condition, recording the denoising trajectory at t = 900, 800, …, 0 for the Fig. 1
grid — and writes one ``.npz`` (:func:`rho_core.evaluation.save_draws`), returning its path:

==================  =======================  ==============================================
key                 shape                    meaning
==================  =======================  ==============================================
``generated``       ``(K, C, *spatial)``     generated fields, physical units
``generated_norm``  ``(K, C, *spatial)``     the same in the normalised space
``true``            ``(K, C, *spatial)``     the store's fields for those conditions
``true_norm``       ``(K, C, *spatial)``     normalised
``params``          ``(K, P)`` float64       condition rows, columns ``param_names``
``frames``          ``(R, K, C, *spatial)``  x_t at the recorded times (normalised space)
``frame_times``     ``(R,)`` int             the diffusion step of each frame row
==================  =======================  ==============================================

``evaluate_samples`` scores it with :func:`rho_core.evaluation.score_draws` and writes
``metrics.json`` beside the samples.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import task

from rho_core.evaluation import GRID_TIMES

__all__ = ["sample_conditions", "evaluate_samples", "score_samples", "condition_label"]


def _logger():
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def condition_label(names, row) -> str:
    """``"l=2,m=-1"``: the label ``rho evaluate`` uses (``rho_core.evaluation``)."""
    from rho_core.evaluation import condition_label as label

    return label(list(names), [float(v) for v in row])


@task(name="sample", task_run_name="sample {sampler}×{steps}")
def sample_conditions(
    checkpoint: str,
    store: str,
    out: str,
    n_conditions: int | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    clip_x0: float | None = None,
    config: dict | None = None,
) -> str:
    """Draw one sample per chosen condition; write ``out`` (``.npz``) and return its path.

    ``config``: :class:`rho_core.config.EvalConfig` keys; the other arguments override them
    (``n_conditions`` is ``max_conditions``). ``clip_x0``: off unless given.
    """
    from rho_core.evaluation import draw_for_scoring, save_draws
    from tasks.paths import torch_thread_limit

    logger = _logger()
    over = {
        "max_conditions": n_conditions,
        "sampler": sampler,
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "device": device,
        "clip_x0": clip_x0,
    }
    with torch_thread_limit():
        draws = draw_for_scoring(checkpoint, store, config, frame_times=GRID_TIMES, **over)
    cfg = draws["config"]
    logger.info(
        "sampled %d condition(s) with %s, %d steps, guidance %g, seed %d, clip_x0 %s, "
        "field mean %s",
        len(draws["indices"]),
        cfg["sampler"],
        cfg["steps"],
        cfg["guidance"],
        cfg["seed"],
        cfg["clip_x0"],
        draws["field_mean_rule"],
    )
    path = save_draws(draws, out)
    logger.info("samples written to %s", path)
    return path


def score_samples(samples: str) -> dict[str, Any]:
    """Scores of a samples ``.npz`` (:func:`rho_core.evaluation.score_draws`)."""
    from rho_core.evaluation import load_draws, score_draws

    return score_draws(load_draws(samples))


@task(name="evaluate", task_run_name="evaluate {samples}")
def evaluate_samples(samples: str) -> dict[str, Any]:
    """Score ``samples``; writes ``metrics.json`` beside it and returns the scores (+ its path)."""
    logger = _logger()
    scores = score_samples(samples)
    path = Path(samples).with_name("metrics.json")
    path.write_text(json.dumps(scores, indent=2))
    scores["path"] = str(path)
    acc = scores.get("condition_accuracy")
    logger.info(
        "scores over %d condition(s) (%s set): rel_l2 %.4f, wasserstein %.4f, accuracy %s",
        scores["n_conditions"],
        scores["score_set"],
        scores["rel_l2_mean"],
        scores["wasserstein_mean"],
        "n/a" if acc is None else f"{acc:.2f}",
    )
    return scores

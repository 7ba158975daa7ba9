"""Evaluation flow: checkpoint + store → samples, scores and figures (addresses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.params import EvalParams
from tasks.data import require_store
from tasks.figures import make_figures
from tasks.sampling import evaluate_samples, sample_conditions


@flow(name="evaluate", log_prints=True)
def evaluate(
    checkpoint: str,
    store: str,
    evaluation: EvalParams = EvalParams(),  # noqa: B008
    out_dir: str | None = None,
    history: str | None = None,
) -> dict[str, Any]:
    """Sample the chosen conditions, score them, draw the figures; returns paths and scores.

    Args:
        checkpoint: Checkpoint file or run directory.
        store: Store holding the ground truth.
        evaluation: Sampler and scoring settings.
        out_dir: Output folder; default RUN_DIR/eval.
        history: Training history.json for the loss figure.
    """
    from rho_core.errors import CheckpointError

    require_store(store)
    ck = Path(checkpoint)
    if not ck.exists():
        raise CheckpointError(f"checkpoint {checkpoint} does not exist; train a model first")
    run = ck if ck.is_dir() else ck.parent.parent
    out = Path(out_dir) if out_dir else run / "eval"
    samples = sample_conditions(
        checkpoint, store, str(out / "samples.npz"), config=evaluation.to_config().to_dict()
    )
    scores = evaluate_samples(samples)
    figures = make_figures(samples, history, str(out / "figures"))
    return {"samples": samples, "scores": scores, "figures": figures}

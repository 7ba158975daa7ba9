"""Training flow: a store → a run directory with checkpoints and a loss history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow

from flows.params import ModelParams, TrainParams
from tasks.data import require_store
from tasks.paths import data_dir
from tasks.training import build_model_config, train_model


def new_run_dir(kind: str, runs_dir: str | None = None) -> str:
    """``RUNS_DIR/KIND-TIMESTAMP`` (``RUNS_DIR``: ``runs_dir`` or ``data/runs``; UTC time)."""
    root = Path(runs_dir) if runs_dir else data_dir() / "runs"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    return str(root / f"{kind}-{stamp}")


def training_config(training: TrainParams) -> dict[str, Any]:
    """The :class:`rho_core.config.TrainConfig` (plain dict) of the flow's training form."""
    return training.to_config().to_dict()


@flow(name="train", log_prints=True)
def train(
    store: str,
    model: ModelParams = ModelParams(),  # noqa: B008
    training: TrainParams = TrainParams(),  # noqa: B008
    run_dir: str | None = None,
) -> dict[str, Any]:
    """Train a diffusion model on ``store``; returns the run's addresses and a summary.

    Args:
        store: Zarr store to train on (with a normalisation).
        model: Network and diffusion settings.
        training: Optimisation settings.
        run_dir: Run folder; default data/runs/KIND-TIME.
    """
    from rho_core.data.store import open_store

    require_store(store)
    kind = open_store(store).kind
    run_dir = run_dir or new_run_dir(kind)
    model_cfg = build_model_config(store, model.model_dump())
    summary = train_model(store, run_dir, model_cfg, training_config(training))
    summary["model_config"] = model_cfg
    return summary

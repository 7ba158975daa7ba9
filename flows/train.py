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
    """``<runs_dir or data/runs>/<kind>-<UTC timestamp>``."""
    root = Path(runs_dir) if runs_dir else data_dir() / "runs"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    return str(root / f"{kind}-{stamp}")


def training_config(training: TrainParams) -> dict[str, Any]:
    """The :class:`rho_core.training.TrainConfig` keys from the flow's training parameters."""
    d = training.model_dump()
    d.pop("nproc")
    d["checkpoint_every"] = 0  # only at the end: a quick run should not spend time saving
    return d


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
        run_dir: Run folder; default data/runs/<kind>-<time>.
    """
    from rho_core.data.store import open_store

    require_store(store)
    kind = open_store(store).kind
    run_dir = run_dir or new_run_dir(kind)
    model_cfg = build_model_config(store, model.model_dump())
    summary = train_model(store, run_dir, model_cfg, training_config(training), training.nproc)
    summary["model_config"] = model_cfg
    return summary

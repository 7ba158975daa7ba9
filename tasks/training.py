"""Prefect task: train a diffusion model on a store; returns the run directory's addresses.

The training itself is :func:`rho_core.run.train_run`, the entry ``rho train``, the torchrun
workers and the benchmarks use: one process trains in-process (progress forwarded to the task's
log every ``log_every`` steps and, when the pipeline attached an MLflow run, to live MLflow
metrics); ``nproc > 1`` runs ``torchrun`` workers whose every output line is streamed into the
task log, and a cancelled flow run stops the whole process tree.

Not cached: a re-run with the same inputs resumes from the newest valid checkpoint in the run
directory (the training loop does that), which is both cheaper and safer than a result cache.
Not retried: a failure here is a bug or bad data, not a transient condition.

The run folder has the layout of :mod:`rho_core.run` (``config.json``, ``train_log.jsonl``,
``history.json`` — rows ``{"step", "loss", "lr", "samples_per_s", "grad_norm"}``, the curves
logged to MLflow — ``result.json``, ``checkpoints/``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import task

from rho_core.run import HISTORY_FILE, HISTORY_KEYS

_HISTORY_KEYS = HISTORY_KEYS  # older name


def _logger():
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def build_model_config(store: str, model: dict[str, Any]) -> dict:
    """The model config (plain dict) of :class:`rho_core.config.ModelOptions` keys ``model``
    fitted to ``store`` (dims, channels, parameter names and ranges)."""
    from rho_core.config import resolve_section
    from rho_core.model import model_config_for_store

    return model_config_for_store(resolve_section("model", model), store).to_dict()


def _live_hook(run_dir: str):
    """MLflow live metrics for this run folder when the pipeline attached a run (tasks.tracking)."""
    try:
        from tasks.tracking import live_hook
    except ImportError:
        return None
    return live_hook(run_dir)


def run_training(
    store: str, run_dir: str, model_cfg: dict, train_cfg: dict, emit=None
) -> dict[str, Any]:
    """Train (:func:`rho_core.run.train_run`); returns the addresses and a summary.

    ``emit(str)`` receives a progress line every ``log_every`` steps (in-process runs) or every
    output line of the torchrun workers.
    """
    from rho_core.errors import RhoError
    from rho_core.model import ModelConfig
    from rho_core.run import train_run
    from rho_core.training import resolve_train_config

    mcfg = ModelConfig.from_dict(model_cfg)
    tcfg = resolve_train_config(train_cfg)
    every = max(1, tcfg.log_every)
    first: list[int] = []  # the step this call started from (a resumed run starts late)
    t0 = time.monotonic()
    live = _live_hook(run_dir)

    def callback(step: int, metrics: dict) -> None:
        if not first:
            first.append(step - 1)
        if step % every and step != tcfg.steps:
            return
        row = {"step": int(step)}
        row.update({k: float(metrics[k]) for k in HISTORY_KEYS if metrics.get(k) is not None})
        if live is not None:
            live(step, row)
        if emit is not None:
            elapsed = time.monotonic() - t0
            batch = metrics.get("global_batch", tcfg.batch_size * tcfg.grad_accum)
            rate = (step - first[0]) * batch / elapsed if elapsed > 0 else float("nan")
            emit(
                f"step {step}/{tcfg.steps}  loss {row.get('loss', float('nan')):.4f}  "
                f"lr {row.get('lr', 0.0):.2e}  {rate:.1f} samples/s  ({elapsed:.0f} s)"
            )

    res = train_run(store, run_dir, mcfg, tcfg, resume=True, callback=callback, log_callback=emit)
    if res is None:
        raise RhoError(f"training in {run_dir} finished without a result.json")
    return {
        "run_dir": str(run_dir),
        "checkpoint": res.get("checkpoint"),
        "history": res.get("history") or str(Path(run_dir) / HISTORY_FILE),
        "step": int(res["step"]),
        "final_loss": res.get("final_loss"),
        "samples_per_s": float(res.get("samples_per_s") or 0.0),
        "elapsed_s": float(res.get("elapsed_s") or 0.0),
        "world_size": int(res.get("world_size") or tcfg.nproc),
        "stopped_by_budget": bool(res.get("stopped_by_budget", False)),
    }


@task(name="train-model", task_run_name="train {run_dir}")
def train_model(
    store: str, run_dir: str, model_cfg: dict, train_cfg: dict, nproc: int | None = None
) -> dict[str, Any]:
    """Train on ``store`` into ``run_dir``; ``nproc`` (default ``train_cfg["nproc"]``, 1) > 1
    launches torchrun. Returns addresses."""
    logger = _logger()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    train_cfg = dict(train_cfg)
    if nproc is not None:
        train_cfg["nproc"] = int(nproc)
    if int(train_cfg.get("nproc", 1)) <= 1:
        from tasks.paths import torch_thread_limit

        with torch_thread_limit():
            import torch

            logger.info(
                "training in-process on %s -> %s (%d torch threads)",
                store,
                run_dir,
                torch.get_num_threads(),
            )
            return run_training(store, run_dir, model_cfg, train_cfg, emit=logger.info)
    logger.info(
        "training with torchrun, %d processes, on %s -> %s", train_cfg["nproc"], store, run_dir
    )
    return run_training(store, run_dir, model_cfg, train_cfg, emit=logger.info)

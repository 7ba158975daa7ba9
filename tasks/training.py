"""Prefect task: train a diffusion model on a store; returns the run directory's addresses.

One process trains in-process (:func:`rho_core.training.train`), its progress forwarded to the
task's log every ``log_every`` steps. Several processes (``nproc > 1``) run under ``torchrun``
through :func:`rho_core.launch.launch_torchrun` with :mod:`tasks.train_worker` as the worker
program; every line the ranks print is streamed into the task log, and a cancelled flow run stops
the whole process tree.

Not cached: a re-run with the same inputs resumes from the newest valid checkpoint in the run
directory (the training loop does that), which is both cheaper and safer than a result cache.
Not retried: a failure here is a bug or bad data, not a transient condition.

Files written in ``run_dir``: ``config.json`` (by the loop), ``checkpoints/``, ``history.json``
(rows ``{"step", "loss", "lr", "samples_per_s"}``, the curves logged to MLflow).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from prefect import task

HISTORY_FILE = "history.json"
_HISTORY_KEYS = ("loss", "lr", "samples_per_s", "grad_norm")


def _logger():
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def build_model_config(store: str, model: dict[str, Any]) -> dict:
    """A model config (plain dict) fitted to ``store``: dims, channels, parameter names/ranges.

    ``model`` holds :class:`flows.params.ModelParams` fields.
    """
    from rho_core.data.store import open_store
    from rho_core.model import default_model_config

    s = open_store(store)
    ranges = s.param_ranges()
    names = list(s.param_names)
    low = [float(ranges[n][0]) for n in names]
    high = [float(ranges[n][1]) for n in names]
    high = [h if h > lo else lo + 1.0 for lo, h in zip(low, high, strict=True)]
    mult = tuple(int(m) for m in model["channel_mult"])
    cfg = default_model_config(
        s.spatial_dims,
        int(s.field_shape[0]),
        names,
        low,
        high,
        conditioning=model["conditioning"],
        cond_dim=int(model["cond_dim"]),
        schedule=model["schedule"],
        timesteps=int(model["timesteps"]),
        prediction=model["prediction"],
        schedule_shift=float(model.get("schedule_shift", 0.0)),
        base_channels=int(model["base_channels"]),
        channel_mult=mult,
        num_res_blocks=int(model["num_res_blocks"]),
        attention_levels=(len(mult) - 1,) if model.get("attention", True) else (),
    )
    return cfg.to_dict()


def run_training(
    store: str, run_dir: str, model_cfg: dict, train_cfg: dict, emit=None
) -> dict[str, Any]:
    """Train in this process (or as one torchrun rank); returns addresses and a summary.

    ``emit(str)`` receives a progress line every ``log_every`` steps (rank 0 only).
    """
    from rho_core.data.dataset import StoreDataset
    from rho_core.model import ModelConfig
    from rho_core.training import resolve_train_config, train

    mcfg = ModelConfig.from_dict(model_cfg)
    tcfg = resolve_train_config(train_cfg)
    dataset = StoreDataset(store)
    history: list[dict[str, float]] = []
    every = max(1, tcfg.log_every)
    batch = tcfg.batch_size * tcfg.grad_accum
    first: list[int] = []  # the step this call started from (a resumed run starts late)
    t0 = time.monotonic()

    def callback(step: int, metrics: dict) -> None:
        if not first:  # called after every step: remember where this call started
            first.append(step - 1)
        if step % every and step != tcfg.steps:
            return
        row = {"step": int(step)}
        row.update({k: float(metrics[k]) for k in _HISTORY_KEYS if metrics.get(k) is not None})
        history.append(row)
        if emit is not None:
            elapsed = time.monotonic() - t0
            rate = (step - first[0]) * batch / elapsed if elapsed > 0 else float("nan")
            emit(
                f"step {step}/{tcfg.steps}  loss {row.get('loss', float('nan')):.4f}  "
                f"lr {row.get('lr', 0.0):.2e}  {rate:.1f} samples/s  ({elapsed:.0f} s)"
            )

    result = train(mcfg, tcfg, dataset, run_dir, callback=callback, resume=True)
    out = Path(run_dir)
    if result.checkpoint is not None:  # rank 0
        old = _read_history(out)
        merged = [r for r in old if r["step"] <= result.start_step] + history
        _write_json(out / HISTORY_FILE, merged)
    return {
        "run_dir": str(out),
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "history": str(out / HISTORY_FILE),
        "step": int(result.step),
        "final_loss": result.final_loss,
        "samples_per_s": float(result.samples_per_s),
        "elapsed_s": float(result.elapsed_s),
        "world_size": int(result.world_size),
    }


def _read_history(run_dir: Path) -> list[dict]:
    p = run_dir / HISTORY_FILE
    if not p.is_file():
        return []
    try:
        return list(json.loads(p.read_text()))
    except (OSError, ValueError):
        return []


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


@task(name="train-model", task_run_name="train {run_dir}")
def train_model(
    store: str, run_dir: str, model_cfg: dict, train_cfg: dict, nproc: int = 1
) -> dict[str, Any]:
    """Train on ``store`` into ``run_dir``; ``nproc > 1`` launches torchrun. Returns addresses."""
    logger = _logger()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    if nproc <= 1:
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

    from rho_core.train_worker import STEP_LOG_FILE, train_distributed

    logger.info("training with torchrun, %d processes, on %s -> %s", nproc, store, run_dir)
    res = train_distributed(
        model_cfg, train_cfg, store, run_dir, nproc=nproc, log_callback=logger.info
    )
    if res is None:
        from rho_core.errors import RhoError

        raise RhoError(f"distributed training in {run_dir} finished without a result.json")
    # Curves: the per-step log rank 0 wrote, thinned to every ``log_every`` steps.
    every = max(1, int(train_cfg.get("log_every", 50)))
    history = []
    log_path = Path(run_dir) / STEP_LOG_FILE
    lines = log_path.read_text().splitlines() if log_path.is_file() else []
    for line in lines:
        rec = json.loads(line)
        if rec["step"] % every == 0 or rec["step"] == res["step"]:
            row = {"step": int(rec["step"])}
            row.update({k: float(rec[k]) for k in _HISTORY_KEYS if k in rec})
            history.append(row)
    _write_json(Path(run_dir) / HISTORY_FILE, history)
    return {
        "run_dir": str(run_dir),
        "checkpoint": res.get("checkpoint"),
        "history": str(Path(run_dir) / HISTORY_FILE),
        "step": int(res["step"]),
        "final_loss": res.get("final_loss"),
        "samples_per_s": float(res.get("samples_per_s") or 0.0),
        "elapsed_s": float(res.get("elapsed_s") or 0.0),
        "world_size": int(res.get("world_size") or nproc),
    }

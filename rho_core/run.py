"""One training run: the run-folder layout and the one entry every front end calls.

``rho train``, the Prefect train task, the torchrun workers and the benchmarks all train through
:func:`train_run` (or, inside one process or one torchrun rank, :func:`run_in_process`), so every
run folder looks the same::

    RUN_DIR/
      config.json        resolved model + train config, data and normalisation (written once,
                         by rho_core.training.train, rank 0)
      train_log.jsonl    one JSON line per optimizer step (rank 0): step, loss, lr, grad_norm,
                         samples_per_s, step_time_s, restart, world_size, time
      history.json       the curve: rows of train_log.jsonl every log_every steps and the last
      result.json        the summary of the last call: step, start_step, checkpoint, elapsed_s,
                         samples_per_s, final_loss, stopped_by_budget, world_size, ...
      checkpoints/       ckpt-NNNNNNNN.pt (rho_core.checkpoint)
      job.json           torchrun runs only: the resolved job the workers read

The step log is append-only — one record of the whole run across resumes and torchrun restarts
(``restart`` tells the attempts apart). A resumed run replays exactly the steps after its
checkpoint (see :mod:`rho_core.training`), so the history takes the last record of each step
and stays one curve.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rho_core.config import TrainConfig
from rho_core.errors import ConfigError, RhoError

__all__ = [
    "CONFIG_FILE",
    "STEP_LOG_FILE",
    "HISTORY_FILE",
    "RESULT_FILE",
    "HISTORY_KEYS",
    "train_run",
    "run_in_process",
    "read_history",
    "write_json",
    "resolve_for_store",
    "plan_steps",
    "train_budgeted",
    "TrainJob",
    "train_distributed",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
STEP_LOG_FILE = "train_log.jsonl"
HISTORY_FILE = "history.json"
RESULT_FILE = "result.json"
HISTORY_KEYS = ("loss", "lr", "samples_per_s", "grad_norm")


def resolve_for_store(
    store: str | os.PathLike,
    source: Any = None,
    *overrides: Mapping[str, Any] | None,
):
    """``(ModelConfig, RunConfig)``: :func:`rho_core.config.resolve_config` of ``source`` (a
    file, a mapping or a config) and ``overrides``, and the model options fitted to the store at
    ``store`` (:func:`rho_core.model.model_config_for_store`). What every training entry calls."""
    from rho_core.config import resolve_config
    from rho_core.model import model_config_for_store

    cfg = resolve_config(source, *overrides)
    return model_config_for_store(cfg.model, store), cfg


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1, default=str)
    os.replace(tmp, path)
    return path


def _read_step_log(run_dir: Path) -> dict[int, dict]:
    """The per-step records of ``train_log.jsonl``, the last one per step winning."""
    p = run_dir / STEP_LOG_FILE
    out: dict[int, dict] = {}
    if not p.is_file():
        return out
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
            out[int(rec["step"])] = rec
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash
    return out


def read_history(run_dir: str | os.PathLike, every: int = 1) -> list[dict]:
    """Curve rows ``{"step", "loss", "lr", "samples_per_s", "grad_norm"}`` from the step log,
    every ``every`` steps plus the last."""
    recs = _read_step_log(Path(run_dir))
    if not recs:
        return []
    last = max(recs)
    rows = []
    for step in sorted(recs):
        if step % max(1, every) == 0 or step == last:
            row = {"step": step}
            row.update({k: float(recs[step][k]) for k in HISTORY_KEYS if k in recs[step]})
            rows.append(row)
    return rows


def _finish(run_dir: Path, summary: dict, log_every: int) -> dict:
    """Write history.json and result.json (rank 0); return the summary with their paths."""
    write_json(run_dir / HISTORY_FILE, read_history(run_dir, log_every))
    summary = {
        **summary,
        "history": str(run_dir / HISTORY_FILE),
        "config": str(run_dir / CONFIG_FILE),
    }
    write_json(run_dir / RESULT_FILE, summary)
    return summary


def _warn_unnormalised(data: str | os.PathLike) -> None:
    from rho_core.data.normalization import stale_normalization
    from rho_core.data.store import open_store

    store = open_store(data)
    if not store.normalization:
        log.warning(
            "store %s has no normalisation: training on the raw field values (fit one with "
            "'rho normalize %s --transform minmax|asinh|log')",
            data,
            data,
        )
    elif (why := stale_normalization(store)) is not None:
        log.warning("%s", why)


def run_in_process(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_cfg: Any,
    train_cfg: TrainConfig,
    *,
    resume: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    progress: bool = False,
    record: Mapping[str, Any] | None = None,
) -> dict | None:
    """Train in this process (or as one rank of an initialised process group).

    Rank 0 appends every step to ``train_log.jsonl`` (with ``record``'s keys, e.g. the torchrun
    restart count), calls ``callback(step, metrics)`` and at the end writes ``history.json`` and
    ``result.json``; returns that summary on rank 0 and ``None`` on the other ranks.
    ``progress`` draws a tqdm bar on stderr.
    """
    from rho_core.data.dataset import StoreDataset
    from rho_core.training import train

    out = Path(out_dir)
    dataset = StoreDataset(os.fspath(data))
    step_log = out / STEP_LOG_FILE
    extra = dict(record or {})
    state: dict[str, Any] = {"fh": None}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=train_cfg.steps, desc="train", unit="step", file=sys.stderr)

    def on_step(step: int, metrics: dict) -> None:  # rank 0 only (train calls it there)
        if state["fh"] is None:  # first step of this call
            out.mkdir(parents=True, exist_ok=True)
            state["fh"] = open(step_log, "a")  # noqa: SIM115 - closed in the finally below
            if bar is not None and step > 1:
                bar.update(step - 1)
        rec = {"step": step, **extra, "time": time.time()}
        rec.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        state["fh"].write(json.dumps(rec) + "\n")
        state["fh"].flush()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        if callback is not None:
            callback(step, metrics)

    try:
        result = train(model_cfg, train_cfg, dataset, out, callback=on_step, resume=resume)
    finally:
        if state["fh"] is not None:
            state["fh"].close()
        if bar is not None:
            bar.close()
    if not _is_main():
        return None  # rank 0 writes the checkpoints and the files
    summary = {
        "step": result.step,
        "start_step": result.start_step,
        "checkpoint": None if result.checkpoint is None else str(result.checkpoint),
        "out_dir": str(out),
        "global_batch": result.global_batch,
        "world_size": result.world_size,
        "elapsed_s": result.elapsed_s,
        "samples_per_s": result.samples_per_s,
        "final_loss": result.final_loss,
        "stopped_by_budget": bool(result.extra.get("stopped_by_budget", False)),
        "restart_count": int(extra.get("restart", 0)),
        **{k: v for k, v in extra.items() if k not in ("restart",)},
    }
    return _finish(out, summary, train_cfg.log_every)


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def train_run(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_cfg: Any,
    train_cfg: TrainConfig,
    *,
    resume: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    progress: bool = False,
    log_callback: Callable[[str], None] | None = None,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    max_restarts: int = 0,
    backend: str | None = None,
    env: Mapping[str, str] | None = None,
) -> dict | None:
    """Train ``model_cfg`` (a :class:`rho_core.model.ModelConfig`) with ``train_cfg`` on the
    store ``data`` into ``out_dir``; returns the ``result.json`` summary (``None`` on a node
    without global rank 0).

    ``train_cfg.nproc > 1`` (or any multi-node option) runs ``torchrun`` workers
    (:func:`rho_core.train_worker.train_distributed`; their output lines go to
    ``log_callback``); otherwise this process trains, calling ``callback(step, metrics)`` after
    every step. ``train_cfg.max_minutes`` stops either cleanly with a final checkpoint.
    """
    distributed = train_cfg.nproc > 1 or nnodes > 1 or max_restarts > 0 or bool(rdzv_endpoint)
    if not distributed:
        _warn_unnormalised(data)
        return run_in_process(
            data, out_dir, model_cfg, train_cfg, resume=resume, callback=callback,
            progress=progress,
        )  # fmt: skip
    return train_distributed(
        model_cfg,
        train_cfg,
        data,
        out_dir,
        nproc=train_cfg.nproc,
        nnodes=nnodes,
        node_rank=node_rank,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_id=rdzv_id,
        max_restarts=max_restarts,
        backend=backend,
        log_callback=log_callback,
        env=env,
        resume=resume,
    )


# --------------------------------------------------------------------------------------------
# wall-time budgets: plan the steps so the learning-rate schedule ends inside the budget
# --------------------------------------------------------------------------------------------
def calibrate_step_s(
    data: str | os.PathLike,
    model_cfg: Any,
    train_cfg: TrainConfig,
    scratch_parent: str | os.PathLike | None = None,
    steps: int = 24,
) -> list[float]:
    """Step times [s] of a ``steps``-step scratch run (in a temporary folder, removed after)."""
    import dataclasses

    from rho_core.data.dataset import StoreDataset
    from rho_core.training import train

    times: list[float] = []
    cfg = dataclasses.replace(
        train_cfg, steps=steps, warmup_steps=min(train_cfg.warmup_steps, 1), max_minutes=0.0,
        checkpoint_every=0, checkpoint_every_seconds=0.0, nproc=1,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(dir=scratch_parent) as tmp:
        train(model_cfg, cfg, StoreDataset(os.fspath(data)), tmp, resume=False,
              callback=lambda s, m: times.append(m["step_time_s"]))  # fmt: skip
    return times


def plan_steps(
    data: str | os.PathLike,
    model_cfg: Any,
    train_cfg: TrainConfig,
    minutes: float,
    scratch_parent: str | os.PathLike | None = None,
    reserve: float = 0.93,
    overhead_s: float = 15.0,
) -> tuple[int, float]:
    """``(steps, step_s)``: the optimizer steps (≤ ``train_cfg.steps``) that fit ``minutes``.

    ``step_s`` is the median of the second half of a 24-step scratch run: the first steps warm
    up allocators and oneDNN, and on two threads they stay slow for ~15 steps (session 8: a
    6-step calibration said 0.47 s/step for a run that went at 0.33, which planned 7,161 steps
    into a budget that held 10,000). The plan keeps ``1 − reserve`` in hand (runs beside other
    jobs measured 3-10 % slower than the calibration) and ``overhead_s`` for the model build and
    the final checkpoint.
    """
    times = calibrate_step_s(data, model_cfg, train_cfg, scratch_parent)
    tail = sorted(times[len(times) // 2 :]) or sorted(times)
    step_s = tail[len(tail) // 2]
    left = minutes * 60.0 - overhead_s
    return max(1, min(train_cfg.steps, int(reserve * left / step_s))), step_s


def train_budgeted(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_cfg: Any,
    train_cfg: TrainConfig,
    minutes: float | None = None,
    *,
    plan: bool = True,
    scratch_parent: str | os.PathLike | None = None,
    callback: Callable[[int, dict], None] | None = None,
    resume: bool = False,
) -> dict:
    """:func:`train_run` within ``minutes`` (default ``train_cfg.max_minutes``; 0: none).

    With ``plan`` the steps are first shortened to fit (:func:`plan_steps`), so the
    learning-rate schedule ends inside the budget; ``max_minutes`` (budget + 30 s from the
    call) stops the loop cleanly with a checkpoint if the plan was optimistic. Returns the
    ``result.json`` summary plus ``planned_steps``, ``calibration_step_s`` and ``wall_s``.
    """
    import dataclasses

    t0 = time.perf_counter()
    minutes = train_cfg.max_minutes if minutes is None else float(minutes)
    cfg, step_s = train_cfg, None
    if minutes and plan and cfg.steps > 12:
        steps, step_s = plan_steps(data, model_cfg, cfg, minutes, scratch_parent)
        cfg = dataclasses.replace(cfg, steps=steps)
    if minutes:
        left = minutes * 60.0 + 30.0 - (time.perf_counter() - t0)
        cfg = dataclasses.replace(cfg, max_minutes=max(left, 1.0) / 60.0)
    res = train_run(data, out_dir, model_cfg, cfg, resume=resume, callback=callback) or {}
    res.update(planned_steps=cfg.steps, calibration_step_s=step_s, wall_s=time.perf_counter() - t0)
    return res


# --------------------------------------------------------------------------------------------
# torchrun jobs: the spec every worker reads, and the parent side (rho_core.train_worker is the
# worker program)
# --------------------------------------------------------------------------------------------
JOB_FILE = "job.json"
#: Prefix of the worker start-up line (``rank``, ``pid``, ``restart``), one per rank.
WORKER_TAG = "[rho-worker]"


@dataclass(frozen=True)
class TrainJob:
    """A fully resolved training job, as the parent hands it to every worker.

    Attributes:
        data: path of the training store.
        out_dir: run directory (checkpoints, ``config.json``, ``train_log.jsonl``, ``result.json``).
        model: :meth:`ModelConfig.to_dict` form. train: :meth:`TrainConfig.to_dict` form.
        backend: ``torch.distributed`` backend, ``None`` = chosen from the device.
        resume: resume from the newest valid checkpoint in ``out_dir``.
    """

    data: str
    out_dir: str
    model: dict
    train: dict
    backend: str | None = None
    resume: bool = True

    def to_dict(self) -> dict:
        return {
            "data": self.data,
            "out_dir": self.out_dir,
            "model": self.model,
            "train": self.train,
            "backend": self.backend,
            "resume": self.resume,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainJob:
        missing = {"data", "out_dir", "model", "train"} - set(d)
        if missing:
            raise ConfigError(f"training job lacks the keys {sorted(missing)}")
        return cls(
            data=str(d["data"]),
            out_dir=str(d["out_dir"]),
            model=dict(d["model"]),
            train=dict(d["train"]),
            backend=d.get("backend"),
            resume=bool(d.get("resume", True)),
        )


def write_job(job: TrainJob, path: str | os.PathLike | None = None) -> Path:
    """Write ``job`` atomically to ``path`` (default ``OUT_DIR/job.json``); returns the path."""
    p = Path(path) if path is not None else Path(job.out_dir) / JOB_FILE
    write_json(p, job.to_dict())
    return p


def read_job(path: str | os.PathLike) -> TrainJob:
    """Read a job file written by :func:`write_job` (:class:`ConfigError` if unusable)."""
    p = Path(path)
    try:
        return TrainJob.from_dict(json.loads(p.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"training job file {p} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"training job file {p} is not valid JSON: {exc}") from None


def job_from_files(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | os.PathLike | None = None,
    backend: str | None = None,
    **overrides: Any,
) -> TrainJob:
    """Resolve a job from a store and an optional config file exactly as ``rho train`` does
    (:func:`rho_core.run.resolve_for_store`; ``overrides``: train or model keys)."""
    from rho_core.config import flat_overrides

    model_cfg, cfg = resolve_for_store(os.fspath(data), config, flat_overrides(overrides))
    return TrainJob(
        data=os.fspath(data),
        out_dir=os.fspath(out_dir),
        model=model_cfg.to_dict(),
        train=cfg.train.to_dict(),
        backend=backend,
    )


def train_distributed(
    model_cfg: Any,
    train_cfg: Any,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    max_restarts: int = 0,
    backend: str | None = None,
    log_callback: Any = None,
    env: Mapping[str, str] | None = None,
    resume: bool = True,
) -> dict | None:
    """Train with ``nproc`` torchrun workers per node; returns ``RUN_DIR/result.json`` (or
    ``None`` on a node other than the one holding global rank 0).

    ``model_cfg`` / ``train_cfg`` are :class:`ModelConfig` / :class:`TrainConfig` (or their dict
    forms). Launcher options as in :func:`rho_core.launch.launch_torchrun`; a failure after
    ``max_restarts`` restarts raises :class:`RhoError` with the tail of the log.
    """
    out = Path(out_dir)
    job = TrainJob(
        data=os.fspath(Path(data).resolve()),
        out_dir=os.fspath(out.resolve()),
        model=model_cfg if isinstance(model_cfg, dict) else model_cfg.to_dict(),
        train=train_cfg if isinstance(train_cfg, dict) else train_cfg.to_dict(),
        backend=backend,
        resume=resume,
    )
    # Fail here, once, rather than once per torchrun attempt in every worker:
    from rho_core.devices import resolve_device
    from rho_core.distributed import select_backend

    _warn_unnormalised(data)  # as `rho train` warns in a single process

    device = resolve_device(job.train.get("device", "auto"))  # unavailable → ConfigError
    if nproc * nnodes > 1 or backend:
        select_backend(device, backend)  # e.g. nccl for CPU tensors → ConfigError
    if not resume:
        from rho_core.checkpoint import checkpoint_dir, list_checkpoints

        if list_checkpoints(checkpoint_dir(out)):
            raise ConfigError(
                f"{checkpoint_dir(out)} already holds checkpoints and resuming is off; use a new "
                "output directory (or resume from them)"
            )
    import contextlib

    from rho_core.locks import RUN_LOCK_ENV, lock_run_dir

    # node 0's launcher holds the run directory for every attempt (job.json, restarts); its
    # workers are told so and do not lock again
    lock = lock_run_dir(out) if node_rank == 0 else contextlib.nullcontext()
    with lock:
        env = {**(env or {}), RUN_LOCK_ENV: os.path.realpath(out)} if node_rank == 0 else env
        return _launch(job, out, nproc, nnodes, node_rank, rdzv_endpoint, rdzv_id, max_restarts,
                       log_callback, env)  # fmt: skip


def _launch(job, out, nproc, nnodes, node_rank, rdzv_endpoint, rdzv_id, max_restarts,
            log_callback, env) -> dict | None:  # fmt: skip
    from rho_core.launch import launch_torchrun

    job_path = write_job(job)
    result_path = out / RESULT_FILE
    result_path.unlink(missing_ok=True)
    worker_errors: list[str] = []

    def on_line(line: str) -> None:
        if line.startswith(WORKER_TAG) and ": error: " in line:
            worker_errors.append(line.split(": error: ", 1)[1])
        if log_callback is not None:
            log_callback(line)

    try:
        launch_torchrun(
            ["-m", "rho_core.train_worker", "--job", str(job_path)],
            nproc=nproc,
            nnodes=nnodes,
            node_rank=node_rank,
            rdzv_endpoint=rdzv_endpoint,
            rdzv_id=rdzv_id,
            max_restarts=max_restarts,
            log_callback=on_line,
            env=env,
        )
    except RhoError as exc:
        if worker_errors:  # a user error inside the workers: that is the message
            raise RhoError(f"{worker_errors[-1]} (reported by a torchrun worker)") from exc
        raise
    if not result_path.is_file():
        return None
    return json.loads(result_path.read_text())

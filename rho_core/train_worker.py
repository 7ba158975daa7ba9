"""A distributed training job: its spec, the torchrun worker entry point, and the parent side.

Parent (``rho train --nproc N``, the Prefect train task)::

    result = train_distributed(model_cfg, train_cfg, data="store.zarr", out_dir="runs/a",
                               nproc=2, max_restarts=1, log_callback=print)

writes the resolved job to ``RUN_DIR/job.json`` (configs resolved once, in the parent) and runs
``torchrun ... -m rho_core.train_worker --job RUN_DIR/job.json`` through
:func:`rho_core.launch.launch_torchrun`. Each worker:

1. creates the process group (:func:`rho_core.distributed.init_distributed`: ``gloo``/``nccl``/
   ``xccl`` from the device, ``LOCAL_RANK`` pinned);
2. opens the store (:class:`rho_core.data.dataset.StoreDataset`) and calls
   :func:`rho_core.training.train` with ``resume=True`` — after a torchrun restart every rank
   resumes from the newest valid checkpoint rank 0 finds (a corrupt newest one is skipped with a
   warning);
3. on rank 0 only: appends one JSON line per optimizer step to ``RUN_DIR/train_log.jsonl``
   (``step``, ``loss``, ``lr``, ``grad_norm``, ``samples_per_s``, ``restart``, ``world_size``,
   ``global_batch``, ``time``) — one record of the whole run across restarts — and at the end
   writes ``RUN_DIR/result.json`` (the :class:`~rho_core.training.TrainResult` summary).

Direct use (e.g. under ``srun``/``torchrun`` without the ``rho`` command)::

    torchrun --nproc-per-node 4 -m rho_core.train_worker --data STORE --out RUN_DIR \\
        [--config FILE.yaml] [--steps N] [--device auto] [--backend auto]

with ``FILE.yaml`` read exactly as ``rho train --config`` reads it (``model:`` and ``train:``
sections).

Multi-node runs need ``RUN_DIR`` and the store on a file system shared by all nodes (rank 0
writes the checkpoints; every rank reads the one it picks on resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rho_core.errors import ConfigError, RhoError

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
STEP_LOG_FILE = "train_log.jsonl"
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
        return {"data": self.data, "out_dir": self.out_dir, "model": self.model,
                "train": self.train, "backend": self.backend, "resume": self.resume}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainJob:
        missing = {"data", "out_dir", "model", "train"} - set(d)
        if missing:
            raise ConfigError(f"training job lacks the keys {sorted(missing)}")
        return cls(data=str(d["data"]), out_dir=str(d["out_dir"]), model=dict(d["model"]),
                   train=dict(d["train"]), backend=d.get("backend"),
                   resume=bool(d.get("resume", True)))


def _atomic_write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, default=str)
    os.replace(tmp, path)


def write_job(job: TrainJob, path: str | os.PathLike | None = None) -> Path:
    """Write ``job`` atomically to ``path`` (default ``OUT_DIR/job.json``); returns the path."""
    p = Path(path) if path is not None else Path(job.out_dir) / JOB_FILE
    _atomic_write_json(p, job.to_dict())
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
    """Resolve a job from a store and an optional YAML config (``model:``/``train:`` sections)
    exactly as ``rho train`` does (:func:`rho_cli.train.build_configs`, the one implementation;
    imported lazily because only this program entry needs it)."""
    from rho_cli.train import build_configs

    model_cfg, train_cfg = build_configs(os.fspath(data), config, overrides)
    return TrainJob(data=os.fspath(data), out_dir=os.fspath(out_dir), model=model_cfg.to_dict(),
                    train=train_cfg.to_dict(), backend=backend)


# --------------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------------
def run_worker(job: TrainJob) -> dict | None:
    """Run ``job`` in this process (a torchrun worker, or a plain single process).

    Returns the result summary on rank 0, ``None`` on the other ranks.
    """
    from rho_core import distributed
    from rho_core.data.dataset import StoreDataset
    from rho_core.model import ModelConfig
    from rho_core.training import resolve_train_config, train

    model_cfg = ModelConfig.from_dict(job.model)
    train_cfg = resolve_train_config(job.train)
    ctx = distributed.init_distributed(train_cfg.device, backend=job.backend)
    out = Path(job.out_dir)
    sys.stdout.write(
        f"{WORKER_TAG} rank={ctx.rank}/{ctx.world_size} local_rank={ctx.local_rank} "
        f"node={ctx.node_rank} restart={ctx.restart_count} pid={os.getpid()} "
        f"backend={ctx.backend} device={ctx.device}\n"
    )
    sys.stdout.flush()
    try:
        dataset = StoreDataset(job.data)
        step_log = out / STEP_LOG_FILE

        def on_step(step: int, metrics: dict) -> None:  # rank 0 only (train calls it there)
            record = {"step": step, "restart": ctx.restart_count, "world_size": ctx.world_size,
                      "time": time.time()}
            record.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})
            with open(step_log, "a") as fh:
                fh.write(json.dumps(record) + "\n")

        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        # after a torchrun restart always resume, even if the first attempt started fresh
        resume = job.resume or ctx.restart_count > 0
        result = train(model_cfg, train_cfg, dataset, out, callback=on_step, resume=resume)
        summary = None
        if ctx.is_main:
            summary = {
                "step": result.step,
                "start_step": result.start_step,
                "checkpoint": None if result.checkpoint is None else str(result.checkpoint),
                "out_dir": str(out),
                "global_batch": result.global_batch,
                "world_size": result.world_size,
                "restart_count": ctx.restart_count,
                "backend": ctx.backend,
                "elapsed_s": result.elapsed_s,
                "samples_per_s": result.samples_per_s,
                "final_loss": result.final_loss,
            }
            _atomic_write_json(out / RESULT_FILE, summary)
        distributed.barrier()
        return summary
    finally:
        distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    """``python -m rho_core.train_worker`` (under torchrun): see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m rho_core.train_worker",
                                     description="ρ-Diffusion training worker (run by torchrun)")
    parser.add_argument("--job", help="job file written by the parent (overrides the rest)")
    parser.add_argument("--data", help="training store")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--config", help="YAML with model: and train: sections")
    parser.add_argument("--steps", type=int, help="override train.steps")
    parser.add_argument("--device", help="override train.device (auto, cpu, cuda, xpu)")
    parser.add_argument("--backend", help="gloo, nccl, xccl or auto (default: from the device)")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank{rank}] %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    try:
        if args.job:
            job = read_job(args.job)
        else:
            if not args.data or not args.out:
                raise ConfigError("give --job FILE, or --data STORE and --out RUN_DIR")
            job = job_from_files(args.data, args.out, args.config, backend=args.backend,
                                 steps=args.steps, device=args.device)
        run_worker(job)
    except RhoError as exc:
        print(f"{WORKER_TAG} rank {rank}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


# --------------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------------
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
    from rho_core.launch import launch_torchrun

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
    from rho_core.data.store import open_store
    from rho_core.devices import resolve_device
    from rho_core.distributed import select_backend

    if not open_store(data).normalization:  # as `rho train` warns in a single process
        log.warning(
            "store %s has no normalisation: training on the raw field values (fit one with "
            "'rho normalize %s --transform minmax|asinh|log')",
            data,
            data,
        )

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
            nproc=nproc, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
            rdzv_id=rdzv_id, max_restarts=max_restarts, log_callback=on_line, env=env,
        )
    except RhoError as exc:
        if worker_errors:  # a user error inside the workers: that is the message
            raise RhoError(f"{worker_errors[-1]} (reported by a torchrun worker)") from exc
        raise
    if not result_path.is_file():
        return None
    return json.loads(result_path.read_text())


if __name__ == "__main__":
    sys.exit(main())

"""The torchrun worker program of a distributed training job (``python -m rho_core.train_worker``).

The job spec (:class:`TrainJob`) and the parent side (:func:`train_distributed`) live in
:mod:`rho_core.run` — the one training entry — and are re-exported here. Parent (``rho train
--nproc N``, the Prefect train task, both through :func:`rho_core.run.train_run`)::

    result = train_distributed(model_cfg, train_cfg, data="store.zarr", out_dir="runs/a",
                               nproc=2, max_restarts=1, log_callback=print)

writes the resolved job to ``RUN_DIR/job.json`` (configs resolved once, in the parent) and runs
``torchrun ... -m rho_core.train_worker --job RUN_DIR/job.json`` through
:func:`rho_core.launch.launch_torchrun`. Each worker:

1. creates the process group (:func:`rho_core.distributed.init_distributed`: ``gloo``/``nccl``/
   ``xccl`` from the device, ``LOCAL_RANK`` pinned);
2. trains through :func:`rho_core.run.run_in_process` (the store as a
   :class:`rho_core.data.dataset.StoreDataset`, :func:`rho_core.training.train` with
   ``resume=True`` — after a torchrun restart every rank resumes from the newest valid checkpoint
   rank 0 finds; a corrupt newest one is skipped with a warning), so the run
   folder has the layout of :mod:`rho_core.run`: on rank 0 one JSON line per optimizer step in
   ``RUN_DIR/train_log.jsonl`` (``step``, ``loss``, ``lr``, ``grad_norm``, ``samples_per_s``,
   ``restart``, ``world_size``, ``global_batch``, ``time``) — one record of the whole run
   across restarts — and at the end ``history.json`` and ``result.json``.

Direct use (e.g. under ``srun``/``torchrun`` without the ``rho`` command)::

    torchrun --nproc-per-node 4 -m rho_core.train_worker --data STORE --out RUN_DIR \\
        [--config FILE.yaml] [--steps N] [--device auto] [--backend auto]

with ``FILE.yaml`` read exactly as ``rho train --config`` reads it
(:func:`rho_core.run.resolve_for_store`).

Multi-node runs need ``RUN_DIR`` and the store on a file system shared by all nodes (rank 0
writes the checkpoints; every rank reads the one it picks on resume).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rho_core.errors import ConfigError, RhoError
from rho_core.run import (  # noqa: F401 - the job spec and parent side, re-exported
    JOB_FILE,
    RESULT_FILE,
    STEP_LOG_FILE,
    WORKER_TAG,
    TrainJob,
    job_from_files,
    read_job,
    train_distributed,
    write_job,
    write_json,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------------------------
def run_worker(job: TrainJob) -> dict | None:
    """Run ``job`` in this process (a torchrun worker, or a plain single process).

    Returns the result summary on rank 0, ``None`` on the other ranks.
    """
    from rho_core import distributed
    from rho_core.model import ModelConfig
    from rho_core.run import run_in_process
    from rho_core.training import resolve_train_config

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
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        # after a torchrun restart always resume, even if the first attempt started fresh
        resume = job.resume or ctx.restart_count > 0
        record = {"restart": ctx.restart_count, "world_size": ctx.world_size}
        summary = run_in_process(job.data, out, model_cfg, train_cfg, resume=resume, record=record)
        if summary is not None:
            summary["backend"] = ctx.backend
            write_json(out / RESULT_FILE, summary)
        distributed.barrier()
        return summary
    finally:
        distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    """``python -m rho_core.train_worker`` (under torchrun): see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m rho_core.train_worker",
        description="ρ-Diffusion training worker (run by torchrun)",
    )
    parser.add_argument("--job", help="job file written by the parent (overrides the rest)")
    parser.add_argument("--data", help="training store")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--config", help="YAML with model: and train: sections")
    parser.add_argument("--steps", type=int, help="override train.steps")
    parser.add_argument("--device", help="override train.device (auto, cpu, cuda, xpu)")
    parser.add_argument("--backend", help="gloo, nccl, xccl or auto (default: from the device)")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank{rank}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    try:
        if args.job:
            job = read_job(args.job)
        else:
            if not args.data or not args.out:
                raise ConfigError("give --job FILE, or --data STORE and --out RUN_DIR")
            job = job_from_files(
                args.data,
                args.out,
                args.config,
                backend=args.backend,
                steps=args.steps,
                device=args.device,
            )
        run_worker(job)
    except RhoError as exc:
        print(f"{WORKER_TAG} rank {rank}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    from rho_core.distributed import exit_worker

    exit_worker(main())  # no interpreter teardown: see exit_worker

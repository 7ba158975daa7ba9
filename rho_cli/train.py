"""`rho train`: train a conditional diffusion model on a store.

``rho train --data STORE --out RUN_DIR [--config FILE.yaml] [--steps N] [--max-minutes M]
[--nproc N]``

The YAML file is read by :func:`rho_core.config.resolve_config` — the same file ``rho pipeline
--config`` and the benchmarks take: a ``model:`` section (:class:`rho_core.config.ModelOptions`),
a ``train:`` section (:class:`rho_core.config.TrainConfig`), optionally ``evaluate:`` and
``data:`` (used by the pipeline; here the store is ``--data``); a file without sections is read
as train keys. Command-line options override the file. Training resumes from the newest valid
checkpoint in RUN_DIR unless ``--no-resume`` (only on the same store: ``--force-resume`` to
continue on other data). The run folder layout is
:mod:`rho_core.run` (config.json, train_log.jsonl, history.json, result.json, checkpoints/).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion model on a store",
        description=__doc__.split("\n\n")[0].replace("`", ""),
    )
    p.add_argument("--data", required=True, help="training store (Zarr)")
    p.add_argument("--out", required=True, help="run directory (config.json, checkpoints/)")
    p.add_argument("--config", help="YAML file with train: and model: sections")
    p.add_argument("--steps", type=int, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, help="samples per process per micro-step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="autocast precision")
    p.add_argument("--device", help="auto, cpu, cuda, xpu or mps")
    p.add_argument("--seed", type=int, help="seed of weights, data order and noise")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps")
    p.add_argument(
        "--max-minutes",
        type=float,
        help="wall-time budget: stop cleanly with a final checkpoint after M minutes",
    )
    p.add_argument(
        "--fit-schedule",
        action="store_true",
        help="with --max-minutes: time a 24-step scratch run first and shorten --steps so the "
        "learning-rate schedule ends inside the budget (a resumed run keeps its first plan)",
    )
    p.add_argument(
        "--init-from",
        metavar="CKPT",
        help="fine-tune: start from this checkpoint's weights (same model configuration)",
    )
    p.add_argument(
        "--conditioning", choices=("continuous", "hash", "none"), help="condition embedding"
    )
    p.add_argument(
        "--no-resume", action="store_true", help="start fresh (refused if RUN_DIR has checkpoints)"
    )
    p.add_argument(
        "--force-resume",
        action="store_true",
        help="resume even if --data differs from the store the checkpoints were trained on "
        "(refused by default: path, kind, shapes, content fingerprint, normalisation)",
    )
    p.add_argument(
        "--nproc", type=int, help="processes (torchrun, single node); default train.nproc (1)"
    )
    # Multi-process / multi-node options (rho_core.train_worker, docs/scaling.md).
    dist_opts = p.add_argument_group("distributed (torchrun; see docs/scaling.md)")
    dist_opts.add_argument("--nnodes", type=int, default=1, help="nodes in the job (default 1)")
    dist_opts.add_argument("--node-rank", type=int, default=0, help="this node's index")
    dist_opts.add_argument(
        "--rdzv-endpoint", help="HOST:PORT of the c10d rendezvous (node 0), same on every node"
    )
    dist_opts.add_argument("--rdzv-id", help="job id shared by all nodes (e.g. $SLURM_JOB_ID)")
    dist_opts.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="restart the worker group this often after a failure (resumes from a checkpoint)",
    )
    dist_opts.add_argument(
        "--backend",
        choices=("auto", "gloo", "nccl", "xccl"),
        default="auto",
        help="torch.distributed backend (default: gloo on CPU, nccl on CUDA, xccl on XPU)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def build_configs(
    data: str, config: str | None = None, overrides: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """``(ModelConfig, TrainConfig)`` for a store, a config file and flat overrides (train keys
    and model keys such as ``conditioning``); :func:`rho_core.run.resolve_for_store`."""
    from rho_core.config import flat_overrides
    from rho_core.run import resolve_for_store

    model_cfg, cfg = resolve_for_store(data, config, flat_overrides(overrides))
    return model_cfg, cfg.train


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "train.steps": args.steps,
        "train.batch_size": args.batch_size,
        "train.lr": args.lr,
        "train.precision": args.precision,
        "train.device": args.device,
        "train.seed": args.seed,
        "train.checkpoint_every": args.checkpoint_every,
        "train.max_minutes": args.max_minutes,
        "train.nproc": args.nproc,
        "train.init_from": args.init_from,
        "model.conditioning": args.conditioning,
    }


def _fit_schedule(args: argparse.Namespace, model_cfg: Any, cfg: Any) -> Any:
    """``cfg`` with ``train.steps`` shortened to fit ``train.max_minutes``
    (:func:`rho_core.run.plan_steps`); a run directory that already has a ``config.json`` keeps
    the steps planned when it started (a resume must not change the schedule)."""
    import dataclasses
    import json

    from rho_core.errors import ConfigError
    from rho_core.run import plan_steps

    tc = cfg.train
    if not tc.max_minutes:
        raise ConfigError(
            "--fit-schedule needs a budget: give --max-minutes (or train.max_minutes)"
        )
    saved = os.path.join(args.out, "config.json")
    if os.path.isfile(saved):
        with open(saved) as fh:
            steps = int(json.load(fh)["train"]["steps"])
        print(f"--fit-schedule: resuming {args.out}, keeping its {steps} planned steps",
              file=sys.stderr)  # fmt: skip
    else:
        steps, step_s = plan_steps(args.data, model_cfg, tc, tc.max_minutes)
        print(f"--fit-schedule: {step_s:.4g} s/step measured → {steps} steps fit "
              f"{tc.max_minutes:g} min (of {tc.steps} asked)", file=sys.stderr)  # fmt: skip
    return dataclasses.replace(cfg, train=dataclasses.replace(tc, steps=steps))


def _run(args: argparse.Namespace) -> int:
    from rho_core.errors import ConfigError
    from rho_core.run import resolve_for_store, train_run

    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc must be ≥ 1, got {args.nproc}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ConfigError(f"--out {args.out} is an existing file; give a run directory")
    if args.force_resume:  # read by rho_core.training.train, also in torchrun workers
        from rho_core.checkpoint import FORCE_RESUME_ENV

        os.environ[FORCE_RESUME_ENV] = "1"
    model_cfg, cfg = resolve_for_store(args.data, args.config, _overrides(args))
    if args.fit_schedule:
        cfg = _fit_schedule(args, model_cfg, cfg)
    dist = {
        "nnodes": args.nnodes,
        "node_rank": args.node_rank,
        "rdzv_endpoint": args.rdzv_endpoint,
        "rdzv_id": args.rdzv_id,
        "max_restarts": args.max_restarts,
        "backend": None if args.backend == "auto" else args.backend,
    }

    def emit(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    res = train_run(
        args.data,
        args.out,
        model_cfg,
        cfg.train,
        resume=not args.no_resume,
        progress=not args.quiet,
        log_callback=emit,
        **dist,
    )
    if res is None:  # a node without global rank 0
        print("this node's workers finished; node 0 holds the result", file=sys.stderr)
        return 0
    loss = "n/a" if res.get("final_loss") is None else f"{res['final_loss']:.5f}"
    budget = ", stopped by --max-minutes" if res.get("stopped_by_budget") else ""
    where = res.get("checkpoint") or f"{args.out}/checkpoints"
    if res.get("world_size", 1) > 1 or res.get("restart_count"):
        print(
            f"trained to step {res['step']} (loss {loss}{budget}) on {res['world_size']} "
            f"process(es), global batch {res['global_batch']}, {res['restart_count']} "
            f"restart(s); checkpoint {where}",
            file=sys.stderr,
        )
    else:
        print(f"trained to step {res['step']} (loss {loss}{budget}); checkpoint {where}",
              file=sys.stderr)  # fmt: skip
    return 0

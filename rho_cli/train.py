"""`rho train`: train a conditional diffusion model on a store.

``rho train --data STORE --out RUN_DIR [--config FILE.yaml] [--steps N] [--nproc N] ...``

The YAML file may hold a ``train:`` section (:class:`rho_core.training.TrainConfig` keys) and a
``model:`` section (``conditioning``, ``cond_dim``, ``fourier_features``, ``schedule``,
``timesteps``, ``prediction`` and :class:`rho_core.unet.UNetConfig` keys such as
``base_channels``, ``channel_mult``, ``num_res_blocks``, ``attention_levels``); a file without
sections is read as train keys. Command-line options override the file. Training resumes from
the newest valid checkpoint in RUN_DIR unless ``--no-resume``.

The single-process path is :func:`train_single_process` (also what each torchrun rank runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

MODEL_KEYS = (
    "conditioning",
    "cond_dim",
    "fourier_features",
    "schedule",
    "timesteps",
    "prediction",
)


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
        "--conditioning", choices=("continuous", "hash", "none"), help="condition embedding"
    )
    p.add_argument(
        "--no-resume", action="store_true", help="start fresh (refused if RUN_DIR has checkpoints)"
    )
    p.add_argument(
        "--nproc", type=int, default=1, help="processes (torchrun, single node); default 1"
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
    """``(ModelConfig, TrainConfig)`` for a store, a YAML file and command-line overrides.

    ``overrides`` may hold train keys and ``conditioning``. Unknown keys → ConfigError.
    """
    from rho_core.data.store import open_store
    from rho_core.errors import ConfigError
    from rho_core.model import default_model_config
    from rho_core.training import load_config_file, resolve_train_config

    overrides = dict(overrides or {})
    file_cfg = load_config_file(config) if config else {}
    if "train" in file_cfg or "model" in file_cfg:
        extra = sorted(set(file_cfg) - {"train", "model"})
        if extra:
            raise ConfigError(f"config file sections {extra} unknown; use 'train:' and 'model:'")
        train_d, model_d = dict(file_cfg.get("train") or {}), dict(file_cfg.get("model") or {})
    else:
        train_d, model_d = file_cfg, {}
    if overrides.get("conditioning"):
        model_d["conditioning"] = overrides.pop("conditioning")
    overrides.pop("conditioning", None)
    tcfg = resolve_train_config(train_d, **overrides)

    store = open_store(data)
    names = list(store.param_names)
    ranges = store.param_ranges()
    low = [ranges[n][0] for n in names]
    high = [ranges[n][1] if ranges[n][1] > ranges[n][0] else ranges[n][0] + 1.0 for n in names]
    if not names and model_d.get("conditioning", "continuous") != "none":
        model_d["conditioning"] = "none"
    kw = {k: v for k, v in model_d.items()}
    for key in ("channel_mult", "attention_levels"):
        if key in kw:
            kw[key] = tuple(kw[key])
    return (
        default_model_config(store.spatial_dims, store.field_shape[0], names, low, high, **kw),
        tcfg,
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "precision": args.precision,
        "device": args.device,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "conditioning": args.conditioning,
    }


def train_single_process(args: argparse.Namespace, progress: bool = True):
    """Train in this process (or as one rank of an initialised process group).

    Returns the :class:`rho_core.training.TrainResult`.
    """
    from tqdm import tqdm

    from rho_core.data.dataset import StoreDataset
    from rho_core.training import train

    model_cfg, train_cfg = build_configs(args.data, args.config, _overrides(args))
    dataset = StoreDataset(args.data)
    if dataset.normalizer.transform == "identity":
        logging.getLogger(__name__).warning(
            "store %s has no normalisation: training on the raw field values (fit one with "
            "'rho normalize %s --transform minmax|asinh|log')",
            args.data,
            args.data,
        )
    bar = None
    if progress:
        bar = tqdm(total=train_cfg.steps, desc="train", unit="step", file=sys.stderr)

    def callback(step: int, metrics: dict) -> None:
        if bar is not None:
            if bar.n == 0 and step > 1:
                bar.update(step - 1)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)

    try:
        return train(
            model_cfg, train_cfg, dataset, args.out, callback=callback, resume=not args.no_resume
        )
    finally:
        if bar is not None:
            bar.close()


def _run(args: argparse.Namespace) -> int:
    from rho_core.errors import ConfigError

    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc must be ≥ 1, got {args.nproc}")
    if _distributed_requested(args):
        return _run_distributed(args)
    res = train_single_process(args, progress=not args.quiet)
    ckpt = res.checkpoint
    loss = "n/a" if res.final_loss is None else f"{res.final_loss:.5f}"
    where = ckpt if ckpt else Path(args.out) / "checkpoints"
    print(f"trained to step {res.step} (loss {loss}); checkpoint {where}", file=sys.stderr)
    return 0


def _distributed_requested(args: argparse.Namespace) -> bool:
    return bool(
        (args.nproc or 1) > 1
        or getattr(args, "nnodes", 1) > 1
        or getattr(args, "max_restarts", 0) > 0
        or getattr(args, "rdzv_endpoint", None)
    )


def _run_distributed(args: argparse.Namespace) -> int:
    """``--nproc N`` (and the multi-node options): the same configs, trained by torchrun workers
    (:func:`rho_core.train_worker.train_distributed`); their output is streamed to stderr."""
    from rho_core.train_worker import train_distributed

    model_cfg, train_cfg = build_configs(args.data, args.config, _overrides(args))

    def emit(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    res = train_distributed(
        model_cfg,
        train_cfg,
        args.data,
        args.out,
        nproc=args.nproc,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id,
        max_restarts=args.max_restarts,
        backend=None if args.backend == "auto" else args.backend,
        log_callback=emit,
        resume=not args.no_resume,
    )
    if res is None:  # a node without global rank 0
        print("this node's workers finished; node 0 holds the result", file=sys.stderr)
        return 0
    loss = "n/a" if res.get("final_loss") is None else f"{res['final_loss']:.5f}"
    print(
        f"trained to step {res['step']} (loss {loss}) on {res['world_size']} process(es), global "
        f"batch {res['global_batch']}, {res['restart_count']} restart(s); checkpoint "
        f"{res.get('checkpoint')}",
        file=sys.stderr,
    )
    return 0

"""The training loop: AdamW + warm-up/cosine LR + EMA + checkpoints, exact resume, DDP-aware.

No Prefect or MLflow here: progress goes to ``logging`` and to an optional
``callback(step, metrics)``.

Determinism. Everything random in a step is a pure function of ``(seed, step)``:

* data order — a sample stream that visits a fresh permutation of the ``N`` samples per epoch,
  ``perm_e = default_rng([seed, e]).permutation(N)``; stream position ``p`` is sample
  ``perm_{p // N}[p mod N]``. Step ``s`` consumes positions ``[s·G, (s+1)·G)`` with the global
  batch ``G = batch_size × world_size × grad_accum``; micro-step ``a`` of rank ``r`` takes the
  ``batch_size`` positions starting at ``s·G + a·batch_size·world_size + r·batch_size``
  (a DistributedSampler-equivalent split);
* noise, timesteps and condition-drop mask — drawn for the whole global batch from a generator
  seeded with ``SeedSequence([seed, step])`` and sliced the same way.

So resuming from a checkpoint at step ``k`` replays exactly the batches and noise an
uninterrupted run would have used, and a ``W``-rank run sees the same global batch (same
samples, same noise) as a one-process run with ``batch_size × W``.

Learning rate at optimizer step ``s`` (0-based), warm-up ``w``, total ``S``, peak ``η``::

    η_s = η (s + 1) / w                                          s < w
    η_s = η [r + (1 − r) · ½ (1 + cos(π (s − w) / max(1, S − w)))]   s ≥ w   (r = min_lr_ratio)

Distributed: if ``torch.distributed`` is initialised the model is wrapped in
``DistributedDataParallel`` (gradients averaged over ranks), the reported loss is all-reduced,
all ranks resume from the checkpoint rank 0 picks, and only rank 0 keeps the EMA, writes
checkpoints and ``config.json``, logs and calls the callback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from rho_core.checkpoint import (
    check_resume_identity,
    checkpoint_dir,
    data_identity,
    find_latest_valid,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from rho_core.config import SECTIONS, TrainConfig, load_config_file, resolve_section
from rho_core.devices import (
    autocast,
    autocast_dtype,
    maybe_import_ipex,
    resolve_device,
)
from rho_core.ema import EMA
from rho_core.errors import ConfigError, DataError
from rho_core.model import DiffusionModel, ModelConfig
from rho_core.timesteps import sample_timesteps

__all__ = [
    "TrainConfig",
    "TrainResult",
    "load_config_file",
    "train",
    "resolve_train_config",
    "lr_at",
    "batch_positions",
    "step_seed",
]

log = logging.getLogger(__name__)

FUSED_ADAM_DEVICES = frozenset({"cpu", "cuda", "xpu", "mps"})
"""Device types whose AdamW runs the fused kernel (torch ≥ 2.4 has one for each)."""


def resolve_train_config(
    config: TrainConfig | dict | str | os.PathLike | None = None, **overrides: Any
) -> TrainConfig:
    """Build a :class:`TrainConfig` from a dict, a YAML/JSON file, or a config, plus overrides.

    A file may hold the train keys at top level or under a ``train:`` section (the other sections
    are checked by :func:`rho_core.config.resolve_config`, not here). Unknown keys raise
    :class:`ConfigError` listing the valid ones; ``None`` overrides are ignored.
    """
    if config is None:
        d: dict = {}
    elif isinstance(config, TrainConfig):
        d = config.to_dict()
    elif isinstance(config, dict):
        d = dict(config)
    else:
        d = load_config_file(config)
        if any(k in SECTIONS for k in d):
            d = dict(d.get("train") or {})
    return resolve_section("train", d, overrides)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for 0-based optimizer step ``step`` (formula in the module docstring)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    r = cfg.min_lr_ratio
    return cfg.lr * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for step ``step``'s noise, independent across (seed, step) pairs."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(2, np.uint64)[0] >> 1)


class _Stream:
    """The per-epoch-shuffled sample stream of the module docstring."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._cache: dict[int, np.ndarray] = {}

    def perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            rng = np.random.default_rng([int(self.seed), int(epoch)])
            self._cache[epoch] = rng.permutation(self.n)
        return self._cache[epoch]

    def indices(self, start: int, count: int) -> list[int]:
        pos = np.arange(start, start + count, dtype=np.int64)
        return [int(self.perm(int(p // self.n))[p % self.n]) for p in pos]


def batch_positions(
    step: int, micro: int, rank: int, batch_size: int, world: int, accum: int
) -> tuple[int, int]:
    """``(first stream position, offset in the step's global batch)`` of a rank's micro-batch."""
    g = batch_size * world * accum
    offset = micro * batch_size * world + rank * batch_size
    return step * g + offset, offset


class _BatchSampler(torch.utils.data.Sampler):
    """Yields the index lists of this rank's micro-batches for steps ``start … steps−1``."""

    def __init__(
        self, stream: _Stream, start: int, steps: int, b: int, world: int, rank: int, a: int
    ):
        self.stream, self.start, self.steps = stream, start, steps
        self.b, self.world, self.rank, self.a = b, world, rank, a

    def __len__(self) -> int:
        return (self.steps - self.start) * self.a

    def __iter__(self):
        for s in range(self.start, self.steps):
            for m in range(self.a):
                first, _ = batch_positions(s, m, self.rank, self.b, self.world, self.a)
                yield self.stream.indices(first, self.b)


def _collate(items):
    fields = torch.stack([torch.as_tensor(f) for f, _ in items]).to(torch.float32)
    params = torch.stack([torch.as_tensor(p) for _, p in items]).to(torch.float64)
    return fields, params


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        step: optimizer steps completed in total (including those before a resume).
        start_step: the step training (re)started from (0 unless resumed).
        losses: mean training loss of each step run in this call (global batch mean).
        checkpoint: path of the last checkpoint written (rank 0), else ``None``.
        out_dir: the run directory. global_batch: samples per optimizer step.
        elapsed_s: wall time of this call's loop. samples_per_s: throughput of this call.
    """

    step: int
    start_step: int
    losses: list[float]
    checkpoint: Path | None
    out_dir: Path
    global_batch: int
    world_size: int
    elapsed_s: float
    samples_per_s: float
    final_loss: float | None = None
    extra: dict = field(default_factory=dict)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device_for_rank(cfg: TrainConfig, world: int) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type in ("cpu", "xpu"):
        maybe_import_ipex()  # optional Intel extension: used when compatible, else one info line
    if world > 1 and device.type in ("cuda", "xpu") and device.index is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(device.type, local)
        getattr(torch, device.type).set_device(device)
    return device


def _check_compat(model_cfg: ModelConfig, dataset: Any) -> tuple[int, ...]:
    if len(dataset) < 1:
        raise DataError("the training dataset is empty")
    field_shape = tuple(getattr(dataset, "field_shape", None) or tuple(dataset[0][0].shape))
    dims = int(getattr(dataset, "spatial_dims", len(field_shape) - 1))
    if model_cfg.unet.dims != dims:
        raise ConfigError(f"model is {model_cfg.unet.dims}-D but the data is {dims}-D")
    if model_cfg.unet.in_channels != field_shape[0]:
        raise ConfigError(
            f"model expects {model_cfg.unet.in_channels} channels, data has {field_shape[0]}"
        )
    model_cfg.unet.check_spatial(field_shape[1:])
    names = getattr(dataset, "param_names", None)
    if names is not None and model_cfg.conditioning.kind != "none":
        if tuple(names) != tuple(model_cfg.param_names):
            raise ConfigError(
                f"model is conditioned on {list(model_cfg.param_names)} but the data has "
                f"parameters {list(names)}"
            )
    return field_shape


def _normalization_dict(dataset: Any) -> dict | None:
    norm = getattr(dataset, "normalizer", None)
    if norm is None:
        return None
    if isinstance(norm, dict):
        return norm
    return norm.to_dict()


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    dataset: Any,
    out_dir: str | os.PathLike,
    callback: Callable[[int, dict], None] | None = None,
    resume: bool = True,
    force_resume: bool | None = None,
) -> TrainResult:
    """Train a :class:`DiffusionModel` on ``dataset``, checkpointing into ``out_dir/checkpoints``.

    Args:
        model_cfg: the model (its ``param_names`` must match ``dataset.param_names``).
        train_cfg: see :class:`TrainConfig`.
        dataset: a map-style dataset of ``(field (C, *spatial) float32 normalised,
            params (P,) float64)`` with attributes ``param_names``, ``spatial_dims``,
            ``field_shape``, ``normalizer`` (optional ``kind``, ``path``), e.g.
            :class:`rho_core.data.dataset.StoreDataset`.
        out_dir: run directory (created); gets ``config.json`` and ``checkpoints/``.
        callback: ``callback(step, {"loss", "lr", "samples_per_s", "grad_norm", ...})`` after
            every optimizer step on rank 0 (``step`` counts completed steps, from 1).
        resume: continue from the newest valid checkpoint in ``out_dir`` if there is one.
        force_resume: resume even when the data differ from those the checkpoint was trained on
            (:func:`rho_core.checkpoint.check_resume_identity`); ``None`` reads
            ``RHO_FORCE_RESUME``.

    Rank 0 holds the run directory's lock (:func:`rho_core.locks.lock_run_dir`) throughout, so a
    second training into the same directory fails at once instead of interleaving checkpoints.

    Raises:
        DataError: NaN/inf in a batch or a non-finite loss. ConfigError: incompatible configs,
        other data than the checkpoint's, or a run directory in use.
    """
    from rho_core.locks import lock_run_dir

    lock = lock_run_dir(out_dir) if _dist_info()[0] == 0 else contextlib.nullcontext()
    with lock:
        return _train(model_cfg, train_cfg, dataset, out_dir, callback, resume, force_resume)


def _saved_model_dict(state: dict) -> dict:
    """A checkpoint's model configuration, with options added since it was written filled in
    with their defaults (so old checkpoints compare equal to today's form of the same model)."""
    saved = state["model_config"]
    try:
        return ModelConfig.from_dict(saved).to_dict()
    except (ConfigError, TypeError, KeyError):
        return saved


def _init_weights(model: torch.nn.Module, model_cfg: Any, path: str | os.PathLike) -> None:
    """Load a checkpoint's weights into ``model`` for fine-tuning (``TrainConfig.init_from``).

    The EMA weights are used when the checkpoint has them (they are the model that was
    evaluated), else the raw ones. Raises :class:`ConfigError` when the file is missing or
    unreadable, or when its model configuration differs from ``model_cfg`` (the differing keys
    are named: for a store with another parameter range the conditioning differs).
    """
    if not Path(path).is_file():
        raise ConfigError(f"init_from: checkpoint {path} does not exist")
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # a truncated or foreign file
        raise ConfigError(f"init_from: cannot read checkpoint {path}: {exc}") from exc
    saved, want = _saved_model_dict(state), model_cfg.to_dict()
    if saved != want:
        keys = sorted(k for k in set(saved) | set(want) if saved.get(k) != want.get(k))
        raise ConfigError(
            f"init_from: {path} holds a different model configuration (differs in {keys}); "
            "fine-tuning needs the same network and conditioning (parameter names and ranges)"
        )
    ema_state = state.get("ema") or {}
    model.load_state_dict(ema_state.get("module") or state["model"])


def _train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    dataset: Any,
    out_dir: str | os.PathLike,
    callback: Callable[[int, dict], None] | None,
    resume: bool,
    force_resume: bool | None,
) -> TrainResult:
    cfg = train_cfg
    rank, world = _dist_info()
    is_main = rank == 0
    out_dir = Path(out_dir)
    ckpt_dir = checkpoint_dir(out_dir)
    field_shape = _check_compat(model_cfg, dataset)
    identity = data_identity(dataset)  # recorded in checkpoints, checked on resume
    device = _device_for_rank(cfg, world)
    amp_dtype = autocast_dtype(device, cfg.precision)
    b, a = cfg.batch_size, cfg.grad_accum
    global_batch = b * world * a

    torch.manual_seed(cfg.seed)
    model = DiffusionModel(model_cfg).to(device)
    ema = EMA(model, cfg.ema_half_life_samples, cfg.ema_rampup_ratio) if is_main else None
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.weight_decay,
        # One fused kernel for all parameters instead of a Python loop of small ops: 16 → 5 ms
        # per step for the 7 M-parameter 3-D recipes on CPU (benchmarks/train_recipe.py).
        fused=device.type in FUSED_ADAM_DEVICES,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / cfg.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    # ---- resume: rank 0 picks the checkpoint, every rank loads the same one -------------------
    start = 0
    state = None
    if not resume and list_checkpoints(ckpt_dir):
        raise ConfigError(
            f"{ckpt_dir} already holds checkpoints and resuming is off; use a new output "
            "directory (or resume from them)"
        )
    if resume:
        path = None
        if is_main:
            found = find_resume_checkpoint(ckpt_dir)  # warns when all are corrupt
            path = None if found is None else str(found[0])
            state = None if found is None else found[1]
        if world > 1:
            box = [path]
            dist.broadcast_object_list(box, src=0)
            path = box[0]
            if not is_main and path is not None:
                state = load_checkpoint(path)
        if state is not None:
            if _saved_model_dict(state) != model_cfg.to_dict():
                raise ConfigError(
                    f"{out_dir} holds checkpoints of a different model configuration; use a new "
                    "output directory"
                )
            check_resume_identity(  # same store (content fingerprint, shapes, normalisation)
                state, identity, _normalization_dict(dataset), checkpoint=path, force=force_resume
            )
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if ema is not None and state.get("ema"):
                ema.load_state_dict(state["ema"])
            if state.get("rng"):
                set_rng_state(state["rng"])
            start = int(state["step"])
            if is_main:
                log.info("resuming from %s at step %d", path, start)
    if start == 0 and cfg.init_from:  # fine-tuning: weights only, every rank the same file
        _init_weights(model, model_cfg, cfg.init_from)
        if ema is not None:
            ema = EMA(model, cfg.ema_half_life_samples, cfg.ema_rampup_ratio)
        if is_main:
            log.info("initialised the weights from %s (fine-tuning)", cfg.init_from)
    if world > 1:  # every rank must agree on the step count
        box = [start]
        dist.broadcast_object_list(box, src=0)
        assert box[0] == start, f"rank {rank} resumed at {start}, rank 0 at {box[0]}"
    state = None

    norm_dict = _normalization_dict(dataset)
    data_path = getattr(dataset, "path", None)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        resolved = {
            "model": model_cfg.to_dict(),
            "train": cfg.to_dict(),
            "world_size": world,
            "global_batch": global_batch,
            "device": str(device),
            "parameters": model.net.num_parameters(),
            "data": {
                "path": None if data_path is None else str(data_path),
                "n": len(dataset),
                "field_shape": list(field_shape),
                "param_names": list(model_cfg.param_names),
                "kind": getattr(dataset, "kind", None),
            },
            "normalization": norm_dict,
        }
        tmp = out_dir / "config.json.tmp"
        tmp.write_text(json.dumps(resolved, indent=2, default=str))
        os.replace(tmp, out_dir / "config.json")
        log.info(
            "training %.2f M parameters on %s: %d steps, global batch %d = %d per rank × %d "
            "ranks × %d accumulation, precision %s",
            model.net.num_parameters() / 1e6,
            device,
            cfg.steps,
            global_batch,
            b,
            world,
            a,
            cfg.precision,
        )

    wrapped: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type in ("cuda", "xpu") else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    fwd = torch.compile(wrapped) if cfg.compile else wrapped

    def checkpoint(step: int) -> Path:
        st = {
            "format": 1,
            "model": model.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "step": step,
            "rng": rng_state(),
            "model_config": model_cfg.to_dict(),
            "train_config": cfg.to_dict(),
            "normalization": norm_dict,
            "param_names": list(model_cfg.param_names),
            "kind": getattr(dataset, "kind", None),
            "spatial_dims": model_cfg.unet.dims,
            "field_shape": list(field_shape),
            "data_path": None if data_path is None else str(data_path),
            "data_identity": identity,
            "world_size": world,
        }
        return save_checkpoint(st, ckpt_dir, step, keep=cfg.keep_checkpoints)

    losses: list[float] = []
    last_ckpt: Path | None = None
    stream = _Stream(len(dataset), cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_BatchSampler(stream, start, cfg.steps, b, world, rank, a),
        num_workers=cfg.num_workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    batches = iter(loader)
    model.train()
    t_loop = time.perf_counter()
    t_ckpt = time.monotonic()
    t_log = time.perf_counter()
    T = model_cfg.timesteps
    params_all = list(model.parameters())
    budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes > 0 else math.inf
    stopped = False
    done = start
    for step in range(start, cfg.steps):
        t_step = time.perf_counter()
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, step))
        t_all = sample_timesteps(
            global_batch, T, gen, cfg.timestep_sampling, cfg.timestep_loc,
            cfg.timestep_scale, cfg.timestep_uniform_mix,
        )  # fmt: skip
        noise_all = torch.randn((global_batch, *field_shape), generator=gen)
        drop_all = torch.rand(global_batch, generator=gen) < cfg.cond_drop_prob
        loss_sum = torch.zeros((), dtype=torch.float64)
        bad_data = 0.0
        for m in range(a):
            x0, params = next(batches)
            _, off = batch_positions(step, m, rank, b, world, a)
            sl = slice(off, off + b)
            x0 = x0.to(device, non_blocking=True)
            params = params.to(device)
            finite = bool(torch.isfinite(x0).all()) and bool(torch.isfinite(params).all())
            if not finite:
                bad_data = 1.0
                x0 = torch.nan_to_num(x0, nan=0.0, posinf=0.0, neginf=0.0)
                params = torch.nan_to_num(params, nan=0.0, posinf=0.0, neginf=0.0)
            sync = contextlib.nullcontext()
            if world > 1 and m < a - 1:
                sync = wrapped.no_sync()
            with sync:
                with autocast(device, cfg.precision):
                    per_sample = model.loss_from_noise(
                        x0,
                        params,
                        t_all[sl].to(device),
                        noise_all[sl].to(device),
                        drop_all[sl].to(device),
                        cfg.weighting,
                        cfg.min_snr_gamma,
                        forward=fwd,
                    )
                    loss = per_sample.mean()
                scaler.scale(loss / a).backward()
            loss_sum += loss.detach().double().cpu()
        # rank 0's clock decides the budget stop; the all-reduce below tells every rank
        over = float(is_main and time.perf_counter() - t_loop >= budget_s)
        stats = torch.tensor([float(loss_sum) / a, bad_data, over], dtype=torch.float64)
        if world > 1:
            comm = stats.to(device) if dist.get_backend() != "gloo" else stats
            dist.all_reduce(comm)
            stats = comm.cpu()
            stats[0] /= world
        step_loss, bad = float(stats[0]), float(stats[1])
        stopped = float(stats[2]) > 0 and step + 1 < cfg.steps
        if bad > 0:
            raise DataError(
                f"the training data contains NaN or inf values (step {step + 1}); clean or "
                "re-normalise the store (rho info STORE shows its statistics)"
            )
        if not math.isfinite(step_loss):
            raise DataError(
                f"training loss became {step_loss} at step {step + 1}; the data may hold extreme "
                "values (check the normalisation) or lower the learning rate"
            )
        scaler.unscale_(opt)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params_all, max_norm))
        scaler.step(opt)
        scaler.update()
        lr = opt.param_groups[0]["lr"]
        sched.step()
        opt.zero_grad(set_to_none=True)
        done = step + 1
        losses.append(step_loss)
        if ema is not None:
            ema.update(model, global_batch)
        if is_main:
            dt = time.perf_counter() - t_step
            metrics = {
                "loss": step_loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "samples_per_s": global_batch / max(dt, 1e-9),
                "step_time_s": dt,
                "global_batch": global_batch,
            }
            if callback is not None:
                callback(done, metrics)
            if done % cfg.log_every == 0 or done == cfg.steps:
                el = time.perf_counter() - t_log
                t_log = time.perf_counter()
                log.info(
                    "step %d/%d loss %.5f lr %.3g grad_norm %.3g (%.1f samples/s)",
                    done,
                    cfg.steps,
                    step_loss,
                    lr,
                    grad_norm,
                    global_batch * min(cfg.log_every, done - start) / max(el, 1e-9),
                )
            due = cfg.checkpoint_every and done % cfg.checkpoint_every == 0
            timed = (
                cfg.checkpoint_every_seconds > 0
                and time.monotonic() - t_ckpt >= cfg.checkpoint_every_seconds
            )
            if due or timed or done == cfg.steps or stopped:
                last_ckpt = checkpoint(done)
                t_ckpt = time.monotonic()
        if stopped:
            if is_main:
                log.info(
                    "wall-time budget of %g min spent: stopped at step %d of %d (checkpoint %s)",
                    cfg.max_minutes,
                    done,
                    cfg.steps,
                    last_ckpt,
                )
            break
    elapsed = time.perf_counter() - t_loop
    if is_main and start >= cfg.steps:
        log.info("nothing to do: %s already holds a checkpoint at step %d", out_dir, start)
        found = find_latest_valid(ckpt_dir)
        last_ckpt = None if found is None else found[0]
    end = done if stopped else max(start, cfg.steps)
    n_run = end - start
    return TrainResult(
        step=end,
        start_step=start,
        losses=losses,
        checkpoint=last_ckpt,
        out_dir=out_dir,
        global_batch=global_batch,
        world_size=world,
        elapsed_s=elapsed,
        samples_per_s=global_batch * max(n_run, 0) / max(elapsed, 1e-9),
        final_loss=losses[-1] if losses else None,
        extra={"stopped_by_budget": stopped},
    )

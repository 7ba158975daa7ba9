"""Process-group set-up for multi-process training with ``torch.distributed`` under ``torchrun``.

One worker process per device (or per CPU slot). ``torchrun`` starts the workers and exports the
rendezvous environment; :func:`init_distributed` reads it, pins the process to its local device
and creates the default process group with the backend that fits the device:

==========  ===========  =====================================================
device      backend      notes
==========  ===========  =====================================================
``cpu``     ``gloo``     any machine; also what the tests run
``cuda``    ``nccl``     one process per GPU, ``cuda:LOCAL_RANK``
``xpu``     ``xccl``     Intel Data Center GPU Max, built into torch ≥ 2.8 (no oneCCL bindings,
                         no IPEX needed); one process per tile/card, ``xpu:LOCAL_RANK``
==========  ===========  =====================================================

The map comes from :func:`torch.distributed.get_default_backend_for_device` when torch has it, and
any backend can be forced (``backend="gloo"`` on CUDA, for example) if the device supports it.

Data-parallel arithmetic. With ``W`` ranks, a per-rank batch ``b`` and ``A`` accumulation steps
the optimiser sees the gradient of the mean loss over the *global batch* ``B = b · W · A``:
DDP all-reduces (sums, then divides by ``W``) the per-rank gradients ``g_r = ∇ (1/b) Σ_i ℓ_i``, so
``ḡ = (1/W) Σ_r g_r = ∇ (1/(bW)) Σ_{all i} ℓ_i`` — the single-process gradient of the same ``B``
samples. This is why a ``W``-rank run matches a one-rank run with the same global batch.

Who uses what: the worker entry (``rho_core/train_worker.py``) calls :func:`init_distributed`
before training, :func:`barrier` after rank 0 wrote ``result.json`` and :func:`shutdown` at the
end; the parent (``rho_core/run.py``) checks the device/backend pair with :func:`select_backend`
before launching. The training loop (``rho_core/training.py``) itself talks to
``torch.distributed`` directly: DistributedDataParallel, one all-reduce per step (loss, bad-data
flag, budget stop) and a broadcast of the resume step; its global batch is ``b · W · A`` and its
per-step randomness comes from ``(seed, step)``, identical on every rank. :func:`rank_seed`,
:func:`all_reduce_scalar`, :func:`broadcast_object` and :func:`all_gather_object` serve worker
programs such as ``benchmarks/ddp.py``.

The worker entry point (``rho_core/train_worker.py``) calls :func:`init_distributed` before
``train`` and :func:`shutdown` after it, so ``train`` itself never creates a process group.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import numpy as np
import torch
import torch.distributed as dist

from rho_core.errors import ConfigError

log = logging.getLogger(__name__)

#: Backends a user may force with ``--backend``.
KNOWN_BACKENDS = ("gloo", "nccl", "xccl", "mpi", "ucc")

#: Device types each backend can communicate tensors of (a fallback copy of torch's own table).
_BACKEND_DEVICES: dict[str, tuple[str, ...]] = {
    "gloo": ("cpu", "cuda"),
    "nccl": ("cuda",),
    "xccl": ("xpu",),
    "mpi": ("cpu", "cuda"),
    "ucc": ("cpu", "cuda"),
}
_FALLBACK_DEFAULT = {"cpu": "gloo", "cuda": "nccl", "xpu": "xccl"}

ReduceOp = Literal["mean", "sum", "max", "min"]


# --------------------------------------------------------------------------------------------
# torchrun environment
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TorchrunEnv:
    """The rendezvous variables ``torchrun`` exports to every worker.

    ``rank`` ∈ [0, world_size) is global; ``local_rank`` ∈ [0, local_world_size) indexes the
    device on this node; ``node_rank`` is ``GROUP_RANK`` (the node's index); ``restart_count`` is
    ``TORCHELASTIC_RESTART_COUNT`` (0 on the first attempt, +1 after every worker-group restart).
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    restart_count: int


def read_torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """Parse the torchrun variables from ``environ`` (default ``os.environ``).

    Returns ``None`` when ``RANK`` and ``WORLD_SIZE`` are both absent (a plain single process);
    raises :class:`ConfigError` when they are present but incomplete or inconsistent.
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None

    def _int(name: str, default: int | None = None) -> int:
        raw = env.get(name)
        if raw is None:
            if default is None:
                raise ConfigError(
                    f"environment variable {name} is not set: launch workers with torchrun "
                    "(or `rho train --nproc N`), which sets RANK, WORLD_SIZE, LOCAL_RANK, "
                    "MASTER_ADDR and MASTER_PORT"
                )
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None

    rank, world = _int("RANK"), _int("WORLD_SIZE")
    local_rank = _int("LOCAL_RANK", 0)
    local_world = _int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    if not 0 <= local_rank < max(local_world, 1):
        raise ConfigError(
            f"LOCAL_RANK={local_rank} must lie in [0, LOCAL_WORLD_SIZE={local_world})"
        )
    return TorchrunEnv(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        local_world_size=local_world,
        node_rank=_int("GROUP_RANK", 0),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int("MASTER_PORT", 29500),
        restart_count=_int("TORCHELASTIC_RESTART_COUNT", 0),
    )


# --------------------------------------------------------------------------------------------
# backend and device selection
# --------------------------------------------------------------------------------------------
def default_backend(device: str | torch.device) -> str:
    """The default ``torch.distributed`` backend for a device: gloo (cpu), nccl (cuda), xccl (xpu).

    Uses :func:`torch.distributed.get_default_backend_for_device` (torch ≥ 2.6) and falls back to
    the same table on older torch. MPS has no collective backend: a :class:`ConfigError`.
    """
    dev_type = torch.device(device).type
    if dev_type == "mps":
        raise ConfigError(
            "Apple MPS has no torch.distributed backend: train multi-process with --device cpu, "
            "or use --nproc 1"
        )
    getter = getattr(dist, "get_default_backend_for_device", None)
    if getter is not None:
        try:
            return str(getter(dev_type))
        except ValueError:
            pass
    if dev_type not in _FALLBACK_DEFAULT:
        raise ConfigError(f"no distributed backend known for device type {dev_type!r}")
    return _FALLBACK_DEFAULT[dev_type]


def select_backend(device: str | torch.device, override: str | None = None) -> str:
    """The backend for ``device``: ``override`` when given and able to carry that device's
    tensors, else :func:`default_backend`. Raises :class:`ConfigError` for an unknown override or
    one that cannot serve the device (``nccl`` with CPU tensors, for example)."""
    dev_type = torch.device(device).type
    if override is None or override in ("", "auto"):
        return default_backend(dev_type)
    name = override.lower()
    if name not in KNOWN_BACKENDS:
        raise ConfigError(
            f"unknown distributed backend {override!r}: choose one of {', '.join(KNOWN_BACKENDS)}"
            " or 'auto'"
        )
    capability = getattr(dist.Backend, "backend_capability", {}).get(name)
    devices = tuple(capability) if capability else _BACKEND_DEVICES[name]
    if dev_type not in devices:
        raise ConfigError(
            f"backend {name!r} cannot communicate {dev_type} tensors (it supports "
            f"{', '.join(devices)}): use --backend {default_backend(dev_type)} or --backend auto"
        )
    return name


def _accelerator_module(dev_type: str) -> Any:
    """``torch.cuda`` / ``torch.xpu`` (the per-type API with device_count and set_device)."""
    module = getattr(torch, dev_type, None)
    if module is None or not hasattr(module, "set_device"):
        raise ConfigError(f"this torch build has no {dev_type!r} device support")
    return module


def pin_local_device(dev_type: str, local_rank: int) -> torch.device:
    """Bind this process to its device: ``cuda:LOCAL_RANK`` / ``xpu:LOCAL_RANK``, or the CPU.

    Calls ``torch.<type>.set_device`` so that kernels, NCCL/XCCL communicators and autocast all use
    that one device. Raises :class:`ConfigError` when the node has fewer devices than local ranks.
    """
    if dev_type == "cpu":
        return torch.device("cpu")
    if dev_type not in ("cuda", "xpu"):
        raise ConfigError(
            f"multi-process training supports cpu, cuda and xpu devices, not {dev_type!r}"
        )
    module = _accelerator_module(dev_type)
    if not module.is_available():
        raise ConfigError(f"device {dev_type!r} was requested but torch reports it unavailable")
    count = int(module.device_count())
    if local_rank >= count:
        raise ConfigError(
            f"local rank {local_rank} has no {dev_type} device: this node has {count}; "
            f"start at most {count} processes per node (--nproc {count})"
        )
    module.set_device(local_rank)
    return torch.device(dev_type, local_rank)


def _resolve_device_type(device: str | torch.device) -> str:
    if isinstance(device, torch.device):
        return device.type
    if device == "auto":
        from rho_core.devices import resolve_device  # the one place "auto" is decided

        return resolve_device("auto").type
    try:
        return torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or xpu") from None


# --------------------------------------------------------------------------------------------
# the process group
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job. ``backend`` is ``None`` for a plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    restart_count: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        """True when a process group exists (even with world size 1 under torchrun)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """True on global rank 0, the rank that writes checkpoints, logs and shows progress."""
        return self.rank == 0

    def ddp_device_ids(self) -> list[int] | None:
        """``device_ids`` for :class:`~torch.nn.parallel.DistributedDataParallel`: the local
        accelerator index, or ``None`` for CPU modules."""
        return None if self.device.type == "cpu" else [self.local_rank]


_CONTEXT: DistContext | None = None


def init_distributed(
    device: str | torch.device = "auto",
    backend: str | None = None,
    timeout_s: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> DistContext:
    """Initialise the default process group from the torchrun environment (idempotent).

    Under torchrun: pins ``LOCAL_RANK``'s device, picks the backend (:func:`select_backend`) and
    calls ``init_process_group(init_method="env://")`` with ``timeout_s`` for collectives (default:
    ``RHO_DIST_TIMEOUT_S`` from the environment, else 600 s). Without
    torchrun variables: returns a single-process context and creates no group. Calling it again
    returns the existing context.
    """
    global _CONTEXT
    if _CONTEXT is not None and (_CONTEXT.backend is None or dist.is_initialized()):
        return _CONTEXT
    env = read_torchrun_env(environ)
    dev_type = _resolve_device_type(device)
    if env is None:
        dev = torch.device(dev_type) if dev_type != "cpu" else torch.device("cpu")
        _CONTEXT = DistContext(device=dev)
        return _CONTEXT
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed support")
    name = select_backend(dev_type, backend)
    if not dist.is_backend_available(name):
        hint = "pass --backend gloo" if dev_type == "cuda" else "train with --device cpu"
        raise ConfigError(
            f"backend {name!r} is not built into this torch ({torch.__version__}): install a "
            f"torch build for {dev_type}, or {hint}"
        )
    if timeout_s is None:
        timeout_s = float(os.environ.get("RHO_DIST_TIMEOUT_S", "600"))
    raw_env = os.environ if environ is None else environ
    if (
        raw_env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        and int(raw_env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0
    ):
        log.warning(
            "torchrun shares its rendezvous store with the workers and --max-restarts > 0: a "
            "restarted group may read stale peer addresses and hang; launch with "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (rho train --nproc does)"
        )
    local_dev = pin_local_device(dev_type, env.local_rank)
    if name == "xccl":
        _prepare_oneccl_env(env)
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if local_dev.type != "cpu":
            kwargs["device_id"] = local_dev
        dist.init_process_group(
            backend=name,
            init_method="env://",
            rank=env.rank,
            world_size=env.world_size,
            timeout=_dt.timedelta(seconds=timeout_s),
            **kwargs,
        )
    _CONTEXT = DistContext(
        rank=env.rank,
        world_size=env.world_size,
        local_rank=env.local_rank,
        local_world_size=env.local_world_size,
        node_rank=env.node_rank,
        restart_count=env.restart_count,
        backend=name,
        device=local_dev,
    )
    log.info(
        "process group ready: rank %d/%d (local %d, node %d, restart %d), backend %s, device %s",
        env.rank,
        env.world_size,
        env.local_rank,
        env.node_rank,
        env.restart_count,
        name,
        local_dev,
    )
    return _CONTEXT


def _prepare_oneccl_env(env: TorchrunEnv) -> None:
    """Tell oneCCL (under ``xccl``) where this rank sits without an MPI launcher.

    oneCCL looks for MPI/PMI launcher variables to learn the node-local rank; under torchrun there
    are none and it can fail to start. ``CCL_PROCESS_LAUNCHER=none`` with ``CCL_LOCAL_RANK`` and
    ``CCL_LOCAL_SIZE`` supplies them (values already set by the user win).
    """
    os.environ.setdefault("CCL_PROCESS_LAUNCHER", "none")
    os.environ.setdefault("CCL_LOCAL_RANK", str(env.local_rank))
    os.environ.setdefault("CCL_LOCAL_SIZE", str(env.local_world_size))


def current() -> DistContext:
    """The context of this process: the one :func:`init_distributed` made, else one read from an
    already initialised default group (someone else called ``init_process_group``), else rank 0
    of 1 on the CPU."""
    if _CONTEXT is not None:
        return _CONTEXT
    if dist.is_available() and dist.is_initialized():
        env = read_torchrun_env()
        return DistContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=env.local_rank if env else 0,
            local_world_size=env.local_world_size if env else dist.get_world_size(),
            node_rank=env.node_rank if env else 0,
            restart_count=env.restart_count if env else 0,
            backend=str(dist.get_backend()),
        )
    return DistContext()


def shutdown() -> None:
    """Destroy the default process group if one exists (call once, at the end of a worker)."""
    global _CONTEXT
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = None


def exit_worker(code: int) -> NoReturn:
    """End a torchrun worker process with ``code``, skipping the interpreter's teardown.

    After :func:`shutdown` a process group can still be alive, held by a DDP module or a pending
    work object; when the interpreter then tears down, gloo's C++ threads may be destroyed while
    joinable and the process dies of ``terminate called without an active exception``
    (SIGABRT) — after its work is done, yet torchrun counts the rank as failed (seen in 2 of
    ~30 CI runs). This flushes the output streams and the logging handlers and leaves through
    ``os._exit``. Call it only from a worker's ``__main__``, after every file is written.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say
            pass
    os._exit(code)


# --------------------------------------------------------------------------------------------
# rank helpers
# --------------------------------------------------------------------------------------------
def _group_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank: from the process group, else ``RANK`` from the environment, else 0."""
    if _group_ready():
        return dist.get_rank()
    env = read_torchrun_env()
    return env.rank if env else 0


def is_main() -> bool:
    """True on global rank 0 (also for a plain single process)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if not _group_ready():
        return
    ctx = current()
    if ctx.backend == "nccl" and ctx.device.type == "cuda":
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


def rank_seed(seed: int, rank: int | None = None) -> int:
    """A 63-bit seed for ``rank`` derived from the run ``seed`` (default rank: this process).

    ``numpy.random.SeedSequence([seed, rank])`` hashes both into a well mixed state, so the ranks'
    noise and timestep streams are independent, reproducible, and rank 0's differs from ``seed``
    itself only by a fixed hash (never ``seed + rank``, which would overlap neighbouring runs).
    """
    if seed < 0:
        raise ConfigError(f"seed must be ≥ 0, got {seed}")
    r = get_rank() if rank is None else rank
    state = np.random.SeedSequence([int(seed), int(r)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def _comm_device() -> torch.device:
    """Where tensors for collectives must live: the accelerator for nccl/xccl, else the CPU."""
    ctx = current()
    if ctx.backend in ("nccl", "xccl"):
        return ctx.device
    return torch.device("cpu")


def all_reduce_scalar(value: float, op: ReduceOp = "mean") -> float:
    """Reduce one number over all ranks (``mean``, ``sum``, ``max`` or ``min``) for logging.

    Computed in float64, so a mean of per-rank losses ``(1/W) Σ_r ℓ_r`` equals the loss over the
    global batch when every rank holds the same number of samples. Without a group: ``value``.
    """
    if op not in ("mean", "sum", "max", "min"):
        raise ConfigError(f"unknown reduction {op!r}: use mean, sum, max or min")
    if not _group_ready():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    red = {
        "mean": dist.ReduceOp.SUM,
        "sum": dist.ReduceOp.SUM,
        "max": dist.ReduceOp.MAX,
        "min": dist.ReduceOp.MIN,
    }[op]
    dist.all_reduce(t, op=red)
    out = float(t.item())
    return out / dist.get_world_size() if op == "mean" else out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable ``obj`` from rank ``src`` to every rank and return it (e.g. the resume
    step, so all ranks agree on it). Without a group: ``obj``."""
    if not _group_ready():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` without a group) — for consistency checks."""
    if not _group_ready():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

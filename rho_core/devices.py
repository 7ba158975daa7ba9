"""Device selection, mixed-precision autocast, and the optional Intel Extension for PyTorch.

``resolve_device("auto")`` picks CUDA, then Intel XPU (``torch.xpu``), then Apple MPS, then CPU.
Autocast policy: bf16 on CPU and XPU; fp16 (with a ``GradScaler``) or bf16 on CUDA; fp32 means no
autocast. IPEX is discontinued upstream and only compatible with the torch release it was built
for, so it is imported only when installed *and* its major.minor equals torch's; any failure is
one info log line, never an error.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging

import torch

from rho_core.errors import ConfigError

__all__ = ["resolve_device", "autocast", "autocast_dtype", "maybe_import_ipex", "PRECISIONS"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
_DEVICE_KINDS = ("auto", "cpu", "cuda", "xpu", "mps")


def _xpu_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    try:
        return bool(xpu is not None and xpu.is_available())
    except Exception:  # noqa: BLE001 - a broken XPU runtime means "no XPU"
        return False


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except Exception:  # noqa: BLE001
        return False


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Map ``"auto"|"cpu"|"cuda[:i]"|"xpu[:i]"|"mps"`` to an available ``torch.device``.

    ``auto`` order: CUDA → XPU → MPS → CPU. Asking for an unavailable accelerator raises
    :class:`ConfigError` naming it.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = str(name).strip().lower()
    kind = name.split(":")[0]
    if kind not in _DEVICE_KINDS:
        raise ConfigError(f"unknown device {name!r}; use one of {', '.join(_DEVICE_KINDS)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _xpu_available():
            return torch.device("xpu")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "xpu": _xpu_available(),
        "mps": _mps_available(),
    }[kind]
    if not available:
        raise ConfigError(f"device {name!r} is not available here; use --device auto or cpu")
    return torch.device(name)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None`` = fp32, no autocast)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type not in ("cuda", "xpu", "mps"):
            raise ConfigError(
                f"precision 'fp16' is for GPUs; on {device.type} use 'bf16' (or 'fp32')"
            )
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Context manager enabling autocast for ``precision`` on ``device`` (no-op for fp32)."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _major_minor(version: str) -> tuple[int, int]:
    parts = version.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


_IPEX_CACHE: list = []


def maybe_import_ipex():
    """Return the ``intel_extension_for_pytorch`` module if usable, else ``None`` (one info line).

    Usable means: installed, its major.minor equals torch's, and the import succeeds. Any
    exception during import (IPEX raises odd ones on mismatch) is caught.
    """
    if _IPEX_CACHE:
        return _IPEX_CACHE[0]
    module = None
    try:
        ipex_version = importlib.metadata.version("intel_extension_for_pytorch")
    except importlib.metadata.PackageNotFoundError:
        log.info("Intel Extension for PyTorch not installed; using native torch")
        ipex_version = None
    if ipex_version is not None:
        try:
            if _major_minor(ipex_version) != _major_minor(torch.__version__):
                log.info(
                    "Intel Extension for PyTorch %s does not match torch %s; skipped",
                    ipex_version,
                    torch.__version__,
                )
            else:
                import intel_extension_for_pytorch as module  # noqa: F401
        except BaseException as exc:  # noqa: BLE001 - IPEX may raise anything, even SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            log.info("Intel Extension for PyTorch failed to import (%s); skipped", exc)
            module = None
    _IPEX_CACHE.append(module)
    return module

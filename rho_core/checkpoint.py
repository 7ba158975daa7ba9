"""Training checkpoints: one plain dict per file, written atomically, loaded with ``weights_only``.

A checkpoint is the dict

    {"format": 1, "model", "ema", "optimizer", "scheduler", "scaler", "step", "rng",
     "model_config", "train_config", "normalization", "param_names", "kind", "spatial_dims",
     "field_shape", "data_path", "data_identity", "world_size"}

holding only tensors and plain Python values (configs as dicts), so ``torch.load(...,
weights_only=True)`` can read it without unpickling code. Files are named ``ckpt-{step:08d}.pt``
inside ``RUN_DIR/checkpoints/``; each is written to a temporary file in the same directory,
flushed and fsync-ed, then ``os.replace``-d into place (atomic on POSIX), so a crash never leaves
a half-written file under a checkpoint name. Only the newest ``keep`` files are kept.
:func:`latest_valid_checkpoint` returns the newest file that loads and falls back to older ones
with a warning when the newest is corrupt or truncated.

Resuming checks that the data are the same as those the checkpoint was trained on
(:func:`check_resume_identity`: path, kind, shapes, parameter names, the store's content
fingerprint and the normalisation) and refuses other data unless forced (``rho train
--force-resume``, ``train(..., force_resume=True)`` or ``RHO_FORCE_RESUME=1`` for torchrun
workers). :func:`load_for_sampling` sizes the network described by a checkpoint before allocating
it (a crafted ``model_config`` cannot allocate gigabytes) and refuses NaN/inf weights.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rho_core.errors import CheckpointError

__all__ = [
    "CHECKPOINT_DIRNAME",
    "LoadedModel",
    "checkpoint_dir",
    "checkpoint_path",
    "list_checkpoints",
    "save_checkpoint",
    "load_checkpoint",
    "latest_valid_checkpoint",
    "find_latest_valid",
    "find_resume_checkpoint",
    "data_identity",
    "check_resume_identity",
    "FORCE_RESUME_ENV",
    "load_for_sampling",
    "rng_state",
    "set_rng_state",
]

log = logging.getLogger(__name__)

CHECKPOINT_DIRNAME = "checkpoints"
FORMAT = 1
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")
REQUIRED_KEYS = ("model", "step", "model_config")


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    """``RUN_DIR/checkpoints`` (or ``run_dir`` itself if it already holds checkpoints)."""
    run_dir = Path(run_dir)
    if run_dir.name == CHECKPOINT_DIRNAME or (
        not (run_dir / CHECKPOINT_DIRNAME).exists() and any(run_dir.glob("ckpt-*.pt"))
    ):
        return run_dir
    return run_dir / CHECKPOINT_DIRNAME


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """``directory / f"ckpt-{step:08d}.pt"``."""
    return Path(directory) / f"ckpt-{int(step):08d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of the checkpoint files in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    state: dict[str, Any], directory: str | os.PathLike, step: int, keep: int | None = 3
) -> Path:
    """Write ``state`` atomically to ``directory/ckpt-{step:08d}.pt``; keep the newest ``keep``.

    Returns the final path. ``keep=None`` or ``0`` keeps every checkpoint.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _write_error(final, exc, state) from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except (OSError, RuntimeError) as exc:  # torch reports a full disk as "unexpected pos"
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(final, exc, state) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    if keep:
        for _, old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    remove_stale_temporaries(directory)
    return final


def _state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


def _write_error(final: Path, exc: BaseException, state: Any) -> CheckpointError:
    """One line for a checkpoint that could not be written (disk full, quota, permissions)."""
    import errno
    import shutil

    from rho_core.limits import format_bytes

    try:
        free = shutil.disk_usage(final.parent).free
    except OSError:
        free = None
    need = _state_bytes(state)
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
        free is not None and free < need + (1 << 20)
    )
    if full:
        why = (
            f"no space left on the device ({format_bytes(free or 0)} free, a checkpoint takes "
            f"about {format_bytes(need)})"
        )
        fix = "free space or choose another --out; training resumes from the last checkpoint"
    else:
        why = f"{type(exc).__name__}: {_first_sentence(exc)}"
        fix = "check the run directory"
    return CheckpointError(f"cannot write checkpoint {final}: {why}; {fix}")


STALE_TMP_SECONDS = 3600.0


def remove_stale_temporaries(
    directory: str | os.PathLike, older_than_s: float = STALE_TMP_SECONDS
) -> list[Path]:
    """Delete ``.ckpt-*.tmp`` files left by writers killed mid-save; returns what was removed.

    Only files untouched for ``older_than_s`` seconds go, so a save still in progress in another
    process (which would be a misuse, but must not be broken) keeps its temporary file.
    """
    import time

    now = time.time()
    removed = []
    for tmp in Path(directory).glob(".ckpt-*.tmp"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True``; any failure → :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, wrong format, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a ρ-Diffusion checkpoint "
            f"({type(exc).__name__}: {_first_sentence(exc)})"
        ) from exc
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(
            f"checkpoint {path} lacks the keys {list(REQUIRED_KEYS)}; not a ρ-Diffusion checkpoint"
        )
    return state


def _first_sentence(exc: BaseException) -> str:
    """The first line of an exception message, cut at its first sentence (torch's zip errors
    run to four sentences of advice)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return first.split(". ")[0]


def find_latest_valid(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict] | None:
    """Newest checkpoint that loads, with its state; warns about each corrupt newer one."""
    directory = checkpoint_dir(directory)
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            log.warning("skipping unreadable checkpoint, falling back to the previous one: %s", exc)
    return None


def find_resume_checkpoint(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict] | None:
    """:func:`find_latest_valid` for resuming training: when checkpoints exist but none loads,
    a warning says that training restarts from step 1 (instead of restarting silently)."""
    found = find_latest_valid(directory, map_location)
    if found is None:
        n = len(list_checkpoints(checkpoint_dir(directory)))
        if n:
            log.warning(
                "none of the %d checkpoint(s) in %s loads (all corrupt or truncated): training "
                "restarts from step 1; the unreadable files are replaced as new ones are written",
                n,
                checkpoint_dir(directory),
            )
    return found


def latest_valid_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Path of the newest loadable checkpoint in a run or checkpoint directory, else ``None``.

    A corrupt or truncated newest file is skipped with a warning (the previous one is used).
    """
    found = find_latest_valid(directory)
    return None if found is None else found[0]


# --- data identity (resume) ----------------------------------------------------------------------

FORCE_RESUME_ENV = "RHO_FORCE_RESUME"
"""Environment variable (``1``) that forces resuming on other data (read by torchrun workers)."""


def data_identity(dataset: Any) -> dict | None:
    """:meth:`rho_core.data.store.Store.identity` of the store behind ``dataset`` (``None`` for
    in-memory datasets without a ``path``)."""
    path = getattr(dataset, "path", None)
    if path is None:
        return None
    from rho_core.data.store import open_store

    return open_store(path).identity()


def _canon(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def resume_differences(state: dict, identity: dict | None, normalization: dict | None) -> list[str]:
    """What differs between the data a checkpoint was trained on and ``identity`` (now).

    Checkpoints written before identities were recorded are compared on what they hold
    (kind, field shape, parameter names, store path).
    """
    if identity is None:
        return []
    saved = state.get("data_identity") or {
        "path": state.get("data_path"),
        "kind": state.get("kind"),
        "field_shape": state.get("field_shape"),
        "param_names": state.get("param_names"),
    }
    diffs = []
    for key, label in (
        ("kind", "kind"),
        ("field_shape", "sample shape"),
        ("param_names", "parameters"),
    ):
        old, new = saved.get(key), identity.get(key)
        if (
            old is not None
            and new is not None
            and list(np.atleast_1d(old)) != list(np.atleast_1d(new))
        ):
            diffs.append(f"{label} {_fmt(old)} → {_fmt(new)}")
    old_fp, new_fp = saved.get("fingerprint"), identity.get("fingerprint")
    if old_fp and new_fp:
        if old_fp != new_fp:
            diffs.append(
                f"content fingerprint {old_fp[:12]}… ({saved.get('n_samples')} samples) → "
                f"{new_fp[:12]}… ({identity.get('n_samples')} samples)"
            )
    else:
        old_path = saved.get("path")
        if old_path and os.path.abspath(old_path) != identity.get("path"):
            diffs.append(f"store {old_path} → {identity.get('path')}")
        if saved.get("n_samples") is not None and saved["n_samples"] != identity["n_samples"]:
            diffs.append(f"{saved['n_samples']} samples → {identity['n_samples']}")
    if "normalization" in state and _canon(state.get("normalization")) != _canon(normalization):
        diffs.append("normalisation (the store's 'normalization' attrs changed)")
    return diffs


def _fmt(v: Any) -> str:
    return str(tuple(v)) if isinstance(v, list) else repr(v)


def check_resume_identity(
    state: dict,
    identity: dict | None,
    normalization: dict | None,
    *,
    checkpoint: str | os.PathLike,
    force: bool | None = None,
) -> list[str]:
    """Refuse to resume ``checkpoint`` on data other than it was trained on.

    Args:
        state: the checkpoint dict. identity: :func:`data_identity` of the data now.
        normalization: the normalisation dict used now. checkpoint: its path (for messages).
        force: continue anyway with a warning; ``None`` reads ``RHO_FORCE_RESUME``.

    Returns:
        The differences (empty when the data are the same).

    Raises:
        ConfigError: the data differ and ``force`` is off.
    """
    from rho_core.errors import ConfigError

    if force is None:
        force = os.environ.get(FORCE_RESUME_ENV, "") not in ("", "0")
    diffs = resume_differences(state, identity, normalization)
    if not diffs:
        if identity and state.get("data_identity"):
            old = state["data_identity"].get("path")
            if old and old != identity.get("path"):
                log.info("resuming on the same store content, moved from %s", old)
        return []
    what = "; ".join(diffs)
    if force:
        log.warning("resuming %s on different data (forced): %s", checkpoint, what)
        return diffs
    raise ConfigError(
        f"{checkpoint} was trained on other data ({what}); resume with the same store, choose "
        "a new --out, or pass --force-resume to continue training on this store anyway"
    )


# --- model size (before allocating) --------------------------------------------------------------

MAX_SAMPLING_MODEL_FRACTION = 0.5
"""A checkpoint's network may take at most this share of the machine's memory to be loaded."""


def _check_model_size(cfg: Any, weights: dict, path: Path) -> None:
    """Build the network on the ``meta`` device (no memory), compare its tensors with the
    checkpoint's and its size with the machine's memory, before allocating it for real."""
    from rho_core.conditioning import build_conditioner
    from rho_core.limits import available_memory_bytes, format_bytes
    from rho_core.unet import UNet

    # the same sub-modules as DiffusionModel (net, conditioner); its schedule is tiny and made
    # of real tensors, so it is left out
    try:
        with torch.device("meta"):
            parts = {"net": UNet(cfg.unet)}
            if cfg.conditioning.kind != "none":
                parts["conditioner"] = build_conditioner(cfg.conditioning)
    except Exception as exc:  # noqa: BLE001 - invalid sizes in a crafted model_config
        raise CheckpointError(f"checkpoint {path} has an unusable model_config: {exc}") from exc
    meta_state = {f"{p}.{k}": v for p, m in parts.items() for k, v in m.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in meta_state.items()}
    nbytes = sum(v.numel() * v.element_size() for v in meta_state.values())
    budget = int(available_memory_bytes() * MAX_SAMPLING_MODEL_FRACTION)
    if nbytes > budget:
        raise CheckpointError(
            f"checkpoint {path} describes a network of {format_bytes(nbytes)}, more than the limit "
            f"of {format_bytes(budget)} (half of this machine's available memory); refusing to "
            "allocate it"
        )
    if isinstance(weights, dict):
        got = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
        missing = sorted(set(expected) - set(got))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        if missing or wrong:
            detail = (
                f"{len(missing)} tensors missing (e.g. {missing[0]})"
                if missing
                else f"{wrong[0]} is {got[wrong[0]]}, the config needs {expected[wrong[0]]}"
            )
            raise CheckpointError(
                f"checkpoint {path} weights do not match its model_config ({detail})"
            )
        bad = [
            k
            for k, v in weights.items()
            if isinstance(v, torch.Tensor)
            and v.is_floating_point()
            and not bool(torch.isfinite(v).all())
        ]
        if bad:
            raise CheckpointError(
                f"checkpoint {path} has NaN/inf weights ({len(bad)} tensors, e.g. {bad[0]}): the "
                "training diverged or the file was altered; use an earlier checkpoint"
            )


# --- RNG state -----------------------------------------------------------------------------------


def rng_state() -> dict:
    """RNG states of torch (CPU and CUDA if present), numpy's global and Python's, as plain data."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": [py_version, list(py_internal), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --- loading for sampling ------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A trained model ready to sample: EMA weights, eval mode, on ``device``.

    Attributes:
        model: :class:`rho_core.model.DiffusionModel` with the EMA weights.
        model_config / train_config: the resolved configs (``ModelConfig``, ``dict``).
        normalizer: :class:`rho_core.data.normalization.Normalizer` or ``None`` (identity).
        param_names: conditioning parameter names, in column order.
        kind / spatial_dims / field_shape: from the training store.
        step: optimizer steps the model was trained for; path: the checkpoint file.
    """

    model: Any
    model_config: Any
    train_config: dict
    normalizer: Any
    param_names: tuple[str, ...]
    kind: str | None
    spatial_dims: int
    field_shape: tuple[int, ...]
    step: int
    path: Path
    data_path: str | None
    normalization: dict | None


def load_for_sampling(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint file (or the newest valid one in a run directory) for sampling.

    Raises :class:`CheckpointError` when nothing loadable is there.
    """
    from rho_core.devices import resolve_device
    from rho_core.model import DiffusionModel, ModelConfig

    path = Path(path)
    device = resolve_device(device)
    if path.is_dir():
        found = find_latest_valid(path)
        if found is None:
            raise CheckpointError(f"no valid checkpoint (ckpt-*.pt) in {path}")
        path, state = found
    else:
        state = load_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(state["model_config"])
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path} has an unusable model_config: {exc}") from exc
    weights = state.get("ema") or {}
    weights = weights.get("module") if isinstance(weights, dict) and "module" in weights else None
    _check_model_size(cfg, weights if weights is not None else state["model"], path)
    model = DiffusionModel(cfg)
    try:
        model.load_state_dict(weights if weights is not None else state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} weights do not match its config: {exc}") from exc
    model.to(device).eval().requires_grad_(False)
    norm = state.get("normalization")
    normalizer = None
    if norm:
        from rho_core.data.normalization import Normalizer

        normalizer = Normalizer.from_dict(norm)
    return LoadedModel(
        model=model,
        model_config=cfg,
        train_config=dict(state.get("train_config") or {}),
        normalizer=normalizer,
        param_names=tuple(state.get("param_names") or cfg.param_names),
        kind=state.get("kind"),
        spatial_dims=int(state.get("spatial_dims") or cfg.unet.dims),
        field_shape=tuple(state.get("field_shape") or ()),
        step=int(state["step"]),
        path=path,
        data_path=state.get("data_path"),
        normalization=norm,
    )

"""A trained model as a self-contained, pickle-free bundle: weights + JSON, sampled by parameters.

A *bundle* is a folder with two files:

- ``weights.pt`` — the EMA state dict, a flat ``{name: tensor}`` mapping written with
  ``torch.save`` and read back with ``torch.load(weights_only=True)``: only tensors, no code
  objects, nothing unpickled beyond tensor storage;
- ``model.json`` — everything else, as plain JSON: the :class:`~rho_core.model.ModelConfig`
  (network, conditioning, schedule, parameterisation), the normalisation that maps physical fields
  to the model's space, the parameter names and training ranges, the field shape, the training
  step, default sampler settings and the SHA-256 of ``weights.pt``.

:func:`load_bundle` checks the digest, builds the network on the ``meta`` device first to compare
its parameter count with the weights (so a crafted config cannot make it allocate more than the
weights file holds), then loads the weights strictly. :meth:`Bundle.sample` draws fields for a
table of parameters and returns them in physical units — the whole recipe (schedule, sampler,
normalisation) comes from the bundle, nothing from elsewhere.

This module is plain torch/numpy; the MLflow wrapper around it lives in ``tasks/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rho_core.errors import CheckpointError, ConfigError

FORMAT = "rho-diffusion-bundle"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.pt"
META_FILE = "model.json"
#: Sampler settings used when the caller gives none (a good speed/quality trade-off).
DEFAULT_SAMPLING = {"sampler": "ddim", "steps": 50, "guidance": 1.0}
#: Upper bound on fields drawn by one :meth:`Bundle.sample` call (rows × n).
MAX_FIELDS_PER_CALL = 4096


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(x: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays and tuples (recursively)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def write_bundle(
    out_dir: str | os.PathLike,
    model: torch.nn.Module,
    *,
    model_config: Mapping[str, Any],
    normalization: Mapping[str, Any] | None,
    param_names: Sequence[str],
    field_shape: Sequence[int],
    kind: str | None = None,
    step: int = 0,
    param_ranges: Mapping[str, Sequence[float]] | None = None,
    sampling: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``weights.pt`` + ``model.json`` for ``model`` into ``out_dir``; returns the folder.

    Args:
        model: the :class:`~rho_core.model.DiffusionModel` (EMA weights) to save.
        model_config: ``ModelConfig.to_dict()``.
        normalization: the normaliser's dict (``None``: the model works in physical units).
        param_names: conditioning parameter names, in column order.
        field_shape: ``(C, *spatial)`` of one field.
        kind / step: dataset kind and training step, for people and registries.
        param_ranges: ``{name: [low, high]}`` seen in training (inputs outside are extrapolation).
        sampling: defaults for ``sampler``/``steps``/``guidance`` (else :data:`DEFAULT_SAMPLING`).
        extra: any further JSON metadata (e.g. scores), stored under ``"extra"``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    weights = out / WEIGHTS_FILE
    tmp = weights.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, weights)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "step": int(step),
        "model_config": _jsonable(dict(model_config)),
        "normalization": _jsonable(dict(normalization)) if normalization else None,
        "param_names": [str(n) for n in param_names],
        "param_ranges": _jsonable(dict(param_ranges or {})),
        "field_shape": [int(s) for s in field_shape],
        "sampling": {**DEFAULT_SAMPLING, **dict(sampling or {})},
        "n_parameters": int(sum(v.numel() for v in state.values())),
        "weights_sha256": _sha256(weights),
        "torch_version": torch.__version__.split("+")[0],
        "extra": _jsonable(dict(extra or {})),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=1, allow_nan=False))
    return out


def bundle_from_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    param_ranges: Mapping[str, Sequence[float]] | None = None,
    sampling: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """A bundle from a training checkpoint (file or run folder): its EMA weights and settings."""
    from rho_core.checkpoint import load_for_sampling

    loaded = load_for_sampling(checkpoint, device="cpu")
    field_shape = tuple(loaded.field_shape)
    if not field_shape:
        raise CheckpointError(f"checkpoint {loaded.path} does not record its field shape")
    return write_bundle(
        out_dir,
        loaded.model,
        model_config=loaded.model_config.to_dict(),
        normalization=loaded.normalization,
        param_names=loaded.param_names,
        field_shape=field_shape,
        kind=loaded.kind,
        step=loaded.step,
        param_ranges=param_ranges,
        sampling=sampling,
        extra=extra,
    )


@dataclass
class Bundle:
    """A loaded bundle: the model (eval mode, no gradients), its normaliser and metadata."""

    model: Any
    normalizer: Any
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.meta["param_names"])

    @property
    def field_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.meta["field_shape"])

    def param_table(self, params: Any) -> np.ndarray:
        """``(K, P)`` float64 from a mapping, a list of mappings, a DataFrame or an array.

        Mappings and DataFrames are read by name (every name in :attr:`param_names` must be
        present; other keys are an error, so a typo cannot be silently ignored).
        """
        names = self.param_names
        if hasattr(params, "to_dict") and hasattr(params, "columns"):  # a pandas DataFrame
            params = params.to_dict(orient="records")
        if isinstance(params, Mapping):
            params = [params]
        if isinstance(params, Sequence) and params and isinstance(params[0], Mapping):
            rows = []
            for i, row in enumerate(params):
                missing = [n for n in names if n not in row]
                unknown = [k for k in row if k not in names]
                if missing or unknown:
                    raise ConfigError(
                        f"parameter row {i}: missing {missing}, unknown {unknown}; this model "
                        f"takes exactly {list(names)}"
                    )
                rows.append([float(row[n]) for n in names])
            table = np.asarray(rows, dtype=np.float64)
        else:
            table = np.asarray(params, dtype=np.float64)
            if table.ndim == 1:
                table = table[None]
        if table.ndim != 2 or table.shape[1] != len(names) or table.shape[0] == 0:
            raise ConfigError(
                f"need a (K, {len(names)}) parameter table with columns {list(names)}, "
                f"got shape {table.shape}"
            )
        if not np.all(np.isfinite(table)):
            raise ConfigError("parameter values must be finite numbers")
        return table

    def sample(
        self,
        params: Any,
        n: int = 1,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int = 0,
        guidance: float | None = None,
        normalized: bool = False,
    ) -> np.ndarray:
        """Draw ``n`` fields per parameter row; ``(K * n, C, *spatial)`` float32.

        Rows are condition-major: fields ``k*n … k*n+n-1`` belong to parameter row ``k``.
        Physical units unless ``normalized`` (then the model's [-1, 1]-ish space). The same
        ``seed`` gives the same fields on any machine (noise is drawn by a CPU generator).
        """
        from rho_core.samplers import sample as run_sampler

        table = self.param_table(params)
        n = int(n)
        if n < 1:
            raise ConfigError(f"n must be ≥ 1, got {n}")
        total = table.shape[0] * n
        if total > MAX_FIELDS_PER_CALL:
            raise ConfigError(
                f"{total} fields requested in one call; the limit is {MAX_FIELDS_PER_CALL} "
                "(split the parameter table)"
            )
        defaults = self.meta.get("sampling") or DEFAULT_SAMPLING
        steps = int(steps if steps is not None else defaults["steps"])
        sampler = str(sampler or defaults["sampler"])
        guidance = float(guidance if guidance is not None else defaults.get("guidance", 1.0))
        cond = torch.as_tensor(np.repeat(table, n, axis=0), dtype=torch.float64)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.no_grad():
            x = run_sampler(
                self.model.denoiser,
                (total, *self.field_shape),
                self.model.schedule,
                method=sampler,
                steps=steps,
                cond=cond,
                guidance=guidance,
                generator=gen,
            )
        out = x.detach().float().cpu().numpy()
        if not normalized and self.normalizer is not None:
            out = np.asarray(self.normalizer.inverse(out))
        return out.astype(np.float32)


def read_meta(path: str | os.PathLike) -> dict:
    """The ``model.json`` of a bundle folder, checked for the format and version."""
    p = Path(path) / META_FILE
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is not a model bundle: {META_FILE} is missing") from exc
    except ValueError as exc:
        raise CheckpointError(f"{p} is not valid JSON: {exc}") from exc
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: format {meta.get('format')!r} v{meta.get('format_version')} is not a "
            f"{FORMAT} v≤{FORMAT_VERSION}; upgrade rho-diffusion or re-export the model"
        )
    return meta


def _expected_numel(cfg: Any) -> int:
    """Weights a :class:`~rho_core.model.DiffusionModel` of ``cfg`` holds, built on ``meta``
    (no memory is allocated, so a crafted config cannot exhaust it)."""
    from rho_core.conditioning import build_conditioner
    from rho_core.unet import UNet

    with torch.device("meta"):
        parts = [UNet(cfg.unet)]
        if cfg.conditioning.kind != "none":
            parts.append(build_conditioner(cfg.conditioning))
    return sum(v.numel() for part in parts for v in part.state_dict().values())


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle folder written by :func:`write_bundle`; no pickled code is executed.

    Raises :class:`CheckpointError` for a missing/altered weights file (SHA-256 mismatch), a
    config that does not match the weights, or a non-tensor entry in the weights.
    """
    from rho_core.model import DiffusionModel, ModelConfig

    root = Path(path)
    meta = read_meta(root)
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{root} is not a model bundle: {WEIGHTS_FILE} is missing")
    digest = _sha256(weights)
    if meta.get("weights_sha256") and digest != meta["weights_sha256"]:
        raise CheckpointError(
            f"{weights} does not match the SHA-256 recorded in {META_FILE}; the file was altered "
            "or damaged — download the model again"
        )
    try:
        cfg = ModelConfig.from_dict(meta["model_config"])
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{root}: unusable model_config: {exc}") from exc
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights} must hold a flat {{name: tensor}} mapping")
    want = _expected_numel(cfg)
    have = sum(v.numel() for v in state.values())
    if want != have:
        raise CheckpointError(
            f"{root}: the config describes {want:,} weights but {WEIGHTS_FILE} holds {have:,}"
        )
    model = DiffusionModel(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{root}: weights do not match the config: {exc}") from exc
    model.to(device).eval().requires_grad_(False)
    normalizer = None
    if meta.get("normalization"):
        from rho_core.data.normalization import Normalizer

        normalizer = Normalizer.from_dict(meta["normalization"])
    if not all(isinstance(s, int) for s in meta.get("field_shape", [])):
        raise CheckpointError(f"{root}: field_shape {meta.get('field_shape')} is incomplete")
    if math.prod(meta["field_shape"]) <= 0:
        raise CheckpointError(f"{root}: field_shape {meta['field_shape']} is empty")
    return Bundle(model=model, normalizer=normalizer, meta=meta, path=root)

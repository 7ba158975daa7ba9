"""Generating fields from a trained model and scoring them against a store's ground truth.

:func:`generate` draws samples for given parameter settings with any sampler and returns them in
physical units (the model's normaliser inverted). :func:`evaluate` picks the distinct conditions
of a store, generates one sample per condition and scores it against the store's sample with
that condition:

* ``wasserstein`` — 1-D Wasserstein distance of the value distributions, both in the model's
  normalised space (the paper's score; ignores where values sit);
* ``rel_l2`` — ‖generated − truth‖₂ / ‖truth‖₂ in physical units (spatial agreement);
* ``power_spectrum`` — relative error of the radially averaged power spectra (when available);
* ``condition_accuracy`` — the fraction of generated samples whose nearest truth (L2, physical
  units) among all evaluated conditions is their own: 1 when the condition steers every sample to
  its own field, about 1/n when the condition is ignored (see :func:`condition_accuracy`).

Both are pure functions of their inputs (a checkpoint, a store path, a seed) apart from reading
files, so the CLI and the Prefect tasks share them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rho_core.errors import ConfigError, DataError

__all__ = [
    "generate",
    "evaluate",
    "condition_label",
    "distinct_conditions",
    "condition_accuracy",
]


def condition_label(names: Sequence[str], values: Sequence[float]) -> str:
    """``"l=5,m=2"``: integral values without decimals, others with ≤ 6 significant digits."""
    parts = []
    for n, v in zip(names, values, strict=True):
        v = float(v)
        s = str(int(v)) if v.is_integer() and abs(v) < 2**53 else f"{v:.6g}"
        parts.append(f"{n}={s}")
    return ",".join(parts) if parts else "unconditional"


def _as_param_table(params: Any, names: Sequence[str], n: int | None) -> torch.Tensor:
    from rho_core.conditioning import params_to_tensor

    if isinstance(params, Mapping):
        params = [params]
    if isinstance(params, torch.Tensor | np.ndarray):
        table = torch.as_tensor(np.asarray(params, dtype=np.float64))
        if table.ndim == 1:
            table = table[None]
        if table.shape[1] != len(names):
            raise ConfigError(
                f"parameter table has {table.shape[1]} columns; the model expects {list(names)}"
            )
    else:
        table = params_to_tensor(list(params), names)
    if n is not None:
        if table.shape[0] == 1:
            table = table.expand(n, -1)
        elif table.shape[0] != n:
            raise ConfigError(f"got {table.shape[0]} parameter sets for n={n} samples")
    return table.contiguous()


def _autocast_denoiser(model: Any, device: torch.device, precision: str) -> Callable:
    """``model.denoiser``, run under autocast for ``precision`` (unchanged for fp32)."""
    from rho_core.devices import autocast, autocast_dtype

    if autocast_dtype(device, precision) is None:
        return model.denoiser

    def denoiser(x, t, cond, drop=None):
        with autocast(device, precision):
            return model.denoiser(x, t, cond, drop=drop)

    denoiser.accepts_drop = True  # batched classifier-free guidance, as model.denoiser
    return denoiser


def generate(
    loaded: Any,
    params: Any,
    n: int | None = None,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    physical: bool = True,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Draw samples from a :class:`rho_core.checkpoint.LoadedModel`.

    Args:
        loaded: from :func:`rho_core.checkpoint.load_for_sampling`.
        params: one dict (repeated ``n`` times), a list of dicts, or a ``(B, P)`` table in the
            model's ``param_names`` order. Unknown or missing names raise :class:`ConfigError`.
        n: number of samples (default: one per parameter set).
        sampler / steps / guidance / eta: see :func:`rho_core.samplers.sample`.
        seed: seeds a CPU generator; batch ``k`` uses ``seed + k`` so results do not depend on
            the device, and ``batch_size`` fixed gives reproducible draws.
        physical: return physical units (normaliser inverted) instead of normalised ones.
        progress: called with the number of denoiser steps done (for progress bars).
        precision: ``"fp32"`` or ``"bf16"``: autocast of the network (the sampler's state and
            arithmetic stay float32); see :mod:`rho_core.devices`.

    Returns:
        ``(fields (n, C, *spatial) float32, params (n, P) float64)``.
    """
    from rho_core.samplers import sample

    model = loaded.model
    names = tuple(loaded.param_names)
    if names or loaded.model_config.conditioning.kind != "none":
        table = _as_param_table(params, names, n)
    else:
        table = torch.zeros((n or 1, 0), dtype=torch.float64)
    total = table.shape[0]
    if total < 1:
        raise ConfigError("nothing to generate: n must be ≥ 1")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    field_shape = tuple(loaded.field_shape)
    if len(field_shape) != loaded.spatial_dims + 1:
        raise ConfigError("the checkpoint does not record the field shape; cannot sample")
    device = next(model.parameters()).device
    denoiser = _autocast_denoiser(model, device, precision)
    out = np.empty((total, *field_shape), dtype=np.float32)
    for k, start in enumerate(range(0, total, batch_size)):
        rows = table[start : start + batch_size]
        cond = rows.to(device) if model.conditioner is not None else None
        gen = torch.Generator().manual_seed(int(seed) + k)

        def cb(info: dict) -> None:
            if progress is not None:
                progress(1)

        with torch.inference_mode():
            x = sample(
                denoiser,
                (rows.shape[0], *field_shape),
                model.schedule,
                method=sampler,
                steps=int(steps),
                eta=float(eta),
                cond=cond,
                guidance=float(guidance),
                generator=gen,
                callback=cb,
                device=device,
            )
        x = x.float().cpu().numpy()
        if physical and loaded.normalizer is not None:
            x = np.asarray(loaded.normalizer.inverse(x), dtype=np.float32)
        out[start : start + rows.shape[0]] = x
    return out, table.numpy().copy()


def condition_accuracy(generated: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of samples ``k`` whose nearest truth in L2 is their own: ``argmin_j ‖g_k − t_j‖
    == k``, for ``generated`` and ``truth`` of shape ``(n, …)`` with row ``k`` of both sharing one
    condition (n ≥ 2). Ties count as misses."""
    g = np.asarray(generated, dtype=np.float64).reshape(len(generated), -1)
    t = np.asarray(truth, dtype=np.float64).reshape(len(truth), -1)
    if g.shape != t.shape or len(g) < 2:
        raise ConfigError(f"need ≥ 2 matching rows, got {g.shape} and {t.shape}")
    d2 = (g * g).sum(1)[:, None] - 2.0 * g @ t.T + (t * t).sum(1)[None, :]
    own = np.diag(d2).copy()
    np.fill_diagonal(d2, np.inf)
    return float(np.mean(own < d2.min(axis=1)))


def distinct_conditions(params: np.ndarray, max_conditions: int | None = None) -> np.ndarray:
    """Indices of the first sample of each distinct parameter row (sorted by first occurrence);
    with ``max_conditions`` an evenly spaced subset of them."""
    if params.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if params.shape[1] == 0:
        first = np.array([0])
    else:
        _, first = np.unique(params, axis=0, return_index=True)
        first = np.sort(first)
    if max_conditions is not None and 0 < max_conditions < first.size:
        pick = np.unique(np.round(np.linspace(0, first.size - 1, max_conditions)).astype(int))
        first = first[pick]
    return first.astype(np.int64)


def evaluate(
    checkpoint: str | os.PathLike,
    store: str | os.PathLike,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
    max_conditions: int | None = 16,
    batch_size: int = 16,
    device: str = "auto",
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Score a checkpoint on a store's conditions; returns a JSON-serialisable dict.

    Returns:
        ``{"per_condition": {label: {"wasserstein", "rel_l2", "power_spectrum"?}},
        "wasserstein_mean", "rel_l2_mean", ("power_spectrum_mean"), ("condition_accuracy"),
        "n_conditions",
        "sampler", "steps", "guidance", "seed", "checkpoint", "store", "step"}``.

    Raises:
        ConfigError: the store's parameters or field shape differ from the model's.
    """
    from rho_core import metrics
    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.store import open_store

    loaded = load_for_sampling(checkpoint, device)
    s = open_store(store)
    names = tuple(s.param_names)
    if loaded.model_config.conditioning.kind != "none" and names != tuple(loaded.param_names):
        raise ConfigError(
            f"store {store} has parameters {list(names)} but the model was trained on "
            f"{list(loaded.param_names)}"
        )
    if loaded.field_shape and tuple(s.field_shape) != tuple(loaded.field_shape):
        raise ConfigError(
            f"store {store} holds fields of shape {tuple(s.field_shape)}; the model generates "
            f"{tuple(loaded.field_shape)}"
        )
    idx = distinct_conditions(s.params, max_conditions)
    if idx.size == 0:
        raise DataError(f"store {store} holds no samples to evaluate against")
    true, params = s.read_batch(idx)
    true = np.asarray(true, dtype=np.float32)
    gen_norm, _ = generate(
        loaded,
        params,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        seed=seed,
        batch_size=batch_size,
        physical=False,
        progress=progress,
        precision=precision,
    )
    norm = loaded.normalizer
    gen_phys = gen_norm if norm is None else np.asarray(norm.inverse(gen_norm), np.float32)
    true_norm = true if norm is None else np.asarray(norm.forward(true), np.float32)
    spectrum = getattr(metrics, "power_spectrum_error", None)
    per: dict[str, dict[str, float]] = {}
    for k in range(len(idx)):
        scores = {
            "wasserstein": float(metrics.wasserstein(gen_norm[k], true_norm[k])),
            "rel_l2": float(metrics.rel_l2(gen_phys[k], true[k])),
        }
        if spectrum is not None:
            try:
                scores["power_spectrum"] = float(spectrum(gen_phys[k], true[k]))
            except (ValueError, RuntimeError, ConfigError, DataError):
                pass
        per[condition_label(names, params[k])] = scores

    def mean(key: str) -> float | None:
        vals = [v[key] for v in per.values() if key in v and math.isfinite(v[key])]
        return float(np.mean(vals)) if vals else None

    out: dict[str, Any] = {
        "per_condition": per,
        "wasserstein_mean": mean("wasserstein"),
        "rel_l2_mean": mean("rel_l2"),
    }
    if any("power_spectrum" in v for v in per.values()):
        out["power_spectrum_mean"] = mean("power_spectrum")
    if len(idx) >= 2:
        out["condition_accuracy"] = condition_accuracy(gen_phys, true)
    out.update(
        {
            "n_conditions": len(per),
            "sampler": sampler,
            "steps": int(steps),
            "guidance": float(guidance),
            "seed": int(seed),
            "checkpoint": str(loaded.path),
            "store": str(store),
            "step": loaded.step,
        }
    )
    return out

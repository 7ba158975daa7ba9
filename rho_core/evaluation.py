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

One implementation for every caller: ``rho evaluate``, the Prefect tasks (``tasks/sampling.py``:
:func:`draw_for_scoring` in the sample task, :func:`score_draws` in the score task) and the
benchmarks. Same seeding (batch ``k`` seeded ``seed + k``), condition accuracy, no clipping of
x̂₀ unless asked (``clip_x0``); the score set follows the store's kind (:func:`score_set`) and
the output names it (``score_set``, ``leading``). Settings: :class:`rho_core.config.EvalConfig`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rho_core.errors import ConfigError, DataError
from rho_core.field_mean import describe_field_mean, resolve_field_mean

__all__ = [
    "generate",
    "evaluate",
    "draw_for_scoring",
    "score_draws",
    "save_draws",
    "load_draws",
    "score_set",
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
    clip_x0: float | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    field_mean: float | None = None,
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
        clip_x0: clip the sampler's x̂₀ to ±clip_x0 (normalised space) at every step; ``None``
            (default): no clipping — fields are not images (style.md, habit 6).
        on_step: ``on_step(first_row, info)`` after every sampler step of the batch starting at
            row ``first_row`` (``info`` as the sampler's callback: ``i``, ``t``, ``x_t``, ...).
        field_mean: set every drawn field's spatial mean (per channel, physical units) to this
            value — the projection onto a constraint the data hold by construction (a Gaussian
            random field has F[κ = 0] = 0, so mean 0 exactly; a network only learns it to
            ≈ 1 % of the field's std, docs/results.md 6.2). ``None`` (default): off.

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

        def cb(info: dict, first: int = start) -> None:
            if progress is not None:
                progress(1)
            if on_step is not None:
                on_step(first, info)

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
                clip_x0=clip_x0,
            )
        x = x.float().cpu().numpy()
        norm = loaded.normalizer
        if field_mean is not None:
            x = set_field_mean(x if norm is None else norm.inverse(x), field_mean)
            if not physical and norm is not None:
                x = np.asarray(norm.forward(x), dtype=np.float32)
        elif physical and norm is not None:
            x = np.asarray(norm.inverse(x), dtype=np.float32)
        out[start : start + rows.shape[0]] = x
    return out, table.numpy().copy()


def set_field_mean(fields: np.ndarray, mean: float) -> np.ndarray:
    """``fields`` ``(n, C, *spatial)`` with each sample's per-channel spatial mean replaced by
    ``mean`` (float32): the orthogonal projection onto {spatial mean = mean}."""
    x = np.asarray(fields, dtype=np.float64)
    if x.ndim < 3:
        raise ConfigError(f"fields must be (n, C, *spatial), got shape {x.shape}")
    axes = tuple(range(2, x.ndim))
    return (x - x.mean(axis=axes, keepdims=True) + float(mean)).astype(np.float32)


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


#: Diffusion steps at which :func:`draw_for_scoring` records x_t for the Fig. 1 grid.
GRID_TIMES = (900, 800, 700, 600, 500, 400, 300, 200, 100, 0)

#: Score set per store kind (design.md, Metrics): deterministic sets lead with rel_l2 and
#: condition accuracy; stochastic sets with distribution scores; spectra with line recovery.
SCORE_SETS: dict[str, str] = {
    "gaussian_random_field": "distribution",
    "rotational_spectrum": "lines",
}
LEADING: dict[str, tuple[str, ...]] = {
    "deterministic": ("rel_l2_mean", "condition_accuracy", "wasserstein_mean"),
    # keys of rho_core.field_stats.evaluation_scores (P(k) in cosmic-variance units, PDF
    # against the true-vs-true floor, diversity, memorisation)
    "distribution": (
        "grf_pk_worst_sigma",
        "grf_pk_mean_abs_err",
        "grf_pdf_w1_ratio",
        "grf_pairwise_corr_mean",
        "grf_n_copies",
    ),
    "lines": ("lines_recall", "lines_precision", "lines_position_error", "lines_intensity_error"),
}


def score_set(kind: str | None) -> str:
    """The score set of a store ``kind``: ``deterministic``, ``distribution`` or ``lines``."""
    return SCORE_SETS.get(str(kind), "deterministic")


def _frame_rows(times_seen: Sequence[int], targets: Sequence[int]) -> dict[int, int]:
    """Map each target time to the index of the recorded step whose t is nearest to it."""
    seen = np.asarray(times_seen)
    return {int(t): int(np.argmin(np.abs(seen - t))) for t in targets}


def draw_for_scoring(
    checkpoint: str | os.PathLike,
    store: str | os.PathLike,
    config: Any = None,
    *,
    frame_times: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Generate one sample per chosen condition of ``store``; return every array scoring needs.

    ``config``: a :class:`rho_core.config.EvalConfig` (or dict), ``overrides`` its keys.
    Conditions: :func:`distinct_conditions` (at most ``max_conditions``, evenly spaced);
    sampling: :func:`generate` (batch ``k`` seeded ``seed + k``; clipping only if asked).
    ``field_mean`` (:mod:`rho_core.field_mean`): ``"auto"`` (default) sets every drawn field's
    spatial mean to the exact one the store's kind guarantees (0 for Gaussian random fields);
    a number sets it; ``None`` — also as a keyword override — keeps the network's means.

    Returns a dict of ``generated`` / ``generated_norm`` / ``true`` / ``true_norm``
    ``(K, C, *spatial)`` float32 (physical and normalised), ``params (K, P)`` float64,
    ``param_names``, ``indices (K,)``, ``kind``, ``config`` (the resolved dict), ``field_mean``
    (the mean imposed, or ``None``) and ``field_mean_rule`` (one line saying why), ``step``,
    ``checkpoint``, ``store`` and, with ``frame_times``, ``frames (R, K, C, *spatial)`` (x_t in
    the normalised space at ``len(frame_times) - 1`` sampler steps spaced evenly in log-SNR, plus
    the sample as the last row), ``frames_x0`` (the denoiser's x̂₀ at the same steps),
    ``frame_times`` and ``frame_log_snr`` (λ of each row; NaN for the final row).

    Raises:
        ConfigError: the store's parameters or field shape differ from the model's.
    """
    from rho_core.checkpoint import load_for_sampling
    from rho_core.config import EvalConfig, resolve_section
    from rho_core.data.store import open_store

    base = config.to_dict() if isinstance(config, EvalConfig) else dict(config or {})
    if "field_mean" in overrides and overrides["field_mean"] is None:
        base["field_mean"] = overrides.pop("field_mean")  # keyword None: off (not "unset")
    cfg = resolve_section("evaluate", base, overrides)
    loaded = load_for_sampling(checkpoint, cfg.device)
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
    idx = distinct_conditions(np.asarray(s.params), cfg.max_conditions or None)
    if idx.size == 0:
        raise DataError(f"store {store} holds no samples to evaluate against")
    field_mean = resolve_field_mean(cfg.field_mean, s.kind, s.provenance)
    true, params = s.read_batch(idx)
    true = np.asarray(true, dtype=np.float32)
    params = np.asarray(params, dtype=np.float64)

    record: dict[int, list] = {}  # batch start -> [(t, x_t, x̂₀)]

    def on_step(first: int, info: dict) -> None:
        t = info["t"]
        t = int(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else int(t)
        x0 = info.get("x0_hat")
        record.setdefault(first, []).append(
            (
                t,
                info["x_t"].detach().float().cpu().numpy(),
                None if x0 is None else x0.detach().float().cpu().numpy(),
            )
        )

    gen_norm, _ = generate(
        loaded,
        params,
        sampler=cfg.sampler,
        steps=cfg.steps,
        guidance=cfg.guidance,
        eta=cfg.eta,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        physical=False,
        progress=progress,
        precision=cfg.precision,
        clip_x0=cfg.clip_x0,
        on_step=on_step if frame_times else None,
        field_mean=field_mean,
    )
    norm = loaded.normalizer
    gen_phys = gen_norm if norm is None else np.asarray(norm.inverse(gen_norm), np.float32)
    true_norm = true if norm is None else np.asarray(norm.forward(true), np.float32)
    out: dict[str, Any] = {
        "generated": np.asarray(gen_phys, np.float32),
        "generated_norm": np.asarray(gen_norm, np.float32),
        "true": true,
        "true_norm": np.asarray(true_norm, np.float32),
        "params": params,
        "param_names": list(names),
        "indices": idx,
        "kind": s.kind,
        "config": cfg.to_dict(),
        "field_mean": field_mean,
        "field_mean_rule": describe_field_mean(cfg.field_mean, field_mean),
        "step": loaded.step,
        "checkpoint": str(loaded.path),
        "store": str(store),
    }
    if frame_times:
        # Rows evenly spaced in log-SNR λ (not in t): with the shifted schedule structure appears
        # only in the last few hundred steps, so rows at t = 900, 800, … were identical noise.
        # ``frame_times`` sets the number of rows; each row keeps x_t and the denoiser's x̂₀.
        from rho_core.plots import rows_by_log_snr

        starts = sorted(record)
        seen = [t for t, *_ in record[starts[0]]] if starts else []
        lam = (
            loaded.model.schedule.log_snr(torch.as_tensor(seen, dtype=torch.int64)).numpy()
            if seen
            else np.zeros(0)
        )
        cand = [j for j, t in enumerate(seen) if t > 0]  # the final sample is the last row
        n_rows = len([t for t in frame_times if t > 0])
        picks = [cand[i] for i in rows_by_log_snr(lam[cand], n_rows)] if cand else []
        rows = [np.concatenate([record[b][j][1] for b in starts], axis=0) for j in picks]
        have_x0 = bool(starts) and all(record[b][j][2] is not None for b in starts for j in picks)
        x0s = (
            [np.concatenate([record[b][j][2] for b in starts], axis=0) for j in picks]
            if have_x0
            else []
        )
        times = [int(seen[j]) for j in picks]
        lams = [float(lam[j]) for j in picks]
        rows.append(out["generated_norm"])  # t = 0: the final sample
        x0s.append(out["generated_norm"])
        times.append(0)
        lams.append(float("nan"))
        out["frames"] = np.stack(rows).astype(np.float32)
        out["frame_times"] = np.asarray(times, dtype=np.int64)
        out["frame_log_snr"] = np.asarray(lams, dtype=np.float64)
        if have_x0:
            out["frames_x0"] = np.stack(x0s).astype(np.float32)
    return out


def save_draws(draws: Mapping[str, Any], path: str | os.PathLike) -> str:
    """Write :func:`draw_for_scoring`'s arrays to a ``.npz`` (what ``tasks.sampling`` hands on)."""
    import json
    from pathlib import Path

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in draws.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in draws.items() if not isinstance(v, np.ndarray)}
    np.savez_compressed(
        p,
        **arrays,
        param_names=np.asarray(list(draws["param_names"])),
        meta=np.asarray(json.dumps(meta, default=str)),
    )
    return str(p)


def load_draws(path: str | os.PathLike) -> dict[str, Any]:
    """The inverse of :func:`save_draws`."""
    import json

    with np.load(path) as z:
        out = {k: z[k] for k in z.files if k not in ("meta", "param_names")}
        out["param_names"] = [str(n) for n in z["param_names"]]
        if "meta" in z.files:
            meta = json.loads(str(z["meta"]))
            meta.pop("param_names", None)
            out.update(meta)
    return out


def score_draws(draws: Mapping[str, Any]) -> dict[str, Any]:
    """Scores of :func:`draw_for_scoring`'s output; the set is chosen by the store's kind.

    Always, per condition: ``wasserstein`` (normalised space), ``rel_l2`` (physical units) and
    ``power_spectrum`` (when it applies); over conditions their means and, for n ≥ 2,
    ``condition_accuracy``. ``score_set`` says which set leads (``leading``): ``deterministic``
    (rel_l2 + accuracy), ``distribution`` (random fields: the distribution scores of
    ``rho_core.field_stats`` when available) or ``lines`` (spectra).
    """
    from rho_core import metrics

    gen_norm, true_norm = draws["generated_norm"], draws["true_norm"]
    gen_phys, true = draws["generated"], draws["true"]
    names = list(draws["param_names"])
    params = np.asarray(draws["params"])
    spectrum = getattr(metrics, "power_spectrum_error", None)
    per: dict[str, dict[str, float]] = {}
    for k in range(len(gen_norm)):
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
    if len(per) >= 2:
        out["condition_accuracy"] = condition_accuracy(gen_phys, true)
    kind = draws.get("kind")
    which = score_set(kind)
    out.update(_kind_scores(which, draws))
    out["score_set"] = which
    lead: list[str] = []
    for p in LEADING.get(which, ()):  # a key, or a prefix of scalar keys
        if out.get(p) is not None:
            lead.append(p)
        else:
            lead += [k for k in sorted(out) if k.startswith(p) and _scalar(out[k])]
    out["leading"] = lead
    out["n_conditions"] = len(per)
    return out


def _scalar(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _line_scores(draws: Mapping[str, Any]) -> dict[str, Any]:
    """Line recovery of rotational spectra (:mod:`rho_core.spectral_lines`) against each
    condition's true line list (``STORE/lines``), aggregated; keys prefixed ``lines_``."""
    from rho_core.data.rotational import grid_of, read_lines
    from rho_core.spectral_lines import aggregate_scores, line_scores

    store = draws["store"]
    grid = grid_of(store)
    per = [
        line_scores(draws["generated"][k], draws["true"][k], read_lines(store, int(i)), grid)
        for k, i in enumerate(draws["indices"])
    ]
    return {f"lines_{k}": v for k, v in aggregate_scores(per).items()}


def _kind_scores(which: str, draws: Mapping[str, Any]) -> dict[str, Any]:
    """Extra scores of the stochastic and spectral sets, from their modules when they exist."""
    # --- gaussian_random_field hook (distribution scores; rho_core.field_stats) ---
    if which == "distribution":
        try:
            from rho_core import field_stats
        except ImportError:
            return {"score_note": "distribution scores need rho_core.field_stats"}
        fn = getattr(field_stats, "evaluation_scores", None)
        if fn is None:
            return {"score_note": "rho_core.field_stats has no evaluation_scores(draws)"}
        return dict(fn(draws))
    # --- end gaussian_random_field hook ---
    if which == "lines":
        if not draws.get("store") or "indices" not in draws:
            return {"score_note": "line scores need the store and the sample indices"}
        return _line_scores(draws)
    return {}


def evaluate(
    checkpoint: str | os.PathLike,
    store: str | os.PathLike,
    config: Any = None,
    *,
    progress: Callable[[int], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Score a checkpoint on a store's conditions; returns a JSON-serialisable dict.

    ``config``: :class:`rho_core.config.EvalConfig` (or its dict); keyword ``overrides`` its
    keys (``sampler``, ``steps``, ``guidance``, ``seed``, ``max_conditions``, ``batch_size``,
    ``device``, ``precision``, ``clip_x0``, ``eta``, ``field_mean``). :func:`draw_for_scoring` then
    :func:`score_draws` — the same two functions the Prefect tasks run.

    Returns:
        ``{"per_condition": {label: {"wasserstein", "rel_l2", "power_spectrum"?}},
        "wasserstein_mean", "rel_l2_mean", ("power_spectrum_mean"), ("condition_accuracy"),
        "score_set", "leading", "n_conditions", "sampler", "steps", "guidance", "seed",
        "clip_x0", "field_mean", "field_mean_rule", "checkpoint", "store", "step"}``.

    Raises:
        ConfigError: the store's parameters or field shape differ from the model's.
    """
    if "max_conditions" in overrides and overrides["max_conditions"] is None:
        overrides["max_conditions"] = 0  # evaluate(max_conditions=None) has always meant "all"
    draws = draw_for_scoring(checkpoint, store, config, progress=progress, **overrides)
    out = score_draws(draws)
    cfg = draws["config"]
    out.update(
        {
            "sampler": cfg["sampler"],
            "steps": int(cfg["steps"]),
            "guidance": float(cfg["guidance"]),
            "seed": int(cfg["seed"]),
            "clip_x0": cfg["clip_x0"],
            "field_mean": draws["field_mean"],
            "field_mean_rule": draws["field_mean_rule"],
            "checkpoint": draws["checkpoint"],
            "store": draws["store"],
            "step": draws["step"],
        }
    )
    return out

"""Prefect tasks: draw conditioned samples from a checkpoint, and score them against the store.

``sample_conditions`` picks ``K`` conditions evenly spread over the store's samples, draws one
generated field per condition with the chosen sampler, and records the denoising trajectory at
t = 900, 800, …, 0 through the sampler's callback (for the Fig. 1 grid). It writes one ``.npz``
and returns its path:

==================  =======================  ==============================================
key                 shape                    meaning
==================  =======================  ==============================================
``generated``       ``(K, C, *spatial)``     generated fields, physical units
``generated_norm``  ``(K, C, *spatial)``     the same in the normalised space
``true``            ``(K, C, *spatial)``     the store's fields for those conditions
``true_norm``       ``(K, C, *spatial)``     normalised
``params``          ``(K, P)`` float64       condition rows, columns ``param_names``
``frames``          ``(R, K, C, *spatial)``  x_t at the recorded times (normalised space)
``frame_times``     ``(R,)`` int             the diffusion step of each frame row
==================  =======================  ==============================================

``evaluate_samples`` computes per-condition ``wasserstein`` (1-D W₁ of the value distributions
in the normalised space, the paper's score) and ``rel_l2`` = ‖gen − true‖₂ / ‖true‖₂ (physical),
plus their means, and writes ``metrics.json`` beside the samples.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

GRID_TIMES = (900, 800, 700, 600, 500, 400, 300, 200, 100, 0)


def _logger():
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def condition_label(names, row) -> str:
    """``"l=2,m=-1"``: the label ``rho evaluate`` uses (``rho_core.evaluation``)."""
    from rho_core.evaluation import condition_label as label

    return label(list(names), [float(v) for v in row])


def _frame_rows(times_seen: list[int], targets: tuple[int, ...]) -> dict[int, int]:
    """Map each target time to the index of the callback step whose t is nearest to it."""
    rows: dict[int, int] = {}
    seen = np.asarray(times_seen)
    for target in targets:
        rows[target] = int(np.argmin(np.abs(seen - target)))
    return rows


@task(name="sample", task_run_name="sample {sampler}×{steps}")
def sample_conditions(
    checkpoint: str,
    store: str,
    out: str,
    n_conditions: int = 4,
    sampler: str = "ddim",
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 1,
    device: str = "cpu",
    clip_x0: float | None = None,
) -> str:
    """Draw one sample per chosen condition; write ``out`` (``.npz``) and return its path.

    ``clip_x0`` clips the sampler's x̂₀ estimate to ±clip_x0 at every step (``None``: off). An
    ε-model that is not yet accurate at the noisiest steps (ᾱ ≈ 10⁻⁵ near t = T under the
    cosine schedule) otherwise turns small ε errors into x̂₀ values of order 100.
    """
    import torch

    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.store import open_store
    from rho_core.samplers import sample

    logger = _logger()
    loaded = load_for_sampling(checkpoint, device=device)
    model, norm = loaded.model, loaded.normalizer
    s = open_store(store)
    from rho_core.evaluation import distinct_conditions

    idx = distinct_conditions(np.asarray(s.params), n_conditions)
    true, params = s.read_batch(idx)
    true = np.asarray(true, dtype=np.float32)
    params = np.asarray(params, dtype=np.float64)
    true_norm = norm.forward(true) if norm is not None else true
    shape = (len(idx), *true.shape[1:])
    dev = next(model.parameters()).device
    cond = torch.as_tensor(params, dtype=torch.float64, device=dev)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    snaps: list[np.ndarray] = []
    times: list[int] = []

    def callback(info: dict[str, Any]) -> None:
        t = info["t"]
        t = int(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else int(t)
        times.append(t)
        snaps.append(info["x_t"].detach().float().cpu().numpy())

    logger.info(
        "sampling %d condition(s) with %s, %d steps, guidance %g",
        len(idx),
        sampler,
        steps,
        guidance,
    )
    from tasks.paths import torch_thread_limit

    with torch.no_grad(), torch_thread_limit():
        x0 = sample(
            model.denoiser,
            shape,
            model.schedule,
            method=sampler,
            steps=int(steps),
            cond=cond,
            guidance=float(guidance),
            generator=gen,
            callback=callback,
            clip_x0=clip_x0,
        )
    gen_norm = x0.detach().float().cpu().numpy()
    generated = norm.inverse(gen_norm) if norm is not None else gen_norm

    frames, frame_times = [], []
    rows = _frame_rows(times, GRID_TIMES[:-1]) if times else {}
    for target in GRID_TIMES[:-1]:
        if target in rows:
            frames.append(snaps[rows[target]])
            frame_times.append(target)
    frames.append(gen_norm)  # t = 0: the final sample
    frame_times.append(0)

    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_path,
        generated=np.asarray(generated, dtype=np.float32),
        generated_norm=gen_norm.astype(np.float32),
        true=true,
        true_norm=np.asarray(true_norm, dtype=np.float32),
        params=params,
        param_names=np.asarray(list(s.param_names)),
        indices=idx,
        frames=np.stack(frames).astype(np.float32),
        frame_times=np.asarray(frame_times, dtype=np.int64),
    )
    logger.info("samples written to %s", out_path)
    return str(out_path)


def score_samples(samples: str) -> dict[str, Any]:
    """Per-condition and mean ``wasserstein`` / ``rel_l2`` for a samples ``.npz``."""
    from rho_core import metrics

    z = np.load(samples)
    names = [str(n) for n in z["param_names"]]
    spectrum = getattr(metrics, "power_spectrum_error", None)
    per: dict[str, dict[str, float]] = {}
    for k in range(z["generated"].shape[0]):
        label = condition_label(names, z["params"][k])
        per[label] = {
            "wasserstein": float(metrics.wasserstein(z["generated_norm"][k], z["true_norm"][k])),
            "rel_l2": float(metrics.rel_l2(z["generated"][k], z["true"][k])),
        }
        if spectrum is not None:
            try:
                per[label]["power_spectrum"] = float(spectrum(z["generated"][k], z["true"][k]))
            except (ValueError, RuntimeError):
                pass
    w = [v["wasserstein"] for v in per.values()]
    r = [v["rel_l2"] for v in per.values()]
    out = {
        "per_condition": per,
        "wasserstein_mean": float(np.mean(w)),
        "rel_l2_mean": float(np.mean(r)),
        "n_conditions": len(per),
    }
    ps = [v["power_spectrum"] for v in per.values() if "power_spectrum" in v]
    if ps:
        out["power_spectrum_mean"] = float(np.mean(ps))
    return out


@task(name="evaluate", task_run_name="evaluate {samples}")
def evaluate_samples(samples: str) -> dict[str, Any]:
    """Score ``samples``; writes ``metrics.json`` beside it and returns the scores (+ its path)."""
    logger = _logger()
    scores = score_samples(samples)
    path = Path(samples).with_name("metrics.json")
    path.write_text(json.dumps(scores, indent=2))
    scores["path"] = str(path)
    logger.info(
        "scores over %d condition(s): wasserstein %.4f, rel_l2 %.4f",
        scores["n_conditions"],
        scores["wasserstein_mean"],
        scores["rel_l2_mean"],
    )
    return scores

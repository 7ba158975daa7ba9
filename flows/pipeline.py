"""End-to-end flows: ``pipeline`` (data → train → sample + score → figures → MLflow) and
``retrain`` (the same on an existing store, the nightly deployment).

``params.dataset`` picks the data: ``spherical_harmonics``, ``hydrogen``, ``galaxy_merger``
(built-in simulations), ``bonsai`` (existing Bonsai snapshots), ``gaussian_random_field`` or
``rotational_spectrum``;
each starts from its preset (:func:`flows.params.preset_params`; for 32³ spherical harmonics the
sh32-refine recipe with a 60-minute budget). ``pipeline(quick=True)`` is the README's main job:
a small spherical-harmonic set (16³, l ≤ 2), a small 3-D U-Net, a few hundred steps, a fast
DDIM sampler — a few minutes on 2 CPU cores.
The result (also printed) says where to look: the MLflow run id and URL, the registered model
version, whether it became the ``champion``, and the local folders.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from flows.evaluate import evaluate
from flows.params import PipelineParams, resolve
from flows.spherical_harmonics import spherical_harmonics
from flows.train import new_run_dir, train
from tasks.data import require_store
from tasks.reports import publish_report
from tasks.tracking import end_run, log_training_run, open_training_run


def dataset_section(p: PipelineParams):
    """The parameters of the chosen dataset (the section of ``p`` that builds its store)."""
    return {
        "spherical_harmonics": p.data,
        "hydrogen": p.hydrogen,
        "galaxy_merger": p.galaxy_merger,
        "bonsai": p.bonsai,
        "gaussian_random_field": p.random_field,
        "rotational_spectrum": p.rotational,
    }[p.dataset]


def make_store(p: PipelineParams, logger) -> str:
    """Generate, simulate or ingest the chosen dataset (cached); returns the store path."""
    section = dataset_section(p)
    logger.info("[1/4] data: %s %s", p.dataset, section.model_dump() if section else {})
    if p.dataset == "spherical_harmonics":
        return spherical_harmonics(p.data)
    if p.dataset == "hydrogen":
        from flows.datasets import hydrogen

        return hydrogen(p.hydrogen)
    if p.dataset == "gaussian_random_field":
        from flows.datasets import gaussian_random_field

        return gaussian_random_field(p.random_field)
    if p.dataset == "rotational_spectrum":
        from flows.datasets import rotational_spectrum

        return rotational_spectrum(p.rotational)
    from flows.galaxy_merger import galaxy_merger, ingest_bonsai

    if p.dataset == "galaxy_merger":
        return galaxy_merger(p.galaxy_merger)
    return ingest_bonsai(p.bonsai)


def _train_evaluate_track(store: str, p: PipelineParams, logger, generated: bool) -> dict[str, Any]:
    """Shared tail of both flows: train, evaluate, log to MLflow; returns the summary.

    ``generated``: the store came from ``p.data`` (so its parameters are logged too).
    """
    from rho_core.data.store import open_store

    s = open_store(store)
    kind = s.kind
    run_dir = new_run_dir(kind, p.runs_dir)
    logger.info("[2/4] training %s (%d steps) -> %s", kind, p.train.steps, run_dir)
    # The MLflow run opens before training so loss/lr/samples/s can be watched live.
    mlflow_run = open_training_run(kind, p.run_name, run_dir, store, p.train.steps)
    try:  # any failure until the run is logged marks it FAILED (it would stay RUNNING)
        trained, ev, tracked = _train_score_log(store, s, p, logger, run_dir, mlflow_run, generated)
    except BaseException:
        end_run(mlflow_run, "FAILED")
        raise
    inference = tracked.pop("inference", None)
    result = {
        "store": store,
        "run_dir": run_dir,
        "checkpoint": trained["checkpoint"],
        "samples": ev["samples"],
        "figures": ev["figures"],
        "wasserstein_mean": ev["scores"]["wasserstein_mean"],
        "rel_l2_mean": ev["scores"]["rel_l2_mean"],
        "condition_accuracy": ev["scores"].get("condition_accuracy"),
        "score_set": ev["scores"].get("score_set"),
        "leading_scores": {k: ev["scores"][k] for k in ev["scores"].get("leading", [])},
        "dataset": p.dataset,
        "params": p.model_dump(mode="json"),
        "train_steps": trained.get("step"),
        "train_samples_per_s": trained.get("samples_per_s"),
        **{f"mlflow_{k}": v for k, v in tracked.items()},
    }
    if inference is not None:
        result["inference"] = inference
    publish_report(result, ev["scores"])  # Prefect artifacts: report, scores table, figures
    return result


def _train_score_log(store, s, p: PipelineParams, logger, run_dir, mlflow_run, generated: bool):
    """Train, score and log into the already open MLflow run ``mlflow_run``; returns
    ``(trained, evaluation, tracked)``."""
    kind = s.kind
    trained = train(store=store, model=p.model, training=p.train, run_dir=run_dir)
    if not trained.get("checkpoint"):
        from rho_core.errors import CheckpointError

        raise CheckpointError(f"training wrote no checkpoint in {run_dir}")
    logger.info("[3/4] sampling ≤ %s condition(s) and scoring", p.evaluate.max_conditions or "all")
    ev = evaluate(
        checkpoint=trained["checkpoint"],
        store=store,
        evaluation=p.evaluate,
        out_dir=str(Path(run_dir) / "eval"),
        history=trained.get("history"),
    )
    logger.info("[4/4] logging to MLflow")  # (then [5/5] parameter inference when on)
    section = dataset_section(p) if generated else None
    config = {
        "data": {
            **({"dataset": p.dataset, **section.model_dump()} if section else {}),
            "store": store,
            "kind": kind,
            "n": s.n,
            "field_shape": list(s.field_shape),
        },
        "model": trained["model_config"],
        "train": p.train.model_dump(),
        "evaluate": p.evaluate.model_dump(),
        "normalization": s.normalization or {},
    }
    tracked = log_training_run(
        kind,
        p.run_name,
        config,
        dict(s.provenance or {}),
        trained,
        ev["scores"],
        ev["figures"],
        ev["samples"],
        trained["checkpoint"],
        p.register_model,
        run_id=mlflow_run,
    )
    if p.infer.active(p.dataset):
        tracked["inference"] = _infer(store, s, trained["checkpoint"], p, logger, run_dir,
                                      tracked.get("run_id") or mlflow_run)  # fmt: skip
    return trained, ev, tracked


def _infer(store, s, checkpoint, p: PipelineParams, logger, run_dir, run_id) -> dict[str, Any]:
    """Parameter inference of ``p.infer.fields`` observed fields (tasks.inference), each logged
    into the MLflow run ``run_id`` (``infer/field<i>/…``) with the aggregate ``infer/…``.

    Optional: a failure is logged (and tagged ``infer.error`` on the run) but does not fail the
    pipeline, whose model is already trained, scored and registered."""
    from tasks import tracking
    from tasks.inference import (
        aggregate_metrics,
        auto_grid,
        infer_field,
        log_inference,
        observed_fields,
        write_outputs,
    )  # fmt: skip

    q = p.infer
    try:
        obs, indices, what = observed_fields(s, q.fields, seed=0)
        grids = auto_grid(s, points=q.points)
        options = {"method": q.method}
        if q.method == "elbo":
            options["samples"] = q.samples
        logger.info(
            "[5/5] parameter inference (%s) on %s, grid %s",
            q.method, what, {n: [float(a[0]), float(a[-1]), a.size] for n, a in grids},
        )  # fmt: skip
        infs = []
        for k, i in enumerate(indices):
            inf = infer_field(checkpoint, obs, i, grids, options=options, batch_size=16,
                              note=logger.info, zoom=q.zoom, whiten=q.whiten,
                              zoom_nodes=q.zoom_nodes, temperature=q.temperature)  # fmt: skip
            out = Path(run_dir) / "infer" / f"field{k}"
            write_outputs(inf, out)
            if run_id:
                log_inference(run_id, inf.meta, out, prefix=f"infer/field{k}")
            for n, r in inf.meta["posterior"].items():
                exact = (
                    f", exact {r['exact_mean']:.4g} ± {r['exact_std']:.3g}"
                    if "exact_mean" in r
                    else ""
                )
                logger.info("  field %d: %s %.4g ± %.3g (true %s%s)", k, n, r["mean"], r["std"],
                            f"{r['true']:.4g}" if "true" in r else "?", exact)  # fmt: skip
            infs.append(inf)
        agg = aggregate_metrics(infs)
        if run_id and agg:
            tracking.log_metrics(run_id, agg)
        return {"observed": obs, "fields": len(infs), "metrics": agg,
                "dir": str(Path(run_dir) / "infer")}  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - optional step: say why, keep the trained model
        logger.warning("parameter inference failed (%s: %s); the trained model is kept",
                       type(exc).__name__, exc)  # fmt: skip
        if run_id:
            tracking.set_tags(run_id, {"infer.error": f"{type(exc).__name__}: {exc}"[:500]})
        return {"error": f"{type(exc).__name__}: {exc}"}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable 'where to look' lines for a pipeline result."""
    acc = result.get("condition_accuracy")
    lead = {
        k: v
        for k, v in (result.get("leading_scores") or {}).items()
        if k not in ("rel_l2_mean", "wasserstein_mean", "condition_accuracy")
    }
    lines = [
        f"scores ({result.get('score_set') or 'deterministic'} set): rel_l2 "
        f"{result['rel_l2_mean']:.4f}, wasserstein {result['wasserstein_mean']:.4f} (mean over "
        f"conditions), condition accuracy {'n/a' if acc is None else f'{acc:.2f}'}"
        + ("; leading: " + ", ".join(f"{k} {v:.4g}" for k, v in lead.items()) if lead else ""),
        f"MLflow run {result['mlflow_run_id']} in experiment {result['mlflow_experiment']}"
        f" ({result['mlflow_tracking_uri']})",
    ]
    if result.get("mlflow_model_version"):
        champ = "now the champion" if result.get("mlflow_champion") else "champion unchanged"
        lines.append(
            f"model {result['mlflow_model_name']} version {result['mlflow_model_version']} "
            f"({champ})"
        )
    inf = result.get("inference")
    if inf and inf.get("error"):
        lines.append(f"parameter inference failed: {inf['error']}")
    elif inf:
        agg = inf.get("metrics") or {}
        what = ", ".join(f"{k.removeprefix('infer/')} {v:.3g}" for k, v in sorted(agg.items()))
        lines.append(f"parameter inference on {inf['fields']} field(s): {what or 'done'}; "
                     f"posteriors in {inf['dir']}")  # fmt: skip
    lines += [
        f"open it: `rho ui`, then {result['mlflow_url']}",
        f"store {result['store']}",
        f"run folder {result['run_dir']} (figures in eval/figures, samples in eval/samples.npz)",
    ]
    return lines


@flow(name="pipeline", log_prints=True)
def pipeline(
    params: PipelineParams = PipelineParams(),  # noqa: B008
    quick: bool = False,
) -> dict[str, Any]:
    """Data (the chosen dataset) → normalisation → training → samples + scores → figures → MLflow.

    Fields changed in ``params`` override the dataset's preset (``quick`` or the full recipe).

    Args:
        params: Dataset, data, model, training and evaluation settings (changed fields count).
        quick: Start from the quick preset (small data, small model, 300 steps: CPU minutes).
    """
    logger = get_run_logger()
    t0 = time.monotonic()
    p = resolve(params, quick)
    logger.info(
        "running %s (%s): train %s; evaluate %s",
        p.dataset,
        "quick preset" if quick else "full preset",
        p.train.model_dump(),
        p.evaluate.model_dump(),
    )
    store = make_store(p, logger)
    result = _train_evaluate_track(store, p, logger, generated=True)
    result["elapsed_s"] = time.monotonic() - t0
    for line in summary_lines(result):
        logger.info(line)
    return result


@flow(name="retrain", log_prints=True)
def retrain(
    store: str | None = None,
    params: PipelineParams = PipelineParams(),  # noqa: B008
    quick: bool = False,
) -> dict[str, Any]:
    """Retrain on the current contents of ``store`` and promote the model if it scores better.

    Args:
        store: Store to train on; default the store of the chosen dataset (params.dataset).
        params: Model, training and evaluation settings (only the fields you set count).
        quick: Start from the quick preset (small model, 300 steps).
    """
    logger = get_run_logger()
    t0 = time.monotonic()
    p = resolve(params, quick)
    generated = store is None
    if generated:
        store = make_store(p, logger)
    require_store(store)
    result = _train_evaluate_track(store, p, logger, generated=generated)
    result["elapsed_s"] = time.monotonic() - t0
    for line in summary_lines(result):
        logger.info(line)
    return result

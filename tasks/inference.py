"""MLflow logging of parameter inference (``rho infer``): the posterior summary of one observed
field as metrics, the grid and settings as params, the table / summary / plot as artifacts.

rho_core knows nothing of MLflow; ``rho infer --mlflow-run RUN_ID`` (or the pipeline, with the
run it has open) calls :func:`log_inference` after writing its output directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks import tracking

__all__ = ["inference_metrics", "log_inference"]


def inference_metrics(meta: Mapping[str, Any], prefix: str = "infer") -> dict[str, float]:
    """Flat metrics of a ``summary.json`` document (``rho infer --out``): per grid parameter
    ``{prefix}/{name}/mean``, ``std``, ``map``, ``ci68_lo`` … ``ci95_hi``, ``edge_mass`` and, when
    the observed store recorded it, ``true`` and ``pit``; plus ``{prefix}/nfe``,
    ``{prefix}/seconds``."""
    out: dict[str, float] = {}
    for name, s in meta.get("posterior", {}).items():
        base = f"{prefix}/{name}"
        for key in ("mean", "std", "map", "edge_mass", "true", "pit"):
            if key in s and s[key] is not None:
                out[f"{base}/{key}"] = float(s[key])
        for lv in ("ci68", "ci95"):
            if lv in s:
                out[f"{base}/{lv}_lo"] = float(s[lv][0])
                out[f"{base}/{lv}_hi"] = float(s[lv][1])
    for key in ("nfe", "seconds"):
        if key in meta:
            out[f"{prefix}/{key}"] = float(meta[key])
    return out


def log_inference(
    run_id: str, meta: Mapping[str, Any], out_dir: str | Path | None = None, prefix: str = "infer"
) -> dict[str, float]:
    """Log one inference into the MLflow run ``run_id``; returns the metrics logged.

    Params (under ``{prefix}.``): checkpoint step, observed store and index, method and its
    settings, the grid, the prior. Artifacts (``{prefix}/``): every file of ``out_dir``
    (posterior.csv, summary.json, posterior.png), else the summary as JSON.
    """
    metrics = inference_metrics(meta, prefix)
    tracking.log_metrics(run_id, metrics, step=int(meta.get("step") or 0))
    params = {
        "step": meta.get("step"),
        "observed": meta.get("observed"),
        "index": meta.get("index"),
        "method": meta.get("method"),
        "settings": meta.get("settings", {}),
        "grid": {k: f"{v[0]:g}:{v[1]:g}:{v[2]}" for k, v in meta.get("grid", {}).items()},
        "prior": {k: ":".join(str(x) for x in v) for k, v in meta.get("prior", {}).items()},
    }
    tracking.log_params(run_id, {prefix: params})
    if out_dir is not None and Path(out_dir).is_dir():
        tracking.log_artifact(run_id, out_dir, artifact_path=prefix)
    else:
        tracking.log_dict(run_id, dict(meta), f"{prefix}/summary.json")
    return metrics

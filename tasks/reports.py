"""Prefect artifacts of a pipeline run: a markdown report, a scores table, figures, progress.

Every artifact gets a *key*, so besides the flow run's Artifacts tab it is listed (with its
history of versions, one per run) on the Artifacts page of the Prefect UI:

==========================  ==========  ===================================================
key                         type        content
==========================  ==========  ===================================================
``<kind>-report``           markdown    scores table, champion decision, MLflow run link,
                                        the figures (linked), local folders
``<kind>-scores``           table       one row per condition: condition, wasserstein, rel_l2
``<kind>-fig-<name>``       image       ``denoising`` / ``slices`` / ``loss`` figure
``<kind>-training-progress``  progress  training step / total, updated while training
==========================  ==========  ===================================================

``<kind>`` is the dataset kind with ``_`` turned into ``-`` (keys allow only lowercase letters,
digits and dashes).

Images: a Prefect image artifact is a URL the browser loads; Prefect stores no files. The figures
are served by the MLflow server as run artifacts (``/get-artifact?path=figures/…&run_uuid=…``),
so the images show whenever the MLflow UI of ``rho ui`` (or the tracking server) is running; the
report also gives each figure's local path. (A ``file://`` URL would not load in a browser page
served over http.)

The markdown is built by pure functions (:func:`report_markdown`), tested without Prefect.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key from ``parts``: lowercase, ``[a-z0-9-]``, joined by ``-``.

    ``artifact_key("spherical_harmonics", "report")`` -> ``"spherical-harmonics-report"``.
    """
    text = "-".join(str(p) for p in parts if p)
    text = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    return re.sub(r"-{2,}", "-", text).strip("-") or "rho"


def _in_run_context() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def scores_rows(scores: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-condition rows ``{"condition", <score>: value, ...}`` of an evaluation's scores."""
    return [
        {"condition": cond, **{k: float(v) for k, v in vals.items()}}
        for cond, vals in (scores.get("per_condition") or {}).items()
    ]


def markdown_table(rows: list[Mapping[str, Any]]) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (columns from the first row)."""
    if not rows:
        return "_no rows_"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def report_markdown(
    result: Mapping[str, Any],
    scores: Mapping[str, Any],
    figure_urls: Mapping[str, str] | None = None,
) -> str:
    """The markdown report of one pipeline run.

    ``result``: the pipeline's summary (``store``, ``run_dir``, ``mlflow_*`` keys, ``train_steps``,
    ``train_samples_per_s``, ``elapsed_s``, ``mlflow_figure_urls``); ``scores``: the
    evaluation's scores;
    ``figure_urls``: ``{name: url}`` of the figures.
    """
    kind = result.get("kind") or result.get("mlflow_experiment", "rho")
    lines = [f"# ρ-Diffusion run — {kind}", ""]
    w, r = scores.get("wasserstein_mean"), scores.get("rel_l2_mean")
    lines += [
        f"**Mean over {scores.get('n_conditions', '?')} conditions:** wasserstein "
        f"{_fmt(w)}, rel_l2 {_fmt(r)} (lower is better).",
        "",
    ]
    if result.get("mlflow_model_version"):
        champ = result.get("mlflow_champion")
        decision = (
            "**became the champion**" if champ else "did not beat the champion (alias unchanged)"
        )
        lines += [
            f"**Model:** `{result.get('mlflow_model_name')}` version "
            f"{result.get('mlflow_model_version')} {decision}. Load it without pickle: "
            f"`rho model sample --model models:/{result.get('mlflow_model_name')}@champion "
            "--params '{...}' --out x.npz`",
            "",
        ]
    if result.get("mlflow_url"):
        lines += [
            f"**MLflow run:** [{result.get('mlflow_run_id')}]({result['mlflow_url']}) "
            f"(experiment `{result.get('mlflow_experiment')}`, tracking "
            f"`{result.get('mlflow_tracking_uri')}`; open with `rho ui`).",
            "",
        ]
    train_bits = []
    if result.get("train_steps") is not None:
        train_bits.append(f"{result['train_steps']} steps")
    if result.get("train_samples_per_s"):
        train_bits.append(f"{result['train_samples_per_s']:.1f} samples/s")
    if result.get("elapsed_s"):
        train_bits.append(f"pipeline {result['elapsed_s']:.0f} s")
    if train_bits:
        lines += ["**Training:** " + ", ".join(train_bits) + ".", ""]
    lines += ["## Scores per condition", "", markdown_table(scores_rows(scores)), ""]
    figs = dict(result.get("figures") or {})
    if figs or figure_urls:
        lines += ["## Figures", ""]
        for name in sorted(set(figs) | set(figure_urls or {})):
            url = (figure_urls or {}).get(name)
            local = figs.get(name)
            if url:
                lines.append(f"![{name}]({url})")
                lines.append("")
            where = f"[{name}]({url})" if url else name
            lines.append(f"- {where}" + (f" — local file `{local}`" if local else ""))
        lines.append("")
    lines += [
        "## Where things are",
        "",
        f"- store `{result.get('store')}`",
        f"- run folder `{result.get('run_dir')}`",
    ]
    return "\n".join(lines) + "\n"


def publish_report(result: Mapping[str, Any], scores: Mapping[str, Any]) -> dict[str, str]:
    """Create the report, scores-table and figure artifacts of a pipeline run; key -> id.

    Needs a Prefect flow or task run (else returns ``{}``). Never raises: a report that cannot be
    published is a warning, not a failed pipeline.
    """
    if not _in_run_context():
        return {}
    try:
        return _publish(result, scores)
    except Exception as exc:  # noqa: BLE001
        log.warning("Prefect report artifacts not published: %s", exc)
        return {}


def _publish(result: Mapping[str, Any], scores: Mapping[str, Any]) -> dict[str, str]:
    from prefect.artifacts import (
        create_image_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    kind = str(result.get("kind") or str(result.get("mlflow_experiment", "rho"))[4:] or "rho")
    # URLs of the figures on the MLflow server (tasks.tracking.record_run gives them).
    urls: dict[str, str] = dict(result.get("mlflow_figure_urls") or {})
    ids: dict[str, str] = {}
    for name, url in urls.items():
        key = artifact_key(kind, "fig", name)
        ids[key] = str(
            create_image_artifact(
                url, key=key, description=f"{name} figure (served by the MLflow server)"
            )
        )
    key = artifact_key(kind, "scores")
    rows = scores_rows(scores)
    if rows:
        ids[key] = str(
            create_table_artifact(
                rows, key=key, description="Scores per condition (lower is better)"
            )
        )
    key = artifact_key(kind, "report")
    ids[key] = str(
        create_markdown_artifact(
            report_markdown({**result, "kind": kind}, scores, urls),
            key=key,
            description=f"ρ-Diffusion {kind} run: scores, champion decision, MLflow link",
        )
    )
    return ids


def training_progress(
    fraction: float, artifact_id: Any = None, key: str | None = None
) -> Any | None:
    """Create (``artifact_id=None``) or update a progress artifact at ``fraction`` ∈ [0, 1].

    Returns the artifact id to pass next time; ``None`` outside a Prefect run.
    """
    if not _in_run_context():
        return None
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    pct = max(0.0, min(100.0, 100.0 * float(fraction)))
    if artifact_id is None:
        return create_progress_artifact(
            pct, key=artifact_key(key or "training-progress"), description="Training progress"
        )
    update_progress_artifact(artifact_id, pct)
    return artifact_id

"""The one module that talks to MLflow: tracking location, experiments, runs, logging, registry.

Everything else in the project (tasks, flows, CLI) goes through these functions, so the tracking
location is decided in exactly one place and lazily: nothing here touches MLflow at import time.

Location. ``MLFLOW_TRACKING_URI`` when set, else the embedded default
``sqlite:///<repo>/data/mlflow.db``. Artifacts go to an explicit ``artifact_location`` per
experiment — beside a SQLite database (``<db dir>/mlartifacts/<experiment>``), or under
``RHO_MLFLOW_ARTIFACTS`` when set — never to ``./mlruns`` of whichever process happened to create
the experiment.

Experiments: one per dataset kind, named ``rho-<kind>`` (``rho-spherical_harmonics``, ...).
Models: registered as ``rho-<kind>``; the alias ``champion`` moves to a new version only when
:func:`should_promote` says its mean score beats the current champion's (lower is better: the
scores are distances).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAMPION_ALIAS = "champion"
#: Metric the champion decision is based on (lower is better).
PROMOTION_METRIC = "wasserstein_mean"
#: MLflow rejects param values longer than this; longer values are truncated with a marker.
_MAX_PARAM_LEN = 6000
_PIP_REQUIREMENTS = ("torch", "numpy")


# --------------------------------------------------------------------------------------------
# Location
# --------------------------------------------------------------------------------------------
def default_tracking_uri() -> str:
    """The embedded default: a SQLite database at ``<repo>/data/mlflow.db``."""
    return f"sqlite:///{REPO_ROOT / 'data' / 'mlflow.db'}"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set (non-empty), else :func:`default_tracking_uri`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or ``None`` for any other scheme."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def artifact_root(uri: str | None = None) -> Path | None:
    """Folder under which experiments keep their artifacts, or ``None`` to let the server decide.

    ``RHO_MLFLOW_ARTIFACTS`` wins; for a SQLite URI it is ``mlartifacts/`` beside the database;
    for a remote server (http/https) the server's own artifact configuration applies.
    """
    env = os.environ.get("RHO_MLFLOW_ARTIFACTS")
    if env:
        return Path(env).resolve()
    db = _sqlite_path(uri or tracking_uri())
    return db.parent / "mlartifacts" if db is not None else None


def configure() -> str:
    """Point the MLflow client (tracking and registry) at :func:`tracking_uri`; return the URI.

    Creates the database's folder for the SQLite default so a fresh checkout works.
    """
    import mlflow

    uri = tracking_uri()
    db = _sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client():
    """A configured :class:`mlflow.MlflowClient`."""
    from mlflow import MlflowClient

    uri = configure()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_name(kind: str) -> str:
    """Experiment (and registered model) name for a dataset kind: ``rho-<kind>``."""
    return f"rho-{kind}"


def ensure_experiment(kind: str) -> str:
    """Experiment id for ``kind``, creating it with an explicit artifact location if needed."""
    c = client()
    name = experiment_name(kind)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root()
    location = None
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        location = (root / name).as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# --------------------------------------------------------------------------------------------
# Runs and logging
# --------------------------------------------------------------------------------------------
def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Flatten nested mappings (and dataclasses) to ``{"a.b.c": "value"}`` strings for params.

    Lists and tuples are JSON-encoded as one value; ``None`` becomes ``"None"``.
    """
    from dataclasses import asdict, is_dataclass

    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
            continue
        if isinstance(value, (list, tuple)):
            text = json.dumps(value, default=str)
        elif isinstance(value, Path):
            text = str(value)
        else:
            text = str(value)
        if len(text) > _MAX_PARAM_LEN:
            text = text[: _MAX_PARAM_LEN - 14] + "...[truncated]"
        out[name] = text
    return out


def start_run(kind: str, run_name: str | None = None, tags: Mapping[str, str] | None = None) -> str:
    """Create a run in the experiment for ``kind``; returns its run id (the run stays open)."""
    c = client()
    exp_id = ensure_experiment(kind)
    run = c.create_run(exp_id, run_name=run_name, tags=dict(tags or {}))
    log.info("MLflow run %s in experiment %s", run.info.run_id, experiment_name(kind))
    return run.info.run_id


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Close a run with status ``FINISHED`` | ``FAILED`` | ``KILLED``."""
    client().set_terminated(run_id, status=status)


def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    """Log a (possibly nested) mapping as flattened params, in batches MLflow accepts."""
    from mlflow.entities import Param

    flat = flatten(params)
    items = [Param(k, v) for k, v in sorted(flat.items())]
    c = client()
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i : i + 100])


def safe_name(name: str) -> str:
    """A metric/param name MLflow accepts: characters outside ``[A-Za-z0-9_-. :/]`` become ``_``.

    ``"wasserstein/l=1,m=-1"`` -> ``"wasserstein/l_1_m_-1"``.
    """
    import re

    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", str(name))


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log scalar metrics at one step (non-finite values skipped with a warning; names made safe
    with :func:`safe_name`)."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = []
    for k, v in metrics.items():
        v = float(v)
        if not math.isfinite(v):
            log.warning("metric %s is %s; not logged", k, v)
            continue
        rows.append(Metric(safe_name(k), v, now, int(step)))
    c = client()
    for i in range(0, len(rows), 1000):
        c.log_batch(run_id, metrics=rows[i : i + 1000])


def log_history(run_id: str, history: Iterable[Mapping[str, float]]) -> int:
    """Log curves from rows ``{"step": s, "loss": ..., "lr": ..., "samples_per_s": ...}``.

    Every key except ``step`` becomes a metric series indexed by ``step``; returns the row count.
    """
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows: list[Metric] = []
    n = 0
    for row in history:
        n += 1
        step = int(row.get("step", n))
        for k, v in row.items():
            if k == "step" or v is None:
                continue
            v = float(v)
            if math.isfinite(v):
                rows.append(Metric(safe_name(k), v, now, step))
    c = client()
    for i in range(0, len(rows), 1000):
        c.log_batch(run_id, metrics=rows[i : i + 1000])
    return n


def log_artifact(run_id: str, local_path: str | os.PathLike, artifact_path: str | None = None):
    """Copy a file or a whole directory (e.g. a Zarr store) into the run's artifacts."""
    p = Path(local_path)
    c = client()
    if p.is_dir():
        dest = artifact_path if artifact_path is not None else p.name
        c.log_artifacts(run_id, str(p), artifact_path=dest)
    else:
        c.log_artifact(run_id, str(p), artifact_path=artifact_path)


def log_figure(run_id: str, figure, artifact_file: str) -> None:
    """Save a matplotlib ``Figure`` as ``artifact_file`` (e.g. ``figures/slices.png``)."""
    client().log_figure(run_id, figure, artifact_file)


def log_dict(run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
    """Save a JSON-serialisable mapping as an artifact."""
    client().log_dict(run_id, dict(data), artifact_file)


def set_tags(run_id: str, tags: Mapping[str, Any]) -> None:
    c = client()
    for k, v in tags.items():
        c.set_tag(run_id, k, str(v))


@dataclass(frozen=True)
class LoggedModel:
    """Where a logged model lives: its URI, the registered name and version (as a string)."""

    model_uri: str
    name: str
    version: str


def tensor_signature(inputs: Sequence[tuple[str, Any, tuple[int, ...]]], output):
    """Build an MLflow tensor signature from ``(name, numpy dtype, shape)`` triples.

    ``-1`` in a shape marks a variable dimension (the batch). ``output`` is one such triple.
    """
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    ins = Schema([TensorSpec(np.dtype(dt), tuple(shape), name) for name, dt, shape in inputs])
    oname, odt, oshape = output
    outs = Schema([TensorSpec(np.dtype(odt), tuple(oshape), oname)])
    return ModelSignature(inputs=ins, outputs=outs)


def log_model(
    run_id: str,
    model,
    input_example: tuple,
    signature,
    registered_name: str,
    extra_files: Sequence[str] | None = None,
    serialization: str = "pt2",
) -> LoggedModel:
    """Log ``model`` (an ``nn.Module``) with ``mlflow.pytorch`` and register it.

    The default ``pt2`` format (``torch.export``) traces ``model.forward`` on ``input_example``
    (a tuple of tensors with batch ≥ 2 so the batch dimension stays dynamic). If export fails
    (a network ``torch.export`` cannot trace), or ``serialization="pickle"`` is asked for (models
    whose forward runs plain Python on tensor values, such as the SHA-512 hash conditioning),
    the model is logged as a (cloud)pickle; the run is tagged ``model_format``.
    """
    import mlflow
    import mlflow.pytorch

    configure()
    for t in input_example:
        assert t.shape[0] >= 2, "input_example needs batch >= 2 (pt2 freezes a batch of 1)"
    kwargs = dict(
        name="model",
        input_example=input_example,
        signature=signature,
        pip_requirements=list(_PIP_REQUIREMENTS),
        registered_model_name=registered_name,
        extra_files=list(extra_files) if extra_files else None,
    )
    with mlflow.start_run(run_id=run_id, nested=False):
        info = None
        if serialization == "pt2":
            try:
                info = mlflow.pytorch.log_model(model, serialization_format="pt2", **kwargs)
                fmt = "pt2"
            except Exception as exc:  # torch.export limitations; fall back deliberately
                log.warning("pt2 export failed (%s); logging the model as a pickle", exc)
        if info is None:
            info = mlflow.pytorch.log_model(
                model, serialization_format="pickle", **{**kwargs, "input_example": None}
            )
            fmt = "pickle"
        mlflow.set_tag("model_format", fmt)
    version = str(info.registered_model_version)
    return LoggedModel(model_uri=info.model_uri, name=registered_name, version=version)


# --------------------------------------------------------------------------------------------
# Champion alias
# --------------------------------------------------------------------------------------------
def should_promote(new: float | None, current: float | None) -> bool:
    """Whether a model with mean score ``new`` should replace the champion scoring ``current``.

    Scores are distances (lower is better). Promote when there is no champion yet
    (``current is None`` or non-finite) and the new score is finite, or when ``new < current``
    strictly — a tie keeps the incumbent, and a NaN/inf/missing new score never wins.
    """
    if new is None or not math.isfinite(new):
        return False
    if current is None or not math.isfinite(current):
        return True
    return new < current


def champion_score(name: str, metric: str = PROMOTION_METRIC) -> tuple[str | None, float | None]:
    """(version, score) of the current ``champion`` of registered model ``name``; Nones if none."""
    c = client()
    try:
        mv = c.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except Exception:
        return None, None
    score = None
    if mv.run_id:
        value = c.get_run(mv.run_id).data.metrics.get(metric)
        score = float(value) if value is not None else None
    return str(mv.version), score


def promote_if_better(name: str, version: str, score: float | None) -> bool:
    """Move the ``champion`` alias of ``name`` to ``version`` if :func:`should_promote`."""
    current_version, current = champion_score(name)
    if not should_promote(score, current):
        log.info(
            "champion stays at version %s (%s = %s, new %s)",
            current_version,
            PROMOTION_METRIC,
            current,
            score,
        )
        return False
    client().set_registered_model_alias(name, CHAMPION_ALIAS, str(version))
    log.info("champion alias -> %s version %s (%s = %s)", name, version, PROMOTION_METRIC, score)
    return True


# --------------------------------------------------------------------------------------------
# Pointers for people
# --------------------------------------------------------------------------------------------
def run_url(run_id: str, ui_base: str = "http://127.0.0.1:5000") -> str:
    """Where a run shows in the MLflow UI started by ``rho ui`` (or at ``ui_base``)."""
    c = client()
    exp_id = c.get_run(run_id).info.experiment_id
    return f"{ui_base}/#/experiments/{exp_id}/runs/{run_id}"


# --------------------------------------------------------------------------------------------
# The Prefect task that records one training run
# --------------------------------------------------------------------------------------------
def _eps_module(model):
    """Wrap a ``DiffusionModel`` as an ``nn.Module`` with ``forward(x_t, t, params) -> eps``."""
    import torch

    class EpsModel(torch.nn.Module):
        """The trained denoiser as MLflow serves it: ε̂ = f(x_t, t, params)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x_t, t, params):
            return self.inner.denoiser(x_t, t, params)

    return EpsModel(model).eval()


def record_run(
    kind: str,
    run_name: str | None,
    config: Mapping[str, Any],
    provenance: Mapping[str, Any],
    train_summary: Mapping[str, Any],
    scores: Mapping[str, Any],
    figures: Mapping[str, str],
    samples: str,
    checkpoint: str,
    register: bool = True,
) -> dict[str, Any]:
    """Log one training run end to end; returns ``run_id``, model version, champion flag, URL.

    Params: the flattened ``config`` plus ``data.provenance.*``. Metrics: the curves in
    ``train_summary["history"]`` (loss, lr, samples_per_s by step), per-condition
    ``wasserstein/<cond>`` and ``rel_l2/<cond>``, their means (``wasserstein_mean``,
    ``rel_l2_mean``) and plain ``wasserstein`` / ``rel_l2`` (= the means). Artifacts: figures,
    the samples file, ``metrics.json``, the training ``config.json``. Model: the EMA denoiser via
    ``mlflow.pytorch`` with a tensor signature, registered as ``rho-<kind>``; ``champion`` moves
    if :func:`should_promote`. A failure marks the run FAILED and re-raises.
    """
    import numpy as np
    import torch

    run_id = start_run(kind, run_name=run_name, tags={"rho.kind": kind})
    try:
        log_params(
            run_id,
            {
                **dict(config),
                "data": {
                    **dict(config.get("data", {})),
                    "provenance": dict(provenance),
                },
            },
        )
        hist = train_summary.get("history")
        if hist and Path(hist).is_file():
            log_history(run_id, json.loads(Path(hist).read_text()))
            log_artifact(run_id, hist, "training")
        cfg_json = Path(train_summary.get("run_dir", "")) / "config.json"
        if cfg_json.is_file():
            log_artifact(run_id, cfg_json, "training")
        flat: dict[str, float] = {}
        for cond, vals in scores.get("per_condition", {}).items():
            for metric, v in vals.items():
                flat[f"{metric}/{cond}"] = v
        flat["wasserstein_mean"] = scores["wasserstein_mean"]
        flat["rel_l2_mean"] = scores["rel_l2_mean"]
        if scores.get("power_spectrum_mean") is not None:
            flat["power_spectrum_mean"] = scores["power_spectrum_mean"]
        flat["wasserstein"] = scores["wasserstein_mean"]
        flat["rel_l2"] = scores["rel_l2_mean"]
        if train_summary.get("samples_per_s"):
            flat["train_samples_per_s"] = float(train_summary["samples_per_s"])
        log_metrics(run_id, flat, step=int(train_summary.get("step") or 0))
        for name, path in figures.items():
            log_artifact(run_id, path, "figures")
            log.debug("figure %s logged", name)
        log_artifact(run_id, samples, "samples")
        if scores.get("path"):
            log_artifact(run_id, scores["path"], "samples")

        result: dict[str, Any] = {"run_id": run_id, "experiment": experiment_name(kind)}
        if register:
            from rho_core.checkpoint import load_for_sampling

            loaded = load_for_sampling(checkpoint, device="cpu")
            z = np.load(samples)
            k = max(2, min(4, z["generated_norm"].shape[0]))
            x = np.resize(z["generated_norm"], (k, *z["generated_norm"].shape[1:]))
            p = np.resize(z["params"], (k, z["params"].shape[1]))
            example = (
                torch.from_numpy(x.astype(np.float32)),
                torch.arange(1, k + 1, dtype=torch.int64) * 10,
                torch.from_numpy(p.astype(np.float64)),
            )
            field = tuple(x.shape[1:])
            sig = tensor_signature(
                [
                    ("x_t", "float32", (-1, *field)),
                    ("t", "int64", (-1,)),
                    ("params", "float64", (-1, p.shape[1])),
                ],
                ("eps", "float32", (-1, *field)),
            )
            name = experiment_name(kind)
            # The hash conditioning hashes parameter values in Python: torch.export cannot
            # trace it, so such models go straight to the pickle format.
            hashed = loaded.model_config.conditioning.kind == "hash"
            logged = log_model(
                run_id,
                _eps_module(loaded.model),
                example,
                sig,
                name,
                serialization="pickle" if hashed else "pt2",
            )
            result.update(
                model_name=logged.name, model_version=logged.version, model_uri=logged.model_uri
            )
            result["champion"] = promote_if_better(
                logged.name, logged.version, scores["wasserstein_mean"]
            )
        end_run(run_id, "FINISHED")
    except BaseException:
        end_run(run_id, "FAILED")
        raise
    result["tracking_uri"] = tracking_uri()
    result["url"] = run_url(run_id)
    return result


def _make_task():
    from prefect import task

    return task(name="log-to-mlflow", retries=1, retry_delay_seconds=3)(record_run)


#: Prefect task form of :func:`record_run` (one retry: a locked SQLite database or an
#: unreachable tracking server can be transient; a retry starts a fresh run).
log_training_run = _make_task()

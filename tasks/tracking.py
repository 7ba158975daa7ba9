"""The one module that talks to MLflow: tracking location, experiments, runs, logging, registry.

Everything else in the project (tasks, flows, CLI) goes through these functions, so the tracking
location is decided in exactly one place and lazily: nothing here touches MLflow at import time.

Location. ``MLFLOW_TRACKING_URI`` when set, else the embedded default
``sqlite:///<repo>/data/mlflow.db``. Artifacts go to an explicit ``artifact_location`` per
experiment — beside a SQLite database (``<db dir>/mlartifacts/<experiment>``), or under
``RHO_MLFLOW_ARTIFACTS`` when set — never to ``./mlruns`` of whichever process happened to create
the experiment.

Experiments: one per dataset kind, named ``rho-<kind>`` (``rho-spherical_harmonics``, ...),
tagged for the UI's model-development view, with a description; the SQLite ``Default``
experiment is kept off ``./mlruns``.

Runs: opened before training (:func:`open_run`: Prefect flow-run tags, the store as a dataset
input, system metrics, live training metrics through :func:`live_hook`), finished by
:func:`record_run` (params, mean scores, the per-condition scores table, figures, samples, model).

Models: a pickle-free pyfunc (:func:`log_pyfunc_model`: a :mod:`rho_core.packaging` bundle +
:mod:`tasks.rho_pyfunc` as code + ``rho_core`` as a code path) registered as ``rho-<kind>``; the
alias ``champion`` moves to a new version only when :func:`should_promote` says its mean score
beats the current champion's (lower is better: the scores are distances). :func:`load_model`
loads one by URI with project code only.
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


#: Experiment tag the MLflow UI reads to choose its view: model development shows Runs, Models
#: and metric charts (instead of the GenAI view with traces and an assistant panel).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The experiment's description in the UI is the ``mlflow.note.content`` tag (markdown).
DESCRIPTION_TAG = "mlflow.note.content"


def experiment_description(kind: str) -> str:
    """Markdown shown on the experiment page."""
    return (
        f"ρ-Diffusion models trained on **{kind}** stores: one run per training job "
        "(`rho pipeline`, the `pipeline`/`retrain` Prefect flows).\n\n"
        "- Metrics: live `loss`, `lr`, `samples_per_s` while training; `wasserstein_mean`, "
        "`rel_l2_mean` after scoring (lower is better); system metrics.\n"
        "- Per-condition scores: the `scores/per_condition.json` table (Artifacts, Evaluation).\n"
        "- Dataset: the store (path, shapes, parameter ranges, content fingerprint) as input.\n"
        f"- Model: registered as `{experiment_name(kind)}`, alias `champion` = best mean "
        "Wasserstein. Load without pickle: "
        f"`rho model sample --model models:/{experiment_name(kind)}@champion --params '{{...}}'`."
    )


_DEFAULT_FIXED: set[str] = set()


def _fix_default_experiment(uri: str) -> None:
    """Point the SQLite database's ``Default`` experiment (id 0) at our artifact root.

    MLflow creates it with ``./mlruns/0`` of whichever process first opened the database (the
    repository root, typically), so anything logged there would land in the source tree. Only
    rewritten while that experiment holds no runs. Done once per process and URI.
    """
    db = _sqlite_path(uri)
    root = artifact_root(uri)
    if db is None or root is None or uri in _DEFAULT_FIXED or not db.is_file():
        return
    import sqlite3

    want = (root / "0").as_uri()
    try:
        con = sqlite3.connect(db, timeout=30)
        with con:
            row = con.execute(
                "SELECT artifact_location FROM experiments WHERE experiment_id = 0"
            ).fetchone()
            if row is not None and row[0] != want:
                runs = con.execute("SELECT COUNT(*) FROM runs WHERE experiment_id = 0").fetchone()
                if runs[0] == 0:
                    con.execute(
                        "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                        (want,),
                    )
                    log.info("Default experiment now stores artifacts at %s", want)
        con.close()
    except sqlite3.Error as exc:  # never fatal: it only affects the unused Default experiment
        log.warning("could not relocate the Default experiment's artifacts: %s", exc)
    _DEFAULT_FIXED.add(uri)


def ensure_experiment(kind: str) -> str:
    """Experiment id for ``kind``, created with an explicit artifact location if needed.

    The experiment is tagged for the model-development view (:data:`EXPERIMENT_KIND`) with a
    description; an older experiment without these tags gets them.
    """
    c = client()
    name = experiment_name(kind)
    exp = c.get_experiment_by_name(name)
    _fix_default_experiment(tracking_uri())
    if exp is None:
        root = artifact_root()
        location = None
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
            location = (root / name).as_uri()
        tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, DESCRIPTION_TAG: experiment_description(kind)}
        try:
            return c.create_experiment(name, artifact_location=location, tags=tags)
        except Exception:  # created concurrently by another process
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if EXPERIMENT_KIND_TAG not in exp.tags:
        c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if DESCRIPTION_TAG not in exp.tags:
        c.set_experiment_tag(exp.experiment_id, DESCRIPTION_TAG, experiment_description(kind))
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


def prefect_context() -> dict[str, str]:
    """Tags naming the Prefect flow run this process is in (empty outside a flow run).

    ``prefect.flow_run_id``, ``prefect.flow_run_name``, ``prefect.flow_name`` and
    ``prefect.flow_run_url`` (the UI page; ``PREFECT_UI_URL`` or the local ``rho ui`` address).
    """
    try:
        from prefect.runtime import flow_run
    except ImportError:  # pragma: no cover - prefect is a dependency
        return {}
    run_id = flow_run.id
    if not run_id:
        return {}
    # prefect.runtime's ui_url (3.9) points at /flow-runs/flow-run/<id>, a page the UI does not
    # have; the UI's own links (and the "View at" log line) use /runs/flow-run/<id>.
    base = prefect_ui_base()
    ui = flow_run.ui_url
    if ui and "/flow-runs/" in ui:
        base = ui.split("/flow-runs/")[0]
    url = f"{base}/runs/flow-run/{run_id}"
    return {
        "prefect.flow_run_id": str(run_id),
        "prefect.flow_run_name": str(flow_run.name),
        "prefect.flow_name": str(flow_run.flow_name),
        "prefect.flow_run_url": str(url),
    }


def prefect_ui_base() -> str:
    """The Prefect UI's base URL: ``PREFECT_UI_URL`` if set, else ``rho ui``'s default."""
    try:
        from prefect.settings import PREFECT_UI_URL

        value = PREFECT_UI_URL.value()
    except Exception:  # noqa: BLE001
        value = None
    return str(value or "http://127.0.0.1:4200").rstrip("/")


def start_run(kind: str, run_name: str | None = None, tags: Mapping[str, str] | None = None) -> str:
    """Create a run in the experiment for ``kind``; returns its run id (the run stays open).

    The run is tagged with ``rho.kind`` and, inside a Prefect flow run, :func:`prefect_context`.
    """
    c = client()
    exp_id = ensure_experiment(kind)
    all_tags = {"rho.kind": kind, **prefect_context(), **dict(tags or {})}
    run = c.create_run(exp_id, run_name=run_name, tags=all_tags)
    log.info("MLflow run %s in experiment %s", run.info.run_id, experiment_name(kind))
    return run.info.run_id


#: System-metrics monitors by run id (started by :func:`open_run`, stopped by :func:`end_run`).
_MONITORS: dict[str, Any] = {}
SYSTEM_METRICS_INTERVAL_S = 5.0


def start_system_metrics(run_id: str, interval_s: float = SYSTEM_METRICS_INTERVAL_S) -> bool:
    """Log CPU/memory/disk/network use (``system/...`` metrics) every ``interval_s`` seconds.

    Uses MLflow's monitor (psutil; GPU metrics where a GPU library is present). Works offline
    against any tracking URI. Returns whether it started (``RHO_SYSTEM_METRICS=0`` turns it off).
    """
    if os.environ.get("RHO_SYSTEM_METRICS", "1") in ("0", "false", "no") or run_id in _MONITORS:
        return False
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=interval_s, samples_before_logging=1, tracking_uri=configure()
        )
        monitor.start()
    except Exception as exc:  # noqa: BLE001 - optional: never fail a run for it
        log.warning("system metrics not logged: %s", exc)
        return False
    _MONITORS[run_id] = monitor
    return True


def stop_system_metrics(run_id: str) -> None:
    monitor = _MONITORS.pop(run_id, None)
    if monitor is not None:
        try:
            monitor.finish()
        except Exception as exc:  # noqa: BLE001
            log.warning("system metrics monitor did not stop cleanly: %s", exc)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Close a run with status ``FINISHED`` | ``FAILED`` | ``KILLED`` (stops its monitor)."""
    stop_system_metrics(run_id)
    client().set_terminated(run_id, status=status)


# --------------------------------------------------------------------------------------------
# Live metrics during training
# --------------------------------------------------------------------------------------------
LIVE_MARKER = "mlflow_run.json"
#: The metrics a training callback reports that are logged live.
LIVE_KEYS = ("loss", "lr", "samples_per_s", "grad_norm")


def attach_live_run(
    run_dir: str | os.PathLike, run_id: str, total_steps: int | None = None, kind: str = ""
) -> None:
    """Mark ``run_dir`` so :func:`live_hook` streams its training metrics into ``run_id``."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    info = {
        "run_id": run_id,
        "tracking_uri": tracking_uri(),
        "total_steps": total_steps,
        "kind": kind,
    }
    (d / LIVE_MARKER).write_text(json.dumps(info))


class LiveLogger:
    """``callback(step, metrics)`` for the training loop: logs :data:`LIVE_KEYS` to MLflow.

    Rows are buffered and sent at most every ``min_interval_s`` seconds (and at ``flush``), so a
    fast loop is not slowed by the database; a failure to log is a warning, never an error.
    Inside a Prefect task run it also keeps a progress artifact (``<key>``) at step / total.
    """

    def __init__(
        self,
        run_id: str,
        total_steps: int | None = None,
        min_interval_s: float = 2.0,
        progress_key: str | None = None,
    ) -> None:
        import time

        self.run_id = run_id
        self.total_steps = total_steps
        self.min_interval_s = float(min_interval_s)
        self.progress_key = progress_key
        self._rows: list[dict[str, float]] = []
        self._last = time.monotonic()
        self._progress_id = None
        self._failed = False
        self.logged = 0

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> None:
        import time

        row = {"step": int(step)}
        for k in LIVE_KEYS:
            v = metrics.get(k)
            if v is not None:
                row[k] = float(v)
        self._rows.append(row)
        done = self.total_steps is not None and step >= self.total_steps
        if done or time.monotonic() - self._last >= self.min_interval_s:
            self.flush(step)

    def flush(self, step: int | None = None) -> None:
        import time

        self._last = time.monotonic()
        rows, self._rows = self._rows, []
        if rows and not self._failed:
            try:
                self.logged += log_history(self.run_id, rows)
            except Exception as exc:  # noqa: BLE001 - live curves are a convenience
                self._failed = True
                log.warning(
                    "live MLflow metrics stopped (%s); the curves are logged at the end", exc
                )
        if step is not None and self.total_steps:
            self._progress(min(1.0, step / self.total_steps))

    def _progress(self, fraction: float) -> None:
        try:
            from tasks import reports

            self._progress_id = reports.training_progress(
                fraction, self._progress_id, key=self.progress_key
            )
        except Exception as exc:  # noqa: BLE001
            log.debug("progress artifact not updated: %s", exc)


def live_hook(run_dir: str | os.PathLike) -> LiveLogger | None:
    """The live logger for ``run_dir`` if :func:`attach_live_run` marked it, else ``None``.

    Only the process that marked it (same tracking URI) streams; a marker from another tracking
    location is ignored.
    """
    p = Path(run_dir) / LIVE_MARKER
    if not p.is_file():
        return None
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if info.get("tracking_uri") != tracking_uri():
        return None
    kind = str(info.get("kind") or "training")
    return LiveLogger(
        info["run_id"], info.get("total_steps"), progress_key=f"{kind}-training-progress"
    )


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


def log_scores_table(run_id: str, scores: Mapping[str, Any]) -> str:
    """Per-condition scores as one MLflow table (``scores/per_condition.json``), not as one
    single-point chart per condition. Columns: ``condition``, then each score. Returns the
    artifact path."""
    import pandas as pd

    rows = [
        {"condition": cond, **{k: float(v) for k, v in vals.items()}}
        for cond, vals in scores.get("per_condition", {}).items()
    ]
    path = "scores/per_condition.json"
    client().log_table(run_id, pd.DataFrame(rows), path)
    return path


# --------------------------------------------------------------------------------------------
# The store as a dataset input
# --------------------------------------------------------------------------------------------
def store_fingerprint(store) -> str:
    """Content fingerprint of a :class:`rho_core.data.store.Store`.

    The store's own ``fingerprint`` (from its chunk checksums) when it records one; otherwise a
    SHA-256 of its metadata (kind, shapes, parameter names, normalisation), its whole parameter
    table and its first and last fields — cheap, and it changes when samples are added,
    removed or re-normalised.
    """
    import hashlib

    import numpy as np

    own = getattr(store, "fingerprint", None)
    if isinstance(own, str) and own:
        return own
    h = hashlib.sha256()
    meta = {
        "kind": store.kind,
        "n": int(store.n),
        "field_shape": list(store.field_shape),
        "param_names": list(store.param_names),
        "normalization": store.normalization,
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(store.params, dtype=np.float64).tobytes())
    if store.n:
        for i in sorted({0, store.n - 1}):
            h.update(np.ascontiguousarray(store.fields[i], dtype=np.float32).tobytes())
    return h.hexdigest()


def store_profile(store) -> dict[str, Any]:
    """What the MLflow dataset panel shows for a store: counts, shapes, parameter ranges."""
    ranges = store.param_ranges()
    return {
        "kind": store.kind,
        "n_samples": int(store.n),
        "field_shape": list(store.field_shape),
        "spatial_dims": int(store.spatial_dims),
        "param_names": list(store.param_names),
        "param_ranges": {k: [float(v[0]), float(v[1])] for k, v in ranges.items()},
        "normalization": (store.normalization or {}).get("transform", "none"),
    }


def log_store_input(run_id: str, store_path: str | os.PathLike, context: str = "training") -> str:
    """Log a Zarr store as the run's dataset input; returns its digest (the fingerprint).

    MLflow shows it under Datasets used: name = the store folder's name, source = its path,
    digest = :func:`store_fingerprint` (truncated to 16 hex digits, MLflow's digest length),
    schema = ``fields`` and ``params`` tensors, profile = :func:`store_profile`.
    """
    import warnings

    import numpy as np
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types import Schema, TensorSpec

    from rho_core.data.store import open_store

    s = open_store(store_path)
    path = str(Path(store_path).resolve())
    fingerprint = store_fingerprint(s)
    profile = {**store_profile(s), "path": path, "fingerprint": fingerprint}

    class StoreDataset(MetaDataset):
        @property
        def profile(self):
            return profile

        def to_dict(self):
            return {**super().to_dict(), "profile": json.dumps(profile)}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two registered local sources: same meaning
        source = resolve_dataset_source(path)
    schema = Schema(
        [
            TensorSpec(np.dtype("float32"), (-1, *s.field_shape), "fields"),
            TensorSpec(np.dtype("float64"), (-1, len(s.param_names)), "params"),
        ]
    )
    ds = StoreDataset(source, name=Path(path).name, digest=fingerprint[:16], schema=schema)
    tags = [InputTag("mlflow.data.context", context)]
    client().log_inputs(run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags=tags)])
    set_tags(run_id, {"rho.store": path, "rho.store_fingerprint": fingerprint})
    return fingerprint


# --------------------------------------------------------------------------------------------
# The model: a pickle-free pyfunc (weights + JSON, code pinned)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoggedModel:
    """Where a logged model lives: its URI, the registered name and version (as a string)."""

    model_uri: str
    name: str
    version: str


#: The "models from code" file MLflow stores with the model and runs on load (no pickle).
PYFUNC_CODE = Path(__file__).with_name("rho_pyfunc.py")


def pip_requirements() -> list[str]:
    """The model's requirements, pinned to the versions it was logged with."""
    from importlib.metadata import version

    out = []
    for name in ("torch", "numpy", "pandas", "mlflow"):
        v = version(name).split("+")[0]
        out.append(f"{name}=={v}")
    return out


def pyfunc_signature(meta: Mapping[str, Any]):
    """Signature of the pyfunc: a parameter table in, ``(rows*n, C, *spatial)`` float32 out,
    with inference params ``n``, ``steps``, ``sampler``, ``seed``, ``guidance``."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    sampling = meta.get("sampling") or {}
    ins = Schema([ColSpec("double", name) for name in meta["param_names"]])
    outs = Schema([TensorSpec(np.dtype("float32"), (-1, *meta["field_shape"]), "fields")])
    params = ParamSchema(
        [
            ParamSpec("n", "long", 1),
            ParamSpec("steps", "long", int(sampling.get("steps", 50))),
            ParamSpec("sampler", "string", str(sampling.get("sampler", "ddim"))),
            ParamSpec("seed", "long", 0),
            ParamSpec("guidance", "double", float(sampling.get("guidance", 1.0))),
        ]
    )
    return ModelSignature(inputs=ins, outputs=outs, params=params)


def _example_rows(meta: Mapping[str, Any], rows: Sequence[Mapping[str, float]] | None):
    import pandas as pd

    if rows:
        return pd.DataFrame([dict(r) for r in rows[:2]])
    names = meta["param_names"]
    ranges = meta.get("param_ranges") or {}
    lo = [float((ranges.get(n) or [0.0, 0.0])[0]) for n in names]
    return pd.DataFrame([dict(zip(names, lo, strict=True))])


def log_pyfunc_model(
    run_id: str,
    bundle_dir: str | os.PathLike,
    registered_name: str | None,
    *,
    example_rows: Sequence[Mapping[str, float]] | None = None,
    description: str | None = None,
    version_tags: Mapping[str, Any] | None = None,
) -> LoggedModel:
    """Log a model bundle (:mod:`rho_core.packaging`) as an MLflow pyfunc; register it.

    Pickle-free: the model is :mod:`tasks.rho_pyfunc` logged as code, its artifact the bundle
    (tensors-only ``weights.pt`` + ``model.json``), ``rho_core`` as a code path (so loading needs
    no checkout of this repository), pip requirements pinned, a signature and an input example
    (the example's inference params use 2 sampler steps, so logging stays quick). The version gets
    ``description`` and ``version_tags`` (e.g. the scores).
    """
    import shutil
    import tempfile

    import mlflow
    import mlflow.pyfunc

    from rho_core.packaging import read_meta

    configure()
    meta = read_meta(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="rho-code-") as tmp:
        code = Path(tmp) / "rho_core"
        shutil.copytree(
            REPO_ROOT / "rho_core", code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        example = (_example_rows(meta, example_rows), {"n": 1, "steps": 2})
        with mlflow.start_run(run_id=run_id, nested=False):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={"bundle": str(bundle_dir)},
                code_paths=[str(code)],
                signature=pyfunc_signature(meta),
                input_example=example,
                pip_requirements=pip_requirements(),
                registered_model_name=registered_name,
                metadata={
                    "rho_format": meta["format"],
                    "rho_format_version": meta["format_version"],
                    "param_names": meta["param_names"],
                    "field_shape": meta["field_shape"],
                },
            )
            mlflow.set_tag("model_format", "pyfunc-bundle (weights_only, no pickle)")
    version = str(info.registered_model_version) if registered_name else ""
    if registered_name:
        c = client()
        if description:
            c.update_model_version(registered_name, version, description=description)
        for k, v in (version_tags or {}).items():
            c.set_model_version_tag(registered_name, version, safe_name(k), str(v))
        rm = c.get_registered_model(registered_name)
        if not rm.description:
            c.update_registered_model(registered_name, description=model_description(meta))
    return LoggedModel(model_uri=info.model_uri, name=registered_name or "", version=version)


def model_description(meta: Mapping[str, Any]) -> str:
    """Markdown for a registered model: what it takes, what it returns, how to load it safely."""
    names = ", ".join(f"`{n}`" for n in meta["param_names"])
    example = json.dumps({n: 1 for n in meta["param_names"]})
    return (
        f"ρ-Diffusion model for **{meta.get('kind')}** fields of shape "
        f"`{tuple(meta['field_shape'])}` (C, *spatial), conditioned on {names}.\n\n"
        "A pickle-free pyfunc: weights (tensors only, `torch.load(weights_only=True)`) + JSON "
        "config, `rho_core` pinned as code. `predict` takes a table with one column per parameter "
        "and params `n`, `steps`, `sampler`, `seed`, `guidance`; it returns fields in physical "
        "units, `(rows*n, C, *spatial)`.\n\n"
        f"`rho model sample --model models:/<name>@champion --params '{example}' --out x.npz`"
    )


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
def ui_base() -> str:
    """Where the MLflow UI is: ``RHO_MLFLOW_UI``, the tracking server itself for an http(s)
    tracking URI, else ``rho ui``'s default ``http://127.0.0.1:5000``."""
    env = os.environ.get("RHO_MLFLOW_UI")
    if env:
        return env.rstrip("/")
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return "http://127.0.0.1:5000"


def run_url(run_id: str, ui_base_url: str | None = None, experiment_id: str | None = None) -> str:
    """Where a run shows in the MLflow UI (model-development view)."""
    base = (ui_base_url or ui_base()).rstrip("/")
    exp_id = experiment_id or client().get_run(run_id).info.experiment_id
    return f"{base}/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning"


def artifact_url(run_id: str, path: str, ui_base_url: str | None = None) -> str:
    """A URL that serves one run artifact (e.g. ``figures/slices.png``) from the MLflow server."""
    from urllib.parse import urlencode

    base = (ui_base_url or ui_base()).rstrip("/")
    return f"{base}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"


# --------------------------------------------------------------------------------------------
# The Prefect tasks that record one training run
# --------------------------------------------------------------------------------------------
def open_run(
    kind: str,
    run_name: str | None = None,
    run_dir: str | None = None,
    store: str | None = None,
    total_steps: int | None = None,
) -> str:
    """Open the MLflow run of a training job *before* training; returns its run id.

    Tags it with the Prefect flow run, logs ``store`` as its dataset input, starts system
    metrics, and marks ``run_dir`` so the training loop streams ``loss``/``lr``/``samples_per_s``
    live (:func:`live_hook`). :func:`record_run` with ``run_id=`` finishes it.
    """
    run_id = start_run(kind, run_name=run_name)
    try:
        if store:
            log_store_input(run_id, store)
        if run_dir:
            attach_live_run(run_dir, run_id, total_steps, kind=kind)
        start_system_metrics(run_id)
    except BaseException:
        end_run(run_id, "FAILED")
        raise
    return run_id


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
    run_id: str | None = None,
) -> dict[str, Any]:
    """Finish (or create) the run of one training job; returns ``run_id``, model version,
    champion flag, URLs.

    ``run_id``: the run :func:`open_run` opened before training (else a new run is created, and
    the store in ``config["data"]["store"]`` is logged as its dataset input).

    Params: the flattened ``config`` plus ``data.provenance.*``. Metrics: the curves of
    ``train_summary["history"]`` (loss, lr, samples_per_s by step; already there when streamed
    live), the means ``wasserstein_mean``, ``rel_l2_mean`` (and plain ``wasserstein``/``rel_l2``).
    Per-condition scores: one table, ``scores/per_condition.json``. Artifacts: figures, the
    samples file, ``metrics.json``, the training ``config.json``. Model: a pickle-free pyfunc
    (:func:`log_pyfunc_model`) registered as ``rho-<kind>`` with a description, tags and scores;
    ``champion`` moves if :func:`should_promote`. A failure marks the run FAILED and re-raises.
    """
    import numpy as np

    store = (config.get("data") or {}).get("store")
    if run_id is None:
        run_id = start_run(kind, run_name=run_name)
        if store:
            try:
                log_store_input(run_id, store)
            except Exception as exc:  # noqa: BLE001 - the dataset panel is informative only
                log.warning("store not logged as a dataset input: %s", exc)
    else:
        set_tags(run_id, prefect_context())
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
            logged = {m.step for m in client().get_metric_history(run_id, "loss")}
            rows = [r for r in json.loads(Path(hist).read_text()) if r.get("step") not in logged]
            log_history(run_id, rows)
            log_artifact(run_id, hist, "training")
        cfg_json = Path(train_summary.get("run_dir", "")) / "config.json"
        if cfg_json.is_file():
            log_artifact(run_id, cfg_json, "training")
        flat: dict[str, float] = {
            "wasserstein_mean": scores["wasserstein_mean"],
            "rel_l2_mean": scores["rel_l2_mean"],
            "wasserstein": scores["wasserstein_mean"],
            "rel_l2": scores["rel_l2_mean"],
        }
        if scores.get("power_spectrum_mean") is not None:
            flat["power_spectrum_mean"] = scores["power_spectrum_mean"]
        if train_summary.get("samples_per_s"):
            flat["train_samples_per_s"] = float(train_summary["samples_per_s"])
        log_metrics(run_id, flat, step=int(train_summary.get("step") or 0))
        if scores.get("per_condition"):
            log_scores_table(run_id, scores)
        note = _version_description(kind, config, scores, train_summary)
        flow_url = prefect_context().get("prefect.flow_run_url")
        if flow_url:
            note += f" Prefect flow run: [{flow_url}]({flow_url})."
        set_tags(run_id, {DESCRIPTION_TAG: note})  # the run's Description in the UI
        for name, path in figures.items():
            log_artifact(run_id, path, "figures")
            log.debug("figure %s logged", name)
        log_artifact(run_id, samples, "samples")
        if scores.get("path"):
            log_artifact(run_id, scores["path"], "samples")

        result: dict[str, Any] = {"run_id": run_id, "experiment": experiment_name(kind)}
        if register:
            import tempfile

            from rho_core.packaging import bundle_from_checkpoint

            z = np.load(samples)
            names = [str(n) for n in z["param_names"]]
            rows = [dict(zip(names, map(float, r), strict=True)) for r in z["params"][:2]]
            ranges = {}
            if store:
                from rho_core.data.store import open_store

                ranges = {k: list(v) for k, v in open_store(store).param_ranges().items()}
            score_tags = {k: f"{v:.6g}" for k, v in flat.items() if k.endswith("_mean")}
            with tempfile.TemporaryDirectory(prefix="rho-bundle-") as tmp:
                bundle = bundle_from_checkpoint(
                    checkpoint,
                    Path(tmp) / "bundle",
                    param_ranges=ranges,
                    sampling=_sampling_defaults(config),
                    extra={"scores": score_tags, "mlflow_run_id": run_id},
                )
                name = experiment_name(kind)
                logged = log_pyfunc_model(
                    run_id,
                    bundle,
                    name,
                    example_rows=rows,
                    description=_version_description(kind, config, scores, train_summary),
                    version_tags={
                        **score_tags,
                        "train_steps": train_summary.get("step"),
                        "store": store,
                        "prefect_flow_run_id": prefect_context().get("prefect.flow_run_id", ""),
                    },
                )
            result.update(
                model_name=logged.name, model_version=logged.version, model_uri=logged.model_uri
            )
            result["champion"] = promote_if_better(
                logged.name, logged.version, scores["wasserstein_mean"]
            )
            set_tags(run_id, {"rho.champion": result["champion"]})
        end_run(run_id, "FINISHED")
    except BaseException:
        end_run(run_id, "FAILED")
        raise
    result["tracking_uri"] = tracking_uri()
    result["url"] = run_url(run_id)
    result["figure_urls"] = {
        name: artifact_url(run_id, f"figures/{Path(path).name}") for name, path in figures.items()
    }
    return result


def _sampling_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation's sampler settings become the model's defaults."""
    ev = dict(config.get("evaluate") or {})
    out: dict[str, Any] = {}
    if ev.get("sampler"):
        out["sampler"] = str(ev["sampler"])
    if ev.get("steps"):
        out["steps"] = int(ev["steps"])
    if ev.get("guidance") is not None:
        out["guidance"] = float(ev["guidance"])
    return out


def _version_description(kind, config, scores, train_summary) -> str:
    """Markdown for a model version (and its run): what it was trained on, how it scored."""
    ev = dict(config.get("evaluate") or {})
    store = (config.get("data") or {}).get("store")
    return (
        f"Trained {train_summary.get('step')} steps on `{store}` ({kind}). Scores over "
        f"{scores.get('n_conditions', len(scores.get('per_condition') or {}))} conditions with "
        f"{ev.get('sampler', '?')}×{ev.get('steps', '?')}: wasserstein_mean "
        f"{scores['wasserstein_mean']:.4g}, rel_l2_mean {scores['rel_l2_mean']:.4g} "
        "(lower is better)."
    )


def _make_tasks():
    from prefect import task

    opened = task(name="open-mlflow-run", retries=1, retry_delay_seconds=3)(open_run)
    recorded = task(name="log-to-mlflow", retries=1, retry_delay_seconds=3)(record_run)
    return opened, recorded


#: Prefect task forms of :func:`open_run` and :func:`record_run` (one retry: a locked SQLite
#: database or an unreachable tracking server can be transient; a retry of record_run without
#: ``run_id`` starts a fresh run).
open_training_run, log_training_run = _make_tasks()


# --------------------------------------------------------------------------------------------
# Loading a registered model safely (no code from the model store is run)
# --------------------------------------------------------------------------------------------
def download_bundle(model: str | os.PathLike, dst: str | os.PathLike | None = None) -> Path:
    """The local bundle folder (``weights.pt`` + ``model.json``) of ``model``.

    ``model``: an MLflow model URI (``models:/rho-<kind>@champion``, ``models:/<name>/<version>``,
    ``runs:/<run>/model``) resolved against :func:`tracking_uri` — so it works from any folder —
    or a local folder: a bundle itself or a downloaded pyfunc model (``.../artifacts/bundle``).
    Only files are fetched; nothing is unpickled or executed.
    """
    from rho_core.errors import CheckpointError
    from rho_core.packaging import META_FILE

    text = str(model)
    local = Path(text).expanduser()
    if "://" not in text and not text.startswith(("models:", "runs:")):
        for candidate in (local, local / "artifacts" / "bundle"):
            if (candidate / META_FILE).is_file():
                return candidate
        raise CheckpointError(
            f"{model} is neither an MLflow model URI (models:/NAME@ALIAS) nor a model folder "
            f"with {META_FILE}"
        )
    import mlflow.artifacts

    configure()
    try:
        root = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=text, dst_path=str(dst) if dst else None
            )
        )
    except Exception as exc:  # noqa: BLE001 - MlflowException, missing alias, no such version
        raise CheckpointError(
            f"cannot fetch model {text} from {tracking_uri()}: {str(exc).splitlines()[0]} "
            "(set MLFLOW_TRACKING_URI to the tracking server that holds it)"
        ) from None
    for candidate in (root / "artifacts" / "bundle", root):
        if (candidate / META_FILE).is_file():
            return candidate
    raise CheckpointError(
        f"model {text} is not a ρ-Diffusion bundle model (no artifacts/bundle/{META_FILE}); "
        "models registered before the pickle-free format must be re-registered"
    )


def load_model(model: str | os.PathLike, device: str = "cpu"):
    """Load a registered ρ-Diffusion model for sampling: a :class:`rho_core.packaging.Bundle`.

    ``load_model("models:/rho-spherical_harmonics@champion").sample({"l": 5, "m": 2}, n=2)``
    returns ``(2, C, *spatial)`` fields in physical units. Uses only this package's code and
    ``torch.load(weights_only=True)``.
    """
    from rho_core.packaging import load_bundle

    return load_bundle(download_bundle(model), device=device)

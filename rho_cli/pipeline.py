"""`rho pipeline [--quick] [--config YAML]`: the end-to-end Prefect flow on the embedded defaults.

Without a configured Prefect API the flow runs on a temporary local Prefect server; results go
to the SQLite MLflow database under ``data/`` (or ``MLFLOW_TRACKING_URI``). The last lines say
where to look.
"""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help="run the end-to-end pipeline (data, training, scores, figures, MLflow)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the quick preset: 16³ volumes, l ≤ 2, a small model, 300 steps (minutes on a CPU)",
    )
    p.add_argument(
        "--config",
        metavar="YAML",
        help="pipeline parameters (sections data/model/train/evaluate) over the preset",
    )
    p.add_argument(
        "--dataset",
        choices=(
            "spherical_harmonics", "hydrogen", "galaxy_merger", "bonsai",
            "gaussian_random_field", "rotational_spectrum",
        ),
        help="which data to generate and train on (default spherical_harmonics)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, help="training steps (overrides the preset/config)")
    p.add_argument(
        "--max-minutes",
        type=float,
        help="training wall-time budget; stops cleanly with a checkpoint (0: none)",
    )
    p.add_argument("--run-name", help="MLflow run name")
    p.set_defaults(func=_run)


def load_params(
    path: str | None,
    steps: int | None,
    run_name: str | None,
    max_minutes: float | None = None,
    dataset: str | None = None,
) -> dict:
    """Parameters from a config file (the sections of :mod:`rho_core.config` plus the
    pipeline's own: ``dataset``, ``hydrogen``, ``galaxy_merger``, ...) and command-line
    overrides, as a plain dict. The model/train/evaluate sections are checked by
    :func:`rho_core.config.resolve_config` (a bad key names itself)."""
    from rho_core.config import load_config_file, resolve_config

    d: dict = dict(load_config_file(path)) if path else {}
    sections = {k: d[k] for k in ("model", "train", "evaluate") if k in d}
    # The one check of model/train/evaluate keys; a section the file has is read as `rho train`
    # reads it (keys it leaves out take the rho_core.config defaults, not the preset's values),
    # so `rho pipeline --config F` trains the model `rho train --config F` trains.
    full = resolve_config(sections).to_dict()
    for k in sections:
        d[k] = full[k]
    if steps is not None:
        d.setdefault("train", {})["steps"] = steps
    if max_minutes is not None:
        d.setdefault("train", {})["max_minutes"] = max_minutes
    if dataset:
        d["dataset"] = dataset
    if run_name:
        d["run_name"] = run_name
    return d


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import logging

    from pydantic import ValidationError

    # One line per step, not one per HTTP request or database migration.
    for name in ("httpx", "httpcore", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from rho_core.errors import ConfigError

    raw = load_params(args.config, args.steps, args.run_name, args.max_minutes, args.dataset)
    from flows.params import PipelineParams

    try:
        params = PipelineParams.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"pipeline parameter {where}: {first['msg']}") from None
    from contextlib import nullcontext

    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    from flows.pipeline import pipeline, summary_lines

    # On the temporary local server nothing watches heartbeats, and every sync flow run would
    # spend about a second joining its heartbeat thread at exit; a real server keeps them.
    quiet = PREFECT_API_URL.value() is None
    ctx = temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}) if quiet else nullcontext()
    with ctx:
        result = pipeline(params=params, quick=args.quick)
    print()
    print(f"rho pipeline: done in {result['elapsed_s']:.0f} s")
    for line in summary_lines(result):
        print(f"  {line}")
    return 0

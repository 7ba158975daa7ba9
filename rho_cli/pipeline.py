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
    p.add_argument("--steps", type=int, help="training steps (overrides the preset/config)")
    p.add_argument("--run-name", help="MLflow run name")
    p.set_defaults(func=_run)


def load_params(path: str | None, steps: int | None, run_name: str | None) -> dict:
    """Parameters from a YAML file plus command-line overrides (a plain dict)."""
    from rho_core.errors import ConfigError

    d: dict = {}
    if path:
        import yaml

        if not os.path.isfile(path):
            raise ConfigError(f"config file {path} does not exist")
        try:
            d = yaml.safe_load(open(path)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path} must hold a mapping (data/model/train/...)")
    if steps is not None:
        d.setdefault("train", {})["steps"] = steps
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

    raw = load_params(args.config, args.steps, args.run_name)
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

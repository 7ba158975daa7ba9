"""Serve the deployments from this process (``rho serve`` / ``python -m deployments.serve``).

Deployments (``<flow>/<deployment>``):

- ``pipeline/pipeline`` — on demand; default parameters ``{"quick": true}``;
- ``retrain/retrain`` — on a cron schedule, nightly at 02:00 UTC by default
  (``--retrain-cron`` or ``RHO_RETRAIN_CRON``; timezone ``RHO_RETRAIN_TZ``, default UTC);
- ``ingest-bonsai/ingest-bonsai`` — on demand; snapshots and store are asked for in the form.

Needs a Prefect API (``PREFECT_API_URL``), e.g. the server ``rho ui`` starts. Without one a flow
would start a throw-away ephemeral server whose deployments vanish on exit, so we refuse.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

from rho_core.errors import ConfigError

DEFAULT_RETRAIN_CRON = "0 2 * * *"
PIPELINE_DEFAULTS = {"quick": True}


def retrain_cron(override: str | None = None) -> str:
    """The retrain schedule: ``override``, else ``RHO_RETRAIN_CRON``, else nightly 02:00."""
    cron = override or os.environ.get("RHO_RETRAIN_CRON") or DEFAULT_RETRAIN_CRON
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise ConfigError(
            f"retrain schedule {cron!r} is not a valid cron expression (e.g. '0 2 * * *')"
        ) from None
    return cron


def api_url() -> str | None:
    """The configured Prefect API URL, or ``None``."""
    from prefect.settings import PREFECT_API_URL

    value = PREFECT_API_URL.value()
    return str(value) if value else None


def require_api() -> str:
    """The Prefect API URL; :class:`ConfigError` saying how to start one when absent/down."""
    url = api_url()
    hint = (
        "start one with `rho ui` (or `prefect server start --host 127.0.0.1`) and then "
        "`export PREFECT_API_URL=http://127.0.0.1:4200/api`"
    )
    if not url:
        raise ConfigError(f"no Prefect API is configured (PREFECT_API_URL is unset); {hint}")
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as r:
            if r.status != 200:
                raise OSError(f"HTTP {r.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"the Prefect API at {url} does not answer ({exc}); {hint}") from None
    return url


def build_deployments(cron: str | None = None, pipeline_parameters: dict | None = None):
    """The three ``RunnerDeployment`` objects (not yet registered with any server)."""
    from prefect.schedules import Cron

    from flows.galaxy_merger import ingest_bonsai
    from flows.pipeline import pipeline, retrain

    tz = os.environ.get("RHO_RETRAIN_TZ", "UTC")
    return [
        pipeline.to_deployment(
            name="pipeline",
            parameters=dict(
                PIPELINE_DEFAULTS if pipeline_parameters is None else pipeline_parameters
            ),
            description="End to end: data, training, scores, figures, MLflow (on demand).",
            tags=["rho-diffusion"],
        ),
        retrain.to_deployment(
            name="retrain",
            schedule=Cron(retrain_cron(cron), timezone=tz),
            description="Retrain on the current store; promote the model if it scores better.",
            tags=["rho-diffusion", "scheduled"],
        ),
        ingest_bonsai.to_deployment(
            name="ingest-bonsai",
            description="Ingest Bonsai/tipsy snapshots into an image store (on demand).",
            tags=["rho-diffusion", "data"],
        ),
    ]


def serve_all(cron: str | None = None, limit: int | None = None) -> None:
    """Register and serve the deployments until interrupted (blocks)."""
    from prefect import serve

    url = require_api()
    print(f"serving rho-diffusion deployments on {url} (Ctrl-C to stop)", flush=True)
    serve(*build_deployments(cron), limit=limit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__)
    ap.add_argument("--retrain-cron", default=None, help="cron schedule of the retrain deployment")
    ap.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")
    args = ap.parse_args(argv)
    try:
        serve_all(args.retrain_cron, args.limit)
    except ConfigError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

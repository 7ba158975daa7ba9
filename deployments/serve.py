"""Serve the deployments from this process (``rho serve`` / ``python -m deployments.serve``).

Deployments (``<flow>/<deployment>``):

- ``pipeline/pipeline`` — on demand; its form is prefilled with the parameters that run: the
  quick spherical-harmonic preset, written out in full (``quick`` false, so what the form shows
  is what runs — see :func:`pipeline_form_defaults`);
- ``retrain/retrain`` — on a cron schedule, nightly at 02:00 by default (``--retrain-cron`` or
  ``RHO_RETRAIN_CRON``) in an explicit IANA timezone (``--retrain-tz`` or ``RHO_RETRAIN_TZ``,
  default UTC; the Prefect UI shows it beside the schedule), with a training time budget
  (``--retrain-minutes`` or ``RHO_RETRAIN_MINUTES``, default 60 minutes: the full recipe's
  measured budget, so a nightly run ends by morning on a small machine);
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
DEFAULT_RETRAIN_TZ = "UTC"
DEFAULT_RETRAIN_MINUTES = 60.0
PIPELINE_DEFAULTS = {"quick": True}  # the CLI's rule: changed fields over the quick preset


def pipeline_form_defaults() -> dict:
    """Default parameters of the pipeline deployment: the quick preset written out in full.

    The Prefect form then shows the values that will run (not the full recipe's defaults with a
    ``quick`` switch that silently replaces them); with ``quick`` false and a complete form,
    :func:`flows.params.resolve` runs exactly the form's values.
    """
    from flows.params import preset_params

    return {
        "params": preset_params("spherical_harmonics", quick=True).model_dump(mode="json"),
        "quick": False,
    }


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


def retrain_timezone(override: str | None = None) -> str:
    """The retrain schedule's IANA timezone: ``override``, ``RHO_RETRAIN_TZ``, else UTC."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz = override or os.environ.get("RHO_RETRAIN_TZ") or DEFAULT_RETRAIN_TZ
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"retrain timezone {tz!r} is not an IANA timezone (e.g. 'UTC', 'Europe/Berlin')"
        ) from None
    return tz


def retrain_minutes(override: float | None = None) -> float:
    """The nightly retrain's training budget in minutes (``RHO_RETRAIN_MINUTES``, default 60)."""
    raw = override if override is not None else os.environ.get("RHO_RETRAIN_MINUTES")
    try:
        minutes = DEFAULT_RETRAIN_MINUTES if raw is None else float(raw)
    except ValueError:
        raise ConfigError(f"retrain budget {raw!r} is not a number of minutes") from None
    if not (0 < minutes < 7 * 24 * 60):
        raise ConfigError(f"retrain budget must be between 0 and one week, got {minutes} minutes")
    return minutes


def retrain_parameters(minutes: float | None = None) -> dict:
    """Default parameters of the retrain deployment: the full recipe with a time budget."""
    return {"params": {"train": {"max_minutes": retrain_minutes(minutes)}}}


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


def build_deployments(
    cron: str | None = None,
    pipeline_parameters: dict | None = None,
    timezone: str | None = None,
    retrain_budget_minutes: float | None = None,
):
    """The three ``RunnerDeployment`` objects (not yet registered with any server)."""
    from prefect.schedules import Cron

    from flows.galaxy_merger import ingest_bonsai
    from flows.pipeline import pipeline, retrain

    cron = retrain_cron(cron)
    tz = retrain_timezone(timezone)
    minutes = retrain_minutes(retrain_budget_minutes)
    return [
        pipeline.to_deployment(
            name="pipeline",
            parameters=dict(
                pipeline_form_defaults() if pipeline_parameters is None else pipeline_parameters
            ),
            description="End to end: data, training, scores, figures, MLflow (on demand).",
            tags=["rho-diffusion"],
        ),
        retrain.to_deployment(
            name="retrain",
            schedule=Cron(cron, timezone=tz),
            parameters=retrain_parameters(minutes),
            description=(
                f"Retrain on the current store; promote the model if it scores better. "
                f"Schedule `{cron}` ({tz}); training stops after {minutes:g} minutes "
                "(params.train.max_minutes)."
            ),
            tags=["rho-diffusion", "scheduled"],
        ),
        ingest_bonsai.to_deployment(
            name="ingest-bonsai",
            description="Ingest Bonsai/tipsy snapshots into an image store (on demand).",
            tags=["rho-diffusion", "data"],
        ),
    ]


THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "urllib3", "websockets", "asyncio", "docket")


def quiet_third_party_logs(verbose: bool = False) -> None:
    """Keep chatty libraries (every HTTP poll of the runner is an httpx INFO line) at WARNING
    unless ``verbose``."""
    import logging

    level = logging.DEBUG if verbose else logging.WARNING
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def serve_all(
    cron: str | None = None,
    limit: int | None = None,
    timezone: str | None = None,
    retrain_budget_minutes: float | None = None,
    verbose: bool = False,
) -> None:
    """Register and serve the deployments until interrupted (blocks)."""
    from prefect import serve

    quiet_third_party_logs(verbose)
    url = require_api()
    deployments = build_deployments(
        cron, timezone=timezone, retrain_budget_minutes=retrain_budget_minutes
    )
    print(
        f"serving rho-diffusion deployments on {url} (Ctrl-C to stop); retrain "
        f"'{retrain_cron(cron)}' {retrain_timezone(timezone)}, "
        f"{retrain_minutes(retrain_budget_minutes):g} min budget",
        flush=True,
    )
    serve(*deployments, limit=limit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__)
    ap.add_argument("--retrain-cron", default=None, help="cron schedule of the retrain deployment")
    ap.add_argument("--retrain-tz", default=None, help="IANA timezone of the schedule (UTC)")
    ap.add_argument("--retrain-minutes", type=float, default=None, help="training budget (60)")
    ap.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")
    ap.add_argument("--verbose", action="store_true", help="keep third-party INFO logs")
    args = ap.parse_args(argv)
    try:
        serve_all(
            args.retrain_cron, args.limit, args.retrain_tz, args.retrain_minutes, args.verbose
        )
    except ConfigError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

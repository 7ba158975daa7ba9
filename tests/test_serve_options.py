"""`rho serve` options: the retrain schedule's timezone and time budget, quiet third-party logs."""

from __future__ import annotations

import logging

import pytest

from deployments import serve
from rho_core.errors import ConfigError


def test_retrain_schedule_has_an_explicit_timezone_and_a_budget(monkeypatch):
    monkeypatch.delenv("RHO_RETRAIN_TZ", raising=False)
    monkeypatch.delenv("RHO_RETRAIN_MINUTES", raising=False)
    assert serve.retrain_timezone() == "UTC"
    monkeypatch.setenv("RHO_RETRAIN_TZ", "Europe/Berlin")
    assert serve.retrain_timezone() == "Europe/Berlin"
    with pytest.raises(ConfigError, match="IANA"):
        serve.retrain_timezone("Mars/Olympus")
    assert serve.retrain_parameters() == {"params": {"train": {"max_minutes": 60.0}}}
    with pytest.raises(ConfigError, match="between 0 and one week"):
        serve.retrain_minutes(0)
    _, retrain, _ = serve.build_deployments("0 3 * * *", retrain_budget_minutes=20)
    (schedule,) = retrain.schedules
    assert schedule.schedule.cron == "0 3 * * *"
    assert schedule.schedule.timezone == "Europe/Berlin"
    assert "(Europe/Berlin)" in retrain.description and "20 minutes" in retrain.description
    # The budget reaches the training settings the flow resolves (not the unbounded defaults).
    from flows.params import PipelineParams, resolve

    p = resolve(PipelineParams.model_validate(retrain.parameters["params"]), quick=False)
    assert p.train.max_minutes == 20


def test_third_party_loggers_quiet_unless_verbose():
    serve.quiet_third_party_logs(verbose=False)
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    serve.quiet_third_party_logs(verbose=True)
    assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
    serve.quiet_third_party_logs(verbose=False)


def test_cli_serve_flags():
    from rho_cli.main import build_parser

    p = build_parser()
    args = p.parse_args(["serve", "--retrain-tz", "Asia/Tokyo", "--retrain-minutes", "15"])
    assert (args.retrain_tz, args.retrain_minutes, args.serve_verbose) == (
        "Asia/Tokyo",
        15.0,
        False,
    )
    assert p.parse_args(["serve", "--verbose"]).serve_verbose is True


def test_pipeline_form_is_prefilled_with_what_runs():
    """The pipeline deployment's form shows the quick preset in full, and running the form
    unchanged runs exactly that preset."""
    from flows.params import preset_params, resolve

    form = serve.pipeline_form_defaults()
    assert form["quick"] is False
    quick = preset_params("spherical_harmonics", quick=True)
    assert resolve(form["params"], quick=form["quick"]) == quick
    assert form["params"]["data"]["size"] == quick.data.size != 32  # not the full recipe's 32³
    pipe = serve.build_deployments()[0]
    assert pipe.parameters == form

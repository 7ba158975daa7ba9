"""Likelihood temperature (rho_core.calibration): the fit against known widths, its interval's
coverage, tempering a Gaussian log-likelihood (closed form), errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rho_core.calibration import (
    HALF_NORMAL_MEDIAN,
    fit_temperature,
    standardized_errors,
)
from rho_core.errors import ConfigError
from rho_core.inference import gaussian_posterior


def test_half_normal_median_constant() -> None:
    from scipy.stats import norm

    assert HALF_NORMAL_MEDIAN == pytest.approx(norm.ppf(0.75), rel=1e-12)


@pytest.mark.parametrize("scale", [0.7, 1.0, 1.3])
def test_temperature_recovers_the_width_error(scale: float) -> None:
    """Posteriors too narrow by 1/scale (z ~ N(0, scale²)): τ = 1/scale², within the interval,
    and the tempered errors z·√τ have the half-normal median."""
    z = scale * np.random.default_rng(1).standard_normal(20000)
    fit = fit_temperature(z)
    assert fit.temperature == pytest.approx(1 / scale**2, rel=0.04)
    assert fit.low < 1 / scale**2 < fit.high
    assert fit.width_factor == pytest.approx(scale, rel=0.02)
    assert np.median(np.abs(z * math.sqrt(fit.temperature))) == pytest.approx(
        HALF_NORMAL_MEDIAN, rel=1e-9
    )
    assert f"{fit.values} standardised errors" in fit.describe()


def test_temperature_interval_covers_at_its_level() -> None:
    """Over 400 calibration sets of 100 values the 90 % interval holds the true τ 85–97 % of
    the time (the order-statistic interval is conservative, never below its level by much)."""
    rng = np.random.default_rng(2)
    true_tau = 1 / 1.2**2
    hits = 0
    for _ in range(400):
        f = fit_temperature(1.2 * rng.standard_normal(100), confidence=0.9)
        hits += f.low <= true_tau <= f.high
    assert 0.85 <= hits / 400 <= 0.97


def test_temperature_is_robust_to_a_few_fields_far_off() -> None:
    """Five fits that ran away (|z| = 50) out of 200 move τ by < 10 %; the mean of z² would
    be ruined (here it gives τ ≈ 0.08)."""
    z = np.random.default_rng(3).standard_normal(200)
    bad = z.copy()
    bad[:5] = 50.0
    assert fit_temperature(bad).temperature == pytest.approx(
        fit_temperature(z).temperature, rel=0.1
    )
    assert 1 / np.mean(bad**2) < 0.1


def test_tempered_gaussian_log_likelihood_widens_by_one_over_root_tau() -> None:
    """log L of a Gaussian N(μ, s²) in θ on a 3-node grid, times τ: the fitted posterior keeps
    μ and has std s/√τ (flat prior; closed form)."""
    mu, s, tau = 0.3, 0.2, 0.6
    axis = np.linspace(mu - 2 * s, mu + 2 * s, 3) + 0.05
    ll = -0.5 * ((axis - mu) / s) ** 2 + 17.0
    plain = gaussian_posterior(["a"], [axis], ll)
    tempered = gaussian_posterior(["a"], [axis], tau * ll)
    assert plain.std("a") == pytest.approx(s, rel=1e-9)
    assert tempered.mean("a") == pytest.approx(mu, rel=1e-9)
    assert tempered.std("a") == pytest.approx(s / math.sqrt(tau), rel=1e-9)


def test_standardized_errors_and_refusals() -> None:
    z = standardized_errors([[1.0, 2.0]], [[0.5, 2.5]], [[0.25, 1.0]])
    np.testing.assert_allclose(z, [[2.0, -0.5]])
    with pytest.raises(ConfigError, match="positive and finite"):
        standardized_errors([1.0], [0.0], [0.0])
    with pytest.raises(ConfigError, match="differ"):
        standardized_errors([1.0, 2.0, 3.0], [0.0, 1.0], [1.0])
    with pytest.raises(ConfigError, match="≥ 8"):
        fit_temperature([0.1, 0.2])
    with pytest.raises(ConfigError, match="finite"):
        fit_temperature([0.1] * 9 + [float("nan")])
    with pytest.raises(ConfigError, match="confidence"):
        fit_temperature(np.ones(10), confidence=1.0)
    with pytest.raises(ConfigError, match="median"):
        fit_temperature(np.zeros(10))


def test_temperature_from_rho_infer_summaries(tmp_path) -> None:
    """summary.json files of rho infer runs (half of them already tempered with τ₀ = 0.5):
    the fit sees the untempered errors, z ~ N(0, 1.25²) → τ ≈ 1/1.25²; files without true
    values or unreadable ones are refused with the file named."""
    import json

    from tasks.inference import temperature_from_summaries

    rng = np.random.default_rng(4)
    paths = []
    for k in range(1500):
        tau0 = 0.5 if k % 2 else 1.0
        post = {}
        for name in ("a", "b"):
            std_raw = 0.1
            mean = 1.25 * std_raw * rng.standard_normal()
            post[name] = {"mean": mean, "std": std_raw / math.sqrt(tau0), "true": 0.0}
        d = tmp_path / f"f{k}"
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"posterior": post, "temperature": tau0}))
        paths.append(d if k % 3 else d / "summary.json")  # directories or files
    fit = temperature_from_summaries(paths)
    assert fit.values == 3000
    assert fit.temperature == pytest.approx(1 / 1.25**2, rel=0.06)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not a readable"):
        temperature_from_summaries([bad])
    nt = tmp_path / "nt.json"
    nt.write_text(json.dumps({"posterior": {"a": {"mean": 0.0, "std": 1.0}}}))
    with pytest.raises(ConfigError, match="no true value of 'a'"):
        temperature_from_summaries([nt])

"""rho_core.inference: grid posteriors, credible intervals and calibration against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rho_core.errors import ConfigError
from rho_core.inference import (
    compare_posteriors,
    coverage,
    grid_posterior,
    log_prior_grid,
    parse_grid,
    parse_prior,
    pit,
    quantile,
    rank_histogram,
    trapezoid_weights,
)


def test_parse_grid_and_prior() -> None:
    name, ax = parse_grid("spectral_index=-3:-1:41")
    assert name == "spectral_index" and ax.size == 41 and ax[0] == -3 and ax[-1] == -1
    assert np.allclose(np.diff(ax), 0.05)
    name, ax = parse_grid("amplitude=2,0.5,1")
    assert name == "amplitude" and ax.tolist() == [0.5, 1.0, 2.0]
    for bad in ("x", "=1:2:3", "x=1:2", "x=2:1:5", "x=1:2:1", "x=a:b:c", "x=1", "x=1,1"):
        with pytest.raises(ConfigError, match="grid"):
            parse_grid(bad)
    assert parse_prior("a=normal:1:0.5") == ("a", ("normal", 1.0, 0.5))
    assert parse_prior("a=loguniform")[1][0] == "loguniform"
    for bad in ("a=normal:1", "a=normal:1:-1", "a=beta", "a=normal:x:1"):
        with pytest.raises(ConfigError, match="prior"):
            parse_prior(bad)


def test_one_dimensional_gaussian_posterior_matches_closed_form() -> None:
    mu, sd = 0.37, 0.21
    ax = np.linspace(-1.5, 2.0, 301)
    post = grid_posterior(["a"], [ax], -0.5 * ((ax - mu) / sd) ** 2 + 123.0)
    assert abs(post.mean("a") - mu) < 1e-4
    assert abs(post.std("a") - sd) < 1e-3 * sd
    for level in (0.68, 0.95):
        lo, hi = post.interval("a", level)
        z = stats.norm.ppf((1 + level) / 2)
        assert abs(lo - (mu - z * sd)) < 2e-3 and abs(hi - (mu + z * sd)) < 2e-3
    s = post.summary()
    assert set(s["a"]) >= {"mean", "std", "map", "ci68", "ci95", "edge_mass"}
    assert abs(s["a"]["map"] - mu) <= 0.006
    assert s["a"]["edge_mass"] < 1e-6
    # the marginal of a 1-D posterior is the density itself, normalised
    assert abs(float(np.sum(trapezoid_weights(ax) * post.marginal(0))) - 1) < 1e-12


def test_two_dimensional_correlated_gaussian_marginals_and_prior() -> None:
    a = np.linspace(-4, 4, 121)
    b = np.linspace(-3, 5, 97)  # a different spacing per axis
    cov = np.array([[1.0, 0.6], [0.6, 0.8]])
    mean = np.array([0.2, 1.1])
    inv = np.linalg.inv(cov)
    da, db = np.meshgrid(a - mean[0], b - mean[1], indexing="ij")
    ll = -0.5 * (inv[0, 0] * da**2 + 2 * inv[0, 1] * da * db + inv[1, 1] * db**2)
    post = grid_posterior(["a", "b"], [a, b], ll)
    assert abs(post.mean("a") - 0.2) < 1e-3 and abs(post.mean("b") - 1.1) < 1e-3
    assert abs(post.std("a") - 1.0) < 5e-3 and abs(post.std("b") - math.sqrt(0.8)) < 5e-3
    # a normal prior on b multiplies in: 1-D check on b's marginal is exact for a Gaussian
    lp = log_prior_grid(["a", "b"], [a, b], {"b": ("normal", 0.0, 1.0)})
    post2 = grid_posterior(["a", "b"], [a, b], ll, lp)
    prec = 1 / 0.8 + 1.0
    assert abs(post2.mean("b") - (1.1 / 0.8) / prec) < 2e-3
    assert abs(post2.std("b") - math.sqrt(1 / prec)) < 5e-3
    with pytest.raises(ConfigError, match="not a grid parameter"):
        log_prior_grid(["a", "b"], [a, b], {"c": ("normal", 0.0, 1.0)})
    with pytest.raises(ConfigError, match="loguniform"):
        log_prior_grid(["a"], [a], {"a": ("loguniform", 0.0, 0.0)})


def test_quantile_and_pit_are_inverse_on_piecewise_linear_densities() -> None:
    ax = np.array([0.0, 0.5, 0.7, 2.0, 3.0])
    dens = np.array([0.1, 1.0, 0.2, 0.8, 0.0])
    for q in (0.0, 0.05, 0.3, 0.5, 0.77, 0.99, 1.0):
        x = quantile(ax, dens, q)
        assert abs(pit(ax, dens, x) - q) < 1e-10
    assert pit(ax, dens, -1.0) == 0.0 and pit(ax, dens, 9.0) == 1.0


def test_grid_posterior_errors() -> None:
    ax = np.linspace(0, 1, 5)
    with pytest.raises(ConfigError, match="values for a grid"):
        grid_posterior(["a"], [ax], np.zeros(4))
    with pytest.raises(ConfigError, match="finite"):
        grid_posterior(["a"], [ax], np.full(5, -np.inf))
    with pytest.raises(ConfigError, match="increasing"):
        grid_posterior(["a"], [ax[::-1]], np.zeros(5))


def test_calibrated_posteriors_cover_at_the_nominal_rate() -> None:
    """θ* ~ N(0, 1), x ~ N(θ*, 0.5²): the exact posterior is calibrated (coverage ≈ nominal,
    flat ranks); a posterior half as wide under-covers."""
    rng = np.random.default_rng(0)
    ax = np.linspace(-6, 6, 241)
    good, bad = [], []
    for _ in range(600):
        theta = rng.normal()
        x = theta + 0.5 * rng.normal()
        ll = -0.5 * ((x - ax) / 0.5) ** 2
        lp = -0.5 * ax**2
        good.append(grid_posterior(["t"], [ax], ll, lp).pit(0, theta))
        bad.append(grid_posterior(["t"], [ax], 4 * ll, 4 * lp).pit(0, theta))
    cov = coverage(good)
    assert abs(cov[0.68] - 0.68) < 0.06 and abs(cov[0.95] - 0.95) < 0.03
    assert coverage(bad)[0.68] < 0.5
    hist = rank_histogram(good, bins=5)
    assert hist.sum() == 600 and hist.min() > 80
    assert stats.kstest(good, "uniform").pvalue > 0.01


def test_compare_posteriors() -> None:
    r = compare_posteriors([0.0, 1.0, 3.0], [1.0, 1.1, 2.0], [0.5, 1.0, 0.0], [1.0, 1.0, 1.0])
    assert r["mean_within_1sigma"] == pytest.approx(2 / 3)
    assert r["std_within_25pct"] == pytest.approx(2 / 3)
    assert r["std_ratio_median"] == pytest.approx(1.1)


def test_gaussian_fit_recovers_a_correlated_gaussian_from_a_coarse_noisy_grid() -> None:
    from rho_core.inference import gaussian_fit

    a, b = np.linspace(-2, 3, 5), np.linspace(0, 4, 5)  # ≈ 1 node per σ
    cov = np.array([[1.0, 0.5], [0.5, 0.9]])
    mean = np.array([0.4, 2.1])
    inv = np.linalg.inv(cov)
    da, db = np.meshgrid(a - mean[0], b - mean[1], indexing="ij")
    ll = -0.5 * (inv[0, 0] * da**2 + 2 * inv[0, 1] * da * db + inv[1, 1] * db**2)
    m, c = gaussian_fit([a, b], ll)
    np.testing.assert_allclose(m, mean, atol=1e-9)
    np.testing.assert_allclose(c, cov, atol=1e-9)
    noisy = ll + 0.05 * np.random.default_rng(0).standard_normal(ll.shape)
    m, c = gaussian_fit([a, b], noisy)
    np.testing.assert_allclose(m, mean, atol=0.1)
    np.testing.assert_allclose(np.sqrt(np.diag(c)), np.sqrt(np.diag(cov)), rtol=0.1)
    with pytest.raises(ConfigError, match="concave"):
        gaussian_fit([a, b], -ll)


def test_linear_moments_are_exact_for_the_interpolant() -> None:
    from rho_core.inference import linear_moments

    ax = np.array([0.0, 1.0, 3.0])
    dens = np.array([0.0, 1.0, 0.0])  # a triangle on [0, 3] with mode 1
    m, s = linear_moments(ax, dens)
    assert m == pytest.approx(4 / 3)  # (0 + 1 + 3)/3
    assert s == pytest.approx(math.sqrt((0 + 1 + 9 - 0 - 3 - 0) / 18))
    # a posterior squeezed into the first cell: mean inside the cell, spread > 0
    post = grid_posterior(["a"], [np.array([0.0, 1.0, 2.0])], np.array([0.0, -50.0, -100.0]))
    assert 0.0 < post.mean("a") < 1.0 and post.std("a") > 0.1


def test_zoomed_axes_centre_on_the_posterior_and_respect_limits() -> None:
    """A Gaussian log-likelihood (mean 0.3, std 0.02) on a coarse grid over [0, 1]: the zoomed
    axis spans mean ± 5 std (never less than one old cell), clipped to the limits."""
    from rho_core.inference import grid_posterior, zoomed_axes

    ax = np.linspace(0.0, 1.0, 201)
    post = grid_posterior(["a"], [ax], -0.5 * ((ax - 0.3) / 0.02) ** 2)
    (z,) = zoomed_axes(post, [(0.0, 1.0)])
    assert z.size == 201
    # the piecewise-linear marginal's variance is σ² + h²/6 (h = 0.005): 5 std = 0.10052
    np.testing.assert_allclose([z[0], z[-1]], [0.3 - 0.10052, 0.3 + 0.10052], atol=2e-5)
    # narrower than a cell of a coarse grid: the marginal is a triangle of half-width h = 0.1
    # (std h/√6), so the zoom spans ± 5h/√6 — wider than the unresolved std, at least a cell
    coarse = np.linspace(0.0, 1.0, 11)
    post = grid_posterior(["a"], [coarse], -0.5 * ((coarse - 0.3) / 0.001) ** 2)
    (z,) = zoomed_axes(post, [(0.0, 1.0)], count=5)
    half = 5 * 0.1 / np.sqrt(6)
    np.testing.assert_allclose([z[0], z[-1]], [0.3 - half, 0.3 + half], atol=1e-9)
    # at the edge: clipped to the limits
    post = grid_posterior(["a"], [ax], -0.5 * ((ax - 0.02) / 0.02) ** 2)
    (z,) = zoomed_axes(post, [(0.0, 1.0)])
    # truncated normal (α = −1): mean μ + σλ, std σ√(1 − λ − λ²), λ = φ(1)/Φ(1) = 0.28760
    lam = 0.28760
    hi = 0.02 + 0.02 * lam + 5 * 0.02 * np.sqrt(1 - lam - lam**2)
    assert z[0] == 0.0 and abs(z[-1] - hi) < 1e-3


def test_gaussian_posterior_summary_matches_closed_form_on_a_three_node_grid() -> None:
    """A correlated Gaussian log-likelihood on 3 × 3 nodes over ± 2σ (the recipe of
    docs/likelihood.md §6): the fitted posterior's mean, std, correlation, central intervals
    (mean ± 0.99446σ / 1.95996σ), PIT and mass outside the grid (2·Φ(−2) = 0.0455) are the
    closed-form ones, where the trapezoid moments of the same 9 nodes are far off."""
    from scipy.stats import norm

    from rho_core.inference import gaussian_posterior, zoomed_axes

    mean, sd, rho = np.array([1.3, -1.7]), np.array([0.2, 0.05]), 0.6
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    axes = [np.linspace(m - 2 * s, m + 2 * s, 3) for m, s in zip(mean, sd, strict=True)]
    da, db = np.meshgrid(axes[0] - mean[0], axes[1] - mean[1], indexing="ij")
    inv = np.linalg.inv(cov)
    ll = 1234.5 - 0.5 * (inv[0, 0] * da**2 + 2 * inv[0, 1] * da * db + inv[1, 1] * db**2)
    g = gaussian_posterior(["A", "n"], axes, ll)
    s = g.summary()
    for i, name in enumerate(("A", "n")):
        assert s[name]["mean"] == pytest.approx(mean[i], abs=1e-9)
        assert s[name]["map"] == pytest.approx(mean[i], abs=1e-9)
        assert s[name]["std"] == pytest.approx(sd[i], rel=1e-9)
        lo, hi = s[name]["ci68"]
        assert (hi - lo) / 2 == pytest.approx(norm.ppf(0.84) * sd[i], rel=1e-9)
        assert s[name]["ci95"][1] == pytest.approx(mean[i] + 1.959964 * sd[i], rel=1e-6)
        assert s[name]["edge_mass"] == pytest.approx(2 * norm.cdf(-2.0), rel=1e-9)
        assert g.pit(name, mean[i] + sd[i]) == pytest.approx(norm.cdf(1.0), rel=1e-9)
    assert s["A"]["correlation"]["n"] == pytest.approx(rho, rel=1e-9)
    grid_std = grid_posterior(["A", "n"], axes, ll).std("n")
    assert abs(grid_std / sd[1] - 1) > 0.1  # the trapezoid rule cannot hold a bell on 3 nodes
    # a zoom pass of 3 nodes at ± 2 std reproduces the grid
    za, zn = zoomed_axes(g, width=2.0, count=3)
    np.testing.assert_allclose(za, axes[0], rtol=1e-9)
    np.testing.assert_allclose(zn, axes[1], rtol=1e-9)
    with pytest.raises(ConfigError, match="concave"):
        gaussian_posterior(["A", "n"], axes, -ll)


def _gaussian_ll(mean, cov):
    inv = np.linalg.inv(cov)

    def ll(points: np.ndarray, k: int = 0) -> np.ndarray:
        d = points - mean
        return -0.5 * np.einsum("gi,ij,gj->g", d, inv, d)

    return ll


def test_whitened_refinement_resolves_a_narrow_ridge() -> None:
    """A correlated Gaussian (ρ = −0.999: a ridge whose conditional σ is 1/22 of the marginal
    one) on a 15 × 15 grid over the box, then two zooms of 15 × 15: along the posterior's
    principal axes (whitened) the mean and std come out within 2–3 % of σ; tensor zooms in θ,
    same node count, miss by more than a σ. The whitened nodes are centre + L u of the frame
    they report."""
    from rho_core.inference import refine_posterior

    mean = np.array([1.23, -1.61])
    sd, rho = np.array([0.1, 0.02]), -0.999
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    axes = [np.linspace(0.5, 2.0, 15), np.linspace(-2.5, -1.0, 15)]
    limits = [(0.5, 2.0), (-2.5, -1.0)]

    def errors(whiten: bool):
        ps = refine_posterior(["a", "n"], axes, _gaussian_ll(mean, cov), None, limits,
                              zoom=2, width=5.0, whiten=whiten)  # fmt: skip
        g = ps[-1].summary_source
        m = np.array([g.mean(0), g.mean(1)])
        s = np.array([g.std(0), g.std(1)])
        return ps, np.max(np.abs(m - mean) / sd), np.max(np.abs(s / sd - 1))

    ps, dm, ds = errors(True)
    assert ps[0].frame is None and ps[1].frame is not None and ps[2].frame is not None
    f = ps[2].frame
    u = np.stack([x.reshape(-1) for x in np.meshgrid(*f.axes, indexing="ij")], 1)
    np.testing.assert_allclose(ps[2].points, f.centre + u @ f.chol.T, rtol=1e-12)
    np.testing.assert_allclose(f.axes[0], np.linspace(-5, 5, 15))
    assert dm < 0.02 and ds < 0.03, (dm, ds)  # the u-grid's spacing is 0.71 σ
    c = ps[-1].fitted.cov
    assert c[0, 1] / np.sqrt(c[0, 0] * c[1, 1]) == pytest.approx(rho, abs=0.002)
    _, dm_t, ds_t = errors(False)
    assert dm_t > 0.5, (dm_t, ds_t)


def test_whitened_refinement_matches_the_exact_grf_posterior() -> None:
    """The exact log-likelihood of a 32² Gaussian random field (grf_log_prob: a curved,
    skewed ridge in (A, n), not a Gaussian): the default-style recipe (15 × 15 over the box,
    two whitened zooms) gives the mean within 0.1 posterior σ and the std within 5 % of a
    121 × 121 grid posterior over ± 6σ."""
    from rho_core.data.random_fields import gaussian_field, grf_log_prob
    from rho_core.inference import refine_posterior

    rng = np.random.default_rng(5)
    field = gaussian_field(32, 2, 1.3, -1.7, rng)[None]

    def ll(points: np.ndarray, k: int = 0) -> np.ndarray:  # −inf where A ≤ 0 (no density)
        ok = points[:, 0] > 0
        out = np.full(len(points), -np.inf)
        x = np.broadcast_to(field[None], (int(ok.sum()), *field.shape))
        out[ok] = grf_log_prob(x, points[ok, 0], points[ok, 1])
        return out

    axes = [np.linspace(0.5, 2.0, 15), np.linspace(-2.5, -1.0, 15)]
    ps = refine_posterior(["A", "n"], axes, ll, None, [(0.5, 2.0), (-2.5, -1.0)], zoom=2,
                          whiten=True)  # fmt: skip
    g = ps[-1].summary_source
    fine = [np.linspace(g.mean(i) - 6 * g.std(i), g.mean(i) + 6 * g.std(i), 121) for i in (0, 1)]
    pts = np.stack([x.reshape(-1) for x in np.meshgrid(*fine, indexing="ij")], 1)
    ex = grid_posterior(["A", "n"], fine, ll(pts).reshape(121, 121))
    for i in (0, 1):
        assert abs(g.mean(i) - ex.mean(i)) < 0.1 * ex.std(i)
        assert g.std(i) == pytest.approx(ex.std(i), rel=0.05)


def test_frames_moments_and_point_priors() -> None:
    from rho_core.inference import (
        grid_moments,
        log_prior_grid,
        log_prior_points,
        whitened_frame,
    )

    cov = np.array([[0.04, -0.01], [-0.01, 0.01]])
    f = whitened_frame(np.array([1.0, -2.0]), cov, 3.0, 5)
    np.testing.assert_allclose(f.chol @ f.chol.T, cov, rtol=1e-12)
    loc, c = f.to_u(np.array([1.1, -2.05]), cov)
    back = f.to_theta(loc, c)
    np.testing.assert_allclose(back[0], [1.1, -2.05], rtol=1e-12)
    np.testing.assert_allclose(c, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(back[1], cov, rtol=1e-12)
    g = whitened_frame(np.zeros(2), np.zeros((2, 2)), 3.0, 5, floor=[0.1, 0.2])
    np.testing.assert_allclose(np.diag(g.chol), [0.1, 0.2])
    with pytest.raises(ConfigError, match="not positive definite"):
        whitened_frame(np.zeros(2), -cov, 3.0, 5)
    # grid moments of a fine correlated Gaussian: its mean and covariance
    axes = [np.linspace(0.0, 2.0, 161), np.linspace(-2.5, -1.5, 161)]
    mesh = np.stack([m.reshape(-1) for m in np.meshgrid(*axes, indexing="ij")], 1)
    ll = _gaussian_ll(np.array([1.0, -2.0]), cov)(mesh).reshape(161, 161)
    m, c = grid_moments(grid_posterior(["a", "b"], axes, ll))
    np.testing.assert_allclose(m, [1.0, -2.0], atol=1e-6)
    np.testing.assert_allclose(c, cov, rtol=2e-3)
    priors = {"a": ("normal", 1.0, 0.5), "b": ("loguniform", 0, 0)}
    pax = [np.array([0.5, 1.0, 2.0]), np.array([0.1, 0.3])]
    pts = np.stack([x.reshape(-1) for x in np.meshgrid(*pax, indexing="ij")], 1)
    np.testing.assert_allclose(
        log_prior_points(["a", "b"], pts, priors), log_prior_grid(["a", "b"], pax, priors).ravel()
    )


def test_mass_outside_a_range_closed_form() -> None:
    from scipy.stats import norm

    from rho_core.inference import mass_outside

    assert mass_outside(0.0, 1.0, -1.0, 1.0) == pytest.approx(2 * norm.sf(1.0), rel=1e-12)
    assert mass_outside(0.5, 0.1, 0.5, 2.0) == pytest.approx(0.5, rel=1e-12)  # on the edge
    assert mass_outside(1.0, 0.01, 0.5, 2.0) < 1e-12
    assert mass_outside(3.0, 0.0, 0.5, 2.0) == 1.0 and mass_outside(1.0, 0.0, 0.5, 2.0) == 0.0

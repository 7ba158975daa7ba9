r"""Parameter inference on a grid: posterior, summaries, credible intervals and calibration.

Pure numpy math, no model and no I/O: the log-likelihood values come from
:func:`rho_core.likelihood.log_likelihood` (``rho infer``) or from an exact likelihood (the GRF
benchmark), evaluated on the tensor grid θ = (θ₁, …, θ_P) of 1-D axes.

Posterior on the grid. With log L and log π (flat unless given) at the grid nodes,

    p(θ | x) ∝ exp(log L(θ) + log π(θ)),

normalised as a *density* with the trapezoid rule on every axis (nodes need not be equally
spaced), so marginals, means and standard deviations are integrals of the piecewise-linear
interpolant's node values:

    p_i(θ_i) = ∫ p dθ_{−i},   E[θ_i] = ∫ θ_i p_i dθ_i,   Var θ_i = ∫ (θ_i − E θ_i)² p_i dθ_i.

Credible intervals are *equal-tailed* (central): [F_i⁻¹((1 − L)/2), F_i⁻¹((1 + L)/2)] of the
marginal CDF F_i, which is computed exactly for the piecewise-linear density (piecewise
quadratic) and inverted by solving that quadratic. Posterior mass that lies beyond the grid is
not seen: choose a grid wide enough that the marginals vanish at both ends
(:attr:`GridPosterior.edge_mass` reports the mass in the outermost cells).

Calibration. For a true value θ* the probability integral transform u = F_i(θ*) is uniform on
[0, 1] when the posterior is calibrated (simulation-based calibration, Talts et al. 2018; the
continuous form of the rank statistic). The central interval at level L covers θ* exactly when
|2u − 1| ≤ L, so coverage(L) = mean(|2u − 1| ≤ L) should be L.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rho_core.errors import ConfigError

__all__ = [
    "GridPosterior",
    "grid_posterior",
    "parse_grid",
    "parse_prior",
    "log_prior_grid",
    "trapezoid_weights",
    "marginal_cdf",
    "quantile",
    "linear_moments",
    "central_interval",
    "pit",
    "coverage",
    "rank_histogram",
    "compare_posteriors",
    "gaussian_fit",
    "GaussianPosterior",
    "gaussian_posterior",
    "grid_moments",
    "log_prior_points",
    "WhitenedFrame",
    "whitened_frame",
    "InferencePass",
    "pass_posterior",
    "refine_posterior",
    "zoomed_axes",
    "mass_outside",
]

LEVELS = (0.68, 0.95)
FIT_WITHIN = 12.0  # nats: pass_posterior fits the nodes this close to the maximum (≈ 4.9σ in 2-D)


# ----- grids and priors ----------------------------------------------------------------------


def parse_grid(spec: str) -> tuple[str, np.ndarray]:
    """``'NAME=LO:HI:COUNT'`` → (NAME, linspace(LO, HI, COUNT)); ``'NAME=v1,v2,…'`` lists values.

    Raises:
        ConfigError: naming the malformed part.
    """
    if "=" not in spec:
        raise ConfigError(
            f"grid {spec!r} must look like NAME=LO:HI:COUNT, e.g. 'spectral_index=-3:-1:41'"
        )
    name, _, rhs = spec.partition("=")
    name = name.strip()
    if not name:
        raise ConfigError(f"grid {spec!r} has no parameter name before '='")
    try:
        if ":" in rhs:
            parts = rhs.split(":")
            if len(parts) != 3:
                raise ValueError
            lo, hi, count = float(parts[0]), float(parts[1]), int(parts[2])
            if count < 2 or not (math.isfinite(lo) and math.isfinite(hi)) or not hi > lo:
                raise ValueError
            values = np.linspace(lo, hi, count)
        else:
            values = np.array(sorted(float(v) for v in rhs.split(",")), dtype=np.float64)
            if values.size < 2 or not np.isfinite(values).all() or np.any(np.diff(values) <= 0):
                raise ValueError
    except ValueError:
        raise ConfigError(
            f"grid {spec!r}: expected NAME=LO:HI:COUNT with LO < HI and COUNT ≥ 2 "
            "(or NAME=v1,v2,… with ≥ 2 distinct finite values)"
        ) from None
    return name, values


def parse_prior(spec: str) -> tuple[str, tuple[str, float, float]]:
    """``'NAME=normal:MU:SIGMA'``, ``'NAME=loguniform'`` or ``'NAME=flat'`` → (NAME, form)."""
    name, _, rhs = spec.partition("=")
    name, rhs = name.strip(), rhs.strip()
    parts = rhs.split(":")
    try:
        if parts[0] == "normal" and len(parts) == 3:
            mu, sd = float(parts[1]), float(parts[2])
            if not sd > 0:
                raise ValueError
            return name, ("normal", mu, sd)
        if parts[0] in ("loguniform", "flat") and len(parts) == 1 and name:
            return name, (parts[0], 0.0, 0.0)
    except ValueError:
        pass
    raise ConfigError(
        f"prior {spec!r}: use NAME=normal:MU:SIGMA (SIGMA > 0), NAME=loguniform or NAME=flat"
    )


def log_prior_points(
    names: Sequence[str], points: np.ndarray, priors: Mapping[str, tuple] | None
) -> np.ndarray:
    """:func:`log_prior_grid` at arbitrary nodes ``points`` ``(G, P)`` (columns in ``names``
    order), shape ``(G,)``."""
    pts = np.asarray(points, dtype=np.float64)
    cols = [log_prior_grid([n], [pts[:, i]], {n: priors[n]} if n in (priors or {}) else None)
            for i, n in enumerate(names)]  # fmt: skip
    for name in priors or {}:
        if name not in names:
            raise ConfigError(
                f"prior given for {name!r}, which is not a grid parameter {list(names)}"
            )
    return np.sum(cols, axis=0) if cols else np.zeros(len(pts))


def log_prior_grid(
    names: Sequence[str], axes: Sequence[np.ndarray], priors: Mapping[str, tuple] | None
) -> np.ndarray:
    """Independent log-prior on the tensor grid (flat for names not in ``priors``), shape
    ``(n_1, …, n_P)``. Forms: ``("normal", μ, σ)``, ``("loguniform", ·, ·)`` (∝ 1/θ, θ > 0),
    ``("flat", ·, ·)``."""
    shape = tuple(len(a) for a in axes)
    out = np.zeros(shape)
    for name in priors or {}:
        if name not in names:
            raise ConfigError(
                f"prior given for {name!r}, which is not a grid parameter {list(names)}"
            )
    for i, (name, ax) in enumerate(zip(names, axes, strict=True)):
        form = (priors or {}).get(name)
        if form is None or form[0] == "flat":
            continue
        if form[0] == "normal":
            lp = -0.5 * ((ax - form[1]) / form[2]) ** 2
        elif form[0] == "loguniform":
            if np.any(ax <= 0):
                raise ConfigError(f"a loguniform prior needs {name} > 0 on the whole grid")
            lp = -np.log(ax)
        else:
            raise ConfigError(f"unknown prior form {form[0]!r} for {name!r}")
        out = out + lp.reshape([-1 if j == i else 1 for j in range(len(axes))])
    return out


def trapezoid_weights(axis: np.ndarray) -> np.ndarray:
    """Trapezoid quadrature weights of a 1-D node grid (sum = axis[-1] − axis[0])."""
    ax = np.asarray(axis, dtype=np.float64)
    w = np.zeros_like(ax)
    dx = np.diff(ax)
    w[:-1] += dx / 2
    w[1:] += dx / 2
    return w


# ----- 1-D marginal maths --------------------------------------------------------------------


def marginal_cdf(axis: np.ndarray, density: np.ndarray) -> np.ndarray:
    """CDF at the nodes of a piecewise-linear density (normalised to integrate to 1)."""
    ax = np.asarray(axis, dtype=np.float64)
    p = np.asarray(density, dtype=np.float64)
    cells = np.diff(ax) * (p[:-1] + p[1:]) / 2
    cdf = np.concatenate([[0.0], np.cumsum(cells)])
    return cdf / cdf[-1]


def quantile(axis: np.ndarray, density: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """F⁻¹(q) of a piecewise-linear density on ``axis`` (exact: solves the quadratic per cell)."""
    ax = np.asarray(axis, dtype=np.float64)
    p = np.asarray(density, dtype=np.float64)
    total = float(np.sum(np.diff(ax) * (p[:-1] + p[1:]) / 2))
    p = p / total
    cdf = marginal_cdf(ax, p)
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    out = np.empty_like(qs)
    for n, qq in enumerate(qs):
        qq = min(max(qq, 0.0), 1.0)
        k = int(np.clip(np.searchsorted(cdf, qq, side="right") - 1, 0, len(ax) - 2))
        h = ax[k + 1] - ax[k]
        p0, p1 = p[k], p[k + 1]
        slope = (p1 - p0) / h
        need = qq - cdf[k]  # ∫_0^s (p0 + slope·u) du = p0 s + slope s²/2 = need
        if abs(slope) * h < 1e-12 * max(p0, 1e-300):
            s = need / p0 if p0 > 0 else 0.0
        else:
            disc = max(p0 * p0 + 2 * slope * need, 0.0)
            s = (-p0 + math.sqrt(disc)) / slope
        out[n] = ax[k] + min(max(s, 0.0), h)
    return out if np.ndim(q) else out[0]


def linear_moments(axis: np.ndarray, density: np.ndarray) -> tuple[float, float]:
    """(mean, std) of the piecewise-linear density through the node values, exactly.

    Per cell [a, b] of width h with end values p₀, p₁: ∫p = h(p₀ + p₁)/2,
    ∫θp = h/6 [p₀(2a + b) + p₁(a + 2b)], ∫θ²p = h/12 [p₀(3a² + 2ab + b²) + p₁(a² + 2ab + 3b²)]
    (θ measured from the trapezoid mean, against cancellation). Consistent with
    :func:`quantile` and :func:`pit`, so a posterior squeezed into one cell of a coarse grid
    still gets the mean and spread of the interpolant rather than of point masses.
    """
    ax = np.asarray(axis, dtype=np.float64)
    p = np.asarray(density, dtype=np.float64)
    c = float(np.sum(trapezoid_weights(ax) * ax * p) / np.sum(trapezoid_weights(ax) * p))
    a, b = ax[:-1] - c, ax[1:] - c
    p0, p1 = p[:-1], p[1:]
    h = b - a
    z = np.sum(h * (p0 + p1) / 2)
    m1 = np.sum(h / 6 * (p0 * (2 * a + b) + p1 * (a + 2 * b))) / z
    m2 = np.sum(
        h / 12 * (p0 * (3 * a * a + 2 * a * b + b * b) + p1 * (a * a + 2 * a * b + 3 * b * b))
    )
    var = m2 / z - m1 * m1
    return float(c + m1), math.sqrt(max(float(var), 0.0))


def central_interval(axis: np.ndarray, density: np.ndarray, level: float) -> tuple[float, float]:
    """Equal-tailed credible interval at ``level`` (e.g. 0.68) of a marginal."""
    if not 0 < level < 1:
        raise ConfigError(f"credible level must be in (0, 1), got {level}")
    lo, hi = quantile(axis, density, np.array([(1 - level) / 2, (1 + level) / 2]))
    return float(lo), float(hi)


def pit(axis: np.ndarray, density: np.ndarray, value: float) -> float:
    """Probability integral transform F(value) of a piecewise-linear marginal (0 / 1 off-grid)."""
    ax = np.asarray(axis, dtype=np.float64)
    p = np.asarray(density, dtype=np.float64)
    p = p / float(np.sum(np.diff(ax) * (p[:-1] + p[1:]) / 2))
    if value <= ax[0]:
        return 0.0
    if value >= ax[-1]:
        return 1.0
    cdf = marginal_cdf(ax, p)
    k = int(np.searchsorted(ax, value, side="right") - 1)
    s = value - ax[k]
    slope = (p[k + 1] - p[k]) / (ax[k + 1] - ax[k])
    return float(cdf[k] + p[k] * s + slope * s * s / 2)


# ----- the grid posterior --------------------------------------------------------------------


@dataclass
class GridPosterior:
    """A posterior density on a tensor grid (see the module docstring).

    Attributes:
        names: parameter names, one per axis.
        axes: the 1-D node grids.
        log_likelihood / log_prior: node values, shape ``(n_1, …, n_P)``.
        density: the normalised posterior density at the nodes (∫ p dθ = 1, trapezoid rule).
    """

    names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    log_likelihood: np.ndarray
    log_prior: np.ndarray
    density: np.ndarray

    def marginal(self, i: int | str) -> np.ndarray:
        """Marginal density of parameter ``i`` (index or name) at its nodes."""
        i = self.names.index(i) if isinstance(i, str) else int(i)
        p = self.density
        for j in reversed(range(len(self.axes))):
            if j != i:
                p = np.tensordot(p, trapezoid_weights(self.axes[j]), axes=([j], [0]))
        return p

    def mean(self, i: int | str) -> float:
        """Mean of the piecewise-linear marginal (the density the intervals and PIT use)."""
        i = self.names.index(i) if isinstance(i, str) else int(i)
        return linear_moments(self.axes[i], self.marginal(i))[0]

    def std(self, i: int | str) -> float:
        """Standard deviation of the piecewise-linear marginal."""
        i = self.names.index(i) if isinstance(i, str) else int(i)
        return linear_moments(self.axes[i], self.marginal(i))[1]

    def interval(self, i: int | str, level: float) -> tuple[float, float]:
        i = self.names.index(i) if isinstance(i, str) else int(i)
        return central_interval(self.axes[i], self.marginal(i), level)

    def pit(self, i: int | str, value: float) -> float:
        """F_i(value): the calibration statistic of a true value."""
        i = self.names.index(i) if isinstance(i, str) else int(i)
        return pit(self.axes[i], self.marginal(i), value)

    def map(self) -> dict[str, float]:
        """The grid node of highest posterior density."""
        idx = np.unravel_index(int(np.argmax(self.density)), self.density.shape)
        return {n: float(ax[k]) for n, ax, k in zip(self.names, self.axes, idx, strict=True)}

    def edge_mass(self, i: int | str) -> float:
        """Posterior mass in the outermost cell at each end of axis ``i`` (sum of both); a large
        value means the grid cuts the posterior off."""
        i = self.names.index(i) if isinstance(i, str) else int(i)
        ax, p = self.axes[i], self.marginal(i)
        first = (ax[1] - ax[0]) * (p[0] + p[1]) / 2
        last = (ax[-1] - ax[-2]) * (p[-1] + p[-2]) / 2
        return float(first + last)

    def summary(self, levels: Sequence[float] = LEVELS) -> dict[str, dict]:
        """Per parameter: mean, std, MAP and central intervals, e.g. ``{"ci68": [lo, hi]}``."""
        return _summary(self, levels)


def _summary(post, levels: Sequence[float]) -> dict[str, dict]:
    """Mean, std, MAP, central intervals and edge mass per parameter of a posterior object."""
    mp = post.map()
    out = {}
    for i, name in enumerate(post.names):
        d = {"mean": post.mean(i), "std": post.std(i), "map": mp[name]}
        for lv in levels:
            d[f"ci{round(lv * 100):d}"] = list(post.interval(i, lv))
        d["edge_mass"] = post.edge_mass(i)
        out[name] = d
    return out


def grid_posterior(
    names: Sequence[str],
    axes: Sequence[np.ndarray],
    log_likelihood: np.ndarray,
    log_prior: np.ndarray | None = None,
) -> GridPosterior:
    """Normalise exp(log L + log π) on the tensor grid (module docstring).

    Args:
        names: one name per axis; axes: strictly increasing 1-D node arrays (≥ 2 nodes each).
        log_likelihood: shape ``(n_1, …, n_P)`` (or flat, in C order); non-finite values count
            as zero likelihood.
        log_prior: same shape, default flat.

    Raises:
        ConfigError: on shape mismatch or when no node has a finite log-posterior.
    """
    axes = tuple(np.asarray(a, dtype=np.float64) for a in axes)
    names = tuple(names)
    if len(names) != len(axes) or not axes:
        raise ConfigError(f"{len(names)} names for {len(axes)} axes")
    for n, a in zip(names, axes, strict=True):
        if a.ndim != 1 or a.size < 2 or np.any(np.diff(a) <= 0):
            raise ConfigError(f"axis {n!r} must be ≥ 2 strictly increasing values")
    shape = tuple(a.size for a in axes)
    ll = np.asarray(log_likelihood, dtype=np.float64)
    if ll.size != math.prod(shape):
        raise ConfigError(f"log-likelihood has {ll.size} values for a grid of shape {shape}")
    ll = ll.reshape(shape)
    lp = np.zeros(shape) if log_prior is None else np.asarray(log_prior, dtype=np.float64)
    lp = np.broadcast_to(lp, shape)
    lpost = np.where(np.isfinite(ll + lp), ll + lp, -np.inf)
    if not np.isfinite(lpost).any():
        raise ConfigError("no grid point has a finite log-posterior")
    dens = np.exp(lpost - lpost.max())
    z = dens
    for j in reversed(range(len(axes))):
        z = np.tensordot(z, trapezoid_weights(axes[j]), axes=([j], [0]))
    return GridPosterior(names, axes, ll, np.array(lp), dens / float(z))


def zoomed_axes(
    post: GridPosterior,
    limits: Sequence[tuple[float, float]] | None = None,
    width: float = 5.0,
    count: int | None = None,
) -> list[np.ndarray]:
    """Node arrays of a finer grid around ``post``: per axis ``mean ± width·std`` of its
    marginal, at least ± one cell of the old grid (a posterior narrower than the cells is
    under-resolved, so its std is not trusted below that), clipped to ``limits`` (e.g. the
    model's training range), ``count`` nodes (default the old count).

    A coarse pass over the whole training range followed by one zoom resolves a posterior far
    narrower than the range at twice the cost of one pass (docs/likelihood.md §6)."""
    out = []
    for i, ax in enumerate(post.axes):
        m, sd = post.mean(i), post.std(i)
        cell = float(np.max(np.diff(ax)))
        half = max(width * sd, cell)
        lo, hi = m - half, m + half
        if limits is not None:
            lo, hi = max(lo, limits[i][0]), min(hi, limits[i][1])
        if not hi > lo:
            lo, hi = float(ax[0]), float(ax[-1])
        out.append(np.linspace(lo, hi, count or ax.size))
    return out


# ----- calibration over many fields ----------------------------------------------------------


def mass_outside(mean: float, std: float, lo: float, hi: float) -> float:
    """Mass of N(mean, std²) outside [lo, hi]: how much of a posterior lies beyond a model's
    training range, where its likelihood is extrapolated (``rho infer`` warns above 5 %)."""
    from scipy.stats import norm

    if not std > 0:
        return float(not lo <= mean <= hi)
    return float(norm.cdf((lo - mean) / std) + norm.sf((hi - mean) / std))


def coverage(pits: Sequence[float], levels: Sequence[float] = LEVELS) -> dict[float, float]:
    """Fraction of true values inside the central interval at each level: mean(|2u − 1| ≤ L)."""
    u = np.asarray(pits, dtype=np.float64)
    return {float(lv): float(np.mean(np.abs(2 * u - 1) <= lv)) for lv in levels}


def rank_histogram(pits: Sequence[float], bins: int = 10) -> np.ndarray:
    """Counts of the PIT values in ``bins`` equal bins of [0, 1] (flat when calibrated)."""
    u = np.clip(np.asarray(pits, dtype=np.float64), 0.0, 1.0)
    return np.histogram(u, bins=bins, range=(0.0, 1.0))[0]


def compare_posteriors(
    mean: Sequence[float], std: Sequence[float], ref_mean: Sequence[float], ref_std: Sequence[float]
) -> dict[str, float]:
    """How one set of posteriors matches reference posteriors (e.g. the exact ones), per field:

    ``mean_within_1sigma``: fraction with |mean − ref_mean| ≤ ref_std; ``std_ratio_median`` and
    ``std_within_25pct``: median of std/ref_std and fraction with |std/ref_std − 1| ≤ 0.25;
    ``mean_shift_rms``: RMS of (mean − ref_mean)/ref_std.
    """
    m, s = np.asarray(mean, float), np.asarray(std, float)
    rm, rs = np.asarray(ref_mean, float), np.asarray(ref_std, float)
    z = (m - rm) / rs
    ratio = s / rs
    return {
        "mean_within_1sigma": float(np.mean(np.abs(z) <= 1)),
        "mean_shift_rms": float(np.sqrt(np.mean(z * z))),
        "std_ratio_median": float(np.median(ratio)),
        "std_within_25pct": float(np.mean(np.abs(ratio - 1) <= 0.25)),
    }


# ----- a Gaussian (Laplace) fit to a coarse or noisy grid -----------------------------------


def gaussian_fit(
    axes: Sequence[np.ndarray],
    log_likelihood: np.ndarray,
    log_prior: np.ndarray | None = None,
    within: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the Gaussian whose log-density best fits the grid values.

    Least squares of log p(θ) ≈ c + bᵀθ + ½ θᵀHθ over all nodes (θ centred and scaled per
    axis for conditioning), then mean = −H⁻¹b, covariance = −H⁻¹. Meant for grids too coarse
    for the trapezoid rule (a few nodes per posterior σ) or log-likelihoods with Monte-Carlo
    noise (Hutchinson), where a smooth fit averages the noise out. ``within``: fit only the
    nodes whose log-posterior is within that many nats of the grid's maximum — a posterior is
    quadratic near its mode, not 1000 nats down its slopes, so a grid much wider than the
    posterior is refused rather than fitted (too few nodes remain).

    Returns:
        ``(mean (P,), covariance (P, P))``.

    Raises:
        ConfigError: with fewer nodes than coefficients, or when the fitted curvature is not
            negative definite (the grid does not bracket a maximum).
    """
    axes = [np.asarray(a, dtype=np.float64) for a in axes]
    p = len(axes)
    mesh = np.meshgrid(*axes, indexing="ij")
    lp = np.asarray(log_likelihood, dtype=np.float64).reshape(mesh[0].shape)
    if log_prior is not None:
        lp = lp + np.broadcast_to(log_prior, lp.shape)
    ok = np.isfinite(lp).reshape(-1)
    if within is not None:
        ok &= (lp >= np.max(lp[np.isfinite(lp)]) - within).reshape(-1)
    centre = np.array([(a[0] + a[-1]) / 2 for a in axes])
    scale = np.array([(a[-1] - a[0]) / 2 for a in axes])
    u = np.stack([(m.reshape(-1) - c) / s for m, c, s in zip(mesh, centre, scale, strict=True)], 1)
    u, y = u[ok], lp.reshape(-1)[ok]
    pairs = [(i, j) for i in range(p) for j in range(i, p)]
    design = np.column_stack([np.ones(len(y)), u] + [u[:, i] * u[:, j] for i, j in pairs])
    if len(y) < design.shape[1]:
        near = "" if within is None else f" within {within:g} nats of the maximum"
        raise ConfigError(
            f"a Gaussian fit in {p} parameters needs ≥ {design.shape[1]} grid nodes{near}, "
            f"got {len(y)}: the grid does not resolve the posterior"
        )
    coef, *_ = np.linalg.lstsq(design, y - y.max(), rcond=None)
    b = coef[1 : 1 + p]
    h = np.zeros((p, p))
    for (i, j), c in zip(pairs, coef[1 + p :], strict=True):
        if i == j:
            h[i, i] = 2 * c
        else:
            h[i, j] = h[j, i] = c
    if np.any(np.linalg.eigvalsh(h) >= 0):
        raise ConfigError("the log-posterior on this grid is not concave: widen or move the grid")
    cov_u = -np.linalg.inv(h)
    mean_u = cov_u @ b
    return centre + scale * mean_u, cov_u * np.outer(scale, scale)


@dataclass
class GaussianPosterior:
    """The Gaussian N(mean, cov) fitted to a grid's log-posterior (:func:`gaussian_fit`), with
    the summary interface of :class:`GridPosterior` (``rho infer --fit gaussian``).

    For a grid of a few nodes per posterior σ, or a log-likelihood with Monte-Carlo noise, the
    trapezoid moments of :class:`GridPosterior` are biased (a 3-node axis cannot hold a bell) and
    noisy; the least-squares quadratic uses every node and averages the noise out. Exact when
    log p is quadratic in θ; a Laplace-type approximation otherwise.

    Attributes:
        names: parameter names.
        axes: the grid the fit used (for :meth:`edge_mass`).
        loc: fitted mean, shape ``(P,)``.
        cov: fitted covariance, shape ``(P, P)``.
    """

    names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    loc: np.ndarray
    cov: np.ndarray
    frame: WhitenedFrame | None = None

    def _i(self, i: int | str) -> int:
        return self.names.index(i) if isinstance(i, str) else int(i)

    def mean(self, i: int | str) -> float:
        return float(self.loc[self._i(i)])

    def std(self, i: int | str) -> float:
        i = self._i(i)
        return float(math.sqrt(self.cov[i, i]))

    def marginal_at(self, i: int | str, x: np.ndarray) -> np.ndarray:
        """The marginal density N(mean_i, cov_ii) at ``x``."""
        m, s = self.mean(i), self.std(i)
        z = (np.asarray(x, dtype=np.float64) - m) / s
        return np.exp(-0.5 * z * z) / (s * math.sqrt(2 * math.pi))

    def interval(self, i: int | str, level: float) -> tuple[float, float]:
        """Central interval mean ± z·std with z the standard normal's (1 + level)/2 quantile."""
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + level / 2))
        return self.mean(i) - z * self.std(i), self.mean(i) + z * self.std(i)

    def pit(self, i: int | str, value: float) -> float:
        from scipy.stats import norm

        return float(norm.cdf((value - self.mean(i)) / self.std(i)))

    def map(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.loc, strict=True)}

    def edge_mass(self, i: int | str) -> float:
        """The fitted marginal's mass *outside* the grid's range on axis ``i``: 0.046 for a
        grid of ± 2σ; large when the grid is narrower than the posterior or misses its mean
        (the fit then extrapolates). On a whitened grid (``frame``) axis ``i`` is the frame's
        u-axis ``i``."""
        i = self._i(i)
        if self.frame is not None:
            m, c = self.frame.to_u(self.loc, self.cov)
            m, s = m[i], math.sqrt(c[i, i])
        else:
            m, s = self.mean(i), self.std(i)
        ax = self.axes[i]
        return mass_outside(m, s, float(ax[0]), float(ax[-1]))

    def summary(self, levels: Sequence[float] = LEVELS) -> dict[str, dict]:
        """As :meth:`GridPosterior.summary`, plus ``correlation`` with the other parameters."""
        out = _summary(self, levels)
        if len(self.names) > 1:
            sd = np.sqrt(np.diag(self.cov))
            corr = self.cov / np.outer(sd, sd)
            for i, name in enumerate(self.names):
                out[name]["correlation"] = {
                    o: float(corr[i, j]) for j, o in enumerate(self.names) if j != i
                }
        return out


def gaussian_posterior(
    names: Sequence[str],
    axes: Sequence[np.ndarray],
    log_likelihood: np.ndarray,
    log_prior: np.ndarray | None = None,
    within: float | None = FIT_WITHIN,
) -> GaussianPosterior:
    """:func:`gaussian_fit` of log L + log π on the grid (the nodes ``within`` nats of the
    maximum), as a :class:`GaussianPosterior`.

    Raises:
        ConfigError: too few nodes, or no maximum inside the grid (not concave).
    """
    names = tuple(names)
    axes = tuple(np.asarray(a, dtype=np.float64) for a in axes)
    if len(names) != len(axes):
        raise ConfigError(f"{len(names)} names for {len(axes)} axes")
    loc, cov = gaussian_fit(axes, log_likelihood, log_prior, within=within)
    return GaussianPosterior(names, axes, loc, cov)


def grid_moments(post: GridPosterior) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(P,)`` and covariance ``(P, P)`` of a grid posterior: the node values weighted
    by density × trapezoid weights (the joint's cross-moments, which the marginals lose)."""
    w = post.density.copy()
    for j, ax in enumerate(post.axes):
        w = w * trapezoid_weights(ax).reshape([-1 if k == j else 1 for k in range(w.ndim)])
    w = (w / w.sum()).reshape(-1)
    pts = np.stack([m.reshape(-1) for m in np.meshgrid(*post.axes, indexing="ij")], 1)
    mean = w @ pts
    d = pts - mean
    return mean, (d * w[:, None]).T @ d


@dataclass
class WhitenedFrame:
    """A grid laid along a posterior's principal axes: nodes θ = centre + L u for u on the
    tensor grid ``axes`` (C order), L the Cholesky factor of the posterior covariance, so u is
    uncorrelated with unit variance where the posterior is Gaussian. A correlated posterior
    (a ridge in θ) is then covered by a few nodes per axis; on a tensor grid in θ it needs
    the spacing below the *conditional* σ.

    Attributes:
        centre: ``(P,)``. chol: ``(P, P)`` lower triangular. axes: the u nodes per axis.
    """

    centre: np.ndarray
    chol: np.ndarray
    axes: tuple[np.ndarray, ...]

    def points(self) -> np.ndarray:
        """θ at every node, ``(G, P)``, C order over ``axes``."""
        u = np.stack([m.reshape(-1) for m in np.meshgrid(*self.axes, indexing="ij")], 1)
        return self.centre + u @ self.chol.T

    def to_theta(self, loc_u: np.ndarray, cov_u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A Gaussian in u → the same in θ (mean, covariance)."""
        return self.centre + self.chol @ loc_u, self.chol @ cov_u @ self.chol.T

    def to_u(self, loc: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A Gaussian in θ → the same in u."""
        inv = np.linalg.inv(self.chol)
        return inv @ (np.asarray(loc) - self.centre), inv @ np.asarray(cov) @ inv.T

    def describe(self) -> dict:
        return {
            "centre": self.centre.tolist(),
            "chol": self.chol.tolist(),
            "u": [[float(a[0]), float(a[-1]), int(a.size)] for a in self.axes],
        }


def whitened_frame(
    mean: np.ndarray,
    cov: np.ndarray,
    width: float,
    count: int,
    floor: Sequence[float] | None = None,
) -> WhitenedFrame:
    """The frame of N(``mean``, ``cov``) with ``count`` nodes per u-axis over ± ``width``.

    Args:
        floor: per-parameter minimum std (e.g. the previous grid's spacing/√12 when the
            posterior fell between its nodes: its location is then known to a cell only); added
            to the covariance's diagonal as variance.

    Raises:
        ConfigError: a covariance that is not positive definite, or ``count`` < 2.
    """
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.array(cov, dtype=np.float64)
    if count < 2 or not width > 0:
        raise ConfigError(f"a whitened grid needs ≥ 2 nodes and width > 0, got {count}, {width}")
    if floor is not None:
        cov = cov + np.diag(np.square(np.asarray(floor, dtype=np.float64)))
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as exc:
        raise ConfigError(
            f"the posterior covariance is not positive definite: {cov.tolist()}"
        ) from exc
    u = np.linspace(-width, width, count)
    return WhitenedFrame(mean, chol, tuple(u.copy() for _ in mean))


# ----- passes: a grid, then zooms (tensor or whitened) ---------------------------------------


def pass_posterior(
    names: Sequence[str],
    axes: Sequence[np.ndarray],
    log_likelihood: np.ndarray,
    log_prior: np.ndarray | None,
    fit: str,
    frame: WhitenedFrame | None = None,
) -> tuple[GridPosterior, GaussianPosterior | None, str]:
    """One pass's posterior: ``(grid posterior, Gaussian or None, why the fit failed or "")``.

    On a tensor grid the Gaussian is the least-squares fit (``fit="gaussian"``) or None. On a
    whitened grid (``frame``; the grid posterior is then over the u-axes) there is always a
    Gaussian in θ: the fit in u mapped back, or — ``fit="grid"`` or a failed fit — the u-grid
    posterior's moments mapped back."""
    names = tuple(names)
    post = grid_posterior(names, axes, log_likelihood, log_prior)
    failed, loc, cov = "", None, None
    if fit == "gaussian":
        try:
            loc, cov = gaussian_fit(axes, log_likelihood, log_prior, within=FIT_WITHIN)
        except ConfigError as exc:
            failed = str(exc)
    if frame is None:
        if loc is None:
            return post, None, failed
        return post, GaussianPosterior(names, tuple(axes), loc, cov), ""
    if loc is None:  # the u-grid's moments; a posterior between nodes is known to a cell
        loc, cov = grid_moments(post)
        cell2 = np.array([float(np.max(np.diff(a))) ** 2 / 12 for a in axes])
        cov = cov + np.diag(np.maximum(cell2 - np.diag(cov), 0.0))
    loc, cov = frame.to_theta(loc, cov)
    return post, GaussianPosterior(names, tuple(axes), loc, cov, frame), failed


@dataclass
class InferencePass:
    """One grid pass of :func:`refine_posterior`.

    Attributes:
        axes: the tensor grid's axes — in θ, or in u for a whitened pass (``frame``).
        points: the nodes in θ, ``(G, P)``, C order over ``axes``.
        frame: the whitened frame, or None for a tensor grid in θ.
        log_prior / log_likelihood: node values, shape ``tuple(len(a) for a in axes)``.
        post: the grid posterior (over ``axes``). fitted: the Gaussian in θ, or None.
        failed: why the Gaussian fit failed ("" when it did not).
    """

    axes: list[np.ndarray]
    points: np.ndarray
    frame: WhitenedFrame | None
    log_prior: np.ndarray
    log_likelihood: np.ndarray
    post: GridPosterior
    fitted: GaussianPosterior | None
    failed: str

    @property
    def summary_source(self) -> GridPosterior | GaussianPosterior:
        return self.fitted if self.fitted is not None else self.post


def _next_grid(names, prev: InferencePass, priors, limits, fit, width, nodes, whiten, note):
    """Axes, points, frame and log-prior of the zoom pass after ``prev``."""
    f = prev.fitted
    brackets = f is not None and all(f.edge_mass(i) <= 0.35 for i in range(len(names)))
    if brackets and limits is not None:  # a fit whose mean left the training range: not trusted
        brackets = all(lo <= f.mean(i) <= hi for i, (lo, hi) in enumerate(limits))
    count = nodes or prev.axes[0].size
    if not whiten:
        axes = zoomed_axes(f if brackets else prev.post, limits, width, count)
        pts = np.stack([m.reshape(-1) for m in np.meshgrid(*axes, indexing="ij")], 1)
        return axes, pts, None, log_prior_grid(names, axes, priors)
    if brackets or prev.frame is not None:
        mean, cov, floor = f.loc, f.cov, None
    else:  # the tensor grid's joint moments, with at least a cell's uncertainty
        mean, cov = grid_moments(prev.post)
        floor = [float(np.max(np.diff(a))) / math.sqrt(12) for a in prev.axes]
    frame = whitened_frame(mean, cov, width, count, floor)
    pts = frame.points()
    axes = list(frame.axes)
    lp = log_prior_points(names, pts, priors).reshape(tuple(a.size for a in axes))
    for i, n in enumerate(names):
        lo, hi = limits[i] if limits is not None else (-math.inf, math.inf)
        if pts[:, i].min() < lo or pts[:, i].max() > hi:
            note(
                f"the whitened grid reaches {n} in [{pts[:, i].min():.4g}, {pts[:, i].max():.4g}],"
                f" beyond the training range [{lo:g}, {hi:g}]; the model extrapolates there"
            )
    return axes, pts, frame, lp


def refine_posterior(
    names: Sequence[str],
    axes: Sequence[np.ndarray],
    evaluate: Callable[[np.ndarray, int], np.ndarray],
    priors: Mapping[str, tuple] | None = None,
    limits: Sequence[tuple[float, float]] | None = None,
    *,
    zoom: int = 0,
    fit: str = "grid",
    width: float = 5.0,
    nodes: int = 0,
    whiten: bool = False,
    note: Callable[[str], None] = lambda m: None,
) -> list[InferencePass]:
    """A grid pass over ``axes``, then ``zoom`` passes around the posterior of the one before.

    Args:
        evaluate: ``(points (G, P), pass index) → log-likelihood (G,)`` in nats.
        priors: as :func:`log_prior_grid`. limits: per-parameter (lo, hi) the zooms keep to
            (tensor) or warn about (whitened).
        fit: ``"grid"`` (trapezoid) or ``"gaussian"`` (:func:`pass_posterior`).
        width, nodes: a zoom spans mean ± ``width`` std with ``nodes`` per axis (0: as the
            first grid).
        whiten: zoom along the previous posterior's principal axes (:func:`whitened_frame`):
            centred on its Gaussian when that brackets the grid (≤ 35 % of it outside), else on
            the grid's joint moments, widened by a cell/√12 per axis.

    Returns:
        Every pass, the last one's summary is the answer.
    """
    names = tuple(names)
    if fit not in ("grid", "gaussian"):
        raise ConfigError(f"--fit must be grid or gaussian, got {fit!r}")
    axes = [np.asarray(a, dtype=np.float64) for a in axes]
    pts = np.stack([m.reshape(-1) for m in np.meshgrid(*axes, indexing="ij")], 1)
    frame, lp = None, log_prior_grid(names, axes, priors)
    passes: list[InferencePass] = []
    for k in range(int(zoom) + 1):
        if k:
            axes, pts, frame, lp = _next_grid(
                names, passes[-1], priors, limits, fit, width, nodes, whiten, note
            )
        ll = np.asarray(evaluate(pts, k), dtype=np.float64).reshape(tuple(a.size for a in axes))
        post, fitted, failed = pass_posterior(names, axes, ll, lp, fit, frame)
        passes.append(InferencePass(list(axes), pts, frame, lp, ll, post, fitted, failed))
    return passes

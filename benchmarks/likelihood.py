"""Likelihood and parameter inference (rho_core.likelihood, .inference) against exact answers.

Sections (``--sections``, comma-separated; default ``gaussian,grf-exact,baseline`` and, with
``--checkpoint``, also ``trained-nll,trained-infer``):

``gaussian``
    The issue's target: the exact denoiser of N(μ, diag s²) data (``--dim`` coordinates, s linear
    from 0.05 to 1, μ uniform in [−½, ½]), ``--n`` samples drawn from it, linear and cosine
    schedules (T = 1000) with the default solver (rtol = atol = 1e-5, exact divergence). Columns:
    mean and max |bits/dim − closed form|, the mean signed error, the per-sample correlation,
    NFE and seconds per sample; then the same without the continuation past t = 0 and with the
    N(0, I) prior (what each part of the method buys), and a tolerance sweep.
``grf-exact``
    A 2-D 64² Gaussian random field with its *exact* Fourier-diagonal denoiser
    (``rho_core.exact.FourierGaussianDenoiser``) on the GRF recipe's schedule (cosine, shift −4),
    in a normalised space y = x / s (s = the field's one-point std), Hutchinson divergence
    (``--probes`` Rademacher probes). Reference: ``grf_log_prob`` (the density on the zero-mean
    subspace) + (M − 1) log s + the mean mode's term. The data live on the zero-mean hyperplane,
    which has no density in R^M; the ODE (continued past t = 0 with the frozen score) assigns the
    mean mode the density of a N(0, τ₀) variable at 0 with a ½ nat log-Jacobian, i.e. the
    constant −½ log(2π τ₀) + ½ with τ₀ = e^{−λ₀} (λ₀ the log-SNR at t = 0). This is the exact
    answer of the ideal model under the library's conventions; the trained model is compared
    with the same reference. Also: ODE-based inference with the exact denoiser (one field,
    ``--grid`` × ``--grid`` whitened nodes, ± ``--grid-width`` σ) against the exact posterior —
    validates the grid machinery on ODE log-likelihoods with Hutchinson noise (shared probes).
``baseline``
    ``--infer-fields`` (default 100) fresh GRF realisations with (A, n) drawn uniformly from the
    held-out box [0.5, 2] × [−2.25, −1.25]: the exact posterior (flat prior, ``grf_log_prob`` on
    a 41 × 41 grid of ±6 baseline σ around the power-spectrum fit) and the power-spectrum-fit
    baseline (weighted least squares of log P̂ on log |κ| over integer shells, covariance from
    the fit, Gaussian intervals). The exact posterior is integrated on a 41 × 41 grid of ±6σ in
    the fit's whitened (log A, n) coordinates (``WhitenedGrid``). Coverage of the 68/95 %
    intervals from the Gaussian PIT Φ((θ* − mean)/std) of the true values; the baseline's
    mean/std against the exact one.
``trained-nll``
    ``--fields`` fields from each ``--data`` store (evenly spread over the conditions), model
    log p (normalised space, the store's rows as condition) against the same reference as
    ``grf-exact``: mean NLL_model − NLL_exact and mean |·| in bits/dim, correlation, seconds per
    field, NFE.
``trained-levels``
    One field of the first ``--data`` store noised to x_t at each ``--levels`` step t: the
    model's log p_t(x_t) (``start_t``) against the exact Fourier density at that level — where
    in noise level the model's density departs from the truth.
``trained-infer``
    ``--model-infer-fields`` fields of the first ``--data`` store: model log p over a
    ``--grid`` × ``--grid`` grid (± ``--grid-width`` σ in the whitened coordinates of the
    power-spectrum fit, ``WhitenedGrid``), posterior moments by the trapezoid rule, against the
    exact posterior (41 × 41, ±6σ) and the baseline, per field and aggregated. Coverage uses the
    Gaussian PIT Φ((θ* − mean)/std) for every method.
    ``--infer-fit refine`` runs the user path instead (``rho infer --whiten``: a first pass over
    the training box, then whitened zooms; ``--refine FIRST,ZOOM,NODES``, default the
    pipeline's 15,2,9); a field on which the recipe fails is listed under ``failed``.
    ``--model-infer-skip K`` continues a run its ``--max-minutes`` stopped (merge the logs with
    ``benchmarks/merge_infer_logs.py``); ``--model-infer-indices I,J`` scores chosen store rows.
    ``--infer-fit gaussian-move``: when the Gaussian fit fails (the posterior peaks at the
    grid's edge), the grid is moved to its best node and evaluated again, at most twice (the
    record keeps the first grid's ``log_l`` and each move under ``moved``); the trapezoid only
    if it still fails.

    ``--ode-control-variate powerlaw`` subtracts the exact part of a power-law Gaussian
    reference from every Hutchinson probe (unbiased; docs/likelihood.md).

    .venv/bin/python benchmarks/likelihood.py [--sections ...] [--checkpoint RUN_DIR
        --data STORE [--data STORE2]] [--fields 4] [--model-infer-fields 2] [--grid 5]
        [--json FILE] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from rho_core.data.random_fields import gaussian_field, grf_log_prob, kappa_norm, spectrum_grid
from rho_core.errors import ConfigError
from rho_core.exact import FourierGaussianDenoiser, GaussianDenoiser
from rho_core.inference import compare_posteriors, coverage, grid_posterior, trapezoid_weights
from rho_core.likelihood import log_likelihood
from rho_core.schedules import make_schedule

LN2 = math.log(2.0)
HELD_OUT_BOX = ((0.5, 2.0), (-2.25, -1.25))


def _row(d: dict, keys: list[str], width: int = 11) -> str:
    out = []
    for k in keys:
        v = d.get(k)
        if isinstance(v, float):
            out.append(f"{v:>{width}.4g}")
        else:
            out.append(f"{v!s:>{width}}")
    return " ".join(out)


# ------------------------------------------------------------------------------------------
# 1. Diagonal Gaussian, exact denoiser
# ------------------------------------------------------------------------------------------


def gaussian_section(dim: int, n: int, seed: int = 0) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(seed)
    s = torch.linspace(0.05, 1.0, dim, dtype=torch.float64)
    mu = torch.rand(dim, generator=g, dtype=torch.float64) - 0.5
    x = mu + s * torch.randn(n, dim, generator=g, dtype=torch.float64)
    variants = [
        ("default", {}),
        ("no continuation", {"continuation": "none"}),
        ("N(0,I) prior", {"prior": "standard"}),
        ("rtol=atol=1e-3", {"rtol": 1e-3, "atol": 1e-3}),
        ("rtol=atol=1e-4", {"rtol": 1e-4, "atol": 1e-4}),
        ("rtol=atol=1e-7", {"rtol": 1e-7, "atol": 1e-7}),
    ]
    for name in ("linear", "cosine"):
        sch = make_schedule(name, 1000)
        den = GaussianDenoiser(sch, mu, s)
        ref = -den.log_prob(x) / (dim * LN2)
        for label, kw in variants:
            den.calls = 0
            t0 = time.perf_counter()
            res = log_likelihood(den, x, sch, **kw)
            dt = time.perf_counter() - t0
            err = res.bits_per_dim - ref
            rows.append(
                {
                    "schedule": name,
                    "variant": label,
                    "mean_abs_err_bpd": float(err.abs().mean()),
                    "max_abs_err_bpd": float(err.abs().max()),
                    "mean_err_bpd": float(err.mean()),
                    "corr": float(torch.corrcoef(torch.stack([res.bits_per_dim, ref]))[0, 1]),
                    "nfe": res.nfe,
                    "steps": res.steps,
                    "rejected": res.rejected,
                    "s_per_sample": dt / n,
                }
            )
    return rows


# ------------------------------------------------------------------------------------------
# 2. GRF with its exact Fourier denoiser
# ------------------------------------------------------------------------------------------


class BatchFourierDenoiser:
    """Exact ε̂ of zero-mean stationary Gaussian fields with a *per-sample* spectrum: ``cond`` is
    the power P(κ) ``(B, N, N)`` in the normalised units (one grid node of θ per row)."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.calls = 0

    def __call__(self, x, t, cond):
        self.calls += 1
        xd = x.to(torch.float64)
        abar = self.schedule.alpha_bar_at(t).to(torch.float64).view(-1, 1, 1, 1)
        a, s2 = abar.sqrt(), 1.0 - abar
        p = cond[:, None]
        f = torch.fft.fftn(xd, dim=(2, 3))
        x0 = torch.fft.ifftn(a * p / (a * a * p + s2) * f, dim=(2, 3)).real
        return ((xd - a * x0) / s2.sqrt()).to(x.dtype)


def mean_mode_term(schedule, method: str = "ode") -> float:
    """log-density the continued ODE (``+½``) or the ELBO (``+¼``, rho_core.elbo) gives a mode
    of zero data variance (module docstring)."""
    tau0 = math.exp(-float(schedule.log_snr_table[0]))
    return -0.5 * math.log(2 * math.pi * tau0) + (0.5 if method == "ode" else 0.25)


def exact_model_space(fields, amp, idx, scale: float, schedule, method: str = "ode") -> np.ndarray:
    """Reference log p in the model space y = (x − m)/scale for zero-mean GRF fields (B,)."""
    m = fields[0].size
    return (
        grf_log_prob(fields, amp, idx)
        + (m - 1) * math.log(scale)
        + mean_mode_term(schedule, method)
    )


def grf_exact_section(probes: int, n: int, grid: int, width: float, seed: int = 0) -> dict:
    size, amp, idx = 64, 1.0, -2.0
    rng = np.random.default_rng(seed)
    fields = np.stack([gaussian_field(size, 2, amp, idx, rng)[None] for _ in range(n)])
    sch = make_schedule("cosine", 1000, shift=-4.0)
    power = spectrum_grid(size, 2, amp, idx)
    scale = float(np.sqrt(power.sum() / size**2))
    den = FourierGaussianDenoiser(sch, torch.as_tensor(power / scale**2), mean=0.0)
    y = torch.as_tensor(fields / scale)
    ref = exact_model_space(fields, amp, idx, scale, sch)
    m = size * size
    t0 = time.perf_counter()
    res = log_likelihood(den, y, sch, probes=probes, generator=torch.Generator().manual_seed(0))
    dt = time.perf_counter() - t0
    err = (ref - res.log_prob.numpy()) / (m * LN2)  # NLL_model − NLL_exact, bits/dim
    out = {
        "fields": n,
        "probes": probes,
        "mean_err_bpd": float(err.mean()),
        "mean_abs_err_bpd": float(np.abs(err).mean()),
        "mean_reported_std_bpd": float(res.bits_per_dim_std.mean()),
        "err_over_std_rms": float(np.sqrt(np.mean((err / res.bits_per_dim_std.numpy()) ** 2))),
        "nfe": res.nfe,
        "s_per_field": dt / n,
    }
    # ODE inference with the exact denoiser on one field, against the exact posterior
    field = fields[:1]
    est = spectrum_fit(field[0, 0])
    grid_ = WhitenedGrid(est, grid, width)
    amps, idxs = grid_.flat()
    kn = kappa_norm(size, 2)
    safe = np.where(kn > 0, kn, 1.0)
    powers = np.stack([np.where(kn > 0, a * safe**i, 0.0) for a, i in zip(amps, idxs, strict=True)])
    bden = BatchFourierDenoiser(sch)
    g = amps.size
    yy = torch.as_tensor(field / scale).expand(g, -1, -1, -1)
    t0 = time.perf_counter()
    r = log_likelihood(
        bden, yy, sch, cond=torch.as_tensor(powers / scale**2), probes=probes, shared_probes=True,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    dt = time.perf_counter() - t0
    ll_ode = r.log_prob.numpy()
    ll_exact = exact_model_space(np.repeat(field, g, 0), amps, idxs, scale, sch)
    out["infer"] = {
        "grid": grid,
        "width_sigma": width,
        "nfe": r.nfe,
        "s_per_node": dt / g,
        "ll_diff_spread_nats": float(np.std(ll_ode - ll_exact)),
        "ode_grid": grid_.moments(ll_ode),
        "exact_same_grid": grid_.moments(ll_exact),
        "exact_fine": exact_moments(field[0, 0], est),
    }
    return out


# ------------------------------------------------------------------------------------------
# 3. Exact posterior and the power-spectrum-fit baseline
# ------------------------------------------------------------------------------------------


def spectrum_fit(field: np.ndarray) -> dict:
    """Power-spectrum-fit estimate of (A, n) with its covariance (the baseline).

    Shell estimates P̂_k = mean over |κ| ∈ [k − ½, k + ½) of |F|²/N^D for k = 1 … N/2, weighted
    least squares of log P̂_k on log k̄_k (k̄ the shell's mean |κ|) with weights n_k/2 (the
    number of independent complex modes; var log P̂ ≈ 2/n_k), and the bias E log P̂ ≈ log P − 1/n_k
    corrected. Returns ``{"amplitude": (est, std), "spectral_index": (est, std), "cov": …}``
    (the amplitude's std by the delta method)."""
    n = field.shape[0]
    kn = kappa_norm(n, field.ndim)
    f2 = np.abs(np.fft.fftn(field)) ** 2 / field.size
    shell = np.rint(kn).astype(int)
    xs, ys, ws = [], [], []
    for k in range(1, n // 2 + 1):
        sel = (shell == k) & (kn > 0)
        cnt = int(sel.sum())
        if cnt < 2:
            continue
        xs.append(np.log(kn[sel]).mean())
        ys.append(np.log(f2[sel].mean()) + 1.0 / cnt)
        ws.append(cnt / 2.0)
    x, y, w = np.array(xs), np.array(ys), np.array(ws)
    design = np.column_stack([np.ones_like(x), x])
    wd = design * w[:, None]
    cov = np.linalg.inv(design.T @ wd)
    beta = cov @ (wd.T @ y)
    amp = math.exp(beta[0])
    return {
        "amplitude": (amp, amp * math.sqrt(cov[0, 0])),
        "spectral_index": (float(beta[1]), math.sqrt(cov[1, 1])),
        "cov": cov,
    }


class WhitenedGrid:
    """A ``count`` × ``count`` tensor grid in whitened coordinates u ∈ [−w, w]² with
    (log A, n) = c + L u, c and L Lᵀ the power-spectrum fit's estimate and covariance.

    The (A, n) posterior of one field is a narrow, strongly correlated ridge (the amplitude at
    |κ| = 1 and the slope trade off), which an axis-aligned grid in (A, n) samples with only a
    few nodes; in u it is close to a unit Gaussian. The flat prior in A becomes the density
    factor A (|dA/du| ∝ A). Moments of (A, n) are trapezoid sums of the normalised density.
    """

    names = ("amplitude", "spectral_index")

    def __init__(self, est: dict, count: int, width: float, offset=(0.0, 0.0)):
        """``offset``: the grid's centre in u (a grid moved towards the posterior's peak)."""
        self.u = np.linspace(-width, width, count)
        chol = np.linalg.cholesky(est["cov"])
        self.offset = np.asarray(offset, dtype=np.float64)
        c = np.array([math.log(est["amplitude"][0]), est["spectral_index"][0]])
        c = c + chol @ self.offset
        self.centre, self.chol = c, chol
        uu = np.stack(np.meshgrid(self.u, self.u, indexing="ij"))  # (2, count, count)
        pts = c[:, None, None] + np.einsum("ij,jkl->ikl", chol, uu)
        self.amplitude = np.exp(pts[0])
        self.spectral_index = pts[1]

    @property
    def size(self) -> int:
        return self.amplitude.size

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        return self.amplitude.reshape(-1), self.spectral_index.reshape(-1)

    def moments(self, log_likelihood: np.ndarray) -> dict[str, tuple[float, float]]:
        """Posterior (mean, std) of A and n under a flat prior in (A, n)."""
        ll = np.asarray(log_likelihood, dtype=np.float64).reshape(self.amplitude.shape)
        post = grid_posterior(["u1", "u2"], [self.u, self.u], ll + np.log(self.amplitude))
        w1 = trapezoid_weights(self.u)
        w = post.density * np.outer(w1, w1)
        out = {}
        for name, v in (("amplitude", self.amplitude), ("spectral_index", self.spectral_index)):
            m = float(np.sum(w * v))
            out[name] = (m, math.sqrt(max(float(np.sum(w * (v - m) ** 2)), 0.0)))
        return out


def exact_moments(field: np.ndarray, est: dict, count: int = 41, width: float = 6.0) -> dict:
    """Exact posterior (mean, std) of (A, n) under a flat prior (``grf_log_prob`` on a fine
    whitened grid)."""
    grid = WhitenedGrid(est, count, width)
    a, n = grid.flat()
    many = np.broadcast_to(field, (grid.size, *field.shape))
    return grid.moments(grf_log_prob(many, a, n, dims=field.ndim))


def _gauss_pit(value: float, mean_std: tuple[float, float]) -> float:
    from scipy.stats import norm

    return float(norm.cdf((value - mean_std[0]) / mean_std[1]))


def baseline_section(n_fields: int, seed: int = 7) -> dict:
    """Exact posterior and power-spectrum fit on fresh fields; PIT of the true values from the
    Gaussian with each method's mean and std."""
    rng = np.random.default_rng(seed)
    names = WhitenedGrid.names
    rec = {k: {w: [] for w in ("ex_m", "ex_s", "bl_m", "bl_s", "pit_ex", "pit_bl")} for k in names}
    t0 = time.perf_counter()
    for _ in range(n_fields):
        truth = {"amplitude": rng.uniform(*HELD_OUT_BOX[0])}
        truth["spectral_index"] = rng.uniform(*HELD_OUT_BOX[1])
        field = gaussian_field(64, 2, truth["amplitude"], truth["spectral_index"], rng)
        est = spectrum_fit(field)
        ex = exact_moments(field, est)
        for k in names:
            r = rec[k]
            r["ex_m"].append(ex[k][0])
            r["ex_s"].append(ex[k][1])
            r["bl_m"].append(est[k][0])
            r["bl_s"].append(est[k][1])
            r["pit_ex"].append(_gauss_pit(truth[k], ex[k]))
            r["pit_bl"].append(_gauss_pit(truth[k], est[k]))
    out = {"fields": n_fields, "seconds": time.perf_counter() - t0}
    for k in names:
        r = rec[k]
        out[k] = {
            "exact_coverage": coverage(r["pit_ex"]),
            "baseline_coverage": coverage(r["pit_bl"]),
            "baseline_vs_exact": compare_posteriors(r["bl_m"], r["bl_s"], r["ex_m"], r["ex_s"]),
            "exact_std_median": float(np.median(r["ex_s"])),
        }
    return out


# ------------------------------------------------------------------------------------------
# 3b. The variational bound (ELBO) with exact denoisers
# ------------------------------------------------------------------------------------------


def gaussian_fit_moments(grid_: WhitenedGrid, log_likelihood: np.ndarray) -> dict:
    """Posterior (mean, std) of (A, n) from a Gaussian fit in the whitened coordinates u
    (``rho_core.inference.gaussian_fit`` of log L + log A: flat prior in (A, n)), moments of
    A = exp(c₀ + (L u)₀) and n by 20,000 draws. For coarse grids with Monte-Carlo noise."""
    from rho_core.inference import gaussian_fit

    lp = np.asarray(log_likelihood, dtype=np.float64).reshape(grid_.amplitude.shape)
    m, c = gaussian_fit([grid_.u, grid_.u], lp + np.log(grid_.amplitude))
    u = np.random.default_rng(0).multivariate_normal(m, c, 20000)
    p = grid_.centre + u @ grid_.chol.T
    a, n = np.exp(p[:, 0]), p[:, 1]
    return {
        "amplitude": (float(a.mean()), float(a.std())),
        "spectral_index": (float(n.mean()), float(n.std())),
    }


def peak_offset(grid_: WhitenedGrid, log_likelihood: np.ndarray) -> np.ndarray:
    """The u of the grid's highest posterior node (log L + log A), in the coordinates of the
    fit the grid was built from: where to centre the next grid when the Gaussian fit fails."""
    lp = np.asarray(log_likelihood, dtype=np.float64).reshape(grid_.amplitude.shape)
    i, j = np.unravel_index(int(np.argmax(lp + np.log(grid_.amplitude))), lp.shape)
    return grid_.offset + np.array([grid_.u[i], grid_.u[j]])


def elbo_gaussian_section(dim: int, n: int, seed: int = 0) -> list[dict]:
    """ELBO on the exact Gaussian denoiser: error and reported standard error vs K, for the
    control variates none / exact reference / a wrong reference (1.5 s², mean 0)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.linspace(0.05, 1.0, dim, dtype=torch.float64)
    mu = torch.rand(dim, generator=g, dtype=torch.float64) - 0.5
    x = mu + s * torch.randn(n, dim, generator=g, dtype=torch.float64)
    variants = [
        ("no control variate", {"control_variate": "none"}),
        ("exact reference", {"control_variate": (mu, s * s)}),
        ("reference 1.5 s², mean 0", {"control_variate": 1.5 * s * s}),
        ("ref 1.5 s², antithetic", {"control_variate": 1.5 * s * s, "antithetic": True}),
    ]
    rows = []
    for name in ("linear", "cosine"):
        sch = make_schedule(name, 1000)
        den = GaussianDenoiser(sch, mu, s)
        ref = -den.log_prob(x) / (dim * LN2)
        for label, kw in variants:
            for k in (16, 64, 256, 1024):
                t0 = time.perf_counter()
                res = log_likelihood(
                    den, x, sch, generator=torch.Generator().manual_seed(1), method="elbo",
                    samples=k, eval_batch=8192, **kw,
                )  # fmt: skip
                dt = time.perf_counter() - t0
                err = res.bits_per_dim - ref
                rows.append(
                    {
                        "schedule": name,
                        "variant": label,
                        "K": k,
                        "nfe": res.nfe,
                        "mean_err_bpd": float(err.mean()),
                        "mean_abs_err_bpd": float(err.abs().mean()),
                        "mean_se_bpd": float(res.bits_per_dim_std.mean()),
                        "corr": float(torch.corrcoef(torch.stack([res.bits_per_dim, ref]))[0, 1]),
                        "s_per_sample": dt / n,
                    }
                )
    return rows


def elbo_grf_section(n: int, infer_fields: int, samples: int, seed: int = 0) -> dict:
    """ELBO with the exact Fourier denoiser of 64² GRFs (cosine, shift −4), spectral control
    variate: NLL vs the exact density for K = 16…256 on ``n`` fields; then inference with
    common random numbers on ``infer_fields`` fields of the held-out box (3 × 3 whitened grid
    ±2σ of the power-spectrum fit, Gaussian fit) against the exact posterior — the ELBO's
    Monte-Carlo noise alone, without any model error."""
    size, amp, idx = 64, 1.0, -2.0
    rng = np.random.default_rng(seed)
    fields = np.stack([gaussian_field(size, 2, amp, idx, rng)[None] for _ in range(n)])
    sch = make_schedule("cosine", 1000, shift=-4.0)
    power = spectrum_grid(size, 2, amp, idx)
    scale = float(np.sqrt(power.sum() / size**2))
    ref = exact_model_space(fields, amp, idx, scale, sch, method="elbo")
    y = torch.as_tensor(fields / scale)
    bden = BatchFourierDenoiser(sch)
    p = torch.as_tensor(power / scale**2)[None].expand(n, -1, -1)
    m = size * size
    out: dict = {"fields": n, "nll": []}
    for k in (16, 64, 256):
        t0 = time.perf_counter()
        r = log_likelihood(bden, y, sch, cond=p, generator=torch.Generator().manual_seed(0),
                           method="elbo", samples=k, eval_batch=256)  # fmt: skip
        dt = time.perf_counter() - t0
        err = (ref - r.log_prob.numpy()) / (m * LN2)
        out["nll"].append(
            {
                "K": k,
                "mean_err_bpd": float(err.mean()),
                "mean_abs_err_bpd": float(np.abs(err).mean()),
                "mean_se_bpd": float(r.bits_per_dim_std.mean()),
                "mean_se_nats": float(r.log_prob_std.mean()),
                "s_per_field": dt / n,
            }
        )
    kn = kappa_norm(size, 2)
    safe = np.where(kn > 0, kn, 1.0)
    names = WhitenedGrid.names
    rec = {k: {w: [] for w in ("m", "s", "ex_m", "ex_s", "pit", "pit_ex")} for k in names}
    rng = np.random.default_rng(seed + 5)
    t0 = time.perf_counter()
    for f in range(infer_fields):
        truth = {"amplitude": rng.uniform(*HELD_OUT_BOX[0])}
        truth["spectral_index"] = rng.uniform(*HELD_OUT_BOX[1])
        field = gaussian_field(size, 2, truth["amplitude"], truth["spectral_index"], rng)
        est = spectrum_fit(field)
        grid_ = WhitenedGrid(est, 3, 2.0)
        amps, idxs = grid_.flat()
        powers = np.stack(
            [np.where(kn > 0, a * safe**i, 0.0) for a, i in zip(amps, idxs, strict=True)]
        )
        yy = torch.as_tensor(field[None, None] / scale).expand(amps.size, -1, -1, -1)
        r = log_likelihood(
            bden, yy, sch, cond=torch.as_tensor(powers / scale**2), method="elbo",
            samples=samples, shared_probes=True, eval_batch=512,
            generator=torch.Generator().manual_seed(f),
        )  # fmt: skip
        mo = gaussian_fit_moments(grid_, r.log_prob.numpy())
        ex = exact_moments(field, est)
        for k in names:
            rec[k]["m"].append(mo[k][0])
            rec[k]["s"].append(mo[k][1])
            rec[k]["ex_m"].append(ex[k][0])
            rec[k]["ex_s"].append(ex[k][1])
            rec[k]["pit"].append(_gauss_pit(truth[k], mo[k]))
            rec[k]["pit_ex"].append(_gauss_pit(truth[k], ex[k]))
    out["infer"] = {
        "fields": infer_fields,
        "samples": samples,
        "grid": "3x3 whitened ±2σ, Gaussian fit",
        "s_per_field": (time.perf_counter() - t0) / max(1, infer_fields),
    }
    for k in names:
        r_ = rec[k]
        out["infer"][k] = {
            "elbo_vs_exact": compare_posteriors(r_["m"], r_["s"], r_["ex_m"], r_["ex_s"]),
            "coverage_elbo": coverage(r_["pit"]),
            "coverage_exact": coverage(r_["pit_ex"]),
        }
    return out


# ------------------------------------------------------------------------------------------
# 4. Trained model
# ------------------------------------------------------------------------------------------


def _spread_indices(params: np.ndarray, k: int) -> np.ndarray:
    """``k`` rows spread over the distinct conditions: conditions evenly spaced in their sorted
    order, the next unused realisation of each (round robin when k exceeds the conditions)."""
    conds, inv = np.unique(params, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n_c = len(conds)
    order = np.unique(np.linspace(0, n_c - 1, min(k, n_c)).round().astype(int)).tolist()
    order += [c for c in range(n_c) if c not in order]
    picks, r = [], 0
    while len(picks) < min(k, len(params)):
        for c in order:
            rows = np.flatnonzero(inv == c)
            if r < len(rows) and len(picks) < k:
                picks.append(int(rows[r]))
        r += 1
    return np.array(picks)


def trained_nll_section(loaded, stores: list[str], n: int, opts: dict) -> list[dict]:
    from rho_core.data.store import open_store
    from rho_core.likelihood import model_log_likelihood

    norm = loaded.normalizer
    scale = norm.std if norm is not None and norm.transform == "standard" else 1.0
    if norm is not None and norm.transform not in ("standard", "identity"):
        raise SystemExit("trained-nll expects a 'standard' (or no) normalisation")
    rows = []
    for path in stores:
        st = open_store(path)
        idx = _spread_indices(st.params, n)
        fields, params = st.read_batch(idx)
        t0 = time.perf_counter()
        res = model_log_likelihood(loaded, fields, params, **opts)
        dt = time.perf_counter() - t0
        m = int(np.prod(fields.shape[1:]))
        ref = exact_model_space(
            fields.astype(np.float64), params[:, 0], params[:, 1], scale, loaded.model.schedule,
            method=opts.get("method", "ode"),
        )  # fmt: skip
        err = (ref - res.log_prob.numpy()) / (m * LN2)
        for j in range(len(idx)):
            rows.append(
                {
                    "store": path,
                    "index": int(idx[j]),
                    "amplitude": float(params[j, 0]),
                    "spectral_index": float(params[j, 1]),
                    "nll_model_bpd": float(-res.log_prob[j] / (m * LN2)),
                    "nll_exact_bpd": float(-ref[j] / (m * LN2)),
                    "diff_bpd": float(err[j]),
                    "std_bpd": float(res.bits_per_dim_std[j]),
                }
            )
        rows.append(
            {
                "store": path,
                "summary": True,
                "fields": len(idx),
                "mean_diff_bpd": float(err.mean()),
                "mean_abs_diff_bpd": float(np.abs(err).mean()),
                "corr": float(np.corrcoef(res.log_prob.numpy(), ref)[0, 1])
                if len(idx) > 2
                else None,
                "nfe": res.nfe,
                "s_per_field": dt / len(idx),
                "method": res.method,
            }
        )
    return rows


def trained_gap_section(loaded, store: str, n: int, ode_opts: dict, elbo_opts: dict) -> dict:
    """The variational bound's gap on the trained model: ELBO and ODE log p of the same fields
    (ELBO − ODE ≤ 0 up to Monte-Carlo noise; the mean-mode constants differ by ¼ nat, removed),
    each against the exact density; seconds and NFE per field of both."""
    from rho_core.data.store import open_store
    from rho_core.likelihood import model_log_likelihood

    st = open_store(store)
    idx = _spread_indices(st.params, n)
    fields, params = st.read_batch(idx)
    scale = loaded.normalizer.std if loaded.normalizer is not None else 1.0
    m = int(np.prod(fields.shape[1:]))
    out: dict = {"store": store, "fields": len(idx)}
    lp = {}
    for name, opts in (("ode", ode_opts), ("elbo", elbo_opts)):
        t0 = time.perf_counter()
        res = model_log_likelihood(loaded, fields, params, **opts)
        dt = time.perf_counter() - t0
        ref = exact_model_space(fields.astype(np.float64), params[:, 0], params[:, 1], scale,
                                loaded.model.schedule, method=name)  # fmt: skip
        lp[name] = res.log_prob.numpy() - (0.5 if name == "ode" else 0.25)
        err = (ref - res.log_prob.numpy()) / (m * LN2)
        out[name] = {
            "mean_diff_vs_exact_bpd": float(err.mean()),
            "per_field_diff_bpd": err.tolist(),
            "mean_se_bpd": float(res.bits_per_dim_std.mean()),
            "s_per_field": dt / len(idx),
            "nfe_per_field": res.nfe / max(1, -(-len(idx) // opts.get("batch_size", 8))),
        }
        print(f"  {name}: {json.dumps(out[name], default=float)}", flush=True)
    gap = (lp["ode"] - lp["elbo"]) / (m * LN2)
    out["gap_ode_minus_elbo_bpd"] = {"mean": float(gap.mean()), "per_field": gap.tolist()}
    return out


def trained_levels_section(loaded, store: str, times: list[float], opts: dict) -> list[dict]:
    """Model log p_t(x_t) of one noised field at several t against the exact Fourier density:
    where (in noise level) the model's density departs from the truth."""
    from rho_core.data.store import open_store
    from rho_core.likelihood import log_likelihood as ll_fn

    st = open_store(store)
    i = int(_spread_indices(st.params, 2)[-1])
    field, row = st.read(i)
    scale = loaded.normalizer.std if loaded.normalizer is not None else 1.0
    y0 = torch.as_tensor(field[None] / scale, dtype=torch.float64)
    sch = loaded.model.schedule
    power = spectrum_grid(field.shape[-1], field.ndim - 1, row[0], row[1]) / scale**2
    exact = FourierGaussianDenoiser(sch, torch.as_tensor(power), mean=0.0)
    cond = torch.as_tensor(row[None])
    g = torch.Generator().manual_seed(0)
    kw = {"rtol": opts["rtol"], "atol": opts["atol"], "probes": opts["probes"]}
    m = field.size
    rows = []
    for t in times:
        ab = float(sch.alpha_bar_at(torch.tensor(float(t), dtype=torch.float64)))
        noise = torch.randn(y0.shape, generator=g, dtype=torch.float64)
        xt = math.sqrt(ab) * y0 + math.sqrt(1 - ab) * noise
        t0 = time.perf_counter()
        rm = ll_fn(loaded.model.denoiser, xt.float(), sch, cond=cond, start_t=t, **kw,
                   generator=torch.Generator().manual_seed(1))  # fmt: skip
        dt = time.perf_counter() - t0
        re = ll_fn(exact, xt, sch, start_t=t, **kw, generator=torch.Generator().manual_seed(1))
        rows.append(
            {
                "t": float(t),
                "log_snr": float(sch.log_snr_at(torch.tensor(float(t), dtype=torch.float64))),
                "diff_bpd": float((re.log_prob - rm.log_prob)[0]) / (m * LN2),
                "std_bpd": float(rm.bits_per_dim_std[0]),
                "nfe": rm.nfe,
                "seconds": dt,
            }
        )
        print("  " + json.dumps(rows[-1]), flush=True)
    return rows


def theory_reference(amps: np.ndarray, idxs: np.ndarray, size: int, scale: float):
    """ELBO control variate ``("fourier", P)``: the GRF power of every grid node in the model's
    normalised units (ortho-FFT variances), ``(G, 1, N, N)``."""
    p = np.stack([spectrum_grid(size, 2, a, i) for a, i in zip(amps, idxs, strict=True)])
    return ("fourier", torch.as_tensor(p[:, None] / scale**2))


def refine_moments(
    loaded, field: np.ndarray, opts: dict, first: int = 15, zoom: int = 2, nodes: int = 9
) -> tuple[dict, int]:
    """Posterior (mean, std) of (A, n) by the path ``rho infer`` (and the pipeline) takes with
    ``--zoom ZOOM --whiten --zoom-nodes NODES`` (:func:`rho_core.inference.refine_posterior`):
    ``first`` × ``first`` over the model's training box, then ``zoom`` whitened zooms of
    ``nodes`` × ``nodes`` at ± 5σ (the pipeline's default: 15, 2, 9 = 387 nodes); every node's
    log p from the model."""
    from rho_core.inference import refine_posterior
    from rho_core.likelihood import model_log_likelihood

    cfg = loaded.model_config.conditioning
    names = list(WhitenedGrid.names)
    limits = [(cfg.param_low[list(cfg.param_names).index(n)],
               cfg.param_high[list(cfg.param_names).index(n)]) for n in names]  # fmt: skip
    axes = [np.linspace(lo, hi, first) for lo, hi in limits]
    nfe = 0

    def evaluate(points: np.ndarray, k: int) -> np.ndarray:
        nonlocal nfe
        many = np.broadcast_to(field, (len(points), *field.shape))
        res = model_log_likelihood(loaded, many, points, shared_probes=True, **opts)
        nfe += res.nfe
        return res.log_prob.numpy()

    passes = refine_posterior(
        names, axes, evaluate, None, limits, zoom=zoom, nodes=nodes, whiten=True
    )
    g = passes[-1].summary_source
    return {n: (g.mean(j), g.std(j)) for j, n in enumerate(names)}, nfe


def _refine_recipe(text: str) -> tuple[int, int, int]:
    """``"FIRST,ZOOM,NODES"`` → ints, with a one-line error on anything else."""
    try:
        first, zoom, nodes = (int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--refine {text!r}: expected three integers FIRST,ZOOM,NODES") from None
    if first < 3 or nodes < 3 or zoom < 0:
        raise SystemExit(f"--refine {text!r}: FIRST and NODES must be ≥ 3, ZOOM ≥ 0")
    return first, zoom, nodes


def trained_infer_section(
    loaded, store: str, n: int, grid: int, width: float, opts: dict, fit: str = "grid",
    reference: str = "periodogram", max_minutes: float | None = None, skip: int = 0,
    recipe: tuple[int, int, int] = (15, 2, 9), indices: list[int] | None = None,
    moves: int = 2,
) -> dict:  # fmt: skip
    from rho_core.data.store import open_store
    from rho_core.likelihood import model_log_likelihood

    st = open_store(store)
    idx = _spread_indices(st.params, n)[skip:]  # skip: resume after a run stopped by its budget
    if indices is not None:  # rerun chosen fields (e.g. those whose fit failed)
        idx = np.asarray(indices, dtype=np.int64)
    names = WhitenedGrid.names
    per_field, failed = [], []
    what = ("model_m", "model_s", "ex_m", "ex_s", "bl_m", "bl_s", "pit_model", "pit_ex", "pit_bl")
    agg = {k: {w: [] for w in what} for k in names}
    t_start = time.perf_counter()
    for i in idx:
        if max_minutes is not None and time.perf_counter() - t_start > 60 * max_minutes:
            print(f"  time budget of {max_minutes} min spent after {len(per_field)} fields")
            break
        field, row = st.read(int(i))
        truth = dict(zip(names, row.tolist(), strict=True))
        est = spectrum_fit(field[0].astype(np.float64))
        grid_ = WhitenedGrid(est, grid, width)
        amps, idxs = grid_.flat()
        t0 = time.perf_counter()
        if fit == "refine":  # the user path: rho infer --zoom Z --whiten over the training box
            try:
                model, nfe = refine_moments(loaded, field, opts, *recipe)
            except ConfigError as exc:  # e.g. a zoom with no finite node: counted, not hidden
                print(f"  field {i}: the recipe failed ({exc})", flush=True)
                failed.append({"index": int(i), "error": str(exc)})
                continue
            dt, fit_ok, extra = time.perf_counter() - t0, True, {}
        else:
            fields = np.broadcast_to(field, (grid_.size, *field.shape))
            kw = dict(opts)
            if kw.get("method") == "elbo" and reference == "theory":
                scale = loaded.normalizer.std if loaded.normalizer is not None else 1.0
                kw["control_variate"] = theory_reference(amps, idxs, field.shape[-1], scale)
            res = model_log_likelihood(
                loaded, fields, np.stack([amps, idxs], 1), shared_probes=True, **kw
            )
            dt = time.perf_counter() - t0
            fit_ok = True
            nfe = res.nfe
            extra = {"log_l": res.log_prob.tolist(), "log_l_std": res.log_prob_std.tolist()}
            if res.log_prob_probes is not None:  # the Hutchinson noise of node differences
                extra["log_l_probes"] = res.log_prob_probes.tolist()
            if fit in ("gaussian", "gaussian-move"):
                left = moves if fit == "gaussian-move" else 0
                cur, cur_ll = grid_, res.log_prob.numpy()
                while True:
                    try:
                        model = gaussian_fit_moments(cur, cur_ll)
                        break
                    except Exception as exc:  # no maximum inside the grid
                        peak = peak_offset(cur, cur_ll)
                        if left == 0 or np.allclose(peak, cur.offset):  # (best node = centre)
                            print(f"  field {i}: Gaussian fit failed ({exc}); trapezoid",
                                  flush=True)  # fmt: skip
                            model = cur.moments(cur_ll)
                            fit_ok = False
                            break
                    # move the grid to its best node and evaluate again (≤ `moves` times)
                    left -= 1
                    cur = WhitenedGrid(est, grid, width, offset=peak)
                    a2, n2 = cur.flat()
                    r2 = model_log_likelihood(
                        loaded, fields, np.stack([a2, n2], 1), shared_probes=True, **kw
                    )
                    cur_ll, nfe = r2.log_prob.numpy(), nfe + r2.nfe
                    extra.setdefault("moved", []).append(
                        {"offset": cur.offset.tolist(), "log_l": cur_ll.tolist()}
                    )
                    print(f"  field {i}: Gaussian fit failed; grid moved to u = "
                          f"{cur.offset.round(2).tolist()}", flush=True)  # fmt: skip
                dt = time.perf_counter() - t0
            else:
                model = grid_.moments(res.log_prob.numpy())
        exact = exact_moments(field[0].astype(np.float64), est)
        rec = {"index": int(i), "truth": truth, "seconds": dt, "nfe": nfe, "fit_ok": fit_ok,
               **extra}  # fmt: skip
        for k in names:
            rec[k] = {"model": model[k], "exact": exact[k], "baseline": est[k]}
            a = agg[k]
            for key, ms in (("model", model[k]), ("ex", exact[k]), ("bl", est[k])):
                a[f"{key}_m"].append(ms[0])
                a[f"{key}_s"].append(ms[1])
                a[f"pit_{key}"].append(_gauss_pit(truth[k], ms))
        per_field.append(rec)
        print(f"  field {i}: {json.dumps(rec, default=float)}", flush=True)
    pits = {k: {w: agg[k][f"pit_{w}"] for w in ("model", "ex", "bl")} for k in names}
    out = {"fields": len(per_field), "grid": grid, "width_sigma": width, "fit": fit,
           "reference": reference, "per_field": per_field, "pits": pits,
           "failed": failed}  # fmt: skip
    if fit == "refine":
        out["refine"] = dict(zip(("first", "zoom", "zoom_nodes"), recipe, strict=True))
    out["s_per_field"] = float(np.mean([r["seconds"] for r in per_field])) if per_field else None
    for k in names:
        a = agg[k]
        out[k] = {
            "model_vs_exact": compare_posteriors(a["model_m"], a["model_s"], a["ex_m"], a["ex_s"]),
            "baseline_vs_exact": compare_posteriors(a["bl_m"], a["bl_s"], a["ex_m"], a["ex_s"]),
            "coverage_model": coverage(a["pit_model"]),
            "coverage_exact": coverage(a["pit_ex"]),
            "coverage_baseline": coverage(a["pit_bl"]),
        }
    return out


def rank_plot(pits: dict, path: str, title: str, method: str = "elbo") -> None:
    """Calibration figure: PIT (rank) histograms of model / exact / baseline per parameter and
    the coverage curve (fraction of true values inside the central interval vs its level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rho_core.inference import rank_histogram

    names = list(pits)
    fig, axs = plt.subplots(1, len(names) + 1, figsize=(4.2 * (len(names) + 1), 3.4))
    labels = {"model": f"model ({method.upper()})", "ex": "exact", "bl": "power-spectrum fit"}
    levels = np.linspace(0, 1, 51)
    for j, k in enumerate(names):
        ax = axs[j]
        for w, c in (("ex", "C0"), ("bl", "C2"), ("model", "C3")):
            u = np.asarray(pits[k][w])
            h = rank_histogram(u, 10)
            ax.step(np.linspace(0, 1, 11), np.r_[h, h[-1]], where="post", color=c, label=labels[w])
            cov = [np.mean(np.abs(2 * u - 1) <= lv) for lv in levels]
            axs[-1].plot(levels, cov, color=c, ls="-" if j == 0 else "--",
                         label=f"{labels[w]}, {k}")  # fmt: skip
        n = len(pits[k]["model"])
        ax.axhline(n / 10, color="k", lw=0.8, ls=":")
        ax.set_xlabel(f"rank (PIT) of the true {k}")
        ax.set_ylabel("fields")
        ax.legend(fontsize=7)
    axs[-1].plot([0, 1], [0, 1], color="k", lw=0.8, ls=":")
    axs[-1].set_xlabel("credible level")
    axs[-1].set_ylabel("coverage")
    axs[-1].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", help="comma-separated (module docstring)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--n", type=int, default=32, help="samples in the Gaussian section")
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--grf-fields", type=int, default=8)
    ap.add_argument("--grid", type=int, default=5, help="nodes per parameter for ODE inference")
    ap.add_argument(
        "--grid-width", type=float, default=3.5, help="ODE grids span ± this many baseline σ"
    )
    ap.add_argument("--infer-fields", type=int, default=100, help="fields in the baseline section")
    ap.add_argument("--checkpoint")
    ap.add_argument("--data", action="append", default=[])
    ap.add_argument("--fields", type=int, default=4, help="fields per store (trained-nll)")
    ap.add_argument("--model-infer-fields", type=int, default=2)
    ap.add_argument("--model-infer-skip", type=int, default=0,
                    help="trained-infer: leave out the first K of those fields (continue a run "
                    "its --max-minutes stopped; merge the per-field records)")  # fmt: skip
    ap.add_argument("--levels", default="0,2,10,50,200,500", help="t of trained-levels")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--method", choices=("ode", "elbo"), default="ode",
                    help="likelihood of the trained sections")  # fmt: skip
    ap.add_argument("--samples", type=int, default=64, help="ELBO draws per field / grid node")
    ap.add_argument("--antithetic", action="store_true", help="ELBO antithetic pairs")
    ap.add_argument("--eval-batch", type=int, default=64, help="ELBO network inputs per call")
    ap.add_argument("--infer-fit", choices=("grid", "gaussian", "gaussian-move", "refine"),
                    default="grid",
                    help="trained-infer posterior moments: trapezoid or Gaussian fit on the "
                    "whitened grid (gaussian-move: when the fit fails, the grid moves to its "
                    "best node, at most twice), or refine: the rho infer --zoom 2 --whiten path "
                    "(15² over the training box, two whitened 9² zooms; --refine)")  # fmt: skip
    ap.add_argument("--model-infer-indices",
                    help="trained-infer: comma-separated store rows to score instead of the "
                    "spread selection (e.g. the fields whose fit failed)")  # fmt: skip
    ap.add_argument(
        "--refine",
        type=_refine_recipe,  # checked at parse time, not after the model and other sections
        default="15,2,9",
        metavar="FIRST,ZOOM,NODES",
        help="--infer-fit refine recipe: first-pass nodes per axis, whitened zoom "
        "passes, nodes per axis of each (the pipeline default 15,2,9; "
        "benchmarks/inference_grids.py scores recipes on the exact likelihood)",
    )
    ap.add_argument("--elbo-infer-fields", type=int, default=100, help="elbo-grf inference fields")
    ap.add_argument("--reference", choices=("periodogram", "theory"), default="periodogram",
                    help="trained-infer ELBO control variate: the field's periodogram or the "
                    "GRF spectrum of each grid node")  # fmt: skip
    ap.add_argument("--ode-control-variate", choices=("none", "spectral", "powerlaw", "head"),
                    default="none",
                    help="trained sections, ODE: the Hutchinson control variate "
                    "(rho_core.likelihood; none = the plain probes of sessions 7–11)")  # fmt: skip
    ap.add_argument("--plot", help="trained-infer calibration (rank) figure, PNG")
    ap.add_argument("--max-minutes", type=float, help="trained-infer: stop after this budget")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    default = "gaussian,grf-exact,baseline" + (
        ",trained-nll,trained-infer" if args.checkpoint else ""
    )
    sections = (args.sections or default).split(",")
    report: dict = {"args": vars(args)}

    if "gaussian" in sections:
        rows = gaussian_section(args.dim, args.n)
        report["gaussian"] = rows
        keys = ["schedule", "variant", "mean_abs_err_bpd", "max_abs_err_bpd", "mean_err_bpd"]
        keys += ["corr", "nfe", "s_per_sample"]
        print(f"\n== exact Gaussian denoiser, D = {args.dim}, {args.n} samples (bits/dim) ==")
        print(" ".join(f"{k[:11]:>15}" if i == 1 else f"{k[:11]:>11}" for i, k in enumerate(keys)))
        for r in rows:
            print(_row(r, keys[:1]) + f" {r['variant']:>15} " + _row(r, keys[2:]))
    if "grf-exact" in sections:
        out = grf_exact_section(args.probes, args.grf_fields, args.grid, args.grid_width)
        report["grf_exact"] = out
        print("\n== GRF 64², exact Fourier denoiser (cosine, shift −4), Hutchinson ==")
        print(json.dumps(out, indent=1, default=float))
    if "baseline" in sections:
        out = baseline_section(args.infer_fields)
        report["baseline"] = out
        print(f"\n== exact posterior vs power-spectrum fit, {args.infer_fields} held-out fields ==")
        print(json.dumps(out, indent=1, default=float))
    if "elbo-gaussian" in sections:
        rows = elbo_gaussian_section(args.dim, args.n)
        report["elbo_gaussian"] = rows
        print(f"\n== ELBO, exact Gaussian denoiser, D = {args.dim}, {args.n} samples (bits/dim) ==")
        for r in rows:
            print(json.dumps(r, default=float))
    if "elbo-grf" in sections:
        out = elbo_grf_section(args.grf_fields, args.elbo_infer_fields, args.samples)
        report["elbo_grf"] = out
        print("\n== ELBO, GRF 64², exact Fourier denoiser (cosine, shift −4) ==")
        print(json.dumps(out, indent=1, default=float))
    loaded = None
    ode_opts = {
        "rtol": args.rtol,
        "atol": args.rtol,
        "probes": args.probes,
        "batch_size": args.batch_size,
        "control_variate": args.ode_control_variate,
    }
    elbo_opts = {
        "method": "elbo",
        "samples": args.samples,
        "antithetic": args.antithetic,
        "eval_batch": args.eval_batch,
        "batch_size": args.batch_size,
    }
    opts = elbo_opts if args.method == "elbo" else ode_opts
    trained = {"trained-nll", "trained-infer", "trained-levels", "trained-gap"}
    if args.checkpoint and (trained & set(sections)):
        from rho_core.checkpoint import load_for_sampling

        loaded = load_for_sampling(args.checkpoint)
        report["checkpoint"] = {"path": str(loaded.path), "step": loaded.step}
        print(f"\ncheckpoint {loaded.path} (step {loaded.step})")
    if loaded is not None and "trained-nll" in sections:
        rows = trained_nll_section(loaded, args.data, args.fields, opts)
        report["trained_nll"] = rows
        print("\n== trained model NLL vs exact (bits/dim; diff = NLL_model − NLL_exact) ==")
        for r in rows:
            print(json.dumps(r, default=float))
    if loaded is not None and "trained-levels" in sections:
        print("\n== trained model log p_t(x_t) vs exact, by noise level (bits/dim) ==")
        times = [float(v) for v in args.levels.split(",")]
        report["trained_levels"] = trained_levels_section(loaded, args.data[0], times, ode_opts)
    if loaded is not None and "trained-gap" in sections:
        print("\n== trained model: ELBO vs ODE on the same fields ==")
        report["trained_gap"] = [
            trained_gap_section(loaded, d, args.fields, ode_opts, elbo_opts) for d in args.data
        ]
        for r in report["trained_gap"]:
            print(json.dumps({k: v for k, v in r.items()}, default=float))
    if loaded is not None and "trained-infer" in sections:
        out = trained_infer_section(
            loaded, args.data[0], args.model_infer_fields, args.grid, args.grid_width, opts,
            fit=args.infer_fit, reference=args.reference, max_minutes=args.max_minutes,
            skip=args.model_infer_skip, recipe=args.refine,
            indices=[int(v) for v in args.model_infer_indices.split(",")]
            if args.model_infer_indices else None,
        )  # fmt: skip
        report["trained_infer"] = out
        if args.plot:
            title = f"{loaded.path} step {loaded.step}: {out['fields']} fields of {args.data[0]}"
            rank_plot(out["pits"], args.plot, title, args.method)
        print("\n== trained model inference vs exact posterior and baseline ==")
        print(
            json.dumps(
                {k: v for k, v in out.items() if k not in ("per_field", "pits")},
                indent=1,
                default=float,
            )
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=float)


if __name__ == "__main__":
    main()

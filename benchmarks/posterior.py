"""Posterior sampling (rho_core.inverse) against exact Gaussian posteriors: accuracy and cost.

Sections (``--sections``, comma-separated):

``gaussian``
    The issue's target with the exact denoiser of a diagonal Gaussian prior (32 coordinates, std
    log-spaced over 0.05 … 1, mean 0.3·N(0, 1)), a random 8 × 32 operator (N(0, 1/32) entries)
    and σ_y = 0.05: ``--n`` samples (default 2,000) against the closed-form posterior
    (``rho_core.exact.gaussian_posterior``). Columns: max and rms over coordinates of the mean
    error in Monte-Carlo units (z = (mean − m)/(sd/√n); ≈ N(0, 1) each when right), the ratio
    sample std / exact std (mean, min, max over coordinates), ‖A·mean − y‖/‖A·m − y‖ (the data
    fit relative to the exact posterior mean's), denoiser evaluations. MMPS with its defaults and
    variants (steps, CG iterations, sampler), and DPS (Chung et al.) at several step sizes.
``grf-exact``
    A 2-D 64² Gaussian random field (``--grf-params``, default A = 1, n = −2, in units of its
    one-point std) with its *exact* Fourier-diagonal denoiser (``FourierGaussianDenoiser``) on the
    GRF recipe's schedule (cosine, shift −4): inpainting from a random 50 % mask and a 4× block
    average, σ_y = ``--grf-noise`` × the field std. The reference is the exact Gaussian
    conditional (dense 4096 × 4096 prior covariance, Cholesky of A C Aᵀ + σ² I): its mean (the
    Wiener filter) and per-pixel variance, and exact posterior draws by Matheron's rule
    x = x' + K (y − A x' − σ n'). Scores on the unobserved pixels (all pixels for the block
    average): rms error of the sample mean in units of the prior std, beside the Monte-Carlo
    floor √(mean var/K)/prior std; the mean over pixels of sample var / exact var; the shell
    power spectrum of the samples against the exact posterior draws' (worst |R − 1| in units of
    the combined standard error). This isolates the CG iterations a 2,048-observation problem
    needs from the network's own error.
``grf``
    The same two tasks with a trained GRF checkpoint (``--checkpoint``; a fresh realisation not in
    any store, ``--truth-seed``), the observation and noise converted to the model's normalised
    space exactly as ``rho sample --observed`` does (``observation_in_model_space``), samples
    mapped back to physical units. Also the seconds per sample of MMPS, DPS and the unguided
    sampler at the same steps. Network or guidance? ``--methods`` also takes ``exact`` (MMPS with
    the exact Fourier denoiser in the model's space: the same path with a perfect prior),
    ``hyb-J`` (the network's x̂₀ with the exact prior's Jacobian, i.e. exact Tweedie Σ) and
    ``hyb-x0`` (the exact x̂₀ with the network's Jacobian); ``iso`` = no Jacobian at all.

``harmonics``
    A trained spherical-harmonics checkpoint (``--sh-checkpoint``, ``--sh-store`` its store): a
    random 25 % (``--sh-fraction``) of the voxels of ``--sh-conditions`` harmonics observed with
    noise σ_y = ``--sh-noise`` × the field's RMS; rel_l2 (all voxels, and the unobserved ones) of
    the posterior samples of each of ``--methods`` (``mmps``, ``dps``, ``iso`` = MMPS with the
    isotropic Σ at every noise level) beside the same model's unguided samples, seconds per sample
    of each. ``--sh-unconditional`` uses the null condition as the prior (a model trained with
    ``cond_drop_prob`` > 0), so the observation alone must identify the harmonic.

    .venv/bin/python benchmarks/posterior.py [--sections gaussian,grf-exact,grf,harmonics]
        [--n 2000] [--checkpoint RUN_DIR] [--grf-params 1,-2] [--k 16] [--steps 50] [--cg 8]
        [--sh-checkpoint RUN --sh-store STORE [--sh-unconditional] [--sh-noise 0.05]]
        [--methods mmps,dps,iso] [--tweedie-min-log-snr L] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import numpy as np
import torch

from rho_core.exact import FourierGaussianDenoiser, GaussianDenoiser, gaussian_posterior
from rho_core.inverse import DEFAULT_CG_ITERS, DEFAULT_STEPS, sample_posterior
from rho_core.operators import BlockAverage, Linear, Mask
from rho_core.schedules import make_schedule

# ------------------------------------------------------------------------------------------
# 1. Diagonal Gaussian prior, random 8 × 32 operator (the target)
# ------------------------------------------------------------------------------------------


def gaussian_problem(seed: int = 0, n: int = 32, m: int = 8, sigma_y: float = 0.05):
    """(mean, std, A, y, σ_y): the problem of tests/test_inverse.py."""
    g = torch.Generator().manual_seed(seed)
    std = torch.exp(torch.linspace(math.log(0.05), 0.0, n, dtype=torch.float64))
    std = std[torch.randperm(n, generator=g)]
    mean = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    a = torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    x_true = mean + std * torch.randn(n, generator=g, dtype=torch.float64)
    y = a @ x_true + sigma_y * torch.randn(m, generator=g, dtype=torch.float64)
    return mean, std, a, y, sigma_y


GAUSSIAN_RUNS = [
    ("mmps (defaults)", {}),
    ("mmps Tweedie at all λ", {"tweedie_min_log_snr": None}),
    ("mmps steps=20", {"steps": 20}),
    ("mmps steps=100", {"steps": 100}),
    ("mmps cg_iters=4", {"cg_iters": 4}),
    ("mmps cg_iters=2", {"cg_iters": 2}),
    ("mmps cg_iters=1", {"cg_iters": 1}),
    ("mmps ddim(η=0) 50", {"sampler": "ddim"}),
    ("mmps ddpm 50", {"sampler": "ddpm"}),
    ("mmps ddpm 200", {"sampler": "ddpm", "steps": 200}),
    ("mmps ddpm 1000", {"sampler": "ddpm", "steps": 1000}),
    ("dps ζ=1, 50", {"method": "dps"}),
    ("dps ζ=1, 1000", {"method": "dps", "steps": 1000}),
    ("dps ζ=0.1, 1000", {"method": "dps", "steps": 1000, "dps_scale": 0.1}),
    ("dps ζ=0.3, 200", {"method": "dps", "steps": 200, "dps_scale": 0.3}),
]


def run_gaussian(n_samples: int, seed: int = 1) -> list[dict]:
    mean, std, a, y, sy = gaussian_problem()
    pm, pc = gaussian_posterior(mean, std, a, y, sy)
    psd = pc.diag().sqrt()
    schedule = make_schedule("cosine", 1000)
    rows = []
    for label, kw in GAUSSIAN_RUNS:
        den = GaussianDenoiser(schedule, mean.view(1, -1), std.view(1, -1))
        t0 = time.perf_counter()
        x = sample_posterior(
            den, (n_samples, 1, 32), schedule, y.float(), Linear(a), sy,
            generator=torch.Generator().manual_seed(seed), **kw,
        )  # fmt: skip
        dt = time.perf_counter() - t0
        x = x.double().flatten(1)
        z = (x.mean(0) - pm) / (psd / math.sqrt(n_samples))
        ratio = x.std(0) / psd
        fit = torch.linalg.vector_norm(a @ x.mean(0) - y) / torch.linalg.vector_norm(a @ pm - y)
        rows.append(
            {
                "run": label,
                "z_max": float(z.abs().max()),
                "z_rms": float(z.pow(2).mean().sqrt()),
                "std_ratio_mean": float(ratio.mean()),
                "std_ratio_min": float(ratio.min()),
                "std_ratio_max": float(ratio.max()),
                "fit_ratio": float(fit),
                "nfe": den.calls,
                "seconds": dt,
            }
        )
    return rows


def print_gaussian(rows: list[dict], n: int) -> None:
    print(f"\n1. Exact Gaussian prior (32 coords, std 0.05…1), A 8×32, σ_y = 0.05, {n} samples")
    print(f"   MC error of one std ratio ≈ {1 / math.sqrt(2 * n):.3f}; z ≈ N(0, 1) per coordinate")
    print(f"   {'run':<20} {'z max':>7} {'z rms':>7} {'std ratio mean [min, max]':>27} "
          f"{'fit':>6} {'NFE':>5} {'s':>6}")  # fmt: skip
    for r in rows:
        print(
            f"   {r['run']:<20} {r['z_max']:7.2f} {r['z_rms']:7.2f} {r['std_ratio_mean']:11.3f} "
            f"[{r['std_ratio_min']:.3f}, {r['std_ratio_max']:.3f}] {r['fit_ratio']:6.3f} "
            f"{r['nfe']:5d} {r['seconds']:6.1f}"
        )


# ------------------------------------------------------------------------------------------
# 2. Gaussian random field: exact Gaussian conditional (Wiener filter) as the reference
# ------------------------------------------------------------------------------------------


def operator_matrix(op, sample_shape) -> np.ndarray:
    """Dense (M, N) matrix of a linear operator (its rows = op applied to unit vectors)."""
    n = math.prod(sample_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *sample_shape)
    return op(eye).numpy().T.copy()


class Wiener:
    """Exact conditional of x ~ N(0, C) given y = A x + σ n: mean, per-pixel variance, draws.

    K = C Aᵀ (A C Aᵀ + σ² I)⁻¹; mean = K y; var = diag(C) − rowsum(K ∘ C Aᵀ); a posterior
    draw is x' + K (y − A x' − σ n') with x' ~ N(0, C), n' ~ N(0, I) (Matheron's rule).
    """

    def __init__(self, cov: np.ndarray, a: np.ndarray, sigma: float) -> None:
        self.cov, self.a, self.sigma = cov, a, float(sigma)
        cat = cov @ a.T  # C Aᵀ, (N, M)
        gram = a @ cat + self.sigma**2 * np.eye(a.shape[0])
        chol = np.linalg.cholesky(gram)
        self.gain = np.linalg.solve(chol.T, np.linalg.solve(chol, cat.T)).T  # (N, M)
        self.var = np.diag(cov) - np.einsum("nm,nm->n", self.gain, cat)
        w, v = np.linalg.eigh(cov)
        self.prior_root = v * np.sqrt(np.clip(w, 0.0, None))  # C = R Rᵀ

    def mean(self, y: np.ndarray) -> np.ndarray:
        return self.gain @ y

    def draws(self, y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        xp = (self.prior_root @ rng.standard_normal((self.cov.shape[0], k))).T  # (k, N)
        yp = xp @ self.a.T + self.sigma * rng.standard_normal((k, self.a.shape[0]))
        return xp + (y[None] - yp) @ self.gain.T


def shell_power(fields: np.ndarray) -> np.ndarray:
    """Per-field mean |F|²/N^D in integer shells s = 1 … N/2, (K, N/2)."""
    from rho_core.field_stats import shell_power as sp

    per_field, _ = sp(fields)
    return per_field


def compare(samples: np.ndarray, ref_draws: np.ndarray, w: Wiener, y: np.ndarray, free, size):
    """Scores of posterior ``samples`` (K, N) against the exact conditional (docstring)."""
    k = samples.shape[0]
    prior_sd = float(np.sqrt(np.mean(np.diag(w.cov))))
    mean_ref, var_ref = w.mean(y), w.var
    err = samples.mean(0) - mean_ref
    mean_err = float(np.sqrt(np.mean(err[free] ** 2)) / prior_sd)
    floor = float(np.sqrt(np.mean(var_ref[free]) / k) / prior_sd)
    var = samples.var(0, ddof=1)
    ratio = var[free] / var_ref[free]
    ps = shell_power(samples.reshape(k, size, size))
    pr = shell_power(ref_draws.reshape(-1, size, size))
    se = np.sqrt(ps.var(0, ddof=1) / k + pr.var(0, ddof=1) / len(pr)) / pr.mean(0)
    r = ps.mean(0) / pr.mean(0)
    return {
        "mean_err_over_prior_sd": mean_err,
        "mc_floor_over_prior_sd": floor,
        # the mean's systematic part: rms error with the Monte-Carlo floor taken out in quadrature
        "bias_over_prior_sd": float(np.sqrt(max(mean_err**2 - floor**2, 0.0))),
        "var_ratio_mean": float(ratio.mean()),
        "var_ratio_of_means": float(var[free].mean() / var_ref[free].mean()),
        "pk_mean_abs_err": float(np.mean(np.abs(r - 1))),
        "pk_worst_se": float(np.max(np.abs(r - 1) / se)),
        "post_sd_over_prior_sd": float(np.sqrt(np.mean(var_ref[free])) / prior_sd),
    }


def method_options(method: str, options: dict) -> dict:
    """sample_posterior keywords of a benchmark method: ``mmps``, ``dps`` or ``iso`` (MMPS with
    the isotropic Σ = v σ²/(α² v + σ²) I at every noise level: no network derivative)."""
    if method == "iso":
        return {**options, "method": "mmps", "tweedie_min_log_snr": math.inf}
    return {**options, "method": method}


def grf_tasks(size: int, seed: int = 0):
    """The two observation operators: a random 50 % pixel mask and a 4× block average."""
    rng = np.random.default_rng(seed)
    mask = rng.random((size, size)) < 0.5
    return [("mask 50%", Mask(mask), ~mask.reshape(-1)), ("coarse 4x", BlockAverage(4), None)]


def run_grf_exact(
    amp: float, index: float, noise: float, k: int, cg_list, steps_list, size: int = 64,
    methods=("mmps",), **options,
):  # fmt: skip
    from rho_core.data.random_fields import (
        field_variance,
        gaussian_field,
        grf_covariance,
        spectrum_grid,
    )

    var = field_variance(size, 2, amp, index)
    cov = grf_covariance(size, 2, amp, index) / var  # unit one-point variance
    power = torch.as_tensor(spectrum_grid(size, 2, amp, index) / var)
    truth = gaussian_field(size, 2, amp, index, np.random.default_rng(777)) / math.sqrt(var)
    schedule = make_schedule("cosine", 1000, shift=-4.0)
    rows = []
    for name, op, free in grf_tasks(size):
        a = operator_matrix(op, (1, size, size))
        free = np.ones(size * size, bool) if free is None else free
        rng = np.random.default_rng(5)
        y = a @ truth.reshape(-1) + noise * rng.standard_normal(a.shape[0])
        t0 = time.perf_counter()
        w = Wiener(cov, a, noise)
        ref = w.draws(y, 256, rng)
        t_ref = time.perf_counter() - t0
        for method, steps, cg in itertools.product(methods, steps_list, cg_list):
            den = FourierGaussianDenoiser(schedule, power)
            stats: dict = {}
            t0 = time.perf_counter()
            x = sample_posterior(
                den, (k, 1, size, size), schedule, torch.as_tensor(y).float(), op, noise,
                generator=torch.Generator().manual_seed(1), steps=steps, cg_iters=cg,
                stats=stats, **method_options(method, options),
            )  # fmt: skip
            dt = time.perf_counter() - t0
            s = x.double().reshape(k, -1).numpy()
            row = {"task": name, "method": method, "steps": steps, "cg_iters": cg, "seconds": dt,
                   "M": a.shape[0], "guards": stats}  # fmt: skip
            row.update(compare(s, ref, w, y, free, size))
            rows.append(row)
            print_grf_row(row, flush=True)
        rows[-1]["reference_seconds"] = t_ref
    return rows


def print_grf_header(title: str) -> None:
    print(f"\n{title}")
    print(f"   {'task':<10} {'steps':>5} {'CG':>3} {'mean err':>8} {'(floor)':>8} {'bias':>6} "
          f"{'var ratio':>9} {'(of means)':>10} {'P(k) |R−1|':>10} {'worst/se':>8} "
          f"{'s':>7}")  # fmt: skip


def guard_summary(stats: dict) -> str:
    """Share of the Tweedie sample-steps where a guard fired: isotropic fallback / CG cut short."""
    n = stats.get("tweedie_steps", 0) * stats["sample_steps"] // max(stats.get("steps", 1), 1)
    if not n:
        return ""
    return (f" fallback {stats['fallbacks'] / n:.0%} CG-cut {stats['curvature_stops'] / n:.0%}"
            f" of {stats['tweedie_steps']} Tweedie steps")  # fmt: skip


def print_grf_row(r: dict, flush: bool = False) -> None:
    extra = f" {r['method']:<5}" if "method" in r else ""
    extra += guard_summary(r.get("guards", {}))
    print(
        f"   {r['task']:<10} {r['steps']:5d} {r['cg_iters']:3d} "
        f"{r['mean_err_over_prior_sd']:8.3f} {r['mc_floor_over_prior_sd']:8.3f} "
        f"{r['bias_over_prior_sd']:6.3f} "
        f"{r['var_ratio_mean']:9.3f} {r['var_ratio_of_means']:10.3f} "
        f"{r['pk_mean_abs_err']:10.3f} {r['pk_worst_se']:8.1f} {r['seconds']:7.1f}{extra}",
        flush=flush,
    )


# ------------------------------------------------------------------------------------------
# 3. Trained GRF model
# ------------------------------------------------------------------------------------------


class HybridDenoiser:
    """x̂₀ whose *value* comes from one denoiser and whose *Jacobian* ∂x̂₀/∂x_t from another::

        x̂₀(x) = value(x).detach() + jac(x) − jac(x).detach()

    With a trained network and the exact Fourier denoiser of the same GRF (in model space) this
    splits a posterior error into the network's mean (x̂₀, i.e. its prior) and its covariance
    (the Tweedie Σ = (σ²/α) J that MMPS takes from the Jacobian). Exposes ``x0`` so
    :func:`rho_core.inverse.sample_posterior` uses it directly."""

    def __init__(self, value, jac) -> None:
        self.value, self.jac = value, jac

    def x0(self, x, t):
        j = self.jac(x, t).to(x.dtype)
        return self.value(x, t).to(x.dtype).detach() + j - j.detach()

    def __call__(self, x, t, cond=None):  # ε̂, for completeness (sample_posterior uses x0)
        raise NotImplementedError("HybridDenoiser is meant for sample_posterior (x0)")


def run_grf_model(
    checkpoint: str, amp: float, index: float, noise: float, k: int, steps: int, cg: int,
    methods=("mmps", "dps"), truth_seed: int = 777, **options,
):  # fmt: skip
    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.random_fields import field_variance, gaussian_field, grf_covariance
    from rho_core.inverse import observation_in_model_space
    from rho_core.samplers import sample

    loaded = load_for_sampling(checkpoint, "cpu")
    model = loaded.model
    shape = tuple(loaded.field_shape)
    size = shape[-1]
    var = field_variance(size, 2, amp, index)
    sd = math.sqrt(var)
    cov = grf_covariance(size, 2, amp, index)
    truth = gaussian_field(size, 2, amp, index, np.random.default_rng(truth_seed))
    cond = torch.tensor([[amp, index]], dtype=torch.float64).expand(k, 2)
    norm = loaded.normalizer
    # the exact prior in the model's space (affine normalisation z = a x + b: mean b, power a²P)
    from rho_core.data.random_fields import spectrum_grid
    from rho_core.diffusion import x0_from_output

    zero = float(np.asarray(norm.forward(np.zeros(1)))[0]) if norm is not None else 0.0
    slope = float(np.asarray(norm.forward(np.ones(1)))[0]) - zero if norm is not None else 1.0
    power = torch.as_tensor(spectrum_grid(size, 2, amp, index) * slope**2)
    exact = FourierGaussianDenoiser(model.schedule, power, mean=zero)

    def net_x0(x, t):
        out = model(x, t, cond[: x.shape[0]]).to(x.dtype)
        return x0_from_output(model.prediction, model.schedule, x, t, out)

    denoisers = {
        "exact": exact,  # the exact prior through the same model-space path (a check)
        "hyb-J": HybridDenoiser(net_x0, exact.x0),  # network x̂₀, exact Jacobian
        "hyb-x0": HybridDenoiser(exact.x0, net_x0),  # exact x̂₀, network Jacobian
    }
    rows = []
    # unguided cost at the same steps (and a check of the prior's own variance)
    t0 = time.perf_counter()
    with torch.inference_mode():
        xu = sample(model.denoiser, (k, *shape), model.schedule, method="dpmpp", steps=steps,
                    cond=cond, generator=torch.Generator().manual_seed(2))  # fmt: skip
    t_uncond = time.perf_counter() - t0
    xu = xu.double().numpy()
    xu = np.asarray(norm.inverse(xu)) if norm is not None else xu
    prior_var_ratio = float(xu.reshape(k, -1).var(0, ddof=1).mean() / var)
    for name, op, free in grf_tasks(size):
        a = operator_matrix(op, shape)
        free = np.ones(size * size, bool) if free is None else free
        rng = np.random.default_rng(5)
        sigma = noise * sd
        # the observation: y = A x + σ n in physical units (the store-free analogue of
        # `rho sample --observed`, which takes y = A x of a stored field)
        y_phys = a @ truth.reshape(-1) + sigma * rng.standard_normal(a.shape[0])
        w = Wiener(cov, a, sigma)
        ref = w.draws(y_phys, 256, rng)
        # model space: y_z = A T(x) — for an affine T, T applied to the observation's values
        # (a block average of an affine map is the affine map of the block average)
        y_z, s_z = observation_in_model_space(truth[None], op, sigma, norm)
        # the noise realisation is added in physical units, then mapped with the slope of T
        y_z = y_z + (torch.as_tensor(y_phys) - torch.as_tensor(a @ truth.reshape(-1))) * float(
            s_z[0] / sigma
        )
        for method in methods:
            stats: dict = {}
            t0 = time.perf_counter()
            den, how = denoisers.get(method, model.denoiser), method
            if method in denoisers:
                how = "mmps"
            x = sample_posterior(
                den, (k, *shape), model.schedule, y_z.float(), op, s_z.float(),
                cond=cond, generator=torch.Generator().manual_seed(1), steps=steps,
                cg_iters=cg, stats=stats, **method_options(how, options),
            )  # fmt: skip
            dt = time.perf_counter() - t0
            s = x.double().numpy()
            s = np.asarray(norm.inverse(s)) if norm is not None else s
            row = {"task": name, "method": method, "steps": steps, "cg_iters": cg,
                   "seconds": dt, "s_per_sample": dt / k, "M": a.shape[0],
                   "uncond_s_per_sample": t_uncond / k,
                   "prior_var_ratio_uncond": prior_var_ratio, "guards": stats}  # fmt: skip
            row.update(compare(s.reshape(k, -1), ref, w, y_phys, free, size))
            rows.append(row)
            print_grf_row(row, flush=True)
    return rows


# ------------------------------------------------------------------------------------------
# 4. Spherical harmonics: a 25 % random voxel mask
# ------------------------------------------------------------------------------------------


def run_harmonics(
    checkpoint: str, store_path: str, k: int, steps: int, cg: int, noise: float,
    conditions: int = 6, methods=("mmps", "dps"), unconditional: bool = False,
    fraction: float = 0.25, **options,
):  # fmt: skip
    """rel_l2 (physical units) of posterior samples given a random ``fraction`` (25 %) of the
    voxels of each of ``conditions`` harmonics (evenly spaced through the store, the highest l
    included), σ_y = ``noise`` × the field's RMS, beside the same model's unguided samples at the
    same steps (DPM-Solver++; seconds per sample of each).

    With ``unconditional`` the prior is the model with the null condition (cond=None; a model
    trained with ``cond_drop_prob`` > 0): the observation alone must pick the harmonic — the
    inpainting problem proper, where a conditional model's field is already fixed by (l, m)."""
    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.store import open_store
    from rho_core.inverse import observation_in_model_space
    from rho_core.metrics import rel_l2
    from rho_core.samplers import sample

    loaded = load_for_sampling(checkpoint, "cpu")
    model, norm = loaded.model, loaded.normalizer
    store = open_store(store_path)
    shape = tuple(loaded.field_shape)

    def back(v):
        v = v.double().numpy()
        return np.asarray(norm.inverse(v)) if norm is not None else v

    rows = []
    picks = np.unique(np.linspace(0, store.n - 1, conditions).round().astype(int))
    for i in picks:
        field, params = store.read(int(i))
        field = np.asarray(field, dtype=np.float64)
        rng = np.random.default_rng(int(i))
        op = Mask(rng.random(shape[1:]) < fraction)
        sigma = noise * float(np.sqrt(np.mean(field**2)))  # RMS: Y_0^0 is constant
        y_z, s_z = observation_in_model_space(field, op, sigma, norm)
        # one noise realisation added to the observed values (physical → model with T's slope)
        y_z = y_z + float(s_z[0]) * torch.as_tensor(rng.standard_normal(y_z.shape[0]))
        cond = (
            None
            if unconditional
            else torch.as_tensor(np.asarray(params, dtype=np.float64)[None]).expand(k, -1)
        )
        t0 = time.perf_counter()
        with torch.inference_mode():
            xu = sample(
                model.denoiser, (k, *shape), model.schedule, method="dpmpp", steps=steps,
                cond=cond, generator=torch.Generator().manual_seed(1),
            )  # fmt: skip
        t_u = time.perf_counter() - t0
        prior = back(xu)
        label = ",".join(f"{n}={v:g}" for n, v in zip(loaded.param_names, params, strict=True))
        row = {
            "condition": label,
            "prior": "unconditional" if unconditional else "conditional",
            "n_obs": int(op.mask.sum()),
            "sigma_y": sigma,
            "sigma_y_model": float(s_z[0]),
            "rel_l2_unguided": float(np.mean([rel_l2(p, field) for p in prior])),
            "unguided_s_per_sample": t_u / k,
        }
        for method in methods:
            stats: dict = {}
            t0 = time.perf_counter()
            x = sample_posterior(
                model.denoiser, (k, *shape), model.schedule, y_z.float(), op, s_z.float(),
                cond=cond, generator=torch.Generator().manual_seed(1), steps=steps,
                cg_iters=cg, stats=stats, **method_options(method, options),
            )  # fmt: skip
            dt = time.perf_counter() - t0
            post = back(x)
            errs = [rel_l2(p, field) for p in post]
            free = ~op.mask.numpy()
            free_err = [
                float(np.linalg.norm((p - field)[..., free]) / np.linalg.norm(field[..., free]))
                for p in post
            ]
            row[f"rel_l2_{method}"] = float(np.mean(errs))
            row[f"rel_l2_{method}_max"] = float(np.max(errs))
            row[f"rel_l2_{method}_median"] = float(np.median(errs))
            row[f"{method}_share_le_0.1"] = float(np.mean(np.asarray(errs) <= 0.1))
            row[f"rel_l2_{method}_unobserved"] = float(np.mean(free_err))
            row[f"{method}_s_per_sample"] = dt / k
            row[f"{method}_guards"] = stats
        rows.append(row)
        r = row
        parts = "  ".join(
            f"{m} {r[f'rel_l2_{m}']:.3f} (median {r[f'rel_l2_{m}_median']:.3f}, max "
            f"{r[f'rel_l2_{m}_max']:.3f}, ≤0.1: {r[f'{m}_share_le_0.1']:.0%}) "
            f"{r[f'{m}_s_per_sample']:.2f} s"
            for m in methods
        )
        print(f"   {label:<10} unguided {r['rel_l2_unguided']:.3f} "
              f"{r['unguided_s_per_sample']:.2f} s  {parts}"
              f"{guard_summary(r.get('mmps_guards', {}))}", flush=True)  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="gaussian,grf-exact")
    ap.add_argument("--n", type=int, default=2000, help="samples, gaussian section")
    ap.add_argument("--k", type=int, default=16, help="posterior samples per GRF task")
    ap.add_argument("--grf-params", default="1,-2", help="amplitude,spectral_index")
    ap.add_argument("--grf-noise", type=float, default=0.05, help="σ_y / field std")
    ap.add_argument("--grf-cg", default="1,4,8,16,32", help="CG iterations (grf-exact)")
    ap.add_argument("--grf-steps", default=str(DEFAULT_STEPS), help="steps list (grf-exact)")
    ap.add_argument("--checkpoint", help="trained GRF run directory or checkpoint (grf)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps (grf)")
    ap.add_argument("--cg", type=int, default=DEFAULT_CG_ITERS, help="CG iterations (grf)")
    ap.add_argument(
        "--methods", default="mmps,dps",
        help="mmps, dps, iso (grf, harmonics); exact, hyb-J, hyb-x0 (grf; docstring)",
    )  # fmt: skip
    ap.add_argument("--exact-methods", default="mmps", help="methods (grf-exact)")
    ap.add_argument("--truth-seed", type=int, default=777, help="GRF realisation observed (grf)")
    ap.add_argument("--sh-checkpoint", help="trained harmonics checkpoint (harmonics)")
    ap.add_argument("--sh-store", help="the harmonics store it was trained on (harmonics)")
    ap.add_argument("--sh-conditions", type=int, default=6, help="conditions (harmonics)")
    ap.add_argument("--sh-noise", type=float, default=0.05, help="σ_y / RMS (harmonics)")
    ap.add_argument("--sh-fraction", type=float, default=0.25, help="observed voxels (harmonics)")
    ap.add_argument(
        "--sh-unconditional", action="store_true",
        help="null condition as the prior (harmonics; model trained with cond_drop_prob > 0)",
    )  # fmt: skip
    ap.add_argument(
        "--tweedie-min-log-snr", type=float, default=None,
        help="λ below which Σ is isotropic (grf-exact, grf, harmonics; default: the library's)",
    )  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections = args.sections.split(",")
    amp, index = (float(v) for v in args.grf_params.split(","))
    out: dict = {"torch_threads": args.threads}
    tweedie = {}
    if args.tweedie_min_log_snr is not None:
        tweedie["tweedie_min_log_snr"] = args.tweedie_min_log_snr
        out["tweedie_min_log_snr"] = args.tweedie_min_log_snr
    if "gaussian" in sections:
        out["gaussian"] = run_gaussian(args.n)
        print_gaussian(out["gaussian"], args.n)
    if "grf-exact" in sections:
        print_grf_header(
            f"2. GRF 64², A={amp:g}, n={index:g}, exact denoiser, σ_y = {args.grf_noise} × std, "
            f"K = {args.k}; errors on unobserved pixels in prior-std units"
        )
        out["grf_exact"] = run_grf_exact(
            amp, index, args.grf_noise, args.k,
            [int(v) for v in args.grf_cg.split(",")], [int(v) for v in args.grf_steps.split(",")],
            methods=tuple(args.exact_methods.split(",")), **tweedie,
        )  # fmt: skip
    if "grf" in sections:
        if not args.checkpoint:
            ap.error("--sections grf needs --checkpoint")
        print_grf_header(
            f"3. Trained GRF model {args.checkpoint}, A={amp:g}, n={index:g}, σ_y = "
            f"{args.grf_noise} × std, K = {args.k}"
        )
        out["grf_model"] = run_grf_model(
            args.checkpoint, amp, index, args.grf_noise, args.k, args.steps, args.cg,
            tuple(args.methods.split(",")), args.truth_seed, **tweedie,
        )  # fmt: skip
        for r in out["grf_model"]:
            print(f"   {r['task']:<10} {r['method']:<5} {r['s_per_sample']:.2f} s/sample "
                  f"(unguided {r['uncond_s_per_sample']:.2f})")  # fmt: skip
    if "harmonics" in sections:
        if not (args.sh_checkpoint and args.sh_store):
            ap.error("--sections harmonics needs --sh-checkpoint and --sh-store")
        prior = "unconditional" if args.sh_unconditional else "conditional"
        print(f"\n4. Harmonics {args.sh_checkpoint} ({prior} prior): "
              f"{args.sh_fraction:.0%} voxel mask, σ_y = {args.sh_noise} × RMS, K = {args.k}, "
              f"{args.steps} steps, CG {args.cg}; rel_l2, s/sample")  # fmt: skip
        out["harmonics"] = run_harmonics(
            args.sh_checkpoint, args.sh_store, args.k, args.steps, args.cg, args.sh_noise,
            args.sh_conditions, tuple(args.methods.split(",")), args.sh_unconditional,
            args.sh_fraction, **tweedie,
        )  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

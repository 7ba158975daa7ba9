r"""Exact log-likelihood of a diffusion model: the probability-flow ODE and change of variables.

A trained ε-predictor ε̂(x, t) defines, through its probability-flow ODE (Song et al. 2021), a
deterministic invertible map between a data sample and a Gaussian latent, and with it a
continuous density p_θ(x) that can be evaluated exactly up to the ODE solver's tolerance.

Time variable
-------------
The ODE is integrated in the log-SNR λ = log(ᾱ/(1 − ᾱ)) (``Schedule.log_snr_table``), not in t.
With α² = sigmoid(λ), σ² = sigmoid(−λ) and x_λ = α x₀ + σ ε, the probability-flow ODE of the
variance-preserving process is

    dx/dλ = ½ σ (σ x − ε̂(x, λ)),          div_x(dx/dλ) = ½ σ² D − ½ σ div_x ε̂,

(from dx/dt = f x − ½ g² ∇log p with f = d log α/dt, g² = −σ² dλ/dt, ∇log p = −ε̂/σ), and the
log-density along a trajectory obeys d log p_λ(x_λ)/dλ = −div_x(dx/dλ). The denoiser is queried
at the *fractional* step t(λ), the inverse of the schedule's convention (λ linear in t between
neighbouring integer steps, :meth:`rho_core.schedules.Schedule.log_snr_at`), so the exact
Gaussian denoiser gives a perfectly smooth right-hand side in λ, and a network sees exactly the
t grid it was trained on at every integer step.

The two ends
------------
*Noise end.* The integration stops at λ_min = λ_{T−1} (ᾱ_{T−1} ≈ 4·10⁻⁵ linear, 2·10⁻⁹
cosine, at T = 1000). The marginal there is not exactly N(0, I): for data of mean m and
covariance C it is ≈ N(α m, α² C + σ² I), and log N(x; 0, I) misses the first-order term
α m·x/σ², which does not average out per sample (≈ 5·10⁻⁴ bits/dim scatter on 32-D data with
|m| ≤ 0.5, linear schedule). The default ``prior="denoised"`` removes it with one more denoiser
call: since x − α x̂₀ = σ ε̂,

    log p_{λ_min}(x) ≈ log N(x; α x̂₀(x), σ² I) = log N(ε̂(x, T−1); 0, I) − D log σ,

which for locally Gaussian data is exact up to O(ᾱ) (the quadratic form differs by the factor
σ²/(α²C + σ²), the normaliser by ½ log(1 + α²C/σ²) ≈ ½ᾱC per dimension). ``prior="standard"``
uses N(0, I), the usual choice (error O(α) per sample, O(ᾱ) on average).

*Data end.* The schedule's t = 0 is not noise-free: ᾱ₀ = 1 − β₀ < 1 (σ₀² = 10⁻⁴ linear,
4·10⁻⁵ cosine), so the ODE between t = T−1 and t = 0 gives the density of the slightly *noised*
data α₀x₀ + σ₀ε, which for a field with per-pixel scale s = 0.05 differs from the data density
by ½ log(1 + σ₀²/s²) ≈ 0.02 nats per dimension — ten times the accuracy asked for. We therefore
define the model's data density as the end point of the ODE *continued* past t = 0 to
λ_max = λ₀ + ``lambda_margin`` (default 20, where σ² ≈ e^{−30}: α = 1 to 10⁻¹³), i.e. to the
clean data. A network was never trained beyond t = 0, so in the continuation (λ > λ₀) the score
is held at its t = 0 value in the variance-exploding coordinates z = x/α (the data scaled to
unit signal; p_λ(z) = p_data ∗ N(0, e^{−λ})):

    ε̂(x, λ) = (σ α₀)/(σ₀ α) · ε̂(α₀ x/α, t = 0)          for λ > λ₀.

The exact continuation would use the score of p_data ∗ N(0, e^{−λ}) instead of
p_data ∗ N(0, e^{−λ₀}); the difference is O(σ₀²/s²) *relative* to the correction itself. For a
Gaussian coordinate of scale s and r = σ₀²/s² the frozen score gives log-det −½ r/(1 + r)
against the exact −½ log(1 + r), but its quadratic term errs by the opposite amount, so the
expected error is O(r³) and the per-sample error ≈ 2·10⁻⁴ r (z²/s² − 1) nats — with s = 0.05
(r = 0.04, linear schedule) about 4·10⁻⁴ nats per such coordinate, without the continuation
0.02. ``continuation="none"`` returns the density of the noised data instead (to measure that
gap; the docs report it).

Finally, with the divergence integrated along the ODE from λ_max down to λ_min,

    log p(x₀) = log p_{λ_min}(x_{λ_min}) + ∫_{λ_max}^{λ_min} div_x(dx/dλ) dλ + D log α(λ_max)

(the last term is the exact change of variables x_{λ_max} = α_max x₀, ≈ 10⁻¹³ D).

Solver and divergence
---------------------
Dormand–Prince RK5(4) with embedded error control (rtol/atol), one step size for the whole
batch (the error norm is the worst sample's; every sample of a batch gets the same λ grid, so
log-likelihoods of one field under many parameters — :mod:`rho_core.inference` — share the
discretisation), FSAL: 6 denoiser evaluations per accepted step. The divergence div_x ε̂ is

* exact for D ≤ ``exact_max_dim`` (default 128): D vector–Jacobian products (one backward pass
  each, or one batched backward) — ``res.log_prob_std`` is 0;
* Hutchinson otherwise: tr J ≈ vᵀJv with ``probes`` fixed random vectors (Rademacher by default,
  Gaussian optional) drawn once from ``generator`` and kept along the whole trajectory, each with
  its own log-density integral along the *same* trajectory (the trajectory does not depend on
  the probes), so ``log_prob`` is their mean and ``log_prob_std`` the standard error of that mean
  (sample std / √probes; ``nan`` for a single probe).

*Control variate* (``control_variate``, Hutchinson only). The variance of vᵀJv is
2 Σ_{i≠j} J_ij² (Rademacher): for a stationary field the denoiser's Jacobian is close to a
Fourier multiplier whose entries vary over orders of magnitude between scales, and four probes
leave a standard error of tens of nats on a 64² field. With a Gaussian reference N(0, V), V
diagonal in the Fourier modes (ortho FFT over the spatial axes), whose exact ε-denoiser is the
multiplier c_κ(λ) = σ/(α² v_κ + σ²), each probe estimates instead

    vᵀJv − Σ_κ c_κ (|ṽ_κ|² − 1)          (ṽ = FFT_ortho(v), E|ṽ_κ|² = 1),

i.e. vᵀ(J − J_ref)v + tr J_ref: unbiased for any reference that does not depend on the probes,
with variance 2 Σ_{i≠j} (J − J_ref)_ij² — zero for a stationary Gaussian model with the
reference's own spectrum. ``"spectral"``: V = the shell-averaged periodogram of the clean x (a
deterministic function of x, the same reference for a field at every grid node θ);
``"powerlaw"``: a power law fitted to that periodogram (:mod:`rho_core.reference_spectra`; on a
64² Gaussian random field 50–100× less Hutchinson variance than the periodogram's 3–10×);
``("fourier", P)``: a given power per Fourier mode ``(B | 1, *shape)``; ``"head"``: the
trained network's own spectral head (``DiffusionModel.eps_linear_multiplier``: the head adds a
Fourier multiplier of x_t to the output, an exactly linear part of ε̂ whose trace is known) — the
only reference that follows the model's dependence on t *and* θ, so it also reduces the noise of
log-likelihood *differences* across a parameter grid, which an x-only reference cannot (shared
probes already cancel what is common to the grid); ``"none"``/``"auto"``
(the ODE default): plain Hutchinson. A reference far from the model *adds* variance (e.g. a
regression-like model on deterministic data, whose Jacobian is ≈ I/σ): use it for statistically
homogeneous fields (random fields, turbulence boxes), where it removes most of the noise. In the
continuation (λ > λ₀) the reference is taken at λ₀, like the frozen score.

Bits per dimension are −log p / (D ln 2) of this continuous density (they can be negative).
:func:`physical_log_prob` converts to the density in physical units through the store's
normalisation (:func:`log_abs_det_inverse`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from rho_core.errors import ConfigError
from rho_core.log_density import (
    LikelihoodResult,
    log_abs_det_inverse,
    physical_log_prob,
    standard_normal_log_prob,
    time_from_log_snr,
)
from rho_core.schedules import Schedule

__all__ = [
    "LikelihoodResult",
    "log_likelihood",
    "time_from_log_snr",
    "physical_log_prob",
    "log_abs_det_inverse",
    "standard_normal_log_prob",
    "concat_results",
    "model_log_likelihood",
    "check_inferable",
    "grid_log_likelihood",
    "points_log_likelihood",
    "default_control_variate",
    "STATIONARY_KINDS",
]

LN2 = math.log(2.0)
DIVERGENCES = ("auto", "exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
CONTINUATIONS = ("frozen_score", "none")
PRIORS = ("denoised", "standard")
METHODS = ("ode", "elbo")
CONTROL_VARIATES = ("auto", "none", "spectral", "powerlaw", "head")
# store kinds whose fields are statistically homogeneous with a near power-law spectrum: the
# ODE's Hutchinson probes get the power-law control variate by default (module docstring)
STATIONARY_KINDS = ("gaussian_random_field",)


def default_control_variate(
    method: str,
    kind: str | None,
    requested: str = "auto",
    *,
    has_head: bool = False,
    differences: bool = False,
) -> str:
    """The control variate the command line uses: ``requested`` unless it is ``auto``. For the
    ODE, ``auto`` means ``head`` when log-likelihood *differences* across parameters are wanted
    (``rho infer``) and the model has a spectral head (it follows θ, so it steadies the
    posterior: 30–40 % less noise in node differences on the GRF models, where an x-only
    reference removes none); else ``powerlaw`` on a store kind in :data:`STATIONARY_KINDS` (98 %
    less variance of each value on random fields); else plain probes. The ELBO keeps ``auto``
    (its spectral reference)."""
    if requested not in CONTROL_VARIATES:
        raise ConfigError(f"control variate must be one of {CONTROL_VARIATES}, got {requested!r}")
    if requested != "auto" or method != "ode":
        return requested
    if differences and has_head:
        return "head"
    return "powerlaw" if kind in STATIONARY_KINDS else "auto"


# ----- the solver -----------------------------------------------------------------------------

# Dormand–Prince 5(4) tableau (Hairer, Nørsett & Wanner, Table II.5.2); FSAL.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))


def _dopri5(
    fun: Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]],
    x: Tensor,
    ell: Tensor,
    s0: float,
    s1: float,
    rtol: float,
    atol: float,
    max_steps: int,
    first_step: float | None,
    progress: Callable[[float], None] | None,
) -> tuple[Tensor, Tensor, int, int]:
    """Integrate (dx/ds, dℓ/ds) = fun(x, ℓ, s) from s0 to s1 (either direction).

    ``x`` is ``(B, D)``, ``ℓ`` ``(B, K)``; one step size for the batch. The error norm per
    sample is max(RMS_x(e / (atol + rtol·|x|)), max_k |e_ℓ| / (D·atol + rtol·|ℓ|)) — ℓ is a sum
    over D elements, so its absolute tolerance is per dimension — and a step is accepted when
    the worst sample's norm is ≤ 1. Returns (x, ℓ, accepted steps, rejected steps).
    """
    direction = 1.0 if s1 >= s0 else -1.0
    span = abs(s1 - s0)
    d = x.shape[1]
    h = min(span, first_step if first_step else 0.05 * span) * direction
    s = s0
    kx, kl = fun(x, ell, s)
    accepted = rejected = 0
    while direction * (s1 - s) > 1e-12 * max(1.0, span):
        if accepted + rejected >= max_steps:
            raise ConfigError(
                f"likelihood ODE needed more than {max_steps} steps (rtol={rtol}, atol={atol}); "
                "loosen the tolerances or raise max_steps"
            )
        if direction * (s + h - s1) > 0:
            h = s1 - s
        ks_x, ks_l = [kx], [kl]
        for i in range(1, 7):
            xi = x + h * sum(a * k for a, k in zip(_A[i], ks_x, strict=False))
            li = ell + h * sum(a * k for a, k in zip(_A[i], ks_l, strict=False))
            fx, fl = fun(xi, li, s + _C[i] * h)
            ks_x.append(fx)
            ks_l.append(fl)
        # stage 7 is evaluated at the 5th-order solution (FSAL): xi, li are x_new, ℓ_new
        x_new, l_new = xi, li
        ex = h * sum(e * k for e, k in zip(_E, ks_x, strict=True))
        el = h * sum(e * k for e, k in zip(_E, ks_l, strict=True))
        sc_x = atol + rtol * torch.maximum(x.abs(), x_new.abs())
        err_x = ((ex / sc_x) ** 2).mean(1).sqrt()
        sc_l = d * atol + rtol * torch.maximum(ell.abs(), l_new.abs())
        err_l = (el.abs() / sc_l).amax(1)
        err = float(torch.maximum(err_x, err_l).max())
        if not math.isfinite(err):
            raise ConfigError(
                "likelihood ODE produced non-finite values; is the input in the model's "
                "normalised space and the denoiser finite there?"
            )
        if err <= 1.0:
            s += h
            x, ell = x_new, l_new
            kx, kl = ks_x[-1], ks_l[-1]
            accepted += 1
            if progress is not None:
                progress(min(1.0, abs(s - s0) / span))
            factor = 5.0 if err == 0 else min(5.0, 0.9 * err ** (-0.2))
        else:
            rejected += 1
            factor = max(0.2, 0.9 * err ** (-0.2))
        h *= factor
    return x, ell, accepted, rejected


# ----- divergence -----------------------------------------------------------------------------


def _exact_divergence(e: Tensor, y: Tensor) -> Tensor:
    """tr ∂e/∂y per sample from D vector–Jacobian products; ``e``, ``y`` ``(B, D)``."""
    b, d = e.shape
    eye = torch.eye(d, dtype=e.dtype, device=e.device)[:, None, :].expand(d, b, d)
    try:
        (jac,) = torch.autograd.grad(
            e, y, grad_outputs=eye, is_grads_batched=True, retain_graph=True
        )
        # jac[i, b, j] = ∂e_{b,i}/∂y_{b,j}
        return jac.diagonal(dim1=0, dim2=2).sum(-1)
    except RuntimeError:  # operations without a batching rule: one VJP per coordinate
        out = torch.zeros(b, dtype=torch.float64, device=e.device)
        for i in range(d):
            (g,) = torch.autograd.grad(e[:, i].sum(), y, retain_graph=True)
            out = out + g[:, i].to(torch.float64)
        return out


def _hutchinson(e: Tensor, y: Tensor, probes: Tensor) -> Tensor:
    """vₖᵀ (∂e/∂y) vₖ per sample and probe, ``(B, K)``; ``probes`` ``(K, B|1, D)``."""
    out = []
    k = probes.shape[0]
    for i in range(k):
        v = probes[i].to(e.dtype)
        (g,) = torch.autograd.grad(e, y, grad_outputs=v.expand_as(e), retain_graph=i < k - 1)
        out.append((g * v).sum(1).to(torch.float64))
    return torch.stack(out, dim=1)


def _ode_reference(control_variate: Any, x: Tensor) -> Tensor | None:
    """The reference variances V per Fourier mode, float64 ``(B | 1, *shape)``, or None (plain
    Hutchinson) — the ODE's ``control_variate`` option (module docstring)."""
    cv = control_variate
    if isinstance(cv, str):
        if cv in ("auto", "none", "head"):
            return None
        if cv not in ("spectral", "powerlaw"):
            raise ConfigError(
                f"control_variate for the ODE must be auto, none, spectral, powerlaw, head or "
                f"('fourier', P), got {cv!r}"
            )
        if x.ndim < 3:
            raise ConfigError(f"the {cv} control variate needs (B, C, *spatial) inputs")
        from rho_core.reference_spectra import shell_periodogram, shell_power_law

        fit = shell_periodogram if cv == "spectral" else shell_power_law
        return fit(x.detach(), x.ndim - 2).clamp(min=1e-30)
    if isinstance(cv, tuple | list) and len(cv) == 2 and cv[0] == "fourier" and x.ndim >= 3:
        p = torch.as_tensor(cv[1], dtype=torch.float64, device=x.device)
        shape = tuple(x.shape[1:])
        if p.numel() % math.prod(shape) or p.numel() // math.prod(shape) not in (1, x.shape[0]):
            raise ConfigError(
                f"control_variate power must be (B | 1, *{shape}), got {tuple(p.shape)}"
            )
        return p.reshape(-1, *shape).clamp(min=1e-30)
    raise ConfigError(
        "control_variate for the ODE must be auto, none, spectral, powerlaw or ('fourier', P) with "
        f"(B, C, *spatial) inputs, got {type(cv).__name__}"
    )


def _reference_correction(ref_var: Tensor, probe_excess: Tensor, lam: float) -> Tensor:
    """Σ_κ c_κ(λ) (|ṽ_κ|² − 1) per sample and probe, ``(B, K)``: vᵀJ_ref v − tr J_ref of the
    reference's ε-denoiser c_κ = σ/(α² v_κ + σ²) (module docstring)."""
    lam_t = torch.tensor(lam, dtype=torch.float64)
    sig2, alp2 = float(torch.sigmoid(-lam_t)), float(torch.sigmoid(lam_t))
    return _multiplier_correction(math.sqrt(sig2) / (alp2 * ref_var + sig2), probe_excess)


def _multiplier_correction(c: Tensor, probe_excess: Tensor) -> Tensor:
    """Σ_κ c_κ (|ṽ_κ|² − 1) per sample and probe, ``(B, K)``, for a real Fourier multiplier
    ``c`` ``(B|1, *shape)``: vᵀ M v − tr M of M = F⁻¹ diag(c) F (ortho F)."""
    k = probe_excess.shape[0]
    corr = (c[None] * probe_excess).reshape(k, max(c.shape[0], probe_excess.shape[1]), -1)
    return corr.sum(-1).T  # (B|1, K)


def _head_multiplier(denoiser: Callable[..., Tensor]) -> Callable[..., Tensor | None]:
    """The ``eps_linear_multiplier`` of the model behind ``denoiser`` (``model.denoiser``, a
    bound method of :class:`rho_core.model.DiffusionModel`), for ``control_variate="head"``."""
    owner = getattr(denoiser, "__self__", None)
    fn = getattr(owner, "eps_linear_multiplier", None)
    if fn is None:
        raise ConfigError(
            "control_variate='head' needs a trained model's denoiser (model.denoiser of a "
            "DiffusionModel with a spectral head); use spectral, powerlaw or none"
        )
    return fn


# ----- the public function ---------------------------------------------------------------------


def log_likelihood(
    denoiser: Callable[..., Tensor],
    x: Tensor,
    schedule: Schedule,
    cond: Any = None,
    generator: torch.Generator | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    divergence: str = "auto",
    exact_max_dim: int = 128,
    probes: int = 4,
    probe: str = "rademacher",
    shared_probes: bool = False,
    continuation: str = "frozen_score",
    lambda_margin: float = 20.0,
    prior: str = "denoised",
    start_t: float | None = None,
    max_steps: int = 2000,
    first_step: float | None = None,
    normalizer: Any = None,
    progress: Callable[[float], None] | None = None,
    method: str = "ode",
    samples: int = 64,
    antithetic: bool = False,
    control_variate: Any = "auto",
    proposal: str = "auto",
    eval_batch: int = 64,
) -> LikelihoodResult:
    """log p(x) of each sample under the probability-flow ODE of ``denoiser`` (module docstring),
    or (``method="elbo"``) the continuous-time variational bound (:mod:`rho_core.elbo`).

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> ε̂``, ``x_t`` ``(B, *shape)``, ``t`` float64
            ``(B,)`` fractional steps in [0, T−1] (schedule convention). Evaluated in ``x``'s
            dtype (float32 for a network; pass float64 data to an exact denoiser).
        x: clean samples in the model's (normalised) space, ``(B, *shape)``.
        schedule: the model's noise schedule.
        cond: passed through to the denoiser unchanged (e.g. a ``(B, P)`` parameter table).
        generator: draws the Hutchinson probes (CPU or ``x``'s device).
        rtol, atol: solver tolerances (module docstring, :func:`_dopri5`).
        divergence: ``auto`` (exact when D ≤ ``exact_max_dim``), ``exact`` or ``hutchinson``.
        probes: Hutchinson probes; probe: ``rademacher`` or ``gaussian``.
        shared_probes: one probe set for the whole batch (common random numbers, e.g. one field
            under many parameters) instead of independent probes per sample.
        continuation: ``frozen_score`` (to the clean data, default) or ``none`` (the density of
            the t = 0 noised data α₀x₀ + σ₀ε, evaluated at α₀x₀, plus D log α₀).
        lambda_margin: λ_max − λ₀ of the continuation.
        prior: ``denoised`` (log N(ε̂(x, T−1); 0, I) − D log σ, one more denoiser call) or
            ``standard`` (N(0, I)) at the noise end (module docstring).
        start_t: treat ``x`` as a *noised* sample x_t at this (fractional) step and return the
            model's log p_t(x_t) (no continuation) — a diagnostic of the model's density at one
            noise level, comparable with an exact marginal (e.g. ``GaussianDenoiser.log_prob_t``).
        max_steps: solver step limit (accepted + rejected).
        first_step: initial |Δλ| (default 5 % of the λ range).
        normalizer: a :class:`rho_core.data.normalization.Normalizer`; when given,
            ``physical_log_prob`` is filled in.
        progress: called with the fraction of the λ range done after every accepted step.
        method: ``ode`` (default) or ``elbo``. With ``elbo`` the options ``samples``,
            ``antithetic``, ``control_variate``, ``proposal``, ``eval_batch``, ``continuation``,
            ``lambda_margin``, ``normalizer``, ``progress`` apply, ``shared_probes`` means the
            same (λ, ε) draws for the whole batch, ``generator`` draws them, and the prior is
            always N(0, I) (exact KL); the ODE-only options are ignored.
        samples, antithetic, proposal, eval_batch: the ELBO's Monte-Carlo options
            (:func:`rho_core.elbo.elbo_log_likelihood`).
        control_variate: the ELBO's (``auto`` = spectral for spatial inputs) or, for the ODE
            with Hutchinson probes, ``auto``/``none`` (plain), ``spectral``, ``powerlaw`` or
            ``("fourier", P)`` (module docstring).

    Returns:
        :class:`LikelihoodResult`.

    Raises:
        ConfigError: for unknown options, an empty batch or a solver that does not converge.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    if method == "elbo":
        from rho_core.elbo import elbo_log_likelihood

        if start_t is not None:
            raise ConfigError("start_t is an ODE diagnostic; use method='ode'")
        return elbo_log_likelihood(
            denoiser,
            x,
            schedule,
            cond,
            generator,
            samples=samples,
            antithetic=antithetic,
            control_variate=control_variate,
            proposal=proposal,
            continuation=continuation,
            lambda_margin=lambda_margin,
            shared_noise=shared_probes,
            eval_batch=eval_batch,
            normalizer=normalizer,
            progress=progress,
        )
    if divergence not in DIVERGENCES:
        raise ConfigError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if probe not in PROBES:
        raise ConfigError(f"probe must be one of {PROBES}, got {probe!r}")
    if continuation not in CONTINUATIONS:
        raise ConfigError(f"continuation must be one of {CONTINUATIONS}, got {continuation!r}")
    if prior not in PRIORS:
        raise ConfigError(f"prior must be one of {PRIORS}, got {prior!r}")
    if not (rtol > 0 and atol > 0):
        raise ConfigError(f"rtol and atol must be positive, got {rtol}, {atol}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConfigError(f"x must be a non-empty batch (B, *shape), got {tuple(x.shape)}")
    t_start = time.perf_counter()
    shape = tuple(x.shape[1:])
    b = x.shape[0]
    d = int(math.prod(shape))
    eval_dtype = x.dtype
    dev = x.device
    use_exact = divergence == "exact" or (divergence == "auto" and d <= exact_max_dim)
    n_probes = 0 if use_exact else int(probes)
    if not use_exact and n_probes < 1:
        raise ConfigError(f"probes must be ≥ 1 for the Hutchinson divergence, got {probes}")
    cv_ref = None if use_exact else _ode_reference(control_variate, x)
    head = None
    if not use_exact and isinstance(control_variate, str) and control_variate == "head":
        head = _head_multiplier(denoiser)
    probe_t = None
    if not use_exact:
        gdev = generator.device if generator is not None else torch.device("cpu")
        pshape = (n_probes, 1 if shared_probes else b, d)
        if probe == "rademacher":
            probe_t = torch.randint(0, 2, pshape, generator=generator, device=gdev) * 2 - 1
            probe_t = probe_t.to(torch.float64)
        else:
            probe_t = torch.randn(pshape, generator=generator, device=gdev, dtype=torch.float64)
        probe_t = probe_t.to(dev)
    probe_excess = None  # (K, B|1, *shape): |ṽ_κ|² − 1 of every probe, for the control variate
    if cv_ref is not None or head is not None:
        if len(shape) < 2:
            raise ConfigError(
                f"the {control_variate} control variate needs (B, C, *spatial) inputs"
            )
        fdims = tuple(range(3, 2 + len(shape)))  # (K, B|1, C, *spatial)
        pv = probe_t.reshape(n_probes, -1, *shape)
        probe_excess = torch.fft.fftn(pv, dim=fdims, norm="ortho").abs() ** 2 - 1.0

    table = schedule.log_snr_table
    lam0, lam_min = float(table[0]), float(table[-1])
    lam_max = lam0 + float(lambda_margin) if continuation == "frozen_score" else lam0
    if start_t is not None:
        if not 0.0 <= float(start_t) < schedule.T - 1:
            raise ConfigError(f"start_t must lie in [0, {schedule.T - 1}), got {start_t}")
        lam_max = float(schedule.log_snr_at(torch.tensor(float(start_t), dtype=torch.float64)))
    sig0 = math.sqrt(torch.sigmoid(torch.tensor(-lam0, dtype=torch.float64)).item())
    alp0 = math.sqrt(torch.sigmoid(torch.tensor(lam0, dtype=torch.float64)).item())
    nfe = 0

    def rhs(xs: Tensor, ell: Tensor, lam: float) -> tuple[Tensor, Tensor]:
        nonlocal nfe
        lam_t = torch.tensor(lam, dtype=torch.float64)
        sig2 = float(torch.sigmoid(-lam_t))
        alp2 = float(torch.sigmoid(lam_t))
        sig, alp = math.sqrt(sig2), math.sqrt(alp2)
        if lam > lam0:  # continuation: frozen variance-exploding score (module docstring)
            scale_x, scale_e, t_val = alp0 / alp, sig * alp0 / (sig0 * alp), 0.0
        else:
            scale_x, scale_e = 1.0, 1.0
            t_val = float(time_from_log_snr(schedule, lam_t))
        t_b = torch.full((b,), t_val, dtype=torch.float64, device=dev)
        with torch.enable_grad():
            y = (xs * scale_x).detach().requires_grad_(True)
            e = denoiser(y.to(eval_dtype).reshape(b, *shape), t_b, cond)
            nfe += 1
            e = e.reshape(b, d).to(torch.float64)
            if use_exact:
                div_e = _exact_divergence(e, y)[:, None]
            else:
                div_e = _hutchinson(e, y, probe_t)
                if cv_ref is not None:
                    div_e = div_e - _reference_correction(cv_ref, probe_excess, min(lam, lam0))
                elif head is not None:
                    with torch.no_grad():
                        m = head(t_b, cond, shape[1:])
                    if m is None:
                        raise ConfigError(
                            "control_variate='head': this model has no spectral head "
                            "(model option spectral_head); use spectral, powerlaw or none"
                        )
                    div_e = div_e - _multiplier_correction(m.to(dev), probe_excess)
        e = e.detach() * scale_e
        div_e = div_e.detach() * (scale_e * scale_x)
        f = 0.5 * sig * (sig * xs - e)
        div_f = 0.5 * sig2 * d - 0.5 * sig * div_e
        return f, div_f

    alp_max = math.sqrt(torch.sigmoid(torch.tensor(lam_max, dtype=torch.float64)).item())
    if start_t is not None:
        alp_max = 1.0  # x is x_t itself
    x0 = x.detach().to(torch.float64).reshape(b, d) * alp_max
    ell0 = torch.zeros(b, max(1, n_probes), dtype=torch.float64, device=dev)
    with torch.no_grad():
        x_end, ell_end, steps, rejected = _dopri5(
            rhs, x0, ell0, lam_max, lam_min, rtol, atol, max_steps, first_step, progress
        )
    if prior == "denoised":
        t_end = torch.full((b,), float(schedule.T - 1), dtype=torch.float64, device=dev)
        with torch.no_grad():
            e_end = denoiser(x_end.to(eval_dtype).reshape(b, *shape), t_end, cond)
        nfe += 1
        sig_min = math.sqrt(torch.sigmoid(torch.tensor(-lam_min, dtype=torch.float64)).item())
        prior_lp = standard_normal_log_prob(e_end.reshape(b, d)) - d * math.log(sig_min)
    else:
        prior_lp = standard_normal_log_prob(x_end)
    log_det = d * math.log(alp_max)
    per_probe = ell_end + log_det  # (B, K)
    delta = per_probe.mean(1)
    if n_probes > 1:
        std = per_probe.std(1) / math.sqrt(n_probes)
    elif n_probes == 1:
        std = torch.full((b,), math.nan, dtype=torch.float64, device=dev)
    else:
        std = torch.zeros(b, dtype=torch.float64, device=dev)
    log_prob = prior_lp + delta
    res = LikelihoodResult(
        log_prob=log_prob,
        bits_per_dim=-log_prob / (d * LN2),
        nfe=nfe,
        log_prob_std=std,
        dim=d,
        divergence="exact" if use_exact else "hutchinson",
        probes=n_probes,
        steps=steps,
        rejected=rejected,
        prior_log_prob=prior_lp,
        delta_log_prob=delta,
        latent=x_end.reshape(b, *shape),
        seconds=time.perf_counter() - t_start,
        log_prob_probes=None if use_exact else prior_lp[:, None] + per_probe,
    )
    if normalizer is not None:
        res.physical_log_prob = physical_log_prob(log_prob, x.detach(), normalizer)
    return res


# ----- trained models: a store's fields, a parameter grid ------------------------------------


def concat_results(results: list[LikelihoodResult]) -> LikelihoodResult:
    """Join per-batch results into one (``nfe``, ``steps``, ``rejected``, ``seconds`` summed)."""
    if not results:
        raise ConfigError("no likelihood results to join")
    if len(results) == 1:
        return results[0]

    def cat(name: str) -> Tensor:
        return torch.cat([getattr(r, name) for r in results])

    phys = [r.physical_log_prob for r in results]
    per_probe = [r.log_prob_probes for r in results]
    return LikelihoodResult(
        log_prob=cat("log_prob"),
        bits_per_dim=cat("bits_per_dim"),
        nfe=sum(r.nfe for r in results),
        log_prob_std=cat("log_prob_std"),
        dim=results[0].dim,
        divergence=results[0].divergence,
        probes=results[0].probes,
        steps=sum(r.steps for r in results),
        rejected=sum(r.rejected for r in results),
        prior_log_prob=cat("prior_log_prob"),
        delta_log_prob=cat("delta_log_prob"),
        latent=cat("latent"),
        seconds=sum(r.seconds for r in results),
        physical_log_prob=None if any(p is None for p in phys) else torch.cat(phys),  # type: ignore[arg-type]
        method=results[0].method,
        log_prob_probes=None if any(p is None for p in per_probe) else torch.cat(per_probe),  # type: ignore[arg-type]
    )


def model_log_likelihood(
    loaded: Any,
    fields: Any,
    params: Any = None,
    *,
    batch_size: int = 8,
    seed: int = 0,
    shared_probes: bool = False,
    progress: Callable[[float], None] | None = None,
    **options: Any,
) -> LikelihoodResult:
    """log p(field | params) under a trained model, for fields in *physical* units.

    Args:
        loaded: :class:`rho_core.checkpoint.LoadedModel` (its EMA network, schedule, normaliser).
        fields: ``(N, C, *spatial)`` physical fields (numpy or torch), as stored.
        params: ``(N, P)`` or ``(1, P)`` float64 parameters in ``loaded.param_names`` order, or
            None for an unconditional model.
        batch_size: fields per ODE solve (one shared step size per batch).
        seed: the Hutchinson probes of every batch are drawn from ``Generator().manual_seed(seed)``
            (with ``shared_probes`` every batch, and every field in it, gets the same probes:
            common random numbers for comparing parameter values on one field).
        progress: called with the overall fraction done.
        options: passed to :func:`log_likelihood` (rtol, atol, divergence, probes, method, …);
            an ELBO ``control_variate=("fourier", P)`` with one row of P per field is sliced
            along with the batches.

    Returns:
        One :class:`LikelihoodResult` for all N fields; ``physical_log_prob`` is filled in
        (equal to ``log_prob`` when the model has no normaliser).
    """
    import numpy as np

    model = loaded.model
    device = next(model.parameters()).device
    x_phys = torch.from_numpy(np.array(fields, dtype=np.float32))  # a writable copy
    n = x_phys.shape[0]
    norm = loaded.normalizer
    y = norm.forward(x_phys) if norm is not None else x_phys
    y = y.to(torch.float32)
    table = None
    if params is not None:
        table = torch.as_tensor(np.asarray(params, dtype=np.float64))
        if table.ndim == 1:
            table = table[None]
        if table.shape[0] == 1:
            table = table.expand(n, -1)
    results = []
    n_batches = -(-n // max(1, int(batch_size)))
    for k in range(n_batches):
        sl = slice(k * batch_size, min(n, (k + 1) * batch_size))
        cond = None if table is None else table[sl].to(device)
        gen = torch.Generator().manual_seed(int(seed))

        def prog(f: float, k: int = k) -> None:
            if progress is not None:
                progress((k + f) / n_batches)

        opts = dict(options)
        cv = opts.get("control_variate")
        if isinstance(cv, tuple) and len(cv) == 2 and isinstance(cv[0], str):
            pw = torch.as_tensor(cv[1])
            if pw.shape[0] == n and n > 1:  # one reference spectrum per field: this batch's
                opts["control_variate"] = (cv[0], pw[sl])
        res = log_likelihood(
            model.denoiser,
            y[sl].to(device),
            model.schedule,
            cond=cond,
            generator=gen,
            shared_probes=shared_probes,
            normalizer=norm,
            progress=prog,
            **opts,
        )
        if res.physical_log_prob is None:
            res.physical_log_prob = res.log_prob.clone()
        results.append(_to_cpu(res))
    return concat_results(results)


def _to_cpu(res: LikelihoodResult) -> LikelihoodResult:
    for name in ("log_prob", "bits_per_dim", "log_prob_std", "prior_log_prob", "delta_log_prob"):
        setattr(res, name, getattr(res, name).cpu())
    res.latent = res.latent.cpu()
    if res.log_prob_probes is not None:
        res.log_prob_probes = res.log_prob_probes.cpu()
    if res.physical_log_prob is not None:
        res.physical_log_prob = res.physical_log_prob.cpu()
    return res


def check_inferable(model_config: Any, names: list[str] | tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless the model can be asked about parameter values ``names``.

    A hash-conditioned model embeds the SHA-512 hash of each exact parameter set: two settings
    0.001 apart are as unrelated to it as any two, and a value it never saw gets a random
    embedding, so its likelihood over a parameter grid is meaningless. Unconditional models
    have no parameters at all.
    """
    kind = model_config.conditioning.kind
    if kind == "hash":
        raise ConfigError(
            "this model is hash-conditioned: it only knows the exact parameter sets it was "
            "trained on (as SHA-512 hashes), so it cannot be asked about parameters it never "
            "saw and has no notion of nearby values; parameter inference needs a model trained "
            "with continuous conditioning (model option conditioning: continuous)"
        )
    if kind == "none":
        raise ConfigError("this model is unconditional: it has no parameters to infer")
    unknown = [n for n in names if n not in model_config.param_names]
    if unknown:
        raise ConfigError(
            f"the model is not conditioned on {unknown}; its parameters are "
            f"{list(model_config.param_names)}"
        )


def grid_log_likelihood(
    loaded: Any,
    field: Any,
    names: Sequence[str],
    axes: Sequence[Any],
    fixed: Mapping[str, float] | None = None,
    *,
    batch_size: int = 8,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    **options: Any,
) -> LikelihoodResult:
    """log p(field | θ) at every node of the tensor grid ``axes`` (C order, first axis slowest).

    Args:
        loaded: the trained model (:func:`rho_core.checkpoint.load_for_sampling`).
        field: one physical field ``(C, *spatial)`` (or ``(1, C, *spatial)``).
        names / axes: the grid parameters and their 1-D node arrays.
        fixed: values of the model's other parameters.
        batch_size, seed, progress, options: as :func:`model_log_likelihood`; the probes are
            shared by every grid node (common random numbers: the Hutchinson noise largely
            cancels in *differences* of log p across θ, which is all a posterior uses).

    Returns:
        A :class:`LikelihoodResult` with one entry per grid node (``prod(len(a))``).

    Raises:
        ConfigError: for a hash-conditioned or unconditional model, unknown or missing names.
    """
    import numpy as np

    mesh = np.meshgrid(*[np.asarray(a, dtype=np.float64) for a in axes], indexing="ij")
    points = np.stack([m.reshape(-1) for m in mesh], axis=1)
    return points_log_likelihood(
        loaded, field, names, points, fixed, batch_size=batch_size, seed=seed,
        progress=progress, **options,
    )  # fmt: skip


def points_log_likelihood(
    loaded: Any,
    field: Any,
    names: Sequence[str],
    points: Any,
    fixed: Mapping[str, float] | None = None,
    *,
    batch_size: int = 8,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    **options: Any,
) -> LikelihoodResult:
    """:func:`grid_log_likelihood` at arbitrary nodes: ``points`` ``(G, P)``, columns in
    ``names`` order (e.g. a grid along the posterior's principal axes,
    :class:`rho_core.inference.WhitenedFrame`). Same probes at every node."""
    import numpy as np

    names = list(names)
    fixed = dict(fixed or {})
    check_inferable(loaded.model_config, names)
    both = sorted(set(names) & set(fixed))
    if both:
        raise ConfigError(f"parameters {both} are both on the grid and fixed by --params")
    missing = [n for n in loaded.param_names if n not in names and n not in fixed]
    if missing:
        raise ConfigError(
            f"the model also needs {missing}: give their values with --params (JSON object)"
        )
    unknown = sorted(set(fixed) - set(loaded.param_names))
    if unknown:
        raise ConfigError(f"the model is not conditioned on {unknown}")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != len(names):
        raise ConfigError(f"points must be (G, {len(names)}), got {pts.shape}")
    g = pts.shape[0]
    cols = []
    for n in loaded.param_names:
        cols.append(pts[:, names.index(n)] if n in names else np.full(g, fixed[n]))
    table = np.stack(cols, axis=1)
    x = np.asarray(field, dtype=np.float32)
    sd = int(loaded.spatial_dims)
    if x.ndim == sd + 1:
        x = x[None]
    elif not (x.ndim == sd + 2 and x.shape[0] == 1):
        raise ConfigError(f"field must be (C, *spatial) with {sd} spatial dims, got {x.shape}")
    fields = np.broadcast_to(x, (g, *x.shape[1:]))
    return model_log_likelihood(
        loaded,
        fields,
        table,
        batch_size=batch_size,
        seed=seed,
        shared_probes=True,
        progress=progress,
        **options,
    )

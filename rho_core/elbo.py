r"""The continuous-time variational bound (ELBO) in log-SNR: a cheap, batched log-likelihood.

For the variance-preserving process z_λ = α x + σ ε (α² = sigmoid(λ), σ² = sigmoid(−λ)) and a
denoiser ε̂ (equivalently x̂₀ = (z − σ ε̂)/α), the continuous-time bound of Kingma et al. (2021,
"Variational diffusion models") reads, in λ,

    −log p(x) ≤ KL(q(z_{λ_min} | x) ‖ N(0, I))                                   (prior)
              + ½ ∫_{λ_min}^{λ_max} E_ε ‖ε − ε̂(z_λ, λ)‖² dλ                      (diffusion)
              + E[−log p(x | z_{λ_max})]                                          (data end)

(½ e^λ ‖x − x̂₀‖² = ½ ‖ε − ε̂‖²: the weighting in ε is flat in λ). For an *exact* denoiser the
model's reverse path measure equals the forward one and the bound is tight per sample: its
expectation over (λ, ε) is exactly −log p(x); each Monte-Carlo draw is noisy, but unbiased.

The ends, consistent with the probability-flow ODE (:mod:`rho_core.likelihood`)
--------------------------------------------------------------------------------
* Data end. The schedule's t = 0 is not noise-free (σ₀² = e^{−λ₀}/(1 + e^{−λ₀}) > 0). As in the
  ODE, the integral is *continued* past λ₀ to λ_max = λ₀ + ``lambda_margin`` (default 20) with
  the score frozen at t = 0 in variance-exploding coordinates,
  ε̂(z, λ) = (σ α₀)/(σ₀ α) · ε̂(α₀ z/α, t = 0) for λ > λ₀, and the decoder at λ_max is
  p(x | z) = N(x; z/α, e^{−λ_max} I), whose expected negative log-density is exactly
  D/2 (log 2π − λ_max + 1) (no sampling). ``continuation="none"`` stops at λ₀.
  For Gaussian data the frozen score errs by O(r³) in expectation (r = σ₀²/s², the same order
  as the ODE). A mode of *zero* data variance (the GRF mean mode) gets log-density
  −½ log(2π τ₀) + ¼ (τ₀ = e^{−λ₀}) where the ODE gives −½ log(2π τ₀) + ½: the frozen score
  is not the exact score of such a mode, so the bound is ¼ nat below the ODE's value there.
* Noise end. The prior term is the exact Gaussian KL
  ½ Σ [α²x² + σ² − 1 − log σ²] at λ_min = λ_{T−1} (the ODE's ``prior="standard"``; its error is
  O(ᾱ_{T−1}): 4·10⁻⁵ linear, 10⁻¹² for the cosine schedule shifted by −4).

The Monte-Carlo estimator
-------------------------
* λ: stratified importance sampling. The proposal q(λ) is piecewise constant; ``proposal``
  ``"uniform"`` (uniform in λ over [λ_min, λ_max]), ``"time"`` (uniform in the fractional step
  t over the schedule, i.e. the training distribution, plus 10 % uniform over the continuation)
  or ``"mixed"`` (the average of the two); ``"focused"`` (the default with a control variate)
  puts 75 % of the mass uniformly on [−log v_max − 3, max(−log v_min + 3, λ₀ + 5)], where the
  reference's modes (variances v) pass from noise- to signal-dominated and where a trained
  model's errors live, and 25 % on ``mixed`` (full support keeps it unbiased).
  K = ``samples`` draws in K/2 equal-mass
  strata of q, two per stratum, so the standard error is estimated from the within-stratum
  differences: SE² = Σ_j (h_{j,1} − h_{j,2})² / (4 M²), M = K/2.
* ε: ``antithetic`` pairs (ε, −ε) cancel the part of ‖ε − ε̂‖² that is odd in ε (for a linear
  denoiser the cross term 2 ε·(x-dependent part) vanishes exactly); each draw then costs two
  denoiser evaluations.
* Control variate (a Gaussian reference): ‖ε − ε̂‖² carries a χ² fluctuation of size √(2D) per
  draw that has nothing to do with the model. Each draw is also evaluated with the exact
  denoiser ε̂_ref of a Gaussian reference N(m, V) (V diagonal in pixels or in Fourier modes), and
  the estimator samples only g − g_ref, adding the reference's *exact* λ-integral
  ½ Σ_i [log(1 + w_i) + (1 − q_i)/(1 + w_i)] between the ends (w_i = e^λ v_i,
  q_i = |x̃_i − m_i|²/v_i; :func:`_reference_integral`). Unbiased for *any* reference that does
  not depend on ε; the closer the reference to the model, the smaller the variance (zero for
  an exact Gaussian denoiser with its own reference). ``control_variate``:
  ``"spectral"`` — V per Fourier mode of the spatial axes (ortho FFT) from the periodogram of x
  averaged over integer |κ| shells, m = 0 (a deterministic function of x: no bias);
  ``"powerlaw"`` — a power law fitted to that periodogram (:mod:`rho_core.reference_spectra`);
  ``("fourier", P)`` — a given reference power per Fourier mode, ``(B | 1, *shape)`` (per
  sample, e.g. a theory spectrum at each grid node θ, which leaves to be sampled only the
  model's deviation from that theory); a tensor of per-element variances, or a
  (mean, variances) pair, for a diagonal reference in pixel space; ``"none"``. ``"auto"`` is
  spectral for inputs with spatial axes (``x.ndim ≥ 3``), else none.
* Common random numbers: ``shared_noise=True`` gives every sample of the batch the same (λ, ε)
  draws (one field under many parameters θ). The control variate and the χ² part are then
  identical across θ and differences of log p across θ have far lower variance than each value.

Cost: ``samples`` × (2 with ``antithetic``) denoiser evaluations per sample, no gradients (the
ODE needs ~100–300 evaluations *with* backward passes for Hutchinson probes), and all draws of a
batch go through the network together (``eval_batch`` inputs per call).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rho_core.errors import ConfigError
from rho_core.log_density import LikelihoodResult, physical_log_prob, time_from_log_snr
from rho_core.reference_spectra import shell_periodogram, shell_power_law
from rho_core.schedules import Schedule

__all__ = ["elbo_log_likelihood", "lambda_proposal", "PROPOSALS"]

PROPOSALS = ("auto", "focused", "mixed", "uniform", "time")
LN2 = math.log(2.0)
_CONT_SHARE = 0.1  # mass of the continuation region under the "time" proposal
_CONT_CELLS = 64


def lambda_proposal(
    schedule: Schedule,
    lam_max: float,
    kind: str = "mixed",
    focus: tuple[float, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Piecewise-constant proposal density of λ on [λ_min, lam_max].

    Returns ``(edges, mass)``: ascending cell edges float64 ``(n + 1,)`` and the probability of
    each cell ``(n,)`` (sums to 1). Cells: the schedule's integer steps (λ_{T−1} … λ₀) and, when
    ``lam_max`` > λ₀, 64 equal cells of the continuation.
    """
    if kind not in PROPOSALS or kind == "auto":
        raise ConfigError(f"proposal must be one of {PROPOSALS[1:]}, got {kind!r}")
    table = schedule.log_snr_table.to(torch.float64).flip(0)  # ascending λ_{T−1} … λ₀
    lam0 = float(table[-1])
    sched_cells = table.numel() - 1
    edges = table
    cont = lam_max > lam0 + 1e-12
    if cont:
        extra = torch.linspace(lam0, lam_max, _CONT_CELLS + 1, dtype=torch.float64)[1:]
        edges = torch.cat([table, extra])
    width = edges[1:] - edges[:-1]
    uniform = width / width.sum()
    time_mass = torch.zeros_like(width)
    share = _CONT_SHARE if cont else 0.0
    time_mass[:sched_cells] = (1.0 - share) / sched_cells
    if cont:
        time_mass[sched_cells:] = share / _CONT_CELLS
    if kind == "uniform":
        mass = uniform
    elif kind == "time":
        mass = time_mass
    else:
        mass = 0.5 * (uniform + time_mass)
    if kind == "focused":
        if focus is None:
            raise ConfigError("the focused proposal needs a reference (control variate)")
        lo, hi = max(focus[0], float(edges[0])), min(focus[1], float(edges[-1]))
        if hi > lo:  # the length of every cell inside [lo, hi]
            inside = (edges[1:].clamp(lo, hi) - edges[:-1].clamp(lo, hi)).clamp(min=0.0)
            mass = 0.25 * 0.5 * (uniform + time_mass) + 0.75 * inside / inside.sum()
    return edges, mass / mass.sum()


def _stratified_lambdas(
    edges: Tensor, mass: Tensor, k: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """K = 2M draws, two per equal-mass stratum: (λ ``(K,)``, 1/q(λ) ``(K,)``), float64."""
    m = k // 2
    u = (
        torch.arange(m, dtype=torch.float64).repeat_interleave(2)
        + torch.rand(k, generator=generator, dtype=torch.float64)
    ) / m
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), mass.cumsum(0)])
    cdf[-1] = 1.0
    i = (torch.searchsorted(cdf, u, right=True) - 1).clamp(0, mass.numel() - 1)
    # skip zero-mass cells (searchsorted lands on the last cell with cdf ≤ u)
    frac = ((u - cdf[i]) / mass[i]).clamp(0.0, 1.0)
    lo, hi = edges[i], edges[i + 1]
    lam = lo + frac * (hi - lo)
    inv_q = (hi - lo) / mass[i]
    return lam, inv_q


def elbo_log_likelihood(
    denoiser: Callable[..., Tensor],
    x: Tensor,
    schedule: Schedule,
    cond: Any = None,
    generator: torch.Generator | None = None,
    *,
    samples: int = 64,
    antithetic: bool = False,
    control_variate: Any = "auto",
    proposal: str = "auto",
    continuation: str = "frozen_score",
    lambda_margin: float = 20.0,
    shared_noise: bool = False,
    eval_batch: int = 64,
    normalizer: Any = None,
    progress: Callable[[float], None] | None = None,
):
    """Monte-Carlo estimate of the variational lower bound on log p(x) (module docstring).

    Args:
        denoiser: ``denoiser(x_t, t, cond) -> ε̂`` as for :func:`rho_core.likelihood.log_likelihood`
            (fractional float64 t); called on up to ``eval_batch`` inputs at a time with ``cond``
            repeated per draw (a tensor's rows are repeated; anything else is passed unchanged).
        x: clean samples in the model's space ``(B, *shape)``.
        schedule: the model's noise schedule.
        cond: ``(B, P)`` tensor (or None / a non-tensor passed through).
        generator: draws λ and ε (CPU generator).
        samples: K (λ, ε) draws per sample, even, ≥ 2.
        antithetic: evaluate each draw at ε and −ε (2 evaluations per draw).
        control_variate: ``auto`` / ``spectral`` / ``powerlaw`` / ``none`` / per-element
            reference variances.
        proposal: λ proposal, ``auto`` (``focused`` with a control variate, else ``mixed``),
            ``focused``, ``mixed``, ``uniform`` or ``time`` (module docstring).
        continuation, lambda_margin: the data end (module docstring).
        shared_noise: the same draws for every sample of the batch (common random numbers).
        eval_batch: inputs per denoiser call.
        normalizer: fills ``physical_log_prob`` when given.
        progress: called with the fraction of draws done.

    Returns:
        :class:`rho_core.likelihood.LikelihoodResult` with ``method="elbo"``: ``log_prob`` the
        bound's estimate (nats, ``(B,)`` float64), ``log_prob_std`` its Monte-Carlo standard
        error, ``nfe`` the denoiser evaluations per sample, ``steps`` the draws K;
        ``prior_log_prob`` = −KL, ``delta_log_prob`` = −(diffusion + data-end terms).
    """

    if samples < 2 or samples % 2:
        raise ConfigError(f"samples must be an even number ≥ 2, got {samples}")
    if continuation not in ("frozen_score", "none"):
        raise ConfigError(f"continuation must be frozen_score or none, got {continuation!r}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConfigError(f"x must be a non-empty batch (B, *shape), got {tuple(x.shape)}")
    t_start = time.perf_counter()
    b, shape = x.shape[0], tuple(x.shape[1:])
    d = int(math.prod(shape))
    dev = x.device
    eval_dtype = x.dtype
    xd = x.detach().to(torch.float64)

    table = schedule.log_snr_table.to(torch.float64)
    lam0, lam_min = float(table[0]), float(table[-1])
    lam_max = lam0 + float(lambda_margin) if continuation == "frozen_score" else lam0
    sig0 = math.sqrt(torch.sigmoid(torch.tensor(-lam0, dtype=torch.float64)).item())
    alp0 = math.sqrt(torch.sigmoid(torch.tensor(lam0, dtype=torch.float64)).item())

    # the Gaussian reference of the control variate: mean 0 / m, variances v in a basis
    cv = control_variate
    ref_mean = None
    if isinstance(cv, str):
        if cv == "auto":
            cv = "spectral" if x.ndim >= 3 else "none"
        if cv not in ("spectral", "powerlaw", "none"):
            raise ConfigError(
                f"control_variate must be auto, spectral, powerlaw, none, a tensor of "
                f"variances or a (mean, variance) pair, got {cv!r}"
            )
    spatial = x.ndim - 2
    dims = tuple(range(2, 2 + spatial))
    if isinstance(cv, str) and cv in ("spectral", "powerlaw"):
        if spatial < 1:
            raise ConfigError(f"the {cv} control variate needs (B, C, *spatial) inputs")
        fit = shell_periodogram if cv == "spectral" else shell_power_law
        ref_var = fit(xd, spatial)  # (B, *shape), Fourier basis
        basis = "fourier"
        x_ref = torch.fft.fftn(xd, dim=dims, norm="ortho")
    elif isinstance(cv, str):
        ref_var, basis, x_ref = None, "none", None
    elif isinstance(cv, tuple | list) and isinstance(cv[0], str):
        if cv[0] != "fourier" or spatial < 1:
            raise ConfigError(
                "control_variate=(kind, power) needs kind 'fourier' and (B, C, *spatial) inputs"
            )
        ref_var = torch.as_tensor(cv[1], dtype=torch.float64, device=dev)
        ref_var = ref_var.reshape(-1, *shape).expand(b, *shape)
        basis = "fourier"
        x_ref = torch.fft.fftn(xd, dim=dims, norm="ortho")
    else:
        if isinstance(cv, tuple | list):
            ref_mean = torch.as_tensor(cv[0], dtype=torch.float64, device=dev).expand(1, *shape)
            cv = cv[1]
        ref_var = torch.as_tensor(cv, dtype=torch.float64, device=dev).expand(1, *shape)
        basis = "pixel"
        x_ref = xd - ref_mean if ref_mean is not None else xd
    if ref_var is not None:
        ref_var = ref_var.clamp(min=1e-30)

    focus = None
    if ref_var is not None:  # where the reference's modes go from noise- to signal-dominated
        v = ref_var[ref_var > 1e-12 * float(ref_var.max())]
        focus = (
            -math.log(float(v.max())) - 3.0,
            max(-math.log(float(v.min())) + 3.0, lam0 + 5.0),
        )
    if proposal == "auto":
        proposal = "focused" if focus is not None else "mixed"
    edges, mass = lambda_proposal(schedule, lam_max, proposal, focus)
    k = int(samples)
    nb = 1 if shared_noise else b
    # two draws per stratum; every sample its own stratified set unless shared
    draws = [_stratified_lambdas(edges, mass, k, generator) for _ in range(nb)]
    lam = torch.stack([dr[0] for dr in draws], 1)  # (K, nb)
    inv_q = torch.stack([dr[1] for dr in draws], 1)
    gdev = generator.device if generator is not None else torch.device("cpu")
    eps = torch.randn((k, nb, *shape), generator=generator, device=gdev, dtype=torch.float64)
    eps = eps.to(dev)
    lam, inv_q = lam.to(dev), inv_q.to(dev)

    signs = (1.0, -1.0) if antithetic else (1.0,)
    ns = len(signs)
    sign_t = torch.tensor(signs, dtype=torch.float64, device=dev)
    per_call = max(1, int(eval_batch) // (b * ns))
    h = torch.zeros(k, b, dtype=torch.float64, device=dev)
    view = (1,) * len(shape)
    for start in range(0, k, per_call):
        js = slice(start, min(k, start + per_call))
        lj = lam[js].expand(-1, b)  # (J, B)
        jn = lj.shape[0]
        alp = torch.sigmoid(lj).sqrt()
        sig = torch.sigmoid(-lj).sqrt()
        cont = lj > lam0
        sx = torch.where(cont, alp0 / alp, torch.ones_like(alp))
        se = torch.where(cont, sig * alp0 / (sig0 * alp), torch.ones_like(alp))
        tv = torch.where(cont, torch.zeros_like(lj), time_from_log_snr(schedule, lj).to(dev))
        e_j = eps[js].expand(-1, b, *shape)  # (J, B, *shape)
        z = alp.view(jn, 1, b, *view) * xd[None, None] + sign_t.view(1, ns, 1, *view) * (
            sig.view(jn, 1, b, *view) * e_j[:, None]
        )  # (J, S, B, *shape)
        zin = (z * sx.view(jn, 1, b, *view)).reshape(jn * ns * b, *shape).to(eval_dtype)
        t_b = tv[:, None].expand(jn, ns, b).reshape(-1)
        c_b = cond
        if isinstance(cond, Tensor):
            c_b = cond.repeat(jn * ns, *([1] * (cond.ndim - 1)))
        with torch.no_grad():
            e_hat = denoiser(zin, t_b, c_b)
        e_hat = e_hat.to(torch.float64).reshape(jn, ns, b, *shape) * se.view(jn, 1, b, *view)
        r = sign_t.view(1, ns, 1, *view) * e_j[:, None] - e_hat
        g = (r * r).flatten(3).sum(3).mean(1)  # (J, B)
        if basis != "none":
            w = torch.exp(lj).view(jn, b, *view) * ref_var[None]  # (J, B, *shape)
            a = w / (1.0 + w)
            drift = torch.exp(0.5 * lj).view(jn, b, *view) * x_ref[None] / (1.0 + w)
            e_b = (
                torch.fft.fftn(e_j, dim=tuple(d_ + 1 for d_ in dims), norm="ortho")
                if (basis == "fourier")
                else e_j
            )
            r_ref = sign_t.view(1, ns, 1, *view) * (a * e_b)[:, None] - drift[:, None]
            g = g - (r_ref.abs() ** 2).flatten(3).sum(3).mean(1)
        h[js] = 0.5 * g * inv_q[js]
        if progress is not None:
            progress(min(1.0, js.stop / k))

    m = k // 2
    diffusion = h.mean(0)  # (B,)
    if basis != "none":
        diffusion = diffusion + _reference_integral(x_ref, ref_var, lam_min, lam_max)
    pairs = h.reshape(m, 2, b)
    se = ((pairs[:, 0] - pairs[:, 1]) ** 2).sum(0).sqrt() / (2 * m)
    alp2_min = torch.sigmoid(torch.tensor(lam_min, dtype=torch.float64)).item()
    sig2_min = 1.0 - alp2_min
    kl = 0.5 * (alp2_min * (xd * xd).flatten(1).sum(1) + d * (sig2_min - 1.0 - math.log(sig2_min)))
    data_end = 0.5 * d * (math.log(2 * math.pi) - lam_max + 1.0)
    log_prob = -(kl + diffusion + data_end)
    res = LikelihoodResult(
        log_prob=log_prob,
        bits_per_dim=-log_prob / (d * LN2),
        nfe=k * len(signs),
        log_prob_std=se,
        dim=d,
        divergence="none",
        probes=0,
        steps=k,
        rejected=0,
        prior_log_prob=-kl,
        delta_log_prob=-(diffusion + data_end),
        latent=math.sqrt(alp2_min) * xd,
        seconds=time.perf_counter() - t_start,
        method="elbo",
    )
    if normalizer is not None:
        res.physical_log_prob = physical_log_prob(log_prob, x.detach(), normalizer)
    return res


def _reference_integral(x_ref: Tensor, ref_var: Tensor, lam_lo: float, lam_hi: float) -> Tensor:
    """½ ∫ E_ε ‖ε − ε̂_ref(z_λ)‖² dλ of the Gaussian reference, exactly, per sample ``(B,)``.

    Per coordinate (or Fourier mode) of variance v and value x̃, with w = e^λ v and q = |x̃|²/v,
    E|e|² = (w/(1 + w))² + e^λ |x̃|²/(1 + w)², whose λ-integral is
    G(λ) = ½ [log(1 + w) + (1 − q)/(1 + w)].
    """

    def big_g(lam: float) -> Tensor:
        w = math.exp(lam) * ref_var
        q = x_ref.abs() ** 2 / ref_var
        return 0.5 * (torch.log1p(w) + (1.0 - q) / (1.0 + w))

    return (big_g(lam_hi) - big_g(lam_lo)).flatten(1).sum(1)

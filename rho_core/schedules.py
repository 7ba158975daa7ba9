"""Discrete variance-preserving noise schedules, as float64 tables.

A schedule maps an integer timestep t ∈ {0, …, T−1} to the noise level of the forward process::

    x_t = α_t x₀ + σ_t ε,   α_t = √ᾱ_t,  σ_t = √(1 − ᾱ_t),  ᾱ_t = ∏_{s≤t} (1 − β_s)

with SNR_t = α_t²/σ_t² and λ_t = log(α_t/σ_t) (half log-SNR, DPM-Solver's time). Every schedule
here has 0 < ᾱ_{T−1} < … < ᾱ_0 < 1, so the SNR is strictly decreasing in t.

Three families, all computed in float64; ``alphas_cumprod`` is always ``cumprod(1 − betas)`` of
the stored ``betas``, so the two tables cannot disagree:

``linear`` (Ho et al. 2020)
    β_t linear from 1e-4·1000/T to 0.02·1000/T (Nichol & Dhariwal's scaling: T = 1000 is exactly
    Ho et al.'s table, other T span the same noise range), clipped to at most 0.999.
``cosine`` (Nichol & Dhariwal 2021, eq. 17)
    f(u) = cos²((u + s)/(1 + s) · π/2), s = 0.008, β_t = min(1 − f((t+1)/T) / f(t/T), 0.999).
    The clip leaves ᾱ_{T−1} ≈ 2e-9 at T = 1000: practically pure noise, but not exactly.
``sigmoid`` (Chen 2023, "On the importance of noise scheduling"; start −3, end 3, τ = 1)
    ᾱ(u) = (sig(3) − sig((6u − 3)/τ)) / (sig(3) − sig(−3)), betas from consecutive ratios as for
    cosine, clipped to 0.999.

Shifted schedules (``shift`` = Δ ≤ 0, in units of λ). Any family can be made noisier towards
its noisy end by shifting its log-SNR with a ramp that is 0 at t = 0 and Δ at t = T − 1,
λ'_t = λ_t + Δ · t/(T − 1), i.e.

    ᾱ'_t = sigmoid(logit(ᾱ_t) + 2Δ · t/(T − 1)),   β'_t = 1 − ᾱ'_t / ᾱ'_{t−1}   (clipped to 0.999),

so the least noisy level (where samplers take their final x̂₀) is unchanged and λ stays strictly
decreasing. At the noisy end this is Chen (2023)'s input scaling x_t = √ᾱ_t · b·x₀ + σ_t ε with
b = e^Δ (Hoogeboom et al. 2023 shift the whole cosine schedule the same way),
for the same reason. Why it matters here: a smooth field over many voxels is far more
redundant than a natural image's pixels — projected on its own pattern, the signal α‖x₀‖ stands
out of unit noise long before the per-voxel SNR is large (a 32³ normalised spherical harmonic has
‖x₀‖ ≈ 50, so it is still visible at λ ≈ −4). With Δ = 0 almost every training timestep shows
the network the answer in x_t, it learns to read the structure from x_t instead of from the
condition, and a sampler starting from noise locks onto whatever harmonic the noise resembles.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
from torch import Tensor

from rho_core.errors import ConfigError
from rho_core.utils import gather

SCHEDULES = ("linear", "cosine", "sigmoid")
MAX_BETA = 0.999
COSINE_S = 0.008


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete noise schedule: float64 CPU tables of length ``T`` and gathers at int64 ``t``.

    Attributes:
        name: ``"linear"``, ``"cosine"``, ``"sigmoid"`` (or anything, for a custom table).
        betas: β_t, float64 ``(T,)``, in (0, 1).
        alphas_cumprod: ᾱ_t = ∏_{s≤t} (1 − β_s), float64 ``(T,)``.
        shift: the λ shift Δ this table was made with (module docstring); samplers start their
            λ grid about Δ lower, so a shifted schedule starts as uninformative as the plain one.

    The gathers ``alpha``, ``sigma``, ``snr``, ``log_snr`` take an integer tensor ``t`` of any
    shape with values in ``[0, T)`` and return float64 values of the same shape on ``t``'s device.
    """

    name: str
    betas: Tensor
    alphas_cumprod: Tensor
    shift: float = 0.0

    def __post_init__(self) -> None:
        b, a = self.betas, self.alphas_cumprod
        assert b.dtype == torch.float64 and a.dtype == torch.float64, "schedule tables are float64"
        assert b.ndim == 1 and a.shape == b.shape and b.numel() >= 1
        assert b.device.type == "cpu" and a.device.type == "cpu"
        assert bool(((b > 0) & (b < 1)).all()), "betas must lie in (0, 1)"
        assert bool(((a > 0) & (a < 1)).all()), "alphas_cumprod must lie in (0, 1)"

    @classmethod
    def from_betas(cls, name: str, betas: Tensor, shift: float = 0.0) -> Schedule:
        """Build a schedule from a beta table; ``alphas_cumprod = cumprod(1 − betas)``, float64."""
        betas = betas.to(torch.float64).cpu().contiguous()
        return cls(name, betas, torch.cumprod(1.0 - betas, dim=0), float(shift))

    @property
    def T(self) -> int:  # noqa: N802 - the standard symbol
        """Number of timesteps."""
        return int(self.betas.numel())

    @property
    def alphas_cumprod_prev(self) -> Tensor:
        """ᾱ_{t−1} with ᾱ_{−1} = 1 (float64 ``(T,)``)."""
        return torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])

    @property
    def log_snr_table(self) -> Tensor:
        """log SNR_t = log ᾱ_t − log(1 − ᾱ_t), float64 ``(T,)``."""
        a = self.alphas_cumprod
        return torch.log(a) - torch.log1p(-a)

    def alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ_t gathered at ``t``."""
        return gather(self.alphas_cumprod, t)

    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale α_t = √ᾱ_t gathered at ``t``."""
        return gather(self.alphas_cumprod.sqrt(), t)

    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale σ_t = √(1 − ᾱ_t) gathered at ``t``."""
        return gather((1.0 - self.alphas_cumprod).sqrt(), t)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) gathered at ``t``."""
        a = self.alphas_cumprod
        return gather(a / (1.0 - a), t)

    def log_snr(self, t: Tensor) -> Tensor:
        """log SNR_t gathered at ``t`` (twice DPM-Solver's λ_t)."""
        return gather(self.log_snr_table, t)

    def log_snr_at(self, t: Tensor) -> Tensor:
        """log SNR at a possibly *fractional* time ``t`` (float or int tensor in ``[0, T−1]``).

        Convention (shared by the likelihood ODE and the exact denoisers): between the integer
        steps ⌊t⌋ and ⌈t⌉ the log-SNR λ = log(ᾱ/(1−ᾱ)) is interpolated *linearly* in t,
        λ(t) = (1 − w) λ_⌊t⌋ + w λ_⌈t⌉, w = t − ⌊t⌋. Integer ``t`` gives the table exactly.
        Returns float64 of ``t``'s shape on ``t``'s device.
        """
        tc = t.detach().to("cpu", torch.float64).clamp(0.0, self.T - 1)
        lo = tc.floor().long()
        hi = torch.clamp(lo + 1, max=self.T - 1)
        w = tc - lo.to(torch.float64)
        table = self.log_snr_table
        lam = (1.0 - w) * table[lo] + w * table[hi]
        return lam.to(t.device) if t.device.type != "mps" else lam.float().to(t.device)

    def alpha_bar_at(self, t: Tensor) -> Tensor:
        """ᾱ at a possibly fractional ``t``: sigmoid of :meth:`log_snr_at` (float64)."""
        return torch.sigmoid(self.log_snr_at(t))

    def __repr__(self) -> str:
        extra = f", shift={self.shift:g}" if self.shift else ""
        return f"Schedule(name={self.name!r}, T={self.T}{extra})"


def linear_betas(timesteps: int) -> Tensor:
    """Ho et al.'s linear betas, 1e-4 → 0.02 at T = 1000, scaled by 1000/T, clipped to 0.999."""
    scale = 1000.0 / timesteps
    betas = torch.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


def _betas_from_alpha_bar(fn, timesteps: int) -> Tensor:
    """β_t = min(1 − ᾱ((t+1)/T) / ᾱ(t/T), 0.999) for a function ᾱ(u) of continuous time
    ``u`` in [0, 1] (float64)."""
    u = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    abar = fn(u)
    abar = abar / abar[0]
    betas = 1.0 - abar[1:] / abar[:-1]
    return betas.clamp(min=0.0, max=MAX_BETA)


def cosine_betas(timesteps: int, s: float = COSINE_S) -> Tensor:
    """Nichol & Dhariwal's cosine betas (eq. 17), clipped to 0.999."""
    return _betas_from_alpha_bar(
        lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2, timesteps
    )


def sigmoid_betas(
    timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0
) -> Tensor:
    """Chen (2023)'s sigmoid schedule in ᾱ, betas clipped to 0.999."""
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))

    def abar(u: Tensor) -> Tensor:
        return (v_end - torch.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)

    return _betas_from_alpha_bar(abar, timesteps)


def shift_betas(betas: Tensor, shift: float) -> Tensor:
    """β' of the schedule with λ'_t = λ_t + ``shift`` · t/(T − 1) (module docstring), float64,
    clipped to [1e-12, 0.999]."""
    abar = torch.cumprod(1.0 - betas.to(torch.float64), dim=0)
    logit = torch.log(abar) - torch.log1p(-abar)
    ramp = torch.arange(abar.numel(), dtype=torch.float64) / max(abar.numel() - 1, 1)
    shifted = torch.sigmoid(logit + 2.0 * float(shift) * ramp)
    prev = torch.cat([shifted.new_ones(1), shifted[:-1]])
    return (1.0 - shifted / prev).clamp(min=1e-12, max=MAX_BETA)


def make_schedule(name: str, timesteps: int = 1000, shift: float = 0.0) -> Schedule:
    """Build a named schedule with ``timesteps`` steps (float64 tables of that length), its
    λ = log(α/σ) shifted towards noise by up to ``shift`` ≤ 0 at t = T − 1 (0: the plain family;
    module docstring).

    Raises:
        ConfigError: for an unknown name, a timestep count that is not a positive integer, or a
            shift that is not a finite number in [−10, 0].
    """
    try:
        shift = float(shift)
    except (TypeError, ValueError):
        shift = math.nan
    if not (math.isfinite(shift) and -10.0 <= shift <= 0.0):
        raise ConfigError(f"schedule shift must be a number in [-10, 0], got {shift!r}")
    if name not in SCHEDULES:
        raise ConfigError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    try:
        steps = operator.index(timesteps)
    except TypeError:
        steps = -1
    if isinstance(timesteps, bool) or steps < 2:
        # T = 1 has no reverse process worth the name (and a linear table would end at beta = 0.1).
        raise ConfigError(f"timesteps must be an integer >= 2, got {timesteps!r}")
    timesteps = steps
    if name == "linear":
        betas = linear_betas(timesteps)
    elif name == "cosine":
        betas = cosine_betas(timesteps)
    else:
        betas = sigmoid_betas(timesteps)
    # The first beta of cosine/sigmoid is tiny but positive; guard against 0 at huge T.
    betas = betas.clamp(min=1e-12)
    if shift:
        betas = shift_betas(betas, shift)
    return Schedule.from_betas(name, betas, shift)

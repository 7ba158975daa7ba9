"""Pure rotational spectra of rigid molecules: energy levels, line strengths, intensities, profiles.

Everything is computed from the rotational constants — no downloaded line lists. Units:
frequencies and energies in **MHz** (energy E means E/h), temperature in K, dipole components in
Debye, intensities in nm²·MHz (the JPL/CDMS catalogue unit), spectra in nm² (intensity per MHz).

Rigid-rotor Hamiltonian (Gordy & Cook, *Microwave Molecular Spectra*, ch. 7; Townes & Schawlow,
ch. 4) with rotational constants A ≥ B ≥ C about the principal axes a, b, c:

    H = A J_a² + B J_b² + C J_c².

In the symmetric-top basis |J, K⟩ quantised along a (representation I^r: z = a, x = b, y = c),

    ⟨J,K|H|J,K⟩     = (B + C)/2 · [J(J+1) − K²] + A K²
    ⟨J,K±2|H|J,K⟩   = (B − C)/4 · √([J(J+1) − K(K±1)] [J(J+1) − (K±1)(K±2)])

and H is diagonalised numerically for every J (dimension 2J + 1). Limits: B = C gives the
prolate symmetric top E = B J(J+1) + (A − B) K²; A = B gives the oblate top
E = B J(J+1) + (C − B) K_c²; a linear molecule (A → ∞, only K = 0) has E = B J(J+1). Ray's
asymmetry parameter κ = (2B − A − C)/(A − C) runs from −1 (prolate) to +1 (oblate).

Levels within a J are labelled by energy: the n-th lowest (n = 0 … 2J) has K_a = ⌊(n+1)/2⌋ and
K_c = ⌊(2J − n + 1)/2⌋ (the standard correlation with the prolate/oblate limits; τ = K_a − K_c).

Line strengths. The space-fixed dipole is μ_Z = Σ_g Φ_{Zg} μ_g over the principal axes, with Φ
the direction-cosine matrix. Written with spherical components μ_0 = μ_a, μ_{±1} = ∓(μ_b ± iμ_c)/√2
and the symmetric-top functions |J K M⟩ ∝ D^J_{MK}(Ω)*, the M-summed line strength of a transition
between eigenstates |J τ⟩ = Σ_K c_K |J K⟩ and |J' τ'⟩ = Σ_K' c'_K' |J' K'⟩ is (Wigner–Eckart
theorem, Zare, *Angular Momentum*, eqs. 3.118 and 5.164)

    S_g(Jτ → J'τ') = (2J + 1) · | Σ_{K,q} c'_{K+q} c_K w^g_q ⟨J K; 1 q | J' K+q⟩ |²

with Clebsch–Gordan coefficients ⟨J K; 1 q | J' K'⟩ (closed forms in :func:`clebsch_1`), and
weights w^a = (0 at q = ±1, 1 at q = 0), w^b = (−1/√2 at q = +1, +1/√2 at q = −1),
w^c = (1/√2, 1/√2) (the overall factor −i of the c component drops out of |·|²). For one
component g only the transitions allowed by the D₂ symmetry survive:

    a-type (μ_a): ΔK_a even, ΔK_c odd;  b-type (μ_b): ΔK_a odd, ΔK_c odd;
    c-type (μ_c): ΔK_a odd, ΔK_c even;  ΔJ = 0, ±1.

Sum rule (completeness of the direction cosines, Σ_Z Φ_{Zg}² = 1): for every level and every
component g, Σ_{J' = J−1, J, J+1} Σ_τ' S_g(Jτ → J'τ') = 2J + 1. Closed forms: the linear rotor
J → J+1 has S = J + 1; the symmetric top with μ along its axis has S = [(J+1)² − K²]/(J+1) per
K component, at ν = 2B(J+1) independent of K.

Intensity (integrated absorption, the JPL catalogue convention; Pickett et al. 1998, eq. 3):

    I = 4.16231·10⁻⁵ · ν · Σ_g μ_g² S_g · (e^{−E_l/kT} − e^{−E_u/kT}) / Q(T)    [nm² MHz]

with ν and E in MHz, μ in Debye, E/kT = (h/k)·E/T, h/k = 4.799243·10⁻⁵ K/MHz, and the rotational
partition function Q(T) = Σ_{J,τ} (2J + 1) e^{−E_{Jτ}/kT} summed over every level (nuclear-spin
statistics and vibrational states are ignored).

Line profiles on a grid ν_i = f_min + i·Δ (i = 0 … n−1, Δ = (f_max − f_min)/(n − 1)):
Gaussian (Doppler width, FWHM = ν·√(8 ln2 · kT/(m c²)), combined in quadrature with an instrument
resolution FWHM) integrated over each grid cell [ν_i − Δ/2, ν_i + Δ/2] and divided by Δ (so the
spectrum's sum times Δ is the total intensity exactly, for lines away from the edges); or Voigt
(Lorentzian pressure HWHM γ) sampled at the grid points. Spectrum unit: nm² (nm² MHz per MHz).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from rho_core.errors import ConfigError, DataError

KIND = "rotational_spectrum"
GENERATOR_VERSION = "1"
PARAM_NAMES = ("A", "B", "C", "T", "mu_a", "mu_b", "mu_c")
"""Store parameter columns: A, B, C in MHz (A = 0 marks a linear molecule), T in K, μ in D."""

H_OVER_K = 4.799243073366221e-5
"""h/k in K per MHz."""
JPL_CONST = 4.16231e-5
"""JPL catalogue intensity constant: I [nm² MHz] = JPL_CONST · ν[MHz] · Sμ²[D²] · ΔBoltz / Q."""
AMU_C2_K = 1.080954e13
"""Atomic mass unit times c², in kelvin (m_u c² / k = 931.494 MeV / 8.617333e-11 MeV/K)."""

MAX_POINTS = 2**16
MAX_J = 200
BOLTZMANN_CUTOFF = 25.0
"""Levels with E_min(J)/kT above this are dropped (e^−25 ≈ 1.4·10⁻¹¹ of the ground state)."""

# Documented parameter ranges (checked by validate_rotor; wider values raise ConfigError).
RANGES = {
    "A": (100.0, 1.0e6),  # MHz (or 0 / inf: linear molecule)
    "B": (100.0, 1.0e6),
    "C": (100.0, 1.0e6),
    "T": (1.0, 1000.0),  # K
    "mu": (0.0, 20.0),  # Debye, each component
    "mass": (1.0, 1000.0),  # amu
}


# ---------------------------------------------------------------------------------------------
# angular momentum algebra
# ---------------------------------------------------------------------------------------------
def clebsch_1(j: int, k: np.ndarray, q: int, jp: int) -> np.ndarray:
    """⟨j k; 1 q | j' k+q⟩ for integer j, the vector ``k`` of projections, q ∈ {−1, 0, 1} and
    j' ∈ {j−1, j, j+1} (closed forms of the j₂ = 1 table; Condon–Shortley phases). Entries with
    |k| > j or |k+q| > j' are 0."""
    k = np.asarray(k, dtype=np.float64)
    J = float(j)
    with np.errstate(invalid="ignore", divide="ignore"):
        if jp == j + 1:
            if q == 1:
                v = np.sqrt((J + k + 1) * (J + k + 2) / ((2 * J + 1) * (2 * J + 2)))
            elif q == 0:
                v = np.sqrt((J - k + 1) * (J + k + 1) / ((2 * J + 1) * (J + 1)))
            else:
                v = np.sqrt((J - k + 1) * (J - k + 2) / ((2 * J + 1) * (2 * J + 2)))
        elif jp == j:
            if j == 0:
                return np.zeros_like(k)
            if q == 1:
                v = -np.sqrt((J + k + 1) * (J - k) / (2 * J * (J + 1)))
            elif q == 0:
                v = k / math.sqrt(J * (J + 1))
            else:
                v = np.sqrt((J - k + 1) * (J + k) / (2 * J * (J + 1)))
        elif jp == j - 1:
            if j == 0:
                return np.zeros_like(k)
            if q == 1:
                v = np.sqrt((J - k) * (J - k - 1) / (2 * J * (2 * J + 1)))
            elif q == 0:
                v = -np.sqrt((J - k) * (J + k) / (J * (2 * J + 1)))
            else:
                v = np.sqrt((J + k) * (J + k - 1) / (2 * J * (2 * J + 1)))
        else:
            raise AssertionError((j, jp))
    ok = (np.abs(k) <= j) & (np.abs(k + q) <= jp)
    return np.where(ok, np.nan_to_num(v), 0.0)


# component weights w^g_q for q = (+1, 0, −1)
_WEIGHTS = {
    "a": (0.0, 1.0, 0.0),
    "b": (-1.0 / math.sqrt(2.0), 0.0, 1.0 / math.sqrt(2.0)),
    "c": (1.0 / math.sqrt(2.0), 0.0, 1.0 / math.sqrt(2.0)),
}


def hamiltonian(j: int, A: float, B: float, C: float) -> np.ndarray:
    """The (2J+1) × (2J+1) rigid-rotor matrix in the |J, K⟩ basis, K = −J … J (I^r, z = a), MHz."""
    k = np.arange(-j, j + 1, dtype=np.float64)
    jj = j * (j + 1.0)
    h = np.diag((B + C) / 2.0 * (jj - k**2) + A * k**2)
    off = (
        (B - C)
        / 4.0
        * np.sqrt(
            np.clip((jj - k[:-2] * (k[:-2] + 1)) * (jj - (k[:-2] + 1) * (k[:-2] + 2)), 0.0, None)
        )
    )
    idx = np.arange(len(k) - 2)
    h[idx + 2, idx] = off
    h[idx, idx + 2] = off
    return h


def levels(j: int, A: float, B: float, C: float) -> tuple[np.ndarray, np.ndarray]:
    """Energies (2J+1,) ascending (MHz) and eigenvectors (2J+1, 2J+1) (columns) for one J.

    ``A = inf`` (linear molecule) gives the single K = 0 level E = B J(J+1)."""
    if math.isinf(A):
        return np.array([B * j * (j + 1.0)]), np.ones((1, 1))
    e, v = np.linalg.eigh(hamiltonian(j, A, B, C))
    return e, v


def ka_kc(j: int) -> tuple[np.ndarray, np.ndarray]:
    """K_a and K_c labels of the 2J+1 levels of J in ascending energy (module docstring)."""
    n = np.arange(2 * j + 1)
    return (n + 1) // 2, (2 * j - n + 1) // 2


def kappa(A: float, B: float, C: float) -> float:
    """Ray's asymmetry parameter κ = (2B − A − C)/(A − C) (−1 prolate, +1 oblate)."""
    return (2 * B - A - C) / (A - C)


def strength_matrices(
    j: int, jp: int, vj: np.ndarray, vjp: np.ndarray, linear: bool = False
) -> dict[str, np.ndarray]:
    """M-summed line strengths S_g (2J'+1, 2J+1) between the eigenstates of J (columns of
    ``vj``) and J' = J−1, J, J+1 (columns of ``vjp``) for g = a, b, c (module docstring)."""
    if linear:
        s = np.zeros((1, 1))
        if jp == j + 1:
            s[0, 0] = j + 1.0
        elif jp == j - 1:
            s[0, 0] = float(j)
        return {"a": s, "b": np.zeros((1, 1)), "c": np.zeros((1, 1))}
    k = np.arange(-j, j + 1)
    amps = {}
    for q in (1, 0, -1):
        cg = clebsch_1(j, k, q, jp)  # (2J+1,) coefficient of |J,k⟩ → |J',k+q⟩
        # rows of vjp for K' = k + q (only where |k+q| ≤ J')
        kp = k + q
        ok = np.abs(kp) <= jp
        m = np.zeros((2 * jp + 1, 2 * j + 1))
        m[(kp[ok] + jp), np.nonzero(ok)[0]] = cg[ok]
        amps[q] = vjp.T @ m @ vj
    out = {}
    for g, (wp, w0, wm) in _WEIGHTS.items():
        a = wp * amps[1] + w0 * amps[0] + wm * amps[-1]
        out[g] = (2 * j + 1.0) * a**2
    return out


# ---------------------------------------------------------------------------------------------
# the line list of one rotor
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transitions:
    """All electric-dipole transitions of a rotor up to ``j_max`` (μ- and T-independent part).

    Arrays of length L: ``frequency`` (MHz, > 0), ``e_lower``/``e_upper`` (MHz), ``j_lower``,
    ``j_upper``, ``s_a``/``s_b``/``s_c`` (M-summed line strengths per unit dipole component);
    plus the level energies ``level_energy`` and their J (``level_j``) for Q(T)."""

    frequency: np.ndarray
    e_lower: np.ndarray
    e_upper: np.ndarray
    j_lower: np.ndarray
    j_upper: np.ndarray
    s_a: np.ndarray
    s_b: np.ndarray
    s_c: np.ndarray
    level_energy: np.ndarray
    level_j: np.ndarray
    j_max: int

    def partition_function(self, T: float) -> float:
        """Q(T) = Σ (2J+1) e^{−E/kT} over all levels up to ``j_max``."""
        return float(np.sum((2 * self.level_j + 1) * np.exp(-H_OVER_K * self.level_energy / T)))

    def intensities(self, T: float, mu: Sequence[float]) -> np.ndarray:
        """Integrated intensity of every transition (nm² MHz) at T (K), μ = (μ_a, μ_b, μ_c) D."""
        mu_a, mu_b, mu_c = (float(m) for m in mu)
        s = mu_a**2 * self.s_a + mu_b**2 * self.s_b + mu_c**2 * self.s_c
        boltz = np.exp(-H_OVER_K * self.e_lower / T) - np.exp(-H_OVER_K * self.e_upper / T)
        return JPL_CONST * self.frequency * s * boltz / self.partition_function(T)


def j_max_for(A: float, B: float, C: float, T: float, cutoff: float = BOLTZMANN_CUTOFF) -> int:
    """Smallest J whose lowest level lies above ``cutoff`` · kT (lowest energy in J ≥ C·J(J+1),
    ≥ B·J(J+1) for a linear molecule), plus one so its R lines are complete."""
    low = B if math.isinf(A) else min(A, B, C)
    x = cutoff * T / (H_OVER_K * low)  # J(J+1) > x
    j = int(math.ceil((-1.0 + math.sqrt(1.0 + 4.0 * x)) / 2.0)) + 1
    return j


def transitions(A: float, B: float, C: float, j_max: int) -> Transitions:
    """Every transition with nonzero strength between levels with J ≤ ``j_max`` (MHz).

    A linear molecule is ``A = inf`` (then C is ignored). Absorption convention: the lower level is
    the one of lower energy, whichever J it has."""
    linear = math.isinf(A)
    if j_max > MAX_J:
        raise ConfigError(
            f"the spectrum needs levels up to J = {j_max}, more than {MAX_J}: lower the "
            "temperature or raise the rotational constants"
        )
    lev = [levels(j, A, B, C) for j in range(j_max + 1)]
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("f", "el", "eu", "jl", "ju", "a", "b", "c")
    }
    for j in range(j_max + 1):
        e, v = lev[j]
        for jp in (j, j + 1):
            if jp > j_max:
                continue
            ep, vp = lev[jp]
            s = strength_matrices(j, jp, v, vp, linear)
            tot = s["a"] + s["b"] + s["c"]
            rows, colsj = np.nonzero(tot > 1e-12 * max(1.0, float(tot.max(initial=0.0))))
            if jp == j:  # each pair once: upper-triangle (row level above column level)
                keep = rows > colsj
                rows, colsj = rows[keep], colsj[keep]
            eu_, el_ = ep[rows], e[colsj]
            lower_is_j = el_ <= eu_
            cols["f"].append(np.abs(eu_ - el_))
            cols["el"].append(np.minimum(el_, eu_))
            cols["eu"].append(np.maximum(el_, eu_))
            cols["jl"].append(np.where(lower_is_j, j, jp))
            cols["ju"].append(np.where(lower_is_j, jp, j))
            for g in "abc":
                cols[g].append(s[g][rows, colsj])
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    keep = cat["f"] > 1e-9
    level_e = np.concatenate([e for e, _ in lev])
    level_j = np.concatenate([np.full(len(e), j) for j, (e, _) in enumerate(lev)])
    return Transitions(
        frequency=cat["f"][keep],
        e_lower=cat["el"][keep],
        e_upper=cat["eu"][keep],
        j_lower=cat["jl"][keep].astype(np.int64),
        j_upper=cat["ju"][keep].astype(np.int64),
        s_a=cat["a"][keep],
        s_b=cat["b"][keep],
        s_c=cat["c"][keep],
        level_energy=level_e,
        level_j=level_j.astype(np.int64),
        j_max=int(j_max),
    )


@lru_cache(maxsize=64)
def _cached_transitions(A: float, B: float, C: float, j_max: int) -> Transitions:
    return transitions(A, B, C, j_max)


def merge_lines(freq: np.ndarray, inten: np.ndarray, tol: float = 1e-6) -> tuple:
    """Sort by frequency and merge lines closer than ``tol`` MHz (degenerate ±K components of
    symmetric tops; every K of a rigid symmetric top's J → J+1 line), summing intensities."""
    order = np.argsort(freq, kind="stable")
    f, i = freq[order], inten[order]
    if f.size == 0:
        return f, i
    new = np.concatenate([[True], np.diff(f) > tol])
    group = np.cumsum(new) - 1
    fi = np.zeros(group[-1] + 1)
    np.add.at(fi, group, i)
    ff = f[new]
    return ff, fi


# ---------------------------------------------------------------------------------------------
# grid and profiles
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """Frequency grid ν_i = f_min + i·Δ, i = 0 … n−1 (MHz)."""

    f_min: float = 2000.0
    f_max: float = 26000.0
    n_points: int = 8192

    def __post_init__(self) -> None:
        if not (isinstance(self.n_points, int | np.integer) and 16 <= self.n_points <= MAX_POINTS):
            raise ConfigError(
                f"n_points must be an integer in [16, {MAX_POINTS}] (2^16), got {self.n_points}"
            )
        if not (0.0 <= self.f_min < self.f_max) or not math.isfinite(self.f_max):
            raise ConfigError(
                f"need 0 ≤ f_min < f_max (MHz), got f_min={self.f_min}, f_max={self.f_max}"
            )

    @property
    def step(self) -> float:
        return (self.f_max - self.f_min) / (self.n_points - 1)

    def frequencies(self) -> np.ndarray:
        return self.f_min + self.step * np.arange(self.n_points)

    def to_dict(self) -> dict:
        return {
            "f_min": float(self.f_min),
            "f_max": float(self.f_max),
            "n_points": int(self.n_points),
        }


def doppler_fwhm(freq: np.ndarray, T: float, mass_amu: float) -> np.ndarray:
    """Doppler FWHM (MHz) = ν √(8 ln 2 · kT / (m c²))."""
    return np.asarray(freq) * math.sqrt(8.0 * math.log(2.0) * T / (mass_amu * AMU_C2_K))


def render(
    freq: np.ndarray,
    intensity: np.ndarray,
    grid: Grid,
    fwhm: np.ndarray | float,
    profile: str = "gaussian",
    lorentz_hwhm: float = 0.0,
) -> np.ndarray:
    """Spectrum (n_points,) float64 in intensity per MHz from lines (MHz, nm² MHz).

    ``gaussian``: each line's normal profile (FWHM per line) integrated over every grid cell and
    divided by Δ (area-exact). ``voigt``: ``scipy.special.voigt_profile`` (Gaussian σ from the
    FWHM, Lorentzian HWHM ``lorentz_hwhm``) sampled at the grid points."""
    from scipy.special import erf, voigt_profile

    n, d = grid.n_points, grid.step
    out = np.zeros(n)
    freq = np.asarray(freq, dtype=np.float64)
    inten = np.asarray(intensity, dtype=np.float64)
    if freq.size == 0:
        return out
    sig = np.broadcast_to(np.asarray(fwhm, dtype=np.float64), freq.shape) / (
        2.0 * math.sqrt(2.0 * math.log(2.0))
    )
    sig = np.maximum(sig, 1e-6 * d)
    half = 6.0 * sig + (200.0 * lorentz_hwhm if profile == "voigt" else 0.0)
    centre = (freq - grid.f_min) / d
    # process in batches of equal window width (in points) to vectorise
    w = np.ceil(half / d).astype(np.int64) + 1
    for width in np.unique(np.minimum(w, n)):
        sel = np.nonzero(np.minimum(w, n) == width)[0]
        for start in range(0, sel.size, 4096):
            s = sel[start : start + 4096]
            idx = np.round(centre[s]).astype(np.int64)[:, None] + np.arange(-width, width + 1)
            ok = (idx >= 0) & (idx < n)
            nu = grid.f_min + d * idx
            if profile == "gaussian":
                z = 1.0 / (math.sqrt(2.0) * sig[s, None])
                hi = erf((nu + d / 2 - freq[s, None]) * z)
                lo = erf((nu - d / 2 - freq[s, None]) * z)
                val = inten[s, None] * (hi - lo) / (2.0 * d)
            else:
                val = inten[s, None] * voigt_profile(nu - freq[s, None], sig[s, None], lorentz_hwhm)
            np.add.at(out, idx[ok], val[ok])
    return out


# ---------------------------------------------------------------------------------------------
# one spectrum
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rotor:
    """A molecule: rotational constants (MHz; ``A = inf`` linear), dipole components (D), mass."""

    A: float
    B: float
    C: float
    mu_a: float = 1.0
    mu_b: float = 0.0
    mu_c: float = 0.0
    mass: float = 50.0

    @property
    def linear(self) -> bool:
        return math.isinf(self.A) or self.A == 0.0


def validate_rotor(A: float, B: float, C: float, T: float, mu: Sequence[float], mass: float):
    """Raise :class:`ConfigError` with what to fix for constants outside the documented ranges."""
    linear = math.isinf(A) or A == 0.0
    lo, hi = RANGES["B"]
    names = ("B",) if linear else ("A", "B", "C")
    vals = (B,) if linear else (A, B, C)
    for name, v in zip(names, vals, strict=True):
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ConfigError(f"rotational constant {name} = {v} MHz outside [{lo:g}, {hi:g}] MHz")
    if not linear and not (A >= B >= C):
        raise ConfigError(f"need A ≥ B ≥ C (principal-axis convention), got A={A}, B={B}, C={C}")
    if not (RANGES["T"][0] <= T <= RANGES["T"][1]):
        raise ConfigError(
            f"temperature T = {T} K outside [{RANGES['T'][0]:g}, {RANGES['T'][1]:g}] K"
        )
    for g, m in zip("abc", mu, strict=True):
        if not (RANGES["mu"][0] <= m <= RANGES["mu"][1]):
            raise ConfigError(f"dipole component mu_{g} = {m} D outside [0, {RANGES['mu'][1]:g}] D")
    if linear and (mu[1] or mu[2]):
        raise ConfigError("a linear molecule has its dipole along its axis: set mu_b = mu_c = 0")
    if not any(mu):
        raise ConfigError("all dipole components are 0: a non-polar molecule has no spectrum")
    if not (RANGES["mass"][0] <= mass <= RANGES["mass"][1]):
        raise ConfigError(f"mass {mass} amu outside [1, 1000] amu")


@dataclass(frozen=True)
class Spectrum:
    """One computed spectrum: ``values`` (n_points,) nm² and its line list (MHz, nm² MHz),
    sorted by frequency, lines inside the grid above ``min_relative`` of the strongest."""

    values: np.ndarray
    frequency: np.ndarray
    intensity: np.ndarray


def rotational_spectrum(
    A: float,
    B: float,
    C: float,
    T: float,
    mu: Sequence[float],
    grid: Grid | None = None,
    *,
    mass: float = 50.0,
    resolution: float | None = None,
    profile: str = "gaussian",
    lorentz_hwhm: float = 0.0,
    min_relative: float = 1e-8,
    j_max: int | None = None,
) -> Spectrum:
    """The rigid-rotor absorption spectrum on ``grid`` (module docstring for the physics).

    Args:
        A, B, C: rotational constants in MHz, A ≥ B ≥ C; ``A = inf`` or 0: linear molecule.
        T: rotational temperature in K.
        mu: (μ_a, μ_b, μ_c) in Debye.
        grid: frequency grid (default 2–26 GHz, 8192 points: a chirped-pulse FTMW band).
        mass: molecular mass in amu (Doppler width).
        resolution: instrument FWHM in MHz added in quadrature to the Doppler FWHM; default
            2.5 grid steps (lines resolved by a few points — a Doppler width alone is far below
            one step of a coarse survey grid).
        profile: ``gaussian`` (cell-integrated) or ``voigt`` (with ``lorentz_hwhm`` MHz).
        min_relative: lines weaker than this fraction of the strongest in the grid are dropped.
        j_max: highest J (default from the Boltzmann cutoff, :func:`j_max_for`).
    """
    grid = grid or Grid()
    validate_rotor(A, B, C, T, mu, mass)
    if profile not in ("gaussian", "voigt"):
        raise ConfigError(f"profile must be 'gaussian' or 'voigt', got {profile!r}")
    if lorentz_hwhm < 0:
        raise ConfigError(f"lorentz_hwhm must be ≥ 0 MHz, got {lorentz_hwhm}")
    A_ = math.inf if (math.isinf(A) or A == 0.0) else float(A)
    jm = int(j_max) if j_max is not None else j_max_for(A_, B, C, T)
    tr = _cached_transitions(A_, float(B), float(C), jm)
    f, inten = merge_lines(tr.frequency, tr.intensities(T, mu))
    inside = (f >= grid.f_min) & (f <= grid.f_max)
    f, inten = f[inside], inten[inside]
    if inten.size:
        keep = inten >= min_relative * inten.max()
        f, inten = f[keep], inten[keep]
    res = 2.5 * grid.step if resolution is None else float(resolution)
    if res < 0:
        raise ConfigError(f"resolution must be ≥ 0 MHz, got {resolution}")
    fwhm = np.sqrt(doppler_fwhm(f, T, mass) ** 2 + res**2)
    values = render(f, inten, grid, fwhm, profile, lorentz_hwhm)
    return Spectrum(values=values, frequency=f, intensity=inten)


# ---------------------------------------------------------------------------------------------
# parameter sets and the store
# ---------------------------------------------------------------------------------------------
def random_rotors(
    n: int,
    seed: int = 0,
    b_range: tuple[float, float] = (2000.0, 5000.0),
    c_min: float = 1500.0,
) -> list[tuple[float, float, float]]:
    """``n`` asymmetric tops (A, B, C) in MHz, rounded to 1 kHz: B log-uniform in ``b_range``,
    A/B uniform in [1.3, 3], Ray's κ uniform in [−0.95, 0.95] and C solved from κ,
    C = (2B − A − κA)/(1 − κ), kept when ``c_min`` ≤ C ≤ B (a floor on C bounds the J a cold
    spectrum needs)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[float, float, float]] = []
    while len(out) < n:
        B = float(np.exp(rng.uniform(np.log(b_range[0]), np.log(b_range[1]))))
        A = B * float(rng.uniform(1.3, 3.0))
        k = float(rng.uniform(-0.95, 0.95))
        C = (2 * B - A - k * A) / (1 - k)
        if c_min <= C <= B:
            out.append((round(A, 3), round(B, 3), round(C, 3)))
    return out


def random_conditions(
    rotors: Sequence[tuple[float, float, float]],
    per_rotor: int,
    seed: int = 0,
    t_range: tuple[float, float] = (2.0, 10.0),
    mu_range: tuple[float, float] = (0.0, 3.0),
) -> np.ndarray:
    """(len(rotors)·per_rotor, 7) rows (A, B, C, T, μ_a, μ_b, μ_c): T log-uniform in
    ``t_range`` K, each μ_g uniform in ``mu_range`` D with μ_a ≥ 0.2 D (so every spectrum has
    lines); μ_b = μ_c = 0 for a linear molecule (A = 0)."""
    rng = np.random.default_rng(seed)
    rows = []
    for A, B, C in rotors:
        for _ in range(per_rotor):
            T = float(np.exp(rng.uniform(np.log(t_range[0]), np.log(t_range[1]))))
            mu = rng.uniform(mu_range[0], mu_range[1], size=3)
            mu[0] = max(mu[0], 0.2)
            if A == 0.0 or math.isinf(A):  # linear: the dipole lies along the axis
                mu[1:] = 0.0
            rows.append((A, B, C, round(T, 4), *np.round(mu, 4)))
    return np.asarray(rows, dtype=np.float64)


LINES_GROUP = "lines"


def _workdir(writer) -> Path:
    """Where an open :class:`~rho_core.data.store.StoreWriter` is writing: a new store is built
    under a temporary sibling name and renamed into place when the writer closes, so the line
    arrays must go where the fields go. Uses ``writer.workdir`` when the store module exposes
    it, else its (private) working directory, else the store path."""
    for name in ("workdir", "_dir"):
        d = getattr(writer, name, None)
        if d is not None:
            return Path(d)
    return Path(writer.path)


def write_lines(path: str | os.PathLike, freqs: list, intens: list, start_index: int) -> None:
    """Append the line lists of samples ``start_index …`` to ``path/lines`` (ragged arrays
    ``frequency`` (L,) MHz, ``intensity`` (L,) nm² MHz, ``offsets`` (N+1,) int64: lines of sample
    i are ``offsets[i]:offsets[i+1]``). Called *before* the fields are committed, so readers that
    cut at the committed count never see a sample without its lines."""
    import zarr

    p = Path(path) / LINES_GROUP
    if start_index == 0:
        g = zarr.open_group(str(p), mode="w", zarr_format=3)
        for name, dt in (("frequency", "float64"), ("intensity", "float64")):
            g.create_array(name, shape=(0,), chunks=(65536,), dtype=dt)
        off = g.create_array("offsets", shape=(1,), chunks=(65536,), dtype="int64")
        off[:] = np.zeros(1, dtype=np.int64)
    g = zarr.open_group(str(p), mode="r+", zarr_format=3)
    off = g["offsets"]
    n0 = start_index
    offsets = np.asarray(off[: n0 + 1])
    if offsets.shape[0] != n0 + 1:
        raise DataError(f"line list of '{path}' holds {offsets.shape[0] - 1} samples, not {n0}")
    base = int(offsets[-1])
    counts = np.array([len(f) for f in freqs], dtype=np.int64)
    total = base + int(counts.sum())
    for name, vals in (("frequency", freqs), ("intensity", intens)):
        arr = g[name]
        arr.resize((total,))
        if counts.sum():
            arr[base:total] = np.concatenate(vals).astype(np.float64)
    off.resize((n0 + 1 + len(freqs),))
    off[n0 + 1 :] = base + np.cumsum(counts)


def read_lines(path: str | os.PathLike, index: int | None = None):
    """Line list(s) of a rotational-spectrum store: ``(frequency, intensity)`` of sample
    ``index``, or a list of them for every committed sample when ``index`` is None."""
    import zarr

    from rho_core.data.store import open_store

    store = open_store(path)
    if store.kind != KIND:
        raise DataError(f"store '{path}' is of kind '{store.kind}', not '{KIND}': no line list")
    g = zarr.open_group(str(Path(path) / LINES_GROUP), mode="r")
    off = np.asarray(g["offsets"][: store.n + 1])
    f = np.asarray(g["frequency"][: int(off[-1])])
    i = np.asarray(g["intensity"][: int(off[-1])])
    if index is not None:
        if not 0 <= index < store.n:
            raise DataError(f"sample index {index} outside 0..{store.n - 1}")
        return f[off[index] : off[index + 1]], i[off[index] : off[index + 1]]
    return [(f[a:b], i[a:b]) for a, b in zip(off[:-1], off[1:], strict=True)]


def grid_of(path: str | os.PathLike) -> Grid:
    """The frequency :class:`Grid` of a rotational-spectrum store (from its provenance)."""
    from rho_core.data.store import open_store

    g = open_store(path).provenance.get("grid")
    if not g:
        raise DataError(f"store '{path}' has no frequency grid in its provenance")
    return Grid(float(g["f_min"]), float(g["f_max"]), int(g["n_points"]))


def generate_rotational_store(
    path: str | os.PathLike,
    conditions: np.ndarray | Sequence[Sequence[float]],
    grid: Grid | None = None,
    *,
    mass: float = 50.0,
    resolution: float | None = None,
    profile: str = "gaussian",
    lorentz_hwhm: float = 0.0,
    mode: str = "w-",
    normalization: str | None = "log",
    decades: float = 2.0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a store of kind ``rotational_spectrum``: one spectrum per row of ``conditions``.

    Args:
        path: store path (mode ``"w-"`` create or ``"w"`` overwrite; appending is not supported
            because the normalisation is fitted to the whole set).
        conditions: (N, 7) rows (A, B, C, T, μ_a, μ_b, μ_c) — MHz, K, Debye; A = 0 (or inf) for
            a linear molecule.
        grid: the frequency grid (stored in the provenance ``grid``; ≤ 2¹⁶ points).
        mass, resolution, profile, lorentz_hwhm: as :func:`rotational_spectrum`.
        normalization: ``log`` (default), ``asinh``, ``minmax`` or None — fitted and written
            with :func:`rho_core.data.normalization.spectrum_normalization` so that every line
            within ``decades`` of its spectrum's strongest lies ≥ one decade above the floor.

    Returns the path. Fields ``(N, 1, n_points)`` float32 in nm²; params (N, 7) in
    :data:`PARAM_NAMES` order; line lists in ``STORE/lines`` (:func:`read_lines`).
    """
    from rho_core import __version__
    from rho_core.data.store import create_store, preflight

    grid = grid or Grid()
    if mode not in ("w-", "w"):
        raise ConfigError(
            "rotational-spectrum stores are written whole (mode 'w-' or 'w'); write a new store "
            "instead of appending"
        )
    rows = np.asarray(conditions, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(PARAM_NAMES) or rows.shape[0] == 0:
        raise ConfigError(
            f"conditions must be (N ≥ 1, {len(PARAM_NAMES)}) rows {PARAM_NAMES}, got {rows.shape}"
        )
    for r in rows:  # validate everything before writing anything
        validate_rotor(r[0] if r[0] else math.inf, r[1], r[2], r[3], r[4:7], mass)
    preflight(path, mode)
    # one J range per rotor (for its hottest row), so the transitions are computed once per rotor
    jmax: dict[tuple[float, float, float], int] = {}
    for r in rows:
        key = (float(r[0]), float(r[1]), float(r[2]))
        A_ = math.inf if key[0] == 0.0 else key[0]
        jmax[key] = max(jmax.get(key, 0), j_max_for(A_, key[1], key[2], float(r[3])))
    provenance = {
        "generator": "rho_core.data.rotational",
        "generator_version": GENERATOR_VERSION,
        "rho_version": __version__,
        "grid": grid.to_dict(),
        "grid_rule": "nu_i = f_min + i * (f_max - f_min) / (n_points - 1), MHz",
        "units": "frequency MHz; A,B,C MHz (A=0: linear); T K; mu Debye; field nm^2 "
        "(intensity per MHz); line intensity nm^2 MHz (JPL convention)",
        "mass_amu": float(mass),
        "resolution_mhz": float(2.5 * grid.step if resolution is None else resolution),
        "profile": profile,
        "lorentz_hwhm_mhz": float(lorentz_hwhm),
        "lines": "STORE/lines: frequency, intensity, offsets (ragged)",
    }
    writer = create_store(
        path,
        kind=KIND,
        spatial_dims=1,
        param_names=list(PARAM_NAMES),
        field_shape=(1, grid.n_points),
        provenance=provenance,
        mode=mode,  # type: ignore[arg-type]
    )
    with writer:
        spc = writer.samples_per_chunk
        for start in range(0, len(rows), spc):
            chunk = rows[start : start + spc]
            specs = [
                rotational_spectrum(
                    r[0], r[1], r[2], r[3], r[4:7], grid, mass=mass, resolution=resolution,
                    profile=profile, lorentz_hwhm=lorentz_hwhm,
                    j_max=jmax[(float(r[0]), float(r[1]), float(r[2]))],
                )
                for r in chunk
            ]  # fmt: skip
            for r, sp in zip(chunk, specs, strict=True):
                if sp.frequency.size == 0:
                    raise ConfigError(
                        f"molecule A,B,C = {r[0]:g},{r[1]:g},{r[2]:g} MHz at T = {r[3]:g} K has no "
                        f"lines in [{grid.f_min:g}, {grid.f_max:g}] MHz; widen the band"
                    )
            write_lines(
                _workdir(writer), [s.frequency for s in specs], [s.intensity for s in specs], start
            )
            fields = np.stack([s.values for s in specs])[:, None].astype(np.float32)
            writer.append(fields, chunk)
            if progress is not None:
                progress(start + len(chunk), len(rows))
    if normalization:
        from rho_core.data.normalization import spectrum_normalization, write_normalization

        write_normalization(path, spectrum_normalization(path, normalization, decades=decades))
    return Path(path)

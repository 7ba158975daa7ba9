"""Hydrogen-like orbital probability densities |ψ_nlm|² on the spherical-harmonic grid.

A physically meaningful 3-D family beside the spherical harmonics: non-negative densities that
span many orders of magnitude (the "large spatial ranges" problem of the paper). Units: lengths in
Bohr radii a₀ (nuclear charge Z = 1), densities in a₀⁻³; each volume integrates to ≈ 1.

    ψ_nlm(r, θ, φ) = R_nl(r) · S_l^m(θ, φ)
    R_nl(r) = √((2/n)³ (n−l−1)! / (2n (n+l)!)) · e^{−ρ/2} ρ^l L_{n−l−1}^{(2l+1)}(ρ),  ρ = 2r/n

with L the generalised Laguerre polynomial (``scipy.special.eval_genlaguerre``) and S_l^m the
orthonormal real spherical harmonic of :mod:`rho_core.data.spherical_harmonics` (so the orbitals
are the real ones chemists draw: m = 1 ~ p_x, m = −1 ~ p_y, m = 0 ~ p_z). ∫ R_nl² r² dr = 1 and
∮ S² dΩ = 1, hence ∫ |ψ|² d³x = 1. The ground state is |ψ_100|² = e^{−2r}/π.

Grid: the design's ``c = linspace(-1, 1, size)`` per axis, ``[x, y, z]`` indexing, scaled to the
physical half-width L: x = L·c. By default L depends on n so every orbital fills its box,

    L_n = (2n² + 5n) a₀,

which keeps ≥ 99.9 % of the probability inside the inscribed sphere of radius L_n for every
l < n, n ≤ 6 (the 99.9 % radius grows like ≈ 2n² + 4n). A fixed ``half_width`` puts all orbitals
on one common physical grid instead. The half-width of each sample is recorded in the
provenance (``half_width_rule``) and is a function of the parameters.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.special import eval_genlaguerre

from rho_core.data.spherical_harmonics import (
    _angular,
    _slabs,
    angles,
    check_lm,
    check_memory,
    grid_axis,
)
from rho_core.errors import ConfigError

KIND = "hydrogen_orbital"
GENERATOR_VERSION = "1"


def check_nlm(n: int, l: int, m: int) -> None:
    """Raise :class:`ConfigError` unless n ≥ 1, 0 ≤ l < n, |m| ≤ l."""
    if int(n) != n or n < 1:
        raise ConfigError(f"principal quantum number n must be an integer ≥ 1, got n={n}")
    if l >= n:
        raise ConfigError(f"l must satisfy 0 ≤ l < n, got n={n}, l={l}")
    check_lm(l, m, "real")


def default_half_width(n: int) -> float:
    """Box half-width L_n = 2n² + 5n Bohr radii (see module docstring)."""
    return float(2 * n * n + 5 * n)


def radial(n: int, l: int, r: np.ndarray) -> np.ndarray:
    """R_nl(r) (a₀ = 1), normalised so that ∫₀^∞ R² r² dr = 1; float64."""
    check_nlm(n, l, 0)
    rho = 2.0 * np.asarray(r, dtype=np.float64) / n
    log_norm = 1.5 * math.log(2.0 / n) + 0.5 * (
        math.lgamma(n - l) - math.log(2.0 * n) - math.lgamma(n + l + 1)
    )
    return (
        math.exp(log_norm) * np.exp(-rho / 2) * rho**l * eval_genlaguerre(n - l - 1, 2 * l + 1, rho)
    )


def density_at(n: int, l: int, m: int, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """|ψ_nlm|² at physical points (x, y, z) in a₀ (broadcast), in a₀⁻³, float64."""
    check_nlm(n, l, m)
    r, cos_t, sin_t, phi = angles(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
    psi = radial(n, l, r) * _angular(l, m, cos_t, sin_t, phi, "real")
    return psi * psi


def hydrogen_density(
    n: int, l: int, m: int, size: int, half_width: float | None = None
) -> np.ndarray:
    """Volume ``(size, size, size)`` float32 of |ψ_nlm|² on the grid of half-width L (a₀)."""
    check_nlm(n, l, m)
    L = default_half_width(n) if half_width is None else float(half_width)
    if not L > 0:
        raise ConfigError(f"half_width must be > 0 Bohr radii, got {half_width}")
    c = grid_axis(size) * L
    out = np.empty((size, size, size), dtype=np.float32)
    xs, ys = c[:, None, None], c[None, :, None]
    for sl in _slabs(size):
        out[:, :, sl] = density_at(n, l, m, xs, ys, c[None, None, sl])
    return out


def nlm_triples(n_max: int) -> list[tuple[int, int, int]]:
    """All (n, l, m) with 1 ≤ n ≤ n_max, 0 ≤ l < n, −l ≤ m ≤ l (Σ n² of them), in store order."""
    if int(n_max) != n_max or n_max < 1:
        raise ConfigError(f"n_max must be an integer ≥ 1, got {n_max}")
    return [(n, l, m) for n in range(1, n_max + 1) for l in range(n) for m in range(-l, l + 1)]


def generate_hydrogen(
    out: str | os.PathLike,
    size: int = 32,
    n_max: int = 3,
    mode: str = "w-",
    *,
    half_width: float | None = None,
    nlm: Sequence[tuple[int, int, int]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a store of kind ``"hydrogen_orbital"``: one |ψ_nlm|² volume per (n, l, m).

    Args:
        out: store path.
        size: voxels per axis (≥ 2).
        n_max: highest principal quantum number (all orbitals up to it unless ``nlm`` given).
        mode: store mode ``"w-"``, ``"w"`` or ``"a"``.
        half_width: common box half-width in a₀; default L_n = 2n² + 5n per orbital.
        nlm: explicit list of (n, l, m).
        progress: ``progress(done, total)`` after each volume.

    Returns:
        The store path. Fields ``(N, 1, size, size, size)`` float32 in a₀⁻³; params (n, l, m).
    """
    from rho_core import __version__
    from rho_core.data.store import create_store

    if int(size) < 2:
        raise ConfigError(f"size must be at least 2 voxels per axis, got {size}")
    size = int(size)
    triples = nlm_triples(n_max) if nlm is None else [tuple(map(int, t)) for t in nlm]
    for t in triples:
        check_nlm(*t)
    if not triples:
        raise ConfigError("no (n, l, m) orbitals to generate")
    if half_width is not None and not float(half_width) > 0:
        raise ConfigError(f"half_width must be > 0 Bohr radii, got {half_width}")
    from rho_core.data.store import preflight, rows_to_append

    check_memory(size)  # a chunk of volumes, then its stacked copy
    preflight(out, mode)
    provenance = {
        "generator": "rho_core.data.hydrogen",
        "generator_version": GENERATOR_VERSION,
        "rho_version": __version__,
        "size": size,
        "n_max": max(t[0] for t in triples),
        "units": "lengths in Bohr radii (Z = 1), density in a0^-3",
        "grid": "x = L * linspace(-1, 1, size) per axis, [x, y, z] indexing (meshgrid ij)",
        "half_width_rule": "2n^2 + 5n" if half_width is None else f"{float(half_width)}",
        "angular": "orthonormal real spherical harmonics (m>0 cos, m<0 sin)",
    }
    # appending: same box rule only; orbitals already in the store are not written twice
    triples = rows_to_append(out, mode, provenance, ("generator", "half_width_rule"), triples)
    if not triples:
        return Path(out)
    writer = create_store(
        out,
        kind=KIND,
        spatial_dims=3,
        param_names=["n", "l", "m"],
        field_shape=(1, size, size, size),
        provenance=provenance,
        mode=mode,  # type: ignore[arg-type]
    )
    with writer:
        spc = writer.samples_per_chunk
        for start in range(0, len(triples), spc):
            group = triples[start : start + spc]
            vols = np.stack([hydrogen_density(*t, size, half_width) for t in group])
            writer.append(vols[:, None], np.asarray(group, dtype=np.float64))
            if progress is not None:
                progress(start + len(group), len(triples))
    return Path(out)

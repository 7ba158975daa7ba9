"""Projected surface-density images of particle snapshots, streamed chunk by chunk.

For a view matrix ``R`` (rows ``u``, ``v``, line of sight) and centre ``c``, particle ``p`` at
``r_p`` with mass ``m_p`` projects to ``(u_p, v_p) = R[:2] (r_p - c)``. The image covers the square
``|u|, |v| < fov / 2`` with ``N = image_size`` pixels of side ``h = fov / N`` and holds

    Sigma[j, i] = (1 / h^2) * sum_p m_p W(u_p - u_i) W(v_p - v_j)        [mass / kpc^2]

(row ``j`` along ``v``, column ``i`` along ``u``; pixel centres ``u_i = -fov/2 + (i + 1/2) h``).
``W`` is cloud-in-cell (the tent of width ``2h``; default) or a Gaussian of width ``sigma_px * h``
truncated at ``3 sigma`` and renormalised per particle. CIC weights that fall outside the grid are
folded onto the edge pixels, so for CIC the image total equals the mass inside the field of view
exactly. Stored images are ``log10(max(Sigma, floor))``.

Axis projections are right-handed: ``"z"`` -> (u, v) = (x, y), ``"x"`` -> (y, z), ``"y"`` -> (z, x).
Angle projections ``(inclination, azimuth)`` in degrees use ``R = R_x(inclination) R_z(azimuth)``
(``(0, 0)`` is the ``"z"`` view, ``(90, 0)`` looks along ``-y``, edge-on to the x-y plane).

Memory bound: two streaming passes (centre of mass, deposit) hold one chunk at a time; a chunk of
``k`` particles costs about ``45 k`` bytes from the reader plus ``~100 k`` bytes of temporaries
(CIC; Gaussian ``~(100 + 24 (2K+1)) k``), and the images ``~24 N^2`` bytes per channel. With the
default ``k = 2^16`` that is ~10 MB whatever the snapshot size (``benchmarks/bonsai.py`` measures
the tracemalloc peak); the memory-mapped file itself is paged by the OS (page cache, evictable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from rho_core.data.particles import (
    COMPONENT_NAMES,
    DARK_MATTER,
    DEFAULT_CHUNK,
    UNITS,
    Snapshot,
    resolve_components,
)
from rho_core.errors import ConfigError, DataError

AXIS_VIEWS = {
    "z": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "x": ((0, 1, 0), (0, 0, 1), (1, 0, 0)),
    "y": ((0, 0, 1), (1, 0, 0), (0, 1, 0)),
}
KERNELS = ("cic", "gaussian")


@dataclass(frozen=True)
class RenderConfig:
    """How a snapshot becomes an image.

    Attributes:
        image_size: pixels per side ``N``.
        fov: full width of the square field of view [kpc]; ``None`` = decided per run
            (see :func:`auto_fov`), never per frame.
        projection: ``"x"``, ``"y"``, ``"z"`` (line of sight) or ``"inclination,azimuth"``
            in degrees.
        kernel: ``"cic"`` (default) or ``"gaussian"``.
        sigma_px: Gaussian kernel width in pixels.
        components: component selection for channel 0 (``"stars"`` = bulge + disk + other).
        with_dm: add dark matter as a second channel.
        log: store ``log10(max(Sigma, floor))`` rather than ``Sigma``.
        floor: surface-density floor [2.324876e9 Msun / kpc^2] applied before the log.
        center: ``"com"`` (centre of mass of the channel-0 components), ``"com_all"``
            (all particles), or an explicit ``(x, y, z)`` in kpc.
        chunk_size: particles per streamed chunk (the memory bound).
    """

    image_size: int = 128
    fov: float | None = None
    projection: str = "z"
    kernel: str = "cic"
    sigma_px: float = 1.0
    components: str = "stars"
    with_dm: bool = False
    log: bool = True
    floor: float = 1e-4
    center: str | tuple[float, float, float] = "com"
    chunk_size: int = DEFAULT_CHUNK

    def __post_init__(self):
        if self.image_size < 2:
            raise ConfigError(f"image_size must be >= 2, got {self.image_size}")
        if self.fov is not None and not (self.fov > 0 and math.isfinite(self.fov)):
            raise ConfigError(f"fov must be a positive width in kpc, got {self.fov}")
        if self.kernel not in KERNELS:
            raise ConfigError(f"unknown kernel {self.kernel!r}; choose from {KERNELS}")
        if self.kernel == "gaussian" and not self.sigma_px > 0:
            raise ConfigError(f"sigma_px must be > 0, got {self.sigma_px}")
        if not self.floor > 0:
            raise ConfigError(f"floor must be > 0, got {self.floor}")
        if isinstance(self.center, str) and self.center not in ("com", "com_all"):
            raise ConfigError(f"center must be 'com', 'com_all' or (x, y, z), got {self.center!r}")
        view_matrix(self.projection)
        resolve_components(self.components)

    @property
    def channels(self) -> tuple[str, ...]:
        return (self.components, "dark_matter") if self.with_dm else (self.components,)


def view_matrix(projection: str | Sequence[float]) -> np.ndarray:
    """``(3, 3)`` rotation whose rows are the image ``u``, image ``v`` and line-of-sight axes."""
    if isinstance(projection, str) and projection.strip().lower() in AXIS_VIEWS:
        return np.array(AXIS_VIEWS[projection.strip().lower()], np.float64)
    try:
        if isinstance(projection, str):
            inc, az = (float(a) for a in projection.split(","))
        else:
            inc, az = (float(a) for a in projection)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"projection must be x, y, z or 'inclination,azimuth' in degrees, got {projection!r}"
        ) from exc
    i, a = math.radians(inc), math.radians(az)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(i), -math.sin(i)], [0, math.sin(i), math.cos(i)]])
    return rx @ rz


@dataclass
class RenderResult:
    """``image``: ``(C, N, N)`` float32; ``provenance``: what the pixels mean."""

    image: np.ndarray
    center: tuple[float, float, float]
    fov: float
    time: float
    provenance: dict = field(default_factory=dict)


def _lut(codes: Sequence[int]) -> np.ndarray:
    lut = np.zeros(256, bool)
    lut[list(codes)] = True
    return lut


def center_of_mass(snapshot: Snapshot, components="stars", chunk_size: int = DEFAULT_CHUNK):
    """Mass-weighted mean position [kpc] of the selected components, in one streaming pass."""
    codes = resolve_components(components)
    msum = 0.0
    mpos = np.zeros(3)
    for c in snapshot.iter_chunks(chunk_size, velocities=False, components=codes):
        m = c.mass.astype(np.float64)
        msum += m.sum()
        mpos += m @ c.pos.astype(np.float64)
    if not (math.isfinite(msum) and np.isfinite(mpos).all()):
        raise DataError(
            f"{snapshot.paths[0]}: non-finite particle positions or masses in components "
            f"{components!r}: the snapshot is corrupt"
        )
    if not msum > 0:
        raise DataError(
            f"{snapshot.paths[0]}: no mass in components {components!r}: cannot centre the image"
        )
    return tuple(float(x) for x in mpos / msum)


def auto_fov(
    snapshot: Snapshot,
    config: RenderConfig,
    center=None,
    quantile: float = 0.99,
    margin: float = 1.25,
    max_samples: int = 200_000,
) -> float:
    """A field of view [kpc] holding ``quantile`` of the selected particles, times ``margin``.

    Streams the snapshot, keeping every k-th projected radius (at most ``max_samples``).
    Call it once per run (on its first frame) so that all frames share one field of view.
    """
    R = view_matrix(config.projection)[:2]
    if center is None:
        center = _center(snapshot, config)
    codes = resolve_components(config.components)
    stride = max(1, snapshot.n_particles // max_samples)
    samples = []
    for c in snapshot.iter_chunks(config.chunk_size, velocities=False, components=codes):
        uv = (c.pos[::stride] - np.asarray(center, np.float32)) @ R.T.astype(np.float32)
        samples.append(np.abs(uv).max(axis=1))
    r = np.concatenate(samples) if samples else np.zeros(0)
    if r.size == 0:
        raise DataError(f"{snapshot.paths[0]}: no particles of {config.components!r} to frame")
    fov = float(2 * margin * max(np.quantile(r, quantile), 1e-3))
    if not math.isfinite(fov):
        raise DataError(
            f"{snapshot.paths[0]}: non-finite particle positions: cannot frame the image"
        )
    return fov


def _center(snapshot: Snapshot, config: RenderConfig):
    if not isinstance(config.center, str):
        return tuple(float(x) for x in config.center)
    comps = "all" if config.center == "com_all" else config.components
    return center_of_mass(snapshot, comps, config.chunk_size)


def _project(pos: np.ndarray, center: np.ndarray, R: np.ndarray):
    """Image coordinates ``u, v`` (float32, ``(n,)``) of positions ``(n, 3)``."""
    rows = []
    for r in R[:2]:
        nz = np.flatnonzero(r)
        if len(nz) == 1 and r[nz[0]] == 1.0:  # an axis view: a column pick, no arithmetic
            j = int(nz[0])
            rows.append(pos[:, j] - center[j])
        else:
            rel = pos - center
            rows.append(rel @ r.astype(np.float32))
    return rows[0], rows[1]


def _deposit_cic(
    grid: np.ndarray, u: np.ndarray, v: np.ndarray, m: np.ndarray, n: int, inv_h: float
) -> None:
    """Add CIC weights of particles inside the FOV to ``grid`` (flat, length ``n*n``).

    All four corners share one index array on an ``(n+1)^2`` padded grid (corner (0, 0) at
    ``i0 + 1``); the four partial grids are shifted into place, and the padding rows/columns
    (weights beyond the edges) are folded back onto the edge pixels.
    """
    gu = u * np.float32(inv_h)
    gu += np.float32(n / 2 + 0.5)  # = g + 1 with g = u/h + n/2 - 1/2, so i0 + 1 in [0, n]
    gv = v * np.float32(inv_h)
    gv += np.float32(n / 2 + 0.5)
    fu, gu = np.modf(gu)  # gu > 0 inside the FOV: the integer part is floor(g) + 1
    fv, gv = np.modf(gv)
    idx = gv.astype(np.int32)
    idx *= n + 2
    idx += gu.astype(np.int32)
    size = (n + 2) * (n + 2)
    mfu = m * fu
    mgu = m - mfu
    p00 = np.bincount(idx, weights=mgu * (1 - fv), minlength=size)
    p10 = np.bincount(idx, weights=mfu * (1 - fv), minlength=size)
    p01 = np.bincount(idx, weights=mgu * fv, minlength=size)
    p11 = np.bincount(idx, weights=mfu * fv, minlength=size)
    full = np.zeros((n + 2, n + 2))
    P = (
        p00.reshape(n + 2, n + 2),
        p10.reshape(n + 2, n + 2),
        p01.reshape(n + 2, n + 2),
        p11.reshape(n + 2, n + 2),
    )
    full[:, :] += P[0]
    full[:, 1:] += P[1][:, :-1]
    full[1:, :] += P[2][:-1, :]
    full[1:, 1:] += P[3][:-1, :-1]
    # padded index k holds pixel k - 1: fold k = 0 onto pixel 0 and k = n + 1 onto pixel n - 1
    full[1, :] += full[0, :]
    full[n, :] += full[n + 1, :]
    full[:, 1] += full[:, 0]
    full[:, n] += full[:, n + 1]
    grid += full[1 : n + 1, 1 : n + 1].ravel()


def _deposit_gauss(
    grid: np.ndarray, uv: np.ndarray, m: np.ndarray, n: int, inv_h: float, sigma_px: float
) -> None:
    """Gaussian deposit: separable weights over ``(2K+1)^2`` pixels, ``K = ceil(3 sigma)``."""
    K = int(math.ceil(3 * sigma_px))
    g = uv * np.float32(inv_h) + np.float32(n / 2 - 0.5)
    c = np.rint(g).astype(np.int32)
    offs = np.arange(-K, K + 1, dtype=np.int32)
    d = (c[:, None, :] + offs[None, :, None]) - g[:, None, :]  # (p, 2K+1, 2)
    w = np.exp(-0.5 * (d / np.float32(sigma_px)) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    wu = np.ascontiguousarray((w[:, :, 0] * m[:, None]).T)  # (2K+1, p)
    wv = np.ascontiguousarray(w[:, :, 1].T)
    # a grid padded by K on every side needs no bounds masks; the padding (mass beyond the
    # edges) is cropped away at the end
    side = n + 2 * K
    base = c[:, 1] * side + c[:, 0]  # padded index of offset (-K, -K): pixel c - K
    padded = np.zeros(side * side)
    for b in range(2 * K + 1):
        for a in range(2 * K + 1):
            padded += np.bincount(
                base + (b * side + a), weights=wu[a] * wv[b], minlength=side * side
            )
    grid += padded.reshape(side, side)[K : K + n, K : K + n].ravel()


def render_snapshot(
    snapshot: Snapshot,
    config: RenderConfig = RenderConfig(),
    *,
    fov: float | None = None,
    center: tuple[float, float, float] | None = None,
) -> RenderResult:
    """Render one snapshot to ``(C, N, N)`` float32 surface density (log10 by default).

    ``fov`` overrides ``config.fov``; when both are ``None`` it is computed by :func:`auto_fov`
    (pass the same ``fov`` to every frame of a run). ``center`` overrides ``config.center``.
    """
    n = config.image_size
    if center is None:
        center = _center(snapshot, config)
    fov = fov if fov is not None else config.fov
    if fov is None:
        fov = auto_fov(snapshot, config, center)
    if not (fov > 0 and math.isfinite(fov)):
        raise ConfigError(f"fov must be a positive width in kpc, got {fov}")
    h = fov / n
    half = np.float32(fov / 2)
    Rm = view_matrix(config.projection)
    c32 = np.asarray(center, np.float32)
    channels = [resolve_components(config.components)]
    if config.with_dm:
        channels.append((DARK_MATTER,))
    wanted = tuple(sorted(set().union(*channels)))
    luts = [_lut(ch) for ch in channels]
    grids = [np.zeros(n * n, np.float64) for _ in luts]
    inside_mass = [0.0 for _ in luts]
    for chunk in snapshot.iter_chunks(config.chunk_size, velocities=False, components=wanted):
        u, v = _project(chunk.pos, c32, Rm)
        ok = (np.abs(u) < half) & (np.abs(v) < half)
        for k, lut in enumerate(luts):
            sel = (
                ok
                if len(luts) == 1 and len(channels[0]) == len(wanted)
                else ok & lut[chunk.component]
            )
            if not sel.any():
                continue
            uk, vk, m = u[sel], v[sel], chunk.mass[sel]
            inside_mass[k] += float(m.sum(dtype=np.float64))
            if config.kernel == "cic":
                _deposit_cic(grids[k], uk, vk, m, n, 1 / h)
            else:
                _deposit_gauss(grids[k], np.stack([uk, vk], axis=1), m, n, 1 / h, config.sigma_px)
    sigma = np.stack([g.reshape(n, n) for g in grids]) / (h * h)
    image = np.log10(np.maximum(sigma, config.floor)) if config.log else sigma
    prov = render_provenance(config, fov)
    prov.update(
        center_kpc=[float(x) for x in center],
        time=float(snapshot.time),
        time_source=snapshot.time_source,
        mass_in_fov=inside_mass,
        source=[str(p) for p in snapshot.paths],
        source_format=snapshot.format,
    )
    return RenderResult(
        image.astype(np.float32), tuple(center), float(fov), float(snapshot.time), prov
    )


def render_provenance(config: RenderConfig, fov: float | None) -> dict:
    """The store-level description of the images: extent, resolution, projection, units."""
    d = asdict(config)
    d.pop("chunk_size")
    R = view_matrix(config.projection)
    comps = [COMPONENT_NAMES[c] for c in resolve_components(config.components)]
    d.update(
        fov_kpc=fov,
        extent_kpc=None if fov is None else [-fov / 2, fov / 2, -fov / 2, fov / 2],
        pixel_kpc=None if fov is None else fov / config.image_size,
        view_matrix=R.tolist(),
        image_axes="image[c, row=v, col=u]; (u, v) = view_matrix[:2] @ (pos - center)",
        channels=[
            {"name": config.components, "components": comps},
            *([{"name": "dark_matter", "components": ["dark_matter"]}] if config.with_dm else []),
        ],
        units={
            **UNITS,
            "surface_density": "2.324876e9 Msun / kpc^2",
            "pixel_value": "log10(surface density)" if config.log else "surface density",
        },
    )
    if not isinstance(d["center"], str):
        d["center"] = list(d["center"])
    return d

"""Merger initial conditions: two disk galaxies on a parabolic Kepler orbit, in Bonsai units.

Units (G = 1): length 1 kpc, velocity 100 km/s, mass 2.324876e9 Msun, time 9.778145 Myr.

Each galaxy is a Hernquist dark halo, an exponential stellar disk and an optional Hernquist
bulge:

    halo/bulge  rho(r) = M a / (2 pi r (r + a)^3),   M(<r) = M r^2 / (r + a)^2
                sampled by inverting M(<r): r = a sqrt(u) / (1 - sqrt(u)), truncated at r_max
    disk        Sigma(R) ∝ exp(-R / R_d),  rho_z ∝ sech^2(z / z_0),   z = z_0 artanh(2u - 1)

Velocities are in *approximate* equilibrium. The spherical enclosed mass of all components,
``M(<r)`` (the disk counted as ``M_d [1 - (1 + R/R_d) e^{-R/R_d}]``), gives the circular speed
``v_c^2 = G M(<r) / r``. Disk particles rotate at ``v_phi = v_c(R)`` with Gaussian dispersions
``sigma_R = sigma_z = disk_dispersion * v_c`` (no asymmetric-drift correction: the disk heats
a little at first). Halo and bulge get isotropic Gaussian velocities with the Jeans dispersion

    sigma^2(r) = (1 / rho(r)) ∫_r^∞ rho(r') G M(<r') / r'^2 dr'

integrated numerically on a log grid, capped at 0.95 of the local escape speed.

Orbit: the two galaxies are point masses ``M_1``, ``M_2 = q M_1`` on a parabola (e = 1) with
pericentre ``r_p``, started at separation ``r_0`` before pericentre. With ``p = 2 r_p`` and true
anomaly ``f_0 = -arccos(p / r_0 - 1)``, the relative orbit is

    r = r_0 (cos f, sin f, 0),   v = sqrt(G M / p) (-sin f, 1 + cos f, 0),

in the centre-of-mass frame (orbital plane x-y), and the time to pericentre is Barker's
``t_p = sqrt(p^3 / G M) / 2 (D + D^3 / 3)`` with ``D = |tan(f_0 / 2)|``. Each disk is turned by
``R_z(argument) R_x(inclination)`` before placement (inclination 0 = prograde in the orbital plane).
Galaxy 2 is galaxy 1 scaled by ``q`` in mass and ``size_ratio`` (default ``q^(1/3)``) in length.

IDs follow Bonsai's V1 conventions (disk < 1e8, bulge 1e8..2e8, dark matter >= 2e8) with one
range per galaxy, recorded in the JSON sidecar: galaxy g's disk starts at ``g * 2e7``, bulge at
``1e8 + g * 5e7``, halo at ``2e8 + g * 9e8``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from rho_core.data.particles import BULGE, DARK_MATTER, DISK
from rho_core.errors import ConfigError

G = 1.0
ID_STARTS = {
    "disk": (0, 20_000_000),
    "bulge": (100_000_000, 50_000_000),
    "halo": (200_000_000, 900_000_000),
}
COMPONENT_OF = {"halo": DARK_MATTER, "bulge": BULGE, "disk": DISK}


@dataclass(frozen=True)
class GalaxyModel:
    """One disk galaxy in Bonsai units (defaults: a compact, roughly Milky-Way-mass system:
    2.5e11 Msun in all, halo truncated at 48 kpc, so that a default merger (pericentre 5 kpc,
    start at 50 kpc) coalesces within ~80 time units, i.e. ~0.8 Gyr).

    Attributes:
        halo_mass, halo_scale, halo_cut: Hernquist halo mass, scale ``a`` [kpc], truncation
            radius in units of ``a``.
        disk_mass, disk_scale, disk_height: exponential disk mass, ``R_d``, ``z_0`` [kpc];
            truncated at ``disk_cut * R_d``.
        bulge_mass, bulge_scale: Hernquist bulge (``bulge_mass = 0`` for none).
        disk_dispersion: disk velocity dispersion as a fraction of ``v_c``.
    """

    halo_mass: float = 100.0
    halo_scale: float = 6.0
    halo_cut: float = 8.0
    disk_mass: float = 5.0
    disk_scale: float = 2.0
    disk_height: float = 0.3
    disk_cut: float = 6.0
    bulge_mass: float = 1.0
    bulge_scale: float = 0.5
    disk_dispersion: float = 0.1

    @property
    def total_mass(self) -> float:
        return self.halo_mass + self.disk_mass + self.bulge_mass

    def scaled(self, mass_factor: float, length_factor: float) -> GalaxyModel:
        """The same model with masses x ``mass_factor`` and lengths x ``length_factor``."""
        L, M = length_factor, mass_factor
        return replace(
            self,
            halo_mass=self.halo_mass * M,
            disk_mass=self.disk_mass * M,
            bulge_mass=self.bulge_mass * M,
            halo_scale=self.halo_scale * L,
            disk_scale=self.disk_scale * L,
            disk_height=self.disk_height * L,
            bulge_scale=self.bulge_scale * L,
        )


@dataclass(frozen=True)
class MergerConfig:
    """Physical parameters of one merger.

    Attributes:
        mass_ratio: ``q = M_2 / M_1`` (0 < q <= 1 typical).
        pericenter: pericentre distance ``r_p`` [kpc].
        separation: initial separation ``r_0`` [kpc] (>= ``r_p``).
        inclination1, argument1, inclination2, argument2: disk orientation angles [deg].
        size_ratio: length scale of galaxy 2 relative to galaxy 1 (``None``: ``q^(1/3)``).
        n_particles: total particle number (split between galaxies by mass).
        star_fraction: fraction of each galaxy's particles that are stars (disk + bulge).
        galaxy: the model of galaxy 1.
        seed: random seed.
    """

    mass_ratio: float = 1.0
    pericenter: float = 5.0
    separation: float = 50.0
    inclination1: float = 0.0
    argument1: float = 0.0
    inclination2: float = 30.0
    argument2: float = 0.0
    size_ratio: float | None = None
    n_particles: int = 2000
    star_fraction: float = 0.5
    galaxy: GalaxyModel = field(default_factory=GalaxyModel)
    seed: int = 0

    def __post_init__(self):
        for name in (
            "mass_ratio",
            "separation",
            "inclination1",
            "argument1",
            "inclination2",
            "argument2",
        ):
            if not math.isfinite(value := getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {value}")
        if not self.mass_ratio > 0:
            raise ConfigError(f"mass_ratio must be > 0, got {self.mass_ratio}")
        if not self.pericenter > 0:
            raise ConfigError(f"pericenter must be > 0 kpc, got {self.pericenter}")
        if not self.separation >= self.pericenter:
            raise ConfigError(
                f"separation ({self.separation}) must be >= pericenter ({self.pericenter})"
            )
        if self.n_particles < 20:
            raise ConfigError(f"n_particles must be >= 20, got {self.n_particles}")
        if not 0 < self.star_fraction < 1:
            raise ConfigError(f"star_fraction must be in (0, 1), got {self.star_fraction}")

    @property
    def size_factor(self) -> float:
        return self.size_ratio if self.size_ratio is not None else self.mass_ratio ** (1 / 3)

    def physical_params(self) -> dict:
        """The numeric parameters that identify the merger (for conditioning)."""
        return {
            "mass_ratio": self.mass_ratio,
            "pericenter": self.pericenter,
            "separation": self.separation,
            "inclination1": self.inclination1,
            "argument1": self.argument1,
            "inclination2": self.inclination2,
            "argument2": self.argument2,
            "size_ratio": self.size_factor,
        }


@dataclass
class InitialConditions:
    """Particles ``(n, 3)`` pos [kpc], vel [100 km/s], ``(n,)`` mass, V1 ``ids`` int64,
    ``galaxy`` (0/1) and ``component`` codes, plus the orbit and the ID ranges."""

    pos: np.ndarray
    vel: np.ndarray
    mass: np.ndarray
    ids: np.ndarray
    galaxy: np.ndarray
    component: np.ndarray
    orbit: dict
    id_ranges: dict
    config: MergerConfig


# --------------------------------------------------------------------------- profiles
def hernquist_mass(r: np.ndarray, M: float, a: float) -> np.ndarray:
    return M * r**2 / (r + a) ** 2


def hernquist_density(r: np.ndarray, M: float, a: float) -> np.ndarray:
    return M * a / (2 * np.pi * r * (r + a) ** 3)


def disk_mass_enclosed(R: np.ndarray, M: float, Rd: float) -> np.ndarray:
    x = R / Rd
    return M * (1 - (1 + x) * np.exp(-x))


def enclosed_mass(model: GalaxyModel, r: np.ndarray) -> np.ndarray:
    """Spherical approximation of ``M(<r)`` for all components (truncations included)."""
    rh = np.minimum(r, model.halo_cut * model.halo_scale)
    m = hernquist_mass(rh, model.halo_mass, model.halo_scale) / _hcut_frac(model.halo_cut)
    if model.bulge_mass > 0:
        rb = np.minimum(r, model.halo_cut * model.bulge_scale)
        m = m + hernquist_mass(rb, model.bulge_mass, model.bulge_scale) / _hcut_frac(model.halo_cut)
    rd = np.minimum(r, model.disk_cut * model.disk_scale)
    return m + disk_mass_enclosed(rd, model.disk_mass, model.disk_scale) / _dcut_frac(model)


def _hcut_frac(cut: float) -> float:
    return cut**2 / (1 + cut) ** 2


def _dcut_frac(model: GalaxyModel) -> float:
    x = model.disk_cut
    return 1 - (1 + x) * math.exp(-x)


def circular_speed(model: GalaxyModel, r: np.ndarray) -> np.ndarray:
    """``v_c(r) = sqrt(G M(<r) / r)`` [100 km/s] (spherical approximation)."""
    r = np.maximum(r, 1e-6)
    return np.sqrt(G * enclosed_mass(model, r) / r)


def _sample_hernquist(rng, n, a, cut):
    u = rng.uniform(0, _hcut_frac(cut), n)
    s = np.sqrt(u)
    r = a * s / (1 - s)
    return _isotropic(rng, n) * r[:, None], r


def _isotropic(rng, n):
    cz = rng.uniform(-1, 1, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    sz = np.sqrt(1 - cz**2)
    return np.stack([sz * np.cos(ph), sz * np.sin(ph), cz], axis=1)


def _jeans_sigma(model: GalaxyModel, M: float, a: float, cut: float):
    """Isotropic Jeans dispersion ``sigma(r)`` of a Hernquist component in the total potential,
    as an interpolating function; and the escape speed ``v_esc(r)``."""
    rmax = max(model.halo_cut * model.halo_scale, cut * a) * 4
    grid = np.geomspace(a * 1e-4, rmax, 2000)
    rho = hernquist_density(grid, M, a) * (grid <= cut * a)
    g = G * enclosed_mass(model, grid) / grid**2
    integrand = rho * g
    # cumulative integral from r to rmax (trapezoid on the log grid)
    seg = 0.5 * (integrand[1:] + integrand[:-1]) * np.diff(grid)
    tail = np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]])
    sig2 = np.where(rho > 0, tail / np.maximum(rho, 1e-300), 0.0)
    # potential: Phi(r) = -∫_r^rmax g dr' - G M_tot / rmax
    gseg = 0.5 * (g[1:] + g[:-1]) * np.diff(grid)
    phi = -np.concatenate([np.cumsum(gseg[::-1])[::-1], [0.0]]) - G * model.total_mass / rmax
    vesc = np.sqrt(-2 * phi)

    def sigma(r):
        return np.sqrt(np.interp(r, grid, sig2))

    def escape(r):
        return np.interp(r, grid, vesc)

    return sigma, escape


def _spheroid_velocities(rng, model, r, M, a, cut):
    sigma, escape = _jeans_sigma(model, M, a, cut)
    v = rng.normal(size=(r.size, 3)) * sigma(r)[:, None]
    vmax = 0.95 * escape(r)
    speed = np.linalg.norm(v, axis=1)
    too_fast = speed > vmax
    v[too_fast] *= (vmax[too_fast] / speed[too_fast])[:, None]
    return v


def _sample_disk(rng, model: GalaxyModel, n: int):
    Rd, z0 = model.disk_scale, model.disk_height
    x = np.linspace(0, model.disk_cut, 4000)
    cdf = (1 - (1 + x) * np.exp(-x)) / _dcut_frac(model)
    R = Rd * np.interp(rng.uniform(0, 1, n), cdf, x)
    phi = rng.uniform(0, 2 * np.pi, n)
    u = rng.uniform(1e-6, 1 - 1e-6, n)
    z = z0 * np.arctanh(2 * u - 1)
    pos = np.stack([R * np.cos(phi), R * np.sin(phi), z], axis=1)
    r3 = np.sqrt(R**2 + z**2)
    vc = circular_speed(model, r3)
    s = model.disk_dispersion * vc
    vR = rng.normal(size=n) * s
    vz = rng.normal(size=n) * s
    vphi = vc + rng.normal(size=n) * s * 0.7
    vel = np.stack(
        [vR * np.cos(phi) - vphi * np.sin(phi), vR * np.sin(phi) + vphi * np.cos(phi), vz], axis=1
    )
    return pos, vel


def _rotation(inclination_deg: float, argument_deg: float) -> np.ndarray:
    i, w = math.radians(inclination_deg), math.radians(argument_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(i), -math.sin(i)], [0, math.sin(i), math.cos(i)]])
    rz = np.array([[math.cos(w), -math.sin(w), 0], [math.sin(w), math.cos(w), 0], [0, 0, 1]])
    return rz @ rx


def make_galaxy(model: GalaxyModel, n_halo: int, n_disk: int, n_bulge: int, rng):
    """Sample one galaxy, its centre of mass at rest at the origin:
    ``{component: (pos, vel, mass)}``."""
    out = {}
    if n_halo:
        pos, r = _sample_hernquist(rng, n_halo, model.halo_scale, model.halo_cut)
        vel = _spheroid_velocities(rng, model, r, model.halo_mass, model.halo_scale, model.halo_cut)
        out["halo"] = (pos, vel, np.full(n_halo, model.halo_mass / n_halo))
    if n_bulge and model.bulge_mass > 0:
        pos, r = _sample_hernquist(rng, n_bulge, model.bulge_scale, model.halo_cut)
        vel = _spheroid_velocities(
            rng, model, r, model.bulge_mass, model.bulge_scale, model.halo_cut
        )
        out["bulge"] = (pos, vel, np.full(n_bulge, model.bulge_mass / n_bulge))
    if n_disk:
        pos, vel = _sample_disk(rng, model, n_disk)
        out["disk"] = (pos, vel, np.full(n_disk, model.disk_mass / n_disk))
    # put the finite sample's own centre of mass at rest at the origin
    m = np.concatenate([v[2] for v in out.values()])[:, None]
    cpos = (m * np.concatenate([v[0] for v in out.values()])).sum(0) / m.sum()
    cvel = (m * np.concatenate([v[1] for v in out.values()])).sum(0) / m.sum()
    return {k: (p - cpos, v - cvel, w) for k, (p, v, w) in out.items()}


def parabolic_orbit(m1: float, m2: float, pericenter: float, separation: float) -> dict:
    """Relative position/velocity of galaxy 2 w.r.t. galaxy 1 on a parabola, in the x-y plane,
    and the time to pericentre (Barker's equation)."""
    M = G * (m1 + m2)
    p = 2 * pericenter
    f0 = -math.acos(max(-1.0, min(1.0, p / separation - 1)))
    rel_pos = separation * np.array([math.cos(f0), math.sin(f0), 0.0])
    rel_vel = math.sqrt(M / p) * np.array([-math.sin(f0), 1 + math.cos(f0), 0.0])
    D = abs(math.tan(f0 / 2))
    t_peri = 0.5 * math.sqrt(p**3 / M) * (D + D**3 / 3)
    return {
        "rel_pos": rel_pos.tolist(),
        "rel_vel": rel_vel.tolist(),
        "true_anomaly0": f0,
        "time_to_pericenter": t_peri,
        "m1": m1,
        "m2": m2,
    }


def _split_counts(model: GalaxyModel, n: int, star_fraction: float) -> tuple[int, int, int]:
    n_star = int(round(n * star_fraction))
    n_halo = n - n_star
    stars = model.disk_mass + model.bulge_mass
    n_bulge = int(round(n_star * model.bulge_mass / stars)) if stars > 0 else 0
    if model.bulge_mass > 0:
        n_bulge = max(n_bulge, 1)
    return n_halo, n_star - n_bulge, n_bulge


def make_merger(config: MergerConfig) -> InitialConditions:
    """Sample both galaxies and place them on the parabolic orbit (centre-of-mass frame)."""
    rng = np.random.default_rng(config.seed)
    g1 = config.galaxy
    g2 = g1.scaled(config.mass_ratio, config.size_factor)
    m1, m2 = g1.total_mass, g2.total_mass
    n2 = max(10, int(round(config.n_particles * m2 / (m1 + m2))))
    n1 = config.n_particles - n2
    orbit = parabolic_orbit(m1, m2, config.pericenter, config.separation)
    rel_pos, rel_vel = np.array(orbit["rel_pos"]), np.array(orbit["rel_vel"])
    centres = [
        (-m2 / (m1 + m2) * rel_pos, -m2 / (m1 + m2) * rel_vel),
        (m1 / (m1 + m2) * rel_pos, m1 / (m1 + m2) * rel_vel),
    ]
    angles = [(config.inclination1, config.argument1), (config.inclination2, config.argument2)]
    parts = {k: [] for k in ("pos", "vel", "mass", "ids", "galaxy", "component")}
    id_ranges: dict = {}
    for g, (model, n) in enumerate(((g1, n1), (g2, n2))):
        n_halo, n_disk, n_bulge = _split_counts(model, n, config.star_fraction)
        comps = make_galaxy(model, n_halo, n_disk, n_bulge, rng)
        R = _rotation(*angles[g])
        c_pos, c_vel = centres[g]
        id_ranges[f"galaxy{g}"] = {}
        for name in ("halo", "bulge", "disk"):  # DM first, as tipsy stores it
            if name not in comps:
                continue
            pos, vel, mass = comps[name]
            base, stride = ID_STARTS[name]
            lo = base + g * stride
            k = mass.size
            if k > stride:
                raise ConfigError(f"too many {name} particles ({k}) for the V1 ID range")
            parts["pos"].append(pos @ R.T + c_pos)
            parts["vel"].append(vel @ R.T + c_vel)
            parts["mass"].append(mass)
            parts["ids"].append(np.arange(lo, lo + k, dtype=np.int64))
            parts["galaxy"].append(np.full(k, g, np.uint8))
            parts["component"].append(np.full(k, COMPONENT_OF[name], np.uint8))
            id_ranges[f"galaxy{g}"][name] = [lo, lo + k]
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    # remove the residual centre-of-mass drift of the finite samples
    m = cat["mass"][:, None]
    cat["pos"] -= (m * cat["pos"]).sum(0) / m.sum()
    cat["vel"] -= (m * cat["vel"]).sum(0) / m.sum()
    orbit.update(galaxy_models=[asdict(g1), asdict(g2)])
    return InitialConditions(
        cat["pos"],
        cat["vel"],
        cat["mass"],
        cat["ids"],
        cat["galaxy"],
        cat["component"],
        orbit,
        id_ranges,
        config,
    )


def galaxy_of_ids(ids: np.ndarray, id_ranges: dict) -> np.ndarray:
    """Galaxy index per particle from the sidecar's ID ranges (V1 or V2 IDs); -1 if none.

    V2 IDs (Bonsai adds 3e18 to dark matter and 2e18 to bulge IDs) are mapped back first.
    """
    from rho_core.data.tipsy import v2_ids_to_v1

    ids = np.asarray(ids)
    if ids.dtype == np.uint64 and ids.size and int(ids.max()) >= 2**31:
        ids = v2_ids_to_v1(ids)
    ids = ids.astype(np.int64)
    out = np.full(ids.shape, -1, np.int16)
    for gname, comps in id_ranges.items():
        g = int(gname.removeprefix("galaxy"))
        for lo, hi in comps.values():
            out[(ids >= lo) & (ids < hi)] = g
    return out


def sidecar_path(ic_path: str | Path) -> Path:
    ic_path = Path(ic_path)
    return ic_path.with_name(ic_path.name + ".json")


def write_initial_conditions(config: MergerConfig, path: str | Path) -> tuple[Path, Path]:
    """Write the ICs as a V1 tipsy file (what ``bonsai2 -i`` reads) and a JSON sidecar
    ``<path>.json`` with the parameters, the orbit and the ID ranges. Returns both paths."""
    from rho_core.data.tipsy import write_tipsy

    ic = make_merger(config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tipsy(
        path,
        ic.pos,
        ic.vel,
        ic.mass,
        ic.ids,
        dark=ic.component == DARK_MATTER,
        time=0.0,
        variant="v1",
    )
    side = sidecar_path(path)
    meta = {
        "params": config.physical_params(),
        "config": asdict(config),
        "orbit": ic.orbit,
        "id_ranges": ic.id_ranges,
        "units": {
            "length": "kpc",
            "velocity": "100 km/s",
            "mass": "2.324876e9 Msun",
            "time": "9.778145 Myr",
            "G": 1,
        },
        "n_particles": int(ic.mass.size),
        "format": "tipsy-v1",
    }
    side.write_text(json.dumps(meta, indent=2))
    return path, side


def merger_config_from_dict(d: dict) -> MergerConfig:
    """Rebuild a :class:`MergerConfig` from ``asdict`` output (e.g. a sidecar's ``config``)."""
    d = dict(d)
    if isinstance(d.get("galaxy"), dict):
        d["galaxy"] = GalaxyModel(**d["galaxy"])
    return MergerConfig(**d)

"""Merger initial conditions: V1 file + sidecar, ID ranges, parabolic orbit, equilibrium,
disk orientation, profile sampling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rho_core.data.particles import BULGE, DARK_MATTER, DISK, open_snapshot
from rho_core.data.tipsy import v1_ids_to_v2
from rho_core.errors import ConfigError
from rho_core.sim.initial_conditions import (
    GalaxyModel,
    MergerConfig,
    galaxy_of_ids,
    make_galaxy,
    make_merger,
    write_initial_conditions,
)


def test_v1_file_sidecar_and_id_ranges(tmp_path):
    cfg = MergerConfig(n_particles=600, mass_ratio=0.5)
    ic_path, side = write_initial_conditions(cfg, tmp_path / "ic.tipsy")
    snap = open_snapshot(ic_path)
    assert snap.format == "tipsy-v1" and snap.n_particles == 600 and snap.time == 0.0
    meta = json.loads(side.read_text())
    assert meta["params"]["mass_ratio"] == 0.5 and meta["format"] == "tipsy-v1"
    c = snap.read()
    ranges = meta["id_ranges"]
    # ranges of one galaxy and component each; all disjoint, and inside Bonsai's V1 conventions
    spans = sorted((lo, hi) for g in ranges.values() for lo, hi in g.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    conv = {"disk": (0, 40_000_000), "bulge": (10**8, 2 * 10**8), "halo": (2 * 10**8, 2**31)}
    for g in ranges.values():
        for comp, (lo, hi) in g.items():
            assert conv[comp][0] <= lo < hi <= conv[comp][1]
    gal = galaxy_of_ids(c.ids, ranges)
    assert (gal >= 0).all()
    np.testing.assert_array_equal(galaxy_of_ids(v1_ids_to_v2(c.ids), ranges), gal)
    # galaxy 2 has half the mass: about a third of the particles
    assert (gal == 1).sum() == pytest.approx(200, abs=2)
    counts = np.bincount(c.component, minlength=4)
    assert counts[DARK_MATTER] == pytest.approx(300, abs=2)
    assert counts[DISK] > counts[BULGE] > 0
    masses = {g: c.mass[gal == g].sum() for g in (0, 1)}
    assert masses[1] / masses[0] == pytest.approx(0.5, rel=1e-5)


def test_parabolic_orbit():
    cfg = MergerConfig(n_particles=400, pericenter=7.0, separation=50.0, mass_ratio=0.7)
    ic = make_merger(cfg)
    com, vcom, mg = [], [], []
    for g in (0, 1):
        s = ic.galaxy == g
        m = ic.mass[s]
        mg.append(m.sum())
        com.append((m[:, None] * ic.pos[s]).sum(0) / m.sum())
        vcom.append((m[:, None] * ic.vel[s]).sum(0) / m.sum())
    r = com[1] - com[0]
    v = vcom[1] - vcom[0]
    M = sum(mg)
    assert np.linalg.norm(r) == pytest.approx(50.0, rel=1e-6)
    # parabolic: v^2 = 2 G M / r; pericentre from the angular momentum, r_p = L^2 / (2 G M)
    assert np.dot(v, v) == pytest.approx(2 * M / 50.0, rel=1e-6)
    L = np.linalg.norm(np.cross(r, v))
    assert L**2 / (2 * M) == pytest.approx(7.0, rel=1e-6)
    assert np.dot(r, v) < 0  # approaching
    total_p = (ic.mass[:, None] * ic.vel).sum(0)
    np.testing.assert_allclose(total_p, 0, atol=1e-9)
    # Barker's equation for the time to pericentre
    p = 14.0
    f0 = -math.acos(p / 50 - 1)
    D = math.tan(-f0 / 2)
    assert ic.orbit["time_to_pericenter"] == pytest.approx(
        0.5 * math.sqrt(p**3 / M) * (D + D**3 / 3), rel=1e-9
    )


def test_isolated_galaxy_is_near_virial_equilibrium():
    model = GalaxyModel()
    parts = make_galaxy(model, 1200, 500, 100, np.random.default_rng(4))
    pos = np.concatenate([p[0] for p in parts.values()])
    vel = np.concatenate([p[1] for p in parts.values()])
    m = np.concatenate([p[2] for p in parts.values()])
    assert m.sum() == pytest.approx(model.total_mass)
    K = 0.5 * (m * (vel**2).sum(1)).sum()
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1) + 0.05**2)
    np.fill_diagonal(d, np.inf)
    W = -0.5 * (m[:, None] * m[None] / d).sum()
    assert 0.85 < 2 * K / abs(W) < 1.15
    # the disk rotates: mean v_phi is most of the circular speed, in the +z sense
    dpos, dvel = parts["disk"][0], parts["disk"][1]
    lz = dpos[:, 0] * dvel[:, 1] - dpos[:, 1] * dvel[:, 0]
    assert (lz > 0).mean() > 0.95
    # halo median radius: M(<r)/M = 1/2 of the truncated Hernquist mass
    a, c = model.halo_scale, model.halo_cut
    r_half = np.median(np.linalg.norm(parts["halo"][0], axis=1))
    u = 0.5 * c**2 / (1 + c) ** 2
    assert r_half == pytest.approx(a * math.sqrt(u) / (1 - math.sqrt(u)), rel=0.1)


def test_disk_inclination():
    ic = make_merger(MergerConfig(n_particles=1000, inclination1=0.0, inclination2=60.0))
    for g, inc in ((0, 0.0), (1, 60.0)):
        s = (ic.galaxy == g) & (ic.component == DISK)
        m = ic.mass[s][:, None]
        x = ic.pos[s] - (m * ic.pos[s]).sum(0) / m.sum()
        v = ic.vel[s] - (m * ic.vel[s]).sum(0) / m.sum()
        L = (m * np.cross(x, v)).sum(0)
        angle = math.degrees(math.acos(L[2] / np.linalg.norm(L)))
        assert angle == pytest.approx(inc, abs=4)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="separation"):
        MergerConfig(pericenter=20, separation=10)
    with pytest.raises(ConfigError, match="mass_ratio"):
        MergerConfig(mass_ratio=0)
    with pytest.raises(ConfigError, match="inclination2 must be a finite"):
        MergerConfig(inclination2=float("inf"))

"""Built-in N-body engine: forces against a brute-force sum, Kepler's period, energy
conservation at default settings, a small merger whose centres approach, Bonsai-style output;
and the Bonsai wrapper driven by a fake executable (the real GPU binary cannot exist here)."""

from __future__ import annotations

import json
import math
import stat
import sys

import numpy as np
import pytest
import torch

from rho_core.data.particles import BULGE, DARK_MATTER, open_snapshot, parse_snapshot_name
from rho_core.errors import ConfigError
from rho_core.sim.bonsai_engine import (
    BonsaiConfig,
    SimulationError,
    bonsai_command,
    run_bonsai,
)
from rho_core.sim.initial_conditions import (
    MergerConfig,
    galaxy_of_ids,
    make_merger,
    write_initial_conditions,
)
from rho_core.sim.nbody import NBodyConfig, accelerations, potential_energy, run_nbody


def test_forces_and_potential_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 5, (60, 3)) + 100.0  # far from the origin: centring keeps precision
    m = rng.uniform(0.5, 1.5, 60)
    eps = 0.3
    d = x[None, :, :] - x[:, None, :]
    r2 = (d**2).sum(-1) + eps**2
    a_ref = (m[None, :, None] * d / r2[..., None] ** 1.5).sum(1)
    iu = np.triu_indices(60, 1)
    w_ref = -(m[:, None] * m[None, :] / np.sqrt(r2))[iu].sum()
    xt, mt = torch.tensor(x), torch.tensor(m)
    np.testing.assert_allclose(accelerations(xt, mt, eps, chunk=7).numpy(), a_ref, rtol=1e-9)
    np.testing.assert_allclose(potential_energy(xt, mt, eps, chunk=11), w_ref, rtol=1e-10)


def test_two_body_orbit_matches_kepler_period(tmp_path):
    m1, m2, a, e = 1.0, 0.5, 1.0, 0.5
    M = m1 + m2
    T = 2 * math.pi * math.sqrt(a**3 / M)
    rp = a * (1 - e)
    vp = math.sqrt(M * (1 + e) / rp)  # relative speed at pericentre
    rel_x, rel_v = np.array([rp, 0, 0]), np.array([0, vp, 0])
    pos = np.array([-m2 / M * rel_x, m1 / M * rel_x])
    vel = np.array([-m2 / M * rel_v, m1 / M * rel_v])
    n = 2000
    cfg = NBodyConfig(t_end=T, dt=T / n, snap_every=T / 2, softening=1e-5, threads=1)
    res = run_nbody(pos, vel, [m1, m2], np.array([5, 6]), cfg, tmp_path)
    assert len(res.snapshots) == 3
    half = open_snapshot(res.snapshots[1]).read()
    end = open_snapshot(res.snapshots[2]).read()
    sep_half = np.linalg.norm(half.pos[1] - half.pos[0])
    np.testing.assert_allclose(sep_half, a * (1 + e), rtol=1e-3)  # apocentre at T/2
    # back at pericentre after one period (float32 snapshot precision)
    np.testing.assert_allclose(end.pos[1] - end.pos[0], rel_x, atol=2e-3)
    assert res.max_energy_error < 1e-4


def test_energy_conserved_at_default_settings(tmp_path):
    # A small merger with the default step, softening and galaxy model, over ~1 crossing time.
    ic = make_merger(MergerConfig(n_particles=300, seed=3))
    cfg = NBodyConfig(t_end=4.0, snap_every=1.0, threads=1)  # default dt = 1/64, eps = 0.5
    res = run_nbody(ic.pos, ic.vel, ic.mass, ic.ids, cfg, tmp_path)
    assert res.steps == 256
    assert res.max_energy_error < 0.01
    energy = json.loads((tmp_path / "energy.json").read_text())
    assert len(energy["energies"]) == 5 and energy["n_particles"] == 300


def test_small_merger_brings_centres_together(tmp_path):
    mc = MergerConfig(n_particles=400, seed=1)
    ic = make_merger(mc)
    t_peri = ic.orbit["time_to_pericenter"]
    cfg = NBodyConfig(t_end=round(t_peri), dt=1 / 16, snap_every=1.0, threads=1)
    res = run_nbody(ic.pos, ic.vel, ic.mass, ic.ids, cfg, tmp_path)
    assert res.max_energy_error < 0.01
    seps = []
    for p in res.snapshots:
        c = open_snapshot(p).read()
        gal = galaxy_of_ids(c.ids, ic.id_ranges)  # V2 IDs in the output map back
        assert (gal >= 0).all()
        stars = c.component != DARK_MATTER
        centres = [np.median(c.pos[stars & (gal == g)], axis=0) for g in (0, 1)]
        seps.append(float(np.linalg.norm(centres[0] - centres[1])))
    assert seps[0] == pytest.approx(mc.separation, rel=0.05)
    assert min(seps) < 0.35 * mc.separation
    assert seps[-1] < seps[0] / 2


def test_output_is_bonsai_style_v2(tmp_path):
    ic = make_merger(MergerConfig(n_particles=60))
    cfg = NBodyConfig(t_end=0.5, dt=1 / 8, snap_every=0.25, snapname="mrg", threads=1)
    res = run_nbody(ic.pos, ic.vel, ic.mass, ic.ids, cfg, tmp_path)
    assert [p.name for p in res.snapshots] == ["mrg_00000.0000", "mrg_00000.2500", "mrg_00000.5000"]
    snap = open_snapshot(res.snapshots[-1])
    assert snap.format == "tipsy-v2" and snap.time == 0.5 and snap.time_source == "header"
    c = snap.read()
    dm = c.component == DARK_MATTER
    assert dm.sum() == (ic.component == DARK_MATTER).sum()
    assert (c.ids[dm] >= 3 * 10**18).all()  # V1 IDs converted like Bonsai does
    assert (c.ids[c.component == BULGE] >= 2 * 10**18).all()


def test_config_errors():
    with pytest.raises(ConfigError, match="multiple of dt"):
        NBodyConfig(dt=0.1, snap_every=0.25)
    with pytest.raises(ConfigError, match="softening"):
        NBodyConfig(softening=0)
    with pytest.raises(ConfigError, match="threads"):
        NBodyConfig(threads=-1)
    with pytest.raises(ConfigError, match="ranks"):
        BonsaiConfig(n_ranks=0)
    with pytest.raises(ConfigError, match="timeout"):
        BonsaiConfig(timeout=-1)


FAKE_BONSAI = """\
#!{python}
# A stand-in for the GPU binary bonsai2_slowdust (which cannot run here): parses the same
# arguments, copies the IC particles into V2 snapshots named like Bonsai's.
import argparse, sys, time
sys.path.insert(0, {root!r})
from rho_core.data.particles import open_snapshot, snapshot_filename
from rho_core.data.tipsy import v1_ids_to_v2, write_tipsy
p = argparse.ArgumentParser()
p.add_argument("-i"); p.add_argument("-T", type=float); p.add_argument("-t", type=float)
p.add_argument("--snapiter", type=float); p.add_argument("--snapname")
p.add_argument("--eps", type=float); p.add_argument("--theta", type=float)
p.add_argument("--mode", default="ok")
a = p.parse_args()
if a.mode == "fail":
    print("CUDA error: no device", flush=True); sys.exit(3)
if a.mode == "hang":
    time.sleep(60)
c = open_snapshot(a.i).read()
t = 0.0
while t <= a.T + 1e-9:
    for rank, sl in enumerate((slice(0, len(c) // 2), slice(len(c) // 2, None))):
        write_tipsy(snapshot_filename(a.snapname, t, rank), c.pos[sl], c.vel[sl], c.mass[sl],
                    v1_ids_to_v2(c.ids[sl]), time=t)
    t += a.snapiter
print("done")
"""


@pytest.fixture
def fake_bonsai(tmp_path):
    """An executable named like the GPU binary: a /bin/sh wrapper (no shebang length limit on
    long interpreter paths) that runs the Python stand-in above with this interpreter."""
    import shlex
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "fake_bonsai.py"
    script.write_text(FAKE_BONSAI.format(python=sys.executable, root=root))
    exe = tmp_path / "bonsai2_slowdust"
    exe.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(script))} "$@"\n'
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_bonsai_wrapper_with_fake_binary(tmp_path, fake_bonsai):
    ic, _ = write_initial_conditions(MergerConfig(n_particles=40), tmp_path / "ic.tipsy")
    cfg = BonsaiConfig(binary=str(fake_bonsai), softening=0.1)
    cmd = bonsai_command(cfg, ic, tmp_path / "out", t_end=2.0, dt=1 / 64, snap_every=1.0)
    assert cmd[1:3] == ["-i", str(ic)] and "--snapiter" in cmd and "--eps" in cmd
    snaps = run_bonsai(cfg, ic, tmp_path / "out", t_end=2.0, dt=1 / 64, snap_every=1.0)
    assert [parse_snapshot_name(g[0]).time for g in snaps] == [0.0, 1.0, 2.0]
    assert all(len(g) == 2 for g in snaps)  # two per-rank files per snapshot
    s = open_snapshot(snaps[1][0])  # a rank file opens its whole set
    assert s.n_particles == 40 and s.time == 1.0


def test_bonsai_wrapper_failure_and_timeout(tmp_path, fake_bonsai):
    ic, _ = write_initial_conditions(MergerConfig(n_particles=40), tmp_path / "ic.tipsy")
    with pytest.raises(SimulationError, match="status 3.*last line: CUDA error") as info:
        run_bonsai(
            BonsaiConfig(binary=str(fake_bonsai), extra_args=("--mode", "fail")),
            ic,
            tmp_path / "f",
            t_end=1,
            dt=0.5,
            snap_every=0.5,
        )
    assert "\n" not in str(info.value)  # one line on the command line
    cfg = BonsaiConfig(
        binary=str(fake_bonsai), extra_args=("--mode", "hang"), timeout=1.5, grace=0.5
    )
    with pytest.raises(SimulationError, match="killed"):
        run_bonsai(cfg, ic, tmp_path / "h", t_end=1, dt=0.5, snap_every=0.5)
    with pytest.raises(ConfigError, match="bonsai-binary"):
        run_bonsai(
            BonsaiConfig(binary=str(tmp_path / "nope")),
            ic,
            tmp_path / "n",
            t_end=1,
            dt=0.5,
            snap_every=0.5,
        )

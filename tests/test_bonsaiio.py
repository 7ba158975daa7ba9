"""BonsaiIO reader/writer: V1/V2 round trips, garbage after names, quick-dump mass rescale,
V1 time from the file name, and clear errors for broken files."""

from __future__ import annotations

import numpy as np
import pytest

from rho_core.data import bonsaiio
from rho_core.data.particles import BULGE, DARK_MATTER, DISK, OTHER, open_snapshot
from rho_core.errors import DataError


def _particles(n_dm=40, n_bulge=7, n_disk=20, n_glow=3, seed=1):
    rng = np.random.default_rng(seed)
    ptype = np.r_[[0] * n_dm, [1] * n_bulge, [2] * n_disk, [4] * n_glow]
    n = ptype.size
    idt = bonsaiio.make_idtype(ptype, rng.integers(0, 2**40, n))
    return (
        rng.normal(size=(n, 3)).astype(np.float32),
        rng.normal(size=(n, 3)).astype(np.float32),
        rng.uniform(0.5, 1, n).astype(np.float32),
        idt,
    )


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_round_trip(tmp_path, version):
    pos, vel, mass, idt = _particles()
    p = bonsaiio.write_bonsaiio(
        tmp_path / "run_00003.5000.bonsai",
        pos,
        vel,
        mass,
        idt,
        time=3.5,
        version=version,
        n_ranks=3,
        garbage=True,
    )
    snap = open_snapshot(p)
    assert isinstance(snap, bonsaiio.BonsaiIOFile)
    assert snap.version == version and snap.n_particles == 70
    names = sorted(e.name for e in snap.entries)  # garbage after the NUL is ignored
    assert names == sorted(
        f"{g}:{s}" for g in ("DM", "Stars") for s in ("IDType", "POS:real4", "VEL:float[3]")
    )
    assert all(len(e.counts) == 3 for e in snap.entries)
    assert snap.time == 3.5
    assert snap.time_source == ("filename" if version == "V1" else "header")
    c = snap.read()
    np.testing.assert_array_equal(c.ids, idt)  # DM first, already in that order here
    np.testing.assert_array_equal(c.pos, pos)
    np.testing.assert_array_equal(c.vel, vel)
    np.testing.assert_array_equal(c.mass, mass)
    np.testing.assert_array_equal(
        c.component, np.r_[[DARK_MATTER] * 40, [BULGE] * 7, [DISK] * 20, [OTHER] * 3]
    )
    chunks = list(snap.iter_chunks(chunk_size=16, velocities=False))
    assert sum(len(k) for k in chunks) == 70 and all(k.vel is None for k in chunks)


def test_stars_only_and_nan_looking_ids(tmp_path):
    pos, vel, mass, _ = _particles(n_dm=0, n_bulge=0, n_disk=4, n_glow=0)
    idt = np.array(
        [
            (2 << 48) | 0x7FA00001,
            (2 << 48) | 0xFFC00000FFFF,
            (3 << 48) | 0x7F800001,
            0xFFF0000000000001,
        ],
        np.uint64,
    )
    p = bonsaiio.write_bonsaiio(tmp_path / "s.bonsai", pos, vel, mass, idt)
    snap = open_snapshot(p)
    assert set(snap.groups) == {"Stars"}  # an array with zero particles is absent
    np.testing.assert_array_equal(snap.read().ids, idt)


def test_quick_dump_mass_rescale(tmp_path):
    pos, vel, mass, idt = _particles()
    p = bonsaiio.write_bonsaiio(
        tmp_path / "run_quick_00001.0000.bonsai", pos, vel, mass, idt, time=1.0
    )
    snap = open_snapshot(p)
    assert snap.quick and snap.quick_ratio == 0.1
    np.testing.assert_allclose(snap.read().mass, mass * 10, rtol=1e-6)
    snap2 = open_snapshot(p, quick_ratio=0.25)
    np.testing.assert_allclose(snap2.read().mass, mass * 4, rtol=1e-6)


def test_detected_by_content_without_suffix(tmp_path):
    pos, vel, mass, idt = _particles()
    p = bonsaiio.write_bonsaiio(tmp_path / "noext", pos, vel, mass, idt, time=2.0)
    assert bonsaiio.is_bonsaiio(p)
    assert open_snapshot(p).format == "bonsaiio-v2"


def test_header_offset_out_of_range(tmp_path):
    pos, vel, mass, idt = _particles()
    p = bonsaiio.write_bonsaiio(tmp_path / "bad.bonsai", pos, vel, mass, idt)
    raw = bytearray(p.read_bytes())
    raw[:8] = np.int64(len(raw) + 1000).tobytes()
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"bad\.bonsai: header offset .* out of range"):
        open_snapshot(p)


def test_truncated_and_count_mismatch(tmp_path):
    pos, vel, mass, idt = _particles()
    p = bonsaiio.write_bonsaiio(tmp_path / "t.bonsai", pos, vel, mass, idt)
    raw = p.read_bytes()
    (tmp_path / "cut.bonsai").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.bonsai"):
        open_snapshot(tmp_path / "cut.bonsai")
    snap = open_snapshot(p)
    vel_entry = next(e for e in snap.entries if e.name == "DM:VEL:float[3]")
    bad = bytearray(raw)
    bad[vel_entry.offset : vel_entry.offset + 8] = np.int64(vel_entry.counts[0] - 1).tobytes()
    (tmp_path / "cm.bonsai").write_bytes(bytes(bad))
    with pytest.raises(DataError, match=r"cm\.bonsai: count mismatch"):
        open_snapshot(tmp_path / "cm.bonsai")


def test_not_bonsai(tmp_path):
    p = tmp_path / "junk.bonsai"
    p.write_bytes(np.int64(8).tobytes() + b"XX" + bytes(40))
    with pytest.raises(DataError, match=r"junk\.bonsai: not a BonsaiIO file"):
        open_snapshot(p)

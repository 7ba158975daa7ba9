"""Tipsy readers/writers: known-answer bytes, round trips of every variant, the real Bonsai file,
NaN-looking IDs, per-rank sets, and clear errors for broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rho_core.data import tipsy
from rho_core.data.particles import (
    BULGE,
    DARK_MATTER,
    DISK,
    OTHER,
    open_snapshot,
    snapshot_filename,
)
from rho_core.errors import DataError

BONSAI_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "bonsai"
EXAMPLE = BONSAI_DIR / "model3_child_compact.tipsy"

# bonsai-format.md, "Known-answer check": V2, t = 1.5, 2 DM + 3 stars.
KNOWN_HEX = (
    "000000000000f83f050000000300000000000000020000000300000002000000"
    "0000003f0000803f000000400000404000000080000000800000008000002cf6"
    "1a24a2290000c03f000000400000404000008040000080bf000000c0000040c0"
    "01002cf61a24a2290000204000004040000080400000a040000000c0000080c0"
    "0000c0c000000000000000000700c84e676dc11b00006040000080400000a040"
    "0000c040000040c00000c0c0000010c100000000000000000500000000000000"
    "000090400000a0400000c0400000e040000080c0000000c1000040c100000000"
    "000000008967452301000000"
)
KNOWN_IDS = np.array([3 * 10**18, 3 * 10**18 + 1, 2 * 10**18 + 7, 5, 0x123456789], np.uint64)


def _particles(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(n, 3)).astype(np.float32)
    vel = rng.normal(size=(n, 3)).astype(np.float32)
    mass = rng.uniform(0.1, 1, n).astype(np.float32)
    return pos, vel, mass


def test_known_answer_bytes_read_and_write(tmp_path):
    raw = bytes.fromhex(KNOWN_HEX)
    assert len(raw) == 236
    p = tmp_path / "known"
    p.write_bytes(raw)
    snap = open_snapshot(p)
    assert snap.format == "tipsy-v2" and snap.time == 1.5 and snap.time_source == "header"
    c = snap.read()
    np.testing.assert_array_equal(c.ids, KNOWN_IDS)
    np.testing.assert_array_equal(c.mass, [0.5, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(c.pos[:, 0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(c.vel[1], [-1, -2, -3])
    np.testing.assert_array_equal(c.component, [DARK_MATTER, DARK_MATTER, BULGE, DISK, DISK])
    # The writer reproduces the documented bytes exactly.
    q = tipsy.write_tipsy(tmp_path / "again", c.pos, c.vel, c.mass, c.ids, time=1.5, variant="v2")
    assert q.read_bytes() == raw


@pytest.mark.parametrize("variant", ["v1", "v2", "standard"])
def test_round_trip_every_variant(tmp_path, variant):
    n = 257
    pos, vel, mass = _particles(n)
    if variant == "v1":
        ids = np.concatenate([np.arange(100), 10**8 + np.arange(50), 2 * 10**8 + np.arange(107)])
    else:
        ids = np.concatenate(
            [np.arange(100), 2 * 10**18 + np.arange(50), 3 * 10**18 + np.arange(107)]
        ).astype(np.uint64)
    dark = np.arange(n) >= 150
    p = tipsy.write_tipsy(
        tmp_path / "snap",
        pos,
        vel,
        mass,
        None if variant == "standard" else ids,
        dark=dark,
        time=2.25,
        variant=variant,
    )
    h = tipsy.read_header(p)
    assert (h.ndark, h.nstar, h.variant) == (107, 150, variant)
    assert p.stat().st_size == 32 + 36 * 107 + 44 * 150
    snap = open_snapshot(p)
    # chunks smaller than a block exercise the streaming path
    chunks = list(snap.iter_chunks(chunk_size=40))
    assert max(len(c) for c in chunks) <= 40
    c = snap.read()
    order = np.r_[150:257, 0:150]  # dark block first, then stars
    np.testing.assert_array_equal(c.pos, pos[order])
    np.testing.assert_array_equal(c.vel, vel[order])
    np.testing.assert_array_equal(c.mass, mass[order])
    assert snap.time == 2.25
    if variant == "standard":
        assert (c.component[:107] == DARK_MATTER).all() and (c.component[107:] == DISK).all()
    else:
        np.testing.assert_array_equal(c.ids, ids[order].astype(np.uint64))
        expect = np.r_[[DARK_MATTER] * 107, [DISK] * 100, [BULGE] * 50]
        np.testing.assert_array_equal(c.component, expect)


def test_standard_is_big_endian(tmp_path):
    pos, vel, mass = _particles(3)
    p = tipsy.write_tipsy(tmp_path / "std", pos, vel, mass, variant="standard", time=0.5)
    raw = p.read_bytes()
    assert np.frombuffer(raw[:8], ">f8")[0] == 0.5
    assert np.frombuffer(raw[12:16], ">i4")[0] == 3  # ndim
    assert np.frombuffer(raw[32:36], ">f4")[0] == mass[0]


def test_nan_looking_ids_survive(tmp_path):
    # IDs whose 32-bit halves (or whole 64 bits) are signalling/quiet NaN bit patterns.
    ids = np.array(
        [
            0x7FA000017FA00001,
            0xFFF0000000000001,
            0x7FF4000000000000,
            0x000000007F800001,
            0x00000001FFC00000,
            2**64 - 1,
        ],
        np.uint64,
    )
    pos, vel, mass = _particles(ids.size)
    p = tipsy.write_tipsy(tmp_path / "nan", pos, vel, mass, ids, variant="v2")
    c = open_snapshot(p).read()
    assert sorted(c.ids.tolist()) == sorted(ids.tolist())
    assert c.ids.dtype == np.uint64


def test_v1_other_component_and_version_garbage(tmp_path):
    ids = np.array([5, 50_000_000, 150_000_000, 250_000_000])
    pos, vel, mass = _particles(4)
    p = tipsy.write_tipsy(tmp_path / "v1", pos, vel, mass, ids, variant="v1", version_field=32550)
    snap = open_snapshot(p)
    assert snap.format == "tipsy-v1"  # a garbage pad value is V1, never an error
    c = snap.read()
    np.testing.assert_array_equal(c.component, [DARK_MATTER, DISK, OTHER, BULGE])


@pytest.mark.skipif(not EXAMPLE.exists(), reason=f"real Bonsai example file absent: {EXAMPLE}")
def test_real_bonsai_example_file():
    snap = open_snapshot(EXAMPLE)
    h = tipsy.read_header(EXAMPLE)
    assert (h.ndark, h.nstar, h.nsph, h.version) == (20000, 2000, 0, 32550)
    assert snap.format == "tipsy-v1" and snap.n_particles == 22000 and snap.time == 0.0
    c = snap.read()
    # V1 conventions: dark matter from 2e8, the 2000 stars are bulge IDs from 1e8
    np.testing.assert_array_equal(c.ids[:20000], 200_000_000 + np.arange(20000))
    np.testing.assert_array_equal(c.ids[20000:], 100_000_000 + np.arange(2000))
    assert np.bincount(c.component, minlength=4).tolist() == [20000, 2000, 0, 0]
    assert np.isfinite(c.pos).all() and np.isfinite(c.vel).all() and (c.mass > 0).all()
    # a relaxed model: centred near the origin
    com = (c.pos * c.mass[:, None]).sum(0) / c.mass.sum()
    assert np.abs(com).max() < 0.05


def test_per_rank_set_sums_counts_and_time_from_name(tmp_path):
    pos, vel, mass = _particles(30)
    ids = np.arange(30, dtype=np.uint64)
    for rank, sl in enumerate((slice(0, 10), slice(10, 25), slice(25, 30))):
        name = snapshot_filename("snap", 12.0, rank)
        tipsy.write_tipsy(tmp_path / name, pos[sl], vel[sl], mass[sl], ids[sl], time=0.0)
    assert (tmp_path / "snap_00012.0000-1").exists()
    for target in (tmp_path / "snap_00012.0000", tmp_path / "snap_00012.0000-2"):
        snap = open_snapshot(target)
        assert snap.n_particles == 30
        # header time 0 (as in 2012 files): the file name carries it
        assert snap.time == 12.0 and snap.time_source == "filename"
        np.testing.assert_array_equal(snap.read().ids, ids)
    (tmp_path / "snap_00012.0000-1").unlink()
    with pytest.raises(DataError, match="missing rank"):
        open_snapshot(tmp_path / "snap_00012.0000")


def test_truncated_file_names_the_file(tmp_path):
    pos, vel, mass = _particles(10)
    p = tipsy.write_tipsy(tmp_path / "trunc", pos, vel, mass, np.arange(10), variant="v2")
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"trunc.*truncated"):
        open_snapshot(p)


def test_count_mismatch_and_non_tipsy(tmp_path):
    pos, vel, mass = _particles(4)
    p = tipsy.write_tipsy(tmp_path / "cm", pos, vel, mass, np.arange(4), variant="v2")
    raw = bytearray(p.read_bytes())
    raw[8:12] = np.int32(5).tobytes()  # nbodies != ndark + nstar
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"cm: count mismatch"):
        open_snapshot(p)
    q = tmp_path / "notes.txt"
    q.write_text("this is not a snapshot at all, just some text padding it out\n")
    with pytest.raises(DataError, match=r"notes.txt: not a tipsy file"):
        open_snapshot(q)
    e = tmp_path / "empty"
    e.write_bytes(b"")
    with pytest.raises(DataError, match="too short"):
        open_snapshot(e)

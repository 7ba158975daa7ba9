"""Ingestion of Bonsai snapshots into a galaxy_merger store, end to end on CPU: initial
conditions -> built-in engine -> snapshots -> ingest -> a store StoreDataset reads; idempotence,
bad files reported without touching the store, parameter sources, Dask paths and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rho_cli.main import main as rho
from rho_core.data import bonsaiio, tipsy
from rho_core.data.bonsai_ingest import IngestConfig, content_hash, ingest_bonsai
from rho_core.data.dataset import StoreDataset
from rho_core.data.particles import open_snapshot
from rho_core.data.render import RenderConfig
from rho_core.data.store import open_store, store_exists
from rho_core.errors import ConfigError
from rho_core.sim.grid import EngineSpec, GridSpec, run_grid
from rho_core.sim.initial_conditions import MergerConfig
from rho_core.sim.nbody import NBodyConfig

BONSAI_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "bonsai"
EXAMPLE = BONSAI_DIR / "model3_child_compact.tipsy"
RENDER = RenderConfig(image_size=24)


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    """Two tiny merger runs (built-in engine), 3 snapshots each."""
    out = tmp_path_factory.mktemp("sims")
    grid = GridSpec(mass_ratio=(1.0, 0.5), base=MergerConfig(n_particles=120))
    engine = EngineSpec(nbody=NBodyConfig(t_end=1.0, dt=0.125, snap_every=0.5, threads=1))
    records = run_grid(grid, out, engine)
    assert len(records) == 2 and all(len(r["snapshots"]) == 3 for r in records)
    return out


def test_end_to_end_store_is_readable_and_idempotent(tmp_path, sims):
    store = tmp_path / "mergers.zarr"
    rep = ingest_bonsai([sims], store, IngestConfig(render=RENDER))
    assert (rep.added, rep.skipped, rep.failed) == (6, 0, [])
    s = open_store(store)
    assert s.kind == "galaxy_merger" and s.field_shape == (1, 24, 24) and s.n == 6
    assert s.param_names[-1] == "time" and "mass_ratio" in s.param_names
    p = dict(zip(s.param_names, s.params.T, strict=True))
    assert sorted(set(p["mass_ratio"])) == [0.5, 1.0]
    assert sorted(set(p["time"])) == [0.0, 0.5, 1.0]
    assert s.provenance["render"]["fov_kpc"] == rep.fov > 0
    assert s.provenance["render"]["units"]["pixel_value"] == "log10(surface density)"
    keys = s.sample_keys()
    assert len(set(keys)) == 6 and all(k.startswith("sha256:") for k in keys)
    ds = StoreDataset(store)
    field, params = ds[3]
    assert tuple(field.shape) == (1, 24, 24) and params.shape == (len(s.param_names),)
    # frames of one run share the field of view; the stars are there (above the floor)
    assert (np.asarray(s.fields[0]) > np.log10(RENDER.floor)).sum() > 10
    # the same snapshots again: nothing is added
    rep2 = ingest_bonsai([sims], store, IngestConfig(render=RENDER))
    assert (rep2.added, rep2.skipped) == (0, 6) and open_store(store).n == 6


def test_bad_files_reported_and_store_untouched(tmp_path, sims):
    bad = tmp_path / "bad"
    bad.mkdir()
    good = sorted((sims / "run_000").glob("snap_*"))[0]
    shutil.copy(good, bad / "trunc_00001.0000")
    raw = (bad / "trunc_00001.0000").read_bytes()
    (bad / "trunc_00001.0000").write_bytes(raw[:-10])
    (bad / "text_00002.0000").write_text("definitely not a snapshot " * 4)
    c = open_snapshot(good).read()
    bonsaiio.write_bonsaiio(
        bad / "off_00003.0000.bonsai",
        c.pos,
        c.vel,
        c.mass,
        bonsaiio.make_idtype(2, np.arange(len(c))),
    )
    b = bytearray((bad / "off_00003.0000.bonsai").read_bytes())
    b[:8] = np.int64(10**9).tobytes()
    (bad / "off_00003.0000.bonsai").write_bytes(bytes(b))
    store = tmp_path / "s.zarr"
    cfg = IngestConfig(render=RenderConfig(image_size=16, fov=80.0), params={"q": 1.0})
    rep = ingest_bonsai(sorted(bad.iterdir()), store, cfg)
    assert rep.added == 0 and len(rep.failed) == 3
    reasons = dict(rep.failed)
    assert "truncated" in reasons[str(bad / "trunc_00001.0000")]
    assert "not a tipsy file" in reasons[str(bad / "text_00002.0000")]
    assert "header offset" in reasons[str(bad / "off_00003.0000.bonsai")]
    assert not store_exists(store) and not store.exists()  # nothing created
    # mixed with good files: the good ones go in, the bad ones are named
    rep = ingest_bonsai([good, *sorted(bad.iterdir())], store, cfg)
    assert rep.added == 1 and len(rep.failed) == 3 and open_store(store).n == 1
    # bad files alone into the existing store: it is untouched (same bytes of metadata)
    before = (store / "zarr.json").read_bytes()
    rep = ingest_bonsai(sorted(bad.iterdir()), store, cfg)
    assert rep.added == 0 and len(rep.failed) == 3
    assert (store / "zarr.json").read_bytes() == before and open_store(store).n == 1
    # appending with another view is refused (the store's provenance describes every image)
    with pytest.raises(ConfigError, match="rendered differently.*projection"):
        ingest_bonsai(
            [good],
            store,
            IngestConfig(
                render=RenderConfig(image_size=16, fov=80.0, projection="x"), params={"q": 1.0}
            ),
        )


def test_parameter_sources_and_real_example(tmp_path):
    # the real Bonsai file (V1, t = 0 in the header) plus a BonsaiIO quick dump and a rank set
    snaps = tmp_path / "in"
    snaps.mkdir()
    files = []
    if EXAMPLE.exists():
        files.append(EXAMPLE)
    rng = np.random.default_rng(0)
    pos = rng.normal(0, 3, (200, 3)).astype(np.float32)
    ids = np.arange(200, dtype=np.uint64)
    for r in (0, 1):
        sl = slice(100 * r, 100 * (r + 1))
        tipsy.write_tipsy(snaps / f"rk_00002.0000-{r}", pos[sl], pos[sl] * 0, np.ones(100), ids[sl])
    bonsaiio.write_bonsaiio(
        snaps / "m_quick_00004.0000.bonsai",
        pos,
        pos * 0,
        np.ones(200),
        bonsaiio.make_idtype(2, ids),
        time=4.0,
    )
    files += [
        snaps / "rk_00002.0000",  # the prefix of the per-rank set
        snaps / "m_quick_00004.0000.bonsai",
    ]
    manifest = tmp_path / "params.csv"
    manifest.write_text(
        "snapshot,mass_ratio,pericenter\n*rk_*,0.25,5\n"
        "m_quick_00004.0000.bonsai,0.5,6\n"
        f"{EXAMPLE.name},1,7\n"
    )
    store = tmp_path / "p.zarr"
    cfg = IngestConfig(
        render=RenderConfig(image_size=16, fov=30.0),
        params_file=str(manifest),
        params={"pericenter": 9.0},
    )
    rep = ingest_bonsai(files, store, cfg)
    assert rep.failed == [] and rep.added == len(files)  # the two rank files are one snapshot
    s = open_store(store)
    assert s.param_names == ["mass_ratio", "pericenter", "time"]
    rows = {tuple(r) for r in s.params.tolist()}
    assert (0.25, 9.0, 2.0) in rows and (0.5, 9.0, 4.0) in rows  # --param wins; time from names
    if EXAMPLE.exists():
        assert (1.0, 9.0, 0.0) in rows
    # quick-dump masses are scaled by 1/0.1: 10x the surface density of the same particles
    i_rank = [i for i, r in enumerate(s.params.tolist()) if r[2] == 2.0][0]
    i_quick = [i for i, r in enumerate(s.params.tolist()) if r[2] == 4.0][0]
    diff = np.asarray(s.fields[i_quick]) - np.asarray(s.fields[i_rank])
    on = np.asarray(s.fields[i_rank]) > -3
    np.testing.assert_allclose(diff[on], 1.0, atol=1e-4)
    # a snapshot without a required parameter is reported, not written
    lone = tmp_path / "lone_00001.0000"
    tipsy.write_tipsy(lone, pos, pos * 0, np.ones(200), ids)
    rep = ingest_bonsai([lone], store, IngestConfig(render=RenderConfig(image_size=16, fov=30.0)))
    assert rep.added == 0 and "missing parameter" in rep.failed[0][1]
    assert content_hash([lone]) == content_hash([lone])


def test_dask_scheduler_path(tmp_path, sims):
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=2, processes=False, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        rep = ingest_bonsai(
            [sims / "run_001"],
            tmp_path / "d.zarr",
            IngestConfig(render=RENDER, address=cluster.scheduler_address, window=2),
        )
    assert rep.added == 3 and rep.failed == []
    serial = ingest_bonsai([sims / "run_001"], tmp_path / "e.zarr", IngestConfig(render=RENDER))
    np.testing.assert_array_equal(
        np.asarray(open_store(tmp_path / "d.zarr").fields[:]),
        np.asarray(open_store(tmp_path / "e.zarr").fields[:]),
    )
    assert serial.fov == rep.fov


def test_cli_simulate_and_ingest(tmp_path, capsys):
    out = tmp_path / "sim"
    code = rho(
        [
            "simulate",
            "merger",
            "--out",
            str(out),
            "--mass-ratio",
            "1,0.5",
            "--n-particles",
            "60",
            "--t-end",
            "0.5",
            "--dt",
            "0.25",
            "--snap-every",
            "0.25",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["runs"]) == 2
    store = tmp_path / "cli.zarr"
    code = rho(
        [
            "ingest",
            "bonsai",
            str(out),
            "--out",
            str(store),
            "--image-size",
            "16",
            "--with-dm",
            "--projection",
            "30,45",
        ]
    )
    assert code == 0
    assert "6 added" in capsys.readouterr().out
    s = open_store(store)
    assert s.field_shape == (2, 16, 16) and s.provenance["render"]["projection"] == "30,45"
    # user errors: one line, exit 2
    assert rho(["ingest", "bonsai", str(tmp_path / "nothing"), "--out", str(store)]) == 2
    assert rho(["ingest", "bonsai", str(out), "--out", str(store), "--param", "oops"]) == 2
    assert rho(["simulate", "merger", "--out", str(out), "--engine", "bonsai"]) == 2
    err = capsys.readouterr().err
    assert "--param expects NAME=VALUE" in err and "--bonsai-binary" in err
    with pytest.raises(ConfigError):
        IngestConfig(render=RenderConfig(image_size=1))
    # regressions: another image size is refused even when nothing is new, a user-given time is
    # refused (it comes from the snapshot), a bad file is named once, on one line
    code = rho(["ingest", "bonsai", str(out), "--out", str(store), "--image-size", "8"])
    code2 = rho(["ingest", "bonsai", str(out), "--out", str(store), "--param", "time=3"])
    assert (code, code2) == (2, 2)
    err = capsys.readouterr().err
    assert "image_size: store 16 vs now 8" in err and "'time' parameter comes from each" in err
    with pytest.raises(ConfigError, match="quick_ratio"):
        IngestConfig(quick_ratio=0)
    text = out / "run_000" / "text_00001.0000"  # beside the sidecar: only the content is bad
    text.write_text("not a snapshot at all, just some words\n" * 3)
    snap = str(sorted((out / "run_000").glob("snap_*"))[0])
    args = ["--out", str(tmp_path / "one.zarr"), "--image-size", "8"]
    assert rho(["ingest", "bonsai", snap, str(text), *args]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if "text_00001" in ln]
    assert len(err) == 1 and err[0].count("text_00001") == 1 and "not a tipsy file" in err[0]


def test_grid_through_dask_and_resume(tmp_path):
    from dask.distributed import LocalCluster

    grid = GridSpec(pericenter=(6.0, 9.0), base=MergerConfig(n_particles=40))
    engine = EngineSpec(nbody=NBodyConfig(t_end=0.5, dt=0.25, snap_every=0.5, threads=1))
    with LocalCluster(
        n_workers=2, processes=False, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        recs = run_grid(grid, tmp_path, engine, address=cluster.scheduler_address)
    assert [r["params"]["pericenter"] for r in recs] == [6.0, 9.0]
    assert [r["dir"] for r in recs] == ["run_000", "run_001"]
    side = json.loads((tmp_path / "run_001" / "ic.tipsy.json").read_text())
    assert side["params"]["pericenter"] == 9.0 and "galaxy1" in side["id_ranges"]
    stamp = (tmp_path / "run_000" / "run.json").stat().st_mtime_ns
    run_grid(grid, tmp_path, engine)  # completed runs are skipped
    assert (tmp_path / "run_000" / "run.json").stat().st_mtime_ns == stamp


def test_grid_refuses_runs_made_with_other_settings(tmp_path, caplog):
    """A completed run_NNN made with other parameters is never filed under the new ones."""
    engine = EngineSpec(nbody=NBodyConfig(t_end=0.5, dt=0.25, snap_every=0.25, threads=1))
    base = MergerConfig(n_particles=40)
    with caplog.at_level("INFO", logger="rho_core.sim.grid"):
        run_grid(GridSpec(mass_ratio=(1.0,), base=base), tmp_path, engine)
    assert "run_000: t = 0.5 / 0.5" in caplog.text  # progress inside a run
    stamp = (tmp_path / "run_000" / "run.json").stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"run_000 is a completed run .*mass_ratio 1.0 -> 0.5"):
        run_grid(GridSpec(mass_ratio=(0.5,), base=base), tmp_path, engine)
    longer = EngineSpec(nbody=NBodyConfig(t_end=1.0, dt=0.25, snap_every=0.25, threads=1))
    with pytest.raises(ConfigError, match="t_end 0.5 -> 1.0"):
        run_grid(GridSpec(mass_ratio=(1.0,), base=base), tmp_path, longer)
    assert (tmp_path / "run_000" / "run.json").stat().st_mtime_ns == stamp
    # extending the grid keeps run_000 and adds run_001
    recs = run_grid(GridSpec(mass_ratio=(1.0, 0.5), base=base), tmp_path, engine)
    assert [r["params"]["mass_ratio"] for r in recs] == [1.0, 0.5]
    assert (tmp_path / "run_000" / "run.json").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="cannot create output directory"):
        run_grid(GridSpec(base=base), tmp_path / "run_000" / "run.json", engine)
    import fcntl
    import os

    fd = os.open(tmp_path, os.O_RDONLY)  # another grid running into the same OUT
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="in use by another simulation grid"):
            run_grid(GridSpec(mass_ratio=(1.0,), base=base), tmp_path, engine)
    finally:
        os.close(fd)


def test_bad_scheduler_address_is_a_config_error(tmp_path, sims):
    """Regression: an unreachable or malformed --scheduler was a traceback (after 30 s)."""
    base = MergerConfig(n_particles=40)
    engine = EngineSpec(nbody=NBodyConfig(t_end=0.25, dt=0.25, snap_every=0.25, threads=1))
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler 'nonsense'"):
        run_grid(GridSpec(base=base), tmp_path / "g", engine, address="nonsense")
    store = tmp_path / "s.zarr"
    with pytest.raises(ConfigError, match="--scheduler tcp://HOST:PORT"):
        ingest_bonsai([sims], store, IngestConfig(render=RENDER, address="nonsense"))
    assert not store.exists()

"""The Zarr store: round trip, modes, validation, schema checks and crash safety (real zarr)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from rho_core.data.store import (
    SCHEMA_VERSION,
    create_store,
    open_store,
    store_exists,
    write_store_attrs,
)
from rho_core.errors import DataError, StoreError

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (2, 4, 5, 3)  # (C, x, y, z): deliberately not cubic


def _sample(i: int) -> np.ndarray:
    """Deterministic sample i (distinct for every i)."""
    return np.random.default_rng(i).standard_normal(SHAPE).astype(np.float32)


def _batch(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.stack([_sample(i) for i in range(lo, hi)])
    p = np.stack([[i, -0.5 * i] for i in range(lo, hi)]).astype(np.float64)
    return f, p


def _make(path: Path, n: int = 7, spc: int = 3, **kw) -> None:
    with create_store(
        path,
        kind="test",
        spatial_dims=3,
        param_names=["a", "b"],
        field_shape=SHAPE,
        provenance={"who": "test"},
        samples_per_chunk=spc,
        **kw,
    ) as w:
        f, p = _batch(0, n)
        w.append(f[:4], p[:4], keys=[f"k{i}" for i in range(4)])
        w.append(f[4:], p[4:])


def test_round_trip_and_chunks(tmp_path):
    path = tmp_path / "s.zarr"
    _make(path)
    assert store_exists(path)
    s = open_store(path)
    f, p = _batch(0, 7)
    assert (s.kind, s.spatial_dims, s.param_names, s.n) == ("test", 3, ["a", "b"], 7)
    assert s.field_shape == SHAPE and s.fields.shape == (7, *SHAPE)
    np.testing.assert_array_equal(s.fields[:], f)
    np.testing.assert_array_equal(s.params, p)
    assert s.provenance == {"who": "test"}
    # a chunk holds whole samples
    assert s.samples_per_chunk == 3 and tuple(s.fields.chunks) == (3, *SHAPE)
    # read one, read a batch in arbitrary order (crossing chunks), dask view
    np.testing.assert_array_equal(s.read(5)[0], f[5])
    order = [6, 0, 4, 4, 2]
    fb, pb = s.read_batch(order)
    np.testing.assert_array_equal(fb, f[order])
    np.testing.assert_array_equal(pb, p[order])
    np.testing.assert_array_equal(s.to_dask().compute(), f)
    assert s.sample_keys() == ["k0", "k1", "k2", "k3", None, None, None]
    summ = s.summary()
    assert summ["n_samples"] == 7 and summ["param_ranges"]["b"] == [-3.0, 0.0]
    json.dumps(summ)
    # numpy-like indexing of the bounded view: fancy (unsorted, repeated), negative, Ellipsis
    np.testing.assert_array_equal(s.fields[[3, 0, 3]], f[[3, 0, 3]])
    np.testing.assert_array_equal(s.fields[-1, 1], f[-1, 1])
    np.testing.assert_array_equal(s.fields[..., 2], f[..., 2])
    np.testing.assert_array_equal(s.fields[1:9:3, :, 0], f[1:9:3, :, 0])
    np.testing.assert_array_equal(np.asarray(s.fields), f)
    with pytest.raises(IndexError):
        s.read(7)
    with pytest.raises(IndexError):
        s.fields[7]
    # consolidated metadata is present and current
    doc = json.loads((path / "zarr.json").read_text())
    cm = doc["consolidated_metadata"]["metadata"]
    assert cm["fields"]["shape"][0] == 7
    assert doc["attributes"]["rho_diffusion"]["schema_version"] == SCHEMA_VERSION


def test_default_chunking_is_a_few_mib(tmp_path):
    w = create_store(
        tmp_path / "d.zarr", kind="t", spatial_dims=3, param_names=[], field_shape=(1, 32, 32, 32)
    )
    assert w.samples_per_chunk * 32**3 * 4 == 2 * 1024 * 1024
    w.close()
    w = create_store(
        tmp_path / "e.zarr",
        kind="t",
        spatial_dims=3,
        param_names=[],
        field_shape=(1, 256, 256, 256),
    )
    assert w.samples_per_chunk == 1
    w.close()


def test_modes(tmp_path):
    path = tmp_path / "s.zarr"
    _make(path)
    with pytest.raises(StoreError, match="already exists.*overwrite.*append"):
        _make(path)
    with create_store(
        path, kind="test", spatial_dims=3, param_names=["a", "b"], field_shape=SHAPE, mode="a"
    ) as w:
        assert w.n == 7 and w.sample_keys()[:5] == ["k0", "k1", "k2", "k3", None]
    _make(path, n=5, mode="a")
    s = open_store(path)
    assert s.n == 12
    f, _ = _batch(0, 5)
    np.testing.assert_array_equal(s.fields[7:], f)
    assert len(s.sample_keys()) == 12 and s.sample_keys()[7] == "k0"
    _make(path, n=5, mode="w")
    assert open_store(path).n == 5
    with pytest.raises(StoreError, match="shape"):
        create_store(
            path,
            kind="test",
            spatial_dims=3,
            param_names=["a", "b"],
            field_shape=(1, 4, 5, 3),
            mode="a",
        )
    with pytest.raises(StoreError, match="parameters"):
        create_store(
            path, kind="test", spatial_dims=3, param_names=["a"], field_shape=SHAPE, mode="a"
        )
    other = tmp_path / "notastore"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(StoreError, match="not a ρ-Diffusion store"):
        _make(other, mode="w")
    assert (other / "precious.txt").exists()


def test_empty_store_summary_is_json(tmp_path):
    path = tmp_path / "e.zarr"
    create_store(path, kind="t", spatial_dims=1, param_names=["a"], field_shape=(1, 4)).close()
    s = open_store(path)
    assert s.n == 0 and s.fields[:].shape == (0, 1, 4) and s.params.shape == (0, 1)
    assert json.loads(json.dumps(s.summary(), allow_nan=False))["param_ranges"]["a"] == [None, None]


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "s.zarr"
    w = create_store(path, kind="t", spatial_dims=1, param_names=["a"], field_shape=(1, 8))
    with pytest.raises(StoreError, match="in use"):
        create_store(
            path, kind="t", spatial_dims=1, param_names=["a"], field_shape=(1, 8), mode="a"
        )
    w.close()
    with create_store(
        path, kind="t", spatial_dims=1, param_names=["a"], field_shape=(1, 8), mode="a"
    ) as w2:
        w2.append(np.ones((2, 1, 8)), np.zeros(2))
    assert open_store(path).n == 2


def test_validation(tmp_path):
    w = create_store(
        tmp_path / "s.zarr", kind="t", spatial_dims=3, param_names=["a", "b"], field_shape=SHAPE
    )
    f, p = _batch(0, 2)
    bad = f.copy()
    bad[1, 0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        w.append(bad, p)
    with pytest.raises(DataError, match="NaN"):
        w.append(np.full_like(f, 1e300, dtype=np.float64), p)  # overflows float32
    with pytest.raises(DataError, match="shape"):
        w.append(f[:, :1], p)
    with pytest.raises(DataError, match=r"\(n, 2\)"):
        w.append(f, p[:, :1])
    with pytest.raises(DataError, match="params rows"):
        w.append(f, p[:1])
    with pytest.raises(DataError, match="dtype"):
        w.append(f.astype(np.complex64), p)
    with pytest.raises(DataError, match="NaN"):
        w.append(f, np.array([[0, np.inf], [1, 2]]))
    with pytest.raises(DataError, match="keys"):
        w.append(f, p, keys=["only-one"])
    assert w.n == 0
    w.append(f, p)
    w.close()
    assert open_store(tmp_path / "s.zarr").n == 2
    with pytest.raises(DataError, match="field_shape"):
        create_store(
            tmp_path / "x.zarr", kind="t", spatial_dims=2, param_names=[], field_shape=SHAPE
        )


def test_open_errors(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a ρ-Diffusion store"):
        open_store(tmp_path / "plain")
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").attrs["x"] = 1
    with pytest.raises(StoreError, match="not a ρ-Diffusion store"):
        open_store(tmp_path / "foreign.zarr")
    path = tmp_path / "s.zarr"
    _make(path)
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    meta = dict(g.attrs["rho_diffusion"], schema_version=2)
    g.attrs["rho_diffusion"] = meta
    with pytest.raises(StoreError, match="schema_version 2.*schema_version 1"):
        open_store(path)


def test_unwritable_and_wrong_paths_are_one_line_errors(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    _make(path)
    with pytest.raises(StoreError, match=r"is a Zarr array .*pass the store directory"):
        open_store(path / "fields")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create store"):
        _make(tmp_path / "file" / "s.zarr")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: emulate an ordinary user's access()
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == ro else real(p, m))
    with pytest.raises(StoreError, match="'.*ro' is not writable"):
        _make(ro / "s.zarr")
    from rho_core.data.normalization import fit_normalization

    path.chmod(0o555)
    if os.geteuid() == 0:
        monkeypatch.setattr(os, "access", lambda p, m: Path(p) not in (ro, path))
    with pytest.raises(StoreError, match="not writable"):
        fit_normalization(path, "minmax", write=True)
    path.chmod(0o755)
    assert "normalization" not in zarr.open_group(str(path), mode="r").attrs


def test_write_store_attrs(tmp_path):
    path = tmp_path / "s.zarr"
    _make(path)
    write_store_attrs(path, normalization={"transform": "minmax", "min": 0.0, "max": 1.0})
    s = open_store(path)
    assert s.n == 7 and s.normalization["transform"] == "minmax"
    assert s.sample_keys()[0] == "k0"
    write_store_attrs(path, normalization=None)
    assert open_store(path).normalization is None


# ----- crash safety: a writer process killed with SIGKILL -------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    import rho_core.data.store as st
    sys.path.insert(0, {tests!r})
    from test_store import _batch, SHAPE
    path, kill_at = sys.argv[1], sys.argv[2]
    w = st.create_store(path, kind="test", spatial_dims=3, param_names=["a", "b"],
                        field_shape=SHAPE, samples_per_chunk=3, mode="a")
    n = w.n
    for step in range(2_000):
        k = 1 + step % 4
        f, p = _batch(n, n + k)
        if step == 3 and kill_at == "before_commit":
            # chunk data written, count not yet committed
            st._put_attrs = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        if step == 3 and kill_at == "before_consolidate":
            st._consolidate = lambda path: os.kill(os.getpid(), signal.SIGKILL)
        n = w.append(f, p, keys=[f"k{{i}}" for i in range(n, n + k)])
        print(n, flush=True)
    """
)


def _run_child(path: Path, kill_at: str) -> subprocess.Popen:
    code = _CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"))
    return subprocess.Popen(
        [sys.executable, "-c", code, str(path), kill_at],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_complete(path: Path, at_least: int) -> int:
    s = open_store(path)
    assert s.n >= at_least
    f, p = _batch(0, s.n)
    np.testing.assert_array_equal(s.fields[:], f)
    np.testing.assert_array_equal(s.params, p)
    assert s.sample_keys() == [f"k{i}" for i in range(s.n)]
    return s.n


@pytest.mark.parametrize("kill_at", ["before_commit", "before_consolidate"])
def test_sigkill_at_commit_points(tmp_path, kill_at):
    path = tmp_path / "s.zarr"
    proc = _run_child(path, kill_at)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    printed = [int(x) for x in out.split()]
    assert printed == [1, 3, 6]  # steps 0..2 committed, step 3 (4 samples) killed
    n = _check_complete(path, 6)
    # before_commit: the 4 samples are invisible; before_consolidate: they were committed
    assert n == (6 if kill_at == "before_commit" else 10)
    # the next writer cuts leftovers and continues exactly after the committed samples
    with create_store(
        path, kind="test", spatial_dims=3, param_names=["a", "b"], field_shape=SHAPE, mode="a"
    ) as w:
        f, p = _batch(n, n + 2)
        w.append(f, p, keys=[f"k{n}", f"k{n + 1}"])
    assert _check_complete(path, n + 2) == n + 2
    assert not list(path.rglob("*.partial"))


def test_sigkill_at_random_time(tmp_path):
    path = tmp_path / "s.zarr"
    proc = _run_child(path, "random")
    assert proc.stdout is not None
    last = 0
    t0 = time.time()
    while last < 40 and time.time() - t0 < 30:
        line = proc.stdout.readline()
        if not line:
            break
        last = int(line)
    time.sleep(0.0137)  # land somewhere inside a later append
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert last >= 40, proc.stderr.read() if proc.stderr else ""
    _check_complete(path, last)

"""Reliability under concurrency, faults and hostile input (issue 14), fast cases: real Zarr, real
torch, real subprocesses and a real full disk (a small tmpfs in a private mount namespace).

Slow cases (kills at random offsets of real commands, disk full for every command) live in
``scripts/fault_battery.py``; the counts are in ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rho_cli.main import main
from rho_core.data.store import create_store, open_store, store_exists, write_store_attrs
from rho_core.errors import CheckpointError, ConfigError, StoreError
from rho_core.locks import lock_run_dir, store_lock_path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 16)


pytestmark = pytest.mark.usefixtures("one_thread")


def _fields(lo: int, hi: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((hi, *SHAPE)).astype(np.float32)[lo:hi]
    p = np.arange(lo, hi, dtype=np.float64)[:, None] / 10
    return f, p


def _store(path: Path, n: int = 10, spc: int = 4, seed: int = 0, mode: str = "w-") -> Path:
    with create_store(
        path,
        kind="test",
        spatial_dims=1,
        param_names=["a"],
        field_shape=SHAPE,
        samples_per_chunk=spc,
        mode=mode,  # type: ignore[arg-type]
    ) as w:
        f, p = _fields(0, n, seed)
        w.append(f[: n // 2], p[: n // 2])
        w.append(f[n // 2 :], p[n // 2 :])
    return path


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error line"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


# ----- 1. writers lock before touching the path -----------------------------------------------

_HOLD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    import numpy as np
    from rho_core.data.store import create_store
    w = create_store(sys.argv[1], kind="test", spatial_dims=1, param_names=["a"],
                     field_shape=(1, 16), samples_per_chunk=4, mode=sys.argv[2])
    w.append(np.full((3, 1, 16), 7.0), np.full((3, 1), 7.0))
    print("holding", flush=True)
    time.sleep(60)
    """
)


def _holder(path: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(root=str(ROOT)), str(path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "holding", proc.stderr.read() if proc.stderr else ""
    return proc


def test_second_writer_of_a_new_store_is_refused_with_the_pid(tmp_path):
    path = tmp_path / "new.zarr"
    proc = _holder(path, "w-")
    try:
        assert not path.exists()  # built under a temporary name until complete
        for mode in ("w-", "w", "a"):
            with pytest.raises(StoreError, match=rf"in use.*pid {proc.pid}"):
                _store(path, mode=mode)
        with pytest.raises(StoreError, match="does not exist|in use"):
            write_store_attrs(path, normalization=None)
    finally:
        proc.kill()
        proc.wait()
    assert not store_exists(path)  # the killed writer's store never appeared
    _store(path)  # the lock died with its process; the temporary is cleaned up
    assert open_store(path).n == 10
    assert not list(tmp_path.glob(".new.zarr.tmp-*"))


def test_killed_overwrite_keeps_the_old_store(tmp_path):
    path = _store(tmp_path / "o.zarr", n=10)
    before = open_store(path).fields[:]
    proc = _holder(path, "w")  # overwriting: 3 new samples written, not yet published
    with pytest.raises(StoreError, match="in use"):
        _store(path, mode="a")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    s = open_store(path)
    assert s.n == 10 and np.array_equal(s.fields[:], before)
    assert list(tmp_path.glob(".o.zarr.tmp-*"))  # the dead writer's temporary store …
    _store(path, n=4, mode="w")  # … is removed by the next writer, whose overwrite completes
    assert open_store(path).n == 4 and not list(tmp_path.glob(".o.zarr.tmp-*"))


def test_failed_writer_leaves_nothing_that_blocks_a_rerun(tmp_path):
    path = tmp_path / "f.zarr"
    for mode in ("w-", "a"):
        with pytest.raises(RuntimeError, match="boom"):
            with create_store(
                path, kind="t", spatial_dims=1, param_names=["a"], field_shape=SHAPE, mode=mode
            ) as w:
                if mode == "w-":
                    w.append(*_fields(0, 2))  # even committed rows of a new store go
                raise RuntimeError("boom")
        assert not path.exists()
    _store(path)  # the rerun is not blocked
    # appending to an existing store and failing keeps what was committed
    with pytest.raises(RuntimeError, match="boom"):
        with create_store(
            path, kind="test", spatial_dims=1, param_names=["a"], field_shape=SHAPE, mode="a"
        ) as w:
            w.append(*_fields(0, 3, seed=1))
            raise RuntimeError("boom")
    assert open_store(path).n == 13


def test_lock_file_is_a_sibling_and_holds_the_pid(tmp_path):
    path = tmp_path / "s.zarr"
    w = create_store(path, kind="t", spatial_dims=1, param_names=["a"], field_shape=SHAPE)
    lock = store_lock_path(path)
    assert lock.parent == tmp_path and lock.read_text().strip() == str(os.getpid())
    w.close()
    assert store_exists(path) and not (path / lock.name).exists()


# ----- 2. resume checks the store's identity, 1b. run directories are locked --------------------


def _tiny_train(store: Path, run: Path, steps: int = 2, **kw):
    from rho_core.data.dataset import StoreDataset
    from rho_core.model import default_model_config
    from rho_core.training import TrainConfig, train

    ds = StoreDataset(store)
    mc = default_model_config(
        1, 1, ["a"], (0.0,), (1.0,), cond_dim=8, base_channels=8, channel_mult=(1,), timesteps=50
    )
    tc = TrainConfig(
        steps=steps,
        batch_size=4,
        lr=1e-3,
        warmup_steps=1,
        log_every=100,
        checkpoint_every=1,
        ema_half_life_samples=50.0,
        device="cpu",
    )
    return train(mc, tc, ds, run, **kw)


def test_resume_refuses_other_data_unless_forced(tmp_path, caplog):
    a = _store(tmp_path / "a.zarr", seed=0)
    b = _store(tmp_path / "b.zarr", seed=1)  # same shape and parameters, other content
    run = tmp_path / "run"
    _tiny_train(a, run, steps=2)
    config = (run / "config.json").read_text()
    with pytest.raises(ConfigError, match=r"trained on other data \(content fingerprint"):
        _tiny_train(b, run, steps=3)
    assert (run / "config.json").read_text() == config  # nothing rewritten
    # the same content at another path is the same data (a moved store)
    shutil.copytree(a, tmp_path / "moved.zarr")
    assert _tiny_train(tmp_path / "moved.zarr", run, steps=3).step == 3
    # appending to the store changes its content: refused, then forced with a warning
    _store(a, n=2, mode="a")
    with pytest.raises(ConfigError, match="--force-resume"):
        _tiny_train(a, run, steps=4)
    assert _tiny_train(a, run, steps=4, force_resume=True).step == 4
    assert "on different data (forced)" in caplog.text
    # a changed normalisation is a difference too
    write_store_attrs(a, normalization={"transform": "minmax", "min": -3.0, "max": 3.0})
    with pytest.raises(ConfigError, match="normalisation"):
        _tiny_train(a, run, steps=5)


def test_run_directory_is_locked(tmp_path):
    store = _store(tmp_path / "a.zarr")
    run = tmp_path / "run"
    code = (
        f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
        "from rho_core.locks import lock_run_dir\n"
        f"with lock_run_dir({str(run)!r}):\n"
        "    print('holding', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        with pytest.raises(ConfigError, match=rf"'{run}' is in use.*pid {proc.pid}"):
            _tiny_train(store, run)
        assert not (run / "checkpoints").exists()
    finally:
        proc.kill()
        proc.wait()
    assert _tiny_train(store, run).step == 2  # released when the holder died
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="existing file"):
        with lock_run_dir(tmp_path / "file"):
            pass


def test_all_corrupt_checkpoints_warn_that_training_restarts(tmp_path, caplog):
    store = _store(tmp_path / "a.zarr")
    run = tmp_path / "run"
    _tiny_train(store, run, steps=2)
    for f in (run / "checkpoints").glob("ckpt-*.pt"):
        f.write_bytes(f.read_bytes()[:200])
    res = _tiny_train(store, run, steps=2)
    assert res.start_step == 0 and res.step == 2
    assert "training restarts from step 1" in caplog.text


# ----- 3. checksums: a missing or damaged chunk is an error naming the samples and the file ------


def test_deleted_chunk_is_an_error_not_zeros(tmp_path):
    path = _store(tmp_path / "s.zarr", n=10, spc=4)
    s = open_store(path)
    assert s.verified and s.fingerprint
    (path / "fields" / "c" / "1" / "0" / "0").unlink()
    s = open_store(path)
    np.testing.assert_array_equal(s.fields[0:4], _fields(0, 4)[0])  # other chunks still read
    msg = r"samples 4–7 \(chunk file .*fields/c/1/0/0\) are missing"
    for read in (lambda: s.fields[:], lambda: s.read(5), lambda: s.read_batch([0, 6])):
        with pytest.raises(StoreError, match=msg):
            read()
    with pytest.raises(StoreError, match=msg):
        s.to_dask().sum().compute()
    with pytest.raises(StoreError, match=msg):
        s.verify()


def test_truncated_and_altered_chunks_are_named(tmp_path):
    path = _store(tmp_path / "s.zarr", n=10, spc=4)
    chunk = path / "fields" / "c" / "2" / "0" / "0"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"samples 8–9 \(chunk file .*c/2/0/0\) cannot be decoded"):
        open_store(path).fields[8]
    # a valid chunk of other numbers (e.g. copied from another store) fails its checksum
    other = _store(tmp_path / "o.zarr", n=10, spc=4, seed=5)
    shutil.copy(other / "fields" / "c" / "2" / "0" / "0", chunk)
    with pytest.raises(StoreError, match="fail their checksum"):
        open_store(path).fields[9]
    # a deleted params chunk: the params are checked when the store is opened
    (other / "params" / "c" / "0" / "0").unlink()
    with pytest.raises(StoreError, match="params of samples 0–9 .* fail their checksum"):
        open_store(other)


def test_training_on_a_store_with_a_deleted_chunk_fails_with_one_line(tmp_path, capsys):
    path = _store(tmp_path / "s.zarr", n=10, spc=4)
    (path / "fields" / "c" / "0" / "0" / "0").unlink()
    code = main(["train", "--data", str(path), "--out", str(tmp_path / "run"), "--steps", "2",
                 "--batch-size", "10", "--quiet", "--device", "cpu"])  # fmt: skip
    assert code == 2
    line = _err(capsys)
    assert "samples 0–3" in line and "fields/c/0/0/0" in line and "missing" in line


def test_stores_without_checksums_still_read(tmp_path):
    import zarr

    path = _store(tmp_path / "old.zarr", n=10)
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    meta = dict(g.attrs["rho_diffusion"])
    meta.pop("checksums")
    meta.pop("fingerprint")
    g.attrs["rho_diffusion"] = meta
    s = open_store(path)
    assert not s.verified and s.fingerprint is None
    np.testing.assert_array_equal(s.fields[:], _fields(0, 10)[0])
    _store(path, n=2, mode="a")  # appending keeps it unverified (nothing to extend)
    assert open_store(path).n == 12 and not open_store(path).verified


@pytest.mark.parametrize(
    ("attr", "value", "needle"),
    [
        ("n_samples", "nine", "bad 'n_samples' attr"),
        ("field_shape", [1, -16], "bad 'field_shape' attr"),
        ("param_names", "a", "bad 'param_names' attr"),
        ("normalization", {"transform": "minmax", "min": "x"}, "bad 'normalization' attr"),
        ("normalization", "minmax", "bad 'normalization' attr"),
        ("checksums", {"algorithm": "md5"}, "bad 'checksums' attr"),
    ],
)
def test_bad_metadata_is_one_line(tmp_path, capsys, attr, value, needle):
    import zarr

    path = _store(tmp_path / "s.zarr")
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    if attr == "normalization":
        g.attrs["normalization"] = value
    else:
        g.attrs["rho_diffusion"] = dict(g.attrs["rho_diffusion"], **{attr: value})
    assert main(["info", str(path)]) == 2
    assert needle in _err(capsys)


# ----- 4. disk full: a real full tmpfs in a private mount namespace ----------------------------


def _in_small_tmpfs(tmp_path: Path, size: str, code: str) -> subprocess.CompletedProcess:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = tmp_path / "child.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(code))
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    cmd = f"mount -t tmpfs -o size={size} none {mnt} && {sys.executable} {script} {mnt}"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True)
    if "mount" in proc.stderr and "permission" in proc.stderr.lower() or "unshare:" in proc.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()}")
    return proc


def test_disk_full_while_appending_and_creating(tmp_path):
    proc = _in_small_tmpfs(
        tmp_path,
        "256k",
        """
        import os, sys, numpy as np
        from pathlib import Path
        from rho_core.data.store import create_store, open_store
        from rho_core.errors import StoreError
        mnt = Path(sys.argv[1])
        rng = np.random.default_rng(0)
        big = lambda n: rng.standard_normal((n, 1, 4096)).astype("float32")  # incompressible
        kw = dict(kind="t", spatial_dims=1, param_names=["a"], field_shape=(1, 4096),
                  samples_per_chunk=2)
        with create_store(mnt / "a.zarr", **kw) as w:
            w.append(big(4), np.zeros((4, 1)))
        try:  # appending until the disk is full
            with create_store(mnt / "a.zarr", mode="a", **kw) as w:
                for i in range(100):
                    w.append(big(2), np.zeros((2, 1)))
        except StoreError as e:
            print("APPEND", e)
        s = open_store(mnt / "a.zarr"); s.verify(); print("N", s.n)
        try:  # a new store that cannot fit: nothing is left behind
            with create_store(mnt / "b.zarr", **kw) as w:
                for i in range(100):
                    w.append(big(2), np.zeros((2, 1)))
        except StoreError as e:
            print("CREATE", e)
        print("LEFT", sorted(p.name for p in mnt.iterdir()))
        """,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "APPEND cannot write store" in out and "no space left on the device" in out
    n = int(out.split("N ")[1].split()[0])
    assert n >= 4 and n % 2 == 0  # whole appends only, all verified
    assert "CREATE cannot write store" in out
    left = eval(out.split("LEFT ")[1].strip())  # noqa: S307 - our own printed list
    assert "b.zarr" not in left and not [p for p in left if ".tmp-" in p]


def test_disk_full_while_checkpointing(tmp_path):
    proc = _in_small_tmpfs(
        tmp_path,
        "64k",
        """
        import sys, torch
        from pathlib import Path
        from rho_core.checkpoint import save_checkpoint
        from rho_core.errors import CheckpointError
        d = Path(sys.argv[1]) / "checkpoints"
        try:
            state = {"model": {"w": torch.zeros(100_000)}, "step": 1, "model_config": {}}
            save_checkpoint(state, d, 1)
        except CheckpointError as e:
            print("ERR", e)
        print("LEFT", sorted(p.name for p in d.iterdir()))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ERR cannot write checkpoint" in proc.stdout and "no space left" in proc.stdout
    assert "LEFT []" in proc.stdout


# ----- 5. resource limits, checked before allocating -------------------------------------------


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_crafted_checkpoint_with_a_huge_network_is_refused_before_allocating(tmp_path):
    from rho_core.checkpoint import load_checkpoint, load_for_sampling

    store = _store(tmp_path / "a.zarr")
    run = tmp_path / "run"
    _tiny_train(store, run, steps=1)
    ckpt = next((run / "checkpoints").glob("ckpt-*.pt"))
    state = load_checkpoint(ckpt)
    for base, needle in ((4096, "do not match its model_config"), (10**6, "more than the limit")):
        state["model_config"]["unet"]["base_channels"] = base
        bad = tmp_path / f"bad{base}.pt"
        torch.save(state, bad)
        rss, t0 = _maxrss_mib(), time.perf_counter()
        with pytest.raises(CheckpointError, match=needle):
            load_for_sampling(bad)
        assert time.perf_counter() - t0 < 10 and _maxrss_mib() - rss < 300
    state = load_checkpoint(ckpt)
    key = next(k for k, v in state["ema"]["module"].items() if v.is_floating_point())
    state["ema"]["module"][key][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN/inf weights"):
        load_for_sampling(tmp_path / "nan.pt")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["generate", "spherical-harmonics", "--l-max", "100000"], "limit of 1000"),
        (["generate", "spherical-harmonics", "--size", "4096"], "of memory, more than the limit"),
        (["generate", "hydrogen", "--half-width", "inf"], "--half-width must be a finite"),
        (["generate", "hydrogen", "--n-max", "1000"], "limit of 1,000,000"),
        (["ingest", "bonsai", "x.tipsy", "--image-size", "1000000"], "more than the limit"),
        (["ingest", "bonsai", "x.tipsy", "--projection", "nan,0"], "two finite angles"),
        (["ingest", "bonsai", "x.tipsy", "--fov", "inf"], "--fov must be a finite"),
        (["simulate", "merger", "--n-particles", "2000000000"], "limit of 10,000,000"),
        (["sample", "--checkpoint", "c", "--params", "{}", "--batch-size", "0"], "--batch-size"),
        (["sample", "--checkpoint", "c", "--params", "{}", "--guidance", "nan"], "--guidance"),
        (["ui", "--no-prefect", "--no-mlflow"], "nothing to start"),
    ],
)
def test_bad_arguments_are_one_line_before_any_work(tmp_path, capsys, argv, needle):
    out = tmp_path / "x.zarr"
    rss, t0 = _maxrss_mib(), time.perf_counter()
    cmd = argv if argv[0] == "ui" else [*argv, "--out", str(out)]
    assert main(cmd) == 2
    assert needle in _err(capsys)
    assert not out.exists() and time.perf_counter() - t0 < 10 and _maxrss_mib() - rss < 300


@pytest.mark.parametrize("port", ["-1", "0", "99999", "http"])
def test_ui_ports_out_of_range(capsys, port):
    with pytest.raises(SystemExit) as e:
        main(["ui", "--prefect-port", port])
    assert e.value.code == 2
    assert "--prefect-port" in _err(capsys)


def test_train_out_is_an_existing_file(tmp_path, capsys):
    store = _store(tmp_path / "a.zarr")
    (tmp_path / "f").write_text("keep me")
    assert main(["train", "--data", str(store), "--out", str(tmp_path / "f"), "--quiet"]) == 2
    assert "existing file" in _err(capsys)
    assert (tmp_path / "f").read_text() == "keep me"


def test_sample_out_existing_and_append_size_mismatch(tmp_path, capsys):
    store = _store(tmp_path / "a.zarr")
    argv = ["sample", "--checkpoint", "c", "--params", "{}", "--out", str(store)]
    assert main(argv) == 2 and "already exists" in _err(capsys)
    sh = tmp_path / "sh.zarr"
    base = ["generate", "spherical-harmonics", "--out", str(sh), "--l-max", "1"]
    assert main([*base, "--size", "8"]) == 0
    capsys.readouterr()
    assert main([*base, "--size", "16", "--append"]) == 2
    assert "generated with size 8, not 16" in _err(capsys)
    assert open_store(sh).n == 4


def test_store_info_json_stays_loadable_after_checksums(tmp_path, capsys):
    path = _store(tmp_path / "s.zarr")
    assert main(["info", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_samples"] == 10


# ----- 6. hostile snapshot headers name the file -------------------------------------------------


def _particles(n: int = 40):
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(n, 3)).astype(np.float32)
    return pos, pos.copy(), np.ones(n, np.float32), np.arange(n, dtype=np.uint64)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_tipsy_nonfinite_header_time(tmp_path, value):
    from rho_core.data.snapshots import open_snapshot
    from rho_core.data.tipsy import write_tipsy
    from rho_core.errors import DataError

    pos, vel, mass, ids = _particles()
    write_tipsy(tmp_path / "t.tipsy", pos, vel, mass, ids, time=value)
    with pytest.raises(DataError, match=r"t\.tipsy: the header time is .*not a finite number"):
        open_snapshot(tmp_path / "t.tipsy")
    # a Bonsai file name carries the time: used instead, and recorded as such
    write_tipsy(tmp_path / "snap_000002.5000", pos, vel, mass, ids, time=value)
    snap = open_snapshot(tmp_path / "snap_000002.5000")
    assert snap.time == 2.5 and snap.time_source == "filename"


def test_bonsaiio_cut_inside_the_time_field(tmp_path):
    from rho_core.data import bonsaiio
    from rho_core.data.snapshots import open_snapshot
    from rho_core.errors import DataError

    pos, vel, mass, _ = _particles(50)
    rng = np.random.default_rng(1)
    idt = bonsaiio.make_idtype(np.r_[[0] * 20, [2] * 30], rng.integers(0, 2**40, 50))
    p = bonsaiio.write_bonsaiio(tmp_path / "x.bonsai", pos, vel, mass, idt, time=1.5)
    data = p.read_bytes()
    at = data.rfind(np.float64(1.5).tobytes())
    for cut in range(at + 1, at + 8):
        (tmp_path / "cut.bonsai").write_bytes(data[:cut])
        with pytest.raises(DataError, match=r"cut\.bonsai: truncated inside the time field"):
            open_snapshot(tmp_path / "cut.bonsai")


def test_a_launcher_holding_the_run_lock_lets_its_own_workers_in(tmp_path, monkeypatch):
    """``rho train --nproc``: the launcher locks, its workers see RHO_RUN_DIR_LOCKED; any other
    process (without the variable, or for another directory) is still refused."""
    from rho_core.locks import RUN_LOCK_ENV

    run = tmp_path / "run"
    with lock_run_dir(run):
        monkeypatch.setenv(RUN_LOCK_ENV, os.path.realpath(run))
        with lock_run_dir(run) as inner:  # a worker of this launcher
            assert inner is None
        monkeypatch.setenv(RUN_LOCK_ENV, os.path.realpath(tmp_path / "other"))
        with pytest.raises(ConfigError, match="in use"):
            with lock_run_dir(run):
                pass


def test_ingest_skips_snapshots_another_ingest_committed_meanwhile(tmp_path):
    """Two ingests of the same snapshots into one new store, the second committing everything
    while the first renders: the first must not add them again (keys read under the lock)."""
    from rho_core.data.bonsai_ingest import IngestConfig, ingest_bonsai, parse_param_args
    from rho_core.data.render import RenderConfig
    from rho_core.data.tipsy import write_tipsy

    snaps = tmp_path / "snaps"
    snaps.mkdir()
    pos, vel, mass, ids = _particles(200)
    for k in range(4):
        write_tipsy(snaps / f"snap_{k:06d}.0000", pos * (1 + k), vel, mass, ids, time=k)
    store = tmp_path / "i.zarr"
    cfg = IngestConfig(
        render=RenderConfig(image_size=16, fov=20.0), params=parse_param_args(["q=1"])
    )
    other: list = []

    def progress(done, total, name):
        if not other:  # the outer ingest has rendered but not yet opened its writer
            other.append(ingest_bonsai([snaps], store, cfg))

    rep = ingest_bonsai([snaps], store, cfg, progress=progress)
    assert other[0].added == 4 and rep.added == 0 and rep.skipped == 4
    s = open_store(store)
    assert s.n == 4 and len(set(s.sample_keys())) == 4

"""Fault battery for issue 14: real ``rho`` commands killed at random offsets, racing each other,
running into a full disk, and fed hostile input — then the data are checked.

    .venv/bin/python scripts/fault_battery.py [--repeats 3] [--seed 0] [--work DIR] [--json PATH]
                                              [--only kill,race,disk,input]

Every case runs the real CLI in a subprocess (``python -m rho_cli.main``) on real stores, and
classifies the outcome:

- ``clean error``: the command was expected to fail (bad input, full disk, a second writer) and
  did so with a non-zero exit and one ``rho …: error:`` line, no traceback;
- ``survived``: a fault (SIGKILL, full disk, concurrent writer) left every store either as it was
  (same content fingerprint, all chunks verify) or complete, and a rerun finished the job;
- ``data lost``: a store that vanished, lost committed samples, fails verification, holds a mix of
  two writers, or a rerun that could not finish; ``traceback``: a user-facing traceback.

Disk-full cases run in a private mount namespace (``unshare -m``) on a small tmpfs that a
``dd`` fills while the command runs (real ENOSPC); they are skipped where that is not allowed.
The table is printed at the end (and written with ``--json``); ``docs/reliability.md`` records a
run. On a 2-core machine ``--repeats 3`` takes about 15-25 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
ENV.pop("RHO_FORCE_RESUME", None)
RHO = [sys.executable, "-m", "rho_cli.main"]
TINY_MODEL = textwrap.dedent(
    """
    model: {base_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_levels: [],
            mid_attention: false, cond_dim: 16, timesteps: 100}
    train: {batch_size: 4, lr: 1.0e-3, warmup_steps: 2, log_every: 1000}
    """
)

N_SNAPS = 24
results: list[dict] = []


# ----- helpers ---------------------------------------------------------------------------------


def run(args: list[str], timeout: float = 600, cwd: Path | None = None) -> tuple[int, str]:
    p = subprocess.run(
        [*RHO, *args], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    return p.returncode, p.stdout + p.stderr


def start(args: list[str], cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*RHO, *args], env=ENV, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def is_clean_error(rc: int, out: str) -> bool:
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return rc != 0 and "Traceback" not in out and bool(lines) and ": error:" in lines[-1]


def state(path: Path) -> dict | None:
    """``None`` (nothing at ``path``) or ``{"n", "fingerprint", "ok", "why", "keys_unique"}``."""
    from rho_core.data.store import open_store, store_exists
    from rho_core.errors import RhoError

    if not path.exists():
        return None
    if not store_exists(path):
        return {"n": -1, "fingerprint": None, "ok": False, "why": "not a store"}
    try:
        s = open_store(path)
        s.verify()
        keys = [k for k in s.sample_keys() if k]
        params = {tuple(r) for r in s.params.tolist()}
        return {
            "n": s.n,
            "fingerprint": s.fingerprint,
            "ok": True,
            "why": "",
            "keys_unique": len(keys) == len(set(keys)),
            "params_unique": len(params) == s.n,
            "provenance": s.provenance,
            "normalization": s.normalization,
        }
    except RhoError as exc:
        return {"n": -1, "fingerprint": None, "ok": False, "why": str(exc)}


def record(category: str, name: str, outcome: str, detail: str = "") -> None:
    results.append({"category": category, "case": name, "outcome": outcome, "detail": detail})
    mark = {"clean error": "ok", "survived": "ok", "passed": "ok"}.get(outcome, "!!")
    print(f"[{mark}] {category:6s} {name:42s} {outcome:12s} {detail[:150]}", flush=True)


def kill_at(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL ``proc`` after ``delay`` s; False when it had already finished."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def timed(args: list[str], cwd: Path | None = None) -> float:
    t0 = time.monotonic()
    rc, out = run(args, cwd=cwd)
    assert rc == 0, out
    return time.monotonic() - t0


# ----- fixtures --------------------------------------------------------------------------------


def make_snapshots(d: Path, n: int = N_SNAPS, particles: int = 20_000) -> Path:
    import numpy as np

    from rho_core.data.tipsy import write_tipsy

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        pos = rng.normal(size=(particles, 3)).astype(np.float32) * (1 + 0.1 * k)
        ids = np.arange(particles, dtype=np.uint64)
        write_tipsy(
            d / f"snap_{k:06d}.0000", pos, pos * 0, np.ones(particles, np.float32), ids, time=k
        )
    return d


def setup(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    fx: dict = {"work": work}
    fx["sh4"] = work / "fx-sh4.zarr"
    if not fx["sh4"].exists():
        run(["generate", "spherical-harmonics", "--out", str(fx["sh4"]), "--size", "32",
             "--l-max", "4"])  # fmt: skip
    fx["snaps"] = make_snapshots(work / "fx-snaps")
    fx["sh8"] = work / "fx-sh8.zarr"
    if not fx["sh8"].exists():
        run(["generate", "spherical-harmonics", "--out", str(fx["sh8"]), "--size", "8",
             "--l-max", "3"])  # fmt: skip
        run(["normalize", str(fx["sh8"]), "--transform", "minmax"])
    fx["cfg"] = work / "tiny.yaml"
    fx["cfg"].write_text(TINY_MODEL)
    fx["run"] = work / "fx-run"
    if not (fx["run"] / "checkpoints").exists():
        rc, out = run(["train", "--data", str(fx["sh8"]), "--out", str(fx["run"]), "--config",
                       str(fx["cfg"]), "--steps", "3", "--quiet", "--device", "cpu"])  # fmt: skip
        assert rc == 0, out
    # how long the commands under test take, to kill them at random offsets inside
    fx["t_gen"] = timed(["generate", "spherical-harmonics", "--out", str(work / "t.zarr"),
                         "--size", "32", "--l-max", "8", "--overwrite"])  # fmt: skip
    fx["t_ingest"] = timed(["ingest", "bonsai", str(fx["snaps"]), "--out",
                            str(work / "ti.zarr"), "--image-size", "64"])  # fmt: skip
    shutil.rmtree(work / "ti.zarr")
    fx["t0"] = 0.8 * timed(["info", str(fx["sh8"])])  # interpreter + imports: nothing written yet
    print(
        f"setup: start-up {fx['t0']:.1f} s, generate {fx['t_gen']:.1f} s, ingest "
        f"{fx['t_ingest']:.1f} s",
        flush=True,
    )
    return fx


# ----- kills at random offsets -------------------------------------------------------------------


def kill_cases(fx: dict, rng: random.Random, repeats: int) -> None:
    work = fx["work"]
    full = 81  # (8 + 1)² volumes
    gen = ["generate", "spherical-harmonics", "--size", "32", "--l-max", "8"]
    for i in range(repeats):
        # (a) a new store: nothing or complete, and the rerun completes it
        out = work / f"kn{i}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        delay = rng.uniform(fx["t0"], fx["t_gen"] * 1.1)
        killed = kill_at(start([*gen, "--out", str(out)]), delay)
        st = state(out)
        ok = st is None or (st["ok"] and st["n"] == full)
        rc, log = run([*gen, "--out", str(out), "--overwrite"])
        st2 = state(out)
        ok = ok and rc == 0 and st2 is not None and st2["ok"] and st2["n"] == full
        record("kill", f"generate new, kill at {delay:.2f}s", "survived" if ok else "data lost",
               f"killed={killed} after={None if st is None else st['n']}")  # fmt: skip

        # (b) --overwrite: the old store stays until the new one is complete
        out = work / f"ko{i}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(fx["sh4"], out)
        old = state(out)
        delay = rng.uniform(fx["t0"], fx["t_gen"] * 1.1)
        killed = kill_at(start([*gen, "--out", str(out), "--overwrite", "--convention", "paper"]),
                         delay)  # fmt: skip
        st = state(out)
        ok = (
            st is not None
            and st["ok"]
            and (
                st["fingerprint"] == old["fingerprint"]
                or (st["n"] == 45 and st["provenance"].get("convention") == "paper")
            )
        )
        record("kill", f"generate --overwrite, kill at {delay:.2f}s",
               "survived" if ok else "data lost",
               f"killed={killed} n={None if st is None else st['n']}")  # fmt: skip

        # (c) --append: committed samples stay, the rerun finishes
        out = work / f"ka{i}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(fx["sh4"], out)
        delay = rng.uniform(fx["t0"], fx["t_gen"] * 1.1)
        killed = kill_at(start([*gen, "--out", str(out), "--append"]), delay)
        st = state(out)
        ok = st is not None and st["ok"] and 25 <= st["n"] <= full and st["params_unique"]
        rc, log = run([*gen, "--out", str(out), "--append"])
        st2 = state(out)
        ok = ok and rc == 0 and st2["ok"] and st2["n"] == full and st2["params_unique"]
        record("kill", f"generate --append, kill at {delay:.2f}s",
               "survived" if ok else "data lost",
               f"killed={killed} n={None if st is None else st['n']}")  # fmt: skip

        # (d) ingest: committed snapshots stay, the rerun adds exactly the rest
        out = work / f"ki{i}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        ing = ["ingest", "bonsai", str(fx["snaps"]), "--out", str(out), "--image-size", "64"]
        delay = rng.uniform(fx["t0"], fx["t_ingest"] * 1.1)
        killed = kill_at(start(ing), delay)
        st = state(out)
        ok = st is None or (st["ok"] and st["keys_unique"])
        rc, log = run(ing)
        st2 = state(out)
        ok = ok and rc == 0 and st2["ok"] and st2["n"] == N_SNAPS and st2["keys_unique"]
        record("kill", f"ingest, kill at {delay:.2f}s", "survived" if ok else "data lost",
               f"killed={killed} n={None if st is None else st['n']}")  # fmt: skip

        # (e) normalize: the store stays readable, the normalisation is old or new
        out = work / f"kz{i}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(fx["sh4"], out)
        old = state(out)
        delay = rng.uniform(0.3, 4.0)
        killed = kill_at(start(["normalize", str(out), "--transform", "minmax"]), delay)
        st = state(out)
        ok = st is not None and st["ok"] and st["fingerprint"] == old["fingerprint"]
        record("kill", f"normalize, kill at {delay:.2f}s", "survived" if ok else "data lost",
               f"killed={killed} norm={bool(st and st.get('normalization'))}")  # fmt: skip

        # (f) train: the rerun resumes from a valid checkpoint and finishes
        out = work / f"kt{i}"
        shutil.rmtree(out, ignore_errors=True)
        tr = ["train", "--data", str(fx["sh8"]), "--out", str(out), "--config", str(fx["cfg"]),
              "--steps", "30", "--checkpoint-every", "3", "--quiet", "--device", "cpu"]  # fmt: skip
        delay = rng.uniform(3.0, 12.0)
        killed = kill_at(start(tr), delay)
        rc, log = run(tr)
        ok = rc == 0 and "trained to step 30" in log
        record(
            "kill",
            f"train, kill at {delay:.2f}s",
            "survived" if ok else "data lost",
            f"killed={killed} {log.strip().splitlines()[-1][:80] if log.strip() else ''}",
        )

        # (g) sample: nothing or a complete store; the rerun writes it
        out = work / f"ks{i}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        sm = ["sample", "--checkpoint", str(fx["run"]), "--params", '{"l": 1, "m": 0}', "--n",
              "8", "--steps", "20", "--out", str(out), "--quiet", "--device", "cpu"]  # fmt: skip
        delay = rng.uniform(2.0, 8.0)
        killed = kill_at(start(sm), delay)
        st = state(out)
        ok = st is None or (st["ok"] and st["n"] == 8)
        if st is None:
            rc, log = run(sm)
            ok = ok and rc == 0 and state(out)["n"] == 8
        record("kill", f"sample, kill at {delay:.2f}s", "survived" if ok else "data lost",
               f"killed={killed} n={None if st is None else st['n']}")  # fmt: skip


# ----- races -----------------------------------------------------------------------------------


def race_cases(fx: dict, rng: random.Random, repeats: int) -> None:
    work = fx["work"]
    gen = ["generate", "spherical-harmonics", "--size", "32", "--l-max", "8"]
    for i in range(repeats):
        out = work / f"rg{i}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        stagger = rng.uniform(0.0, 1.0)
        a = start([*gen, "--out", str(out)])
        time.sleep(stagger)
        b = start([*gen, "--out", str(out), "--convention", "paper"])
        oa, ob = a.communicate()[0], b.communicate()[0]
        st = state(out)
        conv = None if st is None else st["provenance"].get("convention")
        expect = {"real": 81, "paper": 45}.get(conv)
        rcs = (a.returncode, b.returncode)
        losers_clean = all(is_clean_error(rc, o) for rc, o in ((a.returncode, oa),
                           (b.returncode, ob)) if rc != 0)  # fmt: skip
        ok = st is not None and st["ok"] and st["n"] == expect and 0 in rcs and rcs != (0, 0)
        record("race", f"two generates (real/paper), stagger {stagger:.2f}s",
               "survived" if ok and losers_clean else "data lost",
               f"rc={rcs} n={None if st is None else st['n']} convention={conv}")  # fmt: skip

        out = work / f"ri{i}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        ing = ["ingest", "bonsai", str(fx["snaps"]), "--out", str(out), "--image-size", "64"]
        a = start(ing)
        time.sleep(rng.uniform(0.0, 1.0))
        b = start(ing)
        oa, ob = a.communicate()[0], b.communicate()[0]
        rcs = (a.returncode, b.returncode)
        losers_clean = all(is_clean_error(rc, o) for rc, o in ((a.returncode, oa),
                           (b.returncode, ob)) if rc != 0)  # fmt: skip
        rc, log = run(ing)  # a rerun adds whatever a refused ingest did not
        st = state(out)
        ok = st is not None and st["ok"] and st["n"] == N_SNAPS and st["keys_unique"] and 0 in rcs
        record("race", "two ingests into one new store", "survived" if ok and losers_clean
               else "data lost", f"rc={rcs} n={None if st is None else st['n']}")  # fmt: skip

        out = work / f"rt{i}"
        shutil.rmtree(out, ignore_errors=True)
        tr = ["train", "--data", str(fx["sh8"]), "--out", str(out), "--config", str(fx["cfg"]),
              "--steps", "20", "--checkpoint-every", "5", "--quiet", "--device", "cpu"]  # fmt: skip
        a = start(tr)
        time.sleep(rng.uniform(0.0, 2.0))
        b = start(tr)
        oa, ob = a.communicate()[0], b.communicate()[0]
        rcs = (a.returncode, b.returncode)
        losers_clean = all(is_clean_error(rc, o) for rc, o in ((a.returncode, oa),
                           (b.returncode, ob)) if rc != 0)  # fmt: skip
        from rho_core.checkpoint import load_for_sampling

        try:
            ok = load_for_sampling(out).step == 20 and 0 in rcs and losers_clean
        except Exception as exc:  # noqa: BLE001
            ok, oa = False, str(exc)
        record(
            "race",
            "two trainings into one run directory",
            "survived" if ok else "data lost",
            f"rc={rcs}",
        )


# ----- disk full (private tmpfs) -----------------------------------------------------------------


def disk_cases(fx: dict, rng: random.Random, repeats: int) -> None:
    """Re-run this script under ``unshare -m`` for the disk-full cases (a private tmpfs)."""
    if shutil.which("unshare") is None:
        record("disk", "disk-full cases", "skipped", "no unshare(1)")
        return
    out_json = fx["work"] / "disk.json"
    cmd = ["unshare", "-m", sys.executable, __file__, "--disk-child", str(fx["work"]),
           "--repeats", str(repeats), "--seed", str(rng.randrange(1 << 30)), "--json",
           str(out_json)]  # fmt: skip
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    if p.returncode != 0 or not out_json.exists():
        record("disk", "disk-full cases", "skipped", (p.stderr or p.stdout)[-300:])
        return
    results.extend(json.loads(out_json.read_text())["results"])


def _mount(mnt: Path, size: str) -> None:
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "none", str(mnt)], check=True)


def _fill(mnt: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'filler'}", "bs=64k"],
                   capture_output=True)  # fmt: skip


def disk_child(work: Path, rng: random.Random, repeats: int) -> None:
    """Inside a private mount namespace: each command runs on a tmpfs that fills up under it."""
    mnt = work / "mnt"
    _mount(mnt, "64m")
    fx = {"snaps": work / "fx-snaps", "sh8": work / "fx-sh8.zarr", "cfg": work / "tiny.yaml",
          "run": work / "fx-run", "sh4": work / "fx-sh4.zarr"}  # fmt: skip
    gen = ["generate", "spherical-harmonics", "--size", "32", "--l-max", "8"]
    cases = {
        "generate new": (None, [*gen, "--out", "{out}"], 81),
        "generate --overwrite": ("sh4", [*gen, "--out", "{out}", "--overwrite"], 81),
        "generate --append": ("sh4", [*gen, "--out", "{out}", "--append"], 81),
        "ingest new": (
            None,
            ["ingest", "bonsai", str(fx["snaps"]), "--out", "{out}", "--image-size", "256"],
            N_SNAPS,
        ),  # fmt: skip
        "normalize": ("sh4", ["normalize", "{out}", "--transform", "minmax"], 25),
        "sample": (
            None,
            [
                "sample",
                "--checkpoint",
                str(fx["run"]),
                "--params",
                '{"l": 1, "m": 0}',
                "--n",
                "8",
                "--steps",
                "10",
                "--out",
                "{out}",
                "--quiet",
                "--device",
                "cpu",
            ],
            8,
        ),  # fmt: skip
        "train (checkpoints)": (
            None,
            [
                "train",
                "--data",
                str(fx["sh8"]),
                "--out",
                "{out}",
                "--config",
                str(fx["cfg"]),
                "--steps",
                "6",
                "--checkpoint-every",
                "2",
                "--quiet",
                "--device",
                "cpu",
            ],
            None,
        ),  # fmt: skip
    }
    for i in range(repeats):
        for name, (seed, argv, full) in cases.items():
            for p in mnt.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            out = mnt / ("r" if name.startswith("train") else "s.zarr")
            if seed:
                shutil.copytree(fx[seed], out)
            old = state(out) if seed else None
            args = [a.replace("{out}", str(out)) for a in argv]
            proc = start(args)
            delay = 0.0 if i == 0 else rng.uniform(0.2, 3.0)  # full from the start, or later
            time.sleep(delay)
            _fill(mnt)
            log = proc.communicate()[0]
            rc = proc.returncode
            st = None if name.startswith("train") else state(out)
            if rc == 0:  # finished before the disk filled up: the result must be complete
                ok = name.startswith("train") or (st is not None and st["ok"])
                outcome = "survived" if ok else "data lost"
            else:
                clean = is_clean_error(rc, log)
                if name.startswith("train"):
                    kept = True
                elif old is not None and name != "generate --append":
                    kept = st is not None and st["ok"] and st["fingerprint"] == old["fingerprint"]
                elif old is not None:
                    kept = st is not None and st["ok"] and st["n"] >= old["n"]
                else:
                    kept = st is None or (st["ok"] and st["n"] > 0)  # nothing that blocks
                (mnt / "filler").unlink(missing_ok=True)
                rc2, log2 = run(args)  # the same command again, now that there is space
                st2 = None if name.startswith("train") else state(out)
                rerun = rc2 == 0 and (st2 is None and name.startswith("train")
                                      or st2 is not None and st2["ok"]
                                      and (full is None or st2["n"] == full))  # fmt: skip
                if "Traceback" in log:
                    outcome = "traceback"
                elif clean and kept and rerun:
                    outcome = "clean error"
                else:
                    outcome = "data lost"
                log = log.strip().splitlines()[-1] if log.strip() else ""
                if not rerun:
                    log += f" | rerun rc={rc2}: {log2.strip().splitlines()[-1][:100]}"
            record("disk", f"{name}, disk full at {delay:.2f}s", outcome, log[-160:])


# ----- hostile input -----------------------------------------------------------------------------


def input_cases(fx: dict) -> None:
    import numpy as np
    import torch
    import zarr

    work = fx["work"]
    bad = work / "in"
    shutil.rmtree(bad, ignore_errors=True)
    bad.mkdir()
    (bad / "file").write_text("x")

    def damaged(name: str, edit) -> Path:
        p = bad / name
        shutil.copytree(fx["sh8"], p)
        edit(p)
        return p

    def set_attr(key, value):
        def edit(p):
            g = zarr.open_group(str(p), mode="r+", use_consolidated=False)
            if key == "normalization":
                g.attrs["normalization"] = value
            else:
                g.attrs["rho_diffusion"] = dict(g.attrs["rho_diffusion"], **{key: value})

        return edit

    def rm_chunk(p):
        files = sorted(f for f in (p / "fields" / "c").rglob("*") if f.is_file())
        files[0].unlink()

    def cut_chunk(p):
        f = sorted(f for f in (p / "fields" / "c").rglob("*") if f.is_file())[0]
        f.write_bytes(f.read_bytes()[:20])

    from rho_core.checkpoint import load_checkpoint

    ckpt = sorted((fx["run"] / "checkpoints").glob("ckpt-*.pt"))[-1]
    st = load_checkpoint(ckpt)
    st["model_config"]["unet"]["base_channels"] = 4096
    torch.save(st, bad / "huge.pt")
    st = load_checkpoint(ckpt)
    for v in st["ema"]["module"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))
    torch.save(st, bad / "nan.pt")
    from rho_core.data.tipsy import write_tipsy

    pos = np.zeros((50, 3), np.float32)
    write_tipsy(bad / "nan.tipsy", pos, pos, np.ones(50, np.float32),
                np.arange(50, dtype=np.uint64), time=float("nan"))  # fmt: skip
    from rho_core.data import bonsaiio

    idt = bonsaiio.make_idtype(np.r_[[0] * 20, [2] * 30], np.arange(50))
    p = bonsaiio.write_bonsaiio(bad / "x.bonsai", np.ones((50, 3), np.float32),
                                np.ones((50, 3), np.float32), np.ones(50, np.float32), idt,
                                time=1.5)  # fmt: skip
    data = p.read_bytes()
    (bad / "cut.bonsai").write_bytes(data[: data.rfind(np.float64(1.5).tobytes()) + 4])
    sh8 = str(fx["sh8"])
    other = bad / "other.zarr"
    run(["generate", "spherical-harmonics", "--out", str(other), "--size", "16", "--l-max", "3"])
    resume_run = bad / "resume"
    shutil.copytree(fx["run"], resume_run)
    smp = ["sample", "--checkpoint", str(fx["run"]), "--params", '{"l": 1, "m": 0}']
    cases = [
        ("sample --batch-size 0", [*smp, "--batch-size", "0", "--out", str(bad / "o1")]),
        ("sample --steps 0", [*smp, "--steps", "0", "--out", str(bad / "o2")]),
        ("sample --out existing", [*smp, "--out", sh8]),
        (
            "sample NaN weights",
            [
                "sample",
                "--checkpoint",
                str(bad / "nan.pt"),
                "--params",
                '{"l": 1, "m": 0}',
                "--out",
                str(bad / "o3"),
            ],
        ),  # fmt: skip
        (
            "sample crafted base_channels 4096",
            [
                "sample",
                "--checkpoint",
                str(bad / "huge.pt"),
                "--params",
                '{"l": 1, "m": 0}',
                "--out",
                str(bad / "o4"),
            ],
        ),  # fmt: skip
        ("train --out existing file", ["train", "--data", sh8, "--out", str(bad / "file")]),
        (
            "train resume on another store",
            [
                "train",
                "--data",
                str(other),
                "--out",
                str(resume_run),
                "--steps",
                "5",
                "--quiet",
                "--config",
                str(fx["cfg"]),
            ],  # fmt: skip
        ),
        (
            "train deleted chunk",
            [
                "train",
                "--data",
                str(damaged("rm.zarr", rm_chunk)),
                "--out",
                str(bad / "r1"),
                "--steps",
                "2",
                "--quiet",
            ],
        ),  # fmt: skip
        (
            "train truncated chunk",
            [
                "train",
                "--data",
                str(damaged("cut.zarr", cut_chunk)),
                "--out",
                str(bad / "r2"),
                "--steps",
                "2",
                "--quiet",
            ],
        ),
        (
            "info n_samples 'nine'",
            ["info", str(damaged("nine.zarr", set_attr("n_samples", "nine")))],
        ),
        (
            "info bad normalization",
            [
                "info",
                str(
                    damaged(
                        "norm.zarr",
                        set_attr("normalization", {"transform": "minmax", "min": "low"}),
                    )
                ),
            ],
        ),  # fmt: skip
        ("ui --prefect-port -1", ["ui", "--prefect-port", "-1"]),
        ("ui --mlflow-port 99999", ["ui", "--mlflow-port", "99999"]),
        ("ui --no-prefect --no-mlflow", ["ui", "--no-prefect", "--no-mlflow"]),
        (
            "generate hydrogen --half-width inf",
            ["generate", "hydrogen", "--out", str(bad / "h.zarr"), "--half-width", "inf"],
        ),
        (
            "generate --size 16 --append on 8³",
            [
                "generate",
                "spherical-harmonics",
                "--out",
                sh8,
                "--size",
                "16",
                "--l-max",
                "3",
                "--append",
            ],
        ),
        (
            "generate --l-max 100000",
            ["generate", "spherical-harmonics", "--out", str(bad / "l.zarr"), "--l-max", "100000"],
        ),  # fmt: skip
        (
            "evaluate --max-conditions -1",
            ["evaluate", "--checkpoint", str(fx["run"]), "--data", sh8, "--max-conditions", "-1"],
        ),  # fmt: skip
        (
            "ingest --projection nan,0",
            [
                "ingest",
                "bonsai",
                str(fx["snaps"]),
                "--out",
                str(bad / "p.zarr"),
                "--projection",
                "nan,0",
            ],
        ),
        (
            "ingest --image-size 1000000",
            [
                "ingest",
                "bonsai",
                str(fx["snaps"]),
                "--out",
                str(bad / "p.zarr"),
                "--image-size",
                "1000000",
            ],
        ),
        (
            "ingest tipsy NaN time",
            [
                "ingest",
                "bonsai",
                str(bad / "nan.tipsy"),
                "--out",
                str(bad / "p.zarr"),
                "--param",
                "q=1",
            ],
        ),  # fmt: skip
        (
            "ingest BonsaiIO cut in time field",
            [
                "ingest",
                "bonsai",
                str(bad / "cut.bonsai"),
                "--out",
                str(bad / "p.zarr"),
                "--param",
                "q=1",
            ],
        ),  # fmt: skip
        (
            "simulate --n-particles 2e9",
            ["simulate", "merger", "--out", str(bad / "sim"), "--n-particles", "2000000000"],
        ),  # fmt: skip
    ]
    for name, argv in cases:
        t0 = time.monotonic()
        rc, out = run(argv, timeout=300)
        dt = time.monotonic() - t0
        if "Traceback" in out:
            outcome = "traceback"
        elif name.startswith("ingest") and rc != 0 and "failed:" in out:
            outcome = "clean error"  # per-file failures are listed, then the summary line
        else:
            outcome = "clean error" if is_clean_error(rc, out) else "accepted"
        last = out.strip().splitlines()[-1] if out.strip() else ""
        record("input", name, outcome, f"{dt:.1f}s {last}")
    assert state(fx["sh8"])["ok"]


# ----- main --------------------------------------------------------------------------------------


def summary() -> dict:
    by = Counter(r["outcome"] for r in results)
    faults = [r for r in results if r["category"] in ("kill", "race", "disk")]
    return {
        "cases": len(results),
        "clean_errors": by["clean error"],
        "faults_survived": sum(r["outcome"] in ("survived", "clean error") for r in faults),
        "faults": len(faults),
        "data_lost": by["data lost"],
        "tracebacks": by["traceback"],
        "accepted_bad_input": by["accepted"],
        "skipped": by["skipped"],
        "by_category": {
            c: dict(Counter(r["outcome"] for r in results if r["category"] == c))
            for c in dict.fromkeys(r["category"] for r in results)
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="random offsets per kill/race case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/rho-fault-battery", help="scratch directory")
    ap.add_argument("--only", default="kill,race,disk,input", help="categories to run")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--disk-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if args.disk_child:
        disk_child(Path(args.disk_child), rng, args.repeats)
        Path(args.json).write_text(json.dumps({"results": results}, indent=1))
        return 0
    t0 = time.monotonic()
    fx = setup(Path(args.work))
    only = set(args.only.split(","))
    if "input" in only:
        input_cases(fx)
    if "kill" in only:
        kill_cases(fx, rng, args.repeats)
    if "race" in only:
        race_cases(fx, rng, args.repeats)
    if "disk" in only:
        disk_cases(fx, rng, args.repeats)
    s = summary()
    s["minutes"] = round((time.monotonic() - t0) / 60, 1)
    print("\n" + json.dumps(s, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": s, "results": results}, indent=1))
    return 1 if s["data_lost"] or s["tracebacks"] or s["accepted_bad_input"] else 0


if __name__ == "__main__":
    sys.exit(main())

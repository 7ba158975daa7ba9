"""Bonsai benchmarks: snapshot read + render throughput against numpy.fromfile, peak memory, and
the built-in N-body engine's time per step against N.

    .venv/bin/python benchmarks/bonsai.py [--n 10000000] [--image-size 128]
        [--engine-n 500,1000,2000,4000] [--threads 1] [--repeat 3] [--rebound] [--json FILE]
        [--keep DIR]

Rows (all on a synthetic tipsy V2 snapshot of ``--n`` particles, 70 % dark matter, page cache
warm, best of ``--repeat``):
- ``numpy.fromfile``: the whole file as bytes — the I/O reference (particles/s = N / time).
- ``read``: :meth:`TipsyFile.iter_chunks` over every particle (positions, masses, IDs, components).
- ``read+render (fixed centre)``: one streaming pass, CIC, ``image_size``², stars.
- ``read+render (COM centre)``: the default: a centre-of-mass pass, then the deposit pass.
- ``read+render gaussian``: the Gaussian kernel (sigma 1 px, 7x7 stencil).
Each row gives particles/s and the ratio to ``numpy.fromfile`` (target >= 30 % for read+render),
and the tracemalloc peak of Python/numpy allocations during the call (the memory bound: it
does not grow with N beyond one chunk). ``engine N=...`` rows: seconds per KDK step of the
built-in engine (direct summation, float64 on CPU, one force evaluation per step); with
``--rebound``, the same for REBOUND's ``basic`` (O(N^2), C) and ``tree`` gravity.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rho_core.data.particles import open_snapshot  # noqa: E402
from rho_core.data.render import RenderConfig, render_snapshot  # noqa: E402
from rho_core.data.tipsy import DARK_V2, HEADER_DTYPE, STAR_V2  # noqa: E402


def write_synthetic(path: Path, n: int, chunk: int = 1 << 20, seed: int = 0) -> None:
    """A V2 tipsy file of ``n`` particles (two Plummer-ish blobs), written chunk by chunk."""
    rng = np.random.default_rng(seed)
    ndark = int(0.7 * n)
    nstar = n - ndark
    h = np.zeros(1, HEADER_DTYPE)
    h["time"], h["nbodies"], h["ndim"], h["ndark"], h["nstar"], h["version"] = (
        3.0,
        n,
        3,
        ndark,
        nstar,
        2,
    )
    with open(path, "wb") as f:
        f.write(h.tobytes())
        for dtype, count, id0 in ((DARK_V2, ndark, 3 * 10**18), (STAR_V2, nstar, 0)):
            for a in range(0, count, chunk):
                k = min(chunk, count - a)
                rec = np.zeros(k, dtype)
                centre = np.where(rng.random(k) < 0.5, -15.0, 15.0)[:, None] * [1, 0.3, 0]
                scale = 20.0 if dtype is DARK_V2 else 4.0
                rec["pos"] = rng.standard_t(4, (k, 3)) * scale + centre
                rec["vel"] = rng.normal(0, 1, (k, 3))
                rec["mass"] = 1e-5
                rec["id"] = id0 + a + np.arange(k, dtype=np.uint64)
                f.write(rec.tobytes())


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bench_io(path: Path, n: int, image_size: int, repeat: int) -> list[dict]:
    rows = []
    np.fromfile(path, dtype=np.uint8)  # warm the page cache
    t_ref, _ = best_of(lambda: np.fromfile(path, dtype=np.uint8), repeat)
    ref_rate = n / t_ref
    rows.append(
        {
            "name": "numpy.fromfile",
            "seconds": t_ref,
            "particles_per_s": ref_rate,
            "vs_fromfile": 1.0,
            "peak_mib": os.path.getsize(path) / 2**20,
        }
    )
    snap = open_snapshot(path)

    def read_all():
        k = 0
        for c in snap.iter_chunks(velocities=False):
            k += len(c)
        assert k == n

    fixed = RenderConfig(image_size=image_size, fov=120.0, center=(0.0, 0.0, 0.0))
    com = RenderConfig(image_size=image_size, fov=120.0)
    gauss = RenderConfig(
        image_size=image_size, fov=120.0, center=(0.0, 0.0, 0.0), kernel="gaussian"
    )
    cases = [
        ("read", read_all),
        ("read+render (fixed centre)", lambda: render_snapshot(snap, fixed)),
        ("read+render (COM centre)", lambda: render_snapshot(snap, com)),
        ("read+render gaussian", lambda: render_snapshot(snap, gauss)),
    ]
    for name, fn in cases:
        reps = 1 if "gaussian" in name else repeat
        t, _ = best_of(fn, reps)
        peak = traced_peak(fn) if "gaussian" not in name else float("nan")
        rows.append(
            {
                "name": name,
                "seconds": t,
                "particles_per_s": n / t,
                "vs_fromfile": (n / t) / ref_rate,
                "peak_mib": peak / 2**20,
            }
        )
    return rows


def bench_engine(ns: list[int], threads: int | None, steps: int = 5) -> list[dict]:
    import torch

    from rho_core.sim.initial_conditions import MergerConfig, make_merger
    from rho_core.sim.nbody import accelerations

    if threads:
        torch.set_num_threads(threads)
    rows = []
    for n in ns:
        ic = make_merger(MergerConfig(n_particles=n))
        x = torch.tensor(ic.pos)
        v = torch.tensor(ic.vel)
        m = torch.tensor(ic.mass)
        acc = [accelerations(x, m, 0.5)]

        def step(x=x, v=v, m=m, acc=acc, dt=1 / 64):
            # one KDK step as in run_nbody: the closing kick's force is reused by the next step
            v.add_(acc[0], alpha=dt / 2)
            x.add_(v, alpha=dt)
            acc[0] = accelerations(x, m, 0.5)
            v.add_(acc[0], alpha=dt / 2)

        step()
        t, _ = best_of(lambda step=step: [step() for _ in range(steps)], 2)
        rows.append(
            {
                "name": f"engine N={n}",
                "seconds": t / steps,
                "particles_per_s": float("nan"),
                "vs_fromfile": float("nan"),
                "peak_mib": float("nan"),
                "note": f"one force evaluation per step; {torch.get_num_threads()} threads",
            }
        )
    return rows


def bench_rebound(ns: list[int], steps: int = 10) -> list[dict]:
    """Optional: REBOUND (``pip install rebound``; not a project dependency) on the same ICs,
    leapfrog, softening 0.5, dt 1/64, with its O(N^2) ``basic`` and its ``tree`` gravity."""
    try:
        import rebound
    except ImportError:
        return [
            {
                "name": "rebound",
                "seconds": float("nan"),
                "particles_per_s": float("nan"),
                "vs_fromfile": float("nan"),
                "peak_mib": float("nan"),
                "note": "rebound not installed (optional)",
            }
        ]
    from rho_core.sim.initial_conditions import MergerConfig, make_merger

    rows = []
    for n in ns:
        ic = make_merger(MergerConfig(n_particles=n))
        for gravity in ("basic", "tree"):
            sim = rebound.Simulation()
            sim.G, sim.softening, sim.dt = 1.0, 0.5, 1 / 64
            sim.integrator, sim.gravity = "leapfrog", gravity
            if gravity == "tree":
                sim.root_size = 2000.0
                sim.N_root_x = sim.N_root_y = sim.N_root_z = 1
                sim.opening_angle2 = 0.4**2
            for p, v, m in zip(ic.pos, ic.vel, ic.mass, strict=True):
                sim.add(m=m, x=p[0], y=p[1], z=p[2], vx=v[0], vy=v[1], vz=v[2])
            sim.steps(1)
            t0 = time.perf_counter()
            sim.steps(steps)
            rows.append(
                {
                    "name": f"rebound {gravity} N={n}",
                    "seconds": (time.perf_counter() - t0) / steps,
                    "particles_per_s": float("nan"),
                    "vs_fromfile": float("nan"),
                    "peak_mib": float("nan"),
                    "note": f"rebound {rebound.__version__}",
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="particles in the snapshot")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--engine-n", default="500,1000,2000,4000")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the engine")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--rebound",
        action="store_true",
        help="also time REBOUND (optional package) on the same initial conditions",
    )
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    ap.add_argument("--keep", default=None, help="write the snapshot here and keep it")
    args = ap.parse_args(argv)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rho-bonsai-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "synthetic_00003.0000"
    try:
        if not path.exists():
            t0 = time.perf_counter()
            write_synthetic(path, args.n)
            print(
                f"wrote {path} ({os.path.getsize(path) / 2**20:.0f} MiB) in "
                f"{time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
        rows = bench_io(path, args.n, args.image_size, args.repeat)
        engine_ns = [int(v) for v in args.engine_n.split(",") if v]
        rows += bench_engine(engine_ns, args.threads)
        if args.rebound:
            rows += bench_rebound(engine_ns)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{'benchmark':32s} {'seconds':>10s} {'particles/s':>14s} {'vs fromfile':>12s} "
        f"{'peak MiB':>9s}"
    )
    for r in rows:
        print(
            f"{r['name']:32s} {r['seconds']:10.4f} {r['particles_per_s']:14.3e} "
            f"{r['vs_fromfile']:12.1%} {r['peak_mib']:9.1f}"
        )
    print(
        f"N = {args.n}, image {args.image_size}^2; process max RSS {maxrss:.0f} MiB "
        "(includes the page-cache-backed fromfile buffer)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"n": args.n, "rows": rows, "max_rss_mib": maxrss}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

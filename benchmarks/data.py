"""Data benchmarks: generation volumes/s (serial vs Dask) and store write/read MB/s vs raw numpy.

    .venv/bin/python benchmarks/data.py [--quick] [--workers 2] [--json FILE]

Rows:
- ``generate sh SIZE³ serial|dask(N)``: spherical-harmonic volumes per second (real convention).
- ``store write``: ``StoreWriter.append`` in chunk-sized batches vs ``numpy.save`` of the same
  array (both to the same disk, fsync not forced: page cache included, as in practice).
- ``read train-order``: random batches of ``--batch`` indices covering one epoch (a random
  permutation, as a shuffled DataLoader draws them) through ``StoreDataset.get_batch``
  (normalisation off) — cold (cache disabled: every batch decodes the chunks it touches) and warm
  (default chunk cache, second epoch) — vs the same batches from ``numpy.load(mmap_mode="r")``.
- ``read sequential``: whole store via the dask view vs ``numpy.load`` of the whole file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rho_core.data.dataset import StoreDataset  # noqa: E402
from rho_core.data.normalization import Normalizer  # noqa: E402
from rho_core.data.spherical_harmonics import generate_spherical_harmonics, lm_pairs  # noqa: E402
from rho_core.data.store import create_store, open_store  # noqa: E402

REPEAT = 9
"""Timings are the best of REPEAT runs: the machine is shared, the minimum is the least noisy."""


CLOCK = time.process_time
"""I/O timings use the process CPU time (all threads) by default: on a shared, oversubscribed
machine wall time mostly measures the neighbours; ``--clock wall`` switches to wall time."""


def _timeit(fn, repeat: int = 1, clock=None) -> float:
    clock = clock or CLOCK
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def bench_generation(tmp: Path, size: int, l_max: int, address: str, workers: int) -> list:
    rows = []
    n = len(lm_pairs(l_max))
    for label, kw in (("serial", {}), (f"dask({workers})", {"scheduler_address": address})):
        out = tmp / f"gen_{size}_{label}.zarr"
        t = _timeit(
            lambda out=out, kw=kw: generate_spherical_harmonics(
                out, size=size, l_max=l_max, mode="w", **kw
            ),
            clock=time.perf_counter,  # Dask work runs in other processes: wall time
        )
        rows.append(
            {
                "bench": f"generate sh {size}^3 l_max={l_max} {label}",
                "volumes": n,
                "seconds": t,
                "volumes_per_s": n / t,
            }
        )
    return rows


def _paired(store_fn, raw_fn, repeat: int = REPEAT) -> tuple[list[float], list[float]]:
    """Times of ``store_fn`` and ``raw_fn`` run alternately (shared-machine noise hits both
    alike)."""
    ts, tr = [], []
    for _ in range(repeat):
        ts.append(_timeit(store_fn))
        tr.append(_timeit(raw_fn))
    return ts, tr


def _row(bench: str, mb: float, t_store: list[float], t_raw: list[float]) -> dict:
    """MB/s from median times; ``ratio`` = median over pairs of t_raw / t_store."""
    ts, tr = np.asarray(t_store), np.asarray(t_raw)
    return {
        "bench": bench,
        "MB": mb,
        "store_MB_s": mb / float(np.median(ts)),
        "raw_MB_s": mb / float(np.median(tr)),
        "ratio": float(np.median(tr / ts)),
    }


def _epoch(get, batches) -> None:
    """One epoch of batches, each dropped before the next (as a training loop does)."""
    for b in batches:
        get(b)


def bench_io(tmp: Path, n: int, size: int, batch: int, spc: int | None, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, 1, size, size, size)).astype(np.float32)
    params = rng.standard_normal((n, 2))
    mb = data.nbytes / 2**20
    store = tmp / "io.zarr"
    raw = tmp / "io.npy"
    rows = []

    def write_store():
        # remove outside the timing (mode "w" would time the rmtree of the previous run)
        shutil.rmtree(store, ignore_errors=True)
        t0 = CLOCK()
        with create_store(
            store,
            kind="bench",
            spatial_dims=3,
            param_names=["a", "b"],
            field_shape=data.shape[1:],
            mode="w",
            samples_per_chunk=spc,
        ) as w:
            k = w.samples_per_chunk * max(1, 64 // w.samples_per_chunk)
            for i in range(0, n, k):
                w.append(data[i : i + k], params[i : i + k])
        return CLOCK() - t0

    tw, trw = [], []
    for _ in range(REPEAT):
        tw.append(write_store())
        trw.append(_timeit(lambda: np.save(raw, data)))
    spc_used = open_store(store).samples_per_chunk
    rows.append(_row(f"store write {n}x{size}^3 (spc={spc_used})", mb, tw, trw))

    order = rng.permutation(n)
    batches = [order[i : i + batch] for i in range(0, n, batch)]

    def read_raw():
        arr = np.load(raw, mmap_mode="r")
        for b in batches:
            np.asarray(arr[np.sort(b)])

    ident = Normalizer.identity()
    cold = StoreDataset(store, normalizer=ident, cache_bytes=0)
    rows.append(
        _row(
            f"read train-order batch={batch} cold (no cache)",
            mb,
            *_paired(lambda: _epoch(cold.get_batch, batches), read_raw),
        )
    )

    firsts, raws = [], []
    for _ in range(REPEAT):
        fresh = StoreDataset(store, normalizer=ident)
        firsts.append(_timeit(lambda fresh=fresh: _epoch(fresh.get_batch, batches)))
        raws.append(_timeit(read_raw))
    rows.append(
        _row(
            f"read train-order batch={batch} 1st epoch (cache)",
            mb,
            np.median(firsts),
            np.median(raws),
        )
    )
    warm = StoreDataset(store, normalizer=ident)
    _epoch(warm.get_batch, batches)
    rows.append(
        _row(
            f"read train-order batch={batch} later epochs (cache)",
            mb,
            *_paired(lambda: _epoch(warm.get_batch, batches), read_raw),
        )
    )
    s = open_store(store)
    rows.append(
        _row(
            "read sequential (dask view vs np.load)",
            mb,
            *_paired(lambda: s.to_dask().compute(), lambda: np.load(raw)),
        )
    )
    shutil.rmtree(store, ignore_errors=True)
    raw.unlink(missing_ok=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers (default 2)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--samples-per-chunk", type=int, default=None)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="I/O timing clock")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    tmp = Path(tempfile.mkdtemp(prefix="rho-bench-data-", dir=args.dir))
    rows: list[dict] = []
    from dask.distributed import LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    t_cluster = time.perf_counter() - t0
    rows.append({"bench": f"dask LocalCluster({args.workers}) start", "seconds": t_cluster})
    try:
        addr = cluster.scheduler_address
        if args.quick:
            rows += bench_generation(tmp, 32, 4, addr, args.workers)
        else:
            rows += bench_generation(tmp, 32, 8, addr, args.workers)
            rows += bench_generation(tmp, 128, 4, addr, args.workers)
        cluster.close()  # idle workers would steal CPU from the I/O timings
        if args.quick:
            rows += bench_io(tmp, 128, 32, args.batch, args.samples_per_chunk)
        else:
            rows += bench_io(tmp, 512, 32, args.batch, args.samples_per_chunk)
            rows += bench_io(tmp, 24, 128, args.batch, args.samples_per_chunk)
    finally:
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"I/O timings: {args.clock} clock, median of {REPEAT} alternating store/raw runs; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'benchmark':<52} {'result':>44}")
    for r in rows:
        if "volumes_per_s" not in r and "MB" not in r:
            res = f"{r['seconds']:.2f} s"
        elif "volumes_per_s" in r:
            res = f"{r['volumes_per_s']:9.1f} vol/s  ({r['volumes']} in {r['seconds']:.2f} s)"
        else:
            res = (
                f"store {r['store_MB_s']:8.0f} MB/s  raw {r['raw_MB_s']:8.0f} MB/s  "
                f"{100 * r['ratio']:5.0f} %"
            )
        print(f"{r['bench']:<52} {res:>44}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

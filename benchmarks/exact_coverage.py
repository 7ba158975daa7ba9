"""Coverage of the *exact* GRF posterior on many fields of a store (issue 17).

The inference benchmark scores a model on 100 held-out fields; its coverage target (68 / 95 %
intervals within ± 5 % of nominal) has a binomial SE of ≈ 0.047 on 100 fields. This computes the
exact posterior's coverage (flat prior, ``benchmarks/likelihood.py``'s ``exact_moments`` on a
41 × 41 whitened grid, the same Gaussian PIT) on ``--fields`` random rows and on the 100 rows the
inference benchmark picks, to tell a calibrated posterior from a lucky or unlucky field set.

    python benchmarks/exact_coverage.py --data data/grf/heldout64 --fields 1000 [--json F]

≈ 0.3 s per field on one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import likelihood as lk  # noqa: E402

from rho_core.data.store import open_store  # noqa: E402
from rho_core.inference import coverage  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="GRF store with amplitude, spectral_index")
    ap.add_argument("--fields", type=int, default=1000, help="random rows to score")
    ap.add_argument("--benchmark-fields", type=int, default=100,
                    help="the inference benchmark's --model-infer-fields")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    st = open_store(args.data)
    if list(st.param_names) != list(lk.WhitenedGrid.names):
        raise SystemExit(f"{args.data}: expected parameters {list(lk.WhitenedGrid.names)}")
    n = min(args.fields, len(st.params))
    rows = np.random.default_rng(args.seed).choice(len(st.params), n, replace=False)
    picked = set(lk._spread_indices(st.params, args.benchmark_fields).tolist())
    random_set = set(rows.tolist())
    pits = {"random": {k: [] for k in lk.WhitenedGrid.names}}
    pits["benchmark"] = {k: [] for k in lk.WhitenedGrid.names}
    t0 = time.perf_counter()
    todo = sorted(random_set | picked)
    for done, i in enumerate(todo, 1):
        field, row = st.read(int(i))
        f = field[0].astype(np.float64)
        exact = lk.exact_moments(f, lk.spectrum_fit(f))
        for j, k in enumerate(lk.WhitenedGrid.names):
            p = lk._gauss_pit(float(row[j]), exact[k])
            if i in random_set:
                pits["random"][k].append(p)
            if i in picked:
                pits["benchmark"][k].append(p)
        if done % 100 == 0:
            print(f"  {done}/{len(todo)} fields, {time.perf_counter() - t0:.0f} s", flush=True)
    out = {
        "store": args.data,
        "seconds": time.perf_counter() - t0,
        "random_fields": n,
        "benchmark_fields": len(picked),
        "coverage": {s: {k: coverage(v) for k, v in d.items()} for s, d in pits.items()},
        "binomial_se_68": {
            s: float(np.sqrt(0.68 * 0.32 / m))
            for s, m in (("random", n), ("benchmark", len(picked)))
        },  # fmt: skip
    }
    print(f"{'fields':>22} {'parameter':>15} {'68 %':>6} {'95 %':>6}")
    for s, d in out["coverage"].items():
        for k, c in d.items():
            label = f"{s} ({n if s == 'random' else len(picked)})"
            print(f"{label:>22} {k:>15} {c[0.68]:6.3f} {c[0.95]:6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()

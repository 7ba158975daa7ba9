"""Grid recipes of ``rho infer`` against the exact posterior, with the *exact* GRF likelihood.

The model is left out on purpose: log p(x | A, n) is the closed-form Gaussian-random-field
log-density (``rho_core.data.random_fields.grf_log_prob``'s formula, vectorised over nodes), so
what is measured is only the grid recipe — a first tensor pass over the training box, then
zoom passes (tensor in θ, or ``--whiten``: along the posterior's principal axes) — run by
:func:`rho_core.inference.refine_posterior`, the code ``rho infer`` and the pipeline run.

Per field (``--fields`` 64² fields, (A, n) uniform in the held-out box A ∈ [0.5, 2],
n ∈ [−2.25, −1.25]): the recipe's posterior mean/std and the PIT of the true values, against
a 241 × 241 grid posterior (A within ×[0.4, 1.6] of the recipe's mean, n within ± 0.3).
Printed per recipe: means within 1 exact σ, median σ ratio, σ within 25 %, coverage of the
68/95 % intervals (the exact posterior's own coverage beside it).

    python benchmarks/inference_grids.py --fields 100 [--json out.json]
    python benchmarks/inference_grids.py --recipe tensor:1:5:15 --recipe whiten:2:5:15

A recipe is ``KIND:ZOOM:WIDTH:NODES[:FIT]``, KIND ``tensor`` or ``whiten``, FIT ``grid``
(default) or ``gaussian``. Cost: a few seconds per recipe and 100 fields on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rho_core.data.random_fields import gaussian_field, kappa_norm  # noqa: E402
from rho_core.errors import ConfigError  # noqa: E402
from rho_core.inference import (  # noqa: E402
    compare_posteriors,
    coverage,
    grid_posterior,
    refine_posterior,
)

NAMES = ("amplitude", "spectral_index")
BOX = ((0.5, 2.0), (-2.5, -1.0))  # the training box of the GRF recipe
HELD_OUT = ((0.5, 2.0), (-2.25, -1.25))
DEFAULT_RECIPES = (
    "tensor:1:5:15",
    "tensor:1:4:25",
    "whiten:1:5:15",
    "whiten:2:5:15",
    "whiten:2:5:9",
    "whiten:2:3:7:gaussian",
)


class ExactGRF:
    """log p(x | A, n) of one 2-D field at many nodes: −½ Σ_κ≠0 [|F|²/(N² A κ^n) + log A +
    n log κ] (constants dropped; the same as ``grf_log_prob`` up to a constant); −∞ for A ≤ 0."""

    def __init__(self, field: np.ndarray) -> None:
        n = field.shape[-1]
        k = kappa_norm(n, 2).reshape(-1)
        nz = k > 0
        self.logk = np.log(k[nz])
        self.power = np.abs(np.fft.fft2(field)).reshape(-1)[nz] ** 2
        self.m = n * n

    def __call__(self, points: np.ndarray, k: int = 0) -> np.ndarray:
        a, idx = points[:, 0], points[:, 1]
        uniq, inv = np.unique(idx, return_inverse=True)  # Σ depends on n only
        s = (np.exp(-np.outer(uniq, self.logk)) @ self.power)[inv.reshape(-1)]
        safe = np.where(a > 0, a, 1.0)
        out = -0.5 * (s / (self.m * safe) + (self.m - 1) * np.log(safe) + idx * self.logk.sum())
        return np.where(a > 0, out, -np.inf)


def parse_recipe(spec: str) -> dict:
    parts = spec.split(":")
    if len(parts) not in (4, 5) or parts[0] not in ("tensor", "whiten"):
        raise SystemExit(f"recipe {spec!r}: use KIND:ZOOM:WIDTH:NODES[:FIT], KIND tensor|whiten")
    return {
        "whiten": parts[0] == "whiten",
        "zoom": int(parts[1]),
        "width": float(parts[2]),
        "nodes": int(parts[3]),
        "fit": parts[4] if len(parts) == 5 else "grid",
    }


def run(recipe: str, fields: int, first: int, seed: int) -> dict:
    opts = parse_recipe(recipe)
    rng = np.random.default_rng(seed)
    rec = {k: {w: [] for w in ("m", "s", "em", "es", "pit", "pit_ex")} for k in NAMES}
    nodes, failed, errors = 0, 0, []
    t0 = time.perf_counter()
    for _ in range(fields):
        truth = [rng.uniform(*HELD_OUT[0]), rng.uniform(*HELD_OUT[1])]
        ll = ExactGRF(gaussian_field(64, 2, truth[0], truth[1], rng))
        axes = [np.linspace(*BOX[0], first), np.linspace(*BOX[1], first)]
        try:
            passes = refine_posterior(NAMES, axes, ll, None, BOX, **opts)
        except ConfigError as exc:  # e.g. a zoom with no finite node: the recipe failed here
            errors.append(str(exc))
            continue
        nodes = sum(p.points.shape[0] for p in passes)
        failed += bool(passes[-1].failed)
        src = passes[-1].summary_source
        a0, n0 = max(src.mean(0), 0.05), src.mean(1)
        fine = [np.linspace(0.4 * a0, 1.6 * a0, 241), np.linspace(n0 - 0.3, n0 + 0.3, 241)]
        pts = np.stack([x.reshape(-1) for x in np.meshgrid(*fine, indexing="ij")], 1)
        ex = grid_posterior(NAMES, fine, ll(pts).reshape(241, 241))
        for i, k in enumerate(NAMES):
            r = rec[k]
            r["m"].append(src.mean(i))
            r["s"].append(src.std(i))
            r["em"].append(ex.mean(i))
            r["es"].append(ex.std(i))
            r["pit"].append(src.pit(i, truth[i]))
            r["pit_ex"].append(ex.pit(i, truth[i]))
    out = {"recipe": recipe, **opts, "nodes": nodes, "fit_failures": failed, "fields": fields,
           "errors": errors, "seconds": time.perf_counter() - t0}  # fmt: skip
    for k in NAMES:
        r = rec[k]
        out[k] = {
            **compare_posteriors(r["m"], r["s"], r["em"], r["es"]),
            "coverage": coverage(r["pit"]),
            "exact_coverage": coverage(r["pit_ex"]),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fields", type=int, default=100)
    ap.add_argument("--first", type=int, default=15, help="nodes per axis of the first pass")
    ap.add_argument("--recipe", action="append", help="KIND:ZOOM:WIDTH:NODES[:FIT] (repeat)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = [run(r, args.fields, args.first, args.seed) for r in args.recipe or DEFAULT_RECIPES]
    print(f"{args.fields} fields, first pass {args.first}² over the box; exact GRF likelihood")
    print(f"{'recipe':<24}{'nodes':>6}  {'within 1σ':>10}  {'σ ratio':>11}  {'σ ±25 %':>10}  "
          f"{'cov A 68/95':>12}  {'cov n 68/95':>12}  {'exact A / n':>20}")  # fmt: skip
    for r in rows:
        a, n = r["amplitude"], r["spectral_index"]
        print(
            f"{r['recipe']:<24}{r['nodes']:>6}  "
            f"{a['mean_within_1sigma']:>4.2f}/{n['mean_within_1sigma']:<4.2f}  "
            f"{a['std_ratio_median']:>5.2f}/{n['std_ratio_median']:<5.2f}  "
            f"{a['std_within_25pct']:>4.2f}/{n['std_within_25pct']:<4.2f}  "
            f"{a['coverage'][0.68]:>5.2f}/{a['coverage'][0.95]:<5.2f}  "
            f"{n['coverage'][0.68]:>5.2f}/{n['coverage'][0.95]:<5.2f}  "
            f"{a['exact_coverage'][0.68]:.2f}/{a['exact_coverage'][0.95]:.2f} "
            f"{n['exact_coverage'][0.68]:.2f}/{n['exact_coverage'][0.95]:.2f}"
            + (f"  ({r['fit_failures']} fit failures)" if r["fit_failures"] else "")
            + (f"  ({len(r['errors'])} fields failed)" if r["errors"] else "")
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

"""A likelihood temperature fitted on separate fields, scored on the others (issue 17).

Reads the per-field records of ``benchmarks/likelihood.py --sections trained-infer`` (``--json``
files or logs) and cross-fits :func:`rho_core.calibration.fit_temperature`: the fields are split
into ``--folds`` folds (by position, interleaved); each fold's posteriors are tempered with the τ
fitted on the *other* folds' standardised errors (model mean and std against the true (A, n) —
what a user has for simulations, no exact posterior), so no field is scored with a τ its own
error chose. A Gaussian posterior under a flat prior keeps its mean and has its std × 1/√τ, so the
tempered PIT is Φ(z √τ). Printed per parameter, untempered and tempered: means within 1 exact σ,
σ ratio to the exact posterior (median, within 25 %), coverage of the 68 / 95 % intervals,
beside the exact posterior's coverage on the same fields.

    python benchmarks/calibrate_infer.py data/lk17/s12-bf16-ode-head.log \\
        data/lk17/s13-bf16-ode-head-b.log [--folds 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infer_width import NAMES, load_records  # noqa: E402

from rho_core.calibration import fit_temperature, standardized_errors  # noqa: E402
from rho_core.inference import compare_posteriors, coverage  # noqa: E402


def columns(recs: list[dict], who: str) -> dict[str, np.ndarray]:
    """``{parameter: (fields, 2) of (mean, std)}`` of ``who`` (model / exact / baseline)."""
    return {k: np.array([r[k][who] for r in recs], dtype=np.float64) for k in NAMES}


def cross_fit(recs: list[dict], folds: int) -> tuple[np.ndarray, list[dict]]:
    """Per field the τ fitted on the other folds, and each fold's fit."""
    model = columns(recs, "model")
    truth = {k: np.array([r["truth"][k] for r in recs]) for k in NAMES}
    z = np.stack([standardized_errors(truth[k], model[k][:, 0], model[k][:, 1]) for k in NAMES], 1)
    fold = np.arange(len(recs)) % folds
    tau = np.empty(len(recs))
    fits = []
    for f in range(folds):
        fit = fit_temperature(z[fold != f])
        tau[fold == f] = fit.temperature
        fits.append({"fold": f, "fields": int(np.sum(fold != f)), **fit.__dict__})
    return tau, fits


def score(recs: list[dict], tau: np.ndarray) -> dict:
    """Per parameter: model vs exact and coverage with the std × 1/√τ, exact coverage."""
    model, exact = columns(recs, "model"), columns(recs, "exact")
    out = {}
    for k in NAMES:
        t = np.array([r["truth"][k] for r in recs])
        s = model[k][:, 1] / np.sqrt(tau)
        pit = norm.cdf((t - model[k][:, 0]) / s)
        pit_ex = norm.cdf((t - exact[k][:, 0]) / exact[k][:, 1])
        out[k] = {
            "model_vs_exact": compare_posteriors(model[k][:, 0], s, exact[k][:, 0], exact[k][:, 1]),
            "coverage_model": coverage(pit),
            "coverage_exact": coverage(pit_ex),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="+", help="trained-infer --json files or run logs")
    ap.add_argument("--folds", type=int, default=2, help="cross-fitting folds (default 2)")
    ap.add_argument("--json", help="write the fits and scores here")
    args = ap.parse_args(argv)
    recs = load_records(args.records)
    if len(recs) < 2 * args.folds or args.folds < 2:
        raise SystemExit(f"need --folds ≥ 2 and ≥ 2 fields per fold; got {len(recs)} fields")
    tau, fits = cross_fit(recs, args.folds)
    rows = {"untempered": score(recs, np.ones(len(recs))), "cross-fitted τ": score(recs, tau)}
    print(f"{len(recs)} fields, {args.folds} folds")
    for f in fits:
        print(
            f"  τ for fold {f['fold']} from the other {f['fields']} fields: {f['temperature']:.3f}"
            f" (90 % {f['low']:.3f}–{f['high']:.3f})"
        )
    print(
        f"{'':16s}{'parameter':>15s} {'within 1σ':>9s} {'σ ratio':>8s} {'±25 %':>6s} "
        f"{'cov 68':>7s} {'cov 95':>7s} {'exact 68/95':>12s}"
    )
    for label, sc in rows.items():
        for k in NAMES:
            c, cm, ce = sc[k]["model_vs_exact"], sc[k]["coverage_model"], sc[k]["coverage_exact"]
            print(
                f"{label:16s}{k:>15s} {c['mean_within_1sigma']:9.2f} "
                f"{c['std_ratio_median']:8.2f} {c['std_within_25pct']:6.2f} "
                f"{cm[0.68]:7.2f} {cm[0.95]:7.2f} {ce[0.68]:6.2f}/{ce[0.95]:.2f}"
            )
    if args.json:
        doc = {"fields": len(recs), "folds": args.folds, "fits": fits, "scores": rows}
        Path(args.json).write_text(json.dumps(doc, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Score ``benchmarks/likelihood.py --sections trained-infer`` runs from their logs, merged.

A long inference run stopped by ``--max-minutes`` (or continued with ``--model-infer-skip``)
leaves one JSON record per field in its log (``  field I: {...}``). This reads the records of
every log given, drops repeated field indices (first wins), and prints the same summary as the
section: per parameter the model-vs-exact comparison (means within 1 exact σ, σ ratio, σ within
25 %), and the coverage of the model, the exact posterior and the power-spectrum baseline (PIT
from each Gaussian (mean, std)).

    python benchmarks/merge_infer_logs.py data/lk17/s9-infer-refine.log \\
        data/lk17/s9-infer-refine-b.log [--json merged.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rho_core.inference import compare_posteriors, coverage  # noqa: E402

RECORD = re.compile(r"\s*field \d+: (\{.*\})\s*$")


def read_records(paths: list[str]) -> list[dict]:
    seen, out = set(), []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            m = RECORD.match(line)
            if m:
                rec = json.loads(m.group(1))
                if rec["index"] not in seen:
                    seen.add(rec["index"])
                    out.append(rec)
    return out


NAMES = ("amplitude", "spectral_index")
PIT_KEYS = (("model", "model"), ("exact", "ex"), ("baseline", "bl"))


def summarise(recs: list[dict]) -> dict:
    """Per parameter: model/baseline vs exact, coverage of each, and the PITs (``pit_model``,
    ``pit_ex``, ``pit_bl``) of the true values under each method's Gaussian."""
    out = {"fields": len(recs), "s_per_field": float(np.mean([r["seconds"] for r in recs]))}
    for k in NAMES:
        cols = {w: [r[k][w] for r in recs] for w in ("model", "exact", "baseline")}
        pits = {
            w: [norm.cdf((r["truth"][k] - m) / s) for r, (m, s) in zip(recs, v, strict=True)]
            for w, v in cols.items()
        }
        m, e, b = (np.array(cols[w]) for w in ("model", "exact", "baseline"))
        out[k] = {
            "model_vs_exact": compare_posteriors(m[:, 0], m[:, 1], e[:, 0], e[:, 1]),
            "baseline_vs_exact": compare_posteriors(b[:, 0], b[:, 1], e[:, 0], e[:, 1]),
            **{f"coverage_{w}": coverage(p) for w, p in pits.items()},
            **{f"pit_{short}": pits[w] for w, short in PIT_KEYS},
        }
    return out


def show(s: dict) -> None:
    """Print one summary: per parameter model vs exact and the three coverages."""
    for k in NAMES:
        c = s[k]["model_vs_exact"]
        cov = {w: {lv: round(v, 2) for lv, v in s[k][f"coverage_{w}"].items()} for w, _ in PIT_KEYS}
        print(
            f"{k:>15}: within 1σ {c['mean_within_1sigma']:.2f}  σ ratio "
            f"{c['std_ratio_median']:.2f}  σ ±25 % {c['std_within_25pct']:.2f}  coverage "
            f"model {cov['model']}  exact {cov['exact']}  baseline {cov['baseline']}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--json")
    ap.add_argument("--plot", help="calibration (rank) figure of the merged fields, PNG")
    ap.add_argument("--method", default="ode", help="the likelihood method, for the plot legend")
    ap.add_argument(
        "--by",
        choices=NAMES,
        help="also summarise per true value of this parameter (e.g. amplitude: the fields at "
        "the training range's edges against those inside it)",
    )
    args = ap.parse_args()
    recs = read_records(args.logs)
    if not recs:
        raise SystemExit("no per-field records in " + ", ".join(args.logs))
    s = summarise(recs)
    print(f"{s['fields']} fields, {s['s_per_field']:.1f} s per field")
    show(s)
    if args.by:
        s["by"] = {}
        for v in sorted({r["truth"][args.by] for r in recs}):
            sub = summarise([r for r in recs if r["truth"][args.by] == v])
            print(f"{args.by} = {v:g}: {sub['fields']} fields")
            show(sub)
            s["by"][f"{v:g}"] = {k: w for k, w in sub.items() if k not in NAMES} | {
                k: {m: x for m, x in sub[k].items() if not m.startswith("pit_")} for k in NAMES
            }
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=2, default=float) + "\n")
    if args.plot:
        from likelihood import rank_plot  # noqa: E402  (benchmarks/likelihood.py)

        pits = {k: {w: s[k][f"pit_{w}"] for w in ("model", "ex", "bl")} for k in NAMES}
        rank_plot(pits, args.plot, f"{s['fields']} fields (merged logs)", args.method)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

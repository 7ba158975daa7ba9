"""Per-condition pass rates of one model over several scoring seeds (issue 13).

``benchmarks/quality_grf.py --seed S --json FILE`` scores one draw of K realisations per
condition; the one-point-PDF and worst-shell criteria of the bluest and reddest spectra sit at
their thresholds, so one draw moves the "all targets" count by about ± 2 conditions
(docs/results.md 6.2, session 16). This reads several such JSON files (same checkpoint, other
seeds) and prints, per condition, how many draws pass every target, with the range of the
W1 / floor ratio, the worst shell (σ) and the sample-std ratio, then the count per draw.

``--oracle FILE …`` (``quality_grf.py --oracle --seed S --json FILE`` runs: a perfect density
estimator scored the same way) adds, per condition, the perfect model's pass rate and the
one-sided binomial tail P(X ≤ passes) of the model's passes under the perfect model's rate
(estimated as (x + 1)/(m + 2) from its x of m draws): a small tail marks a miss that is the
model's, not the test's. The summary compares the mean count per draw with the perfect
model's.

    python benchmarks/merge_quality_seeds.py data/lk17/s15-log-quality.json \\
        data/lk17/s16-quality-seed1.json data/lk17/s16-quality-seed2.json [--json OUT] \\
        [--oracle data/lk18/oracle-seed0.json …]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def merge(runs: list[dict]) -> dict:
    """``{"conditions": [...], "per_run": [...]}`` from quality_grf JSON results.

    Each condition row: ``split``, ``amplitude``, ``spectral_index``, ``passes`` (draws passing
    every target), ``draws``, and ``[min, max]`` of ``pdf_w1_ratio``, ``pk_worst_sigma``,
    ``std_ratio``. ``per_run``: ``{"train": passes, "heldout": passes, "total": conditions}``.

    Raises:
        ValueError: a run without ``per_condition`` rows, or runs that score different
            condition sets (not the same benchmark).
    """
    keyed: list[dict] = []
    for i, run in enumerate(runs):
        rows = run.get("per_condition")
        if not rows:
            raise ValueError(f"run {i} has no per_condition rows (not a quality_grf JSON?)")
        keyed.append({(r["split"], r["amplitude"], r["spectral_index"]): r for r in rows})
    keys = list(keyed[0])
    for i, k in enumerate(keyed[1:], start=1):
        if set(k) != set(keys):
            raise ValueError(f"run {i} scores other conditions than run 0")
    conditions = []
    for key in keys:
        rows = [k[key] for k in keyed]
        row = {"split": key[0], "amplitude": key[1], "spectral_index": key[2]}
        row["passes"] = sum(bool(r["all_pass"]) for r in rows)
        row["draws"] = len(rows)
        for name in ("pdf_w1_ratio", "pk_worst_sigma", "std_ratio"):
            vals = [float(r[name]) for r in rows]
            row[name] = [min(vals), max(vals)]
        conditions.append(row)
    per_run = []
    for k in keyed:
        counts = {s: sum(bool(r["all_pass"]) for r in k.values() if r["split"] == s)
                  for s in ("train", "heldout")}  # fmt: skip
        per_run.append({**counts, "total": len(k)})
    return {"conditions": conditions, "per_run": per_run}


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(0, k + 1)))


def compare_with_oracle(model: dict, oracle: dict) -> dict:
    """Per condition of ``model`` (a :func:`merge` result): ``oracle_passes``, ``oracle_draws``,
    ``oracle_rate`` = (x + 1)/(m + 2) and ``tail`` = P(X ≤ passes | Binomial(draws,
    oracle_rate)); and ``{"model_mean", "oracle_mean", "oracle_expected"}`` counts per draw
    (``oracle_expected`` = Σ oracle_rate × 1, the smoothed expectation).

    Raises:
        ValueError: the two merges score different conditions.
    """
    key = lambda r: (r["split"], r["amplitude"], r["spectral_index"])  # noqa: E731
    ref = {key(r): r for r in oracle["conditions"]}
    if set(ref) != {key(r) for r in model["conditions"]}:
        raise ValueError("the oracle runs score other conditions than the model's")
    rows = []
    for r in model["conditions"]:
        o = ref[key(r)]
        rate = (o["passes"] + 1) / (o["draws"] + 2)
        tail = binomial_cdf(r["passes"], r["draws"], rate)
        rows.append({**r, "oracle_passes": o["passes"], "oracle_draws": o["draws"],
                     "oracle_rate": rate, "tail": tail})  # fmt: skip

    def mean_count(m: dict) -> float:
        return sum(x["train"] + x["heldout"] for x in m["per_run"]) / len(m["per_run"])

    return {
        "conditions": rows,
        "model_mean": mean_count(model),
        "oracle_mean": mean_count(oracle),
        "oracle_expected": sum(x["oracle_rate"] for x in rows),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="quality_grf.py --json files (same checkpoint)")
    ap.add_argument("--json", help="write the merged table here")
    ap.add_argument(
        "--oracle", nargs="+", default=[], help="quality_grf.py --oracle --json files to compare"
    )
    args = ap.parse_args(argv)
    try:
        out = merge([json.loads(Path(p).read_text()) for p in args.runs])
        if args.oracle:
            cmp = compare_with_oracle(
                out, merge([json.loads(Path(p).read_text()) for p in args.oracle])
            )
    except (OSError, ValueError, KeyError) as exc:
        print(f"merge_quality_seeds: {exc}", file=sys.stderr)
        return 2
    extra = " perfect model | tail |" if args.oracle else ""
    print("| split | A | n | pass | W1 / floor | worst σ | std ratio |" + extra)
    print("|---|---|---|---|---|---|---|" + ("---|---|" if args.oracle else ""))
    rows = cmp["conditions"] if args.oracle else out["conditions"]
    for r in rows:
        w, s, d = r["pdf_w1_ratio"], r["pk_worst_sigma"], r["std_ratio"]
        tail = (
            f" {r['oracle_passes']}/{r['oracle_draws']} | {r['tail']:.3f} |" if args.oracle else ""
        )
        print(f"| {r['split']} | {r['amplitude']:g} | {r['spectral_index']:g} | "
              f"{r['passes']}/{r['draws']} | {w[0]:.2f}–{w[1]:.2f} | {s[0]:.1f}–{s[1]:.1f} | "
              f"{d[0]:.3f}–{d[1]:.3f} |{tail}")  # fmt: skip
    counts = [r["train"] + r["heldout"] for r in out["per_run"]]
    total = out["per_run"][0]["total"]
    print(f"all targets per draw: {', '.join(map(str, counts))} of {total} "
          f"(mean {sum(counts) / len(counts):.1f})")  # fmt: skip
    if args.oracle:
        low = [r for r in cmp["conditions"] if r["tail"] <= 0.05]
        print(f"perfect model ({len(args.oracle)} draws): mean {cmp['oracle_mean']:.1f} of {total} "
              f"per draw; conditions where the model's passes are unlikely under its rate "
              f"(tail ≤ 0.05): {len(low)}"
              + "".join(f"\n  {r['split']} ({r['amplitude']:g}, {r['spectral_index']:g}) "
                        f"{r['passes']}/{r['draws']} vs {r['oracle_passes']}/{r['oracle_draws']},"
                        f" tail {r['tail']:.3f}" for r in low))  # fmt: skip
        out["oracle"] = cmp
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

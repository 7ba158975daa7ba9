"""Per-condition pass rates of one model over several scoring seeds (issue 13).

``benchmarks/quality_grf.py --seed S --json FILE`` scores one draw of K realisations per
condition; the one-point-PDF and worst-shell criteria of the bluest and reddest spectra sit at
their thresholds, so one draw moves the "all targets" count by about ± 2 conditions
(docs/results.md 6.2, session 16). This reads several such JSON files (same checkpoint, other
seeds) and prints, per condition, how many draws pass every target, with the range of the
W1 / floor ratio, the worst shell (σ) and the sample-std ratio, then the count per draw.

    python benchmarks/merge_quality_seeds.py data/lk17/s15-log-quality.json \\
        data/lk17/s16-quality-seed1.json data/lk17/s16-quality-seed2.json [--json OUT]
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="quality_grf.py --json files (same checkpoint)")
    ap.add_argument("--json", help="write the merged table here")
    args = ap.parse_args(argv)
    try:
        out = merge([json.loads(Path(p).read_text()) for p in args.runs])
    except (OSError, ValueError, KeyError) as exc:
        print(f"merge_quality_seeds: {exc}", file=sys.stderr)
        return 2
    print("| split | A | n | pass | W1 / floor | worst σ | std ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in out["conditions"]:
        w, s, d = r["pdf_w1_ratio"], r["pk_worst_sigma"], r["std_ratio"]
        print(f"| {r['split']} | {r['amplitude']:g} | {r['spectral_index']:g} | "
              f"{r['passes']}/{r['draws']} | {w[0]:.2f}–{w[1]:.2f} | {s[0]:.1f}–{s[1]:.1f} | "
              f"{d[0]:.3f}–{d[1]:.3f} |")  # fmt: skip
    counts = [r["train"] + r["heldout"] for r in out["per_run"]]
    total = out["per_run"][0]["total"]
    print(f"all targets per draw: {', '.join(map(str, counts))} of {total} "
          f"(mean {sum(counts) / len(counts):.1f})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

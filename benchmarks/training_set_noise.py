"""How far is a GRF training store's own spectrum from the truth, and how much of a trained
network's gain error does that explain? (issue 13 diagnostic; math in rho_core/sample_variance.py)

Per condition of the store (K realisations each), the empirical band power over the analytic one,
r = Σ|F|²/(K N^D ΣP), with its closed-form sampling σ = √(2ΣP²)/(√K ΣP), for |κ| bands
(default 1–9, 10–30, 31–∞ and the whole grid = the one-point variance). A model that learned
this store perfectly reproduces r, not 1 — the data floor of its sample quality.

``--gains FILE`` (a ``benchmarks/denoiser_error.py --json`` of a checkpoint trained on this
store) adds, for every row of that file whose condition is in the store, the *predicted* gain
over |κ| 10–30: the Wiener filter of the store's per-shell empirical spectrum against that of the
truth, at the row's ᾱ, in the store's normalised space — and compares it with the measured one
per group of K (correlation, rms of each, least-squares slope of measured on predicted). A
measured error well above the predicted one is the network's; one that tracks it is the data's.

    python benchmarks/training_set_noise.py --store data/grf/train64-wide \
        [--gains data/lk17/s17-ripple-wide-log.json] [--min-index -1.6] [--rows] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

BANDS = "1-9,10-30,31-inf"


def parse_bands(spec: str) -> list[tuple[str, float, float]]:
    """``"1-9,10-30,31-inf"`` → ``[(label, lo, hi), …]`` (integer shells, both edges included)."""
    out = []
    for part in spec.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            lo_v, hi_v = float(lo), float("inf") if hi in ("inf", "") else float(hi)
        except ValueError:
            lo_v = hi_v = None
        if not sep or lo_v is None or not hi_v >= lo_v:
            raise SystemExit(f"error: --bands wants LO-HI[,…] (e.g. {BANDS}), got {part!r}")
        out.append((part.strip(), lo_v, hi_v))
    return out


def store_conditions(path: str):
    """``(store, [((A, n), row indices), …])`` for a GRF store, conditions in store order."""
    from rho_core.data.store import open_store

    st = open_store(path)
    if list(st.param_names) != ["amplitude", "spectral_index"]:
        raise SystemExit(
            f"error: {path} has parameters {st.param_names}; this needs a Gaussian-random-field "
            "store (amplitude, spectral_index)"
        )
    if (st.provenance or {}).get("lognormal"):
        raise SystemExit(f"error: {path} holds log-normal fields; the closed forms are Gaussian")
    keys = np.round(np.asarray(st.params, dtype=np.float64), 12)
    conds, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    out = []
    for i in np.argsort(first):
        rows = np.flatnonzero(inverse.reshape(-1) == i)
        out.append(((float(conds[i, 0]), float(conds[i, 1])), rows))
    return st, out


def condition_table(st, conds, bands) -> list[dict]:
    """Per condition: ``{amplitude, spectral_index, k, bands: {label: {ratio, sigma, z}},
    shell_ratio}`` (shell_ratio: flat per-grid-point ratio, kept for the gain prediction)."""
    from rho_core.data.random_fields import spectrum_grid
    from rho_core.sample_variance import band_mask, band_power_ratio, shell_power_ratio

    size, dims = st.field_shape[1], len(st.field_shape) - 1
    masks = {lab: band_mask(size, dims, lo, min(hi, 10 * size)) for lab, lo, hi in bands}
    masks["all"] = band_mask(size, dims, 0, 10 * size)
    out = []
    for (amp, idx), rows in conds:
        fields, _ = st.read_batch(rows)
        power = spectrum_grid(size, dims, amp, idx)
        per = {}
        for lab, m in masks.items():
            r, s = band_power_ratio(fields, power, m)
            per[lab] = {"ratio": r, "sigma": s, "z": (r - 1) / s}
        out.append(
            {
                "amplitude": amp,
                "spectral_index": idx,
                "k": int(len(rows)),
                "bands": per,
                "shell_ratio": shell_power_ratio(fields, power),
            }
        )
    return out


def predicted_gains(st, table, gain_rows) -> list[dict]:
    """Rows of a denoiser_error JSON whose condition is in ``table``, each with ``predicted``
    (the data-floor gain over |κ| 10–30) and ``measured`` (its ``gain_10_30``)."""
    from rho_core.data.normalization import Normalizer
    from rho_core.data.random_fields import spectrum_grid
    from rho_core.sample_variance import band_mask, wiener_gain_slope

    if not st.normalization:
        raise SystemExit("error: the store has no normalization; run 'rho normalize' first")
    norm = Normalizer.from_dict(st.normalization)
    zero, one = (float(v) for v in norm.forward(np.array([0.0, 1.0])))
    size, dims = st.field_shape[1], len(st.field_shape) - 1
    band = band_mask(size, dims, 10, 30)
    by_cond = {(round(c["amplitude"], 9), round(c["spectral_index"], 9)): c for c in table}
    out = []
    for r in gain_rows:
        c = by_cond.get((round(r["amplitude"], 9), round(r["spectral_index"], 9)))
        if c is None:
            continue
        p = spectrum_grid(size, dims, c["amplitude"], c["spectral_index"]) * (one - zero) ** 2
        pred = wiener_gain_slope(p, c["shell_ratio"], float(r["abar"]), band)
        out.append(
            {
                "amplitude": c["amplitude"],
                "spectral_index": c["spectral_index"],
                "k": c["k"],
                "t": int(r["t"]),
                "predicted": pred,
                "measured": float(r["gain_10_30"]),
            }
        )
    return out


def gain_summary(rows: list[dict]) -> list[dict]:
    """Per K: ``{k, rows, rms_measured, rms_predicted, corr, slope, rms_unexplained}`` of the
    gain − 1 (slope: least squares of measured on predicted)."""
    out = []
    for k in sorted({r["k"] for r in rows}):
        m = np.array([r["measured"] - 1 for r in rows if r["k"] == k])
        p = np.array([r["predicted"] - 1 for r in rows if r["k"] == k])
        ok = m.size > 2 and p.std() > 0 and m.std() > 0
        out.append(
            {
                "k": k,
                "rows": int(m.size),
                "rms_measured": float(np.sqrt(np.mean(m**2))),
                "rms_predicted": float(np.sqrt(np.mean(p**2))),
                "corr": float(np.corrcoef(p, m)[0, 1]) if ok else float("nan"),
                "slope": float(np.dot(p, m) / np.dot(p, p)) if np.dot(p, p) > 0 else float("nan"),
                "rms_unexplained": float(np.sqrt(np.mean((m - p) ** 2))),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a Gaussian-random-field store")
    ap.add_argument("--bands", default=BANDS, help=f"|κ| bands LO-HI,… (default {BANDS})")
    ap.add_argument("--gains", help="a denoiser_error.py --json file of a model of this store")
    ap.add_argument(
        "--min-index",
        type=float,
        help="compare gains only where n ≥ this (the 10–30 band decides the blue spectra)",
    )
    ap.add_argument("--rows", action="store_true", help="print every gain row, not the summary")
    ap.add_argument("--json", help="write the tables here")
    args = ap.parse_args(argv)
    bands = parse_bands(args.bands)
    st, conds = store_conditions(args.store)
    table = condition_table(st, conds, bands)
    labels = [b[0] for b in bands] + ["all"]
    print(f"store {args.store}: {len(table)} conditions, {len(st)} fields")
    print("| A | n | K | " + " | ".join(f"r {lab} (z)" for lab in labels) + " |")
    print("|---|---|---|" + "---|" * len(labels))
    for c in table:
        cells = " | ".join(
            f"{c['bands'][lab]['ratio']:.4f} ({c['bands'][lab]['z']:+.1f})" for lab in labels
        )
        print(f"| {c['amplitude']:g} | {c['spectral_index']:g} | {c['k']} | {cells} |")
    print(
        "\n| K | conditions | " + " | ".join(f"rms r−1 {lab} (σ, rms z)" for lab in labels) + " |"
    )
    print("|---|---|" + "---|" * len(labels))
    for k in sorted({c["k"] for c in table}):
        group = [c for c in table if c["k"] == k]
        cells = []
        for lab in labels:
            d = np.array([c["bands"][lab]["ratio"] - 1 for c in group])
            z = np.array([c["bands"][lab]["z"] for c in group])
            sig = np.sqrt(np.mean([c["bands"][lab]["sigma"] ** 2 for c in group]))
            cells.append(f"{np.sqrt(np.mean(d**2)):.4f} ({sig:.4f}, {np.sqrt(np.mean(z**2)):.2f})")
        print(f"| {k} | {len(group)} | " + " | ".join(cells) + " |")
    doc: dict = {
        "store": args.store,
        "conditions": [{k: v for k, v in c.items() if k != "shell_ratio"} for c in table],
    }
    if args.gains:
        rows = json.loads(Path(args.gains).read_text())["rows"]
        pred = predicted_gains(st, table, rows)
        if args.min_index is not None:
            pred = [r for r in pred if r["spectral_index"] >= args.min_index]
        if not pred:
            raise SystemExit(f"error: no row of {args.gains} is a condition of {args.store}")
        if args.rows:
            print("\n| A | n | K | t | predicted gain 10–30 | measured |")
            print("|---|---|---|---|---|---|")
            for r in pred:
                print(
                    f"| {r['amplitude']:g} | {r['spectral_index']:g} | {r['k']} | {r['t']} | "
                    f"{r['predicted']:.4f} | {r['measured']:.4f} |"
                )
        summary = gain_summary(pred)
        print(
            "\n| K | rows | rms measured gain−1 | rms predicted (data floor) | corr | slope | "
            "rms unexplained |"
        )
        print("|---|---|---|---|---|---|---|")
        for s in summary:
            print(
                f"| {s['k']} | {s['rows']} | {s['rms_measured']:.4f} | {s['rms_predicted']:.4f} | "
                f"{s['corr']:.2f} | {s['slope']:.2f} | {s['rms_unexplained']:.4f} |"
            )
        doc["gains"] = pred
        doc["gain_summary"] = summary
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

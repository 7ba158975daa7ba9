"""Why is a trained model's posterior width off? Split the error of the fitted σ (issue 17).

Reads the per-field records of ``benchmarks/likelihood.py --sections trained-infer
--infer-fit gaussian`` (its ``--json`` or its logs, merged like ``merge_infer_logs.py``) and, for
every field, recomputes on the same whitened 3 × 3 grid (``WhitenedGrid`` of the field's
power-spectrum fit, ± ``--grid-width`` σ) the *exact* GRF log-likelihood at the nodes. Three
sources of error in the model's posterior σ (ratio to the exact posterior's σ on the fine 41² grid)
are then told apart:

``grid fit``
    the Gaussian fit applied to the exact node values: what the coarse grid itself costs;
``Hutchinson``
    the jackknife over the K shared probes (``log_l_probes``) of the fitted σ — the Monte-Carlo
    noise of the divergence estimate, after any control variate;
``model``
    the σ from the model's node values; and the rms of the node residual (model − exact, its
    mean over the nodes removed: a θ-independent offset does not move the posterior), in nats,
    beside the per-node probe noise of the same centred values.

A model whose σ scatter (log-sd across fields) is far above the grid's and the probes' has a
θ-dependence of log p that is wrong field by field: more probes or nodes will not help, a better
network will. Prints one table per parameter; ``--json`` writes the per-field rows.

    python benchmarks/infer_width.py data/lk17/s12-bf16-ode-head.log \\
        data/lk17/s13-bf16-ode-head-b.log --data data/grf/heldout64
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAMES = ("amplitude", "spectral_index")


def load_records(paths: list[str]) -> list[dict]:
    """Per-field records from ``--json`` files (``trained_infer.per_field``) or run logs."""
    from merge_infer_logs import read_records  # noqa: E402  (benchmarks/merge_infer_logs.py)

    out, seen, logs = [], set(), []
    for p in paths:
        if p.endswith(".json"):
            for r in json.loads(Path(p).read_text())["trained_infer"]["per_field"]:
                if r["index"] not in seen:
                    seen.add(r["index"])
                    out.append(r)
        else:
            logs.append(p)
    for r in read_records(logs) if logs else []:
        if r["index"] not in seen:
            seen.add(r["index"])
            out.append(r)
    return out


def _fit_std(grid_, values: np.ndarray) -> dict[str, float]:
    """Posterior std of (A, n) from the Gaussian fit of ``values`` on the grid; NaN when the
    fit fails (no maximum inside the grid)."""
    from likelihood import gaussian_fit_moments  # noqa: E402

    from rho_core.errors import ConfigError

    try:
        m = gaussian_fit_moments(grid_, values)
    except ConfigError:
        return dict.fromkeys(NAMES, math.nan)
    return {k: m[k][1] for k in NAMES}


def field_row(rec: dict, field: np.ndarray, grid: int, width: float) -> dict:
    """The three error sources for one field (module docstring)."""
    from likelihood import WhitenedGrid, exact_moments, spectrum_fit  # noqa: E402

    from rho_core.data.random_fields import grf_log_prob

    x = field[0].astype(np.float64)
    est = spectrum_fit(x)
    g = WhitenedGrid(est, grid, width)
    a, n = g.flat()
    exact_nodes = grf_log_prob(np.broadcast_to(x, (g.size, *x.shape)), a, n, dims=x.ndim)
    ll = np.asarray(rec["log_l"], dtype=np.float64)
    fine = exact_moments(x, est)
    fit_exact = _fit_std(g, exact_nodes)
    fit_model = _fit_std(g, ll)
    row = {"index": rec["index"], "truth": rec["truth"]}
    resid = ll - exact_nodes
    row["residual_rms"] = float(np.sqrt(np.mean((resid - resid.mean()) ** 2)))
    probes = rec.get("log_l_probes")
    jk = None
    if probes is not None and np.asarray(probes).shape[1] >= 2:
        p = np.asarray(probes, dtype=np.float64)  # (G, K)
        k = p.shape[1]
        dev = p - p.mean(1, keepdims=True)
        dev -= dev.mean(0, keepdims=True)  # the centred node values' probe noise
        row["probe_noise"] = float(np.sqrt(np.mean(dev.var(1, ddof=1) / k)))
        jk = [_fit_std(g, np.delete(p, j, 1).mean(1)) for j in range(k)]
    for name in NAMES:
        sf = fine[name][1]
        d = {"exact_sigma": sf, "grid_fit": fit_exact[name] / sf, "model": fit_model[name] / sf}
        if jk is not None:
            s = np.array([j[name] for j in jk])
            k = len(s)
            d["hutchinson_rel_se"] = float(
                math.sqrt((k - 1) / k * np.sum((s - s.mean()) ** 2)) / fit_model[name]
            )
        row[name] = d
    return row


def _spread(ratios: np.ndarray) -> float:
    """Robust scatter of log ratios: half the 16–84 % range (the sd for a normal; one field
    whose fit ran off the grid does not dominate it)."""
    lr = np.log(ratios[np.isfinite(ratios) & (ratios > 0)])
    return float((np.percentile(lr, 84) - np.percentile(lr, 16)) / 2) if lr.size else math.nan


def summarise(rows: list[dict]) -> dict:
    """Per parameter: median and robust log-scatter (:func:`_spread`) of the σ ratios, the
    jackknife relative SE, the fraction within 25 %; and the median node residual / probe noise
    in nats."""
    out = {"fields": len(rows)}
    for name in NAMES:
        g = np.array([r[name]["grid_fit"] for r in rows])
        m = np.array([r[name]["model"] for r in rows])
        h = np.array([r[name].get("hutchinson_rel_se", np.nan) for r in rows])
        out[name] = {
            "grid_fit_median": float(np.nanmedian(g)),
            "grid_fit_logsd": _spread(g),
            "model_median": float(np.nanmedian(m)),
            "model_logsd": _spread(m),
            "model_within_25pct": float(np.mean(np.abs(m - 1) <= 0.25)),
            "hutchinson_rel_se_median": float(np.nanmedian(h)) if np.isfinite(h).any() else None,
        }
    out["residual_rms_median"] = float(np.median([r["residual_rms"] for r in rows]))
    pn = [r["probe_noise"] for r in rows if "probe_noise" in r]
    out["probe_noise_median"] = float(np.median(pn)) if pn else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="+", help="trained-infer --json files or run logs")
    ap.add_argument("--data", required=True, help="the store the fields came from")
    ap.add_argument("--grid", type=int, default=3, help="nodes per axis of the runs (default 3)")
    ap.add_argument("--grid-width", type=float, default=2.0, help="± σ of the runs (default 2)")
    ap.add_argument("--json", help="write the summary and per-field rows here")
    args = ap.parse_args(argv)

    from rho_core.data.store import open_store

    recs = load_records(args.records)
    if not recs:
        raise SystemExit("no per-field records in " + ", ".join(args.records))
    if any("log_l" not in r for r in recs):
        raise SystemExit("these records hold no node values (log_l): a --infer-fit refine run?")
    st = open_store(args.data)
    rows = [field_row(r, st.read(int(r["index"]))[0], args.grid, args.grid_width) for r in recs]
    s = summarise(rows)
    print(
        f"{s['fields']} fields; σ / exact σ (fine grid): median, scatter of log "
        "(half the 16–84 % range)"
    )
    print(f"{'parameter':>15} {'grid fit':>15} {'model':>15} {'±25 %':>6} {'jackknife SE':>13}")
    for name in NAMES:
        d = s[name]
        hj = d["hutchinson_rel_se_median"]
        print(
            f"{name:>15} {d['grid_fit_median']:6.3f} {d['grid_fit_logsd']:7.3f}  "
            f"{d['model_median']:6.3f} {d['model_logsd']:7.3f}  {d['model_within_25pct']:5.2f} "
            f"{'—' if hj is None else f'{hj:12.3f}'}"
        )
    pn = s["probe_noise_median"]
    print(
        f"node residual model − exact (centred): {s['residual_rms_median']:.2f} nats rms "
        f"(median); probe noise of the same: {'—' if pn is None else f'{pn:.2f}'} nats"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": s, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

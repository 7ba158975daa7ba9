"""How far is a trained GRF network from the exact denoiser? (issue 13 diagnostic)

For a checkpoint trained on a Gaussian-random-field store, draw fresh true fields of a condition
(A, n), noise them to x_t at several steps t, and compare the network's x̂₀ with the exact
posterior mean of the GRF (``rho_core.exact.FourierGaussianDenoiser``, in the checkpoint's
normalised space). Printed per t:

* ``excess`` = E‖x̂₀_net − x̂₀_exact‖² / E‖x̂₀_exact − x₀‖²: the network's extra error relative to
  the irreducible one (0 = exact; a sampler driven by it then draws the exact distribution, up to
  discretisation);
* ``shell excess (κ ≈ 1, 4, 16, 32)``: the same ratio per |κ| shell — where in scale the network
  is wrong (the small scales of red spectra are the hard part);
* ``gain 10–30``: the least-squares slope of the network's x̂₀ on the exact x̂₀ over the Fourier
  modes with 10 ≤ |κ| ≤ 30, Re Σ F_net·F̄_exact / Σ |F_exact|² (1 = unbiased). The excess mixes
  random and systematic error; a gain above 1 is the systematic part that makes a sampler
  over-disperse those scales (issue 13's one-point-PDF misses: small scales ≈ 1 % too strong).
  ``power 10–30`` = Σ |F_net|² / Σ |F_exact|² over the same modes (gain plus random error);
  ``gain > 30``: the slope over the corner modes |κ| > 30 (a quarter of a 64² grid's modes,
  a quarter of the variance of an n = −1 field).
  The JSON holds the gain per shell too.

Cheap (no sampling): a few seconds per condition on one CPU thread, so it tracks training.

``--store LABEL=PATH`` (repeatable) adds every distinct condition of a store and prints, after
the rows, a summary per group ``LABEL·K`` (K = realisations per condition in that store) and t:
the rms, mean and largest |gain 10–30 − 1| over the group's conditions. It tells whether the
network's small-scale error follows how often training saw a condition (training conditions
with many vs few realisations) or where it lies between them (a held-out store).

    python benchmarks/denoiser_error.py --checkpoint data/runs/grf64 [--cond 0.5,-2.5 ...]
        [--store train=data/grf/train64-wide --store heldout=data/grf/heldout64]
        [--n 32] [--t 0,50,150,300,500,700,900] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SHELLS = (1, 4, 16, 32)


def shell_index(size: int, dims: int) -> np.ndarray:
    """Nearest integer |κ| on the full FFT grid, shape ``(size,) * dims``."""
    from rho_core.data.random_fields import kappa_norm

    return np.rint(kappa_norm(size, dims)).astype(int)


def _ratio(num: np.ndarray, den: np.ndarray, mask: np.ndarray) -> float:
    """Σ num / Σ den over the Fourier modes where ``mask`` (spatial shape) holds."""
    return float(num[..., mask].sum() / max(den[..., mask].sum(), 1e-300))


def measure(loaded, amp: float, idx: float, ts: list[int], n: int, seed: int) -> list[dict]:
    """Rows ``{t, abar, excess, shells: {κ: excess}, gains: {κ: gain}, gain_10_30,
    gain_over_30, power_10_30}`` for condition (amp, idx); κ over ``SHELLS``, fields
    ``(n, 1, N, …)`` in the normalised space."""
    import torch

    from rho_core.data.random_fields import gaussian_field, realization_rng, spectrum_grid
    from rho_core.exact import FourierGaussianDenoiser

    norm = loaded.normalizer
    zero, one = (float(v) for v in norm.forward(np.array([0.0, 1.0])))
    scale = one - zero
    shape = tuple(loaded.field_shape)
    size, dims = shape[1], len(shape) - 1
    truth = np.stack(
        [gaussian_field(size, dims, amp, idx, realization_rng(seed, i)) for i in range(n)]
    )[:, None]
    x0 = torch.as_tensor(norm.forward(truth), dtype=torch.float64)
    power = spectrum_grid(size, dims, amp, idx) * scale**2
    exact = FourierGaussianDenoiser(loaded.model.schedule, torch.as_tensor(power), mean=zero)
    params = torch.tensor([[amp, idx]], dtype=torch.float64).expand(n, 2)
    names = list(loaded.param_names)
    if names != ["amplitude", "spectral_index"]:
        params = params[:, [names.index("amplitude"), names.index("spectral_index")]]
    shells = shell_index(size, dims)
    band = (shells >= 10) & (shells <= 30)
    corner = shells > 30
    g = torch.Generator().manual_seed(seed + 1)
    rows = []
    for t in ts:
        tt = torch.full((n,), int(t), dtype=torch.long)
        abar = float(loaded.model.schedule.alpha_bar_at(tt[:1].double())[0])
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        xt = abar**0.5 * x0 + (1 - abar) ** 0.5 * eps
        with torch.no_grad():
            e_net = loaded.model.denoiser(xt.float(), tt, params.float()).double()
        x_net = (xt - (1 - abar) ** 0.5 * e_net) / abar**0.5
        x_ex = exact.x0(xt, tt)
        ax = tuple(range(2, x0.ndim))
        f_net = np.fft.fftn(x_net.numpy(), axes=ax)
        f_ex = np.fft.fftn(x_ex.numpy(), axes=ax)
        d_net = np.abs(f_net - f_ex) ** 2
        d_irr = np.abs(np.fft.fftn((x_ex - x0).numpy(), axes=ax)) ** 2
        cross = (f_net * f_ex.conj()).real
        p_ex = np.abs(f_ex) ** 2
        rows.append(
            {
                "t": int(t),
                "abar": abar,
                "excess": float(d_net.sum() / d_irr.sum()),
                "shells": {k: _ratio(d_net, d_irr, shells == k) for k in SHELLS},
                "gains": {k: _ratio(cross, p_ex, shells == k) for k in SHELLS},
                "gain_10_30": _ratio(cross, p_ex, band),
                "gain_over_30": _ratio(cross, p_ex, corner),
                "power_10_30": _ratio(np.abs(f_net) ** 2, p_ex, band),
            }
        )
    return rows


def store_groups(label: str, path: str) -> list[tuple[str, tuple[float, float]]]:
    """``[(LABEL·K, (A, n)), …]`` for every distinct condition of the GRF store at ``path``
    (K = its number of rows), in store order."""
    from rho_core.data.store import open_store

    st = open_store(path)
    if list(st.param_names) != ["amplitude", "spectral_index"]:
        raise SystemExit(
            f"error: {path} has parameters {st.param_names}; --store needs a Gaussian-random-"
            "field store (amplitude, spectral_index)"
        )
    conds, first, counts = np.unique(
        np.round(st.params, 12), axis=0, return_index=True, return_counts=True
    )
    order = np.argsort(first)
    return [(f"{label}·{int(counts[i])}", (float(conds[i, 0]), float(conds[i, 1]))) for i in order]


def group_summary(rows: list[dict]) -> list[dict]:
    """Per (group, t): ``{group, t, conditions, rms, mean, max}`` of ``gain_10_30 − 1`` over the
    rows that carry that ``group`` (rows without one are left out)."""
    out = []
    keys = sorted({(r["group"], r["t"]) for r in rows if r.get("group")})
    for g, t in keys:
        d = np.array([r["gain_10_30"] - 1.0 for r in rows if r.get("group") == g and r["t"] == t])
        out.append(
            {
                "group": g,
                "t": t,
                "conditions": int(d.size),
                "rms": float(np.sqrt(np.mean(d**2))),
                "mean": float(d.mean()),
                "max": float(np.abs(d).max()),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    ap.add_argument(
        "--cond",
        action="append",
        help="A,n (repeatable; default 0.5,-2.5 2,-1 1,-1.75 1,-2.25)",
    )
    ap.add_argument(
        "--store",
        action="append",
        metavar="LABEL=PATH",
        help="add every condition of this GRF store, summarised per LABEL·K (repeatable)",
    )
    ap.add_argument("--n", type=int, default=32, help="true fields per condition")
    ap.add_argument("--t", default="0,50,150,300,500,700,900", help="steps t")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)

    import torch

    from rho_core.checkpoint import load_for_sampling

    torch.set_num_threads(args.threads)
    loaded = load_for_sampling(args.checkpoint)
    conds = [(None, tuple(float(v) for v in c.split(","))) for c in (args.cond or [])]
    for spec in args.store or []:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            ap.error(f"--store wants LABEL=PATH, got {spec!r}")
        conds += store_groups(label, path)
    if not conds:
        conds = [(None, c) for c in ((0.5, -2.5), (2.0, -1.0), (1.0, -1.75), (1.0, -2.25))]
    ts = [int(v) for v in args.t.split(",")]
    print(f"checkpoint {loaded.path} (step {loaded.step})")
    head = "| A | n | t | ᾱ | excess | " + " | ".join(f"κ={k}" for k in SHELLS)
    print(head + " | gain 10–30 | power 10–30 | gain > 30 |")
    print("|" + "---|" * (8 + len(SHELLS)))
    out = []
    for group, (amp, idx) in conds:
        for r in measure(loaded, amp, idx, ts, args.n, args.seed):
            out.append({"amplitude": amp, "spectral_index": idx, "group": group, **r})
            cells = " | ".join(f"{r['shells'][k]:.3g}" for k in SHELLS)
            lead = f"| {amp:g} | {idx:g} | {r['t']} | {r['abar']:.4f} | {r['excess']:.3g}"
            gains = f"{r['gain_10_30']:.4f} | {r['power_10_30']:.4f} | {r['gain_over_30']:.4f}"
            print(f"{lead} | {cells} | {gains} |")
    mean_ex = float(np.mean([r["excess"] for r in out]))
    print(f"mean excess over all rows: {mean_ex:.3g}")
    summary = group_summary(out)
    if summary:
        print("\n| group | t | conditions | rms \\|gain 10–30 − 1\\| | mean | largest |")
        print("|---|---|---|---|---|---|")
        for g in summary:
            print(
                f"| {g['group']} | {g['t']} | {g['conditions']} | {g['rms']:.4f} | "
                f"{g['mean']:+.4f} | {g['max']:.4f} |"
            )
    if args.json:
        doc = {"rows": out, "mean_excess": mean_ex, "groups": summary}
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

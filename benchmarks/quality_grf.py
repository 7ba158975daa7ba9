"""Distribution quality on Gaussian random fields: does a trained model draw the right *density*?

Issue 13's experiment. A checkpoint trained on a ``gaussian_random_field`` store (2-D 64²,
amplitudes × spectral indices, ``configs/quality/grf64.yaml``) draws ``--n`` realisations per
condition, on the training conditions and on held-out ones (spectral indices between the training
ones), and each set is scored with :func:`rho_core.field_stats.random_field_scores` against the
analytic spectrum and fresh true realisations (stores generated with other seeds):

- P(k) ratio per |κ| shell 1…N/2: mean |R − 1| (targets 3 % train / 5 % held-out) and the worst
  shell in units of the exact cosmic-variance σ of ``--n`` realisations (target ≤ 5σ); beside them
  the same scores of ``--n`` fresh *true* realisations (the floor: a perfect model scores that);
- one-point PDF W1 / true-vs-true floor (target ≤ 2), mean pairwise correlation (< 0.05),
  memorisation (nearest training field vs the true-vs-training distances);
- the sampler-steps curve (``--curve``: DDIM and DPM-Solver++ at several step counts) on
  ``--curve-conditions`` training conditions, with the fewest steps at which all targets hold;
  ``--exact-curve`` runs a curve with the exact denoiser of the GRF
  (``rho_core.exact.FourierGaussianDenoiser``, no network): the samplers' own discretisation
  error, i.e. what a perfect network would score at that step count. ``--curve-cond A,n``
  (repeatable) runs the curves on chosen conditions instead, held-out ones included.

Data (made here when missing, or pass your own stores)::

    rho generate gaussian-random-field --out data/grf/train64 --size 64 --dims 2 \\
        --amplitude 0.5,1,2 --spectral-index=-1,-1.5,-2,-2.5 --realizations 128 --seed 1
    rho normalize data/grf/train64 --transform standard
    rho generate gaussian-random-field --out data/grf/truth64 --size 64 --dims 2 \\
        --amplitude 0.5,1,2 --spectral-index=-1,-1.5,-2,-2.5 --realizations 256 --seed 3
    rho generate gaussian-random-field --out data/grf/heldout64 --size 64 --dims 2 \\
        --amplitude 0.5,1,2 --spectral-index=-1.25,-1.75,-2.25 --realizations 256 --seed 2

Run (the numbers of docs/results.md, "Random fields"; one thread each, ≈ 16 / 15 / 25 min on the
shared 2-core machine)::

    CK=data/runs/grf64/checkpoints/ckpt-00002321.pt
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality_grf.py --checkpoint $CK \\
        --n 64 --sampler dpmpp --steps 20 --json /tmp/grf64.json --figures /tmp/grf64-figs
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality_grf.py --checkpoint $CK --skip-main \\
        --curve ddim:10,ddim:20,ddim:50,dpmpp:10,dpmpp:20,dpmpp:50 --curve-conditions 2
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality_grf.py --checkpoint $CK --skip-main \\
        --exact-curve ddim:10,ddim:50,ddim:500,dpmpp:10,dpmpp:20,dpmpp:50,ddpm:1000 \\
        --curve-conditions 2
    .venv/bin/python benchmarks/quality_grf.py --truth-only   # the floors: true fields scored
    .venv/bin/python benchmarks/quality_grf.py --oracle --seed S   # a perfect model, draw S

``--truth-only`` scores the last ``--n`` fields of each truth store against the rest (the floor
of every score). ``--oracle`` scores ``--n`` *fresh* true fields per condition (seeds no store
uses; ``--seed`` picks the draw) against the whole truth store, exactly as a network's draws are
scored: what a perfect density estimator gets on one draw. Its per-condition pass rate over
several seeds is the ceiling for a model's (the W1 ≤ 2× floor target is itself missed by the
truth on some draws: the floor is one finite sample, the reference store another).

A model trained on another store (e.g. the denser grid of session 8: 9 amplitudes × 16 indices,
``configs/quality/grf64.yaml``) is scored with ``--train-store STORE``: the memorisation check runs
against that store, the "train" rows stay the truth store's 12 conditions (each must be in it) and
the held-out ones must not be.

Prints a table per condition and a summary; ``--json`` writes everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN_A = (0.5, 1.0, 2.0)
TRAIN_N = (-1.0, -1.5, -2.0, -2.5)
HELD_N = (-1.25, -1.75, -2.25)


def ensure_stores(
    data_dir: Path,
    size: int = 64,
    dims: int = 2,
    k_train: int = 128,
    k_truth: int = 256,
    lognormal: bool = False,
) -> dict[str, Path]:
    """The training, fresh-truth and held-out stores (generated when missing). The 2-D Gaussian
    stores are ``train64``/``truth64``/``heldout64``; other cases get a ``-{dims}d`` and/or
    ``-lognormal`` suffix."""
    from rho_core.data.normalization import fit_normalization
    from rho_core.data.random_fields import generate_random_field_store
    from rho_core.data.store import store_exists

    suffix = ("" if dims == 2 else f"-{dims}d") + ("-lognormal" if lognormal else "")
    paths = {
        "train": data_dir / f"train{size}{suffix}",
        "truth": data_dir / f"truth{size}{suffix}",
        "heldout": data_dir / f"heldout{size}{suffix}",
    }
    specs = {
        "train": (TRAIN_N, k_train, 1),
        "truth": (TRAIN_N, k_truth, 3),
        "heldout": (HELD_N, k_truth, 2),
    }
    for key, (idx, k, seed) in specs.items():
        if not store_exists(paths[key]):
            generate_random_field_store(
                paths[key], size, dims, TRAIN_A, idx, k, seed=seed, lognormal=lognormal
            )
            if key == "train":
                fit_normalization(paths[key], "standard", write=True)
    return paths


def load_by_condition(path: Path) -> dict[tuple[float, float], np.ndarray]:
    """``{(amplitude, spectral_index): fields (K, 1, N, …) float32}`` of a store."""
    from rho_core.data.store import open_store

    s = open_store(path)
    f = np.asarray(s.fields[:])
    out: dict[tuple[float, float], np.ndarray] = {}
    for cond in np.unique(s.params, axis=0):
        sel = np.all(s.params == cond, axis=1)
        out[(float(cond[0]), float(cond[1]))] = f[sel]
    return out


def train_neighbours(train: dict, amp: float, idx: float) -> np.ndarray:
    """Training fields to check memorisation against: the condition itself when trained on,
    else the two nearest spectral indices at the same amplitude."""
    if (amp, idx) in train:
        return train[(amp, idx)]
    same = sorted((abs(n - idx), n) for (a, n) in train if a == amp)
    return np.concatenate([train[(amp, n)] for _, n in same[:2]])


def exact_generate(loaded, amp, idx, n, sampler, steps, seed) -> np.ndarray:
    """``n`` fields drawn by ``sampler`` with the *exact* denoiser of the GRF (no network) on the
    checkpoint's schedule and normalisation (affine only): the sampler's own discretisation
    error, the floor a perfect network would reach at this step count."""
    import torch

    from rho_core.data.random_fields import spectrum_grid
    from rho_core.exact import FourierGaussianDenoiser
    from rho_core.samplers import sample

    norm = loaded.normalizer
    zero, one = (float(v) for v in norm.forward(np.array([0.0, 1.0])))
    scale = one - zero  # affine transforms only (identity, minmax, standard)
    shape = tuple(loaded.field_shape)
    power = spectrum_grid(shape[1], len(shape) - 1, amp, idx) * scale**2
    den = FourierGaussianDenoiser(loaded.model.schedule, torch.as_tensor(power), mean=zero)
    x = sample(
        den,
        (n, *shape),
        loaded.model.schedule,
        method=sampler,
        steps=steps,
        generator=torch.Generator().manual_seed(int(seed)),
        device="cpu",
        dtype=torch.float64,
    )
    return np.asarray(norm.inverse(x.numpy()), dtype=np.float32)


ORACLE_ROOT = 0x0AC1E
"""Seed root of ``--oracle`` draws (no store uses it: stores seed rows with (seed, row))."""


def oracle_draws(shape, amp, idx, n, seed, i, lognormal) -> np.ndarray:
    """``n`` fresh true fields ``(n, 1, N, …)`` float32 of condition (amp, idx): a *perfect*
    model's draws, row j from ``SeedSequence([ORACLE_ROOT, seed, i, j])``."""
    from rho_core.data.random_fields import gaussian_field

    size, dims = shape[1], len(shape) - 1
    out = np.empty((n, *shape), dtype=np.float32)
    for j in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([ORACLE_ROOT, int(seed), int(i), j]))
        out[j, 0] = gaussian_field(size, dims, amp, idx, rng, lognormal=lognormal)
    return out


def score_set(
    loaded,
    conds,
    truth,
    train,
    split,
    n,
    sampler,
    steps,
    seed,
    batch,
    lognormal,
    exact=False,
    oracle=False,
    field_mean=None,
) -> list[dict]:
    from rho_core.evaluation import generate
    from rho_core.field_stats import random_field_scores

    rows = []
    for i, (amp, idx) in enumerate(conds):
        t0 = time.perf_counter()
        if oracle:  # a perfect model: fresh true fields scored exactly like a network's
            k = i + (10_000 if split == "heldout" else 0)  # distinct noise per split
            gen = oracle_draws(truth[(amp, idx)].shape[1:], amp, idx, n, seed, k, lognormal)
            ref = truth[(amp, idx)]
        elif loaded is None:  # truth-only: score fresh true fields (the floor)
            gen = truth[(amp, idx)][-n:]
            ref = truth[(amp, idx)][:-n]
        elif exact:
            gen = exact_generate(loaded, amp, idx, n, sampler, steps, seed + 1000 * i)
            ref = truth[(amp, idx)]
        else:
            gen, _ = generate(
                loaded,
                {"amplitude": amp, "spectral_index": idx},
                n=n,
                sampler=sampler,
                steps=steps,
                seed=seed + 1000 * i,
                batch_size=batch,
                field_mean=field_mean,
            )
            ref = truth[(amp, idx)]
        dt = time.perf_counter() - t0
        r = random_field_scores(
            gen,
            ref,
            train_neighbours(train, amp, idx),
            amp,
            idx,
            lognormal=lognormal,
            heldout=split == "heldout",
        )
        r.update(split=split, sampler=sampler, steps=steps, seconds=dt)
        r["_gen"], r["_truth"] = gen, ref
        rows.append(r)
        print(fmt_row(r), flush=True)
    return rows


HEAD = (
    f"{'split':8s} {'A':>5s} {'n':>6s} {'|R-1|':>7s} {'floor':>7s} {'worstσ':>7s} "
    f"{'W1/flr':>7s} {'corr':>7s} {'nn/nnT':>7s} {'std':>6s} {'pass':>5s} {'s':>6s}"
)


def fmt_row(r: dict) -> str:
    nn = r.get("nn_min", float("nan")) / max(r.get("nn_min_true", float("nan")), 1e-30)
    return (
        f"{r['split']:8s} {r['amplitude']:5g} {r['spectral_index']:6g} "
        f"{r['pk_mean_abs_err']:7.4f} {r['pk_floor_mean_abs_err']:7.4f} "
        f"{r['pk_worst_sigma']:7.2f} {r['pdf_w1_ratio']:7.2f} {r['pairwise_corr_mean']:7.4f} "
        f"{nn:7.3f} {r['std_ratio']:6.3f} {'yes' if r['all_pass'] else 'NO':>5s} "
        f"{r['seconds']:6.1f}"
    )


def parse_condition(spec: str, known: dict, ap: argparse.ArgumentParser) -> tuple:
    """``"A,n"`` → the matching key of ``known`` (the truth stores' conditions), or a usage
    error that lists them."""
    try:
        a, n = (float(v) for v in spec.split(","))
    except ValueError:
        ap.error(f"--curve-cond wants A,n (two numbers), got {spec!r}")
    for key in known:
        if abs(key[0] - a) < 1e-9 and abs(key[1] - n) < 1e-9:
            return key
    ap.error(f"--curve-cond {spec}: not a condition of the truth stores ({sorted(known)})")


def public(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="checkpoint file or run directory")
    ap.add_argument(
        "--data-dir", default=str(ROOT / "data" / "grf"), help="stores (made if absent)"
    )
    ap.add_argument("--n", type=int, default=64, help="realisations per condition (default 64)")
    ap.add_argument("--sampler", default="dpmpp", help="main sampler (ddim|dpmpp|ddpm)")
    ap.add_argument("--steps", type=int, default=20, help="main sampler steps")
    ap.add_argument(
        "--curve", default="", help="sampler:steps list for the steps curve, e.g. ddim:10,dpmpp:20"
    )
    ap.add_argument("--curve-conditions", type=int, default=4, help="training conditions in curve")
    ap.add_argument("--curve-n", type=int, default=None, help="realisations per curve condition")
    ap.add_argument(
        "--curve-cond",
        action="append",
        default=[],
        metavar="A,n",
        help="score the curves on these conditions (repeatable; training or held-out ones of "
        "the truth stores) instead of --curve-conditions evenly spread training ones",
    )
    ap.add_argument(
        "--exact-curve",
        default="",
        help="sampler:steps list run with the exact (Fourier/Wiener) denoiser: the samplers' error",
    )
    ap.add_argument("--skip-main", action="store_true", help="only the curves")
    ap.add_argument("--max-conditions", type=int, default=None, help="per split (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--truth-only", action="store_true", help="score fresh true fields (floors)")
    ap.add_argument(
        "--oracle",
        action="store_true",
        help="no network: score --n fresh true fields per condition (new seeds, --seed picks "
        "them) against the full truth stores, exactly as a model's draws — what a perfect "
        "density estimator scores on one draw",
    )
    ap.add_argument("--lognormal", action="store_true", help="the stores are log-normal")
    ap.add_argument(
        "--field-mean",
        type=float,
        default=None,
        help="set each drawn field's spatial mean to this (0: the GRF's exact zero mean; "
        "rho_core.evaluation.generate(field_mean=...)); default off",
    )
    ap.add_argument("--size", type=int, default=64, help="points per axis of the stores")
    ap.add_argument("--dims", type=int, default=2, help="spatial dims of the stores (2 or 3)")
    ap.add_argument("--k-train", type=int, default=128, help="training realisations/condition")
    ap.add_argument("--k-truth", type=int, default=256, help="fresh true realisations/condition")
    ap.add_argument("--make-stores", action="store_true", help="only generate the stores")
    ap.add_argument(
        "--train-store",
        help="the store the checkpoint was trained on, when it is not the default train store "
        "(e.g. a denser grid): the memorisation check runs against it; the 'train' conditions "
        "scored are still those of the truth store, and each must be in it",
    )
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--figures", help="directory for the P(k)-ratio, sample-grid and PDF figures")
    args = ap.parse_args(argv)

    import torch

    from rho_core.field_stats import summarize

    torch.set_num_threads(args.threads)
    paths = ensure_stores(
        Path(args.data_dir), args.size, args.dims, args.k_train, args.k_truth, args.lognormal
    )
    if args.make_stores:
        print("\n".join(f"{k}: {v}" for k, v in paths.items()))
        return 0
    if args.train_store:
        paths["train"] = Path(args.train_store)
    train, truth, held = (load_by_condition(paths[k]) for k in ("train", "truth", "heldout"))
    missing = sorted(set(truth) - set(train))
    if missing:
        ap.error(f"{paths['train']} lacks the truth store's conditions {missing}: the 'train' "
                 "split scores conditions the model was trained on")  # fmt: skip
    trained_on_held = sorted(set(held) & set(train))
    if trained_on_held:
        ap.error(f"{paths['train']} holds the held-out conditions {trained_on_held}")
    loaded, meta = None, {}
    if args.oracle and (args.truth_only or args.checkpoint):
        ap.error("--oracle scores a perfect model: give it without --checkpoint/--truth-only")
    if not args.truth_only and not args.oracle:
        from rho_core.checkpoint import load_for_sampling

        if not args.checkpoint:
            ap.error("--checkpoint is required (or --truth-only)")
        loaded = load_for_sampling(args.checkpoint, "cpu")
        meta = {"checkpoint": str(args.checkpoint), "step": getattr(loaded, "step", None)}
    meta["train_store"] = str(paths["train"])
    meta["train_conditions"] = len(train)
    conds_tr = sorted(truth)
    conds_ho = sorted(held)
    if args.max_conditions:
        conds_tr, conds_ho = conds_tr[: args.max_conditions], conds_ho[: args.max_conditions]
    truth_all = {**truth, **held}
    common = (args.n, args.sampler, args.steps, args.seed, args.batch_size, args.lognormal)
    if args.oracle:
        meta["oracle"] = True
        print(f"main: oracle (fresh true fields, seed {args.seed}), {args.n} per condition")
    else:
        print(f"main: {args.sampler} {args.steps} steps, {args.n} realisations per condition")
    print(HEAD)
    rows = []
    if not args.skip_main:
        for split, conds in (("train", conds_tr), ("heldout", conds_ho)):
            rows += score_set(
                loaded,
                conds,
                truth_all,
                train,
                split,
                *common,
                oracle=args.oracle,
                field_mean=args.field_mean,
            )
    result = {
        "meta": {
            **meta,
            "n": args.n,
            "sampler": args.sampler,
            "steps": args.steps,
            "field_mean": args.field_mean,
        },
        "per_condition": public(rows),
        "summary": {
            split: summarize([r for r in rows if r["split"] == split])
            for split in ("train", "heldout")
        },
    }
    for split, s in result["summary"].items():
        if not s:
            continue
        print(
            f"{split}: mean |R-1| {s['mean_pk_mean_abs_err']:.4f} (floor "
            f"{s['mean_pk_floor_mean_abs_err']:.4f}), worst shell {s['max_pk_worst_sigma']:.1f}σ, "
            f"mean W1/floor {s['mean_pdf_w1_ratio']:.2f}, corr {s['mean_pairwise_corr_mean']:.4f}"
            f", all targets on {s['n_all_pass']}/{s['n_conditions']} conditions"
        )
    curve = []
    picks = [conds_tr[int(i)] for i in np.linspace(0, len(conds_tr) - 1, args.curve_conditions)]
    if args.curve_cond:
        picks = [parse_condition(c, truth_all, ap) for c in args.curve_cond]
    n_c = args.curve_n or args.n
    jobs = [("network", x) for x in args.curve.split(",") if x] if loaded is not None else []
    jobs += [("exact", x) for x in args.exact_curve.split(",") if x] if loaded is not None else []
    for den, item in jobs:
        sampler, steps = item.split(":")
        t0 = time.perf_counter()
        c = (n_c, sampler, int(steps), args.seed, args.batch_size, args.lognormal)
        cr = score_set(loaded, picks, truth_all, train, den, *c, exact=den == "exact")
        s = summarize(cr)
        s.update(sampler=sampler, steps=int(steps), seconds=time.perf_counter() - t0)
        s["denoiser"] = den
        s["per_condition"] = public(cr)
        curve.append(s)
    if curve:
        print(f"\n{'denoiser':8s} {'sampler':8s} {'steps':>5s} {'|R-1|':>7s} {'floor':>7s} "
              f"{'worstσ':>7s} {'W1/flr':>7s} {'pass':>5s} {'s':>6s}")  # fmt: skip
        for s in curve:
            print(
                f"{s['denoiser']:8s} {s['sampler']:8s} {s['steps']:5d} "
                f"{s['mean_pk_mean_abs_err']:7.4f} "
                f"{s['mean_pk_floor_mean_abs_err']:7.4f} {s['max_pk_worst_sigma']:7.2f} "
                f"{s['mean_pdf_w1_ratio']:7.2f} {s['n_all_pass']:2d}/{s['n_conditions']:<2d} "
                f"{s['seconds']:6.1f}"
            )
        for den in ("network", "exact"):
            for sampler in sorted({s["sampler"] for s in curve if s["denoiser"] == den}):
                ok = [s["steps"] for s in curve if s["sampler"] == sampler and s["denoiser"] == den
                      and s["n_all_pass"] == s["n_conditions"]]  # fmt: skip
                best = min(ok) if ok else "none"
                print(f"{sampler} ({den} denoiser): fewest steps with all targets met: {best}")
    result["curve"] = curve
    if args.json:  # before the figures: a plotting error must not lose the numbers
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.figures:
        write_figures(Path(args.figures), rows)
    return 0


def write_figures(out: Path, rows: list[dict]) -> None:
    from rho_core.plots_fields import pdf_overlay_figure, power_ratio_figure, sample_grid_figure

    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "heldout"):
        sel = [r for r in rows if r["split"] == split]
        if not sel:
            continue
        power_ratio_figure(sel).savefig(out / f"pk_ratio_{split}.png", dpi=110)
        r = sel[len(sel) // 2]
        lab = f"A={r['amplitude']:g}, n={r['spectral_index']:g} ({split})"
        sample_grid_figure(r["_gen"], r["_truth"], 8, lab).savefig(
            out / f"samples_{split}.png", dpi=110
        )
        pdf_overlay_figure(r["_gen"], r["_truth"][: len(r["_gen"])], title=lab).savefig(
            out / f"pdf_{split}.png", dpi=110
        )


if __name__ == "__main__":
    raise SystemExit(main())

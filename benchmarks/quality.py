"""Sample quality on the paper's 3-D experiment: spherical harmonics, trained end to end.

What it measures. The whole product path of the paper's 3-D experiment, at a chosen budget:

1. a spherical-harmonic store (``rho_core.data.spherical_harmonics``; default 32³, l ≤ 6, real
   convention, 49 volumes), reused when ``--out`` already holds one of the same size and l_max;
2. a minmax normalisation fitted and written into the store (``fit_normalization(write=True)``);
3. training of the default model (``rho_cli.train.build_configs``, i.e.
   ``rho_core.model.default_model_config``) for ``--steps`` optimizer steps, capped by the
   wall-time budget ``--max-minutes``: a short calibration run measures the step time and the run
   is shortened to fit (so the learning-rate schedule still ends), with a timed checkpoint and a
   hard stop as a safety net;
4. evaluation with ``rho_core.evaluation.evaluate`` (one generated sample per condition, seed 0)
   with DPM-Solver++(2M) at 20 steps and DDIM at 50 steps.

It prints, per sampler, the scores of Y_5^2 (l=5, m=2) and the mean over all evaluated
conditions: ``wasserstein`` (W1 of the value distributions in the normalised [-1, 1] space, the
paper's score), ``rel_l2`` (physical units) and ``power_spectrum`` (mean relative error of the
radially averaged power spectrum), beside the paper's value, plus the training steps, wall time
and final loss. ``--max-conditions N`` evaluates an evenly spaced subset of N conditions
(always including Y_5^2) to save sampling time; the default evaluates all of them.

Target: the paper reports a Wasserstein score of about 0.035 for Y_5^2 at 32³ (design.md,
"Metrics"), with a 167 M-parameter model trained far longer than a CPU budget allows; short runs
here are expected to score worse. The Wasserstein score ignores where values sit, so read it
beside rel_l2 and the power-spectrum error.

How to run (about 15 minutes on 2 CPU cores with these settings):

    .venv/bin/python benchmarks/quality.py --size 32 --l-max 6 --max-minutes 8 \
        [--steps 2000] [--batch-size 8] [--lr LR] [--precision fp32|bf16] [--threads 2] \
        [--max-conditions N] [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

PAPER_Y52_WASSERSTEIN = 0.035
SAMPLERS = (("dpmpp", 20), ("ddim", 50))
TARGET = "l=5,m=2"


class _Stop(Exception):
    """Raised from the training callback when the wall-time budget is spent."""


def _store(out: Path, size: int, l_max: int, pairs=None, name: str = "sh") -> Path:
    from rho_core.data.spherical_harmonics import generate_spherical_harmonics
    from rho_core.data.store import open_store, store_exists

    path = out / f"{name}-{size}-l{l_max}.zarr"
    if store_exists(path):
        s = open_store(path)
        want = len(pairs) if pairs is not None else (l_max + 1) ** 2
        if tuple(s.field_shape) == (1, size, size, size) and s.n == want:
            return path
        shutil.rmtree(path)
    generate_spherical_harmonics(path, size=size, l_max=l_max, convention="real", lm=pairs)
    return path


def _pick_conditions(l_max: int, k: int | None) -> list[tuple[int, int]] | None:
    """Evenly spaced ``k`` of all (l, m) pairs plus (5, 2); None for all of them."""
    from rho_core.data.spherical_harmonics import lm_pairs

    pairs = lm_pairs(l_max, "real")
    if k is None or k >= len(pairs):
        return None
    idx = {round(i * (len(pairs) - 1) / max(k - 1, 1)) for i in range(k)}
    chosen = [pairs[i] for i in sorted(idx)]
    if (5, 2) in pairs and (5, 2) not in chosen:
        chosen.append((5, 2))
    return chosen


def _train(args, store: Path, run_dir: Path) -> dict:
    from rho_cli.train import build_configs
    from rho_core.checkpoint import latest_valid_checkpoint
    from rho_core.data.dataset import StoreDataset
    from rho_core.training import train

    budget = args.max_minutes * 60.0 if args.max_minutes else math.inf
    over = {"batch_size": args.batch_size, "lr": args.lr, "precision": args.precision}
    over = {k: v for k, v in over.items() if v is not None}
    t0 = time.perf_counter()
    steps = args.steps
    calib_s = None
    if math.isfinite(budget) and steps > 12:
        # calibration: 6 steps in a scratch directory; the first steps are slow (allocator and
        # oneDNN warm-up) and others may be slowed by other jobs: the step time is the fastest
        # of steps 3-6 (the hard stop below guards against an optimistic estimate)
        times: list[float] = []
        with tempfile.TemporaryDirectory(dir=args.out) as tmp:
            mcfg, tcfg = build_configs(str(store), None, {**over, "steps": 6})
            train(
                mcfg,
                tcfg,
                StoreDataset(str(store)),
                tmp,
                callback=lambda s, m: times.append(m["step_time_s"]),
                resume=False,
            )
        calib_s = min(times[2:])
        print(
            "  calibration step times " + " ".join(f"{t:.2f}" for t in times) + " s",
            file=sys.stderr,
            flush=True,
        )
        left = budget - (time.perf_counter() - t0) - 15.0  # model build, final checkpoint
        steps = max(1, min(steps, int(0.97 * left / calib_s)))
    mcfg, tcfg = build_configs(
        str(store),
        None,
        {**over, "steps": steps, "checkpoint_every": 0, "checkpoint_every_seconds": 60.0},
    )
    losses: list[float] = []
    t_train = time.perf_counter()

    def callback(step: int, m: dict) -> None:
        losses.append(m["loss"])
        if step % 25 == 0 or step == steps:
            print(
                f"  step {step}/{steps} loss {m['loss']:.4f} "
                f"({time.perf_counter() - t_train:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        if time.perf_counter() - t0 > budget + 30.0 and step < steps:
            raise _Stop

    stopped = False
    try:
        res = train(mcfg, tcfg, StoreDataset(str(store)), run_dir, callback=callback, resume=False)
        ckpt = res.checkpoint
    except _Stop:
        stopped = True
        ckpt = latest_valid_checkpoint(run_dir)
    wall = time.perf_counter() - t0
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "planned_steps": steps,
        "requested_steps": args.steps,
        "steps_done": len(losses),
        "stopped_by_budget": stopped,
        "checkpoint": str(ckpt) if ckpt else None,
        "calibration_step_s": calib_s,
        "wall_s": wall,
        "train_loop_s": time.perf_counter() - t_train,
        "final_loss": losses[-1] if losses else None,
        "loss_last10pct_mean": sum(tail) / len(tail) if losses else None,
        "first_loss": losses[0] if losses else None,
        "batch_size": tcfg.batch_size,
        "lr": tcfg.lr,
        "precision": tcfg.precision,
    }


def _fmt(v) -> str:
    return "   n/a" if v is None else f"{v:8.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=32, help="voxels per axis (default 32)")
    ap.add_argument("--l-max", type=int, default=6, help="highest degree l (default 6)")
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-time budget of training (calibration included)",
    )
    ap.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig (8)")
    ap.add_argument("--lr", type=float, default=None, help="default: TrainConfig (2e-4)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default=None)
    ap.add_argument(
        "--max-conditions",
        type=int,
        default=None,
        help="evaluate N evenly spaced conditions (+ Y_5^2); default all",
    )
    ap.add_argument(
        "--out",
        default=str(Path(tempfile.gettempdir()) / "rho-quality"),
        help="work directory (stores, run); default /tmp/rho-quality",
    )
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)

    from rho_core.data.normalization import fit_normalization
    from rho_core.evaluation import evaluate

    t0 = time.perf_counter()
    store = _store(out, args.size, args.l_max)
    norm = fit_normalization(store, "minmax", write=True)
    data_s = time.perf_counter() - t0
    print(
        f"store {store} ({data_s:.1f} s, normalisation {norm.get('transform')})",
        file=sys.stderr,
        flush=True,
    )

    tr = _train(args, store, run_dir)
    print(
        f"trained {tr['steps_done']} steps in {tr['wall_s']:.0f} s, final loss {tr['final_loss']}",
        file=sys.stderr,
        flush=True,
    )
    if tr["checkpoint"] is None:
        print("no checkpoint was written; nothing to evaluate", file=sys.stderr)
        return 1

    pairs = _pick_conditions(args.l_max, args.max_conditions)
    eval_store = store if pairs is None else _store(out, args.size, args.l_max, pairs, "eval")
    evals = {}
    for sampler, k in SAMPLERS:
        t1 = time.perf_counter()
        r = evaluate(
            tr["checkpoint"],
            eval_store,
            sampler=sampler,
            steps=k,
            seed=0,
            max_conditions=None,
            batch_size=8,
        )
        r["wall_s"] = time.perf_counter() - t1
        evals[f"{sampler}-{k}"] = r
        print(
            f"evaluated {sampler} {k} steps on {r['n_conditions']} conditions "
            f"in {r['wall_s']:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    print(
        f"\nρ-Diffusion quality, spherical harmonics {args.size}³, l ≤ {args.l_max} (real); "
        f"paper: W1(Y_5^2) ≈ {PAPER_Y52_WASSERSTEIN}"
    )
    print(
        f"{'sampler':<10} {'condition':<14} {'W1 (norm)':>9} {'paper':>7} {'rel_l2':>8} "
        f"{'P(k) err':>8} {'eval s':>7}"
    )
    for name, r in evals.items():
        y = r["per_condition"].get(TARGET, {})
        rows = [
            (
                TARGET,
                y.get("wasserstein"),
                f"{PAPER_Y52_WASSERSTEIN:7.3f}",
                y.get("rel_l2"),
                y.get("power_spectrum"),
            ),
            (
                f"mean of {r['n_conditions']}",
                r["wasserstein_mean"],
                "      -",
                r["rel_l2_mean"],
                r.get("power_spectrum_mean"),
            ),
        ]
        for label, w, paper, rl, ps in rows:
            print(
                f"{name:<10} {label:<14} {_fmt(w):>9} {paper:>7} {_fmt(rl):>8} "
                f"{_fmt(ps):>8} {r['wall_s']:7.0f}"
            )
    print(
        f"training: {tr['steps_done']} steps (requested {tr['requested_steps']}, planned "
        f"{tr['planned_steps']}{', stopped by budget' if tr['stopped_by_budget'] else ''}), "
        f"batch {tr['batch_size']}, lr {tr['lr']:g}, {tr['precision']}, "
        f"wall {tr['wall_s']:.0f} s; loss first {_fmt(tr['first_loss']).strip()}, "
        f"final {_fmt(tr['final_loss']).strip()}, "
        f"last-10% mean {_fmt(tr['loss_last10pct_mean']).strip()}"
    )
    print(f"threads {torch.get_num_threads()}, total wall {time.perf_counter() - t0:.0f} s")

    if args.json:
        result = {
            "size": args.size,
            "l_max": args.l_max,
            "paper_y52_wasserstein": PAPER_Y52_WASSERSTEIN,
            "train": tr,
            "evaluations": evals,
            "data_s": data_s,
            "threads": torch.get_num_threads(),
        }
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Seconds per optimizer step of the quality recipes, through the real training loop.

For each recipe YAML (default: every ``configs/quality/*.yaml``) and each ``--precision``
(default fp32) trains ``--steps`` steps with :func:`rho_core.training.train` (checkpoints off) on
``--store`` (default: a 32³ spherical-harmonic store, l ≤ 6, built once in ``--out``; give a
2-D random-field store for the 2-D recipes) and prints the median and best step time (the first
``--warmup`` steps, where the allocator and oneDNN warm up, are left out), samples/s, the
planned steps in 60 minutes and the speed-up over the first precision. ``--precision
fp32,bf16`` measures bf16 autocast (CPUs with AVX512-BF16/AMX gain most).
Compare code versions by running the script from each checkout on an otherwise idle machine;
runs are noisy (±10 % between runs here), so compare ratios from back-to-back runs.

    .venv/bin/python benchmarks/train_recipe.py [--config A.yaml --config B.yaml] [--steps 30]
        [--threads 2] [--store STORE] [--precision fp32,bf16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def time_recipe(
    config: str, store: Path, steps: int, warmup: int, workdir: Path, precision: str = "fp32"
) -> dict:
    """Median/best step time (s) of ``steps`` training steps of ``config`` on ``store``."""
    from rho_cli.train import build_configs
    from rho_core.data.dataset import StoreDataset
    from rho_core.training import train

    over = {"steps": steps, "checkpoint_every": 0, "precision": precision}
    mcfg, tcfg = build_configs(str(store), config, over)
    times: list[float] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        train(mcfg, tcfg, StoreDataset(str(store)), tmp, resume=False,
              callback=lambda s, m: times.append(m["step_time_s"]))  # fmt: skip
    timed = sorted(times[warmup:])
    med = timed[len(timed) // 2]
    return {
        "config": config,
        "precision": precision,
        "batch_size": tcfg.batch_size,
        "steps_timed": len(timed),
        "step_s_median": med,
        "step_s_best": timed[0],
        "samples_per_s": tcfg.batch_size / med,
        "steps_per_hour": int(3600 / med),
    }


def main(argv: list[str] | None = None) -> int:
    from quality import make_store

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", help="recipe YAML (repeatable)")
    ap.add_argument("--steps", type=int, default=30, help="training steps per recipe")
    ap.add_argument("--warmup", type=int, default=5, help="leading steps left out of the timing")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "rho-train-recipe"))
    ap.add_argument("--store", help="training store (default: a 32³ harmonic store in --out)")
    ap.add_argument("--precision", default="fp32", help="comma-separated, e.g. fp32,bf16")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)
    if args.steps <= args.warmup:
        ap.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = args.config or sorted(str(p) for p in (ROOT / "configs" / "quality").glob("*.yaml"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = Path(args.store) if args.store else make_store(out, 32, 6)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    rows = []
    for c in configs:
        base = None  # the first precision's median step time
        for p in precisions:
            r = time_recipe(c, store, args.steps, args.warmup, out, p)
            base = base or r["step_s_median"]
            r["speedup"] = base / r["step_s_median"]
            rows.append(r)
    print(f"\ntraining step time, {store}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}")  # fmt: skip
    print(f"{'recipe':28s} {'prec':>5s} {'batch':>5s} {'s/step med':>10s} {'best':>7s} "
          f"{'samples/s':>9s} {'steps/h':>8s} {'speed-up':>8s}")  # fmt: skip
    for r in rows:
        name = Path(r["config"]).name
        print(f"{name:28s} {r['precision']:>5s} {r['batch_size']:5d} {r['step_s_median']:10.3f} "
              f"{r['step_s_best']:7.3f} {r['samples_per_s']:9.1f} {r['steps_per_hour']:8d} "
              f"{r['speedup']:8.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows},
                                              indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

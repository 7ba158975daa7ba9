"""`rho evaluate`: score a trained model against a store; prints the metrics as JSON on stdout.

``rho evaluate --checkpoint CKPT --data STORE [--sampler ddpm|ddim|dpmpp] [--steps K]``

One sample is generated per distinct condition of STORE (at most ``--max-conditions``, evenly
spaced) and compared with the store's sample for that condition: ``wasserstein`` in the model's
normalised space, ``rel_l2`` in physical units (and the power-spectrum error when available),
per condition and averaged. See :func:`rho_core.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model against a store (JSON on stdout)",
        description=__doc__.split("\n\n")[0].replace("`", ""),
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--data", required=True, help="store with the ground truth")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp"), default="dpmpp")
    p.add_argument("--steps", type=int, default=50, help="denoiser evaluations (≤ T)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-conditions", type=int, default=16, help="conditions scored (0: all; default 16)"
    )
    p.add_argument("--batch-size", type=int, default=16, help="samples generated at once")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, xpu or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rho_core.evaluation import evaluate

    bar = None if args.quiet else tqdm(desc="evaluate", unit="step", file=sys.stderr)
    try:
        scores = evaluate(
            args.checkpoint,
            args.data,
            sampler=args.sampler,
            steps=args.steps,
            guidance=args.guidance,
            seed=args.seed,
            max_conditions=args.max_conditions or None,
            batch_size=args.batch_size,
            device=args.device,
            progress=(lambda k: bar.update(k)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps(scores, indent=2))
    return 0

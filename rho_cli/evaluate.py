"""`rho evaluate`: score a trained model against a store; prints the metrics as JSON on stdout.

``rho evaluate --checkpoint CKPT --data STORE [--sampler ddpm|ddim|dpmpp] [--steps K]``

One sample is generated per distinct condition of STORE (at most ``--max-conditions``, evenly
spaced) and compared with the store's sample for that condition: ``wasserstein`` in the model's
normalised space, ``rel_l2`` in physical units (and the power-spectrum error when available),
per condition and averaged, plus the condition accuracy; ``score_set`` names the set chosen by
the store's kind. Defaults: :class:`rho_core.config.EvalConfig` (also read from ``--config``).
See :func:`rho_core.evaluation.evaluate`, which the Prefect tasks and benchmarks share.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

OFF = "off"
"""``--field-mean off`` as parsed (``None`` is "not given")."""


def field_mean_arg(text: str) -> float | str:
    """argparse type of ``--field-mean``: ``"auto"``, :data:`OFF` or a float."""
    from rho_core.errors import ConfigError
    from rho_core.field_mean import parse_field_mean

    try:
        value = parse_field_mean(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return OFF if value is None else value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model against a store (JSON on stdout)",
        description=__doc__.split("\n\n")[0].replace("`", ""),
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--data", required=True, help="store with the ground truth")
    p.add_argument("--config", help="YAML/JSON with an evaluate: section (rho_core.config)")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp"), help="default dpmpp")
    p.add_argument("--steps", type=int, help="denoiser evaluations (≤ T; default 50)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 1)")
    p.add_argument("--seed", type=int, help="batch k is seeded seed + k (default 0)")
    p.add_argument("--max-conditions", type=int, help="conditions scored (0: all; default 16)")
    p.add_argument("--batch-size", type=int, help="samples generated at once (default 16)")
    p.add_argument("--clip-x0", type=float, help="clip x̂₀ to ±C in the normalised space (off)")
    p.add_argument("--device", help="auto, cpu, cuda, xpu or mps")
    p.add_argument(
        "--field-mean",
        type=field_mean_arg,
        help="each drawn field's spatial mean: auto (default: 0 for Gaussian random fields, "
        "off otherwise), off, or a number in physical units",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rho_core.config import resolve_config
    from rho_core.evaluation import evaluate

    over = {
        "evaluate.sampler": args.sampler,
        "evaluate.steps": args.steps,
        "evaluate.guidance": args.guidance,
        "evaluate.seed": args.seed,
        "evaluate.max_conditions": args.max_conditions,
        "evaluate.batch_size": args.batch_size,
        "evaluate.clip_x0": args.clip_x0,
        "evaluate.device": args.device,
    }
    if args.field_mean not in (None, OFF):
        over["evaluate.field_mean"] = args.field_mean
    cfg = resolve_config(args.config, over).evaluate
    if args.field_mean == OFF:  # a None override would mean "not given"
        cfg = dataclasses.replace(cfg, field_mean=None)
    bar = None if args.quiet else tqdm(desc="evaluate", unit="step", file=sys.stderr)
    try:
        scores = evaluate(
            args.checkpoint,
            args.data,
            cfg,
            progress=(lambda k: bar.update(k)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps(scores, indent=2))
    return 0

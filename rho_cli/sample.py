"""`rho sample`: draw fields from a trained model for given parameters into a new store.

``rho sample --checkpoint CKPT --params JSON [--n N] [--sampler ddpm|ddim|dpmpp] [--steps K]
[--guidance G] [--seed S] --out STORE``

``--params`` is a JSON object (``'{"l": 5, "m": 2}'``, repeated ``--n`` times), a JSON list of
objects (one sample each, or ``--n`` per object), or ``@FILE`` holding either. The output store
holds the fields in physical units (the model's normalisation inverted), of the training store's
kind, with the model's normalisation in its attrs and the sampling settings in its provenance.
CKPT is a checkpoint file or a run directory (its newest valid checkpoint).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="generate fields for given parameters",
        description=__doc__.split("\n\n")[0].replace("`", ""),
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--params", required=True, help="JSON object/list of objects, or @FILE")
    p.add_argument("--n", type=int, default=1, help="samples per parameter set (default 1)")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmpp"), default="dpmpp")
    p.add_argument("--steps", type=int, default=50, help="denoiser evaluations (≤ T)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="samples generated at once")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, xpu or mps")
    p.add_argument("--out", required=True, help="output store (must not exist)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def parse_params(text: str) -> list[dict[str, Any]]:
    """``--params`` value → list of parameter dicts (ConfigError on malformed JSON)."""
    from rho_core.errors import ConfigError

    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ConfigError(f"--params file {path} does not exist")
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON ({exc.msg}); e.g. '{{\"l\": 5}}'") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise ConfigError("--params must be a JSON object or a non-empty list of objects")
    return value


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.normalization import write_normalization
    from rho_core.data.store import create_store
    from rho_core.errors import ConfigError
    from rho_core.evaluation import generate

    if args.n < 1:
        raise ConfigError(f"--n must be ≥ 1, got {args.n}")
    sets = parse_params(args.params)
    loaded = load_for_sampling(args.checkpoint, args.device)
    if Path(args.out).exists():
        raise ConfigError(f"output store {args.out} already exists; choose a new --out")
    rows = [d for d in sets for _ in range(args.n)]
    from rho_core.conditioning import params_to_tensor

    table = params_to_tensor(rows, loaded.param_names)  # unknown names → ConfigError here
    n_batches = -(-len(rows) // args.batch_size)
    bar = None
    if not args.quiet:
        bar = tqdm(total=n_batches * args.steps, desc="sample", unit="step", file=sys.stderr)
    try:
        fields, params = generate(
            loaded,
            table,
            sampler=args.sampler,
            steps=args.steps,
            guidance=args.guidance,
            eta=args.eta,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=(lambda k: bar.update(k)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    provenance = {
        "generated_by": "rho sample",
        "checkpoint": str(loaded.path),
        "step": loaded.step,
        "sampler": args.sampler,
        "steps": args.steps,
        "guidance": args.guidance,
        "eta": args.eta,
        "seed": args.seed,
        "training_store": loaded.data_path,
    }
    with create_store(
        args.out,
        kind=loaded.kind or "generated",
        spatial_dims=loaded.spatial_dims,
        param_names=list(loaded.param_names),
        field_shape=fields.shape[1:],
        provenance=provenance,
        mode="w-",
    ) as writer:
        writer.append(fields, params)
    if loaded.normalization:
        write_normalization(args.out, loaded.normalization)
    print(
        f"wrote {fields.shape[0]} samples of shape {fields.shape[1:]} to {args.out}",
        file=sys.stderr,
    )
    return 0

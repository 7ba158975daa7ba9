"""`rho model load|sample|export`: use a registered model by name, from any folder, without pickle.

``--model`` is an MLflow model URI — ``models:/rho-spherical_harmonics@champion``,
``models:/rho-spherical_harmonics/3``, ``runs:/<run id>/model`` — resolved against
``MLFLOW_TRACKING_URI`` or, when unset, the project's own ``data/mlflow.db`` (whatever the current
folder), or a local model folder. Only the model's files are fetched: the weights are read with
``torch.load(weights_only=True)`` and the network is rebuilt by this package from the JSON
config, so no code stored with the model is run.

Examples::

    rho model load --model models:/rho-spherical_harmonics@champion
    rho model sample --model models:/rho-spherical_harmonics@champion \\
        --params '{"l": 5, "m": 2}' --n 2 --steps 50 --out y52.npz
    rho model export --checkpoint data/runs/RUN --out my-model/     # a bundle from a checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rho_core.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model",
        help="load / sample a registered model by its MLflow URI (no pickle), export a bundle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")

    load = msub.add_parser("load", help="fetch a model and describe it (parameters, shapes)")
    load.add_argument("--model", required=True, metavar="URI", help="models:/NAME@ALIAS, or DIR")
    load.add_argument("--json", action="store_true", help="print one JSON object")
    load.set_defaults(func=_run_load)

    sample = msub.add_parser("sample", help="draw fields for parameters (physical units)")
    sample.add_argument("--model", required=True, metavar="URI", help="models:/NAME@ALIAS, or DIR")
    sample.add_argument(
        "--params",
        required=True,
        metavar="JSON",
        help='one object {"l": 5, "m": 2}, a list of them, or @FILE.json',
    )
    sample.add_argument("--n", type=int, default=1, help="fields per parameter row (default 1)")
    sample.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    sample.add_argument(
        "--sampler", choices=["ddim", "dpmpp", "ddpm"], default=None, help="(model default)"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--guidance", type=float, default=None, help="classifier-free guidance")
    sample.add_argument(
        "--out", default="samples.npz", metavar="FILE.npz", help="output (default samples.npz)"
    )
    sample.set_defaults(func=_run_sample)

    export = msub.add_parser("export", help="write a pickle-free bundle from a checkpoint")
    export.add_argument("--checkpoint", required=True, help="checkpoint file or run folder")
    export.add_argument("--out", required=True, metavar="DIR", help="bundle folder to write")
    export.set_defaults(func=_run_export)

    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def parse_params(text: str) -> list[dict]:
    """Parameter rows from ``--params``: a JSON object, a list of objects, or ``@FILE``."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise ConfigError(f"--params {text}: cannot read the file ({exc.strerror})") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f'--params is not valid JSON ({exc}); e.g. \'{{"l": 5, "m": 2}}\''
        ) from None
    rows = [value] if isinstance(value, dict) else value
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ConfigError('--params must be an object or a non-empty list of objects: {"l": 5}')
    for r in rows:
        for k, v in r.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"--params: {k} = {v!r} is not a number")
    return rows


def describe(bundle) -> dict:
    meta = bundle.meta
    return {
        "path": str(bundle.path),
        "kind": meta.get("kind"),
        "param_names": list(meta["param_names"]),
        "param_ranges": meta.get("param_ranges"),
        "field_shape": list(meta["field_shape"]),
        "sampling": meta.get("sampling"),
        "step": meta.get("step"),
        "n_parameters": meta.get("n_parameters"),
        "normalization": (meta.get("normalization") or {}).get("transform", "none"),
        "scores": (meta.get("extra") or {}).get("scores"),
    }


def _run_load(args: argparse.Namespace) -> int:
    from tasks.tracking import load_model

    info = describe(load_model(args.model))
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"model        {args.model}")
    print(f"files        {info['path']}")
    size = f"{info['n_parameters']:,} weights"
    print(f"kind         {info['kind']} (trained {info['step']} steps, {size})")
    print(f"parameters   {', '.join(info['param_names'])}  ranges {info['param_ranges']}")
    print(f"field shape  {tuple(info['field_shape'])}  (C, *spatial), physical units")
    print(f"sampler      {info['sampling']}")
    if info["scores"]:
        print(f"scores       {info['scores']}")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from tasks.tracking import load_model

    rows = parse_params(args.params)
    if args.n < 1:
        raise ConfigError(f"--n must be ≥ 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be ≥ 1, got {args.steps}")
    bundle = load_model(args.model)
    t0 = time.monotonic()
    fields = bundle.sample(
        rows,
        n=args.n,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        guidance=args.guidance,
    )
    table = bundle.param_table(rows)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out {out}: use a .npz file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        fields=fields,
        params=np.repeat(table, args.n, axis=0),
        param_names=np.asarray(bundle.param_names),
    )
    print(
        f"wrote {fields.shape[0]} field(s) of shape {fields.shape[1:]} to {out} "
        f"({time.monotonic() - t0:.1f} s); keys: fields, params, param_names",
        file=sys.stderr,
    )
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from rho_core.packaging import bundle_from_checkpoint

    out = bundle_from_checkpoint(args.checkpoint, args.out)
    print(f"bundle written to {out} (weights.pt + model.json)")
    return 0

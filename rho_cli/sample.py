"""`rho sample`: draw fields from a trained model for given parameters into a new store.

``rho sample --checkpoint CKPT --params JSON [--n N] [--sampler ddpm|ddim|dpmpp] [--steps K]
[--guidance G] [--seed S] --out STORE``

``--params`` is a JSON object (``'{"l": 5, "m": 2}'``, repeated ``--n`` times), a JSON list of
objects (one sample each, or ``--n`` per object), or ``@FILE`` holding either. The output store
holds the fields in physical units (the model's normalisation inverted), of the training store's
kind, with the model's normalisation in its attrs and the sampling settings in its provenance.
CKPT is a checkpoint file or a run directory (its newest valid checkpoint).

Posterior sampling (inpainting, super-resolution): ``--observed STORE[:INDEX] --operator
mask:FILE.npy|coarse:F|projection:M[:SEED] --noise-std S`` draws from p(x | y, params) instead,
where y is the operator applied to field INDEX (default 0) of STORE, in physical units, and S the
observation noise std in the same units (``rho_core.inverse``: moment-matching guidance by
default, ``--posterior dps`` for DPS; ``--cg-iters`` CG iterations per step). y and S are
converted into the model's normalised space with the checkpoint's normalisation; a non-linear
normalisation (asinh, log) allows only a mask.

``--field-mean auto`` (default) sets each field's spatial mean to 0 when the model was trained on
Gaussian random fields (F[κ = 0] = 0 exactly; ``rho_core.field_mean``) and leaves every other
kind alone; ``off`` keeps the network's means, a number sets them (physical units). Posterior
draws keep theirs (the observation decides them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rho_cli.evaluate import OFF, field_mean_arg


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
    p.add_argument(
        "--field-mean",
        type=field_mean_arg,
        default="auto",
        help="each field's spatial mean: auto (default: 0 when the model was trained on "
        "Gaussian random fields, off otherwise), off, or a number in physical units",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    obs = p.add_argument_group(
        "posterior sampling (all three of --observed/--operator/--noise-std)"
    )
    obs.add_argument("--observed", help="STORE[:INDEX]: the observed field (physical units)")
    obs.add_argument(
        "--operator", help="mask:FILE.npy (true = observed), coarse:F or projection:M[:SEED]"
    )
    obs.add_argument("--noise-std", type=float, help="observation noise std, physical units")
    obs.add_argument("--posterior", choices=("mmps", "dps"), default="mmps", help="guidance")
    obs.add_argument("--cg-iters", type=int, default=None, help="CG iterations per step (mmps)")
    obs.add_argument(
        "--tweedie-min-log-snr",
        type=float,
        default=None,
        help="λ below which the covariance is isotropic (default -3; 'inf' for deterministic "
        "data such as the harmonics, docs/posterior.md)",
    )
    p.set_defaults(func=_run)


def _check_args(args: argparse.Namespace) -> None:
    """Numeric options a user can get wrong, each refused with what to change (before loading)."""
    import math

    from rho_core.errors import ConfigError

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if args.steps < 1:
        raise ConfigError(f"--steps must be ≥ 1, got {args.steps}")
    for name in ("guidance", "eta"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--{name} must be a finite number ≥ 0, got {value}")
    noise = getattr(args, "noise_std", None)
    if noise is not None and (not math.isfinite(noise) or noise < 0):
        raise ConfigError(f"--noise-std must be a finite number ≥ 0, got {noise}")
    if Path(args.out).exists():
        raise ConfigError(f"output store {args.out} already exists; choose a new --out")


def read_params_json(text: str, example: str) -> Any:
    """The JSON of a ``--params`` value (inline, or ``@FILE``); ConfigError naming the problem,
    with ``example`` (e.g. ``'{"l": 5}'``) as the hint."""
    from rho_core.errors import ConfigError

    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ConfigError(f"--params file {path} does not exist")
        text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON ({exc.msg}); e.g. '{example}'") from None


def parse_params(text: str) -> list[dict[str, Any]]:
    """``--params`` value → list of parameter dicts (ConfigError on malformed JSON)."""
    from rho_core.errors import ConfigError

    value = read_params_json(text, '{"l": 5}')
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise ConfigError("--params must be a JSON object or a non-empty list of objects")
    return value


def _field_mean(setting: float | str, loaded: Any) -> float | None:
    """``--field-mean`` resolved for the model: ``auto`` reads the training store's kind and
    provenance (rho_core.field_mean); an unreadable training store leaves it off, said on stderr."""
    from rho_core.field_mean import AUTO, GRF_KIND, resolve_field_mean

    if setting == OFF:
        return None
    if setting != AUTO:
        return float(setting)
    if loaded.kind != GRF_KIND:  # no exact mean: do not open the training store
        return None
    provenance = None
    try:
        from rho_core.data.store import open_store

        provenance = open_store(loaded.data_path).provenance
    except Exception as exc:  # noqa: BLE001 - any unreadable store: the constraint is unknown
        print(
            f"rho sample: --field-mean auto: cannot read the training store {loaded.data_path} "
            f"({type(exc).__name__}); fields keep the network's means (pass --field-mean 0 "
            "for Gaussian random fields)",
            file=sys.stderr,
        )
    return resolve_field_mean(AUTO, loaded.kind, provenance)


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.normalization import Normalizer
    from rho_core.data.store import create_store
    from rho_core.errors import ConfigError, DataError
    from rho_core.evaluation import generate

    if args.n < 1:
        raise ConfigError(f"--n must be ≥ 1, got {args.n}")
    _check_args(args)
    sets = parse_params(args.params)
    loaded = load_for_sampling(args.checkpoint, args.device)
    if Path(args.out).exists():
        raise ConfigError(f"output store {args.out} already exists; choose a new --out")
    rows = [d for d in sets for _ in range(args.n)]
    from rho_core.conditioning import params_to_tensor

    table = params_to_tensor(rows, loaded.param_names)  # unknown names → ConfigError here
    observation = _observation(args, loaded)  # None unless --observed (posterior sampling)
    if observation is not None and args.field_mean not in ("auto", OFF):
        raise ConfigError("--field-mean cannot be set with --observed: the observation decides")
    field_mean = None if observation is not None else _field_mean(args.field_mean, loaded)
    n_batches = -(-len(rows) // args.batch_size)
    bar = None
    if not args.quiet:
        bar = tqdm(total=n_batches * args.steps, desc="sample", unit="step", file=sys.stderr)
    try:
        if observation is not None:
            fields, params = _posterior(args, loaded, table, observation, bar)
        else:
            fields, params = generate(
                loaded,
                table,
                field_mean=field_mean,
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
        "field_mean": field_mean,
    }
    if observation is not None:
        provenance["posterior"] = observation["provenance"]
    with create_store(
        args.out,
        kind=loaded.kind or "generated",
        spatial_dims=loaded.spatial_dims,
        param_names=list(loaded.param_names),
        field_shape=fields.shape[1:],
        provenance=provenance,
        mode="w-",
    ) as writer:  # the store appears only complete (a failure here leaves nothing behind)
        if not np.isfinite(fields).all():
            raise DataError(
                f"sampling produced {int((~np.isfinite(fields)).sum())} NaN/inf values (checkpoint "
                f"{loaded.path}); nothing was written — check the checkpoint or lower --guidance"
            )
        writer.append(fields, params)
        if loaded.normalization:  # validated, written before the store is published
            writer.set_attrs(normalization=Normalizer.from_dict(loaded.normalization).to_dict())
    print(
        f"wrote {fields.shape[0]} samples of shape {fields.shape[1:]} to {args.out}",
        file=sys.stderr,
    )
    return 0


def _observation(args: argparse.Namespace, loaded: Any) -> dict | None:
    """``--observed/--operator/--noise-std`` → y and σ_y in model space (None without them)."""
    import numpy as np

    from rho_core.data.store import open_store
    from rho_core.errors import ConfigError
    from rho_core.inverse import observation_in_model_space
    from rho_core.operators import parse_operator

    given = {k: getattr(args, k) for k in ("observed", "operator", "noise_std")}
    if all(v is None for v in given.values()):
        return None
    missing = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is None]
    if missing:
        raise ConfigError(
            f"posterior sampling needs --observed, --operator and --noise-std; missing {missing}"
        )
    path, index = args.observed, 0
    head, sep, tail = path.rpartition(":")
    if sep and tail.isdigit():
        path, index = head, int(tail)
    if not Path(path).exists():
        raise ConfigError(f"--observed store {path} does not exist")
    store = open_store(path)
    if not 0 <= index < store.n:
        raise ConfigError(f"--observed index {index} is outside the store's {store.n} samples")
    field = np.asarray(store.fields[index], dtype=np.float64)
    shape = tuple(loaded.field_shape)
    if field.shape != shape:
        raise ConfigError(
            f"observed field {path}:{index} has shape {field.shape}; the model samples {shape}"
        )
    op = parse_operator(args.operator, shape)
    y, sigma = observation_in_model_space(field, op, float(args.noise_std), loaded.normalizer)
    prov = {
        "observed": str(path),
        "index": index,
        "operator": args.operator,
        "noise_std": float(args.noise_std),
        "method": args.posterior,
        "n_obs": int(y.numel()),
    }
    return {"y": y, "sigma": sigma, "operator": op, "provenance": prov}


def _posterior(
    args: argparse.Namespace, loaded: Any, table: Any, observation: dict, bar: Any
) -> tuple[Any, Any]:
    """Posterior samples for each row of ``table``, physical units (normaliser inverted)."""
    import numpy as np
    import torch

    from rho_core.inverse import DEFAULT_CG_ITERS, DEFAULT_TWEEDIE_MIN_LOG_SNR, sample_posterior

    model = loaded.model
    device = next(model.parameters()).device
    shape = tuple(loaded.field_shape)
    cg = DEFAULT_CG_ITERS if args.cg_iters is None else args.cg_iters
    lam = getattr(args, "tweedie_min_log_snr", None)
    lam = DEFAULT_TWEEDIE_MIN_LOG_SNR if lam is None else lam
    sampler = args.sampler if args.posterior == "mmps" else "ddpm"  # DPS is defined on DDPM
    prov_lam = lam if np.isfinite(lam) else str(lam)  # JSON attrs: no Infinity
    observation["provenance"].update(cg_iters=cg, sampler=sampler, tweedie_min_log_snr=prov_lam)
    out = np.empty((table.shape[0], *shape), dtype=np.float32)
    for k, start in enumerate(range(0, table.shape[0], args.batch_size)):
        rows = table[start : start + args.batch_size]
        cond = rows.to(device) if model.conditioner is not None else None
        x = sample_posterior(
            model.denoiser,
            (rows.shape[0], *shape),
            model.schedule,
            observation["y"].float().to(device),
            observation["operator"],
            observation["sigma"].float().to(device),
            cond=cond,
            generator=torch.Generator().manual_seed(int(args.seed) + k),
            method=args.posterior,
            steps=int(args.steps),
            cg_iters=cg,
            tweedie_min_log_snr=lam,
            sampler=sampler,
            guidance=float(args.guidance),
            callback=(lambda info: bar.update(1)) if bar is not None else None,
            device=device,
        )
        x = x.float().cpu().numpy()
        if loaded.normalizer is not None:
            x = np.asarray(loaded.normalizer.inverse(x), dtype=np.float32)
        out[start : start + rows.shape[0]] = x
    return out, table.numpy().copy()

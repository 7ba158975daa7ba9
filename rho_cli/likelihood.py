"""`rho likelihood`: log p(x) of every sample of a store under a trained model.

``rho likelihood --checkpoint CKPT --data STORE [--params JSON] [--out FILE.json]``

Each field is conditioned on its own row of the store's parameters (``--params '{"name": v}'``
overrides or supplies columns for every sample) and its log-density is computed with the
probability-flow ODE (:mod:`rho_core.likelihood`; ``--method elbo``: the continuous-time
variational bound, :mod:`rho_core.elbo`, a Monte-Carlo lower bound with its standard error in
``log_prob_std``): nats and bits/dim in the model's normalised
space, and log p in physical units (the normalisation's log-Jacobian added), with the ODE's
denoiser evaluations (nfe) and seconds. Prints one JSON object on stdout (or writes it to
``--out``, printing the summary); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def add_ode_options(p: argparse.ArgumentParser) -> None:
    """Method, solver and divergence options shared by ``rho likelihood`` and ``rho infer``."""
    p.add_argument(
        "--method",
        choices=("ode", "elbo"),
        default="ode",
        help="ode: probability-flow ODE, exact up to the solver (default); elbo: the "
        "continuous-time variational bound, Monte Carlo (a lower bound, tight for an exact "
        "denoiser; no gradients, cheaper)",
    )
    p.add_argument(
        "--samples", type=int, default=64, help="elbo: (λ, ε) draws per field (even, default 64)"
    )
    p.add_argument(
        "--antithetic", action="store_true", help="elbo: evaluate every draw at ε and −ε"
    )
    p.add_argument(
        "--eval-batch", type=int, default=64, help="elbo: network inputs per call (default 64)"
    )
    p.add_argument("--rtol", type=float, default=1e-5, help="ODE relative tolerance (1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="ODE absolute tolerance (1e-5)")
    p.add_argument(
        "--divergence",
        choices=("auto", "exact", "hutchinson"),
        default="auto",
        help="exact trace (D ≤ 128 with auto) or Hutchinson probes (default auto)",
    )
    p.add_argument("--probes", type=int, default=4, help="ode: Hutchinson probes (default 4)")
    p.add_argument(
        "--control-variate",
        choices=("auto", "none", "spectral", "powerlaw", "head"),
        default="auto",
        help="a linear part whose exact trace replaces its share of the Monte-Carlo estimate "
        "(unbiased; less variance the closer it is to the model): spectral = a Gaussian with the "
        "field's shell periodogram, powerlaw = a power law fitted to it, head (ODE) = the "
        "model's own spectral head (follows θ: the one that steadies posteriors), none. auto: "
        "powerlaw for the ODE on random-field stores, else none (ODE) / spectral (ELBO)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="fields (or grid nodes) per ODE solve / ELBO batch (default 8)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the Hutchinson probes / ELBO draws")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, xpu or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def ode_options(args: argparse.Namespace) -> dict[str, Any]:
    from rho_core.errors import ConfigError

    if not (args.rtol > 0 and args.atol > 0):
        raise ConfigError(f"--rtol and --atol must be > 0, got {args.rtol}, {args.atol}")
    if args.probes < 1:
        raise ConfigError(f"--probes must be ≥ 1, got {args.probes}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if args.method == "elbo":
        if args.samples < 2 or args.samples % 2:
            raise ConfigError(f"--samples must be an even number ≥ 2, got {args.samples}")
        if args.eval_batch < 1:
            raise ConfigError(f"--eval-batch must be ≥ 1, got {args.eval_batch}")
        return {
            "method": "elbo",
            "samples": args.samples,
            "antithetic": bool(args.antithetic),
            "eval_batch": args.eval_batch,
            "control_variate": args.control_variate,
        }
    return {
        "rtol": args.rtol,
        "atol": args.atol,
        "divergence": args.divergence,
        "probes": args.probes,
        "control_variate": args.control_variate,
    }


def resolve_control_variate(options: dict[str, Any], kind: str) -> dict[str, Any]:
    """``options`` with an ``auto`` control variate resolved for a store of ``kind``
    (:func:`rho_core.likelihood.default_control_variate`)."""
    from rho_core.likelihood import default_control_variate

    out = dict(options)
    out["control_variate"] = default_control_variate(
        out.get("method", "ode"), kind, out.get("control_variate", "auto")
    )
    return out


def parse_param_object(text: str | None) -> dict[str, float]:
    """``--params`` → dict of numbers (a JSON object, or ``@FILE`` holding one)."""
    from rho_cli.sample import read_params_json
    from rho_core.errors import ConfigError

    if not text:
        return {}
    value = read_params_json(text, '{"amplitude": 1}')
    if not isinstance(value, dict):
        raise ConfigError("--params must be one JSON object, e.g. '{\"amplitude\": 1}'")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"--params: {k!r} must be a finite number, got {v!r}")
        out[str(k)] = float(v)
    return out


def fraction_bar(desc: str, quiet: bool) -> tuple[Any, Callable[[float], None]]:
    """A per-mille tqdm bar on stderr (None when ``quiet``) and the ``progress(fraction)``
    callback that advances it monotonically."""
    from tqdm import tqdm

    bar = None if quiet else tqdm(total=1000, desc=desc, unit="‰", file=sys.stderr)
    done = [0]

    def progress(f: float) -> None:
        if bar is not None:
            k = int(1000 * f)
            bar.update(max(0, k - done[0]))
            done[0] = max(done[0], k)

    return bar, progress


def param_table(
    model_names: tuple[str, ...], store_names: list[str], store_params: np.ndarray, fixed: dict
) -> np.ndarray | None:
    """``(N, P)`` parameters in the model's column order: ``fixed`` values first, else the
    store's column of that name (ConfigError naming what is missing)."""
    from rho_core.errors import ConfigError

    unknown = sorted(set(fixed) - set(model_names))
    if unknown:
        raise ConfigError(
            f"--params names {unknown} the model is not conditioned on; its parameters are "
            f"{list(model_names)}"
        )
    if not model_names:
        return None
    n = store_params.shape[0]
    cols = []
    for name in model_names:
        if name in fixed:
            cols.append(np.full(n, fixed[name]))
        elif name in store_names:
            cols.append(store_params[:, store_names.index(name)])
        else:
            raise ConfigError(
                f"the model needs parameter {name!r}, which the store lacks; give it with "
                f"--params '{{\"{name}\": VALUE}}'"
            )
    return np.stack(cols, axis=1).astype(np.float64)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "likelihood",
        help="log p(x) per sample of a store under a trained model (JSON)",
        description=__doc__.split("\n\n")[0].replace("`", ""),
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--data", required=True, help="store whose fields are scored")
    p.add_argument("--params", help="JSON object of parameter values for every sample, or @FILE")
    p.add_argument("--out", help="write the JSON here (default: stdout)")
    p.add_argument("--indices", help="comma-separated sample indices (default: all)")
    p.add_argument("--limit", type=int, help="score only the first N samples (or N of --indices)")
    add_ode_options(p)
    p.set_defaults(func=_run)


def _indices(args: argparse.Namespace, n: int) -> np.ndarray:
    from rho_core.errors import ConfigError

    if args.indices:
        try:
            idx = np.array([int(v) for v in args.indices.split(",") if v.strip()], dtype=np.int64)
        except ValueError:
            raise ConfigError(
                f"--indices must be comma-separated integers, got {args.indices!r}"
            ) from None
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise ConfigError(f"--indices must lie in [0, {n - 1}] for this store of {n} samples")
    else:
        idx = np.arange(n)
    if args.limit is not None:
        if args.limit < 1:
            raise ConfigError(f"--limit must be ≥ 1, got {args.limit}")
        idx = idx[: args.limit]
    return idx


def _run(args: argparse.Namespace) -> int:

    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.store import open_store
    from rho_core.errors import ConfigError
    from rho_core.likelihood import model_log_likelihood

    options = ode_options(args)
    fixed = parse_param_object(args.params)
    store = open_store(args.data)
    if store.n == 0:
        raise ConfigError(f"store {args.data} has no samples")
    options = resolve_control_variate(options, store.kind)
    idx = _indices(args, store.n)
    loaded = load_for_sampling(args.checkpoint, args.device)
    if loaded.field_shape and tuple(loaded.field_shape) != tuple(store.field_shape):
        raise ConfigError(
            f"store fields have shape {tuple(store.field_shape)} but the model was trained on "
            f"{tuple(loaded.field_shape)}"
        )
    fields, params = store.read_batch(idx)
    table = param_table(loaded.param_names, list(store.param_names), params, fixed)
    bar, progress = fraction_bar("likelihood", args.quiet)

    t0 = time.perf_counter()
    try:
        res = model_log_likelihood(
            loaded,
            fields,
            table,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=progress,
            **options,
        )
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    samples = []
    for j, i in enumerate(idx.tolist()):
        row = {
            "index": int(i),
            "params": {n: float(params[j, k]) for k, n in enumerate(store.param_names)},
            "log_prob": float(res.log_prob[j]),
            "bits_per_dim": float(res.bits_per_dim[j]),
            "log_prob_std": _num(res.log_prob_std[j]),
            "physical_log_prob": float(res.physical_log_prob[j]),
        }
        if table is not None and fixed:
            row["conditioned_on"] = {
                n: float(table[j, k]) for k, n in enumerate(loaded.param_names)
            }
        samples.append(row)
    bpd = res.bits_per_dim.numpy()
    summary = {
        "n": int(len(idx)),
        "dim": res.dim,
        "mean_log_prob": float(res.log_prob.mean()),
        "mean_bits_per_dim": float(bpd.mean()),
        "std_bits_per_dim": float(bpd.std()),
        "mean_physical_log_prob": float(res.physical_log_prob.mean()),
        "nfe": int(res.nfe),
        "nfe_per_batch": float(res.nfe / max(1, -(-len(idx) // args.batch_size))),
        "seconds": seconds,
        "seconds_per_field": seconds / len(idx),
        "method": res.method,
        "divergence": res.divergence,
        "probes": res.probes,
    }
    out = {
        "checkpoint": str(loaded.path),
        "step": loaded.step,
        "data": str(args.data),
        "units": {
            "log_prob": "nats, density in the model's normalised space",
            "bits_per_dim": "-log_prob / (D ln 2)",
            "physical_log_prob": "nats, density in the store's physical units",
        },
        "settings": {**options, "batch_size": args.batch_size, "seed": args.seed},
        "summary": summary,
        "samples": samples,
    }
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(json.dumps(summary, indent=2))
        print(f"wrote {len(samples)} log-likelihoods to {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


def _num(v: Any) -> float | None:
    f = float(v)
    return None if math.isnan(f) else f

"""`rho infer`: the posterior of a model's parameters given one observed field, on a grid.

``rho infer --checkpoint CKPT --observed STORE [--index I] --grid 'spectral_index=-3:-1:41'
[--grid ...] [--params JSON] [--prior NAME=normal:MU:SIGMA ...] [--zoom N] [--fit gaussian]
[--temperature TAU] [--out DIR]``

log p(x_obs | θ) is computed with the probability-flow ODE (:mod:`rho_core.likelihood`) at every
node of the tensor grid (batched, the same Hutchinson probes for every node) — or, with
``--method elbo``, with the variational bound (:mod:`rho_core.elbo`), the same (λ, ε) draws for
every node (common random numbers), far cheaper per node; the model's other
parameters are fixed by ``--params``. With a flat prior unless ``--prior`` is given, prints the
posterior mean, standard deviation, MAP and the central 68 % / 95 % credible intervals of every
grid parameter (:mod:`rho_core.inference`) and — when the observed store records the true value
— its rank (the PIT, uniform over many fields if the posterior is calibrated). ``--fit
gaussian`` takes these from a Gaussian fitted to the grid's log-posterior instead of the
trapezoid rule: the cheap recipe of docs/likelihood.md §6, a coarse pass then ``--zoom 1
--zoom-width 2`` onto 3 nodes per axis. ``--out DIR``
writes ``posterior.csv`` (the grid table), ``summary.json`` and ``posterior.png``. A
hash-conditioned model is refused: it cannot be asked about parameters it never saw.
``--mlflow-run RUN_ID`` (default ``$RHO_MLFLOW_RUN_ID``) logs the posterior into that MLflow run
(:mod:`tasks.inference`).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from rho_cli.likelihood import add_ode_options, fraction_bar, ode_options, parse_param_object


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "infer",
        help="posterior of a model's parameters for one observed field (grid)",
        description=__doc__.split("\n\n")[0].replace("`", ""),
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--observed", required=True, help="store holding the observed field")
    p.add_argument("--index", type=int, default=0, help="sample of --observed (default 0)")
    p.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="NAME=LO:HI:COUNT",
        help="grid of one parameter (repeat for several; or NAME=v1,v2,…)",
    )
    p.add_argument("--params", help="JSON object fixing the model's other parameters, or @FILE")
    p.add_argument(
        "--prior",
        action="append",
        default=[],
        metavar="NAME=normal:MU:SIGMA|loguniform",
        help="prior of a grid parameter (default flat; repeatable)",
    )
    p.add_argument("--out", help="directory for posterior.csv, summary.json, posterior.png")
    p.add_argument(
        "--mlflow-run",
        default=os.environ.get("RHO_MLFLOW_RUN_ID") or None,
        metavar="RUN_ID",
        help="log the posterior (metrics infer/…, params, the --out files) into this MLflow "
        "run (default: $RHO_MLFLOW_RUN_ID; none when unset)",
    )
    p.add_argument(
        "--zoom",
        type=int,
        default=0,
        metavar="N",
        help="refinement passes: re-grid around the posterior (mean ± 5 std, clipped to the "
        "training range, as many nodes) N times; for a posterior far narrower than the grid",
    )
    p.add_argument(
        "--fit",
        choices=("grid", "gaussian"),
        default="grid",
        help="grid: moments and intervals of the grid posterior (trapezoid; several nodes per "
        "posterior std); gaussian: of a Gaussian fitted to the grid's log-posterior by least "
        "squares (coarse grids, e.g. 3 nodes over ± 2 std, and noisy log-likelihoods)",
    )
    p.add_argument(
        "--zoom-width",
        type=float,
        default=5.0,
        metavar="W",
        help="a zoom pass spans mean ± W std (default 5; 2 suits --fit gaussian with 3 nodes)",
    )
    p.add_argument(
        "--whiten",
        action="store_true",
        help="zoom passes lay their grid along the previous posterior's principal axes "
        "(mean + L u, u within ± --zoom-width, L L^T its covariance): a correlated posterior "
        "(a ridge) with few nodes; the summary is then a Gaussian in the parameters",
    )
    p.add_argument(
        "--zoom-nodes",
        type=int,
        default=0,
        metavar="K",
        help="nodes per axis of the zoomed grids (default: as many as --grid)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        metavar="TAU",
        help="temper the likelihood, p(x|θ)^TAU (default 1): TAU < 1 widens a model's "
        "over-confident posterior by ≈ 1/√TAU; fit TAU on separate simulated fields "
        "(rho_core.calibration, docs/likelihood.md), never on the field scored",
    )
    add_ode_options(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rho_core.inference import parse_grid, parse_prior
    from tasks.inference import infer_field, write_outputs

    options = ode_options(args)
    if args.zoom < 0:
        from rho_core.errors import ConfigError

        raise ConfigError(f"--zoom must be ≥ 0, got {args.zoom}")
    grids = [parse_grid(g) for g in args.grid]
    priors = dict(parse_prior(p) for p in args.prior)
    fixed = parse_param_object(args.params)
    first = int(np.prod([a.size for _, a in grids]))
    per_zoom = args.zoom_nodes ** len(grids) if args.zoom_nodes else first
    g = first + max(args.zoom, 0) * per_zoom
    bar, progress = fraction_bar(f"infer ({g} points)", args.quiet)
    try:
        inf = infer_field(
            args.checkpoint, args.observed, args.index, grids, fixed, priors, options,
            batch_size=args.batch_size, seed=args.seed, device=args.device, progress=progress,
            note=lambda m: print(m, file=sys.stderr), zoom=args.zoom, fit=args.fit,
            zoom_width=args.zoom_width, zoom_nodes=args.zoom_nodes, whiten=args.whiten,
            temperature=args.temperature,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    meta, summary = inf.meta, inf.meta["posterior"]
    if args.temperature != 1:
        print(f"likelihood tempered: p(x|θ)^{args.temperature:g}", file=sys.stderr)
    for n in inf.posterior.names:
        s = summary[n]
        line = (
            f"{n}: mean {s['mean']:.5g}  std {s['std']:.3g}  MAP {s['map']:.5g}  "
            f"68% [{s['ci68'][0]:.5g}, {s['ci68'][1]:.5g}]  "
            f"95% [{s['ci95'][0]:.5g}, {s['ci95'][1]:.5g}]"
        )
        if "true" in s:
            line += f"  true {s['true']:.5g} (rank {s['pit']:.3f})"
        if "exact_mean" in s:
            line += f"  exact posterior {s['exact_mean']:.5g} ± {s['exact_std']:.3g}"
        print(line)
    lp_std = inf.log_likelihood_std
    std_max = float(np.nanmax(lp_std)) if np.isfinite(lp_std).any() else 0.0
    if meta["method"] == "elbo":
        how = (
            f"ELBO, {meta['settings'].get('samples')} shared (λ, ε) draws per point, max log-p "
            f"std {std_max:.3g} "
            "nats (differences across the grid are far less noisy)"
        )
    else:
        how = f"divergence {meta['divergence']}" + (
            f" ({meta['probes']} shared probes, control variate "
            f"{meta['settings'].get('control_variate', 'auto')}, max log-p std {std_max:.3g} nats)"
            if meta["probes"]
            else ""
        )
    seconds = meta["seconds"]
    print(
        f"{g} grid points, {meta['nfe']} batched denoiser evaluations, {seconds:.1f} s "
        f"({seconds / g:.2f} s per point); {how}",
        file=sys.stderr,
    )
    if args.out:
        write_outputs(inf, args.out)
        print(f"wrote {args.out}/posterior.csv, summary.json, posterior.png", file=sys.stderr)
    if args.mlflow_run:
        from tasks.inference import log_inference

        log_inference(args.mlflow_run, meta, args.out)
        print(f"logged the posterior to MLflow run {args.mlflow_run}", file=sys.stderr)
    return 0

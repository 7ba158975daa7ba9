"""`rho infer`: the posterior of a model's parameters given one observed field, on a grid.

``rho infer --checkpoint CKPT --observed STORE [--index I] --grid 'spectral_index=-3:-1:41'
[--grid ...] [--params JSON] [--prior NAME=normal:MU:SIGMA ...] [--out DIR]``

log p(x_obs | θ) is computed with the probability-flow ODE (:mod:`rho_core.likelihood`) at every
node of the tensor grid (batched, the same Hutchinson probes for every node) — or, with
``--method elbo``, with the variational bound (:mod:`rho_core.elbo`), the same (λ, ε) draws for
every node (common random numbers), far cheaper per node; the model's other
parameters are fixed by ``--params``. With a flat prior unless ``--prior`` is given, prints the
posterior mean, standard deviation, MAP and the central 68 % / 95 % credible intervals of every
grid parameter (:mod:`rho_core.inference`) and — when the observed store records the true value
— its rank (the PIT, uniform over many fields if the posterior is calibrated). ``--out DIR``
writes ``posterior.csv`` (the grid table), ``summary.json`` and ``posterior.png``. A
hash-conditioned model is refused: it cannot be asked about parameters it never saw.
``--mlflow-run RUN_ID`` (default ``$RHO_MLFLOW_RUN_ID``) logs the posterior into that MLflow run
(:mod:`tasks.inference`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

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
    add_ode_options(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:

    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.store import open_store
    from rho_core.errors import ConfigError
    from rho_core.inference import grid_posterior, log_prior_grid, parse_grid, parse_prior
    from rho_core.likelihood import check_inferable, grid_log_likelihood

    options = ode_options(args)
    grids = [parse_grid(g) for g in args.grid]
    names = [n for n, _ in grids]
    if len(set(names)) != len(names):
        raise ConfigError(f"each parameter may have one --grid, got {names}")
    axes = [a for _, a in grids]
    priors = dict(parse_prior(p) for p in args.prior)
    fixed = parse_param_object(args.params)
    log_prior = log_prior_grid(names, axes, priors)  # validates the prior names early

    store = open_store(args.observed)
    if not 0 <= args.index < store.n:
        raise ConfigError(f"--index {args.index} is outside the store's {store.n} samples")
    loaded = load_for_sampling(args.checkpoint, args.device)
    check_inferable(loaded.model_config, names)
    if loaded.field_shape and tuple(loaded.field_shape) != tuple(store.field_shape):
        raise ConfigError(
            f"observed fields have shape {tuple(store.field_shape)} but the model was trained "
            f"on {tuple(loaded.field_shape)}"
        )
    field, row = store.read(args.index)
    truth = {n: float(row[k]) for k, n in enumerate(store.param_names)}
    for n in loaded.param_names:  # other parameters: --params, else the observed store's row
        if n not in names and n not in fixed and n in truth:
            fixed[n] = truth[n]
            print(f"fixing {n} = {truth[n]:g} (the observed sample's value)", file=sys.stderr)
    cfg = loaded.model_config.conditioning
    for n, ax in zip(names, axes, strict=True):
        j = list(cfg.param_names).index(n)
        lo, hi = cfg.param_low[j], cfg.param_high[j]
        if ax[0] < lo or ax[-1] > hi:
            print(
                f"warning: the grid of {n} [{ax[0]:g}, {ax[-1]:g}] leaves the training range "
                f"[{lo:g}, {hi:g}]; the model extrapolates there",
                file=sys.stderr,
            )

    g = int(np.prod([a.size for a in axes]))
    bar, progress = fraction_bar(f"infer ({g} points)", args.quiet)

    t0 = time.perf_counter()
    try:
        res = grid_log_likelihood(
            loaded,
            field,
            names,
            axes,
            fixed,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=progress,
            **options,
        )
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    shape = tuple(a.size for a in axes)
    ll = res.log_prob.numpy().reshape(shape)
    post = grid_posterior(names, axes, ll, log_prior)
    summary = post.summary()
    for n in names:
        if n in truth:
            summary[n]["true"] = truth[n]
            summary[n]["pit"] = post.pit(n, truth[n])

    for n in names:
        s = summary[n]
        line = (
            f"{n}: mean {s['mean']:.5g}  std {s['std']:.3g}  MAP {s['map']:.5g}  "
            f"68% [{s['ci68'][0]:.5g}, {s['ci68'][1]:.5g}]  "
            f"95% [{s['ci95'][0]:.5g}, {s['ci95'][1]:.5g}]"
        )
        if "true" in s:
            line += f"  true {s['true']:.5g} (rank {s['pit']:.3f})"
        print(line)
        if s["edge_mass"] > 0.01:
            print(
                f"warning: {100 * s['edge_mass']:.1f} % of the posterior of {n} lies in the "
                "outermost grid cells; widen the grid",
                file=sys.stderr,
            )
    std_max = (
        float(np.nanmax(res.log_prob_std.numpy()))
        if res.probes > 1 or res.method == "elbo"
        else 0.0
    )
    if res.method == "elbo":
        how = (
            f"ELBO, {res.steps} shared (λ, ε) draws per point, max log-p std {std_max:.3g} nats "
            "(differences across the grid are far less noisy)"
        )
    else:
        how = f"divergence {res.divergence}" + (
            f" ({res.probes} shared probes, max log-p std {std_max:.3g} nats)" if res.probes else ""
        )
    print(
        f"{g} grid points, {res.nfe} denoiser evaluations, {seconds:.1f} s "
        f"({seconds / g:.2f} s per point); {how}",
        file=sys.stderr,
    )

    meta = {
        "checkpoint": str(loaded.path),
        "step": loaded.step,
        "observed": str(args.observed),
        "index": args.index,
        "observed_params": truth,
        "fixed": fixed,
        "grid": {
            n: [float(a[0]), float(a[-1]), int(a.size)] for n, a in zip(names, axes, strict=True)
        },
        "prior": {n: list(priors[n]) if n in priors else ["flat"] for n in names},
        "posterior": summary,
        "nfe": res.nfe,
        "seconds": seconds,
        "method": res.method,
        "divergence": res.divergence,
        "probes": res.probes,
        "settings": {**options, "batch_size": args.batch_size, "seed": args.seed},
    }
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        mesh = np.meshgrid(*axes, indexing="ij")
        lp_std = res.log_prob_std.numpy()
        with open(out / "posterior.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([*names, "log_likelihood", "log_likelihood_std", "log_prior", "posterior"])
            for k in range(g):
                w.writerow(
                    [*(float(m.reshape(-1)[k]) for m in mesh)]
                    + [
                        float(ll.reshape(-1)[k]),
                        "" if math.isnan(lp_std[k]) else float(lp_std[k]),
                        float(post.log_prior.reshape(-1)[k]),
                        float(post.density.reshape(-1)[k]),
                    ]
                )
        (out / "summary.json").write_text(json.dumps(meta, indent=2) + "\n")
        _plot(post, summary, out / "posterior.png")
        print(f"wrote {out}/posterior.csv, summary.json, posterior.png", file=sys.stderr)
    if args.mlflow_run:
        from tasks.inference import log_inference

        log_inference(args.mlflow_run, meta, args.out)
        print(f"logged the posterior to MLflow run {args.mlflow_run}", file=sys.stderr)
    return 0


def _plot(post, summary: dict, path: Path) -> None:
    """Marginals with the 68/95 % intervals (and the true value); the joint for two parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(post.names)
    k = len(names)
    ncols = k + (1 if k == 2 else 0)
    fig, axs = plt.subplots(1, ncols, figsize=(4 * ncols, 3.4), squeeze=False)
    for i, n in enumerate(names):
        ax = axs[0, i]
        x, p = post.axes[i], post.marginal(i)
        ax.plot(x, p, color="k")
        s = summary[n]
        for lv, alpha in (("ci95", 0.15), ("ci68", 0.3)):
            lo, hi = s[lv]
            sel = (x >= lo) & (x <= hi)
            ax.fill_between(x[sel], p[sel], color="C0", alpha=alpha, label=f"{lv[2:]} %")
        if "true" in s:
            ax.axvline(s["true"], color="C3", ls="--", label="true")
        ax.set_xlabel(n)
        ax.set_ylabel("posterior density")
        ax.legend(fontsize=8)
    if k == 2:
        ax = axs[0, 2]
        d = post.density
        flat = np.sort(d.reshape(-1))[::-1]
        cum = np.cumsum(flat) / flat.sum()
        levels = sorted(
            {float(flat[min(np.searchsorted(cum, q), flat.size - 1)]) for q in (0.95, 0.68)}
        )
        ax.contourf(post.axes[1], post.axes[0], d, levels=30, cmap="Blues")
        if len(levels) == 2 and levels[0] < levels[1]:
            ax.contour(post.axes[1], post.axes[0], d, levels=levels, colors="k", linewidths=0.8)
        if "true" in summary[names[0]] and "true" in summary[names[1]]:
            ax.plot(summary[names[1]]["true"], summary[names[0]]["true"], "r*", ms=10)
        ax.set_xlabel(names[1])
        ax.set_ylabel(names[0])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

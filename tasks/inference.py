"""Parameter inference of one observed field, end to end (``rho infer`` and the pipeline).

:func:`infer_field` loads the model and the observed sample, evaluates log p(x_obs | θ) on the
parameter grid (:func:`rho_core.likelihood.grid_log_likelihood`) and summarises the posterior
(:mod:`rho_core.inference`); for a Gaussian-random-field store it adds the *exact* posterior on
the same grid (``grf_log_prob``) beside the model's. :func:`write_outputs` writes
``posterior.csv``, ``summary.json`` and ``posterior.png``; :func:`log_inference` logs the summary
into an MLflow run (metrics ``infer/…``, the grid and settings as params, the files as artifacts).
rho_core knows nothing of MLflow or files here.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks import tracking

__all__ = [
    "FieldInference",
    "aggregate_metrics",
    "auto_grid",
    "observed_fields",
    "infer_field",
    "inference_metrics",
    "log_inference",
    "temperature_from_summaries",
    "write_outputs",
]

OUTSIDE_WARN = 0.05
"""Warn when more than this fraction of a posterior lies outside the model's training range."""


def inference_metrics(meta: Mapping[str, Any], prefix: str = "infer") -> dict[str, float]:
    """Flat metrics of a ``summary.json`` document (``rho infer --out``): per grid parameter
    ``{prefix}/{name}/mean``, ``std``, ``map``, ``ci68_lo`` … ``ci95_hi``, ``edge_mass``,
    ``outside_training_range`` (the posterior's mass beyond the model's training range) and, when
    the observed store recorded it, ``true`` and ``pit``; plus ``{prefix}/nfe``,
    ``{prefix}/seconds``."""
    out: dict[str, float] = {}
    for name, s in meta.get("posterior", {}).items():
        base = f"{prefix}/{name}"
        keys = ("mean", "std", "map", "edge_mass", "true", "pit", "exact_mean", "exact_std",
                "outside_training_range")  # fmt: skip
        for key in keys:
            if key in s and s[key] is not None:
                out[f"{base}/{key}"] = float(s[key])
        for lv in ("ci68", "ci95"):
            if lv in s:
                out[f"{base}/{lv}_lo"] = float(s[lv][0])
                out[f"{base}/{lv}_hi"] = float(s[lv][1])
    for key in ("nfe", "seconds"):
        if key in meta:
            out[f"{prefix}/{key}"] = float(meta[key])
    return out


def log_inference(
    run_id: str, meta: Mapping[str, Any], out_dir: str | Path | None = None, prefix: str = "infer"
) -> dict[str, float]:
    """Log one inference into the MLflow run ``run_id``; returns the metrics logged.

    Params (under ``{prefix}.``): checkpoint step, observed store and index, method and its
    settings, the likelihood temperature, the grid, the prior. Artifacts (``{prefix}/``): every
    file of ``out_dir`` (posterior.csv, summary.json, posterior.png), else the summary as JSON.
    """
    metrics = inference_metrics(meta, prefix)
    tracking.log_metrics(run_id, metrics, step=int(meta.get("step") or 0))
    params = {
        "step": meta.get("step"),
        "observed": meta.get("observed"),
        "index": meta.get("index"),
        "method": meta.get("method"),
        "temperature": meta.get("temperature", 1.0),
        "settings": meta.get("settings", {}),
        "grid": {k: f"{v[0]:g}:{v[1]:g}:{v[2]}" for k, v in meta.get("grid", {}).items()},
        "prior": {k: ":".join(str(x) for x in v) for k, v in meta.get("prior", {}).items()},
    }
    tracking.log_params(run_id, {prefix: params})
    if out_dir is not None and Path(out_dir).is_dir():
        tracking.log_artifact(run_id, out_dir, artifact_path=prefix)
    else:
        tracking.log_dict(run_id, dict(meta), f"{prefix}/summary.json")
    return metrics


# ---------------------------------------------------------------------------------- the runner
@dataclass
class FieldInference:
    """One field's inference: ``meta`` (the ``summary.json`` document), the model posterior,
    the grid log-likelihoods ``(n_1, …, n_P)`` and their Monte-Carlo std, the exact posterior
    when the store's distribution is known (else None), the warnings printed, and with
    ``fit="gaussian"`` the fitted :class:`rho_core.inference.GaussianPosterior` of the model
    (``fitted``; the summary's numbers) and of the exact likelihood (``exact_fitted``)."""

    meta: dict
    posterior: Any
    log_likelihood: np.ndarray
    log_likelihood_std: np.ndarray
    exact: Any = None
    warnings: list[str] = field(default_factory=list)
    fitted: Any = None
    exact_fitted: Any = None


def _note(msg: str) -> None:
    print(msg, file=sys.stderr)


def auto_grid(store: Any, names: Sequence[str] | None = None, points: int = 0) -> list[tuple]:
    """A default grid over the parameters that vary in ``store``: each over the store's range
    (the model's training range when the store is the training store); ``points`` nodes per
    axis (default 41 for one parameter, 15 for two, 7 for more)."""
    from rho_core.errors import ConfigError

    params = np.asarray(store.params, dtype=np.float64)
    if names is None:
        names = [n for j, n in enumerate(store.param_names) if np.ptp(params[:, j]) > 0]
    if not names:
        raise ConfigError("the store's parameters do not vary: nothing to infer")
    count = points or {1: 41, 2: 15}.get(len(names), 7)
    out = []
    for n in names:
        j = list(store.param_names).index(n)
        lo, hi = float(params[:, j].min()), float(params[:, j].max())
        out.append((n, np.linspace(lo, hi, count)))
    return out


def exact_points_log_likelihood(store: Any, field_: np.ndarray, names, points, fixed) -> Any:
    """log p(x | θ) at the nodes ``points`` ``(G, P)`` for a Gaussian-random-field store
    (``grf_log_prob``), shape ``(G,)``; None for other kinds (no closed form) and log-normal
    fields."""
    if store.kind != "gaussian_random_field" or (store.provenance or {}).get("lognormal"):
        return None
    from rho_core.data.random_fields import grf_log_prob

    pts = np.asarray(points, dtype=np.float64)
    g = pts.shape[0]
    vals = {n: pts[:, i] for i, n in enumerate(names)}
    amp = vals.get("amplitude", np.full(g, float(fixed.get("amplitude", np.nan))))
    idx = vals.get("spectral_index", np.full(g, float(fixed.get("spectral_index", np.nan))))
    if not (np.all(np.isfinite(amp)) and np.all(np.isfinite(idx))) or np.any(amp <= 0):
        return None
    x = np.broadcast_to(field_[None], (g, *field_.shape))
    return grf_log_prob(x, amp, idx)


def infer_field(
    checkpoint: str | Path,
    observed: str | Path,
    index: int = 0,
    grids: Sequence[tuple[str, np.ndarray]] | None = None,
    fixed: Mapping[str, float] | None = None,
    priors: Mapping[str, tuple] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[float], None] | None = None,
    note: Callable[[str], None] = _note,
    zoom: int = 0,
    fit: str = "grid",
    zoom_width: float = 5.0,
    zoom_nodes: int = 0,
    whiten: bool = False,
    temperature: float = 1.0,
) -> FieldInference:
    """The posterior of the model's parameters given sample ``index`` of ``observed``.

    Args:
        checkpoint: checkpoint file or run directory (continuous conditioning).
        observed: store holding the observed field (same field shape as the model's).
        grids: ``[(name, nodes)]``; default :func:`auto_grid` over the parameters that vary.
        fixed: values of the model's other parameters; default the observed sample's own.
        priors: ``{name: spec}`` of :func:`rho_core.inference.parse_prior` (default flat).
        options: :func:`rho_core.likelihood.log_likelihood` options (``method``, …).
        batch_size, seed, device, progress: as :func:`rho_core.likelihood.grid_log_likelihood`.
        note: receives warnings and "fixing …" messages.
        zoom: refinement passes: after each pass the grid is replaced by one of as many nodes
            around the posterior (:func:`rho_core.inference.zoomed_axes`: mean ± 5 std, clipped
            to the model's training range); the summary is that of the last grid, and
            ``meta["passes"]`` lists every pass's grid and seconds.
        fit: ``"grid"``: moments, intervals and PIT of the grid posterior (trapezoid rule;
            needs several nodes per posterior σ); ``"gaussian"``: of the Gaussian fitted to the
            grid's log-posterior by least squares (:class:`rho_core.inference.GaussianPosterior`;
            for coarse grids, e.g. 3 nodes per axis over ± 2σ, and noisy log-likelihoods). Zoom
            passes then centre on the fit where it brackets the grid (its mass outside the
            grid ≤ 35 %; else on the grid posterior). Falls back to the grid, with a warning,
            when the log-posterior on the last grid is not concave.
        zoom_width: a zoomed grid spans mean ± ``zoom_width`` std (default 5; ~2 with
            ``fit="gaussian"`` and 3 nodes).
        zoom_nodes: nodes per axis of the zoomed grids (default 0: as many as the first).
        whiten: zoom passes lay their grid along the previous posterior's principal axes
            (:func:`rho_core.inference.whitened_frame`: θ = mean + L u, u ∈ ± ``zoom_width``,
            L L^T its covariance) instead of a tensor grid in θ; the summary is then a
            Gaussian in θ (fitted in u, or the u-grid's moments). For correlated parameters.
        temperature: the posterior uses the likelihood to this power, p(x | θ)^τ
            (:mod:`rho_core.calibration`; 1 = untouched, < 1 widens it by ≈ 1/√τ). Fit τ on
            separate simulated fields, never on the field being scored. ``log_likelihood``
            and ``posterior.csv`` keep the untempered values.

    Raises:
        ConfigError: a hash-conditioned or unconditional model, unknown parameters, an index
            outside the store, a field shape the model was not trained on.
    """
    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.store import open_store
    from rho_core.errors import ConfigError
    from rho_core.inference import (
        log_prior_grid,
        mass_outside,
        pass_posterior,
        refine_posterior,
    )
    from rho_core.likelihood import (
        check_inferable,
        default_control_variate,
        points_log_likelihood,
    )

    if fit not in ("grid", "gaussian"):
        raise ConfigError(f"--fit must be grid or gaussian, got {fit!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"--temperature must be a positive number, got {temperature}")
    if not zoom_width > 0:
        raise ConfigError(f"--zoom-width must be > 0, got {zoom_width}")
    if zoom_nodes < 0 or zoom_nodes == 1:
        raise ConfigError(f"--zoom-nodes must be 0 (as the first grid) or ≥ 2, got {zoom_nodes}")
    options = dict(options or {})
    priors = dict(priors or {})
    fixed = dict(fixed or {})
    store = open_store(observed)
    if not 0 <= index < store.n:
        raise ConfigError(f"--index {index} is outside the store's {store.n} samples")
    grids = list(grids) if grids else auto_grid(store)
    names = [n for n, _ in grids]
    if len(set(names)) != len(names):
        raise ConfigError(f"each parameter may have one --grid, got {names}")
    axes = [np.asarray(a, dtype=np.float64) for _, a in grids]
    log_prior = log_prior_grid(names, axes, priors)  # validates the prior names early
    loaded = load_for_sampling(checkpoint, device)
    check_inferable(loaded.model_config, names)
    has_head = bool(getattr(loaded.model_config.unet, "spectral_head", 0))
    cv = default_control_variate(
        options.get("method", "ode"), store.kind, options.get("control_variate", "auto"),
        has_head=has_head, differences=True,
    )  # fmt: skip
    if cv != options.get("control_variate", "auto"):
        note(f"Hutchinson control variate: {cv}")
    options["control_variate"] = cv
    if loaded.field_shape and tuple(loaded.field_shape) != tuple(store.field_shape):
        raise ConfigError(
            f"observed fields have shape {tuple(store.field_shape)} but the model was trained "
            f"on {tuple(loaded.field_shape)}"
        )
    field_, row = store.read(index)
    truth = {n: float(row[k]) for k, n in enumerate(store.param_names)}
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        note(msg)

    for n in loaded.param_names:  # other parameters: given, else the observed sample's value
        if n not in names and n not in fixed and n in truth:
            fixed[n] = truth[n]
            note(f"fixing {n} = {truth[n]:g} (the observed sample's value)")
    cfg = loaded.model_config.conditioning
    limits = []  # the training range of each grid parameter
    for n in names:
        j = list(cfg.param_names).index(n)
        limits.append((cfg.param_low[j], cfg.param_high[j]))
    for n, ax, (lo, hi) in zip(names, axes, limits, strict=True):
        if ax[0] < lo - 1e-9 * abs(lo) or ax[-1] > hi + 1e-9 * abs(hi):
            warn(
                f"warning: the grid of {n} [{ax[0]:g}, {ax[-1]:g}] leaves the training range "
                f"[{lo:g}, {hi:g}]; the model extrapolates there"
            )

    passes, runs = [], []

    def evaluate(points: np.ndarray, k: int) -> np.ndarray:
        t0 = time.perf_counter()
        sub = None if progress is None else (lambda f: progress((k + f) / (zoom + 1)))
        res = points_log_likelihood(
            loaded, field_, names, points, fixed, batch_size=batch_size, seed=seed,
            progress=sub, **options,
        )  # fmt: skip
        runs.append((res, time.perf_counter() - t0))
        return temperature * res.log_prob.numpy()

    steps = refine_posterior(
        names, axes, evaluate, priors, limits, zoom=zoom, fit=fit, width=zoom_width,
        nodes=zoom_nodes, whiten=whiten, note=note,
    )  # fmt: skip
    for st, (_, dt) in zip(steps, runs, strict=True):
        span = {
            n: [float(st.points[:, i].min()), float(st.points[:, i].max()), int(st.axes[i].size)]
            for i, n in enumerate(names)
        }
        passes.append({"grid": span, "seconds": dt})
        if st.frame is not None:
            passes[-1]["whitened"] = st.frame.describe()
    last, res = steps[-1], runs[-1][0]
    seconds, nfe = sum(dt for _, dt in runs), sum(r.nfe for r, _ in runs)
    axes, points, frame, log_prior = last.axes, last.points, last.frame, last.log_prior
    ll, post, fitted, shape = last.log_likelihood, last.post, last.fitted, last.log_prior.shape
    ll = ll / temperature  # the posterior is tempered; the reported log-likelihood is not
    if last.failed:
        warn(f"warning: Gaussian fit failed ({last.failed}); the grid posterior is reported")
    src = fitted or post
    summary = src.summary()
    exact_ll = exact_points_log_likelihood(store, field_, names, points, fixed)
    exact, exact_fitted = None, None
    if exact_ll is not None:
        exact_ll = exact_ll.reshape(shape)
        exact, exact_fitted, _ = pass_posterior(names, axes, exact_ll, log_prior, fit, frame)
        if fitted is None:
            exact_fitted = None
    exact_src = exact_fitted or exact
    for n, (lo, hi) in zip(names, limits, strict=True):
        out = mass_outside(summary[n]["mean"], summary[n]["std"], lo, hi)
        summary[n]["outside_training_range"] = out
        if out > OUTSIDE_WARN:
            warn(
                f"warning: {100 * out:.0f} % of the posterior of {n} lies outside the training "
                f"range [{lo:g}, {hi:g}]: the model's likelihood is extrapolated there and falls "
                "off too steeply, so this posterior is likely too narrow and pulled inward "
                "(docs/likelihood.md §6); train on a wider range for fields near its edges"
            )
    for n in names:
        if n in truth:
            summary[n]["true"] = truth[n]
            summary[n]["pit"] = src.pit(n, truth[n])
        if exact_src is not None:
            summary[n]["exact_mean"] = exact_src.mean(n)
            summary[n]["exact_std"] = exact_src.std(n)
        if fitted is not None:
            if summary[n]["edge_mass"] > 0.35:
                warn(
                    f"warning: the grid of {n} covers less than ± 1 std of the fitted "
                    f"posterior or misses its mean ({100 * summary[n]['edge_mass']:.0f} % of it "
                    "lies outside): the fit extrapolates; move or widen the grid, or --zoom 1"
                )
            continue
        if summary[n]["edge_mass"] > 0.01:
            warn(
                f"warning: {100 * summary[n]['edge_mass']:.1f} % of the posterior of {n} lies "
                "in the outermost grid cells; widen the grid"
            )
        ax = post.axes[list(names).index(n)]
        cell = float(np.max(np.diff(ax)))
        if summary[n]["std"] < cell:
            warn(
                f"warning: the posterior of {n} (std {summary[n]['std']:.3g}) is narrower than "
                f"the grid spacing ({cell:.3g}): its moments and intervals are unreliable; use "
                "more nodes or another zoom pass"
            )
    meta = {
        "checkpoint": str(loaded.path),
        "step": loaded.step,
        "observed": str(observed),
        "index": int(index),
        "observed_params": truth,
        "fixed": fixed,
        "grid": passes[-1]["grid"],
        "prior": {n: list(priors[n]) if n in priors else ["flat"] for n in names},
        "fit": "gaussian" if fitted is not None else "grid",
        "posterior": summary,
        "exact_posterior": "grf_log_prob on the same grid" if exact is not None else None,
        "nfe": nfe,
        "seconds": seconds,
        "passes": passes,
        "method": res.method,
        "divergence": res.divergence,
        "probes": res.probes,
        "steps": res.steps,
        "settings": {**options, "batch_size": batch_size, "seed": seed},
        "temperature": float(temperature),
    }
    if fitted is not None:
        meta["gaussian_fit"] = {"mean": fitted.loc.tolist(), "covariance": fitted.cov.tolist()}
    sd = res.log_prob_std.numpy().reshape(shape)
    return FieldInference(meta, post, ll, sd, exact, warnings, fitted, exact_fitted)


def write_outputs(inf: FieldInference, out_dir: str | Path) -> list[Path]:
    """``posterior.csv`` (one row per grid node: parameters, log-likelihood and its std, log
    prior, posterior density, and the exact log-likelihood when known), ``summary.json`` and
    ``posterior.png`` in ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    post = inf.posterior
    names, axes = list(post.names), post.axes
    frame = getattr(inf.fitted, "frame", None)
    if frame is not None:  # nodes θ = centre + L u; the density in θ is the u-density / |det L|
        pts = frame.points()
        mesh = [pts[:, i] for i in range(len(names))]
        jac = float(abs(np.linalg.det(frame.chol)))
    else:
        mesh = [m.reshape(-1) for m in np.meshgrid(*axes, indexing="ij")]
        jac = 1.0
    ll, sd = inf.log_likelihood.reshape(-1), inf.log_likelihood_std.reshape(-1)
    exact = None if inf.exact is None else inf.exact.log_likelihood.reshape(-1)
    with open(out / "posterior.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [*names, "log_likelihood", "log_likelihood_std", "log_prior", "posterior"]
            + (["exact_log_likelihood"] if exact is not None else [])
        )
        for k in range(ll.size):
            w.writerow(
                [*(float(m[k]) for m in mesh), float(ll[k]),
                 "" if math.isnan(sd[k]) else float(sd[k]),
                 float(post.log_prior.reshape(-1)[k]), float(post.density.reshape(-1)[k]) / jac]
                + ([float(exact[k])] if exact is not None else [])
            )  # fmt: skip
    (out / "summary.json").write_text(json.dumps(inf.meta, indent=2) + "\n")
    plot_posterior(
        post, inf.meta["posterior"], out / "posterior.png", exact=inf.exact,
        fitted=inf.fitted, exact_fitted=inf.exact_fitted,
    )  # fmt: skip
    return [out / "posterior.csv", out / "summary.json", out / "posterior.png"]


def plot_posterior(
    post, summary: dict, path: Path, exact=None, fitted=None, exact_fitted=None
) -> None:
    """Marginals with the 68/95 % intervals, the true value and (when known) the exact
    posterior's marginal; the joint for two parameters. With a Gaussian fit (``fitted``) the
    marginals are the fitted Gaussians on a fine axis and the grid's trapezoid marginal is
    drawn as points."""
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
        if fitted is not None:
            if fitted.frame is None:
                ax.plot(x, p, "o", color="0.5", ms=4, label="grid (trapezoid)")
            m, sd = fitted.mean(i), fitted.std(i)
            x = np.linspace(min(x[0], m - 4 * sd), max(x[-1], m + 4 * sd), 241)
            p = fitted.marginal_at(i, x)
            ax.plot(x, p, color="k", label="model (Gaussian fit)")
            if exact_fitted is not None:
                ax.plot(x, exact_fitted.marginal_at(i, x), color="C2", ls=":", label="exact")
        else:
            ax.plot(x, p, color="k", label="model")
            if exact is not None:
                ax.plot(x, exact.marginal(i), color="C2", ls=":", label="exact")
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
    if k == 2 and fitted is not None and fitted.frame is not None:
        _plot_frame(axs[0, 2], fitted, exact_fitted, summary, names)
    elif k == 2:
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


def _plot_frame(ax, fitted, exact_fitted, summary: dict, names) -> None:
    """The joint on a whitened grid: the nodes and the 1σ/2σ ellipses of the Gaussians."""
    pts = fitted.frame.points()
    ax.plot(pts[:, 1], pts[:, 0], "+", color="0.5", ms=6, label="nodes")
    t = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)])
    for g, color, label in ((fitted, "k", "model"), (exact_fitted, "C2", "exact")):
        if g is None:
            continue
        chol = np.linalg.cholesky(g.cov)
        for r, ls in ((1, "-"), (2, "--")):
            e = g.loc[:, None] + r * chol @ circle
            ax.plot(e[1], e[0], color=color, ls=ls, lw=1, label=f"{label} {r}σ")
    if "true" in summary[names[0]] and "true" in summary[names[1]]:
        ax.plot(summary[names[1]]["true"], summary[names[0]]["true"], "r*", ms=10)
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    ax.legend(fontsize=6)


# ------------------------------------------------------------------------- the pipeline's step
def observed_fields(store: Any, count: int, seed: int = 0) -> tuple[str, list[int], str]:
    """``(observed_store, indices, what)``: the fields the pipeline infers from.

    For a Gaussian-random-field training store: ``count`` *fresh* realisations (seed offset
    from the store's) at a held-out condition inside the training box — the geometric middle of
    the amplitudes and the midpoint between the two middle spectral indices — written beside
    the store as ``<store>-observed-<count>.zarr`` (reused when present). For other kinds:
    ``count`` samples of the training store itself, evenly spread (a weaker test: the model saw
    them).
    """
    from rho_core.data.store import open_store

    path = Path(store.path)
    if store.kind == "gaussian_random_field":
        prov = dict(store.provenance or {})
        amps = sorted(float(a) for a in prov["amplitudes"])
        idx = sorted(float(n) for n in prov["spectral_indices"])
        amp = float(np.exp(np.mean(np.log([amps[0], amps[-1]]))))
        mid = len(idx) // 2
        n_mid = idx[0] if len(idx) == 1 else 0.5 * (idx[mid - 1] + idx[mid])
        obs = path.with_name(f"{path.stem}-observed-{count}.zarr")
        try:
            ok = open_store(obs).n == count
        except Exception:  # noqa: BLE001 - absent or unreadable: (re)write it
            ok = False
        if not ok:
            from rho_core.data.random_fields import generate_random_field_store

            generate_random_field_store(
                obs, size=int(prov["size"]), dims=int(prov["dims"]), amplitudes=[amp],
                spectral_indices=[n_mid], realizations=count,
                seed=int(prov.get("seed", 0)) + 7919, lognormal=bool(prov.get("lognormal")),
                mode="w",
            )  # fmt: skip
        what = f"{count} fresh realisation(s) at amplitude {amp:g}, spectral_index {n_mid:g}"
        return str(obs), list(range(count)), what
    idx_ = np.unique(np.linspace(0, store.n - 1, min(count, store.n)).round().astype(int))
    return str(path), [int(i) for i in idx_], f"{len(idx_)} sample(s) of the training store"


def aggregate_metrics(infs: Sequence[FieldInference], prefix: str = "infer") -> dict[str, float]:
    """Over several fields, per parameter: ``{prefix}/{name}/abs_z_true`` (mean |mean − true| /
    std), and when the exact posterior is known ``abs_z_exact`` (mean |mean − exact mean| /
    exact std) and ``std_ratio`` (median model std / exact std)."""
    out: dict[str, float] = {}
    if not infs:
        return out
    for name in infs[0].posterior.names:
        rows = [inf.meta["posterior"][name] for inf in infs]
        z = [abs(r["mean"] - r["true"]) / r["std"] for r in rows if "true" in r and r["std"] > 0]
        if z:
            out[f"{prefix}/{name}/abs_z_true"] = float(np.mean(z))
        ex = [r for r in rows if "exact_mean" in r and r.get("exact_std", 0) > 0]
        if ex:
            out[f"{prefix}/{name}/abs_z_exact"] = float(
                np.mean([abs(r["mean"] - r["exact_mean"]) / r["exact_std"] for r in ex])
            )
            out[f"{prefix}/{name}/std_ratio"] = float(
                np.median([r["std"] / r["exact_std"] for r in ex])
            )
    return out


def temperature_from_summaries(
    paths: Sequence[str | Path], confidence: float = 0.9
) -> Any:  # rho_core.calibration.TemperatureFit
    """Fit a likelihood temperature on ``rho infer`` runs over *separate* simulated fields.

    Reads each ``summary.json`` (a file, or a directory holding one), takes every parameter's
    standardised error z = (true − mean) / std — with the std of an already tempered run
    (``temperature`` τ₀ ≠ 1) brought back to the untempered one, std·√τ₀ — and returns
    :func:`rho_core.calibration.fit_temperature` of them all. Use the result as
    ``rho infer --temperature`` on *other* fields.

    Raises:
        ConfigError: a missing or unreadable summary, one without true values (the observed
            store did not record its parameters), or fewer than 8 values in all.
    """
    from rho_core.calibration import fit_temperature, standardized_errors
    from rho_core.errors import ConfigError

    z = []
    for p in paths:
        f = Path(p) / "summary.json" if Path(p).is_dir() else Path(p)
        try:
            meta = json.loads(f.read_text())
            post, tau0 = meta["posterior"], float(meta.get("temperature", 1.0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{f}: not a readable rho infer summary.json ({exc})") from exc
        for name, r in post.items():
            if "true" not in r:
                raise ConfigError(
                    f"{f}: no true value of {name!r}; calibrate on simulated fields whose "
                    "store records their parameters"
                )
            z.append(standardized_errors(r["true"], r["mean"], r["std"] * math.sqrt(tau0)))
    return fit_temperature(np.asarray(z, dtype=np.float64), confidence)

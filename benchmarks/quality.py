"""Sample quality on the paper's 3-D experiment: spherical harmonics, trained end to end.

What it measures. The whole product path of the paper's 3-D experiment, at a chosen budget:

1. a spherical-harmonic store (``rho_core.data.spherical_harmonics``; default 32³, l ≤ 6, real
   convention, 49 volumes with negative m), reused when ``--out`` already holds one of the same
   size and l_max, and its minmax normalisation;
2. **calibration** (true vs true): the paper's Wasserstein score between *true* volumes of other
   harmonics and Y_5^2 (and for every condition, its nearest other harmonic). A score of 0.035 is
   no better than drawing a neighbouring harmonic; a voxel-shuffled Y_5^2 scores 0. This is why
   the spatial scores lead;
3. training of a recipe (``--config configs/quality/*.yaml``: ``model:`` and ``train:`` sections,
   as for ``rho train``) for ``--steps`` optimizer steps, capped by the wall-time budget
   ``--max-minutes`` (a short calibration run measures the step time and the run is shortened to
   fit, so the learning-rate schedule still ends; a hard stop guards the budget). ``--checkpoint``
   skips training and scores an existing checkpoint;
4. scores per sampler (``--samplers``, default DPM-Solver++ 10/20, DDIM 10/50, DDPM 1000 on all)
   with ``rho_core.evaluation.evaluate``: ``rel_l2`` (physical units), ``wasserstein`` (normalised
   space, the paper's score), ``power_spectrum`` error and ``condition_accuracy`` (the fraction of
   samples whose nearest true volume is their own: does the condition steer?), for Y_5^2 and as
   the mean (and worst) over all conditions;
5. the quality/steps curve: DDPM, DDIM and DPM-Solver++ at 10, 20, 50, 100, 1000 steps on
   ``--curve-conditions`` evenly spaced conditions (with Y_5^2); DDPM at 1000 steps is the paper's
   sampler. Saved as ``quality_vs_steps.png`` in ``--out``;
6. MLflow (unless ``--no-mlflow``): one run in experiment ``rho-quality`` with the recipe as
   params, every score as a metric, the figure and the JSON of all results.

How to run (the best recipe of docs/results.md, section 3a; measured: 60 min of training on two
cores, Y_5^2 rel_l2 0.049, mean 0.041; DDPM 1000 and the curve add ≈ 15 min):

    .venv/bin/python benchmarks/quality.py --config configs/quality/sh32-refine.yaml \\
        --max-minutes 60 --threads 2 --json /tmp/rho-quality/sh32-refine.json

Threads: with another job on a 2-core machine use ``--threads 1`` — two OpenMP threads competing
with a busy core ran 30× slower (6–8 s per step instead of 0.2). ``--set model.KEY=VALUE`` and
``--set train.KEY=VALUE`` override the recipe (docs/results.md, section 2).

Quick look (a few minutes): ``--size 16 --l-max 4 --steps 600 --curve-steps 10,20,50``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

PAPER_Y52_WASSERSTEIN = 0.035
TARGET = "l=5,m=2"
DEFAULT_SAMPLERS = "dpmpp:10,dpmpp:20,ddim:10,ddim:50,ddpm:1000"
CURVE_SAMPLERS = ("ddpm", "ddim", "dpmpp")
CURVE_STEPS = "10,20,50,100,1000"
# issue 7's targets for Y_5^2 and the mean over all conditions, with ≤ 50 sampler steps
TARGET_REL_L2 = 0.05
TARGET_WASSERSTEIN = 0.005


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def make_store(out: Path, size: int, l_max: int, pairs=None, name: str = "sh") -> Path:
    """A real-convention spherical-harmonic store with minmax normalisation (reused if there)."""
    from rho_core.data.normalization import fit_normalization
    from rho_core.data.spherical_harmonics import generate_spherical_harmonics
    from rho_core.data.store import open_store, store_exists

    path = out / f"{name}-{size}-l{l_max}.zarr"
    if store_exists(path):
        s = open_store(path)
        want = len(pairs) if pairs is not None else (l_max + 1) ** 2
        if tuple(s.field_shape) == (1, size, size, size) and s.n == want and s.normalization:
            return path
        shutil.rmtree(path)
    generate_spherical_harmonics(path, size=size, l_max=l_max, convention="real", lm=pairs)
    fit_normalization(path, "minmax", write=True)
    return path


def spread_conditions(l_max: int, k: int | None) -> list[tuple[int, int]] | None:
    """Evenly spaced ``k`` of all (l, m) pairs plus (5, 2) when present; None for all."""
    from rho_core.data.spherical_harmonics import lm_pairs

    pairs = lm_pairs(l_max, "real")
    if k is None or k >= len(pairs):
        return None
    idx = {round(i * (len(pairs) - 1) / max(k - 1, 1)) for i in range(k)}
    chosen = [pairs[i] for i in sorted(idx)]
    if (5, 2) in pairs and (5, 2) not in chosen:
        chosen[len(chosen) // 2] = (5, 2)
    return sorted(set(chosen))


def calibration(store_path: Path, target: str = TARGET) -> dict:
    """True-vs-true scores: what W1 and rel_l2 does a *wrong* (or shuffled) volume get?

    Returns ``{"target": {label: {"wasserstein", "rel_l2"}}, "nearest_other": {...}}``: for the
    target, the scores of every other true volume, a voxel-shuffled copy and all zeros; and over
    all conditions the mean/min of each condition's smallest W1 and rel_l2 to any other harmonic
    (the "gap between neighbouring harmonics" the targets must beat).
    """
    import numpy as np

    from rho_core import metrics
    from rho_core.data.normalization import Normalizer
    from rho_core.data.store import open_store
    from rho_core.evaluation import condition_label

    s = open_store(store_path)
    fields, params = s.read_batch(np.arange(s.n))
    fields = np.asarray(fields, np.float64)
    norm = Normalizer.from_dict(s.normalization)
    normed = np.asarray(norm.forward(fields), np.float64)
    labels = [condition_label(s.param_names, p) for p in params]
    n = len(labels)
    w = np.zeros((n, n))
    r = np.zeros((n, n))
    # W1 of two equal-size samples is the mean |difference| of their sorted values (the same
    # number scipy's wasserstein_distance gives; checked below), so sort each volume once
    srt = np.sort(normed.reshape(n, -1), axis=1)
    flat = fields.reshape(n, -1)
    for i in range(n):
        w[i] = np.abs(srt - srt[i]).mean(axis=1)
        r[i] = np.linalg.norm(flat - flat[i], axis=1) / np.linalg.norm(flat[i])
    if n > 1:
        assert abs(w[0, 1] - metrics.wasserstein(normed[1], normed[0])) < 1e-9
    out: dict = {"labels": labels}
    if target in labels:
        t = labels.index(target)
        rows = {labels[j]: {"wasserstein": w[t, j], "rel_l2": r[t, j]} for j in range(n) if j != t}
        shuffled = np.random.default_rng(0).permutation(fields[t].ravel()).reshape(fields[t].shape)
        rows["shuffled Y_5^2"] = {
            "wasserstein": metrics.wasserstein(norm.forward(shuffled), normed[t]),
            "rel_l2": metrics.rel_l2(shuffled, fields[t]),
        }
        zeros = np.zeros_like(fields[t])
        rows["all zeros"] = {
            "wasserstein": metrics.wasserstein(norm.forward(zeros), normed[t]),
            "rel_l2": metrics.rel_l2(zeros, fields[t]),
        }
        out["target"] = {k: {m: float(v) for m, v in d.items()} for k, d in rows.items()}
    big = np.where(np.eye(n, dtype=bool), np.inf, 0.0)
    nearest_w = (w + big).min(axis=1)
    nearest_r = (r + big).min(axis=1)
    out["nearest_other"] = {
        "wasserstein_mean": float(nearest_w.mean()),
        "wasserstein_min": float(nearest_w.min()),
        "rel_l2_mean": float(nearest_r.mean()),
        "rel_l2_min": float(nearest_r.min()),
    }
    return out


def noisy_end_probe(ckpt: str, store_path: Path, t_values=(None, 900, 700)) -> dict:
    """Does the *condition* steer? The network's x̂₀ from x_t at a few noise levels, per condition.

    For each ``t`` (``None``: T − 1, pure noise in practice), x_t = α_t x₀ + σ_t ε with the true
    x₀ of every condition; returns ``{t: {"accuracy", "rel_l2_mean"}}`` where accuracy is the
    fraction of conditions whose x̂₀ lies nearest (L2) to their own x₀ and rel_l2 is measured in
    the normalised space. At T − 1 only the condition can say which field it is: a network that
    learned to read the field off x_t instead scores about chance there while scoring 1 at
    lower t.
    """
    import numpy as np
    import torch

    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.store import open_store
    from rho_core.diffusion import x0_from_output
    from rho_core.evaluation import condition_accuracy
    from rho_core.metrics import error_anatomy

    loaded = load_for_sampling(ckpt, "cpu")
    model = loaded.model
    s = open_store(store_path)
    fields, params = s.read_batch(np.arange(s.n))
    x0 = torch.as_tensor(np.asarray(loaded.normalizer.forward(fields), np.float32))
    sch = model.schedule
    out = {}
    gen = torch.Generator().manual_seed(0)
    for t in t_values:
        t = sch.T - 1 if t is None else int(t)
        if not 0 <= t < sch.T:
            raise ValueError(f"probe timestep {t} is outside the schedule's 0 … {sch.T - 1}")
        tt = torch.full((x0.shape[0],), t, dtype=torch.int64)
        a, sg = sch.alpha(tt).float(), sch.sigma(tt).float()
        shape = (-1, *([1] * (x0.ndim - 1)))
        x_t = a.reshape(shape) * x0 + sg.reshape(shape) * torch.randn(x0.shape, generator=gen)
        preds = []
        with torch.inference_mode():
            for i in range(0, x0.shape[0], 8):
                o = model(x_t[i : i + 8], tt[i : i + 8], torch.as_tensor(params[i : i + 8]))
                preds.append(x0_from_output(model.prediction, sch, x_t[i : i + 8],
                                            tt[i : i + 8], o.float()))  # fmt: skip
        pred = torch.cat(preds).numpy()
        ref = x0.numpy()
        rel = np.linalg.norm((pred - ref).reshape(len(ref), -1), axis=1) / np.linalg.norm(
            ref.reshape(len(ref), -1), axis=1
        )
        out[t] = {
            "lambda": float(0.5 * sch.log_snr_table[t]),
            "accuracy": condition_accuracy(pred, ref),
            "rel_l2_mean": float(rel.mean()),
            # where the error sits (normalised units): inside the stem's blocks? near the centre?
            "anatomy": error_anatomy(
                pred, ref, block=max(2, model.cfg.unet.patch_size), dims=ref.ndim - 2
            ),
        }
    return out


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def resolved_config(config: str | None, sets: list[str], out: Path) -> str | None:
    """``config`` with ``--set section.key=value`` overrides (YAML values) applied and checked by
    :func:`rho_core.config.resolve_config` (an unknown key names itself), as a file."""
    import yaml

    from rho_core.config import resolve_config

    if not sets:
        return config
    over = {}
    for item in sets:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not (sep and dot and section in ("model", "train", "evaluate") and name):
            raise SystemExit(f"--set wants model.KEY=VALUE or train.KEY=VALUE, got {item!r}")
        over[key] = yaml.safe_load(value)
    cfg = resolve_config(config, over).to_dict()
    cfg.pop("data", None)
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def train_recipe(args, store: Path, run_dir: Path) -> dict:
    """Train ``args.config`` on ``store`` within the budget (``--max-minutes``, else the recipe's
    ``train.max_minutes``) through the one budgeted entry, :func:`rho_core.run.train_budgeted`
    (a short calibration run plans the steps so the learning-rate schedule ends; a clean stop
    with a checkpoint guards the budget); returns a summary dict."""
    from rho_core.model import DiffusionModel
    from rho_core.run import resolve_for_store, train_budgeted

    over = {"train.batch_size": args.batch_size, "train.lr": args.lr,
            "train.precision": args.precision, "train.steps": args.steps,
            "train.checkpoint_every": 0, "train.checkpoint_every_seconds": 120.0}  # fmt: skip
    mcfg, cfg = resolve_for_store(store, args.config, over)
    tcfg = cfg.train
    minutes = args.max_minutes if args.max_minutes is not None else tcfg.max_minutes
    losses: list[float] = []
    t_train = time.perf_counter()

    def callback(step: int, m: dict) -> None:
        losses.append(m["loss"])
        if step % 100 == 0:
            log(f"  step {step} loss {m['loss']:.4f} ({time.perf_counter() - t_train:.0f} s)")

    res = train_budgeted(store, run_dir, mcfg, tcfg, minutes, scratch_parent=args.out,
                         callback=callback)  # fmt: skip
    if res.get("calibration_step_s"):
        log(f"  calibration {res['calibration_step_s']:.2f} s/step -> {res['planned_steps']} steps")
    tail = losses[-max(1, len(losses) // 10) :]
    n_params = sum(p.numel() for p in DiffusionModel(mcfg).parameters())
    return {
        "config": args.config,
        "model_config": mcfg.to_dict(),
        "parameters": n_params,
        "planned_steps": res["planned_steps"],
        "steps_done": len(losses),
        "stopped_by_budget": bool(res.get("stopped_by_budget")),
        "checkpoint": res.get("checkpoint"),
        "calibration_step_s": res.get("calibration_step_s"),
        "wall_s": res["wall_s"],
        "final_loss": losses[-1] if losses else None,
        "loss_last10pct_mean": sum(tail) / len(tail) if losses else None,
        "batch_size": tcfg.batch_size,
        "lr": tcfg.lr,
        "precision": tcfg.precision,
        "device": tcfg.device,
    }


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------
def score(ckpt: str, store: Path, sampler: str, steps: int, guidance: float) -> dict:
    from rho_core.evaluation import evaluate

    t1 = time.perf_counter()
    r = evaluate(ckpt, store, sampler=sampler, steps=steps, guidance=guidance, seed=0,
                 max_conditions=0, batch_size=8, device="cpu")  # fmt: skip
    r["wall_s"] = time.perf_counter() - t1
    r["rel_l2_max"] = max(v["rel_l2"] for v in r["per_condition"].values())
    r["wasserstein_max"] = max(v["wasserstein"] for v in r["per_condition"].values())
    return r


def _probe_ts(text: str) -> tuple:
    """``"last,900,0"`` → ``(None, 900, 0)`` (None: the schedule's last step)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == "last":
            out.append(None)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"probe timestep {part!r} is neither 'last' nor ≥ 0")
    if not out:
        raise argparse.ArgumentTypeError("give at least one probe timestep")
    return tuple(out)


def parse_samplers(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (v.strip() for v in text.split(","))):
        name, _, k = item.strip().partition(":")
        out.append((name, int(k)))
    return out


def _f(v, width: int = 8, digits: int = 4) -> str:
    return f"{'n/a':>{width}}" if v is None else f"{v:{width}.{digits}f}"


def print_calibration(cal: dict) -> None:
    print("\ncalibration — true volumes scored against the true Y_5^2 (what a WRONG answer gets)")
    print(f"{'volume':<16} {'W1 (norm)':>9} {'rel_l2':>8}")
    rows = cal.get("target", {})
    picks = ["l=4,m=2", "l=0,m=0", "l=5,m=1", "l=5,m=3", "l=5,m=-2", "l=6,m=2"]
    nearest = sorted((k for k in rows if k.startswith("l=")), key=lambda k: rows[k]["wasserstein"])[
        :2
    ]
    for k in [*dict.fromkeys([*picks, *nearest]), "shuffled Y_5^2", "all zeros"]:
        if k in rows:
            print(f"{k:<16} {_f(rows[k]['wasserstein'], 9)} {_f(rows[k]['rel_l2'])}")
    no = cal["nearest_other"]
    print(
        f"every condition vs its nearest OTHER harmonic: W1 mean {no['wasserstein_mean']:.4f} "
        f"(min {no['wasserstein_min']:.4f}), rel_l2 mean {no['rel_l2_mean']:.3f} "
        f"(min {no['rel_l2_min']:.3f})"
    )


def print_scores(evals: dict, paper: float) -> None:
    print(
        f"\nscores (targets: rel_l2 ≤ {TARGET_REL_L2}, W1 ≤ {TARGET_WASSERSTEIN}; "
        f"paper W1(Y_5^2) ≈ {paper})"
    )
    print(
        f"{'sampler':<12} {'condition':<12} {'rel_l2':>8} {'W1 (norm)':>9} {'P(k) err':>8} "
        f"{'cond acc':>8} {'rel max':>8} {'eval s':>7}"
    )
    for name, r in evals.items():
        y = r["per_condition"].get(TARGET, {})
        print(
            f"{name:<12} {TARGET:<12} {_f(y.get('rel_l2'))} {_f(y.get('wasserstein'), 9)} "
            f"{_f(y.get('power_spectrum'))} {'':>8} {'':>8} {r['wall_s']:7.0f}"
        )
        print(
            f"{name:<12} {'mean of ' + str(r['n_conditions']):<12} {_f(r['rel_l2_mean'])} "
            f"{_f(r['wasserstein_mean'], 9)} {_f(r.get('power_spectrum_mean'))} "
            f"{_f(r.get('condition_accuracy'), 8, 3)} {_f(r['rel_l2_max'])} {'':>7}"
        )


def curve_figure(curves: dict, path: Path, paper: float):
    """Figure of mean rel_l2 and W1 vs steps per sampler; saved to ``path``, returned."""
    from rho_core.plots import quality_vs_steps

    fig = quality_vs_steps(
        {s: {k: v["rel_l2_mean"] for k, v in c.items()} for s, c in curves.items()},
        metric="rel_l2 (mean)",
        references={f"target {TARGET_REL_L2}": TARGET_REL_L2},
    )
    fig.savefig(path, dpi=120)
    fig_w = quality_vs_steps(
        {s: {k: v["wasserstein_mean"] for k, v in c.items()} for s, c in curves.items()},
        metric="Wasserstein W1 (mean)",
        references={f"paper {paper}": paper, f"target {TARGET_WASSERSTEIN}": TARGET_WASSERSTEIN},
    )
    fig_w.savefig(path.with_name(path.stem + "_wasserstein.png"), dpi=120)
    return fig, fig_w


def log_mlflow(result: dict, figures: dict) -> str:
    """One run in experiment ``rho-quality``; returns its id."""
    from tasks import tracking

    tracking.configure()
    run_id = tracking.start_run(
        "quality", run_name=f"quality-sh{result['size']}-l{result['l_max']}"
    )
    try:
        tr = result.get("train") or {}
        tracking.log_params(run_id, tracking.flatten({
            "size": result["size"], "l_max": result["l_max"], "threads": result["threads"],
            "train": {k: v for k, v in tr.items() if k not in ("checkpoint",)},
        }))  # fmt: skip
        metrics: dict[str, float] = {}
        for name, r in result["evaluations"].items():
            y = r["per_condition"].get(TARGET, {})
            for key in ("rel_l2", "wasserstein", "power_spectrum"):
                if key in y:
                    metrics[f"{name}/Y52/{key}"] = y[key]
            for key in ("rel_l2_mean", "wasserstein_mean", "power_spectrum_mean",
                        "condition_accuracy", "rel_l2_max"):  # fmt: skip
                if r.get(key) is not None:
                    metrics[f"{name}/{key}"] = r[key]
        for t, p in result.get("noisy_end_probe", {}).items():
            metrics[f"probe/t{t}/accuracy"] = p["accuracy"]
            metrics[f"probe/t{t}/rel_l2_mean"] = p["rel_l2_mean"]
            if "anatomy" in p:
                metrics[f"probe/t{t}/within_block_fraction"] = p["anatomy"]["within_block_fraction"]
        for sampler, c in result.get("curve", {}).items():
            for k, r in c.items():
                metrics[f"curve/{sampler}-{k}/rel_l2_mean"] = r["rel_l2_mean"]
                metrics[f"curve/{sampler}-{k}/wasserstein_mean"] = r["wasserstein_mean"]
        tracking.log_metrics(run_id, metrics)
        for name, fig in figures.items():
            tracking.log_figure(run_id, fig, name)
        tracking.log_dict(run_id, result, "quality.json")
    except Exception:
        tracking.end_run(run_id, "FAILED")
        raise
    tracking.end_run(run_id)
    return run_id


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="recipe YAML (model:/train: sections)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one recipe value, e.g. --set model.schedule_shift=0 (repeatable)",
    )
    ap.add_argument("--size", type=int, default=32, help="voxels per axis (default 32)")
    ap.add_argument("--l-max", type=int, default=6, help="highest degree l (default 6)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: recipe)")
    ap.add_argument("--max-minutes", type=float, default=None, help="training wall-time budget")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default=None)
    ap.add_argument("--checkpoint", default=None, help="score this checkpoint; skip training")
    ap.add_argument("--samplers", default=DEFAULT_SAMPLERS, help=f"default {DEFAULT_SAMPLERS}")
    ap.add_argument("--guidance", type=float, default=1.0, help="CFG scale (default 1: none)")
    ap.add_argument("--curve-steps", default=CURVE_STEPS, help="'' to skip the curve")
    ap.add_argument("--curve-conditions", type=int, default=7)
    ap.add_argument(
        "--probe-t", type=_probe_ts, default=(None, 900, 700),
        help="timesteps of the x̂₀ probe, comma-separated, 'last' = T − 1 (default last,900,700)",
    )  # fmt: skip
    ap.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "rho-quality"))
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)

    t0 = time.perf_counter()
    store = make_store(out, args.size, args.l_max)
    log(f"store {store} ({time.perf_counter() - t0:.1f} s)")
    cal = calibration(store)
    print_calibration(cal)

    args.config = resolved_config(args.config, args.set, out)
    tr = None
    ckpt = args.checkpoint
    if ckpt is None:
        run_dir = out / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        tr = train_recipe(args, store, run_dir)
        log(f"trained {tr['steps_done']} steps in {tr['wall_s']:.0f} s, loss {tr['final_loss']}")
        ckpt = tr["checkpoint"]
        if ckpt is None:
            log("no checkpoint was written; nothing to evaluate")
            return 1

    probe = noisy_end_probe(ckpt, store, args.probe_t)
    log("  noisy-end probe: " + ", ".join(
        f"t={t} (λ {p['lambda']:.1f}): accuracy {p['accuracy']:.2f}, rel {p['rel_l2_mean']:.3f}"
        for t, p in probe.items()))  # fmt: skip
    evals = {}
    for sampler, k in parse_samplers(args.samplers):
        r = score(ckpt, store, sampler, k, args.guidance)
        evals[f"{sampler}-{k}"] = r
        log(f"  {sampler}-{k}: rel_l2 mean {r['rel_l2_mean']:.4f}, W1 mean "
            f"{r['wasserstein_mean']:.4f}, accuracy {r.get('condition_accuracy')} "
            f"({r['wall_s']:.0f} s)")  # fmt: skip

    curve: dict = {}
    figures: dict = {}
    if args.curve_steps:
        sub = spread_conditions(args.l_max, args.curve_conditions)
        cstore = store if sub is None else make_store(out, args.size, args.l_max, sub, "curve")
        for sampler in CURVE_SAMPLERS:
            curve[sampler] = {}
            for k in (int(v) for v in args.curve_steps.split(",")):
                r = score(ckpt, cstore, sampler, k, args.guidance)
                curve[sampler][k] = r
                log(f"  curve {sampler}-{k}: rel_l2 {r['rel_l2_mean']:.4f} W1 "
                    f"{r['wasserstein_mean']:.4f} ({r['wall_s']:.0f} s)")  # fmt: skip
        fig, fig_w = curve_figure(curve, out / "quality_vs_steps.png", PAPER_Y52_WASSERSTEIN)
        figures = {"quality_vs_steps.png": fig, "quality_vs_steps_wasserstein.png": fig_w}

    print("\nnoisy-end probe — x̂₀ from x_t = α x₀ + σ ε, nearest-truth accuracy over conditions")
    for t, p in probe.items():
        an = p["anatomy"]
        rad = an["radial"]
        shells = [f"r∈[{r['r_lo']:g},{r['r_hi']:g}) {r['energy_fraction']:.2f}" for r in rad[:-1]]
        if rad:
            shells.append(f"r≥{rad[-1]['r_lo']:g} {rad[-1]['energy_fraction']:.2f}")
        where = (f"; error energy inside blocks {an['within_block_fraction']:.2f}, "
                 f"by radius {', '.join(shells)}") if rad else ""  # fmt: skip
        print(f"  t = {t:4d} (λ = {p['lambda']:6.2f}): accuracy {p['accuracy']:.2f}, "
              f"rel_l2 (normalised) {p['rel_l2_mean']:.3f}{where}")  # fmt: skip
    print_scores(evals, PAPER_Y52_WASSERSTEIN)
    if curve:
        ks = sorted({k for c in curve.values() for k in c})
        n_c = next(iter(next(iter(curve.values())).values()))["n_conditions"]
        print(f"\nquality vs steps: mean rel_l2 / mean W1 over {n_c} conditions (incl. Y_5^2)")
        print(f"{'sampler':<8} " + " ".join(f"{k:>15}" for k in ks))
        for s, c in curve.items():
            print(f"{s:<8} " + " ".join(
                f"{c[k]['rel_l2_mean']:7.4f}/{c[k]['wasserstein_mean']:.4f}" if k in c else
                f"{'':>15}" for k in ks))  # fmt: skip
    if tr:
        print(
            f"\ntraining: {tr['config'] or 'default recipe'}, "
            f"{tr['parameters'] / 1e6:.2f} M params, "
            f"{tr['steps_done']} steps (planned {tr['planned_steps']}"
            f"{', stopped by budget' if tr['stopped_by_budget'] else ''}), batch "
            f"{tr['batch_size']}, lr {tr['lr']:g}, {tr['precision']}, device {tr['device']}, "
            f"wall {tr['wall_s'] / 60:.1f} min; loss last-10% mean "
            f"{_f(tr['loss_last10pct_mean']).strip()}"
        )
    print(
        f"threads {torch.get_num_threads()}, total wall {(time.perf_counter() - t0) / 60:.1f} min"
    )

    result = {
        "size": args.size,
        "l_max": args.l_max,
        "paper_y52_wasserstein": PAPER_Y52_WASSERSTEIN,
        "targets": {"rel_l2": TARGET_REL_L2, "wasserstein": TARGET_WASSERSTEIN},
        "calibration": cal,
        "train": tr,
        "checkpoint": str(ckpt),
        "guidance": args.guidance,
        "noisy_end_probe": {str(t): p for t, p in probe.items()},
        "evaluations": evals,
        "curve": {s: {str(k): v for k, v in c.items()} for s, c in curve.items()},
        "threads": torch.get_num_threads(),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    if not args.no_mlflow:
        run_id = log_mlflow(result, figures)
        print(f"MLflow run {run_id} (experiment rho-quality)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

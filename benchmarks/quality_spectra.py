"""Line recovery on rotational spectra (the paper's failed 1-D case), trained end to end.

What it does:

1. **Data** (``rho_core.data.rotational``; reused when ``--out`` already holds them): a training
   store of ``--rotors`` random asymmetric tops × ``--per-rotor`` random (T, μ_a, μ_b, μ_c), and
   two held-out stores: ``heldout`` — new (T, μ) draws for the *training* rotors (the set the
   targets refer to) — and ``newrotor`` — ``--new-rotors`` rotors never seen in training
   (interpolation in A, B, C: reported, not targeted). The training store gets the per-store
   ``log`` normalisation (``normalization.spectrum_normalization``).
2. **Training** of a recipe (``--config``: ``model:``/``train:`` YAML as for ``rho train``,
   resolved by :func:`rho_core.run.resolve_for_store`; ``--set section.key=value`` overrides)
   within ``--max-minutes`` by :func:`rho_core.run.train_budgeted`: a short calibration measures
   the step time and the run is planned to fit, so the learning-rate schedule ends; a clean stop
   guards the budget. ``--continue-to STEPS`` resumes ``--run-name`` to spend the rest of a
   budget. ``--checkpoint`` skips training.
3. **Scores** per held-out store with ``rho_core.spectral_lines.line_scores``: recall and
   precision of lines within ``--decades`` of the strongest, position error (grid points),
   median relative intensity error, per-decade errors, W1 (normalised) and rel_l2 (physical),
   plus a figure (true vs generated, log scale, line list marked) per store.

Targets (issue 16) at 8,192 points within 60 CPU-minutes, on the held-out (T, μ) set: recall and
precision ≥ 0.9, median position error ≤ 1 point, median intensity error ≤ 10 %.

Run (the recipe of docs/spectra.md; one thread):

    .venv/bin/python benchmarks/quality_spectra.py --config configs/quality/spectra8k.yaml \\
        --max-minutes 60 --threads 1 --out data/spectra --json /tmp/spectra8k.json

Architecture comparison at small scale (2,048 points, 2–8 GHz): ``--points 2048 --f-max 8000``
with ``--set model.fourier_channels=0`` etc. (docs/spectra.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TARGETS = {"recall": 0.9, "precision": 0.9, "position_error": 1.0, "intensity_error": 0.10}


class _Stop(Exception):
    """Raised from the training callback when the wall-time budget is spent."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def make_stores(args) -> dict[str, Path]:
    """The training store and the two held-out stores (reused when they match)."""
    from rho_core.data import rotational as R
    from rho_core.data.store import open_store, store_exists

    grid = R.Grid(args.f_min, args.f_max, args.points)
    rotors = R.random_rotors(args.rotors + args.new_rotors, seed=args.seed)
    train_rot, new_rot = rotors[: args.rotors], rotors[args.rotors :]
    sets = {
        "train": R.random_conditions(train_rot, args.per_rotor, seed=args.seed + 1),
        "heldout": R.random_conditions(train_rot, args.heldout, seed=args.seed + 2),
        "newrotor": R.random_conditions(new_rot, args.heldout, seed=args.seed + 3),
    }
    tag = f"r{args.rotors}x{args.per_rotor}-n{args.points}-f{int(args.f_min)}-{int(args.f_max)}"
    paths = {}
    for name, cond in sets.items():
        if len(cond) == 0:
            continue
        path = Path(args.out) / f"rot-{tag}-s{args.seed}-{name}.zarr"
        ok = False
        if store_exists(path):
            s = open_store(path)
            ok = s.n == len(cond) and R.grid_of(path) == grid
            ok = ok and (name != "train" or bool(s.normalization))
        if not ok:
            t0 = time.perf_counter()
            R.generate_rotational_store(
                path, cond, grid, mode="w", normalization=args.normalization if name == "train"
                else None,
            )  # fmt: skip
            log(f"  generated {name}: {len(cond)} spectra in {time.perf_counter() - t0:.0f} s")
        paths[name] = path
    return paths


# ---------------------------------------------------------------------------------------------
# model and training
# ---------------------------------------------------------------------------------------------
def overrides(sets: list[str]) -> dict:
    """``--set section.key=value`` items as a dotted-key override layer (values parsed as YAML)."""
    import yaml

    out = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise SystemExit(f"--set takes model.KEY=VALUE or train.KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def resolve(store: Path, config: str | None, sets: list[str], extra: dict | None = None):
    """``(ModelConfig, RunConfig)`` for the store through the project's one resolver
    (:func:`rho_core.run.resolve_for_store`: the recipe file, then ``--set``, then ``extra``)."""
    from rho_core.run import resolve_for_store

    return resolve_for_store(store, config, overrides(sets), extra)


def train_budget(mcfg, train_cfg, store: Path, run_dir: Path, minutes: float) -> dict:
    """Train within ``minutes`` with :func:`rho_core.run.train_budgeted` (calibrated plan so the
    learning-rate schedule ends in the budget, clean stop at budget + 30 s)."""
    from rho_core.model import DiffusionModel
    from rho_core.run import train_budgeted

    losses: list[float] = []
    t0 = time.perf_counter()

    def callback(step: int, m: dict) -> None:
        losses.append(m["loss"])
        if step % 100 == 0:
            log(f"  step {step} loss {m['loss']:.4f} ({time.perf_counter() - t0:.0f} s)")

    res = train_budgeted(store, run_dir, mcfg, train_cfg, minutes or 0.0,
                         scratch_parent=run_dir.parent, callback=callback)  # fmt: skip
    tail = losses[-max(1, len(losses) // 10) :]
    wall = time.perf_counter() - t0
    return {
        **{k: v for k, v in res.items() if isinstance(v, int | float | str | bool) or v is None},
        "model_config": mcfg.to_dict(),
        "parameters": sum(p.numel() for p in DiffusionModel(mcfg).parameters()),
        "steps_done": len(losses),
        "total_wall_s": wall,
        "s_per_step": wall / max(1, len(losses)),
        "loss_last10pct_mean": sum(tail) / len(tail) if losses else None,
    }


def continue_training(mcfg, train_cfg, store: Path, run_dir: Path, minutes: float,
                      total_steps: int, lr: float) -> dict:  # fmt: skip
    """Resume ``run_dir`` from its newest checkpoint to ``total_steps`` with peak ``lr`` (a warm
    restart of the cosine: the schedule is recomputed for the new length), within ``minutes``.
    Used to spend the rest of a budget when the first plan ended early (docs/results.md,
    "Rotational spectra")."""
    import dataclasses

    from rho_core.run import train_budgeted

    cfg = dataclasses.replace(train_cfg, steps=int(total_steps), lr=float(lr))
    steps: list[int] = []
    t0 = time.perf_counter()
    res = train_budgeted(store, run_dir, mcfg, cfg, minutes or 0.0, plan=False, resume=True,
                         callback=lambda s, m: steps.append(s))  # fmt: skip
    wall = time.perf_counter() - t0
    return {
        "checkpoint": str(res.get("checkpoint")),
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        "wall_s": wall,
        "s_per_step": wall / max(1, len(steps)),
        "lr": lr,
    }


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------
def score_store(ckpt: str, store: Path, sampler: str, steps: int, decades: float,
                figure: Path | None = None, limit: int | None = None) -> dict:  # fmt: skip
    """Generate one spectrum per condition of ``store`` and score it against the truth."""
    import numpy as np

    from rho_core.checkpoint import load_for_sampling
    from rho_core.data import rotational as R
    from rho_core.data.store import open_store
    from rho_core.evaluation import generate
    from rho_core.spectral_lines import aggregate_scores, line_scores

    s = open_store(store)
    n = s.n if limit is None else min(limit, s.n)
    truth = np.asarray(s.fields[:n], dtype=np.float64)
    params = np.asarray(s.params[:n])
    lines = R.read_lines(store)[:n]
    grid = R.grid_of(store)
    loaded = load_for_sampling(ckpt, "cpu")
    t0 = time.perf_counter()
    gen, _ = generate(loaded, params, sampler=sampler, steps=steps, seed=0, batch_size=8)
    gen_s = time.perf_counter() - t0
    per = [
        line_scores(
            gen[i, 0], truth[i, 0], lines[i], grid, decades=decades, normalizer=loaded.normalizer
        )  # fmt: skip
        for i in range(n)
    ]
    out = aggregate_scores(per)
    out.update({"n": n, "sampler": f"{sampler}:{steps}", "generate_s": gen_s})
    if figure is not None:
        from rho_core.plots_spectra import spectrum_figure

        i = int(np.argsort([p["recall"] for p in per])[len(per) // 2])  # the median sample
        fig = spectrum_figure(
            grid.frequencies(), truth[i, 0], gen[i, 0], lines[i], decades=decades,
            title=f"{store.name} #{i}: recall {per[i]['recall']:.2f}, "
            f"precision {per[i]['precision']:.2f}",
        )  # fmt: skip
        fig.savefig(figure, dpi=110)
        out["figure"] = str(figure)
    return out


def nearest_neighbour_baseline(train: Path, test: Path, decades: float) -> dict:
    """Calibration without a network: score, for each test condition, the true spectrum of the
    nearest *training* condition (parameters scaled to [0, 1] by the training ranges). For the
    held-out (T, μ) set the nearest neighbour has the same molecule, so its lines sit at exactly
    the right frequencies and only the intensities differ — the bar a model must clear on
    intensities; for new molecules it shows what memorisation gives."""
    import numpy as np

    from rho_core.data import rotational as R
    from rho_core.data.store import open_store
    from rho_core.spectral_lines import aggregate_scores, line_scores

    tr, te = open_store(train), open_store(test)
    ptr, pte = np.asarray(tr.params[:]), np.asarray(te.params[:])
    lo, hi = ptr.min(axis=0), ptr.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    d = (((pte[:, None, :] - ptr[None]) / scale) ** 2).sum(-1)
    nn = d.argmin(axis=1)
    lines, grid = R.read_lines(test), R.grid_of(test)
    per = [
        line_scores(
            np.asarray(tr.fields[int(j), 0]),
            np.asarray(te.fields[i, 0]),
            lines[i],
            grid,
            decades=decades,
        )  # fmt: skip
        for i, j in enumerate(nn)
    ]
    out = aggregate_scores(per)
    out["sampler"] = "nearest"
    return out


def print_table(results: dict) -> None:
    cols = ("recall", "precision", "position_error", "intensity_error", "wasserstein", "rel_l2")
    print(f"{'set':<10} {'sampler':<10} " + " ".join(f"{c:>15}" for c in cols))
    for name, r in results.items():
        vals = " ".join(f"{r.get(c, float('nan')):>15.4f}" for c in cols)
        print(f"{name:<10} {r['sampler']:<10} {vals}")
    print("targets (heldout): " + ", ".join(f"{k} {'≥' if k in ('recall', 'precision') else '≤'} "
                                           f"{v}" for k, v in TARGETS.items()))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="recipe YAML (model:/train:)")
    p.add_argument("--set", action="append", default=[], help="override, e.g. model.patch_size=8")
    p.add_argument("--out", default="data/spectra", help="stores and runs go here")
    p.add_argument("--run-name", default=None, help="run folder name under --out")
    p.add_argument("--points", type=int, default=8192)
    p.add_argument("--f-min", type=float, default=2000.0)
    p.add_argument("--f-max", type=float, default=26000.0)
    p.add_argument("--rotors", type=int, default=6)
    p.add_argument("--per-rotor", type=int, default=200)
    p.add_argument("--heldout", type=int, default=8, help="held-out conditions per rotor")
    p.add_argument("--new-rotors", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--normalization", default="log", choices=["log", "asinh", "minmax"])
    p.add_argument("--max-minutes", type=float, default=55.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", default=None, help="score this checkpoint (skip training)")
    p.add_argument("--sampler", default="dpmpp:20", help="METHOD:STEPS")
    p.add_argument("--decades", type=float, default=2.0)
    p.add_argument("--limit", type=int, default=None, help="score at most this many per set")
    p.add_argument(
        "--continue-to", type=int, default=None, metavar="STEPS",
        help="resume --run-name from its newest checkpoint to STEPS within --max-minutes",
    )  # fmt: skip
    p.add_argument("--continue-lr", type=float, default=5e-4, help="peak lr of the continuation")
    p.add_argument("--prepare-only", action="store_true", help="only write the stores")
    p.add_argument("--no-score", action="store_true")
    p.add_argument("--json", default=None, help="write all results here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    stores = make_stores(args)
    result: dict = {"args": vars(args), "stores": {k: str(v) for k, v in stores.items()}}
    result["baseline"] = {
        name: nearest_neighbour_baseline(stores["train"], stores[name], args.decades)
        for name in ("heldout", "newrotor")
        if name in stores
    }
    print("calibration: the nearest training spectrum as the 'generated' one")
    print_table(result["baseline"])
    if args.prepare_only:
        print(json.dumps(result["stores"], indent=1))
        return 0
    ckpt = args.checkpoint
    run_dir = out / (args.run_name or f"run-{time.strftime('%Y%m%d-%H%M%S')}")
    if ckpt is None and args.continue_to:
        mcfg, cfg = resolve(stores["train"], args.config, args.set)
        log(f"continuing {run_dir} to step {args.continue_to} for ≤ {args.max_minutes} min")
        result["continuation"] = continue_training(
            mcfg, cfg.train, stores["train"], run_dir, args.max_minutes, args.continue_to,
            args.continue_lr,
        )  # fmt: skip
        ckpt = result["continuation"]["checkpoint"]
    elif ckpt is None:
        mcfg, cfg = resolve(stores["train"], args.config, args.set)
        run_dir.mkdir(parents=True, exist_ok=True)
        log(f"training {run_dir} for ≤ {args.max_minutes} min on {args.threads} thread(s)")
        result["training"] = train_budget(mcfg, cfg.train, stores["train"], run_dir,
                                          args.max_minutes)  # fmt: skip
        ckpt = result["training"]["checkpoint"]
        log(json.dumps({k: v for k, v in result["training"].items()
                        if k not in ("model_config", "train")}))  # fmt: skip
    result["checkpoint"] = ckpt
    if not args.no_score and ckpt:
        method, _, steps = args.sampler.partition(":")
        result["scores"] = {}
        for name in ("train", "heldout", "newrotor"):
            if name not in stores:
                continue
            fig = run_dir / f"spectrum-{name}.png" if run_dir.exists() else None
            limit = args.limit if name != "train" else min(args.limit or 24, 24)
            result["scores"][name] = score_store(
                ckpt, stores[name], method, int(steps or 20), args.decades, fig, limit
            )
        print_table(result["scores"])
    result["wall_s"] = time.perf_counter() - t_all
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Orchestration overhead: the quick pipeline through Prefect vs the same steps as plain calls.

Both variants do identical work — generate the spherical-harmonic store, fit the normalisation,
train, sample, score, draw the figures, log to MLflow and register the model — each in a fresh
data folder and a fresh SQLite MLflow database. The Prefect variant is ``flows.pipeline.pipeline``
(flow and task runs, result persistence, cache look-ups, a temporary local API server unless
``PREFECT_API_URL`` is set); the plain variant calls each task's underlying function (``.fn``).
Each variant runs in its own subprocess so start-up costs (imports, the temporary server) count.

    .venv/bin/python benchmarks/orchestration.py                 # the quick preset
    .venv/bin/python benchmarks/orchestration.py --steps 50 --json results.json

Target: the Prefect variant takes ≤ 10 % more wall time than the plain one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def plain(params_json: str) -> None:
    """The pipeline as plain function calls (no Prefect runs)."""
    from flows.params import PipelineParams, resolve
    from flows.train import new_run_dir, training_config
    from rho_core.data.store import open_store
    from tasks import data, figures, sampling, tracking, training

    p = resolve(PipelineParams.model_validate(json.loads(params_json)), quick=True)
    store = p.data.store_path()
    data.generate_spherical_harmonics.fn(
        store, p.data.size, p.data.l_max, p.data.convention, p.data.workers
    )
    data.fit_normalization.fn(store, p.data.normalization)
    s = open_store(store)
    run_dir = new_run_dir(s.kind, p.runs_dir)
    model_cfg = training.build_model_config(store, p.model.model_dump())
    trained = training.train_model.fn(
        store, run_dir, model_cfg, training_config(p.train), p.train.nproc
    )
    e = p.evaluate
    samples = sampling.sample_conditions.fn(
        trained["checkpoint"],
        store,
        str(Path(run_dir) / "eval" / "samples.npz"),
        e.n_conditions,
        e.sampler,
        e.steps,
        e.guidance,
        e.seed,
        clip_x0=e.clip_x0,
    )
    scores = sampling.evaluate_samples.fn(samples)
    figs = figures.make_figures.fn(samples, trained["history"], str(Path(run_dir) / "eval/figures"))
    config = {"data": p.data.model_dump(), "model": model_cfg, "train": p.train.model_dump()}
    tracking.record_run(
        s.kind,
        None,
        config,
        dict(s.provenance or {}),
        trained,
        scores,
        figs,
        samples,
        trained["checkpoint"],
        p.register_model,
    )


def prefect(params_json: str) -> None:
    """The pipeline flow."""
    from flows.params import PipelineParams
    from flows.pipeline import pipeline

    pipeline(params=PipelineParams.model_validate(json.loads(params_json)), quick=True)


def _child(variant: str, params: dict) -> float:
    """Run one variant in a fresh subprocess with fresh data/MLflow folders; wall seconds."""
    with tempfile.TemporaryDirectory(prefix=f"rho-bench-{variant}-") as tmp:
        env = dict(
            os.environ,
            RHO_DATA_DIR=str(Path(tmp) / "data"),
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
            PREFECT_HOME=str(Path(tmp) / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
            MPLBACKEND="Agg",
            PYTHONPATH=str(REPO),
        )
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--child", variant, "--params", json.dumps(params)],
            env=env,
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: preset)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant (alternating)")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    ap.add_argument("--child", choices=("plain", "prefect"), help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(REPO))
        (plain if args.child == "plain" else prefect)(args.params)
        return 0
    params: dict = {}
    if args.steps is not None:
        params["train"] = {"steps": args.steps}
    times: dict[str, list[float]] = {"plain": [], "prefect": []}
    for _ in range(args.repeat):
        for variant in ("plain", "prefect"):
            times[variant].append(_child(variant, params))
    best = {k: min(v) for k, v in times.items()}
    overhead = best["prefect"] / best["plain"] - 1.0
    print(f"{'variant':10s} {'best wall s':>12s} {'all runs':>30s}")
    for k, v in times.items():
        print(f"{k:10s} {best[k]:12.1f} {', '.join(f'{x:.1f}' for x in v):>30s}")
    print(f"Prefect overhead: {100 * overhead:+.1f} % ({best['prefect'] - best['plain']:+.1f} s)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"times_s": times, "best_s": best, "overhead": overhead, "params": params}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

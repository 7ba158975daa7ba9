"""Orchestration overhead: the quick pipeline through Prefect vs the same steps as plain calls.

Both variants do identical work — generate the spherical-harmonic store, fit the normalisation,
train, sample, score, draw the figures, log to MLflow and register the model — each in a fresh
data folder and a fresh SQLite MLflow database. The Prefect variant is ``flows.pipeline.pipeline``
(flow and task runs, result persistence, cache look-ups, a temporary local API server unless
``PREFECT_API_URL`` is set); the plain variant calls each task's underlying function (``.fn``).
Each variant runs in its own subprocess so start-up costs (imports, the temporary server) count.
On a shared machine the task bodies (mostly training) run at varying speed, so the overhead is
taken as the difference of the time spent *outside* the task bodies (Prefect: task-run times
from its API; plain: timed calls); the raw wall-time ratio is printed beside it.

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


def _timed(work: list[float], fn, *args, **kwargs):
    t0 = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        work.append(time.perf_counter() - t0)


def plain(params_json: str) -> float:
    """The pipeline as plain function calls (no Prefect runs); returns seconds inside tasks."""
    from flows.params import PipelineParams, resolve
    from flows.train import new_run_dir, training_config
    from rho_core.data.store import open_store
    from tasks import data, figures, sampling, tracking, training

    work: list[float] = []
    p = resolve(PipelineParams.model_validate(json.loads(params_json)), quick=True)
    store = p.data.store_path()
    _timed(
        work,
        data.generate_spherical_harmonics.fn,
        store,
        p.data.size,
        p.data.l_max,
        p.data.convention,
        p.data.workers,
    )
    _timed(work, data.fit_normalization.fn, store, p.data.normalization)
    s = open_store(store)
    run_dir = new_run_dir(s.kind, p.runs_dir)
    model_cfg = training.build_model_config(store, p.model.model_dump())
    trained = _timed(
        work,
        training.train_model.fn,
        store,
        run_dir,
        model_cfg,
        training_config(p.train),
        p.train.nproc,
    )
    e = p.evaluate
    samples = _timed(
        work,
        sampling.sample_conditions.fn,
        trained["checkpoint"],
        store,
        str(Path(run_dir) / "eval" / "samples.npz"),
        config=e.to_config().to_dict(),
    )
    scores = _timed(work, sampling.evaluate_samples.fn, samples)
    figs = _timed(
        work,
        figures.make_figures.fn,
        samples,
        trained["history"],
        str(Path(run_dir) / "eval/figures"),
    )
    config = {"data": p.data.model_dump(), "model": model_cfg, "train": p.train.model_dump()}
    _timed(
        work,
        tracking.record_run,
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
    return sum(work)


def prefect(params_json: str) -> float:
    """The pipeline flow; returns the summed run time of its task runs (from the Prefect API)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.params import PipelineParams
    from flows.pipeline import pipeline

    # as `rho pipeline` does on the temporary local server
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        pipeline(params=PipelineParams.model_validate(json.loads(params_json)), quick=True)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # this process's own temporary server
        runs = client.read_task_runs()
    # Only our tasks: each subflow call also shows up as a task run spanning the subflow.
    ours = {
        "generate_spherical_harmonics",
        "fit_normalization",
        "train_model",
        "sample_conditions",
        "evaluate_samples",
        "make_figures",
        "record_run",
    }
    kept = [r for r in runs if r.task_key.rsplit("-", 1)[0] in ours]
    assert len(kept) == len(ours), sorted(r.task_key for r in runs)
    return sum(r.total_run_time.total_seconds() for r in kept)


def _child(variant: str, params: dict) -> tuple[float, float]:
    """Run one variant in a fresh subprocess with fresh data/MLflow folders.

    Returns (wall seconds of the whole process, seconds spent inside the task bodies).
    """
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
            RHO_BENCH_OUT=str(Path(tmp) / "work.json"),
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
        wall = time.perf_counter() - t0
        return wall, json.loads((Path(tmp) / "work.json").read_text())["work_s"]


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
        work = (plain if args.child == "plain" else prefect)(args.params)
        Path(os.environ["RHO_BENCH_OUT"]).write_text(json.dumps({"work_s": work}))
        return 0
    params: dict = {}
    if args.steps is not None:
        params["train"] = {"steps": args.steps}
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "prefect": []}
    for _ in range(args.repeat):
        for variant in ("plain", "prefect"):
            runs[variant].append(_child(variant, params))
    best = {k: min(v) for k, v in runs.items()}  # by wall time
    wall = {k: best[k][0] for k in runs}
    work = {k: best[k][1] for k in runs}
    outside = {k: wall[k] - work[k] for k in runs}
    # The machine may be shared: the work inside the tasks is the same computation in both
    # variants, so the orchestration cost is the time *outside* the task bodies.
    extra = outside["prefect"] - outside["plain"]
    print(f"{'variant':10s} {'wall s':>8s} {'in tasks s':>11s} {'outside s':>10s}")
    for k in runs:
        print(f"{k:10s} {wall[k]:8.1f} {work[k]:11.1f} {outside[k]:10.1f}")
    raw = 100 * (wall["prefect"] / wall["plain"] - 1)
    print(
        f"Prefect orchestration overhead: {extra:+.1f} s = {100 * extra / wall['plain']:+.1f} % "
        f"of the plain wall time (raw wall-time ratio {raw:+.1f} %)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "runs": runs,
                    "wall_s": wall,
                    "work_s": work,
                    "outside_s": outside,
                    "overhead_s": extra,
                    "overhead_frac": extra / wall["plain"],
                    "params": params,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

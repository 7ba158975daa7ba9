"""`rho simulate merger`: a grid of galaxy-merger simulations (built-in N-body or real Bonsai).

``rho simulate merger --out DIR [--mass-ratio 1,0.5] [--pericenter 5] [--separation 50]
[--inclination1 0] [--inclination2 30,60] [--argument1 0] [--argument2 0] [--n-particles 2000]
[--t-end 100] [--dt 0.015625] [--snap-every 2] [--softening 0.5] [--engine builtin|bonsai]
[--bonsai-binary PATH] [--mpirun CMD] [--ranks N] [--device auto] [--workers N]
[--scheduler ADDR] [--seed S]``

Comma-separated values span a grid (Cartesian product). Each run gets ``DIR/run_NNN`` with the
initial conditions (V1 tipsy + JSON sidecar) and Bonsai-named snapshots; ``DIR/manifest.json``
lists all runs. Repeating the command skips completed runs; a completed run made with other
settings is refused (use another --out). Progress: a line per run, and a log line at every tenth
of a built-in run.
"""

from __future__ import annotations

import argparse
import sys


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one number")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate galaxy mergers over a parameter grid (built-in N-body or Bonsai)",
        description="Simulate galaxy mergers; writes Bonsai-compatible tipsy snapshots + params.",
    )
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    ssub = p.add_subparsers(dest="what", metavar="WHAT")
    m = ssub.add_parser(
        "merger",
        help="two disk galaxies on a parabolic orbit, over a grid of parameters",
        description=__doc__.split("\n\n", 1)[1].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--out", required=True, help="output directory (one run_NNN per grid point)")
    g = m.add_argument_group("grid (comma-separated values span a Cartesian product)")
    g.add_argument("--mass-ratio", type=_floats, default=(1.0,), help="M2/M1 (default 1)")
    g.add_argument("--pericenter", type=_floats, default=(5.0,), help="kpc (default 5)")
    g.add_argument(
        "--separation", type=_floats, default=(50.0,), help="initial separation, kpc (default 50)"
    )
    g.add_argument("--inclination1", type=_floats, default=(0.0,), help="deg (default 0)")
    g.add_argument("--argument1", type=_floats, default=(0.0,), help="deg (default 0)")
    g.add_argument("--inclination2", type=_floats, default=(30.0,), help="deg (default 30)")
    g.add_argument("--argument2", type=_floats, default=(0.0,), help="deg (default 0)")
    s = m.add_argument_group("simulation")
    s.add_argument("--n-particles", type=int, default=2000, help="per run (default 2000)")
    s.add_argument(
        "--t-end",
        type=float,
        default=100.0,
        help="end time, units of 9.78 Myr (default 100: the default merger completes)",
    )
    s.add_argument("--dt", type=float, default=1 / 64, help="time step (default 1/64)")
    s.add_argument(
        "--snap-every", type=float, default=2.0, help="time between snapshots (default 2)"
    )
    s.add_argument("--softening", type=float, default=0.5, help="kpc (default 0.5)")
    s.add_argument(
        "--seed", type=int, default=0, help="random seed of the first run (run k uses seed + k)"
    )
    s.add_argument(
        "--engine",
        choices=["builtin", "bonsai"],
        default="builtin",
        help="built-in torch N-body (default) or a Bonsai binary (--bonsai-binary)",
    )
    s.add_argument("--device", default="auto", help="built-in engine: auto|cpu|cuda|xpu")
    s.add_argument(
        "--threads",
        type=int,
        default=None,
        help="built-in engine: torch CPU threads per run (default: 1 with --workers)",
    )
    s.add_argument("--bonsai-binary", default=None, help="path of bonsai2_slowdust")
    s.add_argument("--mpirun", default=None, help="MPI launcher for Bonsai, e.g. 'mpirun'")
    s.add_argument("--ranks", type=int, default=1, help="MPI ranks for Bonsai (default 1)")
    s.add_argument("--timeout", type=float, default=None, help="seconds per Bonsai run")
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="parallel runs in a local Dask cluster (default 1: serial)",
    )
    s.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    m.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rho_cli.generate import quiet_dask
    from rho_core.errors import ConfigError
    from rho_core.sim.bonsai_engine import BonsaiConfig
    from rho_core.sim.grid import EngineSpec, GridSpec, run_grid
    from rho_core.sim.initial_conditions import MergerConfig
    from rho_core.sim.nbody import NBodyConfig

    quiet_dask(args)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    threads = args.threads or (1 if args.workers > 1 or args.scheduler else None)
    nbody = NBodyConfig(
        t_end=args.t_end,
        dt=args.dt,
        snap_every=args.snap_every,
        softening=args.softening,
        device=args.device,
        threads=threads,
    )
    bonsai = None
    if args.engine == "bonsai":
        if not args.bonsai_binary:
            raise ConfigError("--engine bonsai needs --bonsai-binary PATH")
        bonsai = BonsaiConfig(
            binary=args.bonsai_binary,
            mpirun=args.mpirun,
            n_ranks=args.ranks,
            softening=args.softening,
            timeout=args.timeout,
        )
    engine = EngineSpec(kind=args.engine, nbody=nbody, bonsai=bonsai)
    base = MergerConfig(n_particles=args.n_particles, seed=args.seed)
    grid = GridSpec(
        mass_ratio=args.mass_ratio,
        pericenter=args.pericenter,
        separation=args.separation,
        inclination1=args.inclination1,
        argument1=args.argument1,
        inclination2=args.inclination2,
        argument2=args.argument2,
        base=base,
    )
    configs = grid.configs()
    from rho_core import limits

    limits.check_particles(args.n_particles, runs=len(configs), workers=args.workers)
    bar = tqdm(
        total=len(configs),
        desc="merger runs",
        unit="run",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    )

    def progress(done: int, total: int, record: dict) -> None:
        bar.update(1)
        print(
            f"run {done}/{total}: {record.get('dir')} {len(record.get('snapshots', []))} snapshots",
            file=sys.stderr,
        )

    try:
        records = run_grid(
            configs,
            args.out,
            engine,
            workers=args.workers,
            address=args.scheduler,
            progress=progress,
        )
    finally:
        bar.close()
    n_snap = sum(len(r["snapshots"]) for r in records)
    print(f"{len(records)} runs, {n_snap} snapshots in {args.out} (manifest.json)")
    return 0

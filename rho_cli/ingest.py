"""`rho ingest bonsai`: render Bonsai snapshots into a ``galaxy_merger`` store.

``rho ingest bonsai SNAPSHOT... --out STORE [--image-size 128] [--params FILE] [--param K=V ...]
[--fov KPC] [--projection z|x|y|INC,AZ] [--kernel cic|gaussian] [--with-dm]
[--components stars] [--floor F] [--quick-ratio R] [--workers N] [--scheduler ADDR]``

SNAPSHOT may be a tipsy file (V1, V2, big-endian standard), a per-rank file or prefix, a BonsaiIO
``.bonsai`` file, or a directory (searched recursively, e.g. the output of ``rho simulate``).
Parameters come from the IC sidecar beside each snapshot, then ``--params`` (CSV or JSON), then
``--param``; the column ``time`` is the snapshot's. Re-ingesting a snapshot does nothing (content
hash); bad files are listed with their reason and the rest still go in (exit status 1 if any
failed, 2 if none went in).
"""

from __future__ import annotations

import argparse
import logging
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="ingest simulation snapshots into a store (Bonsai galaxy mergers)",
        description="Ingest simulation snapshots into a Zarr store.",
    )
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    isub = p.add_subparsers(dest="source", metavar="SOURCE")
    b = isub.add_parser(
        "bonsai",
        help="Bonsai tipsy / BonsaiIO snapshots -> projected surface-density images",
        description=__doc__.split("\n\n", 1)[1].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "snapshots",
        nargs="+",
        metavar="SNAPSHOT",
        help="snapshot file, per-rank prefix, .bonsai file or directory (searched recursively)",
    )
    b.add_argument("--out", required=True, help="store path (created or appended to)")
    b.add_argument("--image-size", type=int, default=128, help="pixels per side (default 128)")
    b.add_argument("--params", default=None, metavar="FILE", help="CSV/JSON parameter manifest")
    b.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="a parameter for every snapshot (repeatable)",
    )
    b.add_argument(
        "--fov",
        type=float,
        default=None,
        help="field of view, kpc (default: the store's, else automatic per ingest)",
    )
    b.add_argument("--projection", default="z", help="x, y, z or 'INCLINATION,AZIMUTH' (deg)")
    b.add_argument(
        "--kernel",
        choices=["cic", "gaussian"],
        default="cic",
        help="mass deposit: cloud-in-cell (default) or Gaussian (--sigma-px)",
    )
    b.add_argument("--sigma-px", type=float, default=1.0, help="Gaussian kernel width, pixels")
    b.add_argument(
        "--components",
        default="stars",
        help="channel-0 components: stars, disk, bulge, dark_matter, all (comma list)",
    )
    b.add_argument("--with-dm", action="store_true", help="dark matter as a second channel")
    b.add_argument(
        "--floor",
        type=float,
        default=1e-4,
        help="surface-density floor before log10 (2.324876e9 Msun/kpc^2)",
    )
    b.add_argument("--linear", action="store_true", help="store surface density, not log10")
    b.add_argument(
        "--quick-ratio",
        type=float,
        default=None,
        help="BonsaiIO quick-dump sampling ratio (default 0.1 for *_quick_* files)",
    )
    b.add_argument("--workers", type=int, default=1, help="local Dask workers (default 1)")
    b.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    b.set_defaults(func=_run)


def _check_args(args: argparse.Namespace) -> None:
    """Numeric options refused before any file is read, with what to change; the image size
    within :mod:`rho_core.limits` (``--image-size 1000000`` would need terabytes)."""
    import math

    from rho_core import limits
    from rho_core.errors import ConfigError

    if args.image_size < 2:
        raise ConfigError(f"--image-size must be ≥ 2 pixels, got {args.image_size}")
    limits.check_image_size(args.image_size, 2 if args.with_dm else 1)
    for name in ("fov", "sigma_px", "floor", "quick_ratio"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be a finite number > 0, got {value}")
    if args.quick_ratio is not None and args.quick_ratio > 1:
        raise ConfigError(f"--quick-ratio must be in (0, 1], got {args.quick_ratio}")
    if "," in args.projection:
        try:
            angles = [float(v) for v in args.projection.split(",")]
        except ValueError:
            angles = []
        if len(angles) != 2 or not all(math.isfinite(a) for a in angles):
            raise ConfigError(
                f"--projection takes x, y, z or two finite angles 'INCLINATION,AZIMUTH' in "
                f"degrees, got {args.projection!r}"
            )
    if args.workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {args.workers}")


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rho_cli.generate import quiet_dask
    from rho_core.data.bonsai_ingest import IngestConfig, ingest_bonsai, parse_param_args
    from rho_core.data.render import RenderConfig

    quiet_dask(args)
    _check_args(args)
    render = RenderConfig(
        image_size=args.image_size,
        fov=args.fov,
        projection=args.projection,
        kernel=args.kernel,
        sigma_px=args.sigma_px,
        components=args.components,
        with_dm=args.with_dm,
        log=not args.linear,
        floor=args.floor,
    )
    cfg = IngestConfig(
        render=render,
        params_file=args.params,
        params=parse_param_args(args.param),
        quick_ratio=args.quick_ratio,
        workers=args.workers,
        address=args.scheduler,
    )
    bar = tqdm(desc="ingest", unit="snap", file=sys.stderr, disable=not sys.stderr.isatty())
    log = logging.getLogger("rho.ingest")
    last = [-1]

    def progress(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.update(1)
        tenth = (10 * done) // max(total, 1)
        if bar.disable and tenth != last[0]:  # no terminal: a log line per tenth
            last[0] = tenth
            log.info("%d/%d snapshots", done, total)

    try:
        rep = ingest_bonsai(args.snapshots, args.out, cfg, progress=progress)
    finally:
        bar.close()
    for name, reason in rep.failed:  # reader errors already start with the file name
        line = reason if reason.startswith(name.split(" (+")[0]) else f"{name}: {reason}"
        print(f"failed: {line}", file=sys.stderr)
    fov = f"{rep.fov:.4g} kpc" if rep.fov else "n/a"
    print(
        f"{rep.added} added, {rep.skipped} already in the store, {len(rep.failed)} failed "
        f"(of {rep.n_total} snapshots); field of view {fov}; store {rep.store}"
    )
    if rep.failed:
        return 2 if rep.added == 0 and rep.skipped == 0 else 1
    return 0

"""`rho serve`: serve the deployments (pipeline, retrain on a cron schedule, ingest-bonsai).

Needs a running Prefect API: start one with `rho ui` and
`export PREFECT_API_URL=http://127.0.0.1:4200/api`.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the Prefect deployments (needs a Prefect API; see README)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--retrain-cron",
        metavar="CRON",
        help="cron schedule of 'retrain' (default $RHO_RETRAIN_CRON or '0 2 * * *', nightly)",
    )
    p.add_argument(
        "--retrain-tz",
        metavar="TZ",
        help="IANA timezone of the retrain schedule (default $RHO_RETRAIN_TZ or UTC)",
    )
    p.add_argument(
        "--retrain-minutes",
        type=float,
        metavar="MIN",
        help="training time budget of the nightly retrain (default $RHO_RETRAIN_MINUTES or 60)",
    )
    p.add_argument("--limit", type=int, help="max concurrent flow runs")
    p.add_argument(
        "--verbose",
        dest="serve_verbose",
        action="store_true",
        help="also show third-party INFO logs (e.g. every HTTP poll); default WARNING",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from deployments.serve import serve_all

    serve_all(
        args.retrain_cron,
        args.limit,
        args.retrain_tz,
        args.retrain_minutes,
        verbose=args.serve_verbose or getattr(args, "verbose", False),
    )
    return 0

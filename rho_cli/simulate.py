"""`rho simulate`: not implemented yet (owned by the issue that delivers it)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="(not implemented yet)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rho_core.errors import RhoError

    raise RhoError("'rho simulate' is not implemented yet")

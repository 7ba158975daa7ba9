"""Entry point of the ``rho`` command.

Each command group lives in its own module exposing ``register(subparsers)``; the parser it
adds sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit
code. Errors a user can cause (:class:`rho_core.errors.RhoError`) are printed on one line
without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Command modules, in the order they appear in ``rho --help``.
COMMAND_MODULES = (
    "rho_cli.generate",
    "rho_cli.simulate",
    "rho_cli.ingest",
    "rho_cli.train",
    "rho_cli.sample",
    "rho_cli.model",
    "rho_cli.evaluate",
    "rho_cli.likelihood",
    "rho_cli.infer",
    "rho_cli.info",
    "rho_cli.pipeline",
    "rho_cli.serve",
    "rho_cli.ui",
)


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors (unknown option, bad value, missing argument) as ONE line that names the
    problem and where to look, exit status 2 — not argparse's usage block. Sub-command parsers
    inherit it (``add_subparsers`` uses the parent's class)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the full ``rho`` parser from every command module."""
    parser = _OneLineErrors(
        prog="rho",
        description="ρ-Diffusion: conditional diffusion models for physical densities.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``rho`` command; returns the process exit code."""
    from rho_core.errors import RhoError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the subcommand whose --help lists the valid options
        prog = f"rho {args.command}" if getattr(args, "command", None) else "rho"
        parser.exit(
            2, f"{prog}: error: unrecognized arguments: {' '.join(extra)} (see '{prog} --help')\n"
        )
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except RhoError as exc:
        print(f"rho {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rho {args.command}: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError) as exc:
        print(f"rho {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rho info STORE | head`: the reader left early, not an error
        # stdout is flushed again at exit: point it at /dev/null so that cannot fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # like a program killed by SIGPIPE
    except OSError as exc:  # disk full, quota, read-only file system, I/O error: one line
        import errno

        where = f" ({exc.filename})" if exc.filename else ""
        hint = {
            errno.ENOSPC: "free space or choose another location, then run again",
            errno.EDQUOT: "free space or choose another location, then run again",
            errno.EROFS: "choose a writable location",
        }.get(exc.errno, "check the paths involved")
        print(f"rho {args.command}: error: {exc.strerror or exc}{where}; {hint}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""`rho ui`: start the Prefect server and the MLflow UI on 127.0.0.1; Ctrl-C or SIGTERM stops both.

MLflow reads the embedded default database (``data/mlflow.db``) unless ``MLFLOW_TRACKING_URI``
points at a SQLite file. Server logs go to ``data/logs/``.

The Prefect API accepts cross-origin requests only from its own UI and needs a CSRF token for
changes, so other web pages open in the browser cannot start flows. ``--auth`` (or
``PREFECT_SERVER_API_AUTH_STRING=user:password`` in the environment) adds Basic authentication;
clients then need ``PREFECT_API_AUTH_STRING`` with the same value (printed at start).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import time


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1–65535, got {port}")
    return port


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="start the Prefect server and the MLflow UI on 127.0.0.1",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prefect-port", type=_port, default=4200, help="default 4200")
    p.add_argument("--mlflow-port", type=_port, default=5000, help="default 5000")
    p.add_argument("--no-prefect", action="store_true", help="only the MLflow UI")
    p.add_argument("--no-mlflow", action="store_true", help="only the Prefect server")
    p.add_argument(
        "--auth",
        action="store_true",
        help="Basic authentication on the Prefect API with a random 'rho:TOKEN' (printed)",
    )
    p.set_defaults(func=_run)


class _Terminated(Exception):
    """SIGTERM/SIGHUP received: leave the wait loop and stop the servers like Ctrl-C."""


def _on_signal(signum, frame) -> None:  # noqa: ARG001
    raise _Terminated(signal.Signals(signum).name)


def _run(args: argparse.Namespace) -> int:
    from rho_core.errors import ConfigError

    if args.no_prefect and args.no_mlflow:  # before importing MLflow (seconds)
        raise ConfigError("--no-prefect and --no-mlflow leave nothing to start; drop one of them")
    from deployments import servers
    from tasks import tracking
    from tasks.paths import data_dir

    if args.prefect_port == args.mlflow_port and not (args.no_prefect or args.no_mlflow):
        raise ConfigError(
            f"--prefect-port and --mlflow-port are both {args.prefect_port}; give two ports"
        )
    auth = os.environ.get("PREFECT_SERVER_API_AUTH_STRING") or (
        f"rho:{secrets.token_urlsafe(18)}" if args.auth and not args.no_prefect else None
    )
    if auth is not None and ":" not in auth:
        raise ConfigError("PREFECT_SERVER_API_AUTH_STRING must be 'user:password'")
    uri = tracking.tracking_uri()
    if not args.no_mlflow and not uri.startswith("sqlite:///"):
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={uri} is a server already; open it directly, or unset it to "
            "browse the embedded database"
        )
    for flag, port, off in (
        ("--prefect-port", args.prefect_port, args.no_prefect),
        ("--mlflow-port", args.mlflow_port, args.no_mlflow),
    ):
        if not off and servers.port_in_use(port):
            raise ConfigError(f"port {port} on 127.0.0.1 is in use; choose another with {flag}")
    logs = data_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    old_handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if not args.no_prefect:
            f = open(logs / "prefect-server.log", "ab")
            p = servers.start_prefect_server(args.prefect_port, log_file=f, auth_string=auth)
            procs.append(
                (
                    "Prefect",
                    p,
                    servers.prefect_health_url(args.prefect_port),
                    f"http://127.0.0.1:{args.prefect_port}",
                )
            )
        if not args.no_mlflow:
            tracking.configure()  # creates data/ for the default database
            f = open(logs / "mlflow-server.log", "ab")
            p = servers.start_mlflow_server(
                uri, tracking.artifact_root(uri), args.mlflow_port, log_file=f
            )
            procs.append(
                (
                    "MLflow",
                    p,
                    servers.mlflow_health_url(args.mlflow_port),
                    f"http://127.0.0.1:{args.mlflow_port}",
                )
            )
        print("starting (10-20 s)…", flush=True)
        for _name, p, health, _ in procs:
            servers.wait_healthy(health, timeout=180, proc=p)
        for name, _, _, url in procs:
            print(f"{name:8s} {url}", flush=True)
        if not args.no_prefect:
            creds = f" PREFECT_API_AUTH_STRING='{auth}'" if auth else ""
            print(
                f"to serve deployments: export PREFECT_API_URL=http://127.0.0.1:"
                f"{args.prefect_port}/api{creds} && rho serve",
                flush=True,
            )
            if auth:
                print(f"the Prefect UI asks for the authentication string: {auth}", flush=True)
        print(f"logs in {logs}; Ctrl-C (or SIGTERM) stops everything", flush=True)
        while all(p.poll() is None for _, p, _, _ in procs):
            time.sleep(1.0)
        dead = [name for name, p, _, _ in procs if p.poll() is not None]
        print(f"{', '.join(dead)} stopped on its own; see {logs}", flush=True)
        return 1
    except _Terminated as exc:
        print(f"{exc}: stopping the servers", flush=True)
        return 128 + int(getattr(signal, str(exc)))
    except (TimeoutError, RuntimeError) as exc:
        raise ConfigError(f"a server did not start: {exc}; see {logs}") from None
    finally:
        for sig in old_handlers:  # a second signal must not interrupt the shutdown
            signal.signal(sig, signal.SIG_IGN)
        for _, p, _, _ in reversed(procs):
            servers.stop(p)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)

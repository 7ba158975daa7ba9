"""`rho ui`: start the Prefect server and the MLflow UI on 127.0.0.1; Ctrl-C stops both.

MLflow reads the embedded default database (``data/mlflow.db``) unless ``MLFLOW_TRACKING_URI``
points at a SQLite file. Server logs go to ``data/logs/``.
"""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="start the Prefect server and the MLflow UI on 127.0.0.1",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prefect-port", type=int, default=4200)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.add_argument("--no-prefect", action="store_true", help="only the MLflow UI")
    p.add_argument("--no-mlflow", action="store_true", help="only the Prefect server")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from deployments import servers
    from rho_core.errors import ConfigError
    from tasks import tracking
    from tasks.paths import data_dir

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
    try:
        if not args.no_prefect:
            f = open(logs / "prefect-server.log", "ab")
            p = servers.start_prefect_server(args.prefect_port, log_file=f)
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
            print(
                f"to serve deployments: export PREFECT_API_URL=http://127.0.0.1:"
                f"{args.prefect_port}/api && rho serve",
                flush=True,
            )
        print(f"logs in {logs}; Ctrl-C stops everything", flush=True)
        while all(p.poll() is None for _, p, _, _ in procs):
            time.sleep(1.0)
        dead = [name for name, p, _, _ in procs if p.poll() is not None]
        print(f"{', '.join(dead)} stopped on its own; see {logs}", flush=True)
        return 1
    except (TimeoutError, RuntimeError) as exc:
        raise ConfigError(f"a server did not start: {exc}; see {logs}") from None
    finally:
        for _, p, _, _ in reversed(procs):
            servers.stop(p)

"""A torch-free worker for the launcher tests (starts in milliseconds, unlike a torch import).

``proc_worker.py fail R``: rank ``R`` prints a message and exits with status 3, the others exit 0.
``proc_worker.py hang``: every rank prints ``ready rank=R pid=P agent_store=…`` and sleeps until
killed.
``proc_worker.py launch``: not a worker — a caller that runs ``launch_torchrun`` with two ``hang``
workers and echoes their lines (to be SIGKILLed by a test).
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    mode = sys.argv[1]
    if mode == "launch":
        from rho_core.launch import launch_torchrun

        def echo(line: str) -> None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

        return launch_torchrun([os.path.abspath(__file__), "hang"], nproc=2, log_callback=echo)
    rank = int(os.environ["RANK"])
    if mode == "fail":
        if rank == int(sys.argv[2]):
            sys.stdout.write(f"rank {rank}: simulated failure, exiting with 3\n")
            sys.stdout.flush()
            return 3
        return 0
    if mode == "hang":
        shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE")
        sys.stdout.write(f"ready rank={rank} pid={os.getpid()} agent_store={shared}\n")
        sys.stdout.flush()
        while True:
            time.sleep(0.2)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main())

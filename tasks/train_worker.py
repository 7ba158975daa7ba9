"""One torchrun rank of the train task: ``python -m tasks.train_worker SPEC.json``.

``SPEC.json`` (written by :func:`tasks.training.train_model`) holds ``store``, ``model`` and
``train`` configs; the run directory is the spec's folder. Rank 0 writes ``summary.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from rho_core import distributed
    from tasks.training import _write_json, run_training

    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    run_dir = spec_path.parent
    ctx = distributed.init_distributed(spec["train"].get("device", "auto"))
    try:
        summary = run_training(
            spec["store"],
            str(run_dir),
            spec["model"],
            spec["train"],
            emit=lambda line: print(line, flush=True) if ctx.rank == 0 else None,
        )
        if ctx.rank == 0:
            _write_json(run_dir / "summary.json", summary)
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

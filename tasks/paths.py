"""Default locations: the repository's ``data/`` folder (overridable with ``RHO_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``RHO_DATA_DIR`` if set, else ``<repo>/data`` (resolved at call time)."""
    return Path(os.environ.get("RHO_DATA_DIR") or REPO_ROOT / "data").resolve()


def torch_threads() -> int:
    """Intra-op threads for torch inside a Prefect task: ``RHO_TORCH_THREADS``, else
    ``OMP_NUM_THREADS``, else one fewer than the CPU count (at least 1).

    Leaving a core free matters: the Prefect API server (and its log shipping) runs beside the
    task, and OpenMP threads that share cores with another busy process stall each other — on 2
    cores the quick pipeline's tasks ran 2.6× slower with 2 threads than with 1.
    """
    for name in ("RHO_TORCH_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, (os.cpu_count() or 2) - 1)


class torch_thread_limit:
    """Context manager: ``torch.set_num_threads(torch_threads())``, restored on exit."""

    def __enter__(self):
        import torch

        self._old = torch.get_num_threads()
        torch.set_num_threads(torch_threads())
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.set_num_threads(self._old)

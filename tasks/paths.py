"""Default locations: the repository's ``data/`` folder (overridable with ``RHO_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``RHO_DATA_DIR`` if set, else ``<repo>/data`` (resolved at call time)."""
    return Path(os.environ.get("RHO_DATA_DIR") or REPO_ROOT / "data").resolve()

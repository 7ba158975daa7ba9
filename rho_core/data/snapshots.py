"""Open any Bonsai snapshot: the format dispatcher over the tipsy and BonsaiIO readers.

:mod:`rho_core.data.particles` holds what every reader shares (the ``Snapshot`` protocol,
particle chunks, file-name parsing); :mod:`rho_core.data.tipsy` and :mod:`rho_core.data.bonsaiio`
build on it; this module sits above all three, so the readers never import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rho_core.data import bonsaiio, tipsy
from rho_core.data.particles import Snapshot, _rank_files, parse_snapshot_name
from rho_core.errors import DataError

__all__ = ["open_snapshot"]


def open_snapshot(
    path: str | Path | Sequence[str | Path],
    *,
    quick_ratio: float | None = None,
    expand_ranks: bool = True,
) -> Snapshot:
    """Open any Bonsai snapshot, choosing the reader from the file content.

    Args:
        path: a tipsy file (V1, V2 or standard big-endian), a ``.bonsai`` file, a per-rank set
            given by its prefix ``<snap>_<time>`` (the files ``<prefix>-0``, ``-1``, ... are
            opened together) or by any one of its rank files (``expand_ranks``), or a list of
            rank files.
        quick_ratio: sampling ratio of a BonsaiIO quick dump (``None``: 0.1 when the name says
            ``_quick_``, else 1); masses are multiplied by ``1 / quick_ratio``.
        expand_ranks: a single rank file ``<prefix>-<r>`` opens its whole set.

    Raises:
        DataError: missing, truncated, inconsistent or non-Bonsai files (the message names the
            file and the reason).
    """
    if not isinstance(path, (str, Path)):
        files = [Path(p) for p in path]
        if not files:
            raise DataError("no snapshot files given")
        if len(files) == 1:
            return open_snapshot(files[0], quick_ratio=quick_ratio, expand_ranks=False)
        return tipsy.TipsySet(files)
    p = Path(path)
    if not p.exists():
        ranks = _rank_files(p)
        if ranks:
            return tipsy.TipsySet(ranks)
        raise DataError(f"{p}: no such snapshot file (nor per-rank files {p.name}-0, -1, ...)")
    if p.is_dir():
        raise DataError(f"{p}: is a directory; give snapshot files")
    if bonsaiio.is_bonsaiio(p):
        return bonsaiio.BonsaiIOFile(p, quick_ratio=quick_ratio)
    parsed = parse_snapshot_name(p)
    if expand_ranks and parsed is not None and parsed.rank is not None:
        prefix = p.parent / p.name[: p.name.rfind("-")]
        ranks = _rank_files(prefix)
        if len(ranks) > 1:
            return tipsy.TipsySet(ranks)
    return tipsy.TipsyFile(p)

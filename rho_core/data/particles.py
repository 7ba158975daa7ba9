"""Format-independent particle snapshots: one chunk type, one component code, one opener.

Every snapshot reader (tipsy V1/V2/standard, per-rank tipsy sets, BonsaiIO) yields
:class:`ParticleChunk` objects of bounded size, so a consumer (the renderer, the ingester) never
needs the whole snapshot in memory. :func:`rho_core.data.snapshots.open_snapshot` picks the
reader from the file content (it lives there so the readers, which build on this module, and
this module do not import each other).

Units are Bonsai's (G = 1): length 1 kpc, velocity 100 km/s, mass 2.324876e9 Msun,
time 9.778145 Myr.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from rho_core.errors import DataError

# Component codes (match the BonsaiIO type bits 0..3; glow/dust/anything else maps to OTHER).
DARK_MATTER = 0
BULGE = 1
DISK = 2
OTHER = 3
COMPONENT_NAMES = {DARK_MATTER: "dark_matter", BULGE: "bulge", DISK: "disk", OTHER: "other"}
COMPONENT_CODES = {v: k for k, v in COMPONENT_NAMES.items()}
#: Named component selections accepted by the renderer and the CLI.
COMPONENT_GROUPS = {
    "stars": (BULGE, DISK, OTHER),
    "dark_matter": (DARK_MATTER,),
    "dm": (DARK_MATTER,),
    "disk": (DISK,),
    "bulge": (BULGE,),
    "other": (OTHER,),
    "all": (DARK_MATTER, BULGE, DISK, OTHER),
}

#: Bonsai unit system (G = 1).
UNITS = {
    "length": "kpc",
    "velocity": "100 km/s",
    "mass": "2.324876e9 Msun",
    "time": "9.778145 Myr",
}
MASS_UNIT_MSUN = 2.324876e9
TIME_UNIT_MYR = 9.778145

DEFAULT_CHUNK = 1 << 16  # particles per chunk (fits in cache; see render.py for the memory bound)


@dataclass(frozen=True)
class ParticleChunk:
    """A contiguous slice of one snapshot.

    Attributes:
        pos: ``(n, 3)`` float32 positions [kpc].
        mass: ``(n,)`` float32 masses [2.324876e9 Msun].
        ids: ``(n,)`` uint64 particle IDs, exactly as stored in the file.
        component: ``(n,)`` uint8 component code (:data:`DARK_MATTER`, :data:`BULGE`,
            :data:`DISK`, :data:`OTHER`).
        vel: ``(n, 3)`` float32 velocities [100 km/s], or ``None`` when not requested.
    """

    pos: np.ndarray
    mass: np.ndarray
    ids: np.ndarray
    component: np.ndarray
    vel: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.mass.shape[0])

    def select(self, mask: np.ndarray) -> ParticleChunk:
        """The particles where ``mask`` is true."""
        return ParticleChunk(
            self.pos[mask],
            self.mass[mask],
            self.ids[mask],
            self.component[mask],
            None if self.vel is None else self.vel[mask],
        )


def concat_chunks(chunks: Sequence[ParticleChunk]) -> ParticleChunk:
    """Concatenate chunks into one (for small snapshots only: this loads everything)."""
    if not chunks:
        return ParticleChunk(
            np.zeros((0, 3), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.uint64),
            np.zeros(0, np.uint8),
            np.zeros((0, 3), np.float32),
        )
    vel = None
    if all(c.vel is not None for c in chunks):
        vel = np.concatenate([c.vel for c in chunks])
    return ParticleChunk(
        np.concatenate([c.pos for c in chunks]),
        np.concatenate([c.mass for c in chunks]),
        np.concatenate([c.ids for c in chunks]),
        np.concatenate([c.component for c in chunks]),
        vel,
    )


class Snapshot(Protocol):
    """What every reader offers: metadata plus bounded-size streaming."""

    paths: tuple[Path, ...]
    format: str
    time: float
    time_source: str  # "header" | "filename" | "none"
    n_particles: int

    def iter_chunks(
        self,
        chunk_size: int = DEFAULT_CHUNK,
        velocities: bool = True,
        components: Sequence[int] | None = None,
    ) -> Iterator[ParticleChunk]: ...

    def read(self, velocities: bool = True) -> ParticleChunk: ...


def resolve_components(components: str | Sequence[str] | Sequence[int]) -> tuple[int, ...]:
    """Turn ``"stars"``, ``"disk,bulge"`` or ``[0, 2]`` into a tuple of component codes."""
    if isinstance(components, str):
        items: list = [c.strip() for c in components.split(",") if c.strip()]
    else:
        items = list(components)
    codes: set[int] = set()
    for item in items:
        if isinstance(item, (int, np.integer)):
            if int(item) not in COMPONENT_NAMES:
                raise DataError(f"unknown component code {item}; use 0..3")
            codes.add(int(item))
        elif item in COMPONENT_GROUPS:
            codes.update(COMPONENT_GROUPS[item])
        else:
            raise DataError(
                f"unknown component {item!r}; choose from {', '.join(sorted(COMPONENT_GROUPS))}"
            )
    if not codes:
        raise DataError("empty component selection")
    return tuple(sorted(codes))


# --------------------------------------------------------------------------- file names
_NAME_RE = re.compile(
    r"^(?P<snap>.*?)_(?P<quick>quick_)?(?P<time>[-+]?\d+\.\d+)(?:-(?P<rank>\d+))?(?P<ext>\.bonsai)?$"
)


@dataclass(frozen=True)
class SnapshotName:
    """Parts of a Bonsai snapshot file name ``<snap>_[quick_]<time %010.4f>[-<rank>][.bonsai]``."""

    snapname: str
    time: float
    rank: int | None
    quick: bool
    bonsai: bool


def parse_snapshot_name(path: str | Path) -> SnapshotName | None:
    """Parse a Bonsai-style snapshot file name; ``None`` when it does not follow the pattern."""
    m = _NAME_RE.match(Path(path).name)
    if not m:
        return None
    rank = m.group("rank")
    return SnapshotName(
        m.group("snap"),
        float(m.group("time")),
        None if rank is None else int(rank),
        bool(m.group("quick")),
        bool(m.group("ext")),
    )


def snapshot_filename(snapname: str, time: float, rank: int | None = None) -> str:
    """Bonsai's tipsy snapshot name: ``<snapname>_<time %010.4f>`` (``-<rank>`` per MPI rank)."""
    name = f"{snapname}_{time:010.4f}"
    return name if rank is None else f"{name}-{rank}"


def group_snapshot_paths(paths: Sequence[str | Path]) -> list[tuple[Path, ...]]:
    """Group per-rank files ``<snap>_<time>-<rank>`` into one entry per snapshot.

    Files that are not rank files stay alone. Order of first appearance is kept; ranks are sorted.
    """
    groups: dict[str, list[Path]] = {}
    order: list[str] = []
    for p in paths:
        p = Path(p)
        parsed = parse_snapshot_name(p)
        if parsed is not None and parsed.rank is not None and not parsed.bonsai:
            key = str(p.parent / p.name[: p.name.rfind("-")])
        else:
            key = str(p)
        if key not in groups:
            groups[key] = []
            order.append(key)
        if p not in groups[key]:
            groups[key].append(p)
    out = []
    for key in order:
        members = groups[key]
        members.sort(
            key=lambda q: (
                parse_snapshot_name(q).rank
                if parse_snapshot_name(q) and parse_snapshot_name(q).rank is not None
                else -1
            )
        )
        out.append(tuple(members))
    return out


def _rank_files(prefix: Path) -> list[Path]:
    """All existing ``<prefix>-<rank>`` files, sorted by rank."""
    found = []
    if prefix.parent.is_dir():
        for q in prefix.parent.iterdir():
            if q.name.startswith(prefix.name + "-") and q.name[len(prefix.name) + 1 :].isdigit():
                found.append(q)
    found.sort(key=lambda q: int(q.name[len(prefix.name) + 1 :]))
    return found


def __getattr__(name: str):
    # Compatibility: ``open_snapshot`` moved to :mod:`rho_core.data.snapshots`, which imports the
    # format readers; this module is what the readers build on, so it must not import them.
    if name == "open_snapshot":
        import importlib

        return importlib.import_module("rho_core.data.snapshots").open_snapshot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

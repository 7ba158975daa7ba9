"""Tipsy snapshots as Bonsai writes them (little-endian V1/V2) and as other tools write them
(standard big-endian "XDR" tipsy): memory-mapped readers that stream bounded chunks, and writers.

Layout (see ``shared/docs/bonsai-format.md``): a 32-byte header ``time f64, nbodies, ndim, nsph,
ndark, nstar, version i32``, then ``nsph`` gas records (48 B), ``ndark`` dark-matter records
(36 B) and ``nstar`` star records (44 B), packed with no padding. The file size must equal
``32 + 48 nsph + 36 ndark + 44 nstar`` exactly.

- V1 (``version != 2``): records end with ``eps f32, id i32``.
- V2 (``version == 2``): records end with an unaligned ``id u64`` (packed dtypes below).
- standard (big-endian; recognised by ``ndim`` outside 1..3 when read little-endian): records end
  with ``eps f32, phi f32``; there are no IDs, so the record index is used and the component
  comes from the block (dark -> dark matter, star -> disk, gas -> other).

Component from the ID: V2 ``id < 2e18`` disk, ``< 3e18`` bulge, else dark matter; V1
``id < 4e7`` disk, ``4e7 <= id < 1e8`` other (glow/dust demo particles), ``< 2e8`` bulge, else
dark matter.

Time: the header's, unless it is 0 (files from 2012) or not finite while the file name
``<snap>_<time %010.4f>[-<rank>]`` carries one; ``time_source`` records which was used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rho_core.data.particles import (
    BULGE,
    DARK_MATTER,
    DEFAULT_CHUNK,
    DISK,
    OTHER,
    ParticleChunk,
    concat_chunks,
    parse_snapshot_name,
)
from rho_core.errors import DataError

HEADER_SIZE = 32
HEADER_DTYPE = np.dtype(
    [
        ("time", "<f8"),
        ("nbodies", "<i4"),
        ("ndim", "<i4"),
        ("nsph", "<i4"),
        ("ndark", "<i4"),
        ("nstar", "<i4"),
        ("version", "<i4"),
    ]
)
assert HEADER_DTYPE.itemsize == HEADER_SIZE

_BASE = [("mass", "<f4"), ("pos", "<f4", (3,)), ("vel", "<f4", (3,))]
GAS_DTYPE = np.dtype(
    _BASE + [("rho", "<f4"), ("temp", "<f4"), ("hsmooth", "<f4"), ("metals", "<f4"), ("phi", "<f4")]
)
DARK_V1 = np.dtype(_BASE + [("eps", "<f4"), ("id", "<i4")])
DARK_V2 = np.dtype(_BASE + [("id", "<u8")])  # packed: id at byte 28, unaligned
STAR_V1 = np.dtype(_BASE + [("metals", "<f4"), ("tform", "<f4"), ("eps", "<f4"), ("id", "<i4")])
STAR_V2 = np.dtype(_BASE + [("metals", "<f4"), ("tform", "<f4"), ("id", "<u8")])
DARK_STD = np.dtype(_BASE + [("eps", "<f4"), ("phi", "<f4")]).newbyteorder(">")
STAR_STD = np.dtype(
    _BASE + [("metals", "<f4"), ("tform", "<f4"), ("eps", "<f4"), ("phi", "<f4")]
).newbyteorder(">")
GAS_STD = GAS_DTYPE.newbyteorder(">")
for _dt, _size in ((GAS_DTYPE, 48), (DARK_V1, 36), (DARK_V2, 36), (STAR_V1, 44), (STAR_V2, 44)):
    assert _dt.itemsize == _size

VARIANTS = ("v1", "v2", "standard")
RECORD_DTYPES = {
    "v1": {"gas": GAS_DTYPE, "dark": DARK_V1, "star": STAR_V1},
    "v2": {"gas": GAS_DTYPE, "dark": DARK_V2, "star": STAR_V2},
    "standard": {"gas": GAS_STD, "dark": DARK_STD, "star": STAR_STD},
}

# ID conventions (bonsai-format.md)
V2_BULGE_START = 2 * 10**18
V2_DM_START = 3 * 10**18
V1_OTHER_START = 40_000_000
V1_BULGE_START = 100_000_000
V1_DM_START = 200_000_000


def component_from_ids(ids: np.ndarray, variant: str) -> np.ndarray:
    """Component codes ``(n,) uint8`` from particle IDs under the V1 or V2 convention."""
    ids = np.asarray(ids)
    comp = np.empty(ids.shape, np.uint8)
    if variant == "v2":
        u = ids.astype(np.uint64, copy=False)
        comp.fill(DISK)
        comp[u >= np.uint64(V2_BULGE_START)] = BULGE
        comp[u >= np.uint64(V2_DM_START)] = DARK_MATTER
    elif variant == "v1":
        s = ids.astype(np.int64, copy=False)
        comp.fill(DISK)
        comp[s >= V1_OTHER_START] = OTHER
        comp[s >= V1_BULGE_START] = BULGE
        comp[s >= V1_DM_START] = DARK_MATTER
    else:
        raise ValueError(f"no ID convention for variant {variant!r}")
    return comp


def v1_ids_to_v2(ids: np.ndarray) -> np.ndarray:
    """Bonsai's V1 -> V2 ID conversion: +3e18 for dark matter (``>= 2e8``), +2e18 for bulge."""
    s = np.asarray(ids).astype(np.int64)
    out = s.astype(np.uint64)
    out[s >= V1_DM_START] += np.uint64(V2_DM_START)
    bulge = (s >= V1_BULGE_START) & (s < V1_DM_START)
    out[bulge] += np.uint64(V2_BULGE_START)
    return out


def v2_ids_to_v1(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`v1_ids_to_v2` (int64)."""
    u = np.asarray(ids, np.uint64).copy()
    u[u >= np.uint64(V2_DM_START)] -= np.uint64(V2_DM_START)
    u[u >= np.uint64(V2_BULGE_START)] -= np.uint64(V2_BULGE_START)
    return u.astype(np.int64)


@dataclass(frozen=True)
class TipsyHeader:
    """Decoded tipsy header. ``variant`` is ``"v1"``, ``"v2"`` or ``"standard"``."""

    time: float
    nbodies: int
    ndim: int
    nsph: int
    ndark: int
    nstar: int
    version: int
    variant: str
    header_size: int = HEADER_SIZE

    @property
    def expected_size(self) -> int:
        return self.header_size + 48 * self.nsph + 36 * self.ndark + 44 * self.nstar


def read_header(path: str | Path) -> TipsyHeader:
    """Read and validate a tipsy header (and the file size against the counts).

    Raises:
        DataError: naming the file — too short, not a tipsy file, negative or inconsistent
            counts, truncated or oversized for its counts.
    """
    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(raw) < 28:
        raise DataError(f"{path}: {size} bytes is too short for a tipsy header (32 bytes)")
    raw = raw.ljust(HEADER_SIZE, b"\0")
    h = np.frombuffer(raw, HEADER_DTYPE)[0]
    variant = "v2" if int(h["version"]) == 2 else "v1"
    if not 1 <= int(h["ndim"]) <= 3:
        hb = np.frombuffer(raw, HEADER_DTYPE.newbyteorder(">"))[0]
        if not 1 <= int(hb["ndim"]) <= 3:
            raise DataError(
                f"{path}: not a tipsy file (ndim = {int(h['ndim'])} little-endian, "
                f"{int(hb['ndim'])} big-endian; expected 3)"
            )
        h, variant = hb, "standard"
    nsph, ndark, nstar = int(h["nsph"]), int(h["ndark"]), int(h["nstar"])
    if min(nsph, ndark, nstar) < 0:
        raise DataError(
            f"{path}: negative particle counts in the header (nsph={nsph}, ndark={ndark}, "
            f"nstar={nstar}); not a tipsy file or corrupt"
        )
    if int(h["nbodies"]) != nsph + ndark + nstar:
        raise DataError(
            f"{path}: count mismatch: header nbodies = {int(h['nbodies'])} but nsph + ndark + "
            f"nstar = {nsph + ndark + nstar}"
        )
    header = TipsyHeader(
        float(h["time"]),
        int(h["nbodies"]),
        int(h["ndim"]),
        nsph,
        ndark,
        nstar,
        int(h["version"]),
        variant,
    )
    if size != header.expected_size:
        # Standard tipsy written from a packed 28-byte C struct has no header padding.
        alt = TipsyHeader(**{**header.__dict__, "header_size": 28})
        if variant == "standard" and size == alt.expected_size:
            return alt
        what = "truncated" if size < header.expected_size else "size mismatch"
        raise DataError(
            f"{path}: {what}: {size} bytes, but the header's counts (nsph={nsph}, "
            f"ndark={ndark}, nstar={nstar}) need 32 + 48*nsph + 36*ndark + 44*nstar = "
            f"{header.expected_size} bytes"
        )
    return header


def _time_from(path: Path, header_time: float) -> tuple[float, str]:
    parsed = parse_snapshot_name(path)
    if math.isfinite(header_time) and (header_time != 0.0 or parsed is None):
        return header_time, "header"
    if parsed is not None:
        return parsed.time, "filename"
    if not math.isfinite(header_time):
        raise DataError(
            f"{path}: the header time is {header_time} (not a finite number) and the file name "
            "does not carry one (<snap>_<time>); the header is damaged — fix it or rename the "
            "file with its time"
        )
    return header_time, "header"


class TipsyFile:
    """One tipsy file, memory-mapped; :meth:`iter_chunks` streams it block by block.

    Memory: the records are never loaded as a whole; each chunk of ``k`` particles costs
    ``k * 45`` bytes (pos, vel, mass, id, component) plus the page cache the OS manages.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.paths = (self.path,)
        self.header = read_header(self.path)
        self.variant = self.header.variant
        self.format = f"tipsy-{self.variant}"
        self.time, self.time_source = _time_from(self.path, self.header.time)
        self.n_particles = self.header.nbodies

    def __repr__(self) -> str:
        return f"TipsyFile({str(self.path)!r}, {self.format}, n={self.n_particles}, t={self.time})"

    def blocks(self) -> list[tuple[str, np.ndarray]]:
        """``[(kind, memmap of records)]`` for the non-empty gas, dark and star blocks."""
        h = self.header
        dts = RECORD_DTYPES[self.variant]
        out = []
        offset = h.header_size
        for kind, n in (("gas", h.nsph), ("dark", h.ndark), ("star", h.nstar)):
            if n > 0:
                mm = np.memmap(self.path, dtype=dts[kind], mode="r", offset=offset, shape=(n,))
                out.append((kind, mm))
            offset += n * dts[kind].itemsize
        return out

    def iter_chunks(
        self,
        chunk_size: int = DEFAULT_CHUNK,
        velocities: bool = True,
        components: Sequence[int] | None = None,
    ) -> Iterator[ParticleChunk]:
        """Yield :class:`ParticleChunk` of at most ``chunk_size`` particles, file order.

        ``components``: keep only these component codes (decided from the IDs before the other
        fields are decoded, so skipped particles cost only their ID); empty chunks are skipped.
        """
        if chunk_size < 1:
            raise DataError(f"chunk_size must be >= 1, got {chunk_size}")
        lut = None
        if components is not None:
            lut = np.zeros(256, bool)
            lut[list(components)] = True
        index0 = 0
        for kind, block in self.blocks():
            n = block.shape[0]
            for a in range(0, n, chunk_size):
                rec = block[a : a + chunk_size]
                chunk = self._decode(kind, rec, index0 + a, velocities, lut)
                if chunk is not None:
                    yield chunk
            index0 += n

    def _decode(
        self,
        kind: str,
        rec: np.ndarray,
        index0: int,
        velocities: bool,
        lut: np.ndarray | None = None,
    ) -> ParticleChunk | None:
        n = rec.shape[0]
        if self.variant == "standard" or kind == "gas":
            ids = np.arange(index0, index0 + n, dtype=np.uint64)
            code = {"gas": OTHER, "dark": DARK_MATTER, "star": DISK}[kind]
            comp = np.full(n, code, np.uint8)
        elif self.variant == "v2":
            ids = np.ascontiguousarray(rec["id"], dtype=np.uint64)
            comp = component_from_ids(ids, "v2")
        else:
            raw = np.ascontiguousarray(rec["id"], dtype=np.int32)
            comp = component_from_ids(raw, "v1")
            ids = raw.astype(np.int64).astype(np.uint64)
        if lut is not None:
            keep = lut[comp]
            if not keep.any():
                return None
            if not keep.all():
                rec, ids, comp = rec[keep], ids[keep], comp[keep]
        pos = np.ascontiguousarray(rec["pos"], dtype=np.float32)
        mass = np.ascontiguousarray(rec["mass"], dtype=np.float32)
        vel = np.ascontiguousarray(rec["vel"], dtype=np.float32) if velocities else None
        return ParticleChunk(pos, mass, ids, comp, vel)

    def read(self, velocities: bool = True) -> ParticleChunk:
        """Everything at once (small files only)."""
        return concat_chunks(list(self.iter_chunks(max(self.n_particles, 1), velocities)))


class TipsySet:
    """A per-rank tipsy set ``<snap>_<time>-0``, ``-1``, ...: one snapshot, counts summed.

    All files must exist, be valid and share the variant; the time is rank 0's.
    """

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = tuple(Path(p) for p in paths)
        if not self.paths:
            raise DataError("empty per-rank tipsy set")
        names = [parse_snapshot_name(p) for p in self.paths]
        ranks = [n.rank for n in names if n is not None and n.rank is not None]
        if len(ranks) == len(self.paths) and sorted(ranks) != list(range(len(ranks))):
            missing = sorted(set(range(max(ranks) + 1)) - set(ranks))
            raise DataError(
                f"{self.paths[0]}: per-rank set is incomplete: missing rank(s) {missing}"
            )
        self.files = [TipsyFile(p) for p in self.paths]
        variants = {f.variant for f in self.files}
        if len(variants) > 1:
            raise DataError(
                f"{self.paths[0]}: per-rank files mix tipsy variants {sorted(variants)}"
            )
        self.variant = self.files[0].variant
        self.format = f"tipsy-{self.variant}-ranks"
        self.time, self.time_source = self.files[0].time, self.files[0].time_source
        self.n_particles = sum(f.n_particles for f in self.files)

    def __repr__(self) -> str:
        return f"TipsySet({len(self.files)} ranks, {self.format}, n={self.n_particles})"

    def iter_chunks(
        self,
        chunk_size: int = DEFAULT_CHUNK,
        velocities: bool = True,
        components: Sequence[int] | None = None,
    ) -> Iterator[ParticleChunk]:
        for f in self.files:
            yield from f.iter_chunks(chunk_size, velocities, components)

    def read(self, velocities: bool = True) -> ParticleChunk:
        return concat_chunks(list(self.iter_chunks(max(self.n_particles, 1), velocities)))


# --------------------------------------------------------------------------- writer
def _records(dtype: np.dtype, pos, vel, mass, ids, eps: float, variant: str) -> np.ndarray:
    n = mass.shape[0]
    rec = np.zeros(n, dtype)
    rec["mass"] = mass
    rec["pos"] = pos
    rec["vel"] = vel
    names = dtype.names
    if "eps" in names:
        rec["eps"] = eps
    if variant == "v2":
        rec["id"] = ids.astype(np.uint64)
    elif variant == "v1":
        rec["id"] = ids.astype(np.int64).astype(np.int32)
    return rec


def write_tipsy(
    path: str | Path,
    pos: np.ndarray,
    vel: np.ndarray,
    mass: np.ndarray,
    ids: np.ndarray | None = None,
    *,
    dark: np.ndarray | None = None,
    time: float = 0.0,
    variant: str = "v2",
    eps: float = 0.0,
    version_field: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Path:
    """Write a tipsy file: dark-matter records first, then stars (input order kept in each).

    Args:
        pos, vel: ``(n, 3)`` positions [kpc] and velocities [100 km/s].
        mass: ``(n,)`` masses [2.324876e9 Msun].
        ids: ``(n,)`` integer IDs (required for V1/V2; V1 needs them in ``[0, 2^31)``).
        dark: ``(n,)`` bool, which particles go in the dark-matter block; default: from the IDs
            by the variant's convention (every particle is a star in ``standard`` without it).
        time: header time (code units).
        variant: ``"v1"``, ``"v2"`` or ``"standard"`` (big-endian, no IDs).
        eps: softening written into V1/standard records.
        version_field: the header's last i32 (default 2 for V2, 0 otherwise).
    """
    path = Path(path)
    if variant not in VARIANTS:
        raise DataError(f"unknown tipsy variant {variant!r}; choose from {VARIANTS}")
    pos = np.asarray(pos, np.float32).reshape(-1, 3)
    vel = np.asarray(vel, np.float32).reshape(-1, 3)
    mass = np.asarray(mass, np.float32).reshape(-1)
    n = mass.shape[0]
    if pos.shape[0] != n or vel.shape[0] != n:
        raise DataError(f"pos {pos.shape}, vel {vel.shape} and mass {mass.shape} disagree")
    if ids is None:
        if variant != "standard":
            raise DataError(f"tipsy {variant} needs particle IDs")
        ids = np.arange(n, dtype=np.uint64)
    ids = np.asarray(ids).reshape(-1)
    if ids.shape[0] != n:
        raise DataError(f"ids {ids.shape} and mass {mass.shape} disagree")
    if variant == "v1" and n and (int(ids.min()) < 0 or int(ids.max()) >= 2**31):
        raise DataError("tipsy V1 IDs must lie in [0, 2^31)")
    if dark is None:
        if variant == "standard":
            dark = np.zeros(n, bool)
        else:
            dark = component_from_ids(ids, variant) == DARK_MATTER
    dark = np.asarray(dark, bool).reshape(-1)
    dts = RECORD_DTYPES[variant]
    ndark = int(dark.sum())
    nstar = n - ndark
    header = np.zeros(1, HEADER_DTYPE if variant != "standard" else HEADER_DTYPE.newbyteorder(">"))
    header["time"] = time
    header["nbodies"] = n
    header["ndim"] = 3
    header["nsph"] = 0
    header["ndark"] = ndark
    header["nstar"] = nstar
    header["version"] = (2 if variant == "v2" else 0) if version_field is None else version_field
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        for sel, kind in ((dark, "dark"), (~dark, "star")):
            idx = np.flatnonzero(sel)
            for a in range(0, idx.shape[0], chunk_size):
                j = idx[a : a + chunk_size]
                f.write(
                    _records(dts[kind], pos[j], vel[j], mass[j], ids[j], eps, variant).tobytes()
                )
    os.replace(tmp, path)
    return path

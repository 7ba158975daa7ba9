"""BonsaiIO ``*.bonsai`` snapshots (V1/V2): a streaming, memory-mapped reader and a writer.

Layout (``shared/docs/bonsai-format.md``)::

    offset 0              i64 header_offset
    offset 8              data blocks: nRank x i64 element counts, then the elements
    offset header_offset  char[16] version ("V1"/"V2"/"V3"), i32 nData,
                          nData x 280-byte entries (name char[256], elementSize u64,
                          offset i64, nRank i32, 4 bytes pad), then time f64
                          (V1 files wrote only 4 bytes of it: the time comes from the file name)

Arrays are matched by name *and* element size: ``DM:``/``Stars:`` + ``IDType`` (8, u64 with the type
in bits 63-48: 0 dark matter, 1 bulge, 2 disk, 3+ dust/glow/other), ``POS:real4`` (16, x y z mass),
``VEL:float[3]`` (12), ``RHOH:float[2]`` (8, optional, ignored). Counts and offsets are 64-bit;
the reader streams chunks from memory maps, so files larger than memory are fine.

Quick dumps (``<snap>_quick_<time>.bonsai``) keep every k-th particle without rescaling the mass;
the reader multiplies masses by ``1 / quick_ratio`` (default 0.1) so surface densities come out
right. IDs are returned exactly as stored (the raw u64 IDType).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rho_core.data.particles import (
    DEFAULT_CHUNK,
    OTHER,
    ParticleChunk,
    concat_chunks,
    parse_snapshot_name,
)
from rho_core.errors import DataError

ENTRY_DTYPE = np.dtype(
    [
        ("name", "V256"),
        ("element_size", "<u8"),
        ("offset", "<i8"),
        ("n_rank", "<i4"),
        ("pad", "<i4"),
    ]
)
assert ENTRY_DTYPE.itemsize == 280
VERSIONS = ("V1", "V2", "V3")
GROUPS = ("DM", "Stars")
DEFAULT_QUICK_RATIO = 0.1
TYPE_SHIFT = 48
ID_MASK = (1 << TYPE_SHIFT) - 1

# (suffix, element size, dtype of one element)
POS_ARRAY = ("POS:real4", 16, np.dtype(("<f4", (4,))))
VEL_ARRAY = ("VEL:float[3]", 12, np.dtype(("<f4", (3,))))
ID_ARRAY = ("IDType", 8, np.dtype("<u8"))
RHOH_ARRAY = ("RHOH:float[2]", 8, np.dtype(("<f4", (2,))))


def make_idtype(ptype: np.ndarray | int, per_type_id: np.ndarray | int) -> np.ndarray:
    """Pack BonsaiIO IDType: ``type << 48 | id`` as uint64 (type 0 DM, 1 bulge, 2 disk, 3 other)."""
    t = np.asarray(ptype, np.uint64)
    i = np.asarray(per_type_id, np.uint64)
    return (t << np.uint64(TYPE_SHIFT)) | (i & np.uint64(ID_MASK))


def component_from_idtype(idtype: np.ndarray) -> np.ndarray:
    """Component codes ``(n,) uint8`` from the IDType's type bits (4+ collapse to other)."""
    t = np.asarray(idtype, np.uint64) >> np.uint64(TYPE_SHIFT)
    return np.minimum(t, OTHER).astype(np.uint8)


def is_bonsaiio(path: str | Path) -> bool:
    """True for a ``.bonsai`` name, or content with an in-range header offset and a version tag."""
    path = Path(path)
    if path.suffix == ".bonsai":
        return True
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                return False
            off = int(np.frombuffer(raw, "<i8")[0])
            if not 8 <= off <= size - 20:
                return False
            f.seek(off)
            tag = f.read(16)
    except OSError:
        return False
    return tag.split(b"\0")[0].decode("latin-1") in VERSIONS


@dataclass(frozen=True)
class Entry:
    """One array in the file: its data start, per-rank counts and element size."""

    name: str
    element_size: int
    offset: int
    counts: tuple[int, ...]

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def data_offset(self) -> int:
        return self.offset + 8 * len(self.counts)


class BonsaiIOFile:
    """A BonsaiIO snapshot; entries are listed on open, arrays are streamed on demand."""

    def __init__(self, path: str | Path, quick_ratio: float | None = None):
        self.path = Path(path)
        self.paths = (self.path,)
        parsed = parse_snapshot_name(self.path)
        self.quick = bool(parsed and parsed.quick)
        if quick_ratio is None:
            quick_ratio = DEFAULT_QUICK_RATIO if self.quick else 1.0
        if not 0 < quick_ratio <= 1:
            raise DataError(f"{self.path}: quick_ratio must be in (0, 1], got {quick_ratio}")
        self.quick_ratio = float(quick_ratio)
        self._read_header(parsed)
        self.groups = self._match_groups()
        self.n_particles = sum(g[ID_ARRAY[0]].count for g in self.groups.values())

    def __repr__(self) -> str:
        return (
            f"BonsaiIOFile({str(self.path)!r}, {self.version}, n={self.n_particles}, t={self.time})"
        )

    # ---------------------------------------------------------------- header
    def _fail(self, what: str) -> DataError:
        return DataError(f"{self.path}: {what}")

    def _read_header(self, parsed) -> None:
        try:
            size = os.path.getsize(self.path)
            f = open(self.path, "rb")
        except OSError as exc:
            raise self._fail(f"cannot read ({exc.strerror})") from exc
        with f:
            raw = f.read(8)
            if len(raw) < 8:
                raise self._fail(f"{size} bytes: too short for a BonsaiIO file (not Bonsai?)")
            hoff = int(np.frombuffer(raw, "<i8")[0])
            if not 8 <= hoff <= size - 20:
                raise self._fail(
                    f"header offset {hoff} is out of range for a {size}-byte file "
                    "(truncated, or not a BonsaiIO file)"
                )
            f.seek(hoff)
            head = f.read(20)
            tag = head[:16].split(b"\0")[0].decode("latin-1", "replace")
            if tag not in VERSIONS:
                raise self._fail(
                    f"not a BonsaiIO file: version tag {tag[:16]!r} at offset {hoff} "
                    f"(expected one of {VERSIONS})"
                )
            self.version = tag
            n_data = int(np.frombuffer(head[16:20], "<i4")[0])
            ent_end = hoff + 20 + 280 * n_data
            if n_data < 0 or ent_end > size:
                raise self._fail(
                    f"header lists {n_data} arrays, which do not fit in the file "
                    f"({size} bytes, header at {hoff}): truncated or corrupt"
                )
            raw_entries = np.frombuffer(f.read(280 * n_data), ENTRY_DTYPE)
            tbytes = f.read(8)
            entries = []
            for e in raw_entries:
                name = bytes(e["name"]).split(b"\0")[0].decode("latin-1", "replace")
                off, n_rank = int(e["offset"]), int(e["n_rank"])
                if n_rank < 1 or not 8 <= off or off + 8 * n_rank > hoff:
                    raise self._fail(
                        f"array {name!r}: data offset {off} / nRank {n_rank} out of range "
                        f"(data must lie between byte 8 and the header at {hoff})"
                    )
                f.seek(off)
                counts = np.frombuffer(f.read(8 * n_rank), "<i8")
                if (counts < 0).any():
                    raise self._fail(f"array {name!r}: negative element counts {counts.tolist()}")
                ent = Entry(name, int(e["element_size"]), off, tuple(int(c) for c in counts))
                end = ent.data_offset + ent.count * ent.element_size
                if end > hoff:
                    raise self._fail(
                        f"array {name!r}: {ent.count} elements of {ent.element_size} bytes end "
                        f"at byte {end}, beyond the data region ({hoff} bytes): truncated or "
                        "count mismatch"
                    )
                entries.append(ent)
        self.entries = entries
        header_time = float("nan")
        if self.version != "V1" and len(tbytes) < 8:
            raise self._fail(
                f"truncated inside the time field: {len(tbytes)} of its 8 bytes after the "
                f"{n_data} array entries ({size} bytes in all)"
            )
        if self.version != "V1":
            header_time = float(np.frombuffer(tbytes, "<f8")[0])
        if math.isfinite(header_time):
            self.time, self.time_source = header_time, "header"
        elif parsed is not None:
            self.time, self.time_source = parsed.time, "filename"
        else:
            what = "not written by V1 files" if self.version == "V1" else f"{header_time}"
            raise self._fail(
                f"no usable snapshot time: the header time is {what} and the file name does "
                "not carry one (<snap>_<time>.bonsai); rename the file with its time"
            )
        self.format = f"bonsaiio-{self.version.lower()}" + ("-quick" if self.quick else "")

    def _match_groups(self) -> dict[str, dict[str, Entry]]:
        """``{"DM"|"Stars": {suffix: Entry}}`` for arrays matched by name and element size."""
        groups: dict[str, dict[str, Entry]] = {}
        for g in GROUPS:
            found: dict[str, Entry] = {}
            for suffix, esize, _dt in (POS_ARRAY, VEL_ARRAY, ID_ARRAY, RHOH_ARRAY):
                name = f"{g}:{suffix}"
                cands = [e for e in self.entries if e.name == name]
                match = [e for e in cands if e.element_size == esize]
                if cands and not match:
                    raise self._fail(
                        f"array {name!r} has element size {cands[0].element_size}, expected "
                        f"{esize}: unsupported layout"
                    )
                if match:
                    found[suffix] = match[0]
            if not found:
                continue
            for req in (POS_ARRAY[0], ID_ARRAY[0]):
                if req not in found:
                    raise self._fail(f"group {g!r} lacks the array {g}:{req}")
            ref = found[ID_ARRAY[0]]
            for suffix, e in found.items():
                if e.count != ref.count:
                    raise self._fail(
                        f"count mismatch: {g}:{suffix} has {e.count} elements but "
                        f"{g}:IDType has {ref.count}"
                    )
            groups[g] = found
        if not groups:
            raise self._fail(
                "no particle arrays (DM:/Stars: POS:real4 + IDType) in the file; entries: "
                + ", ".join(f"{e.name}({e.element_size})" for e in self.entries)
            )
        return groups

    # ---------------------------------------------------------------- data
    def _memmap(self, entry: Entry, dtype: np.dtype) -> np.ndarray:
        shape = (entry.count,) + dtype.shape
        return np.memmap(
            self.path, dtype=dtype.base, mode="r", offset=entry.data_offset, shape=shape
        )

    def iter_chunks(
        self,
        chunk_size: int = DEFAULT_CHUNK,
        velocities: bool = True,
        components: Sequence[int] | None = None,
    ) -> Iterator[ParticleChunk]:
        """Yield chunks of at most ``chunk_size`` particles (DM first, then stars).

        ``components``: keep only these codes (decided from the IDs first); empty chunks skipped.
        """
        if chunk_size < 1:
            raise DataError(f"chunk_size must be >= 1, got {chunk_size}")
        lut = None
        if components is not None:
            lut = np.zeros(256, bool)
            lut[list(components)] = True
        scale = np.float32(1.0 / self.quick_ratio)
        for g in GROUPS:
            if g not in self.groups:
                continue
            arrs = self.groups[g]
            n = arrs[ID_ARRAY[0]].count
            if n == 0:
                continue
            pos_mm = self._memmap(arrs[POS_ARRAY[0]], POS_ARRAY[2])
            id_mm = self._memmap(arrs[ID_ARRAY[0]], ID_ARRAY[2])
            vel_mm = None
            if velocities:
                if VEL_ARRAY[0] not in arrs:
                    raise self._fail(f"group {g!r} has no {g}:{VEL_ARRAY[0]} array (velocities)")
                vel_mm = self._memmap(arrs[VEL_ARRAY[0]], VEL_ARRAY[2])
            for a in range(0, n, chunk_size):
                b = min(a + chunk_size, n)
                ids = np.array(id_mm[a:b], dtype=np.uint64)
                comp = component_from_idtype(ids)
                sel = slice(None)
                if lut is not None:
                    keep = lut[comp]
                    if not keep.any():
                        continue
                    if not keep.all():
                        sel = keep
                        ids, comp = ids[keep], comp[keep]
                p4 = np.asarray(pos_mm[a:b])[sel]
                mass = np.ascontiguousarray(p4[:, 3])
                if scale != 1:
                    mass *= scale
                vel = None
                if vel_mm is not None:
                    vel = np.array(np.asarray(vel_mm[a:b])[sel], dtype=np.float32)
                yield ParticleChunk(np.ascontiguousarray(p4[:, :3]), mass, ids, comp, vel)

    def read(self, velocities: bool = True) -> ParticleChunk:
        return concat_chunks(list(self.iter_chunks(max(self.n_particles, 1), velocities)))


def _split(n: int, n_ranks: int) -> list[int]:
    base, extra = divmod(n, n_ranks)
    return [base + (1 if r < extra else 0) for r in range(n_ranks)]


def write_bonsaiio(
    path: str | Path,
    pos: np.ndarray,
    vel: np.ndarray,
    mass: np.ndarray,
    idtype: np.ndarray,
    *,
    time: float = 0.0,
    version: str = "V2",
    n_ranks: int = 1,
    garbage: bool = False,
) -> Path:
    """Write a BonsaiIO file with ``DM:`` and ``Stars:`` groups split by the IDType bits.

    Args:
        pos, vel: ``(n, 3)``; mass ``(n,)``; idtype ``(n,)`` uint64 (see :func:`make_idtype`).
        time: snapshot time (V1 writes only 4 garbage bytes of it, as Bonsai did).
        version: ``"V1"`` or ``"V2"``.
        n_ranks: per-rank counts to record (the data are split evenly, rank 0 first).
        garbage: fill the bytes after each name's NUL and the entry padding with junk (as real
            files have), to exercise the reader.
    """
    if version not in ("V1", "V2"):
        raise DataError(f"BonsaiIO version must be V1 or V2, got {version!r}")
    pos = np.asarray(pos, np.float32).reshape(-1, 3)
    vel = np.asarray(vel, np.float32).reshape(-1, 3)
    mass = np.asarray(mass, np.float32).reshape(-1)
    idtype = np.asarray(idtype, np.uint64).reshape(-1)
    dm = (idtype >> np.uint64(TYPE_SHIFT)) == 0
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    entries = []
    rng = np.random.default_rng(0)
    with open(tmp, "wb") as f:
        f.write(np.int64(0).tobytes())
        for g, sel in (("DM", dm), ("Stars", ~dm)):
            idx = np.flatnonzero(sel)
            if idx.size == 0:
                continue  # an array with zero particles is absent
            p4 = np.concatenate([pos[idx], mass[idx, None]], axis=1).astype("<f4")
            for (suffix, esize, _dt), data in (
                (ID_ARRAY, idtype[idx].astype("<u8")),
                (POS_ARRAY, p4),
                (VEL_ARRAY, vel[idx].astype("<f4")),
            ):
                off = f.tell()
                f.write(np.asarray(_split(idx.size, n_ranks), "<i8").tobytes())
                f.write(np.ascontiguousarray(data).tobytes())
                entries.append((f"{g}:{suffix}", esize, off, n_ranks))
        hoff = f.tell()
        f.write(version.encode().ljust(16, b"\0"))
        f.write(np.int32(len(entries)).tobytes())
        for name, esize, off, nr in entries:
            e = np.zeros(1, ENTRY_DTYPE)
            nb = name.encode() + b"\0"
            if garbage:
                nb += rng.integers(1, 255, 256 - len(nb), dtype=np.uint8).tobytes()
            e["name"] = np.void(nb.ljust(256, b"\0"))
            e["element_size"] = esize
            e["offset"] = off
            e["n_rank"] = nr
            e["pad"] = 0x5A5A5A5A if garbage else 0
            f.write(e.tobytes())
        if version == "V1":
            f.write(b"\xde\xad\xbe\xef")
        else:
            f.write(np.float64(time).tobytes())
        f.seek(0)
        f.write(np.int64(hoff).tobytes())
    os.replace(tmp, path)
    return path

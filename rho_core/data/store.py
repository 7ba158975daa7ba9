"""The ρ-Diffusion sample store: a Zarr v3 group of fields, parameters and metadata (schema 1).

Layout (see ``docs/data.md`` and the "Store format" section of ``design.md``)::

    STORE/                      Zarr v3 group
      zarr.json                 group attrs + consolidated metadata of the two arrays
        attrs["rho_diffusion"]  {"schema_version": 1, "kind", "spatial_dims", "param_names",
                                 "field_shape", "provenance", "n_samples", "samples_per_chunk"}
        attrs["normalization"]  optional dict (see :mod:`rho_core.data.normalization`)
        attrs["sample_keys"]    optional list of per-sample keys (str or None), length n_samples
      fields/                   float32 (N, C, *spatial), chunks of ``samples_per_chunk`` whole
                                samples, zstd-compressed
      params/                   float64 (N, P), columns in ``param_names`` order

Crash safety. Zarr's local store writes every file atomically (temporary file, then rename).
An append (1) grows both arrays, (2) writes the chunk data, (3) writes the new committed count
``n_samples`` into the group attrs — the commit point — and (4) re-consolidates the metadata.
A process killed anywhere before (3) leaves the previous count, so the store opens showing exactly
the samples committed before; rows beyond the count are ignored by readers and cut off by the next
writer. A kill between (3) and (4) leaves a group without consolidated metadata, which readers
handle by reading the array metadata directly.

Consolidated metadata is not (yet) part of the Zarr v3 specification and zarr-python warns about
it on every call; the store uses it deliberately (one metadata read to open a store, useful on
remote file systems) and silences exactly that warning.

One writer at a time: every writer (create, overwrite, append, attrs) first takes an advisory
``flock`` on the sibling lock file ``.NAME.lock`` (:mod:`rho_core.locks`; released by the kernel
when the process dies) and only then looks at or touches the store path, so a second writer gets
a :class:`StoreError` naming the pid of the first.

New stores appear complete or not at all. A store created with ``mode="w-"`` or ``"w"`` is built
under a temporary sibling name (``.NAME.tmp-PID-…``) and renamed into place when the writer is
closed; with ``"w"`` the old store is swapped out only by that rename (``renameat2`` with
``RENAME_EXCHANGE`` where the file system has it), so a kill at any moment leaves the old store.
A writer that leaves ``with`` on an exception discards its temporary store (and an empty store it
created with ``mode="a"``), so a failed ``rho sample``/``rho ingest`` leaves nothing that blocks a
rerun. Temporaries of killed writers are removed by the next writer of the same path.

Checksums. Each commit also records, in the same atomic attrs write, a CRC-32 of the committed
rows of every ``fields`` chunk and one of the committed ``params`` (``attrs["rho_diffusion"]
["checksums"]``) and a content ``fingerprint`` derived from them. Readers verify every chunk they
decode, so a deleted chunk file (which zarr would silently read as ``fill_value`` zeros) or a
damaged one is a :class:`StoreError` naming the sample range and the file, never zeros. Stores
written before checksums existed are read unverified (decoding errors are still named).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rho_core.errors import DataError, StoreError
from rho_core.locks import FileLock, LockBusy, acquire, store_lock_path

SCHEMA_VERSION = 1
"""Version of the store layout written and accepted by this module."""

ATTR_KEY = "rho_diffusion"
NORMALIZATION_KEY = "normalization"
KEYS_KEY = "sample_keys"
CHECKSUM_KEY = "checksums"
FINGERPRINT_KEY = "fingerprint"
TARGET_CHUNK_BYTES = 2 * 1024 * 1024
"""Default chunk size: as many whole samples as fit in ~2 MiB (at least one)."""
MAX_SAMPLES_PER_CHUNK = 1024

Mode = Literal["w-", "w", "a"]


@contextlib.contextmanager
def _quiet_consolidated() -> Iterator[None]:
    """Silence zarr's "consolidated metadata is not in the v3 spec" warning (used deliberately)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


def default_samples_per_chunk(field_shape: Sequence[int], itemsize: int = 4) -> int:
    """Whole samples per chunk so a chunk holds about ``TARGET_CHUNK_BYTES`` (at least 1)."""
    sample_bytes = int(np.prod(field_shape)) * itemsize
    return int(max(1, min(MAX_SAMPLES_PER_CHUNK, TARGET_CHUNK_BYTES // max(1, sample_bytes))))


def store_exists(path: str | os.PathLike) -> bool:
    """True when ``path`` is a Zarr group carrying ρ-Diffusion attributes (any schema version)."""
    meta = Path(path) / "zarr.json"
    if not meta.is_file():
        return False
    try:
        import json

        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return doc.get("node_type") == "group" and ATTR_KEY in doc.get("attributes", {})


def _open_group(path: Path, mode: str, use_consolidated: bool | None = None):
    import zarr

    with _quiet_consolidated():
        return zarr.open_group(
            str(path), mode=mode, zarr_format=3, use_consolidated=use_consolidated
        )


def _node_type(path: Path) -> str | None:
    """``node_type`` of the Zarr v3 metadata at ``path`` (``None`` if unreadable)."""
    try:
        return json.loads((path / "zarr.json").read_text()).get("node_type")
    except (OSError, ValueError, AttributeError):
        return None


def _read_meta(path: Path) -> tuple[Any, dict]:
    """Open the group read-only and return (group, rho_diffusion attrs), checking the schema."""
    if not path.exists():
        raise StoreError(f"no store at '{path}': the path does not exist")
    if not (path / "zarr.json").is_file():
        raise StoreError(f"'{path}' is not a ρ-Diffusion store (no Zarr v3 group metadata there)")
    try:
        group = _open_group(path, "r")
    except Exception as exc:  # zarr raises many kinds for malformed metadata
        if _node_type(path) == "array":
            raise StoreError(
                f"'{path}' is a Zarr array (a member of a store), not a store; pass the store "
                f"directory '{path.parent}'"
            ) from exc
        raise StoreError(f"'{path}' is not a readable Zarr v3 group: {exc}") from exc
    meta = dict(group.attrs.get(ATTR_KEY) or {})
    if not meta:
        raise StoreError(
            f"'{path}' is a Zarr group but not a ρ-Diffusion store (no '{ATTR_KEY}' attributes)"
        )
    found = meta.get("schema_version")
    if found != SCHEMA_VERSION:
        raise StoreError(
            f"store '{path}' has schema_version {found!r}, this version of ρ-Diffusion reads "
            f"schema_version {SCHEMA_VERSION}; regenerate or convert the store"
        )
    for key in ("kind", "spatial_dims", "param_names", "field_shape", "n_samples"):
        if key not in meta:
            raise StoreError(f"store '{path}' metadata lacks '{key}': the store is damaged")
    _check_meta_types(path, meta)
    return group, meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_meta_types(path: Path, meta: dict) -> None:
    """Each ``rho_diffusion`` attr has the type the readers rely on (hand-edited or foreign
    metadata gives one line naming the attr, not a traceback deep inside a reader)."""

    def bad(key: str, want: str) -> StoreError:
        return StoreError(
            f"store '{path}' has a bad '{key}' attr ({meta.get(key)!r}; expected {want}): the "
            "store metadata is damaged; regenerate the store or fix zarr.json"
        )

    if not isinstance(meta["kind"], str) or not meta["kind"]:
        raise bad("kind", "a non-empty string")
    if not _is_int(meta["spatial_dims"]) or meta["spatial_dims"] not in (1, 2, 3):
        raise bad("spatial_dims", "1, 2 or 3")
    fs = meta["field_shape"]
    if (
        not isinstance(fs, list)
        or len(fs) != 1 + meta["spatial_dims"]
        or not all(_is_int(v) and v >= 1 for v in fs)
    ):
        raise bad("field_shape", f"a list of {1 + meta['spatial_dims']} positive integers")
    names = meta["param_names"]
    if not isinstance(names, list) or not all(isinstance(v, str) for v in names):
        raise bad("param_names", "a list of strings")
    if not _is_int(meta["n_samples"]) or meta["n_samples"] < 0:
        raise bad("n_samples", "an integer ≥ 0")
    if meta.get("provenance") is not None and not isinstance(meta["provenance"], dict):
        raise bad("provenance", "a dict")
    if "samples_per_chunk" in meta and (
        not _is_int(meta["samples_per_chunk"]) or meta["samples_per_chunk"] < 1
    ):
        raise bad("samples_per_chunk", "an integer ≥ 1")
    ck = meta.get(CHECKSUM_KEY)
    if ck is not None and (
        not isinstance(ck, dict)
        or ck.get("algorithm") != "crc32"
        or not isinstance(ck.get("fields"), list)
        or not all(_is_int(v) for v in ck["fields"])
        or not _is_int(ck.get("params"))
    ):
        raise bad(CHECKSUM_KEY, "{'algorithm': 'crc32', 'fields': [int, ...], 'params': int}")


def _check_normalization(path: Path, norm: Any) -> dict | None:
    """The ``normalization`` attr as a dict that :class:`Normalizer` accepts, else StoreError."""
    if norm is None:
        return None
    if not isinstance(norm, dict):
        raise StoreError(
            f"store '{path}' has a bad 'normalization' attr ({norm!r}; expected a dict): refit "
            f"it with 'rho normalize {path}' or remove it"
        )
    if not norm:
        return None
    from rho_core.data.normalization import Normalizer

    try:
        Normalizer.from_dict(norm)
    except Exception as exc:  # noqa: BLE001 - KeyError/ValueError/TypeError from hand-edited attrs
        raise StoreError(
            f"store '{path}' has a bad 'normalization' attr ({type(exc).__name__}: {exc}): refit "
            f"it with 'rho normalize {path}' or remove it"
        ) from None
    return dict(norm)


def _crc_rows(block: np.ndarray, value: int = 0) -> int:
    """CRC-32 of rows of ``fields``/``params`` in C order, little-endian (continues ``value``)."""
    arr = np.ascontiguousarray(block, dtype=block.dtype.newbyteorder("<"))
    return zlib.crc32(memoryview(arr).cast("B"), value) & 0xFFFFFFFF


def chunk_file(path: Path, array: str, chunk: int, ndim: int) -> Path:
    """File of chunk ``chunk`` (along the sample axis) of ``array`` in a store at ``path``."""
    return path.joinpath(array, "c", str(chunk), *["0"] * (ndim - 1))


class _FieldsView:
    """Read-only view of the first ``n`` rows of the ``fields`` array (indexing like numpy).

    Rows beyond the committed count (left by a killed writer) are never visible. Reads go chunk
    by chunk: each chunk touched is decoded once and, when the store carries checksums, its CRC
    is compared with the committed one, so a missing or damaged chunk raises :class:`StoreError`
    naming the samples and the file instead of returning ``fill_value`` zeros.
    """

    def __init__(
        self, array: Any, n: int, path: Path | None = None, crcs: list[int] | None = None
    ) -> None:
        self._array = array
        self._n = n
        self._path = path
        self._crcs = crcs
        self.shape = (n, *array.shape[1:])
        self.ndim = len(self.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks = array.chunks

    def __len__(self) -> int:
        return self._n

    def _chunk_error(self, c: int, lo: int, hi: int, what: str) -> StoreError:
        where = "?" if self._path is None else chunk_file(self._path, "fields", c, self.ndim)
        return StoreError(
            f"store '{self._path}': samples {lo}–{hi - 1} (chunk file {where}) {what}; the store "
            "is damaged: restore the file or regenerate the store"
        )

    def read_chunk(self, c: int) -> np.ndarray:
        """The committed rows of chunk ``c``, decoded and verified, ``(k, C, *spatial)``."""
        spc = int(self.chunks[0])
        lo, hi = c * spc, min((c + 1) * spc, self._n)
        try:
            block = np.asarray(self._array[lo:hi])
        except Exception as exc:  # noqa: BLE001 - codec errors of truncated/garbled files
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise self._chunk_error(
                c, lo, hi, f"cannot be decoded ({type(exc).__name__}: {first})"
            ) from None
        if self._crcs is not None:
            if c >= len(self._crcs):
                raise self._chunk_error(c, lo, hi, "have no checksum in the store metadata")
            if _crc_rows(block) != self._crcs[c]:
                missing = (
                    self._path is not None
                    and not chunk_file(self._path, "fields", c, self.ndim).exists()
                )
                raise self._chunk_error(
                    c,
                    lo,
                    hi,
                    "are missing (the file was deleted)"
                    if missing
                    else "fail their checksum (the file was altered)",
                )
        return block

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (int64 in [0, n)) in the given order, read chunk by chunk (verified)."""
        out = np.empty((idx.size, *self.shape[1:]), dtype=self.dtype)
        if idx.size == 0:
            return out
        spc = int(self.chunks[0])
        chunk_ids = idx // spc
        for c in np.unique(chunk_ids):
            sel = np.nonzero(chunk_ids == c)[0]
            block = self.read_chunk(int(c))
            out[sel] = block[idx[sel] - int(c) * spc]
        return out

    def _bound_first(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -self._n <= i < self._n:
                raise IndexError(f"sample index {i} out of range for {self._n} samples")
            return i % self._n
        if isinstance(key, slice):
            return slice(*key.indices(self._n))
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (self._n,):
                raise IndexError("boolean index must have one entry per sample")
            return np.nonzero(idx)[0]
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -self._n or idx.max() >= self._n):
            raise IndexError(f"sample index out of range for {self._n} samples")
        return idx % max(self._n, 1)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
        else:
            first, rest = key, ()
        if first is Ellipsis:
            first, rest = slice(None), (Ellipsis, *rest)
        first = self._bound_first(first)
        if isinstance(first, int):
            return self._rows(np.array([first], dtype=np.int64))[0][rest]
        if isinstance(first, slice):
            first = np.arange(first.start, first.stop, first.step, dtype=np.int64)
        return self._rows(np.asarray(first, dtype=np.int64).reshape(-1))[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


@dataclass
class Store:
    """A committed, read-only view of a store: metadata, ``n`` samples and their parameters.

    Attributes:
        path: the store directory.
        kind: dataset family, e.g. ``"spherical_harmonics"``.
        spatial_dims: 1, 2 or 3.
        param_names: names of the ``params`` columns.
        provenance: free-form dict describing how the data were made.
        normalization: the ``normalization`` attrs dict, or ``None``.
        n: committed sample count.
        field_shape: ``(C, *spatial)`` of one sample.
        fields: lazy array of the ``n`` committed samples, ``(n, C, *spatial)`` float32.
        params: ``(n, P)`` float64 numpy array.
        samples_per_chunk: whole samples per stored chunk.
    """

    path: Path
    kind: str
    spatial_dims: int
    param_names: list[str]
    provenance: dict
    normalization: dict | None
    n: int
    field_shape: tuple[int, ...]
    fields: _FieldsView
    params: np.ndarray
    samples_per_chunk: int
    _keys: list | None
    _zarr_fields: Any
    fingerprint: str | None = None
    verified: bool = False

    def __len__(self) -> int:
        return self.n

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i``: ``(field (C, *spatial) float32, params (P,) float64)``."""
        if not 0 <= int(i) < self.n:
            raise IndexError(f"sample index {i} out of range for {self.n} samples")
        return self.fields[int(i)], self.params[int(i)].copy()

    def identity(self) -> dict:
        """What a training run records about its data and checks again when it resumes.

        ``{"path", "kind", "field_shape", "param_names", "n_samples", "fingerprint"}``: the
        absolute path, the content fingerprint (``None`` for stores written without checksums)
        and the shapes. Normalisation is not part of it (checkpoints record it separately).
        """
        return {
            "path": os.path.abspath(self.path),
            "kind": self.kind,
            "field_shape": list(self.field_shape),
            "param_names": list(self.param_names),
            "n_samples": self.n,
            "fingerprint": self.fingerprint,
        }

    def verify(self) -> None:
        """Decode and check every committed chunk (raises :class:`StoreError` on the first bad
        one). Costs one full read of the store."""
        for c in range(-(-self.n // self.samples_per_chunk)):
            self.fields.read_chunk(c)

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``indices`` in the given order: ``(fields (B, C, *spatial), params (B, P))``.

        Each stored chunk touched is read and decompressed once (indices are grouped by chunk),
        which is what makes random training batches cheap.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"sample index out of range for {self.n} samples")
        return self.fields._rows(idx), self.params[idx].copy()

    def to_dask(self):
        """The committed fields as a dask array ``(n, C, *spatial)`` with the store's chunks
        (each block read through the verified view)."""
        import dask.array as da

        name = f"rho-fields-{self.fingerprint or hashlib.sha1(str(self.path).encode()).hexdigest()}"
        return da.from_array(
            self.fields,
            chunks=(self.samples_per_chunk, *self.field_shape),
            asarray=True,
            lock=False,
            name=f"{name}-{self.n}",
        )

    def sample_keys(self) -> list[str | None]:
        """Per-sample keys given to :meth:`StoreWriter.append` (``None`` where none was given)."""
        if self._keys is None:
            return [None] * self.n
        return list(self._keys[: self.n])

    def param_ranges(self) -> dict[str, tuple[float, float]]:
        """``{name: (min, max)}`` over the committed samples (empty store: NaNs)."""
        if self.n == 0:
            return {name: (math.nan, math.nan) for name in self.param_names}
        lo, hi = self.params.min(axis=0), self.params.max(axis=0)
        return {name: (float(lo[j]), float(hi[j])) for j, name in enumerate(self.param_names)}

    def summary(self) -> dict:
        """JSON-serialisable description for ``rho info``."""
        return {
            "path": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "n_samples": self.n,
            "field_shape": list(self.field_shape),
            "channels": self.field_shape[0],
            "spatial_dims": self.spatial_dims,
            "spatial_shape": list(self.field_shape[1:]),
            "param_names": list(self.param_names),
            "param_ranges": {
                k: [None if math.isnan(x) else x for x in v] for k, v in self.param_ranges().items()
            },
            "samples_per_chunk": self.samples_per_chunk,
            "bytes_uncompressed": int(self.n * np.prod(self.field_shape) * 4),
            "has_sample_keys": self._keys is not None,
            "checksums": self.verified,
            "fingerprint": self.fingerprint,
            "normalization": self.normalization,
            "provenance": self.provenance,
        }


def open_store(path: str | os.PathLike) -> Store:
    """Open a store read-only, showing only its committed samples.

    Raises:
        StoreError: the path does not exist, is not a ρ-Diffusion store, has another
            ``schema_version``, or is damaged.
    """
    path = Path(path)
    group, meta = _read_meta(path)
    n = int(meta["n_samples"])
    try:
        fields = group["fields"]
        params_arr = group["params"]
        if fields.shape[0] < n or params_arr.shape[0] < n:
            # Stale consolidated metadata cannot describe fewer rows than committed (the commit
            # is written after the arrays grow), but read the arrays directly to be sure.
            group = _open_group(path, "r", use_consolidated=False)
            fields, params_arr = group["fields"], group["params"]
    except KeyError as exc:
        raise StoreError(f"store '{path}' lacks the {exc} array: the store is damaged") from exc
    if fields.shape[0] < n or params_arr.shape[0] < n:
        raise StoreError(
            f"store '{path}' claims {n} samples but holds {fields.shape[0]}: the store is damaged"
        )
    field_shape = tuple(int(s) for s in meta["field_shape"])
    if tuple(fields.shape[1:]) != field_shape:
        raise StoreError(f"store '{path}': fields shape {fields.shape} disagrees with its metadata")
    keys = group.attrs.get(KEYS_KEY)
    if keys is not None and (not isinstance(keys, list) or len(keys) < n):
        raise StoreError(
            f"store '{path}' has a bad '{KEYS_KEY}' attr (expected a list of ≥ {n} entries): "
            "the store metadata is damaged"
        )
    norm = _check_normalization(path, group.attrs.get(NORMALIZATION_KEY))
    ck = meta.get(CHECKSUM_KEY)
    P = len(meta["param_names"])
    try:
        params = np.asarray(params_arr[:n], dtype=np.float64).reshape(n, P)
    except Exception as exc:  # noqa: BLE001 - codec errors of a truncated/garbled params chunk
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise StoreError(
            f"store '{path}': the params of samples 0–{n - 1} (files under "
            f"{path / 'params' / 'c'}) cannot be decoded ({type(exc).__name__}: {first}); the "
            "store is damaged: restore the files or regenerate the store"
        ) from None
    if ck is not None:
        spc = int(fields.chunks[0])
        if len(ck["fields"]) < -(-n // spc):
            raise StoreError(
                f"store '{path}' records checksums of {len(ck['fields'])} chunks but holds "
                f"{-(-n // spc)}: the store metadata is damaged"
            )
        if _crc_rows(params) != ck["params"]:
            raise StoreError(
                f"store '{path}': the params of samples 0–{n - 1} (files under "
                f"{path / 'params' / 'c'}) fail their checksum (a file was deleted or altered); "
                "the store is damaged: restore the files or regenerate the store"
            )
    return Store(
        path=path,
        kind=str(meta["kind"]),
        spatial_dims=int(meta["spatial_dims"]),
        param_names=list(meta["param_names"]),
        provenance=dict(meta.get("provenance") or {}),
        normalization=norm,
        n=n,
        field_shape=field_shape,
        fields=_FieldsView(fields, n, path, None if ck is None else list(ck["fields"])),
        params=params,
        samples_per_chunk=int(fields.chunks[0]),
        _keys=list(keys) if keys is not None else None,
        _zarr_fields=fields,
        fingerprint=meta.get(FINGERPRINT_KEY) if ck is not None else None,
        verified=ck is not None,
    )


class StoreWriter:
    """Appends whole samples to a store; the committed count is written last (crash-safe).

    Use as a context manager: leaving ``with`` normally (or :meth:`close`) publishes a new store
    (renames it into place) and releases the writer lock; leaving on an exception (or
    :meth:`abort`) discards a store this writer created and keeps an existing one as committed.

    Attributes:
        path: the store path (where the store is, or will appear when published).
    """

    def __init__(
        self,
        path: Path,
        workdir: Path,
        group: Any,
        meta: dict,
        lock: FileLock,
        publish: str | None = None,
        created: bool = False,
    ) -> None:
        self.path = path
        self._dir = workdir
        self._group = group
        self._meta = meta
        self._lock: FileLock | None = lock
        self._publish = publish  # None (in place), "new" (rename) or "replace" (swap)
        self._created = created
        self._fields = group["fields"]
        self._params = group["params"]
        keys = group.attrs.get(KEYS_KEY)
        self._keys: list | None = list(keys) if keys is not None else None
        self.field_shape = tuple(int(s) for s in meta["field_shape"])
        self.param_names = list(meta["param_names"])
        self.kind = str(meta["kind"])

    @property
    def n(self) -> int:
        """Committed sample count."""
        return int(self._meta["n_samples"])

    @property
    def samples_per_chunk(self) -> int:
        return int(self._fields.chunks[0])

    def sample_keys(self) -> list[str | None]:
        """Keys of the committed samples (``None`` where none was given), e.g. to skip
        duplicates before appending."""
        if self._keys is None:
            return [None] * self.n
        return list(self._keys[: self.n])

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def close(self) -> None:
        """Publish a new store (rename into place) and release the writer lock.

        The data are already committed by each append; for an existing store this only
        releases the lock.
        """
        if self._lock is None:
            return
        try:
            if self._publish is not None:
                _remove_partials(self._dir)
                _consolidate(self._dir)
                _fsync_tree(self._dir)
                _publish(self._dir, self.path, replace=self._publish == "replace")
                self._publish = None
        except OSError as exc:
            self.abort()
            raise _os_error(self.path, exc, "publishing") from None
        finally:
            self._release()

    def abort(self) -> None:
        """Give up: discard a store this writer created (the temporary one, or an empty one
        created in place), keep an existing store as committed, release the lock."""
        if self._lock is None:
            return
        try:
            if self._publish is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._publish = None
            elif self._created and self.n == 0:
                shutil.rmtree(self._dir, ignore_errors=True)
        finally:
            self._release()

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    @property
    def workdir(self) -> Path:
        """Where the store is being written: a temporary sibling for a new store (renamed to
        :attr:`path` on :meth:`close`), else :attr:`path` itself."""
        return self._dir

    def __del__(self) -> None:  # pragma: no cover - best effort
        # never closed (a bug or an exception that bypassed ``with``): a new store is not
        # published half-written; an existing one keeps what was committed
        with contextlib.suppress(Exception):
            self.abort()

    def _validate(
        self, fields: Any, params: Any, keys: Sequence[str] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        f = np.asarray(fields)
        if f.dtype.kind not in "fiu":
            raise DataError(f"fields must be real numbers (got dtype {f.dtype}); pass float32")
        if f.ndim != 1 + len(self.field_shape) or tuple(f.shape[1:]) != self.field_shape:
            raise DataError(
                f"fields must have shape (n, {', '.join(map(str, self.field_shape))}) for this "
                f"store, got {tuple(f.shape)}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            f32 = f.astype(np.float32, copy=False)
        if not np.isfinite(f32).all():
            bad = int((~np.isfinite(f32)).sum())
            raise DataError(f"fields contain {bad} NaN/inf values (after conversion to float32)")
        p = np.asarray(params)
        if p.dtype.kind not in "fiub":
            raise DataError(f"params must be numeric (got dtype {p.dtype})")
        p = p.astype(np.float64, copy=False)
        P = len(self.param_names)
        if p.ndim == 1 and P == 1 and p.shape[0] == f.shape[0]:
            p = p.reshape(-1, 1)
        if p.ndim != 2 or p.shape[1] != P:
            raise DataError(
                f"params must have shape (n, {P}) — one column per parameter "
                f"{self.param_names} — got {tuple(p.shape)}"
            )
        if p.shape[0] != f.shape[0]:
            raise DataError(
                f"{f.shape[0]} fields but {p.shape[0]} params rows; give one per sample"
            )
        if not np.isfinite(p).all():
            raise DataError("params contain NaN/inf values")
        if keys is not None:
            if isinstance(keys, str) or len(keys) != f.shape[0]:
                raise DataError(f"keys must be a list of {f.shape[0]} strings, one per sample")
            if not all(isinstance(k, str) for k in keys):
                raise DataError("keys must be strings")
        return f32, p

    def append(self, fields: Any, params: Any, keys: Sequence[str] | None = None) -> int:
        """Append ``n`` samples and commit them; returns the new committed count.

        Args:
            fields: ``(n, C, *spatial)`` real array (stored as float32); must be finite.
            params: ``(n, P)`` real array in ``param_names`` order (``(n,)`` when P = 1).
            keys: optional per-sample strings (e.g. content hashes used to skip duplicates).
        """
        if self._lock is None:
            raise StoreError(f"writer for '{self.path}' is closed")
        f32, p = self._validate(fields, params, keys)
        k = f32.shape[0]
        if k == 0:
            return self.n
        n0 = self.n
        n1 = n0 + k
        meta = dict(self._meta, n_samples=n1)
        ck = self._meta.get(CHECKSUM_KEY)
        if ck is not None or n0 == 0:  # a store without checksums stays without (unverifiable)
            meta[CHECKSUM_KEY] = _extend_checksums(ck, n0, f32, p, self.samples_per_chunk)
            meta[FINGERPRINT_KEY] = _fingerprint(meta)
        try:
            # (1) grow, (2) write data: invisible to readers until the count is committed.
            self._fields.resize((n1, *self.field_shape))
            self._params.resize((n1, len(self.param_names)))
            self._fields[n0:n1] = f32
            self._params[n0:n1] = p
            # (3) commit: one atomic write of the group metadata with the new count (and keys).
            updates: dict[str, Any] = {ATTR_KEY: meta}
            if keys is not None or self._keys is not None:
                new_keys = (self._keys or [None] * n0)[:n0] + (
                    list(keys) if keys is not None else [None] * k
                )
                updates[KEYS_KEY] = new_keys
            _put_attrs(self._group, updates)
            self._meta = meta
            if KEYS_KEY in updates:
                self._keys = updates[KEYS_KEY]
            # (4) refresh the consolidated metadata (a convenience; see module docstring).
            _consolidate(self._dir)
        except OSError as exc:
            raise _os_error(self.path, exc, f"appending samples {n0}–{n1 - 1}") from None
        return n1

    def set_attrs(self, **attrs: Any) -> None:
        """Write extra group attrs (e.g. ``normalization``) and refresh consolidated metadata."""
        if ATTR_KEY in attrs or KEYS_KEY in attrs:
            raise StoreError(f"'{ATTR_KEY}' and '{KEYS_KEY}' are managed by the store writer")
        try:
            _put_attrs(self._group, attrs)
            _consolidate(self._dir)
        except OSError as exc:
            raise _os_error(self.path, exc, "writing attrs") from None


def _extend_checksums(
    ck: dict | None, n0: int, fields: np.ndarray, params: np.ndarray, spc: int
) -> dict:
    """Checksums after appending ``fields``/``params`` as rows ``n0 …``.

    CRC-32 continues over the rows of a partly filled chunk, so nothing already written is
    read back; ``ck`` describes the ``n0`` committed rows (``None`` when ``n0 == 0``).
    """
    assert ck is not None or n0 == 0, "checksums start with the first sample"
    crcs = list(ck["fields"])[: -(-n0 // spc)] if ck else []
    i, k = 0, fields.shape[0]
    while i < k:
        row = n0 + i
        c = row // spc
        take = min(k - i, (c + 1) * spc - row)
        if row % spc:
            crcs[c] = _crc_rows(fields[i : i + take], crcs[c])
        else:
            crcs.append(_crc_rows(fields[i : i + take]))
        i += take
    prev = int(ck["params"]) if ck else 0
    return {"algorithm": "crc32", "fields": crcs, "params": _crc_rows(params, prev)}


def _fingerprint(meta: dict) -> str:
    """Content fingerprint: SHA-256 of the kind, shapes, parameter names, count and checksums."""
    doc = {k: meta.get(k) for k in ("kind", "field_shape", "param_names", "n_samples")}
    doc[CHECKSUM_KEY] = meta[CHECKSUM_KEY]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def _os_error(path: Path, exc: OSError, doing: str) -> StoreError:
    """One-line StoreError for an OS failure while writing a store (disk full, quota, I/O)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on the device"
        fix = "free space (or choose another location) and run again"
    elif exc.errno == errno.EROFS:
        why, fix = "read-only file system", "choose a writable location"
    else:
        why, fix = exc.strerror or str(exc), "check the location and run again"
    return StoreError(
        f"cannot write store '{path}' ({doing}): {why}; nothing partial was committed — {fix}"
    )


def _fsync_tree(path: Path) -> None:
    """fsync every file and directory under ``path`` (before it is renamed into place)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the platform or file system cannot (the caller falls back)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _publish(tmp: Path, path: Path, replace: bool) -> None:
    """Move the complete store ``tmp`` to ``path``; with ``replace``, the old store at ``path``
    is removed only after the new one is in place (swap, or rename aside and back on failure)."""
    if replace and path.exists() and any(path.iterdir()):
        if _exchange(tmp, path):
            _fsync_dir(path.parent)
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old store
            return
        old = _sibling(path, "old")
        os.rename(path, old)  # a kill right here: the next writer restores `old`
        try:
            os.rename(tmp, path)
        except OSError:
            os.rename(old, path)
            raise
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # an empty directory does not count as a store (see preflight)
    if path.exists():
        raise StoreError(
            f"'{path}' appeared while the new store was written (by a program that ignores the "
            f"store lock); the new store is kept at '{tmp}'"
        )
    os.rename(tmp, path)
    _fsync_dir(path.parent)


def _sibling(path: Path, what: str) -> Path:
    """A fresh hidden sibling name ``.NAME.WHAT-PID-XXXXXXXX`` in the store's directory."""
    return path.parent / f".{path.name}.{what}-{os.getpid()}-{os.urandom(4).hex()}"


def _cleanup_siblings(path: Path) -> None:
    """Under the store lock: restore a store a killed overwrite left renamed aside, and delete
    temporary stores of killed writers (their writer held this same lock, so they are dead)."""
    if not path.parent.is_dir():
        return
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not path.exists():
        os.rename(olds.pop(), path)
    for p in [*olds, *path.parent.glob(f".{path.name}.tmp-*")]:
        shutil.rmtree(p, ignore_errors=True)


def _lock_store(path: Path) -> FileLock:
    """Take the writer lock of the store path ``path`` (the sibling ``.NAME.lock``).

    Where the sibling cannot be created (a read-only parent directory) but the store exists,
    the store directory itself is locked (appending and attrs only)."""
    busy = (
        f"store '{path}' is in use: being written by another process (pid {{pid}}); wait for "
        "it to finish (or stop it) and run again"
    )
    try:
        return acquire(store_lock_path(path), busy)
    except LockBusy as exc:
        raise StoreError(str(exc)) from None
    except OSError as exc:
        if path.is_dir() and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise StoreError(busy.format(pid="unknown")) from None
            return FileLock(path, fd)
        raise StoreError(
            f"cannot create store '{path}' ({exc.strerror or exc}); choose a writable location"
        ) from None


def _put_attrs(group: Any, updates: dict[str, Any]) -> None:
    """Merge ``updates`` into the group attrs with ONE metadata write (atomic file replace).

    ``group.attrs.update`` is MutableMapping's: one write per key, so a kill between two keys
    could commit the count without the keys. ``put`` writes the whole dict at once.
    """
    current = dict(group.attrs.asdict())
    current.update(updates)
    group.attrs.put(current)


def _consolidate(path: Path) -> None:
    import zarr

    with _quiet_consolidated():
        zarr.consolidate_metadata(str(path))


def _remove_partials(path: Path) -> None:
    """Delete temporary files a killed writer may have left (zarr writes ``*.partial`` first)."""
    for p in path.rglob("*.partial"):
        with contextlib.suppress(OSError):
            p.unlink()


def check_writable(path: str | os.PathLike) -> None:
    """Raise :class:`StoreError` unless ``path`` (or, when missing, its nearest existing parent
    directory) can be written by this process — before any long computation."""
    path = Path(path)
    target = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if target is not None and target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
        raise StoreError(
            f"cannot write the store '{path}': '{target}' is not writable; choose a writable "
            "location (or ask its owner)"
        )


def preflight(path: str | os.PathLike, mode: str) -> bool:
    """Check, before any expensive work, that ``create_store(path, mode=mode)`` may proceed.

    Returns whether something already exists at ``path`` (an empty directory does not count).

    Raises:
        StoreError: ``mode="w-"`` and the path exists; ``"w"``/``"a"`` on an existing path that
            is not a ρ-Diffusion store (never deleted).
    """
    path = Path(path)
    if mode not in ("w-", "w", "a"):
        raise StoreError(f"unknown store mode {mode!r}; use 'w-' (create), 'w' or 'a'")
    exists = any(path.iterdir()) if path.is_dir() else path.exists()
    check_writable(path)
    if not exists:
        return False
    if mode == "w-":
        what = "store" if store_exists(path) else "path"
        raise StoreError(
            f"{what} '{path}' already exists; choose to overwrite it (mode='w', --overwrite) "
            f"or append to it (mode='a', --append)"
        )
    if not store_exists(path):
        raise StoreError(
            f"'{path}' exists and is not a ρ-Diffusion store; refusing to overwrite it "
            f"(remove it or choose another path)"
        )
    return True


def rows_to_append(
    path: str | os.PathLike,
    mode: str,
    provenance: dict,
    same: Sequence[str],
    rows: Sequence[Sequence[float]],
    field_shape: Sequence[int] | None = None,
) -> list:
    """The parameter ``rows`` a generator still has to write into ``path``.

    For ``mode="a"`` on an existing store: raises :class:`StoreError` when the store's
    provenance differs from ``provenance`` in a key of ``same`` (volumes computed differently
    would share parameter values, e.g. two conventions of the same (l, m)), and drops the rows
    whose parameter values the store already holds (so ``--append`` with a larger ``l_max``
    adds only the new volumes). Otherwise returns ``rows`` unchanged. A store whose samples have
    another shape than ``field_shape`` (or another provenance ``size``) is refused here, before
    rows are dropped as "already there" (``--size 16 --append`` on an 8³ store).
    """
    rows = list(rows)
    if mode != "a" or not store_exists(path):
        return rows
    store = open_store(path)
    if field_shape is not None and tuple(store.field_shape) != tuple(int(v) for v in field_shape):
        raise StoreError(
            f"cannot append samples of shape {tuple(int(v) for v in field_shape)} to store "
            f"'{path}' whose samples have shape {store.field_shape}; use the same --size or "
            "another store"
        )
    same = tuple(same) + (("size",) if "size" not in same else ())
    diff = [k for k in same if k in store.provenance and store.provenance[k] != provenance.get(k)]
    if diff:
        detail = ", ".join(f"{k} {store.provenance[k]!r}, not {provenance.get(k)!r}" for k in diff)
        raise StoreError(
            f"cannot append to store '{path}': it was generated with {detail}; use the same "
            "options or another store"
        )
    have = {tuple(float(v) for v in r) for r in np.asarray(store.params[:], np.float64)}
    return [r for r in rows if tuple(float(v) for v in r) not in have]


def create_store(
    path: str | os.PathLike,
    *,
    kind: str,
    spatial_dims: int,
    param_names: Sequence[str],
    field_shape: Sequence[int],
    provenance: dict | None = None,
    mode: Mode = "w-",
    samples_per_chunk: int | None = None,
) -> StoreWriter:
    """Create (or open for appending) a store and return its writer (holding the store lock).

    Args:
        path: directory of the store.
        kind: dataset family, e.g. ``"spherical_harmonics"``, ``"galaxy_merger"``.
        spatial_dims: 1, 2 or 3; ``field_shape`` is ``(C, *spatial)`` with that many spatial axes.
        param_names: names of the parameter columns (unique strings, possibly empty).
        field_shape: ``(C, *spatial)`` of one sample.
        provenance: JSON-serialisable dict recorded in the attrs (kept as is when appending).
        mode: ``"w-"`` create, refusing an existing store; ``"w"`` overwrite an existing store;
            ``"a"`` append to an existing store with the same kind, shape and parameter names
            (created in place when missing, so a killed ingest keeps what it committed).
        samples_per_chunk: whole samples per chunk; default about 2 MiB per chunk.

    With ``"w-"``/``"w"`` the store is built under a temporary sibling name and appears at
    ``path`` only when the writer is closed (see the module docstring).

    Raises:
        StoreError / DataError: bad arguments, conflicts, another writer, an unwritable place.
    """
    path = Path(path)
    if spatial_dims not in (1, 2, 3):
        raise DataError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    field_shape = tuple(int(s) for s in field_shape)
    if len(field_shape) != 1 + spatial_dims or any(s < 1 for s in field_shape):
        raise DataError(
            f"field_shape must be (C, *spatial) with {spatial_dims} positive spatial sizes, "
            f"got {field_shape}"
        )
    param_names = [str(p) for p in param_names]
    if len(set(param_names)) != len(param_names):
        raise DataError(f"param_names must be unique, got {param_names}")
    if not kind or not isinstance(kind, str):
        raise DataError("kind must be a non-empty string")
    spc = int(samples_per_chunk or default_samples_per_chunk(field_shape))
    if spc < 1:
        raise DataError(f"samples_per_chunk must be ≥ 1, got {spc}")
    try:
        json.dumps(provenance or {})
    except (TypeError, ValueError) as exc:
        raise DataError(f"provenance must be JSON-serialisable: {exc}") from None

    preflight(path, mode)  # cheap checks first (mode, writability) — repeated under the lock
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create store '{path}' ({exc.strerror or exc}); choose a writable location"
        ) from None
    lock = _lock_store(path)
    try:
        _cleanup_siblings(path)
        exists = preflight(path, mode)  # the authoritative check, now that nobody else writes
        if exists and mode == "a":
            return _open_for_append(path, kind, field_shape, param_names, lock)
        publish = "replace" if exists else "new"
        created = False
        if mode == "a":  # a missing store to append to: created in place (resumable)
            workdir, publish, created = path, None, True
        else:
            workdir = _sibling(path, "tmp")
        try:
            group = _new_group(
                workdir, kind, spatial_dims, param_names, field_shape, spc, provenance, path
            )
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        meta = dict(group.attrs[ATTR_KEY])
        return StoreWriter(path, workdir, group, meta, lock, publish=publish, created=created)
    except BaseException:
        lock.release()
        raise


def _open_for_append(
    path: Path, kind: str, field_shape: tuple, param_names: list, lock: FileLock
) -> StoreWriter:
    group, meta = _read_meta(path)
    if meta["kind"] != kind:
        raise StoreError(f"cannot append kind '{kind}' to store '{path}' of kind '{meta['kind']}'")
    if tuple(meta["field_shape"]) != field_shape:
        raise StoreError(
            f"cannot append samples of shape {field_shape} to store '{path}' whose samples "
            f"have shape {tuple(meta['field_shape'])}"
        )
    if list(meta["param_names"]) != param_names:
        raise StoreError(
            f"cannot append with parameters {param_names} to store '{path}' with parameters "
            f"{list(meta['param_names'])}"
        )
    _remove_partials(path)
    try:
        group = _open_group(path, "r+", use_consolidated=False)
        writer = StoreWriter(path, path, group, dict(meta), lock)
        n = writer.n
        # Drop rows a killed writer left beyond the committed count.
        if writer._fields.shape[0] != n:
            writer._fields.resize((n, *field_shape))
        if writer._params.shape[0] != n:
            writer._params.resize((n, len(param_names)))
    except OSError as exc:
        raise _os_error(path, exc, "opening for append") from None
    return writer


def _new_group(
    workdir: Path,
    kind: str,
    spatial_dims: int,
    param_names: list[str],
    field_shape: tuple[int, ...],
    spc: int,
    provenance: dict | None,
    path: Path,
):
    """An empty store (group, both arrays, attrs with count 0) at ``workdir`` (which becomes the
    store ``path``; errors name ``path``)."""
    import zarr
    from zarr.codecs import ZstdCodec

    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "spatial_dims": int(spatial_dims),
        "param_names": param_names,
        "field_shape": list(field_shape),
        "provenance": dict(provenance or {}),
        "n_samples": 0,
        "samples_per_chunk": spc,
    }
    try:
        group = zarr.open_group(str(workdir), mode="w", zarr_format=3)
        group.create_array(
            "fields",
            shape=(0, *field_shape),
            chunks=(spc, *field_shape),
            dtype="float32",
            fill_value=0.0,
            compressors=ZstdCodec(level=1),
        )
        group.create_array(
            "params",
            shape=(0, len(param_names)),
            chunks=(max(spc, 1024), max(len(param_names), 1)),
            dtype="float64",
            fill_value=0.0,
            compressors=ZstdCodec(level=1),
        )
        _put_attrs(group, {ATTR_KEY: meta})
        _consolidate(workdir)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise _os_error(path, exc, "creating") from None
        raise StoreError(
            f"cannot create store '{path}' ({exc.strerror or exc}); choose a writable location"
        ) from None
    return _open_group(workdir, "r+", use_consolidated=False)


def read_store_attrs(path: str | os.PathLike) -> dict:
    """The group attrs of a store other than the writer-managed ``rho_diffusion`` ones (e.g.
    ``normalization`` or a generator's append log), as a plain dict."""
    group, _ = _read_meta(Path(path))
    attrs = dict(group.attrs.asdict())
    attrs.pop(ATTR_KEY, None)
    attrs.pop(KEYS_KEY, None)
    return attrs


def write_store_attrs(path: str | os.PathLike, **attrs: Any) -> None:
    """Set group attrs (e.g. ``normalization=dict``) of an existing store, under the writer lock.

    ``None`` values delete the attr. The ``rho_diffusion`` attrs and committed count are untouched.
    """
    path = Path(path)
    _read_meta(path)
    check_writable(path)
    if ATTR_KEY in attrs or KEYS_KEY in attrs:
        raise StoreError(f"'{ATTR_KEY}' and '{KEYS_KEY}' are managed by the store writer")
    lock = _lock_store(path)
    try:
        _read_meta(path)  # still a store now that we hold the lock
        group = _open_group(path, "r+", use_consolidated=False)
        current = dict(group.attrs.asdict())
        for key, value in attrs.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        try:
            json.dumps(current)
        except (TypeError, ValueError) as exc:
            raise DataError(f"store attrs must be JSON-serialisable: {exc}") from None
        try:
            group.attrs.put(current)
            _consolidate(path)
        except OSError as exc:
            raise _os_error(path, exc, "writing attrs") from None
    finally:
        lock.release()

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

One writer at a time: the writer holds an advisory ``flock`` on the store directory (released by
the kernel when the process dies), so a second writer gets a :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rho_core.errors import DataError, StoreError

SCHEMA_VERSION = 1
"""Version of the store layout written and accepted by this module."""

ATTR_KEY = "rho_diffusion"
NORMALIZATION_KEY = "normalization"
KEYS_KEY = "sample_keys"
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
    return group, meta


class _FieldsView:
    """Read-only view of the first ``n`` rows of the ``fields`` array (indexing like numpy).

    Rows beyond the committed count (left by a killed writer) are never visible.
    """

    def __init__(self, array: Any, n: int) -> None:
        self._array = array
        self._n = n
        self.shape = (n, *array.shape[1:])
        self.dtype = np.dtype(array.dtype)
        self.chunks = array.chunks

    def __len__(self) -> int:
        return self._n

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
        if isinstance(first, np.ndarray):
            if first.size == 0:
                return np.empty((0, *self.shape[1:]), dtype=self.dtype)[(slice(None), *rest)]
            out = self._array.get_orthogonal_selection(
                (first, *[slice(None)] * (len(self.shape) - 1))
            )
            return np.asarray(out)[(slice(None), *rest)]
        return np.asarray(self._array[(first, *rest)])

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

    def __len__(self) -> int:
        return self.n

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i``: ``(field (C, *spatial) float32, params (P,) float64)``."""
        if not 0 <= int(i) < self.n:
            raise IndexError(f"sample index {i} out of range for {self.n} samples")
        return np.asarray(self._zarr_fields[int(i)]), self.params[int(i)].copy()

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``indices`` in the given order: ``(fields (B, C, *spatial), params (B, P))``.

        Each stored chunk touched is read and decompressed once (indices are grouped by chunk),
        which is what makes random training batches cheap.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"sample index out of range for {self.n} samples")
        out = np.empty((idx.size, *self.field_shape), dtype=np.float32)
        spc = self.samples_per_chunk
        chunk_ids = idx // spc
        for c in np.unique(chunk_ids):
            lo, hi = int(c) * spc, min(int(c + 1) * spc, self.n)
            sel = np.nonzero(chunk_ids == c)[0]
            if sel.size == 1:
                out[sel[0]] = self._zarr_fields[int(idx[sel[0]])]
            else:
                block = np.asarray(self._zarr_fields[lo:hi])
                out[sel] = block[idx[sel] - lo]
        return out, self.params[idx].copy()

    def to_dask(self):
        """The committed fields as a dask array ``(n, C, *spatial)`` with the store's chunks."""
        import dask.array as da

        return da.from_zarr(self._zarr_fields)[: self.n]

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
    norm = group.attrs.get(NORMALIZATION_KEY)
    return Store(
        path=path,
        kind=str(meta["kind"]),
        spatial_dims=int(meta["spatial_dims"]),
        param_names=list(meta["param_names"]),
        provenance=dict(meta.get("provenance") or {}),
        normalization=dict(norm) if norm else None,
        n=n,
        field_shape=field_shape,
        fields=_FieldsView(fields, n),
        params=np.asarray(params_arr[:n], dtype=np.float64).reshape(n, len(meta["param_names"])),
        samples_per_chunk=int(fields.chunks[0]),
        _keys=list(keys) if keys is not None else None,
        _zarr_fields=fields,
    )


class StoreWriter:
    """Appends whole samples to a store; the committed count is written last (crash-safe).

    Use as a context manager or call :meth:`close` to release the writer lock.
    """

    def __init__(self, path: Path, group: Any, meta: dict, lock_fd: int) -> None:
        self.path = path
        self._group = group
        self._meta = meta
        self._lock_fd: int | None = lock_fd
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

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the writer lock (the data are already committed by each append)."""
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()

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
        if self._lock_fd is None:
            raise StoreError(f"writer for '{self.path}' is closed")
        f32, p = self._validate(fields, params, keys)
        k = f32.shape[0]
        if k == 0:
            return self.n
        n0 = self.n
        n1 = n0 + k
        # (1) grow, (2) write data: invisible to readers until the count is committed.
        self._fields.resize((n1, *self.field_shape))
        self._params.resize((n1, len(self.param_names)))
        self._fields[n0:n1] = f32
        self._params[n0:n1] = p
        # (3) commit: one atomic write of the group metadata with the new count (and keys).
        meta = dict(self._meta, n_samples=n1)
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
        _consolidate(self.path)
        return n1

    def set_attrs(self, **attrs: Any) -> None:
        """Write extra group attrs (e.g. ``normalization``) and refresh consolidated metadata."""
        if ATTR_KEY in attrs:
            raise StoreError(f"'{ATTR_KEY}' is managed by the store writer")
        _put_attrs(self._group, attrs)
        _consolidate(self.path)


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


def _acquire_lock(path: Path) -> int:
    # Lock the store directory itself: it is never replaced (zarr replaces files inside it) and
    # no extra file is left in the Zarr hierarchy.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"store '{path}' is in use by another writer; wait for it to finish"
        ) from None
    return fd


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
) -> list:
    """The parameter ``rows`` a generator still has to write into ``path``.

    For ``mode="a"`` on an existing store: raises :class:`StoreError` when the store's
    provenance differs from ``provenance`` in a key of ``same`` (volumes computed differently
    would share parameter values, e.g. two conventions of the same (l, m)), and drops the rows
    whose parameter values the store already holds (so ``--append`` with a larger ``l_max``
    adds only the new volumes). Otherwise returns ``rows`` unchanged.
    """
    rows = list(rows)
    if mode != "a" or not store_exists(path):
        return rows
    store = open_store(path)
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
    """Create (or open for appending) a store and return its writer.

    Args:
        path: directory of the store (created).
        kind: dataset family, e.g. ``"spherical_harmonics"``, ``"galaxy_merger"``.
        spatial_dims: 1, 2 or 3; ``field_shape`` is ``(C, *spatial)`` with that many spatial axes.
        param_names: names of the parameter columns (unique strings, possibly empty).
        field_shape: ``(C, *spatial)`` of one sample.
        provenance: JSON-serialisable dict recorded in the attrs (kept as is when appending).
        mode: ``"w-"`` create, refusing an existing store; ``"w"`` overwrite an existing store;
            ``"a"`` append to an existing store with the same kind, shape and parameter names
            (created when missing).
        samples_per_chunk: whole samples per chunk; default about 2 MiB per chunk.

    Raises:
        ConfigError-like :class:`StoreError` / :class:`DataError` for bad arguments and conflicts.
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

    exists = preflight(path, mode)
    if exists and mode == "a" and store_exists(path):
        group, meta = _read_meta(path)
        if meta["kind"] != kind:
            raise StoreError(
                f"cannot append kind '{kind}' to store '{path}' of kind '{meta['kind']}'"
            )
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
        fd = _acquire_lock(path)
        try:
            _remove_partials(path)
            group = _open_group(path, "r+", use_consolidated=False)
            writer = StoreWriter(path, group, dict(meta), fd)
            n = writer.n
            # Drop rows a killed writer left beyond the committed count.
            if writer._fields.shape[0] != n:
                writer._fields.resize((n, *field_shape))
            if writer._params.shape[0] != n:
                writer._params.resize((n, len(param_names)))
        except BaseException:
            os.close(fd)
            raise
        return writer
    if exists:
        fd = _acquire_lock(path)
        os.close(fd)  # nobody else writes it; the lock file is removed with the tree
        shutil.rmtree(path)

    import zarr
    from zarr.codecs import ZstdCodec

    spc = int(samples_per_chunk or default_samples_per_chunk(field_shape))
    if spc < 1:
        raise DataError(f"samples_per_chunk must be ≥ 1, got {spc}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # zarr's mode "w" replaces the directory, so lock it after the group exists.
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
    except OSError as exc:
        raise StoreError(
            f"cannot create store '{path}' ({exc.strerror or exc}); choose a writable location"
        ) from exc
    fd = _acquire_lock(path)
    try:
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
        try:
            _put_attrs(group, {ATTR_KEY: meta})
        except TypeError as exc:
            raise DataError(f"provenance must be JSON-serialisable: {exc}") from exc
        _consolidate(path)
        return StoreWriter(path, _open_group(path, "r+", use_consolidated=False), meta, fd)
    except BaseException:
        os.close(fd)
        raise


def write_store_attrs(path: str | os.PathLike, **attrs: Any) -> None:
    """Set group attrs (e.g. ``normalization=dict``) of an existing store, under the writer lock.

    ``None`` values delete the attr. The ``rho_diffusion`` attrs and committed count are untouched.
    """
    path = Path(path)
    _read_meta(path)
    check_writable(path)
    if ATTR_KEY in attrs or KEYS_KEY in attrs:
        raise StoreError(f"'{ATTR_KEY}' and '{KEYS_KEY}' are managed by the store writer")
    fd = _acquire_lock(path)
    try:
        group = _open_group(path, "r+", use_consolidated=False)
        current = dict(group.attrs.asdict())
        for key, value in attrs.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        try:
            group.attrs.put(current)
        except TypeError as exc:
            raise DataError(f"store attrs must be JSON-serialisable: {exc}") from exc
        _consolidate(path)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

"""A torch ``Dataset`` over a store: normalised fields and their conditioning parameters.

Item ``i`` is ``(field, params)`` with ``field`` a float32 tensor ``(C, *spatial)`` in normalised
units (``Normalizer.forward`` of the physical field) and ``params`` a float64 tensor ``(P,)`` in
``param_names`` order.

The store is opened lazily in each process (the handle is dropped when pickled and reopened when
the process id changes), so the dataset works with ``DataLoader(num_workers>0)`` under fork or
spawn and with a ``DistributedSampler``. Decoded chunks are kept in a per-process LRU cache
(``cache_bytes``, default 256 MiB): a store smaller than that is read from disk once and then
served from memory, which is what random training batches need; :meth:`StoreDataset.get_batch`
reads each touched chunk once for a whole batch.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rho_core.data.normalization import Normalizer
from rho_core.data.store import Store, open_store

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


class StoreDataset(Dataset):
    """Samples of a store as ``(field float32 (C, *spatial) normalised, params float64 (P,))``.

    Args:
        path: the store.
        normalizer: a :class:`Normalizer`, its dict, or ``None`` to use the store's
            ``normalization`` attrs (identity when the store has none).
        cache_bytes: per-process budget of decoded chunks kept in memory (0 disables the cache).

    Attributes:
        param_names, spatial_dims, field_shape, kind, normalizer, n.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        normalizer: Normalizer | dict | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.path = os.fspath(path)
        store = open_store(self.path)  # validates now, in the parent; reopened per process
        self.kind = store.kind
        self.param_names = list(store.param_names)
        self.spatial_dims = store.spatial_dims
        self.field_shape = tuple(store.field_shape)
        self.n = store.n
        self.samples_per_chunk = store.samples_per_chunk
        self.params = store.params  # small: (n, P) float64, kept in memory
        if normalizer is None:
            self.normalizer = Normalizer.from_dict(store.normalization)
        elif isinstance(normalizer, dict):
            self.normalizer = Normalizer.from_dict(normalizer)
        else:
            self.normalizer = normalizer
        self.cache_bytes = int(cache_bytes)
        self._store: Store | None = store
        self._pid = os.getpid()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    # ----- process-local store handle ---------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_store"] = None
        state["_cache"] = OrderedDict()
        state["_cached_bytes"] = 0
        return state

    def _handle(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.path)
            self._pid = os.getpid()
            self._cache = OrderedDict()
            self._cached_bytes = 0
        return self._store

    def _chunk(self, c: int) -> np.ndarray:
        """Decoded chunk ``c``: physical fields of samples [c·spc, min((c+1)·spc, n))."""
        block = self._cache.get(c)
        if block is not None:
            self._cache.move_to_end(c)
            return block
        store = self._handle()
        spc = self.samples_per_chunk
        block = np.asarray(store.fields[c * spc : min((c + 1) * spc, self.n)])
        if block.nbytes <= self.cache_bytes:
            self._cache[c] = block
            self._cached_bytes += block.nbytes
            while self._cached_bytes > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return block

    # ----- Dataset protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n

    def raw(self, i: int) -> np.ndarray:
        """Physical (un-normalised) field of sample ``i``, float32 ``(C, *spatial)``."""
        i = self._check(i)
        spc = self.samples_per_chunk
        if self.cache_bytes <= 0:
            return self._handle().read(i)[0]
        return self._chunk(i // spc)[i % spc]

    def _check(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"sample index {i} out of range for {self.n} samples")
        return i

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = self._check(i)
        field = self.normalizer.forward(self.raw(i))
        return (
            torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32)),
            torch.from_numpy(self.params[i].copy()),
        )

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``(fields (B, C, *spatial) float32 normalised, params (B, P) float64)``.

        Indices are grouped by chunk so each touched chunk is read (or fetched from the cache)
        once; the output keeps the order of ``indices``.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + self.n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"sample index out of range for {self.n} samples")
        spc = self.samples_per_chunk
        if self.cache_bytes > 0:
            # one copy per sample, straight from the decoded (cached) chunks into the batch
            out = np.stack([self._chunk(int(i) // spc)[int(i) % spc] for i in idx])
        else:
            out = self._handle().read_batch(idx)[0]
        fields = self.normalizer.forward(out)
        return (
            torch.from_numpy(np.ascontiguousarray(fields, dtype=np.float32)),
            torch.from_numpy(self.params[idx].copy()),
        )

    def __getitems__(self, indices: list[int]) -> Any:
        """Batched fetch used by ``DataLoader`` (torch ≥ 2.1) for a whole index list at once.

        Returns a list of per-sample tuples so the default collate function stacks them.
        """
        fields, params = self.get_batch(indices)
        return [(fields[k], params[k]) for k in range(len(indices))]

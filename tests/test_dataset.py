"""StoreDataset: normalised items, batches, DataLoader workers, DistributedSampler (real torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from rho_core.data.dataset import StoreDataset
from rho_core.data.normalization import Normalizer, write_normalization
from rho_core.data.store import create_store

SHAPE = (1, 6, 5)


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(1)
    fields = rng.uniform(0.5, 4.0, size=(11, *SHAPE)).astype(np.float32)
    params = np.stack([np.arange(11.0), np.arange(11.0) ** 2], axis=1)
    with create_store(
        path,
        kind="t",
        spatial_dims=2,
        param_names=["a", "b"],
        field_shape=SHAPE,
        samples_per_chunk=4,
    ) as w:
        w.append(fields, params)
    return path, fields, params


def test_items_identity_without_normalization(store):
    path, fields, params = store
    ds = StoreDataset(path)
    assert len(ds) == 11 and ds.param_names == ["a", "b"] and ds.spatial_dims == 2
    assert ds.field_shape == SHAPE and ds.normalizer.transform == "identity"
    f, p = ds[7]
    assert f.dtype == torch.float32 and p.dtype == torch.float64 and f.shape == SHAPE
    np.testing.assert_array_equal(f.numpy(), fields[7])
    np.testing.assert_array_equal(p.numpy(), params[7])
    np.testing.assert_array_equal(ds[-1][0].numpy(), fields[10])
    with pytest.raises(IndexError):
        ds[11]


def test_uses_store_normalization_and_explicit_override(store):
    path, fields, _ = store
    write_normalization(path, {"transform": "minmax", "min": 0.5, "max": 4.0})
    ds = StoreDataset(path)
    f, _ = ds[3]
    np.testing.assert_allclose(f.numpy(), 2 * (fields[3] - 0.5) / 3.5 - 1, rtol=1e-6, atol=1e-6)
    assert f.min() >= -1 and f.max() <= 1
    back = ds.normalizer.inverse(f)
    np.testing.assert_allclose(back.numpy(), fields[3], rtol=1e-6)
    ds2 = StoreDataset(path, normalizer=Normalizer("standard", mean=1.0, std=2.0))
    np.testing.assert_allclose(ds2[3][0].numpy(), (fields[3] - 1.0) / 2.0, rtol=1e-6)


@pytest.mark.parametrize("cache_bytes", [0, 1 << 20])
def test_get_batch_keeps_order(store, cache_bytes):
    path, fields, params = store
    ds = StoreDataset(path, cache_bytes=cache_bytes)
    idx = [9, 0, 5, 5, 10, 3]
    f, p = ds.get_batch(idx)
    assert f.shape == (6, *SHAPE) and f.dtype == torch.float32
    np.testing.assert_array_equal(f.numpy(), fields[idx])
    np.testing.assert_array_equal(p.numpy(), params[idx])


def test_cache_is_bounded(store):
    path, fields, _ = store
    chunk_bytes = 4 * int(np.prod(SHAPE)) * 4
    ds = StoreDataset(path, cache_bytes=2 * chunk_bytes)
    for i in range(11):
        np.testing.assert_array_equal(ds[i][0].numpy(), fields[i])
    assert len(ds._cache) <= 2 and ds._cached_bytes <= 2 * chunk_bytes


def test_dataloader_workers_and_distributed_sampler(store):
    path, fields, params = store
    ds = StoreDataset(path)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        loader = DataLoader(
            ds, batch_size=3, sampler=sampler, num_workers=2, multiprocessing_context="fork"
        )
        for f, p in loader:
            assert f.dtype == torch.float32 and p.dtype == torch.float64
            for k in range(f.shape[0]):
                i = int(p[k, 0])
                np.testing.assert_array_equal(f[k].numpy(), fields[i])
                seen.append(i)
    # the two ranks together cover every sample (DistributedSampler pads to 12 with a repeat)
    assert set(seen) == set(range(11)) and len(seen) == 12


def test_pickles_without_store_handle(store):
    import pickle

    path, fields, _ = store
    ds = StoreDataset(path)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))  # what spawn-started workers receive
    assert clone._store is None and not clone._cache
    np.testing.assert_array_equal(clone[4][0].numpy(), fields[4])

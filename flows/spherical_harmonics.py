"""Data flow: spherical-harmonic volumes → Zarr store with a fitted normalisation."""

from __future__ import annotations

from prefect import flow

from flows.params import SphericalHarmonicsParams
from tasks.data import fit_normalization, generate_spherical_harmonics, store_ok


def normalised(store: str, transform: str) -> str:
    """Fit (or reuse) the store's normalisation; refresh a stale cache entry if needed."""
    from rho_core.data.store import open_store

    fit_normalization(store, transform)
    norm = open_store(store).normalization
    if not norm or norm.get("transform") != transform:  # cached result, store rebuilt since
        fit_normalization.with_options(refresh_cache=True)(store, transform)
    return store


@flow(name="spherical-harmonics", log_prints=True)
def spherical_harmonics(
    params: SphericalHarmonicsParams = SphericalHarmonicsParams(),  # noqa: B008
) -> str:
    """Generate (or reuse) the spherical-harmonic store and its normalisation; returns its path.

    Re-running with the same parameters is a cache hit: the store is not regenerated.
    """
    store = params.store_path()
    args = (store, params.size, params.l_max, params.convention, params.workers)
    path = generate_spherical_harmonics(*args)
    if not store_ok(path):  # cached address of a store deleted since: rebuild it
        path = generate_spherical_harmonics.with_options(refresh_cache=True)(*args)
    return normalised(path, params.normalization)

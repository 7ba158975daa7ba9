"""Prefect tasks that make stores: generate spherical harmonics, simulate mergers, ingest Bonsai
snapshots, fit the normalisation. Each returns an address (the store path), never arrays.

Caching: the key is the task's inputs plus its source (``INPUTS + TASK_SOURCE``) and results are
persisted, so re-running a flow with the same dataset parameters (hence the same store path) is
a cache hit and the store is not regenerated. The flows also check that a cached address still
points at a readable store and refresh the cache when it does not (a deleted store is rebuilt).
No retries: generation and ingestion are deterministic, a failure would fail again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from rho_core.errors import StoreError

CACHE = INPUTS + TASK_SOURCE


def _logger():
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def store_ok(store: str) -> bool:
    """True when ``store`` opens as a complete ρ-Diffusion store with at least one sample."""
    from rho_core.data.store import open_store

    try:
        return open_store(store).n > 0
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False


def require_store(store: str) -> None:
    """Raise :class:`StoreError` naming the path when ``store`` is missing or unreadable."""
    from rho_core.data.store import open_store

    if not Path(store).exists():
        raise StoreError(f"store {store} does not exist; generate or ingest it first")
    try:
        s = open_store(store)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"store {store} cannot be read ({exc}); regenerate it") from exc
    if s.n < 1:
        raise StoreError(f"store {store} holds no samples; regenerate it")


@task(
    name="generate-spherical-harmonics",
    task_run_name="generate sh size={size} l_max={l_max}",
    cache_policy=CACHE,
    persist_result=True,
)
def generate_spherical_harmonics(
    store: str, size: int, l_max: int, convention: str = "real", workers: int = 1
) -> str:
    """Write the spherical-harmonic volume store at ``store``; returns its path."""
    from rho_core.data import spherical_harmonics as sh

    logger = _logger()
    if store_ok(store):
        prov = _provenance(store)
        if (prov.get("size"), prov.get("l_max"), prov.get("convention")) == (
            size,
            l_max,
            convention,
        ):
            logger.info("store %s already holds these volumes; reusing it", store)
            return store
    logger.info(
        "generating spherical harmonics: size %d, l_max %d, %s convention -> %s",
        size,
        l_max,
        convention,
        store,
    )
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    sh.generate_spherical_harmonics(
        store, size=size, l_max=l_max, convention=convention, workers=workers, mode="w"
    )
    require_store(store)
    return store


def _provenance(store: str) -> dict[str, Any]:
    from rho_core.data.store import open_store

    try:
        return dict(open_store(store).provenance or {})
    except Exception:  # noqa: BLE001
        return {}


@task(
    name="fit-normalization",
    task_run_name="normalise {store}",
    cache_policy=CACHE,
    persist_result=True,
)
def fit_normalization(store: str, transform: str = "minmax") -> dict:
    """Fit the ``transform`` on the store's fields (Dask, out of core) and write it to its attrs.

    Returns the normalisation dict (a few numbers).
    """
    from rho_core.data.normalization import fit_normalization as fit
    from rho_core.data.normalization import write_normalization
    from rho_core.data.store import open_store

    require_store(store)
    logger = _logger()
    current = open_store(store).normalization
    if current and current.get("transform") == transform:
        logger.info("store %s already has a %s normalisation", store, transform)
        return dict(current)
    d = fit(store, transform=transform)
    write_normalization(store, d)
    logger.info("normalisation of %s: %s", store, d)
    return dict(d)


@task(
    name="simulate-mergers",
    task_run_name="simulate mergers -> {out_dir}",
    cache_policy=CACHE,
    persist_result=True,
)
def simulate_mergers(out_dir: str, grid: dict[str, Any]) -> str:
    """Run the built-in merger simulator over a parameter grid; returns the snapshot folder."""
    from rho_core.sim import merger

    logger = _logger()
    logger.info("simulating galaxy mergers %s -> %s", grid, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    merger.simulate_grid(out_dir, **grid)
    return out_dir


@task(name="ingest-bonsai", task_run_name="ingest {store}", cache_policy=CACHE, persist_result=True)
def ingest_bonsai(
    snapshots: list[str], store: str, image_size: int = 128, params_file: str | None = None
) -> str:
    """Project Bonsai/tipsy snapshots to images and write them to ``store``; returns its path.

    A corrupt or missing snapshot raises :class:`rho_core.errors.DataError` naming the file; the
    ingest writes to a new store, so an existing store at another path is never touched.
    """
    from rho_core.data import ingest

    logger = _logger()
    logger.info("ingesting %d snapshot(s) -> %s", len(snapshots), store)
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    ingest.ingest_bonsai(snapshots, store, image_size=image_size, params_file=params_file)
    require_store(store)
    return store

"""Prefect tasks that make stores: generate spherical harmonics, simulate mergers, ingest Bonsai
snapshots, fit the normalisation. Each returns an address (the store path), never arrays.

Caching (generation, normalisation, simulation): the key is the task's inputs plus its source
(``INPUTS + TASK_SOURCE``) and results are persisted, so re-running a flow with the same
dataset parameters (hence the same store path) is a cache hit and the store is not
regenerated. The flows also check that a cached address still points at a readable store and
refresh the cache when it does not (a deleted store is rebuilt).
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
    logger.info(
        "normalisation of %s: %s (data range %.4g … %.4g)",
        store,
        d.get("transform"),
        d.get("min", float("nan")),
        d.get("max", float("nan")),
    )
    return dict(d)


@task(
    name="simulate-mergers",
    task_run_name="simulate mergers -> {out_dir}",
    cache_policy=CACHE,
    persist_result=True,
)
def simulate_mergers(out_dir: str, grid: dict[str, Any]) -> str:
    """Run the built-in merger simulator over a parameter grid; returns the snapshot folder.

    ``grid``: ``mass_ratio``, ``pericenter`` (lists spanning a Cartesian product),
    ``n_particles``, ``t_end``, ``snap_every``, ``seed``. Completed runs are skipped on repeat.
    """
    from rho_core.sim.grid import EngineSpec, GridSpec, run_grid
    from rho_core.sim.initial_conditions import MergerConfig
    from rho_core.sim.nbody import NBodyConfig

    logger = _logger()
    spec = GridSpec(
        mass_ratio=tuple(float(v) for v in grid["mass_ratio"]),
        pericenter=tuple(float(v) for v in grid["pericenter"]),
        base=MergerConfig(n_particles=int(grid["n_particles"]), seed=int(grid.get("seed", 0))),
    )
    nbody = NBodyConfig(t_end=float(grid["t_end"]), snap_every=float(grid["snap_every"]))
    n = len(spec.configs())
    logger.info("simulating %d galaxy merger(s) -> %s", n, out_dir)

    def progress(done: int, total: int, record: dict) -> None:
        logger.info("merger run %d/%d done (%s)", done, total, record.get("dir"))

    run_grid(spec, out_dir, EngineSpec(nbody=nbody), progress=progress)
    return out_dir


@task(name="ingest-bonsai", task_run_name="ingest {store}")
def ingest_bonsai(
    snapshots: list[str], store: str, image_size: int = 128, params_file: str | None = None
) -> str:
    """Project Bonsai/tipsy snapshots (files or folders) into ``store``; returns its path.

    Not cached by Prefect: a key on paths would miss files rewritten in place, and ingestion is
    idempotent by itself (content hashes: snapshots already in the store are skipped). Any
    snapshot that cannot be read (corrupt, truncated, missing parameters) fails the task with
    a :class:`rho_core.errors.DataError` naming each file and why — after the readable ones
    were appended, so a fixed re-run adds only what was missing.
    """
    from rho_core.data.bonsai_ingest import IngestConfig
    from rho_core.data.bonsai_ingest import ingest_bonsai as ingest
    from rho_core.data.render import RenderConfig
    from rho_core.errors import DataError

    logger = _logger()
    logger.info("ingesting %d path(s) -> %s", len(snapshots), store)
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    config = IngestConfig(render=RenderConfig(image_size=int(image_size)), params_file=params_file)
    report = ingest(snapshots, store, config)
    logger.info(
        "ingest: %d added, %d already present, %d failed",
        report.added,
        report.skipped,
        len(report.failed),
    )
    if report.failed:
        lines = "; ".join(f"{name}: {why}" for name, why in report.failed[:10])
        more = f" (and {len(report.failed) - 10} more)" if len(report.failed) > 10 else ""
        raise DataError(f"{len(report.failed)} snapshot(s) could not be ingested: {lines}{more}")
    require_store(store)
    return store


@task(
    name="generate-hydrogen",
    task_run_name="generate hydrogen size={size} n_max={n_max}",
    cache_policy=CACHE,
    persist_result=True,
)
def generate_hydrogen(store: str, size: int, n_max: int) -> str:
    """Write the hydrogen-orbital density store at ``store`` (reused when it matches)."""
    from rho_core.data.hydrogen import generate_hydrogen as generate

    logger = _logger()
    if store_ok(store):
        prov = _provenance(store)
        if (prov.get("size"), prov.get("n_max")) == (size, n_max):
            logger.info("store %s already holds these orbitals; reusing it", store)
            return store
    logger.info("generating hydrogen orbitals: size %d, n ≤ %d -> %s", size, n_max, store)
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    generate(store, size=size, n_max=n_max, mode="w")
    require_store(store)
    return store


@task(
    name="generate-random-fields",
    task_run_name="generate random fields -> {store}",
    cache_policy=CACHE,
    persist_result=True,
)
def generate_random_fields(store: str, spec: dict[str, Any]) -> str:
    """Write a Gaussian (or log-normal) random-field store (``rho_core.data.random_fields``).

    ``spec``: ``size``, ``dims``, ``amplitudes``, ``spectral_indices``, ``realizations``, ``seed``,
    ``lognormal``, ``workers``. A store with the same provenance is reused.
    """
    from rho_core.data.random_fields import generate_random_field_store

    logger = _logger()
    if store_ok(store):
        prov = _provenance(store)
        keys = ("size", "dims", "realizations", "seed", "lognormal")
        same = all(prov.get(k) == spec[k] for k in keys) and all(
            [float(v) for v in prov.get(k) or []] == [float(v) for v in spec[k]]
            for k in ("amplitudes", "spectral_indices")
        )
        if same:
            logger.info("store %s already holds these fields; reusing it", store)
            return store
    logger.info("generating random fields %s -> %s", spec, store)
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    generate_random_field_store(
        store,
        size=int(spec["size"]),
        dims=int(spec["dims"]),
        amplitudes=[float(a) for a in spec["amplitudes"]],
        spectral_indices=[float(n) for n in spec["spectral_indices"]],
        realizations=int(spec["realizations"]),
        seed=int(spec["seed"]),
        lognormal=bool(spec["lognormal"]),
        workers=int(spec.get("workers", 1)) if int(spec.get("workers", 1)) > 1 else 0,
        mode="w",
    )
    require_store(store)
    return store


@task(
    name="generate-rotational-spectra",
    task_run_name="generate rotational spectra -> {store}",
    cache_policy=CACHE,
    persist_result=True,
)
def generate_rotational_spectra(store: str, spec: dict[str, Any]) -> str:
    """Write a rotational-spectrum store (``rho_core.data.rotational``): ``spec`` has ``points``,
    ``f_min``, ``f_max`` (MHz), ``rotors`` random asymmetric tops with ``per_rotor`` (T, μ)
    draws each, ``seed`` and ``normalization`` (written with the data). Reused when it matches."""
    from rho_core.data import rotational as R

    logger = _logger()
    if store_ok(store) and _pipeline_spec(store) == spec:
        logger.info("store %s already holds these spectra; reusing it", store)
        return store
    logger.info("generating rotational spectra %s -> %s", spec, store)
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    rotors = R.random_rotors(int(spec["rotors"]), seed=int(spec["seed"]))
    cond = R.random_conditions(rotors, int(spec["per_rotor"]), seed=int(spec["seed"]) + 1)
    grid = R.Grid(float(spec["f_min"]), float(spec["f_max"]), int(spec["points"]))
    R.generate_rotational_store(
        store, cond, grid, mode="w", normalization=str(spec["normalization"])
    )
    from rho_core.data.store import write_store_attrs

    write_store_attrs(store, pipeline_spec=dict(spec))  # what the reuse check compares
    require_store(store)
    return store


def _pipeline_spec(store: str) -> dict | None:
    import zarr

    try:
        return dict(zarr.open_group(store, mode="r").attrs.get("pipeline_spec") or {}) or None
    except Exception:  # noqa: BLE001 - unreadable: not reusable
        return None

"""Data flows for galaxy mergers: built-in simulations or existing Bonsai snapshots → image store.

``galaxy_merger`` simulates a parameter grid of mergers with the built-in N-body engine, then
ingests the snapshots; ``ingest_bonsai`` ingests snapshots a user already has. Both fit the
normalisation and return the store path. A corrupt or missing snapshot fails the flow run with
the reader's message (which names the file); the new store is written at its own path, so
existing stores are never touched.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.params import GalaxyMergerParams, IngestBonsaiParams
from flows.spherical_harmonics import normalised
from tasks import data
from tasks.paths import data_dir


@flow(name="ingest-bonsai", log_prints=True)
def ingest_bonsai(params: IngestBonsaiParams) -> str:
    """Ingest Bonsai / tipsy snapshots into ``params.store`` and normalise it."""
    from rho_core.errors import DataError

    missing = [s for s in params.snapshots if not Path(s).exists()]
    if missing:
        raise DataError(f"snapshot file(s) not found: {', '.join(missing)}")
    store = data.ingest_bonsai(
        list(params.snapshots), params.store, params.image_size, params.params_file
    )
    return normalised(store, params.normalization)


@flow(name="galaxy-merger", log_prints=True)
def galaxy_merger(
    params: GalaxyMergerParams = GalaxyMergerParams(),  # noqa: B008
) -> str:
    """Simulate a grid of mergers, ingest the snapshots, normalise; returns the store path."""
    out_dir = params.out_dir or str(data_dir() / "sims" / "merger")
    store = params.store or str(data_dir() / "stores" / "merger.zarr")
    grid = {
        "n_particles": params.n_particles,
        "mass_ratio": list(params.mass_ratios),
        "pericenter": list(params.pericenters),
        "t_end": params.t_end,
        "snap_every": params.snap_every,
    }
    sims = data.simulate_mergers(out_dir, grid)
    path = data.ingest_bonsai([sims], store, params.image_size, None)
    return normalised(path, params.normalization)

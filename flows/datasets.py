"""Data flows of the generated datasets other than spherical harmonics: hydrogen orbitals,
Gaussian random fields and rotational spectra → Zarr store with a fitted normalisation
(returns the store path).

Each is cached like :func:`flows.spherical_harmonics.spherical_harmonics`: the same parameters
give the same store path, and a store deleted since is rebuilt.
"""

from __future__ import annotations

from prefect import flow

from flows.params import HydrogenParams, RandomFieldParams, RotationalParams
from flows.spherical_harmonics import normalised
from tasks.data import (
    generate_hydrogen,
    generate_random_fields,
    generate_rotational_spectra,
    store_ok,
)


@flow(name="hydrogen", log_prints=True)
def hydrogen(params: HydrogenParams = HydrogenParams()) -> str:  # noqa: B008
    """Generate (or reuse) the hydrogen-orbital store and its normalisation; returns its path."""
    args = (params.store_path(), params.size, params.n_max)
    path = generate_hydrogen(*args)
    if not store_ok(path):  # cached address of a store deleted since: rebuild it
        path = generate_hydrogen.with_options(refresh_cache=True)(*args)
    return normalised(path, params.normalization)


@flow(name="gaussian-random-field", log_prints=True)
def gaussian_random_field(params: RandomFieldParams = RandomFieldParams()) -> str:  # noqa: B008
    """Generate (or reuse) a Gaussian random-field store and its normalisation; returns its path."""
    spec = params.model_dump(exclude={"store", "normalization"})
    args = (params.store_path(), spec)
    path = generate_random_fields(*args)
    if not store_ok(path):
        path = generate_random_fields.with_options(refresh_cache=True)(*args)
    return normalised(path, params.normalization)


@flow(name="rotational-spectrum", log_prints=True)
def rotational_spectrum(params: RotationalParams = RotationalParams()) -> str:  # noqa: B008
    """Generate (or reuse) a rotational-spectrum store (normalised as it is written)."""
    spec = params.model_dump(exclude={"store"})
    args = (params.store_path(), spec)
    path = generate_rotational_spectra(*args)
    if not store_ok(path):
        path = generate_rotational_spectra.with_options(refresh_cache=True)(*args)
    return normalised(path, params.normalization)

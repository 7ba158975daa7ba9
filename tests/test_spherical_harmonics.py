"""Spherical-harmonic volumes: independent scipy evaluation, orthonormality, distinctness, Dask."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import factorial, lpmv, roots_legendre, sph_harm_y

from rho_core.data.spherical_harmonics import (
    generate_spherical_harmonics,
    harmonic_at,
    harmonic_volume,
    lm_pairs,
)
from rho_core.data.store import open_store
from rho_core.errors import ConfigError


def _reference(l: int, m: int, x, y, z, convention: str) -> np.ndarray:
    """Independent evaluation: the design's angles and scipy's complex Y_l^m."""
    r = np.sqrt(x * x + y * y + z * z)
    theta = np.arccos(np.clip(np.divide(z, r, out=np.ones_like(r), where=r > 0), -1, 1))
    phi = np.arctan2(y, x)
    Y = sph_harm_y(l, abs(m), theta, phi)
    if convention == "paper":
        return Y.real
    if m == 0:
        return Y.real
    return math.sqrt(2) * (-1) ** m * (Y.real if m > 0 else Y.imag)


@pytest.mark.parametrize("convention", ["real", "paper"])
def test_voxels_match_scipy_at_random_voxels(convention):
    rng = np.random.default_rng(7)
    size = 11  # odd: includes the centre voxel
    c = np.linspace(-1, 1, size)
    pairs = lm_pairs(12, convention)
    chosen = [pairs[i] for i in rng.choice(len(pairs), size=14, replace=False)]
    chosen += [(7, -5), (3, -3), (0, 0)] if convention == "real" else [(7, 5), (0, 0)]
    for l, m in chosen:
        vol = harmonic_volume(l, m, size, convention)
        assert vol.shape == (size, size, size) and vol.dtype == np.float32
        ijk = rng.integers(0, size, size=(40, 3))
        x, y, z = c[ijk[:, 0]], c[ijk[:, 1]], c[ijk[:, 2]]
        ref = _reference(l, m, x, y, z, convention)
        got = vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-6 * (1 + abs(ref).max()))


def test_independent_legendre_formula_and_centre_voxel():
    """A second, factorial-based formula (lpmv) for the real harmonics, incl. negative m."""
    rng = np.random.default_rng(3)
    pts = rng.standard_normal((200, 3))
    x, y, z = pts.T
    r = np.linalg.norm(pts, axis=1)
    ct, phi = z / r, np.arctan2(y, x)
    for l, m in [(4, -3), (6, 2), (9, -9), (5, 0)]:
        a = abs(m)
        norm = math.sqrt((2 * l + 1) / (4 * math.pi) * factorial(l - a) / factorial(l + a))
        p = norm * lpmv(a, l, ct)  # lpmv includes the Condon–Shortley phase
        trig = 1.0 if m == 0 else math.sqrt(2) * (np.cos(a * phi) if m > 0 else np.sin(a * phi))
        expected = (-1) ** a * p * trig if m != 0 else p
        np.testing.assert_allclose(harmonic_at(l, m, x, y, z), expected, atol=1e-12)
    # centre voxel of an odd grid: the limit along +z (θ = 0, φ = 0)
    centre = harmonic_volume(3, 0, 9)[4, 4, 4]
    assert centre == pytest.approx(math.sqrt(7 / (4 * math.pi)), rel=1e-6)
    assert harmonic_volume(3, 2, 9)[4, 4, 4] == 0.0


def test_real_harmonics_orthonormal_by_quadrature():
    l_max = 6
    nodes, weights = roots_legendre(l_max + 2)  # exact for polynomials in cos θ up to degree 2l
    n_phi = 2 * l_max + 2
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    ct, ph = np.meshgrid(nodes, phi, indexing="ij")
    st = np.sqrt(1 - ct**2)
    x, y, z = st * np.cos(ph), st * np.sin(ph), ct
    w = (weights[:, None] * np.full(n_phi, 2 * np.pi / n_phi)[None, :]).ravel()
    pairs = lm_pairs(l_max, "real")
    Y = np.stack([harmonic_at(l, m, x, y, z).ravel() for l, m in pairs])
    gram = (Y * w) @ Y.T
    np.testing.assert_allclose(gram, np.eye(len(pairs)), atol=1e-12)


def test_lm_pairs_counts_and_errors():
    assert len(lm_pairs(6, "real")) == 49 and len(lm_pairs(6, "paper")) == 28
    assert lm_pairs(1, "real") == [(0, 0), (1, -1), (1, 0), (1, 1)]
    with pytest.raises(ConfigError, match="l must be ≥ 0"):
        harmonic_volume(-1, 0, 8)
    with pytest.raises(ConfigError, match=r"\|m\| ≤ l"):
        harmonic_volume(2, -3, 8)
    with pytest.raises(ConfigError, match="paper"):
        harmonic_volume(2, -1, 8, "paper")
    with pytest.raises(ConfigError, match="size"):
        harmonic_volume(2, 1, 1)
    with pytest.raises(ConfigError, match="convention"):
        lm_pairs(2, "complex")


@pytest.mark.parametrize("convention", ["real", "paper"])
def test_store_volumes_distinct_and_parameters(tmp_path, convention):
    path = generate_spherical_harmonics(tmp_path / "s.zarr", size=9, l_max=4, convention=convention)
    s = open_store(path)
    pairs = lm_pairs(4, convention)
    assert s.kind == "spherical_harmonics" and s.param_names == ["l", "m"]
    assert s.n == len(pairs) and s.field_shape == (1, 9, 9, 9)
    assert [tuple(map(int, p)) for p in s.params] == pairs
    assert s.provenance["convention"] == convention and s.provenance["size"] == 9
    v = s.fields[:].reshape(s.n, -1).astype(np.float64)
    for i in range(s.n):
        for j in range(i + 1, s.n):
            assert not np.allclose(v[i], v[j], atol=1e-4), (pairs[i], pairs[j])
            assert not np.allclose(v[i], -v[j], atol=1e-4), (pairs[i], pairs[j])


def test_dask_store_equals_serial_bit_for_bit(tmp_path):
    serial = generate_spherical_harmonics(tmp_path / "a.zarr", size=10, l_max=3)
    dask = generate_spherical_harmonics(tmp_path / "b.zarr", size=10, l_max=3, workers=2)
    a, b = open_store(serial), open_store(dask)
    assert a.n == b.n == 16
    assert a.fields[:].tobytes() == b.fields[:].tobytes()
    assert a.params.tobytes() == b.params.tobytes()


def test_slabs_equal_whole(monkeypatch):
    """Slab-wise computation (used for big sizes) gives the same volume as one slab."""
    import rho_core.data.spherical_harmonics as sh

    whole = sh.harmonic_volume(5, -2, 12)
    monkeypatch.setattr(sh, "SLAB_VOXELS", 12 * 12 * 5)  # 3 slabs of z
    assert np.array_equal(sh.harmonic_volume(5, -2, 12), whole)


def test_given_scheduler_address(tmp_path):
    """A running scheduler (here an in-process one with a thread worker) is used as given."""
    from dask.distributed import LocalCluster

    serial = generate_spherical_harmonics(tmp_path / "a.zarr", size=6, lm=[(3, -2), (3, 2), (1, 0)])
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        other = generate_spherical_harmonics(
            tmp_path / "b.zarr",
            size=6,
            lm=[(3, -2), (3, 2), (1, 0)],
            scheduler_address=cluster.scheduler_address,
        )
    a, b = open_store(serial), open_store(other)
    assert a.fields[:].tobytes() == b.fields[:].tobytes()
    assert [tuple(p) for p in b.params] == [(3, -2), (3, 2), (1, 0)]

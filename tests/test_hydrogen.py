"""Hydrogen orbital densities: closed form for 1s, normalisation, radial functions, store."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from rho_core.data.hydrogen import (
    default_half_width,
    density_at,
    generate_hydrogen,
    hydrogen_density,
    nlm_triples,
    radial,
)
from rho_core.data.store import open_store
from rho_core.errors import ConfigError


def test_ground_state_closed_form():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-4, 4, size=(300, 3))
    r = np.linalg.norm(pts, axis=1)
    np.testing.assert_allclose(density_at(1, 0, 0, *pts.T), np.exp(-2 * r) / np.pi, rtol=1e-12)
    vol = hydrogen_density(1, 0, 0, 9, half_width=4.0)
    c = np.linspace(-4, 4, 9)
    X, Y, Z = np.meshgrid(c, c, c, indexing="ij")
    np.testing.assert_allclose(vol, np.exp(-2 * np.sqrt(X**2 + Y**2 + Z**2)) / np.pi, rtol=1e-6)


def test_closed_forms_2p():
    # R_21 = r e^{-r/2} / (2√6);  |ψ_210|² = r² e^{-r} cos²θ / (32π)
    r = np.linspace(0.1, 20, 50)
    np.testing.assert_allclose(radial(2, 1, r), r * np.exp(-r / 2) / (2 * math.sqrt(6)), rtol=1e-12)
    x, y, z = 0.3, -1.2, 2.0
    rr = math.sqrt(x * x + y * y + z * z)
    expected = rr**2 * math.exp(-rr) * (z / rr) ** 2 / (32 * math.pi)
    assert density_at(2, 1, 0, x, y, z) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("n", "l"), [(1, 0), (2, 0), (3, 1), (4, 3), (6, 2)])
def test_radial_normalised_and_box_holds_999_permille(n, l):
    total = quad(lambda r: radial(n, l, r) ** 2 * r * r, 0, np.inf, limit=200)[0]
    assert total == pytest.approx(1.0, rel=1e-8)
    inside = quad(lambda r: radial(n, l, r) ** 2 * r * r, 0, default_half_width(n), limit=200)[0]
    assert inside >= 0.999


@pytest.mark.parametrize(("n", "l", "m"), [(1, 0, 0), (2, 0, 0), (2, 1, -1), (3, 2, 1)])
def test_density_integrates_to_one_on_grid(n, l, m):
    size = 61
    vol = hydrogen_density(n, l, m, size).astype(np.float64)
    h = 2 * default_half_width(n) / (size - 1)
    assert vol.min() >= 0
    assert vol.sum() * h**3 == pytest.approx(1.0, abs=0.005)


def test_store_and_errors(tmp_path):
    path = generate_hydrogen(tmp_path / "h.zarr", size=12, n_max=2)
    s = open_store(path)
    assert s.kind == "hydrogen_orbital" and s.param_names == ["n", "l", "m"]
    assert [tuple(map(int, p)) for p in s.params] == nlm_triples(2) and s.n == 5
    np.testing.assert_array_equal(s.fields[2, 0], hydrogen_density(2, 1, -1, 12))
    # densities span decades: the volume's dynamic range is large
    f = s.fields[0, 0]
    assert f.max() / f.min() > 1e4
    with pytest.raises(ConfigError, match="l < n"):
        hydrogen_density(2, 2, 0, 8)
    with pytest.raises(ConfigError, match="n must be"):
        hydrogen_density(0, 0, 0, 8)
    with pytest.raises(ConfigError, match=r"\|m\| ≤ l"):
        hydrogen_density(3, 1, 2, 8)
    with pytest.raises(ConfigError, match="n_max"):
        generate_hydrogen(tmp_path / "x.zarr", n_max=0)

"""Renderer: CIC mass conservation in the field of view, point masses in the expected pixel,
projection axes, Gaussian kernel, centring, streaming independence and the DM channel."""

from __future__ import annotations

import numpy as np
import pytest

from rho_core.data import tipsy
from rho_core.data.particles import open_snapshot
from rho_core.data.render import RenderConfig, auto_fov, render_snapshot, view_matrix
from rho_core.errors import ConfigError

N = 32
FOV = 64.0  # 2 kpc pixels
H = FOV / N


def _snap(tmp_path, pos, mass=None, ids=None, name="s"):
    pos = np.asarray(pos, np.float32).reshape(-1, 3)
    n = pos.shape[0]
    mass = np.ones(n, np.float32) if mass is None else np.asarray(mass, np.float32)
    ids = np.arange(n, dtype=np.uint64) if ids is None else ids  # disk stars
    p = tipsy.write_tipsy(tmp_path / name, pos, np.zeros_like(pos), mass, ids, time=1.0)
    return open_snapshot(p)


def _cfg(**kw):
    base = dict(image_size=N, fov=FOV, log=False, center=(0.0, 0.0, 0.0))
    base.update(kw)
    return RenderConfig(**base)


def test_cic_conserves_mass_inside_fov(tmp_path):
    rng = np.random.default_rng(0)
    pos = rng.uniform(-50, 50, (5000, 3))
    mass = rng.uniform(0.5, 2, 5000)
    snap = _snap(tmp_path, pos, mass)
    res = render_snapshot(snap, _cfg(chunk_size=777))
    inside = (np.abs(pos[:, :2]) < FOV / 2).all(axis=1)
    total = res.image.sum(dtype=np.float64) * H * H
    assert 0 < inside.sum() < 5000  # some particles really are outside
    np.testing.assert_allclose(total, mass[inside].astype(np.float32).sum(), rtol=1e-5)
    assert res.image.shape == (1, N, N) and res.image.dtype == np.float32


def test_point_mass_lands_in_expected_pixel(tmp_path):
    i, j = 5, 20  # column (u = x), row (v = y)
    x = -FOV / 2 + (i + 0.5) * H
    y = -FOV / 2 + (j + 0.5) * H
    res = render_snapshot(_snap(tmp_path, [[x, y, 7.0]], [3.0]), _cfg())
    img = res.image[0]
    assert np.unravel_index(img.argmax(), img.shape) == (j, i)
    np.testing.assert_allclose(img[j, i], 3.0 / H**2, rtol=1e-5)
    assert np.count_nonzero(img) == 1
    # off centre by a quarter pixel in u: CIC splits 3/4 : 1/4 between columns i and i+1
    res = render_snapshot(_snap(tmp_path, [[x + H / 4, y, 0]], [1.0], name="q"), _cfg())
    np.testing.assert_allclose(res.image[0, j, i : i + 2] * H * H, [0.75, 0.25], rtol=1e-5)


@pytest.mark.parametrize(
    "projection, point, pixel",
    [
        ("z", (10, 0, 0), (N // 2, N // 2 + 5)),  # u = x
        ("z", (0, 10, 0), (N // 2 + 5, N // 2)),  # v = y
        ("x", (0, 10, 0), (N // 2, N // 2 + 5)),  # u = y
        ("x", (0, 0, 10), (N // 2 + 5, N // 2)),  # v = z
        ("y", (0, 0, 10), (N // 2, N // 2 + 5)),  # u = z
        ("y", (10, 0, 0), (N // 2 + 5, N // 2)),  # v = x
        ("90,0", (0, 0, 10), (N // 2 - 6, N // 2)),  # edge-on: v = -z
    ],
)
def test_projection_axes(tmp_path, projection, point, pixel):
    # pixel centres sit at (k + 1/2) h from the centre: 11 kpc = 5.5 px is the centre of pixel
    # N/2 + 5, -11 kpc that of pixel N/2 - 6, and 1 kpc that of pixel N/2.
    p = np.array(point, np.float64) * 1.1
    p[p == 0] = 1.0
    res = render_snapshot(_snap(tmp_path, [p]), _cfg(projection=projection))
    img = res.image[0]
    assert np.unravel_index(img.argmax(), img.shape) == pixel
    np.testing.assert_allclose(img.max() * H * H, 1.0, rtol=1e-5)  # exactly on a pixel centre
    # the line-of-sight coordinate does not matter
    los = view_matrix(projection)[2]
    res2 = render_snapshot(_snap(tmp_path, [p + 13 * los], name="l"), _cfg(projection=projection))
    np.testing.assert_allclose(res2.image, res.image, atol=1e-4 * img.max())


def test_angles_zero_equal_z_view(tmp_path):
    rng = np.random.default_rng(1)
    snap = _snap(tmp_path, rng.normal(0, 8, (2000, 3)))
    a = render_snapshot(snap, _cfg(projection="z")).image
    b = render_snapshot(snap, _cfg(projection="0,0")).image
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(view_matrix("30,40") @ view_matrix("30,40").T, np.eye(3), atol=1e-12)


def test_gaussian_kernel_conserves_and_is_symmetric(tmp_path):
    res = render_snapshot(
        _snap(tmp_path, [[H / 2, H / 2, 0]], [2.0]), _cfg(kernel="gaussian", sigma_px=1.5)
    )
    img = res.image[0]
    np.testing.assert_allclose(img.sum() * H * H, 2.0, rtol=1e-5)
    j, i = np.unravel_index(img.argmax(), img.shape)
    assert (j, i) == (N // 2, N // 2)
    np.testing.assert_allclose(img[j, i - 2], img[j, i + 2], rtol=1e-5)
    np.testing.assert_allclose(img[j - 1, i], img[j, i + 1], rtol=1e-5)
    # the Gaussian spreads: neighbour / centre = exp(-1 / (2 sigma^2))
    np.testing.assert_allclose(img[j, i + 1] / img[j, i], np.exp(-1 / (2 * 1.5**2)), rtol=1e-4)


def test_com_centring_streaming_and_dm_channel(tmp_path):
    rng = np.random.default_rng(2)
    stars = rng.normal(0, 5, (3000, 3))
    dm = rng.normal(0, 15, (3000, 3))
    ids = np.r_[np.arange(3000), 3 * 10**18 + np.arange(3000)].astype(np.uint64)
    shift = np.array([40.0, -25.0, 10.0])
    a = _snap(tmp_path, np.r_[stars, dm], ids=ids, name="a")
    b = _snap(tmp_path, np.r_[stars, dm] + shift, ids=ids, name="b")
    cfg = RenderConfig(image_size=N, fov=FOV, with_dm=True, chunk_size=500)
    ra = render_snapshot(a, cfg)
    rb = render_snapshot(b, RenderConfig(image_size=N, fov=FOV, with_dm=True, chunk_size=10**6))
    assert ra.image.shape == (2, N, N)
    np.testing.assert_allclose(np.array(rb.center) - np.array(ra.center), shift, atol=1e-3)
    np.testing.assert_allclose(ra.image, rb.image, atol=2e-3)
    # DM is wider than the stars: its channel has fewer floor pixels
    assert (ra.image[1] > np.log10(cfg.floor)).sum() > (ra.image[0] > np.log10(cfg.floor)).sum()
    assert ra.image.min() >= np.log10(cfg.floor) - 1e-6
    prov = ra.provenance
    assert prov["extent_kpc"] == [-32.0, 32.0, -32.0, 32.0] and prov["pixel_kpc"] == H
    assert prov["channels"][1]["components"] == ["dark_matter"]
    assert "surface_density" in prov["units"]
    fov = auto_fov(a, RenderConfig(image_size=N))
    assert 20 < fov < 60  # about 2 * 1.25 * 99th percentile of max(|x|, |y|) for sigma = 5


def test_bad_config():
    with pytest.raises(ConfigError, match="projection"):
        RenderConfig(projection="sideways")
    with pytest.raises(ConfigError, match="kernel"):
        RenderConfig(kernel="sph")
    with pytest.raises(ConfigError, match="fov"):
        RenderConfig(fov=-1)


def test_non_finite_particles_are_a_data_error_naming_the_file(tmp_path):
    """Regression: a NaN position made the automatic field of view NaN, which aborted the whole
    ingest with 'fov must be a positive width ... got nan' instead of failing that file."""
    from rho_core.errors import DataError

    pos = np.zeros((4, 3))
    pos[2, 0] = np.nan
    snap = _snap(tmp_path, pos, name="nanpos")
    with pytest.raises(DataError, match="nanpos: non-finite particle positions"):
        render_snapshot(snap, RenderConfig(image_size=N))
    with pytest.raises(DataError, match="nanpos: non-finite particle positions"):
        auto_fov(snap, RenderConfig(image_size=N), center=(0.0, 0.0, 0.0))

"""Normalisation transforms: exact inverses (numpy and torch), ranges, fitting out of core."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rho_core.data.normalization import (
    Normalizer,
    fit_normalization,
    normalizer_from_stats,
    write_normalization,
)
from rho_core.data.store import create_store, open_store
from rho_core.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
# positive data spanning eight decades, and signed data
POS = (10.0 ** RNG.uniform(-6, 2, size=4000)).astype(np.float32)
SIGNED = (RNG.standard_normal(4000) * 10.0 ** RNG.uniform(-3, 3, size=4000)).astype(np.float32)


def _fit(x: np.ndarray, transform: str, **kw) -> Normalizer:
    stats = {
        "min": float(x.min()),
        "max": float(x.max()),
        "mean": float(x.mean()),
        "std": float(x.std()),
        "absmax": float(abs(x).max()),
        "abs_p50": float(np.median(abs(x))),
        "abs_p90": float(np.percentile(abs(x), 90)),
    }
    return normalizer_from_stats(stats, transform, **kw)


CASES = [
    ("minmax", SIGNED),
    ("standard", SIGNED),
    ("asinh", SIGNED),
    ("asinh", POS),
    ("log", POS),
    ("identity", SIGNED),
]


@pytest.mark.parametrize(("transform", "x"), CASES)
def test_inverse_is_exact_numpy_and_torch(transform, x):
    norm = _fit(x, transform, floor=float(POS.min()) if transform == "log" else None)
    y = norm.forward(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    back = norm.inverse(y)
    # float32 precision: the error of rounding y (and x) to float32, carried back through the
    # derivative of the inverse map
    y64 = y.astype(np.float64)
    h = 1e-6
    dxdy = (norm.inverse(y64 + h) - norm.inverse(y64 - h)) / (2 * h)
    eps = np.finfo(np.float32).eps
    tol = 4 * eps * (np.abs(x) + np.abs(dxdy) * np.maximum(1.0, np.abs(y64)))
    assert np.all(np.abs(back.astype(np.float64) - x) <= tol)
    # float64 numpy: exact to ~1e-12
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(
        norm.inverse(norm.forward(x64)), x64, rtol=1e-10, atol=1e-12 * float(abs(x).max())
    )
    # torch float32 gives the same as numpy to float32 precision, and inverts
    xt = torch.from_numpy(x)
    yt = norm.forward(xt)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    np.testing.assert_allclose(yt.numpy(), y, rtol=0, atol=1e-5)
    assert np.all(np.abs(norm.inverse(yt).numpy().astype(np.float64) - x) <= 8 * tol)


@pytest.mark.parametrize("transform", ["minmax", "asinh", "log"])
def test_range_maps_to_unit_interval(transform):
    x = POS
    norm = _fit(x, transform, floor=float(x.min()) if transform == "log" else None)
    y = norm.forward(x.astype(np.float64))
    assert y.min() == pytest.approx(-1.0, abs=1e-9) and y.max() == pytest.approx(1.0, abs=1e-9)


def test_log_compresses_decades():
    norm = _fit(POS, "log", floor=float(POS.min()))
    # each decade gets an equal share of [-1, 1]: 8 decades -> 0.25 per decade
    y = norm.forward(np.array([1e-4, 1e-3], dtype=np.float64))
    assert y[1] - y[0] == pytest.approx(
        2.0 / np.log10(float(POS.max()) / float(POS.min())), rel=1e-9
    )
    # below the floor clamps to the floor
    assert norm.inverse(norm.forward(np.array([0.0])))[0] == pytest.approx(POS.min())


def test_asinh_linear_near_zero_log_far():
    norm = Normalizer("asinh", min=-1e6, max=1e6, scale=1.0)
    lo, hi = norm._bounds()
    k = 2.0 / (hi - lo)
    x = np.array([1e-4, 2e-4, 1e4, 1e5])
    y = norm.forward(x) + 1.0 - (0 - lo) * k  # shift so that y(0) = 0
    assert y[1] / y[0] == pytest.approx(2.0, rel=1e-6)  # linear near zero
    assert (y[3] - y[2]) / k == pytest.approx(np.log(10.0), rel=1e-6)  # logarithmic far out


def test_dict_round_trip_and_errors():
    norm = _fit(SIGNED, "asinh")
    again = Normalizer.from_dict(norm.to_dict())
    assert again == norm
    np.testing.assert_array_equal(again.forward(SIGNED), norm.forward(SIGNED))
    assert Normalizer.from_dict(None).transform == "identity"
    with pytest.raises(ConfigError, match="unknown normalisation transform"):
        Normalizer("cube")
    with pytest.raises(ConfigError, match="max > min"):
        Normalizer("minmax", min=1.0, max=1.0)
    with pytest.raises(ConfigError, match="floor"):
        Normalizer("log", min=0.0, max=1.0)
    with pytest.raises(DataError, match="positive"):
        _fit(-POS, "log")
    with pytest.raises(DataError, match="non-negative.*use 'asinh'"):
        _fit(SIGNED, "log")  # regression: negatives would all have collapsed onto the floor


def test_fit_out_of_core_matches_numpy(tmp_path):
    path = tmp_path / "s.zarr"
    data = (10.0 ** RNG.uniform(-3, 1, size=(10, 1, 6, 6))).astype(np.float32)
    with create_store(
        path,
        kind="t",
        spatial_dims=2,
        param_names=["i"],
        field_shape=(1, 6, 6),
        samples_per_chunk=3,
    ) as w:
        w.append(data, np.arange(10.0))
    d = fit_normalization(path, "asinh", write=True)
    flat = data.astype(np.float64).ravel()
    st = d["stats"]
    assert st["min"] == pytest.approx(flat.min()) and st["max"] == pytest.approx(flat.max())
    assert st["mean"] == pytest.approx(flat.mean(), rel=1e-12)
    assert st["std"] == pytest.approx(flat.std(), rel=1e-9)
    # fewer values than the percentile sample: exact
    assert st["percentiles"]["50"] == pytest.approx(np.percentile(flat, 50), rel=1e-12)
    assert st["percentiles"]["99.9"] == pytest.approx(np.percentile(flat, 99.9), rel=1e-12)
    assert d["scale"] == pytest.approx(np.median(flat), rel=1e-12)
    s = open_store(path)
    assert Normalizer.from_dict(s.normalization) == Normalizer.from_dict(d)
    write_normalization(path, Normalizer("standard", mean=1.0, std=2.0))
    assert open_store(path).normalization["transform"] == "standard"
    with pytest.raises(ConfigError):
        write_normalization(path, {"transform": "standard", "std": 0.0})


def test_sampled_percentiles_are_close_in_rank():
    import dask.array as da

    from rho_core.data.normalization import compute_statistics

    x = (10.0 ** RNG.uniform(-4, 2, size=200_000)).reshape(50, 4000)
    st = compute_statistics(da.from_array(x, chunks=(5, 4000)), [1, 50, 99], sample_size=20_000)
    assert st["percentile_sample"] == 20_000
    for q in (1, 50, 99):
        rank = (x < st["percentiles"][f"{q:g}"]).mean() * 100
        assert abs(rank - q) < 1.5
    assert st["max"] == x.max() and st["mean"] == pytest.approx(x.mean(), rel=1e-12)

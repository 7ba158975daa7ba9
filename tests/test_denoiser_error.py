"""benchmarks/denoiser_error.py against closed forms: the exact GRF denoiser in place of the
network scores excess 0 and gain 1; one whose x̂₀ is the exact one scaled by (1 + r) scores gain
1 + r, power (1 + r)² and excess r²·‖x̂₀‖²/‖x̂₀ − x₀‖² in every band. No network is trained: the
"model" is the exact Fourier denoiser (rho_core.exact), a real object, not a mock."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import denoiser_error as de  # noqa: E402

from rho_core.data.normalization import Normalizer  # noqa: E402
from rho_core.data.random_fields import spectrum_grid  # noqa: E402
from rho_core.exact import FourierGaussianDenoiser  # noqa: E402
from rho_core.schedules import make_schedule  # noqa: E402

SIZE, AMP, IDX, STD = 64, 1.0, -1.25, 0.2


class ScaledExact:
    """ε-predictor whose x̂₀ is ``(1 + r)`` times the exact Wiener x̂₀ (zero-mean field)."""

    def __init__(self, schedule, r: float) -> None:
        power = spectrum_grid(SIZE, 2, AMP, IDX) / STD**2
        self.exact = FourierGaussianDenoiser(schedule, torch.as_tensor(power))
        self.schedule, self.r = schedule, r

    def __call__(self, x, t, cond=None):
        abar = self.schedule.alpha_bar_at(t).double().view(-1, 1, 1, 1)
        x0 = (1.0 + self.r) * self.exact.x0(x.double(), t)
        return ((x.double() - abar.sqrt() * x0) / (1.0 - abar).sqrt()).float()


def _loaded(r: float) -> SimpleNamespace:
    schedule = make_schedule("cosine", 1000, shift=-4.0)
    model = SimpleNamespace(schedule=schedule, denoiser=ScaledExact(schedule, r))
    return SimpleNamespace(
        normalizer=Normalizer(transform="standard", mean=0.0, std=STD),
        model=model,
        field_shape=(1, SIZE, SIZE),
        param_names=["amplitude", "spectral_index"],
    )


@pytest.mark.parametrize("r", [0.0, 0.02])
def test_gain_and_excess_of_a_scaled_exact_denoiser(r: float) -> None:
    rows = de.measure(_loaded(r), AMP, IDX, [100, 300], n=4, seed=5)
    assert [row["t"] for row in rows] == [100, 300]
    for row in rows:
        # float32 round trip through the ε form: agreement to ~1e-4 relative
        assert row["gain_10_30"] == pytest.approx(1.0 + r, abs=2e-4)
        assert row["gain_over_30"] == pytest.approx(1.0 + r, abs=2e-4)
        assert row["power_10_30"] == pytest.approx((1.0 + r) ** 2, abs=4e-4)
        for k in de.SHELLS:
            assert row["gains"][k] == pytest.approx(1.0 + r, abs=5e-4)
        if r == 0.0:
            assert row["excess"] < 1e-6
        else:
            assert row["excess"] > 1e-5
    if r:
        # excess = r²·‖x̂₀‖² / ‖x̂₀ − x₀‖²: larger at t = 100 (small irreducible error)
        assert rows[0]["excess"] > rows[1]["excess"]


def test_shell_index_is_the_rounded_wavenumber() -> None:
    k = de.shell_index(8, 2)
    assert k.shape == (8, 8)
    assert k[0, 0] == 0 and k[0, 1] == 1 and k[1, 1] == 1 and k[4, 4] == 6
    assert np.all(k >= 0)


def test_store_groups_label_each_condition_with_its_count(tmp_path) -> None:
    from rho_core.data import random_fields as rf

    out = tmp_path / "mixed"
    rf.generate_random_field_store(out, 8, 2, [1.0, 2.0], [-1.0, -2.0], 3, seed=1)
    rf.generate_random_field_store(out, 8, 2, [1.5], [-1.5, -2.0], 2, seed=7, mode="a")
    got = de.store_groups("train", str(out))
    assert got == [
        ("train·3", (1.0, -1.0)), ("train·3", (1.0, -2.0)), ("train·3", (2.0, -1.0)),
        ("train·3", (2.0, -2.0)), ("train·2", (1.5, -1.5)), ("train·2", (1.5, -2.0)),
    ]  # fmt: skip


def test_group_summary_is_rms_mean_and_max_per_group_and_t() -> None:
    rows = [
        {"group": "a·3", "t": 300, "gain_10_30": 1.03},
        {"group": "a·3", "t": 300, "gain_10_30": 0.99},
        {"group": "a·3", "t": 350, "gain_10_30": 1.0},
        {"group": None, "t": 300, "gain_10_30": 2.0},  # a --cond row: in no group
    ]
    [g300, g350] = de.group_summary(rows)
    assert (g300["group"], g300["t"], g300["conditions"]) == ("a·3", 300, 2)
    assert g300["rms"] == pytest.approx(np.sqrt((0.03**2 + 0.01**2) / 2))
    assert g300["mean"] == pytest.approx(0.01) and g300["max"] == pytest.approx(0.03)
    assert g350["rms"] == pytest.approx(0.0) and g350["conditions"] == 1

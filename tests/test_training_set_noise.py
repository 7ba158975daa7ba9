"""benchmarks/training_set_noise.py: a real generated and normalised store, and the data-floor
gain it predicts checked against benchmarks/denoiser_error.py run on a "network" that learned the
store exactly — the exact Fourier Wiener denoiser (rho_core.exact) of the store's own per-shell
empirical spectrum, a real object, not a mock."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import denoiser_error as de  # noqa: E402
import training_set_noise as tsn  # noqa: E402

from rho_core.data import random_fields as rf  # noqa: E402
from rho_core.data.normalization import Normalizer, write_normalization  # noqa: E402
from rho_core.exact import FourierGaussianDenoiser  # noqa: E402
from rho_core.schedules import make_schedule  # noqa: E402

SIZE, STD = 64, 0.15


def _store(tmp_path) -> Path:
    out = tmp_path / "train"
    rf.generate_random_field_store(out, SIZE, 2, [1.0], [-1.2], 6, seed=4)
    rf.generate_random_field_store(out, SIZE, 2, [2.0], [-1.5], 2, seed=9, mode="a")
    write_normalization(out, Normalizer(transform="standard", mean=0.0, std=STD))
    return out


def test_bands_parse_and_refuse_nonsense() -> None:
    assert tsn.parse_bands("1-9,10-30,31-inf") == [
        ("1-9", 1.0, 9.0), ("10-30", 10.0, 30.0), ("31-inf", 31.0, float("inf"))
    ]  # fmt: skip
    for bad in ("10", "30-10", "a-b"):
        with pytest.raises(SystemExit, match="--bands"):
            tsn.parse_bands(bad)


def test_condition_table_against_an_independent_fft(tmp_path) -> None:
    out = _store(tmp_path)
    st, conds = tsn.store_conditions(str(out))
    assert [(c, len(r)) for c, r in conds] == [((1.0, -1.2), 6), ((2.0, -1.5), 2)]
    table = tsn.condition_table(st, conds, tsn.parse_bands("10-30"))
    k = np.fft.fftfreq(SIZE) * SIZE
    kk = np.rint(np.hypot(k[:, None], k[None, :]))
    band = (kk >= 10) & (kk <= 30)
    for c, (cond, rows) in zip(table, conds, strict=True):
        x = np.stack([st.read(int(i))[0][0] for i in rows]).astype(np.float64)
        p_emp = (np.abs(np.fft.fft2(x)) ** 2).mean(axis=0) / SIZE**2
        p_true = cond[0] * np.where(kk > 0, np.hypot(k[:, None], k[None, :]), 1.0) ** cond[1]
        want = p_emp[band].sum() / p_true[band].sum()
        got = c["bands"]["10-30"]
        assert got["ratio"] == pytest.approx(want, rel=1e-6)
        sigma = np.sqrt(2 * (p_true[band] ** 2).sum()) / p_true[band].sum() / np.sqrt(len(rows))
        assert got["sigma"] == pytest.approx(sigma, rel=1e-9)
        assert got["z"] == pytest.approx((want - 1) / sigma, rel=1e-5)
        assert c["k"] == len(rows)


def _learned_the_store(st, cond, shell_ratio) -> SimpleNamespace:
    """A 'model' whose x̂₀ is the Wiener filter of the store's empirical spectrum (normalised)."""
    schedule = make_schedule("cosine", 1000, shift=-4.0)
    power = rf.spectrum_grid(SIZE, 2, *cond).reshape(-1) * shell_ratio / STD**2
    exact = FourierGaussianDenoiser(schedule, torch.as_tensor(power.reshape(SIZE, SIZE)))

    def denoiser(x, t, cond=None):
        abar = schedule.alpha_bar_at(t).double().view(-1, 1, 1, 1)
        x0 = exact.x0(x.double(), t)
        return ((x.double() - abar.sqrt() * x0) / (1.0 - abar).sqrt()).float()

    return SimpleNamespace(
        normalizer=Normalizer.from_dict(st.normalization),
        model=SimpleNamespace(schedule=schedule, denoiser=denoiser),
        field_shape=(1, SIZE, SIZE),
        param_names=["amplitude", "spectral_index"],
    )


def test_predicted_gain_is_what_denoiser_error_measures_on_a_perfect_learner(tmp_path) -> None:
    out = _store(tmp_path)
    st, conds = tsn.store_conditions(str(out))
    table = tsn.condition_table(st, conds, tsn.parse_bands("10-30"))
    rows = []
    for c in table:
        cond = (c["amplitude"], c["spectral_index"])
        loaded = _learned_the_store(st, cond, c["shell_ratio"])
        for r in de.measure(loaded, *cond, [200, 350], n=24, seed=3):
            rows.append({"amplitude": cond[0], "spectral_index": cond[1], **r})
    rows.append({"amplitude": 9.0, "spectral_index": -1.0, "t": 1, "abar": 0.5, "gain_10_30": 1})
    pred = tsn.predicted_gains(st, table, rows)
    assert len(pred) == 4  # the row of a condition not in the store is left out
    assert max(abs(p["predicted"] - 1) for p in pred) > 2e-3  # K = 2, 6: the floor is visible
    for p in pred:
        assert p["measured"] == pytest.approx(p["predicted"], abs=1e-3)
    [s2, s6] = tsn.gain_summary(pred)
    assert (s2["k"], s2["rows"], s6["k"], s6["rows"]) == (2, 2, 6, 2)
    assert s6["rms_unexplained"] < 1e-3


def test_main_prints_and_writes_json(tmp_path, capsys) -> None:
    out = _store(tmp_path)
    gains = tmp_path / "g.json"
    gains.write_text(json.dumps({"rows": [
        {"amplitude": 1.0, "spectral_index": -1.2, "t": 300, "abar": 0.25, "gain_10_30": 1.01},
        {"amplitude": 2.0, "spectral_index": -1.5, "t": 300, "abar": 0.25, "gain_10_30": 0.99},
    ]}))  # fmt: skip
    doc = tmp_path / "out.json"
    assert tsn.main(["--store", str(out), "--gains", str(gains), "--json", str(doc)]) == 0
    text = capsys.readouterr().out
    assert "2 conditions, 8 fields" in text and "rms unexplained" in text
    got = json.loads(doc.read_text())
    assert [c["k"] for c in got["conditions"]] == [6, 2]
    assert {g["measured"] for g in got["gains"]} == {1.01, 0.99}
    with pytest.raises(SystemExit, match="no row"):
        tsn.main(["--store", str(out), "--gains", str(gains), "--min-index", "-1.0"])

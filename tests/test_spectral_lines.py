"""Line-recovery scores: exact answers on synthetic spectra with known lines."""

from __future__ import annotations

import numpy as np
import pytest

from rho_core.data import rotational as R
from rho_core.errors import DataError
from rho_core.spectral_lines import aggregate_scores, find_lines, line_scores, reference_lines

GRID = R.Grid(0.0, 1023.0, 1024)  # 1 MHz per point: positions in MHz = points


def _spectrum(pos, inten, fwhm=2.5):
    return R.render(np.asarray(pos, float), np.asarray(inten, float), GRID, fwhm)


@pytest.fixture
def lines():
    rng = np.random.default_rng(0)
    pos = np.sort(rng.choice(np.arange(20, 1000, 12), size=40, replace=False)).astype(float)
    pos += rng.uniform(-0.4, 0.4, size=pos.size)
    inten = 10.0 ** rng.uniform(-3.0, 0.0, size=pos.size)  # three decades
    return pos, inten


def test_find_lines_subgrid_position():
    s = _spectrum([100.3, 500.0, 800.75], [1.0, 0.5, 0.2])
    pos, h = find_lines(s, 1e-3)
    assert np.allclose(pos, [100.3, 500.0, 800.75], atol=0.05)
    assert h[0] > h[1] > h[2]


def test_reference_lines_merge_blends():
    p, i = reference_lines(np.array([10.0, 11.0, 30.0]), np.array([1.0, 3.0, 2.0]), merge=2.0)
    assert np.allclose(p, [10.75, 30.0]) and np.allclose(i, [4.0, 2.0])


def test_perfect_and_degraded_spectra(lines):
    pos, inten = lines
    t = _spectrum(pos, inten)
    r = line_scores(t, t, (pos, inten), GRID)
    assert r["recall"] == 1.0 and r["precision"] == 1.0
    assert r["position_error"] == pytest.approx(0.0, abs=1e-9) and r["intensity_error"] == 0.0
    strong = inten >= inten.max() * 1e-2
    assert r["n_lines"] == r["n_listed"] == strong.sum()  # isolated lines: all resolved
    # shifted by one point: every line found, position error exactly 1
    r = line_scores(np.roll(t, 1), t, (pos, inten), GRID)
    assert r["recall"] == 1.0 and r["position_error"] == pytest.approx(1.0, abs=1e-9)
    # 20 % too strong everywhere: intensity error 0.2, nothing else changes
    r = line_scores(1.2 * t, t, (pos, inten), GRID)
    assert r["intensity_error"] == pytest.approx(0.2) and r["recall"] == 1.0
    # the strongest half of the lines dropped: recall falls, precision stays 1
    keep = inten < np.median(inten[strong])
    r = line_scores(_spectrum(pos[keep], inten[keep]), t, (pos, inten), GRID)
    assert r["recall"] == pytest.approx((keep & strong).sum() / strong.sum())
    assert r["precision"] == 1.0
    # spurious lines where there are none: precision falls by their share
    fake = np.array([26.0, 226.0, 626.0])
    g = t + _spectrum(fake, np.full(3, inten.max() * 0.5))
    r = line_scores(g, t, (pos, inten), GRID)
    assert r["recall"] == 1.0
    assert r["precision"] == pytest.approx(strong.sum() / (strong.sum() + 3))


def test_lines_below_threshold_do_not_count(lines):
    pos, inten = lines
    t = _spectrum(pos, inten)
    # a generated spectrum whose weak (below two decades) lines are missing scores perfectly
    strong = inten >= inten.max() * 1e-2
    g = _spectrum(pos[strong], inten[strong])
    r = line_scores(g, t, (pos, inten), GRID)
    assert r["recall"] == 1.0 and r["precision"] == 1.0
    # a generated line matching a real line half a decade below the threshold is no false line
    weak = np.nonzero((inten < inten.max() * 1e-2) & (inten > inten.max() * 10**-2.5))[0]
    if weak.size:
        g2 = g + _spectrum(pos[weak[:1]], [inten.max() * 0.02])
        assert line_scores(g2, t, (pos, inten), GRID)["precision"] == 1.0


def test_aggregate_and_errors(lines):
    pos, inten = lines
    t = _spectrum(pos, inten)
    a = aggregate_scores([line_scores(t, t, (pos, inten), GRID)] * 2)
    assert a["recall"] == 1.0 and a["n_lines"] > 0
    with pytest.raises(DataError, match="points"):
        line_scores(t[:10], t, (pos, inten), GRID)
    with pytest.raises(DataError, match="no lines"):
        line_scores(t, np.zeros_like(t), (pos, inten), GRID)

"""benchmarks/likelihood.py's moved grid (``--infer-fit gaussian-move``), on the exact GRF
likelihood: a 3 × 3 grid whose posterior peak lies outside it is moved to its best node until
the Gaussian fit recovers the exact posterior moments."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import likelihood as lk  # noqa: E402

from rho_core.data.random_fields import gaussian_field, grf_log_prob  # noqa: E402


def _exact_ll(field: np.ndarray, grid: lk.WhitenedGrid) -> np.ndarray:
    a, n = grid.flat()
    return grf_log_prob(np.broadcast_to(field, (grid.size, *field.shape)), a, n, dims=2)


def test_moved_grid_centres_on_the_peak_and_recovers_the_exact_moments() -> None:
    field = gaussian_field(64, 2, 1.0, -1.75, np.random.default_rng(3))
    est = lk.spectrum_fit(field)
    exact = lk.exact_moments(field, est)
    centred = lk.WhitenedGrid(est, 3, 2.0)
    assert np.allclose(centred.offset, 0.0)
    far = lk.WhitenedGrid(est, 3, 2.0, offset=(6.0, -6.0))  # the peak is ≈ 8σ away
    # the offset moves the centre by chol @ offset in (log A, n)
    assert np.allclose(far.centre - centred.centre, far.chol @ np.array([6.0, -6.0]))
    cur, moves = far, 0
    while True:
        ll = _exact_ll(field, cur)
        peak = lk.peak_offset(cur, ll)
        if np.allclose(peak, cur.offset):  # the best node is the centre: done
            break
        # the best node is on the side of the true peak: each move goes 2 (one node) towards it
        assert np.all(np.abs(peak) <= np.abs(cur.offset) + 1e-12)
        cur, moves = lk.WhitenedGrid(est, 3, 2.0, offset=peak), moves + 1
        assert moves <= 6
    assert moves >= 3
    fit = lk.gaussian_fit_moments(cur, _exact_ll(field, cur))
    for name in lk.WhitenedGrid.names:
        m, s = fit[name]
        em, es = exact[name]
        assert abs(m - em) < 0.1 * es and abs(s / es - 1) < 0.05, (name, fit[name], exact[name])

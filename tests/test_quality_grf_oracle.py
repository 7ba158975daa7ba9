"""benchmarks/quality_grf.py --oracle: a perfect density estimator (fresh true fields, new seeds)
scored exactly like a network, on real generated stores (tiny: 16², few realisations)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import quality_grf as q  # noqa: E402

from rho_core.data.random_fields import spectrum_grid  # noqa: E402
from rho_core.sample_variance import band_mask, band_power_ratio  # noqa: E402


def test_oracle_draws_are_true_fresh_and_seeded() -> None:
    a = q.oracle_draws((1, 16, 16), 1.0, -1.5, 40, seed=0, i=3, lognormal=False)
    b = q.oracle_draws((1, 16, 16), 1.0, -1.5, 40, seed=0, i=3, lognormal=False)
    c = q.oracle_draws((1, 16, 16), 1.0, -1.5, 40, seed=1, i=3, lognormal=False)
    assert a.shape == (40, 1, 16, 16) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.allclose(a, c)
    # the spectrum of the draws is the analytic one within its closed-form sampling σ
    r, sigma = band_power_ratio(a, spectrum_grid(16, 2, 1.0, -1.5), band_mask(16, 2, 1, 8))
    assert abs(r - 1) < 4 * sigma


def test_oracle_run_scores_every_condition_like_a_model(tmp_path) -> None:
    out = tmp_path / "o.json"
    args = ["--data-dir", str(tmp_path / "grf"), "--size", "16", "--k-train", "8", "--k-truth",
            "24", "--n", "8", "--max-conditions", "2", "--oracle", "--json", str(out)]  # fmt: skip
    assert q.main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["meta"]["oracle"] is True
    rows = doc["per_condition"]
    assert [r["split"] for r in rows] == ["train", "train", "heldout", "heldout"]
    for r in rows:
        assert 0.5 < r["std_ratio"] < 1.5 and np.isfinite(r["pdf_w1_ratio"])
    with pytest.raises(SystemExit):
        q.main([*args[:-2], "--checkpoint", "x.pt"])

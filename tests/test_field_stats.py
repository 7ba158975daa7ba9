"""Distribution scores (rho_core/field_stats.py): truth passes, wrong distributions are caught."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rho_core import field_stats as fs
from rho_core.data import random_fields as rf
from rho_core.errors import ConfigError

N, D, A, IDX = 32, 2, 1.5, -2.0


def _draw(k: int, seed: int, amp: float = A, idx: float = IDX, lognormal: bool = False):
    rng = np.random.default_rng(seed)
    return np.stack(
        [rf.gaussian_field(N, D, amp, idx, rng, lognormal=lognormal) for _ in range(k)]
    )[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def sets():
    return {"gen": _draw(64, 1), "truth": _draw(128, 2), "train": _draw(64, 3)}


def test_shell_band_is_the_exact_gaussian_cosmic_variance():
    # per-field shell power of many true fields: its std matches rel_sigma_1 · P_true
    x = _draw(2000, 9)
    per, shells = fs.shell_power(x)
    p_true, rel1 = fs.true_shell_power(N, D, A, IDX)
    np.testing.assert_allclose(per.mean(0) / p_true, 1, atol=5 * rel1.max() / math.sqrt(2000))
    sd = per.std(0, ddof=1) / p_true
    # std of a std estimate from 2000 draws: ~ sd·√(κ/2000) with κ ≤ ~ 3 for these tails
    np.testing.assert_allclose(sd, rel1, rtol=0.15)
    assert shells[0] == 1 and shells[-1] == N // 2
    # shell 1 in 2-D: |κ| = 1 (4 modes, P = A) and √2 (4 modes, A/2): √(2·5A²)/(6A)
    assert rel1[0] == pytest.approx(math.sqrt(10) / 6)
    assert p_true[0] == pytest.approx(A * 6 / 8)


def test_true_vs_true_passes_everything(sets):
    r = fs.random_field_scores(sets["gen"], sets["truth"], sets["train"], A, IDX)
    assert r["all_pass"], r["passes"]
    assert r["pk_worst_sigma"] < 5 and r["pk_mean_abs_err"] < 0.05
    assert abs(np.mean(r["ratio"]) - 1) < 0.03
    assert r["pdf_w1_ratio"] < 2 and abs(r["pairwise_corr_mean"]) < 0.02
    assert len(r["ratio"]) == len(r["sigma"]) == N // 2


def test_wrong_amplitude_is_caught_by_many_sigma(sets):
    wrong = sets["gen"] * math.sqrt(1.2)  # 20 % too much power
    r = fs.random_field_scores(wrong, sets["truth"], sets["train"], A, IDX)
    assert not r["passes"]["pk_mean_abs_err"] and not r["passes"]["pk_worst_sigma"]
    assert r["pk_worst_sigma"] > 8
    assert r["pk_mean_abs_err"] == pytest.approx(0.2, abs=0.05)
    # a wrong spectral index: tilt shows up in the worst shell
    tilted = _draw(64, 5, idx=IDX - 0.2)
    assert fs.random_field_scores(tilted, sets["truth"], None, A, IDX)["pk_worst_sigma"] > 8


def test_copies_of_training_fields_are_caught(sets):
    copies = sets["train"][:32] + 1e-4 * _draw(32, 7)
    r = fs.random_field_scores(copies, sets["truth"], sets["train"], A, IDX)
    assert not r["passes"]["memorisation"]
    assert r["n_closer_than_true_min"] == 32 and r["n_copies"] == 32
    assert r["nn_min"] < 0.01 * r["nn_min_true"]
    fresh = fs.random_field_scores(sets["gen"], sets["truth"], sets["train"], A, IDX)
    assert fresh["passes"]["memorisation"]


def test_identical_samples_are_caught_by_pairwise_correlation(sets):
    same = np.repeat(sets["gen"][:1], 16, axis=0)
    r = fs.random_field_scores(same, sets["truth"], None, A, IDX)
    assert r["pairwise_corr_mean"] == pytest.approx(1.0)
    assert not r["passes"]["pairwise_corr_mean"]
    mean, mean_abs = fs.pairwise_correlation(sets["gen"])
    assert abs(mean) < 0.02 and 0 < mean_abs < 0.3


def test_pdf_w1_and_moments_catch_a_non_gaussian_field(sets):
    sg2 = rf.field_variance(N, D, A, IDX)
    # a skewed field with the same variance: the W1 ratio and the skewness flag it
    g = sets["gen"].astype(np.float64)
    skewed = np.expm1(g) - np.expm1(g).mean()
    skewed *= g.std() / skewed.std()
    r = fs.random_field_scores(skewed, sets["truth"], None, A, IDX)
    assert r["pdf_w1_ratio"] > 2 and r["skewness"] > 0.3 > abs(r["skewness_true"])
    # closed-form log-normal moments
    s, k = fs.lognormal_moments(0.25)
    w = math.exp(0.25)
    assert s == pytest.approx((w + 2) * math.sqrt(w - 1))
    assert k == pytest.approx(w**4 + 2 * w**3 + 3 * w**2 - 6)
    assert sg2 > 0


def test_lognormal_truth_passes_with_empirical_band():
    amp = 20.0
    gen = _draw(64, 11, amp=amp, lognormal=True)
    truth = _draw(128, 12, amp=amp, lognormal=True)
    r = fs.random_field_scores(gen, truth, None, amp, IDX, lognormal=True)
    assert r["pk_worst_sigma"] < 5 and r["pdf_w1_ratio"] < 2
    assert r["skewness_lognormal"] > 0.5
    assert abs(r["skewness"] - r["skewness_true"]) < 0.5 * r["skewness_lognormal"]
    gauss = _draw(64, 13, amp=amp)
    assert fs.random_field_scores(gauss, truth, None, amp, IDX, lognormal=True)["pdf_w1_ratio"] > 2
    with pytest.raises(ConfigError):
        fs.power_ratio_scores(gen, amp, IDX, lognormal=True)


def test_nearest_distances_and_summary(sets):
    d = fs.nearest_distances(sets["train"][:3], sets["train"])
    np.testing.assert_allclose(d, 0, atol=1e-3)
    r = fs.random_field_scores(sets["gen"], sets["truth"], sets["train"], A, IDX)
    s = fs.summarize([r, r])
    assert s["n_conditions"] == 2 and s["mean_pk_mean_abs_err"] == pytest.approx(
        r["pk_mean_abs_err"]
    )
    with pytest.raises(ConfigError):
        fs.random_field_scores(sets["gen"][:1], sets["truth"], None, A, IDX)


def test_pooled_scores_one_draw_per_condition():
    conds = [(a, n) for a in (0.5, 1.0, 2.0) for n in (-1.0, -1.5, -2.0, -2.5)] * 3
    amps = np.array([c[0] for c in conds])
    idxs = np.array([c[1] for c in conds])
    rng = np.random.default_rng(21)
    good = np.stack([rf.gaussian_field(N, D, a, n, rng) for a, n in conds])
    r = fs.pooled_scores(good, amps, idxs)
    assert r["pk_worst_sigma"] < 5 and r["pdf_w1_ratio"] < 3 and abs(r["pairwise_corr_mean"]) < 0.05
    assert r["pk_floor_worst_sigma"] < 5
    # every field 25 % too strong: caught by many σ, pooled over 36 conditions
    bad = fs.pooled_scores(good * math.sqrt(1.25), amps, idxs)
    assert bad["pk_worst_sigma"] > 5 and bad["pk_mean_abs_err"] == pytest.approx(0.25, abs=0.08)
    # fields swapped between amplitudes (condition ignored): the per-condition ratio is off
    swapped = fs.pooled_scores(good[::-1].copy(), amps, idxs)
    assert swapped["pk_worst_sigma"] > 5


def test_evaluation_scores_hook_with_a_real_store(tmp_path):
    path = rf.generate_random_field_store(
        tmp_path / "s", N, D, [1.0, 2.0], [-1.0, -2.0], realizations=6, seed=4
    )
    from rho_core.data.store import open_store

    s = open_store(path)
    first = [0, 6, 12, 18]
    params = s.params[first]
    train = np.asarray(s.fields[:])
    draws = {
        "param_names": ["amplitude", "spectral_index"],
        "params": params,
        "store": str(path),
        "generated": train[first],  # copies of stored fields: memorisation must flag them
    }
    out = fs.evaluation_scores(draws)
    assert out["grf_n_copies"] == 4 and out["grf_nn_ratio_min"] < 1e-6
    assert out["grf_lognormal"] is False and len(out["grf_ratio"]) == N // 2
    rng = np.random.default_rng(5)
    draws["generated"] = np.stack([rf.gaussian_field(N, D, a, n, rng) for a, n in params])[:, None]
    out = fs.evaluation_scores(draws)
    assert out["grf_n_copies"] == 0 and out["grf_pk_worst_sigma"] < 5

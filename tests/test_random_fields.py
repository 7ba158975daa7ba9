"""Gaussian / log-normal random fields (rho_core/data/random_fields.py) against closed forms."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from rho_core.data import random_fields as rf
from rho_core.data.store import open_store
from rho_core.errors import ConfigError, StoreError


def _shell_power(fields: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per integer shell s = round(|κ|): mean |F|²/N^D over fields and modes, mode count."""
    n = fields.shape[-1]
    f = np.fft.fftn(fields, axes=tuple(range(1, dims + 1)))
    p = (np.abs(f) ** 2).reshape(len(fields), -1) / n**dims
    s = np.rint(rf.kappa_norm(n, dims)).astype(int).reshape(-1)
    return p, s, np.bincount(s)


@pytest.mark.parametrize("dims,size", [(1, 64), (2, 32), (3, 12)])
def test_spectrum_matches_closed_form_per_mode_within_error(dims, size):
    amp, idx, k = 2.5, -2.0, 400
    rng = np.random.default_rng(0)
    fields = np.stack([rf.gaussian_field(size, dims, amp, idx, rng) for _ in range(k)])
    p, _, _ = _shell_power(fields, dims)
    truth = rf.spectrum_grid(size, dims, amp, idx).reshape(-1)
    # |F[κ]|²/N^D / P is exponential(1) (chi² with 2 dof / 2) or chi²_1 (self-conjugate): the
    # ratio averaged over k realisations and all modes of a shell has std ≤ sqrt(2/(k·modes))
    ratio = p[:, truth > 0].mean(0) / truth[truth > 0]
    kk = rf.kappa_norm(size, dims).reshape(-1)[truth > 0]
    shells = np.rint(kk).astype(int)
    for s in np.unique(shells):
        sel = shells == s
        err = math.sqrt(2.0 / (k * sel.sum())) * math.sqrt(2)  # pairs ±κ are not independent
        assert abs(ratio[sel].mean() - 1) < 5 * err, (s, ratio[sel].mean(), err)
    # the one-point variance Σ P / N^D (F[0] = 0, so each field's variance about 0 is unbiased)
    v = (fields**2).mean(axis=tuple(range(1, dims + 1)))
    expect = rf.field_variance(size, dims, amp, idx)
    assert abs(v.mean() - expect) < 5 * v.std() / math.sqrt(k)
    assert p.shape[1] == size**dims


def test_zero_mode_exactly_zero_and_real():
    rng = np.random.default_rng(1)
    for dims, size in [(1, 9), (2, 8), (3, 6)]:
        x = rf.gaussian_field(size, dims, 1.0, -1.5, rng)
        assert x.dtype == np.float64 and x.shape == (size,) * dims
        assert abs(np.fft.fftn(x).flat[0]) < 1e-12 * np.abs(x).sum()
        # realness: the construction's imaginary part is round-off only
        white = np.random.default_rng(2).standard_normal((size,) * dims)
        full = np.fft.ifftn(np.fft.fftn(white) * np.sqrt(rf.spectrum_grid(size, dims, 1, -1.5)))
        assert np.abs(full.imag).max() < 1e-12 * np.abs(full.real).max()


def test_power_spectrum_and_variance_closed_form():
    assert rf.power_spectrum(2.0, 3.0, -2.0) == pytest.approx(0.75)
    assert rf.power_spectrum(0.0, 3.0, -2.0) == 0.0
    k = rf.kappa_norm(4, 1)
    np.testing.assert_allclose(k, [0, 1, 2, 1])
    # 1-D N = 4, A = 1, n = −1: Σ P = 1 + 1/2 + 1 → variance 2.5 / 4
    assert rf.field_variance(4, 1, 1.0, -1.0) == pytest.approx(2.5 / 4)


@pytest.mark.parametrize("dims,size", [(1, 8), (1, 7), (2, 6), (2, 5)])
def test_log_prob_matches_dense_multivariate_normal(dims, size):
    amp, idx = 1.7, -1.3
    cov = rf.grf_covariance(size, dims, amp, idx)
    rng = np.random.default_rng(3)
    x = np.stack([rf.gaussian_field(size, dims, amp, idx, rng) for _ in range(4)])
    ours = rf.grf_log_prob(x[:, None], amp, idx)
    # scipy: pseudo-inverse and pseudo-determinant on the support (rank N^D − 1)
    ref = stats.multivariate_normal(np.zeros(len(cov)), cov, allow_singular=True).logpdf(
        x.reshape(4, -1)
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-8)
    # independent brute force: orthonormal basis of the zero-mean subspace, non-singular MVN
    m = size**dims
    q, _ = np.linalg.qr(np.eye(m) - 1.0 / m)
    basis = q[:, : m - 1]  # spans the complement of the constant vector
    sub = basis.T @ cov @ basis
    ref2 = stats.multivariate_normal(np.zeros(m - 1), sub).logpdf(x.reshape(4, -1) @ basis)
    np.testing.assert_allclose(ours, ref2, rtol=1e-9, atol=1e-8)
    # the (B, N, …) form with dims=, per-field parameters, and the ignored mean
    np.testing.assert_allclose(rf.grf_log_prob(x + 5.0, [amp] * 4, idx, dims=dims), ours)
    other = rf.grf_log_prob(x[:, None], [amp, 2 * amp, amp, amp], idx)
    assert other[1] != pytest.approx(ours[1])
    assert other[0] == pytest.approx(ours[0])


def test_log_prob_cov_eigen_structure():
    """The covariance has eigenvalue P(κ) per mode, 0 on the constant vector."""
    cov = rf.grf_covariance(6, 2, 1.0, -2.0)
    ev = np.sort(np.linalg.eigvalsh(cov))
    p = np.sort(rf.spectrum_grid(6, 2, 1.0, -2.0).reshape(-1))
    np.testing.assert_allclose(ev, p, atol=1e-12)


def test_log_prob_rejects_bad_input():
    with pytest.raises(ConfigError):
        rf.grf_log_prob(np.zeros((2, 1, 4, 5)), 1.0, -1.0)
    with pytest.raises(ConfigError):
        rf.grf_log_prob(np.zeros((2, 1, 4, 4)), 0.0, -1.0)
    with pytest.raises(ConfigError):
        rf.grf_log_prob(np.zeros((2, 1, 4, 4)), [1.0, 1.0, 1.0], -1.0)


def test_lognormal_mean_variance_and_spectrum():
    size, dims, amp, idx, k = 32, 2, 40.0, -2.0, 300
    rng = np.random.default_rng(4)
    x = np.stack([rf.gaussian_field(size, dims, amp, idx, rng, lognormal=True) for _ in range(k)])
    sg2 = rf.field_variance(size, dims, amp, idx)
    assert 0.2 < sg2 < 3  # a clearly non-Gaussian field
    var_true = math.expm1(sg2)
    assert x.min() > -1  # δ = exp(…) − 1 > −1
    # mean of each realisation has variance P_δ[0]/N^D (exact log-normal spectrum at κ = 0)
    p_ln = rf.lognormal_power_spectrum(size, dims, amp, idx)
    se_mean = math.sqrt(p_ln.flat[0] / size**dims / k)
    assert abs(x.mean()) < 5 * se_mean
    # one-point variance about the known mean 0
    v = (x**2).mean(axis=(1, 2))
    assert v.mean() == pytest.approx(var_true, abs=5 * v.std() / math.sqrt(k))
    # skewness of a log-normal: (e^{σ²} + 2) √(e^{σ²} − 1) > 0
    assert stats.skew(x.reshape(-1)) > 0.5
    # the exact spectrum: Σ P_δ / N^D is the variance; spectrum of the samples matches per shell
    assert p_ln.sum() / size**dims == pytest.approx(var_true, rel=1e-10)
    p, s, _ = _shell_power(x, dims)
    est, tru = np.bincount(s, p.mean(0)), np.bincount(s, p_ln.reshape(-1))
    r = est[1:17] / tru[1:17]
    assert np.all(np.abs(r - 1) < 0.25), r


def test_store_layout_determinism_and_workers(tmp_path):
    kw = dict(size=8, dims=2, amplitudes=[1.0, 2.0], spectral_indices=[-1.0, -2.0, -3.0])
    a = rf.generate_random_field_store(tmp_path / "a", realizations=3, seed=7, **kw)
    b = rf.generate_random_field_store(tmp_path / "b", realizations=3, seed=7, **kw)
    c = rf.generate_random_field_store(tmp_path / "c", realizations=3, seed=8, **kw)
    sa, sb, sc = open_store(a), open_store(b), open_store(c)
    assert sa.kind == "gaussian_random_field" and sa.spatial_dims == 2
    assert sa.param_names == ["amplitude", "spectral_index"]
    assert sa.field_shape == (1, 8, 8) and sa.n == 18
    fa = np.asarray(sa.fields[:])
    assert fa.dtype == np.float32 and sa.params.dtype == np.float64
    np.testing.assert_array_equal(fa, np.asarray(sb.fields[:]))
    assert not np.allclose(fa, np.asarray(sc.fields[:]))
    # order: amplitude outer, spectral index, realisation inner
    np.testing.assert_array_equal(sa.params[:3], [[1.0, -1.0]] * 3)
    np.testing.assert_array_equal(sa.params[3], [1.0, -2.0])
    np.testing.assert_array_equal(sa.params[9], [2.0, -1.0])
    # each row is the documented realisation of its seed
    x = rf.gaussian_field(8, 2, 2.0, -3.0, rf.realization_rng(7, 17))
    np.testing.assert_array_equal(fa[17, 0], x.astype(np.float32))
    # realisations differ within a condition
    assert not np.allclose(fa[0], fa[1])
    with pytest.raises(StoreError):
        rf.generate_random_field_store(tmp_path / "a", realizations=3, seed=7, **kw)


@pytest.mark.slow
def test_dask_workers_give_the_same_store(tmp_path):
    kw = dict(size=8, dims=2, amplitudes=[1.0], spectral_indices=[-1.0, -2.0], realizations=4)
    a = rf.generate_random_field_store(tmp_path / "a", seed=3, **kw)
    b = rf.generate_random_field_store(tmp_path / "b", seed=3, workers=2, **kw)
    np.testing.assert_array_equal(open_store(a).fields[:], open_store(b).fields[:])


def test_task_blocks_do_not_change_rows(tmp_path, monkeypatch):
    kw = dict(size=8, dims=1, amplitudes=[1.0], spectral_indices=[-1.0, -2.0], realizations=5)
    a = rf.generate_random_field_store(tmp_path / "a", seed=3, **kw)
    monkeypatch.setattr(rf, "TASK_BYTES", 64)  # 2 realisations per task
    b = rf.generate_random_field_store(tmp_path / "b", seed=3, **kw)
    np.testing.assert_array_equal(open_store(a).fields[:], open_store(b).fields[:])


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(dims=4), "--dims"),
        (dict(size=2), "--size"),
        (dict(size=4096, dims=3), "limit"),
        (dict(amplitudes=[-1.0]), "--amplitude"),
        (dict(amplitudes=[]), "--amplitude"),
        (dict(spectral_indices=[float("nan")]), "--spectral-index"),
        (dict(realizations=0), "--realizations"),
        (dict(workers=-1), "--workers"),
    ],
)
def test_argument_errors_before_any_work(tmp_path, kw, msg):
    args = dict(size=8, dims=2, amplitudes=[1.0], spectral_indices=[-1.0], realizations=2)
    args.update(kw)
    with pytest.raises(ConfigError, match=msg):
        rf.generate_random_field_store(tmp_path / "s", **args)
    assert not (tmp_path / "s").exists()


def test_cli(tmp_path):
    out = tmp_path / "grf"
    cmd = [sys.executable, "-m", "rho_cli.main", "generate", "gaussian-random-field"]
    args = ["--out", str(out), "--size", "16", "--dims", "2", "--amplitude", "1,2"]
    args += ["--spectral-index", "-1,-2.5", "--realizations", "2", "--seed", "5", "--lognormal"]
    r = subprocess.run(cmd + args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = open_store(out)
    assert s.n == 8 and s.provenance["lognormal"] is True
    np.testing.assert_array_equal(np.unique(s.params[:, 1]), [-2.5, -1.0])
    assert float(np.asarray(s.fields[:]).min()) > -1
    r = subprocess.run(cmd + args, capture_output=True, text=True)
    assert r.returncode != 0 and "already exists" in r.stderr and "--overwrite" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    bad = args[:]
    bad[bad.index("--size") + 1] = "3"
    r = subprocess.run(cmd + [*bad[:1], str(tmp_path / "x"), *bad[2:]], capture_output=True)
    assert r.returncode != 0 and b"--size" in r.stderr


def test_cli_overwrite(tmp_path):
    out = tmp_path / "grf"
    cmd = [sys.executable, "-m", "rho_cli.main", "generate", "gaussian-random-field"]
    args = ["--out", str(out), "--size", "8", "--dims", "1", "--amplitude", "1"]
    args += ["--spectral-index=-2", "--realizations", "2"]
    assert subprocess.run(cmd + args, capture_output=True).returncode == 0
    r = subprocess.run(cmd + args + ["--overwrite", "--seed", "9"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert open_store(out).provenance["seed"] == 9 and open_store(out).n == 2


def test_append_adds_independent_realisations_and_records_them(tmp_path, caplog):
    """``mode="a"``: the appended rows are exactly the store the same arguments make on their own
    (an independent reader of the rows), the old rows are untouched, the append is recorded, and
    a repeated seed / another size, dims or lognormal is refused without writing."""
    from rho_core.data.normalization import fit_normalization
    from rho_core.data.store import read_store_attrs

    out = tmp_path / "mixed"
    rf.generate_random_field_store(out, 8, 2, [1.0, 2.0], [-1.0, -2.0], 3, seed=1)
    before = np.asarray(open_store(out).fields[:])
    fit_normalization(out, "standard", write=True)
    with caplog.at_level("WARNING", logger="rho_core.data.random_fields"):
        rf.generate_random_field_store(out, 8, 2, [1.0, 1.5], [-1.5, -2.0], 2, seed=7, mode="a")
    assert "rho normalize" in caplog.text  # the old normalization does not cover the new rows
    alone = tmp_path / "alone"
    rf.generate_random_field_store(alone, 8, 2, [1.0, 1.5], [-1.5, -2.0], 2, seed=7)
    s, a = open_store(out), open_store(alone)
    assert s.n == 12 + 8
    np.testing.assert_array_equal(np.asarray(s.fields[:12]), before)
    np.testing.assert_array_equal(np.asarray(s.fields[12:]), np.asarray(a.fields[:]))
    np.testing.assert_array_equal(np.asarray(s.params[12:]), np.asarray(a.params[:]))
    # (1, −2) is in both grids: 3 + 2 realisations, all different fields
    sel = np.all(np.asarray(s.params[:]) == [1.0, -2.0], axis=1)
    both = np.asarray(s.fields[:])[sel].reshape(int(sel.sum()), -1)
    assert len(both) == 5 and len(np.unique(both, axis=0)) == 5
    (rec,) = read_store_attrs(out)["grf_appends"]
    assert rec["seed"] == 7 and rec["first_row"] == 12 and rec["rows"] == 8
    assert s.provenance["seed"] == 1  # the base provenance is kept
    # training warns that the normalisation predates the append, until it is refitted
    from rho_core.data.normalization import stale_normalization
    from rho_core.run import _warn_unnormalised

    assert "fitted on 12" in stale_normalization(s) and "rho normalize" in stale_normalization(s)
    caplog.clear()
    with caplog.at_level("WARNING", logger="rho_core.run"):
        _warn_unnormalised(out)
    assert "20 samples but its normalisation was fitted on 12" in caplog.text
    fit_normalization(out, "standard", write=True)
    assert stale_normalization(open_store(out)) is None
    for kw, msg in [
        (dict(seed=7), "seed 7"),
        (dict(seed=1), "seed 1"),
        (dict(seed=9, lognormal=True), "lognormal"),
        (dict(seed=9, size=16), "shape|size"),
    ]:
        args = dict(size=8, seed=0, lognormal=False) | kw
        with pytest.raises(StoreError, match=msg):
            rf.generate_random_field_store(
                out, args["size"], 2, [1.0], [-1.0], 2, seed=args["seed"],
                lognormal=args["lognormal"], mode="a",
            )  # fmt: skip
        assert open_store(out).n == 20
    with pytest.raises(ConfigError, match="mode"):
        rf.generate_random_field_store(tmp_path / "x", 8, 2, [1.0], [-1.0], 2, mode="r+")


def test_cli_append(tmp_path):
    out = tmp_path / "grf"
    cmd = [sys.executable, "-m", "rho_cli.main", "generate", "gaussian-random-field"]
    args = ["--out", str(out), "--size", "8", "--dims", "2", "--amplitude", "1"]
    args += ["--spectral-index=-2", "--realizations", "2"]
    assert subprocess.run(cmd + args + ["--seed", "3"], capture_output=True).returncode == 0
    r = subprocess.run(cmd + args + ["--seed", "4", "--append"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "wrote 2 volumes" in r.stdout and "4 in all; 2 were already there" in r.stdout
    r = subprocess.run(cmd + args + ["--seed", "4", "--append"], capture_output=True, text=True)
    assert r.returncode != 0 and "--seed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert open_store(out).n == 4
    r = subprocess.run(cmd + args + ["--append", "--overwrite"], capture_output=True, text=True)
    assert r.returncode != 0 and "not allowed with" in r.stderr

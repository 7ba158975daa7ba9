"""`rho likelihood` and `rho infer` end to end on a real (tiny, untrained) checkpoint and store."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from rho_cli.main import main
from rho_core.checkpoint import save_checkpoint
from rho_core.data.normalization import Normalizer
from rho_core.data.store import create_store

FAST = ["--rtol", "1e-2", "--atol", "1e-2", "--quiet"]
NORM = Normalizer("standard", mean=0.5, std=2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoint(tmp_path, conditioning: str = "continuous"):
    from rho_core.model import DiffusionModel, default_model_config

    torch.manual_seed(0)
    cfg = default_model_config(
        1, 1, ("a", "b"), (0.0, 0.0), (1.0, 1.0), conditioning=conditioning, cond_dim=8,
        base_channels=8, channel_mult=(1, 2), prediction="eps", timesteps=50,
        schedule_shift=0.0, attention_levels=(),
    )  # fmt: skip
    model = DiffusionModel(cfg)
    with torch.no_grad():  # a real (non-zero) function of x, t and the condition
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    state = {
        "model": model.state_dict(),
        "ema": None,
        "step": 7,
        "model_config": cfg.to_dict(),
        "train_config": {},
        "normalization": NORM.to_dict(),
        "param_names": ["a", "b"],
        "kind": "test",
        "spatial_dims": 1,
        "field_shape": [1, 8],
    }
    return save_checkpoint(state, tmp_path / f"ckpt-{conditioning}", 7)


def _store(tmp_path, n: int = 3, names=("a", "b")):
    path = tmp_path / "obs.zarr"
    rng = np.random.default_rng(0)
    fields = (0.5 + 2.0 * rng.standard_normal((n, 1, 8)) * 0.3).astype(np.float32)
    params = np.column_stack([np.linspace(0.2, 0.8, n), np.full(n, 0.5)])[:, : len(names)]
    with create_store(
        path, kind="test", spatial_dims=1, param_names=list(names), field_shape=(1, 8)
    ) as w:
        w.append(fields, params)
    return path, fields, params


def test_likelihood_json_matches_the_library(tmp_path, capsys) -> None:
    from rho_core.checkpoint import load_for_sampling
    from rho_core.likelihood import model_log_likelihood

    ckpt = _checkpoint(tmp_path)
    store, fields, params = _store(tmp_path)
    out = tmp_path / "ll.json"
    code = main(["likelihood", "--checkpoint", str(ckpt), "--data", str(store), "--out", str(out),
                 "--divergence", "exact", *FAST])  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    assert len(doc["samples"]) == 3 and doc["summary"]["n"] == 3
    assert doc["summary"]["nfe"] > 0 and doc["summary"]["seconds_per_field"] > 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mean_bits_per_dim"] == doc["summary"]["mean_bits_per_dim"]
    s0 = doc["samples"][0]
    assert s0["params"] == {"a": 0.2, "b": 0.5}
    d = 8
    assert math.isclose(s0["bits_per_dim"], -s0["log_prob"] / (d * math.log(2)), rel_tol=1e-12)
    # physical units: x = 0.5 + 2 y, so log p_x = log p_y − D log 2
    assert math.isclose(s0["physical_log_prob"], s0["log_prob"] - d * math.log(2.0), abs_tol=1e-9)
    # the same numbers as the library call
    loaded = load_for_sampling(ckpt)
    res = model_log_likelihood(
        loaded, fields, params, rtol=1e-2, atol=1e-2, divergence="exact", batch_size=8
    )
    got = np.array([s["log_prob"] for s in doc["samples"]])
    np.testing.assert_allclose(got, res.log_prob.numpy(), rtol=1e-10, atol=1e-10)
    # --params overrides a column for every sample and changes the answer; --indices selects
    code = main(["likelihood", "--checkpoint", str(ckpt), "--data", str(store), "--indices", "0",
                 "--params", '{"a": 0.9}', "--divergence", "exact", *FAST])  # fmt: skip
    assert code == 0
    other = json.loads(capsys.readouterr().out)
    assert len(other["samples"]) == 1
    assert other["samples"][0]["conditioned_on"] == {"a": 0.9, "b": 0.5}
    assert abs(other["samples"][0]["log_prob"] - s0["log_prob"]) > 1e-6


def test_likelihood_user_errors_are_one_line(tmp_path, capsys) -> None:
    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path, names=("a",))  # the model also needs b
    base = ["likelihood", "--checkpoint", str(ckpt), "--data", str(store), *FAST]
    for extra, word in (
        ([], "needs parameter 'b'"),
        (["--params", '{"c": 1}'], "not conditioned on"),
        (["--params", "{bad"], "not valid JSON"),
        (["--indices", "5"], "--indices"),
        (["--rtol", "0"], "--rtol"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert word in err and len(err.splitlines()) == 1, err


def test_infer_prints_posterior_and_writes_table_and_plot(tmp_path, capsys) -> None:
    from rho_core.inference import grid_posterior

    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path)
    out = tmp_path / "post"
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0:1:5", "--out", str(out), "--divergence", "hutchinson",
                 "--probes", "2", "--batch-size", "5", *FAST])  # fmt: skip
    assert code == 0
    cap = capsys.readouterr()
    line = cap.out.strip().splitlines()[0]
    assert (
        line.startswith("a: mean ") and "68% [" in line and "95% [" in line and "true 0.5" in line
    )
    assert "fixing b = 0.5" in cap.err
    rows = list(csv.DictReader(open(out / "posterior.csv")))
    assert [float(r["a"]) for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    ll = np.array([float(r["log_likelihood"]) for r in rows])
    summary = json.loads((out / "summary.json").read_text())
    post = grid_posterior(["a"], [np.linspace(0, 1, 5)], ll)
    assert math.isclose(summary["posterior"]["a"]["mean"], post.mean("a"), rel_tol=1e-9)
    assert math.isclose(summary["posterior"]["a"]["std"], post.std("a"), rel_tol=1e-9)
    dens = np.array([float(r["posterior"]) for r in rows])
    np.testing.assert_allclose(dens, post.density, rtol=1e-9)
    assert 0.0 <= summary["posterior"]["a"]["pit"] <= 1.0
    assert summary["fixed"] == {"b": 0.5} and summary["nfe"] > 0
    assert (out / "posterior.png").stat().st_size > 1000


def test_infer_zoom_regrids_around_the_first_posterior(tmp_path, capsys) -> None:
    """--zoom 1: the second pass's grid is mean ± 5 std of the first pass's posterior (clipped to
    the training range), its table and summary are the second pass's."""
    from rho_core.inference import grid_posterior

    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path)
    out = tmp_path / "zoom"
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0:1:5", "--zoom", "1", "--out", str(out), *FAST])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    first, second = summary["passes"]
    assert first["grid"]["a"] == [0.0, 1.0, 5]
    rows = list(csv.DictReader(open(out / "posterior.csv")))
    a = np.array([float(r["a"]) for r in rows])
    assert summary["grid"]["a"] == second["grid"]["a"] == [a[0], a[-1], 5]
    # reproduce the first pass from its own grid: the zoomed span follows from its moments
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0:1:5", "--out", str(tmp_path / "one"), *FAST])  # fmt: skip
    assert code == 0
    capsys.readouterr()
    one = [
        float(r["log_likelihood"]) for r in csv.DictReader(open(tmp_path / "one" / "posterior.csv"))
    ]
    post = grid_posterior(["a"], [np.linspace(0, 1, 5)], one)
    m, sd = post.mean("a"), post.std("a")
    lo, hi = max(m - max(5 * sd, 0.25), 0.0), min(m + max(5 * sd, 0.25), 1.0)
    np.testing.assert_allclose(a, np.linspace(lo, hi, 5), rtol=1e-9, atol=1e-12)
    ll = np.array([float(r["log_likelihood"]) for r in rows])
    assert math.isclose(summary["posterior"]["a"]["mean"],
                        grid_posterior(["a"], [a], ll).mean("a"), rel_tol=1e-9)  # fmt: skip


def test_infer_warns_when_the_grid_cannot_resolve_the_posterior(tmp_path, capsys) -> None:
    """Two nodes one unit apart: any piecewise-linear density on [0, 1] has std ≤ 1/2 < the
    spacing, so its moments are unreliable and the user is told so (with the numbers)."""
    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path)
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0:1:2", *FAST])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert (
        "warning: the posterior of a (std " in err and "narrower than the grid spacing (1)" in err
    )


def test_infer_refuses_hash_conditioned_models_and_bad_grids(tmp_path, capsys) -> None:
    store, _, _ = _store(tmp_path)
    ckpt = _checkpoint(tmp_path, conditioning="hash")
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store),
                 "--grid", "a=0:1:3", *FAST])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "hash-conditioned" in err and "cannot be asked about parameters it never saw" in err
    ok = _checkpoint(tmp_path)
    for grid, word in (("a=1:0:3", "LO < HI"), ("c=0:1:3", "not conditioned on ['c']")):
        code = main(["infer", "--checkpoint", str(ok), "--observed", str(store),
                     "--grid", grid, *FAST])  # fmt: skip
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert word in err and len(err.splitlines()) == 1, err


def test_infer_fit_gaussian_reports_the_fitted_gaussian(tmp_path, capsys) -> None:
    """--fit gaussian: the summary is the least-squares Gaussian of the grid's log-likelihood
    (recomputed here from posterior.csv), intervals mean ± z·std; or, where that log-likelihood
    is not concave, the grid posterior with a warning saying so."""
    from scipy.stats import norm

    from rho_core.errors import ConfigError
    from rho_core.inference import gaussian_posterior, grid_posterior

    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path)
    out = tmp_path / "fit"
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0:1:5", "--fit", "gaussian", "--out", str(out), *FAST])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader(open(out / "posterior.csv")))
    ll = np.array([float(r["log_likelihood"]) for r in rows])
    s = summary["posterior"]["a"]
    try:
        g = gaussian_posterior(["a"], [np.linspace(0, 1, 5)], ll)
    except ConfigError:
        assert summary["fit"] == "grid" and "Gaussian fit failed" in err
        assert s["mean"] == pytest.approx(grid_posterior(["a"], [np.linspace(0, 1, 5)], ll).mean(0))
    else:
        assert summary["fit"] == "gaussian"
        assert s["mean"] == pytest.approx(g.mean("a"), rel=1e-9)
        assert s["std"] == pytest.approx(g.std("a"), rel=1e-9)
        assert s["ci95"][1] == pytest.approx(g.mean("a") + norm.ppf(0.975) * g.std("a"), rel=1e-9)
        assert s["pit"] == pytest.approx(norm.cdf((0.5 - g.mean("a")) / g.std("a")), rel=1e-9)
        assert summary["gaussian_fit"]["covariance"][0][0] == pytest.approx(g.std("a") ** 2)
    assert (out / "posterior.png").stat().st_size > 1000
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store),
                 "--grid", "a=0:1:5", "--fit", "gaussian", "--zoom-width", "0", *FAST])  # fmt: skip
    assert code == 2 and "--zoom-width must be > 0" in capsys.readouterr().err


def test_infer_zoom_nodes_sets_the_zoomed_grid(tmp_path, capsys) -> None:
    """--zoom 1 --zoom-nodes 3 --zoom-width 2: the second pass has 3 nodes spanning at most
    mean ± 2 std of the first (at least ± one old cell), clipped to the training range [0, 1]."""
    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path)
    out = tmp_path / "zn"
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0:1:5", "--zoom", "1", "--zoom-nodes", "3", "--zoom-width", "2",
                 "--out", str(out), *FAST])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    lo, hi, count = summary["passes"][1]["grid"]["a"]
    assert count == 3 and len(list(csv.DictReader(open(out / "posterior.csv")))) == 3
    assert 0.0 <= lo < hi <= 1.0 and hi - lo >= 0.25 - 1e-12  # ≥ ± half an old cell each side
    capsys.readouterr()
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store),
                 "--grid", "a=0:1:5", "--zoom", "1", "--zoom-nodes", "1", *FAST])  # fmt: skip
    assert code == 2 and "--zoom-nodes must be 0" in capsys.readouterr().err


def test_infer_whiten_lays_the_zoom_along_the_posterior(tmp_path, capsys) -> None:
    """--zoom 1 --whiten: the second pass's nodes are centre + L u of the frame recorded in
    summary.json (u on ± --zoom-width), posterior.csv lists those nodes with the θ-density
    (u-density / |det L|), and the summary is that pass's Gaussian (intervals mean ± z·std)."""
    from scipy.stats import norm

    from rho_core.inference import grid_posterior

    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path)
    out = tmp_path / "wh"
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0:1:5", "--zoom", "1", "--whiten", "--zoom-width", "3",
                 "--out", str(out), *FAST])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    frame = summary["passes"][1]["whitened"]
    assert frame["u"] == [[-3.0, 3.0, 5]]
    rows = list(csv.DictReader(open(out / "posterior.csv")))
    a = np.array([float(r["a"]) for r in rows])
    np.testing.assert_allclose(a, frame["centre"][0] + frame["chol"][0][0] * np.linspace(-3, 3, 5))
    dens = np.array([float(r["posterior"]) for r in rows])
    ll = np.array([float(r["log_likelihood"]) for r in rows])
    u_post = grid_posterior(["a"], [np.linspace(-3, 3, 5)], ll)
    np.testing.assert_allclose(dens, u_post.density / frame["chol"][0][0], rtol=1e-9)
    s = summary["posterior"]["a"]
    assert s["ci68"][1] - s["mean"] == pytest.approx(norm.ppf(0.84) * s["std"], rel=1e-9)
    assert (out / "posterior.png").stat().st_size > 1000


def test_likelihood_control_variate_option(tmp_path, capsys) -> None:
    """--control-variate reaches the library (same numbers as the call with that reference,
    other numbers than plain probes) and is recorded; auto resolves by the store's kind."""
    from rho_core.checkpoint import load_for_sampling
    from rho_core.errors import ConfigError
    from rho_core.likelihood import default_control_variate, model_log_likelihood

    ckpt = _checkpoint(tmp_path)
    store, fields, params = _store(tmp_path)
    docs = {}
    for cv in ("spectral", "auto"):
        code = main(["likelihood", "--checkpoint", str(ckpt), "--data", str(store),
                     "--divergence", "hutchinson", "--control-variate", cv, *FAST])  # fmt: skip
        assert code == 0
        docs[cv] = json.loads(capsys.readouterr().out)
    # a store of kind "test" is not known to be stationary: auto stays plain Hutchinson
    assert docs["auto"]["settings"]["control_variate"] == "auto"
    assert docs["spectral"]["settings"]["control_variate"] == "spectral"
    loaded = load_for_sampling(ckpt)
    kw = dict(rtol=1e-2, atol=1e-2, divergence="hutchinson", batch_size=8)
    spec = model_log_likelihood(loaded, fields, params, control_variate="spectral", **kw)
    plain = model_log_likelihood(loaded, fields, params, **kw)
    assert math.isclose(docs["spectral"]["summary"]["mean_log_prob"], float(spec.log_prob.mean()),
                        rel_tol=1e-10)  # fmt: skip
    assert math.isclose(docs["auto"]["summary"]["mean_log_prob"], float(plain.log_prob.mean()),
                        rel_tol=1e-10)  # fmt: skip
    assert not math.isclose(float(spec.log_prob.mean()), float(plain.log_prob.mean()),
                            rel_tol=1e-9)  # fmt: skip
    assert default_control_variate("ode", "gaussian_random_field") == "powerlaw"
    assert default_control_variate("elbo", "gaussian_random_field") == "auto"
    assert default_control_variate("ode", "spherical_harmonics") == "auto"
    assert default_control_variate("ode", "gaussian_random_field", "none") == "none"
    # rho infer (differences across θ): the model's own head when it has one
    assert default_control_variate("ode", "x", has_head=True, differences=True) == "head"
    assert default_control_variate("ode", "gaussian_random_field", has_head=True) == "powerlaw"
    assert default_control_variate("elbo", "x", has_head=True, differences=True) == "auto"
    with pytest.raises(ConfigError, match="control variate must be one of"):
        default_control_variate("ode", "x", "bogus")


def test_infer_temperature_tempers_the_posterior_not_the_table(tmp_path, capsys) -> None:
    """--temperature 0.5: the posterior is that of 0.5 · log L (recomputed from the table,
    whose log-likelihoods are the untempered ones of a plain run), recorded in summary.json;
    a non-positive temperature is a one-line error."""
    from rho_core.inference import grid_posterior

    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path)
    runs = {}
    for tau in ("1", "0.5"):
        out = tmp_path / f"t{tau}"
        code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index",
                     "1", "--grid", "a=0:1:5", "--out", str(out), "--temperature", tau,
                     *FAST])  # fmt: skip
        assert code == 0
        rows = list(csv.DictReader(open(out / "posterior.csv")))
        runs[tau] = (
            np.array([float(r["log_likelihood"]) for r in rows]),
            json.loads((out / "summary.json").read_text()),
        )
    assert "likelihood tempered: p(x|θ)^0.5" in capsys.readouterr().err
    (ll1, s1), (ll5, s5) = runs["1"], runs["0.5"]
    np.testing.assert_allclose(ll5, ll1, rtol=1e-12)
    assert s1["temperature"] == 1.0 and s5["temperature"] == 0.5
    post = grid_posterior(["a"], [np.linspace(0, 1, 5)], 0.5 * ll1)
    assert math.isclose(s5["posterior"]["a"]["std"], post.std("a"), rel_tol=1e-9)
    assert math.isclose(s5["posterior"]["a"]["mean"], post.mean("a"), rel_tol=1e-9)
    assert s5["posterior"]["a"]["std"] != pytest.approx(s1["posterior"]["a"]["std"], rel=1e-6)
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store),
                 "--grid", "a=0:1:5", "--temperature", "0", *FAST])  # fmt: skip
    assert code == 2 and "--temperature must be a positive number" in capsys.readouterr().err


def test_infer_reports_posterior_mass_outside_the_training_range(tmp_path, capsys, monkeypatch):
    """summary.json records each parameter's posterior mass outside the model's training range
    (a ∈ [0, 1] here; Gaussian with the summary's mean and std), and above the threshold
    rho infer warns that the likelihood is extrapolated there (threshold lowered to 0 here,
    so the warning must appear whatever this untrained model's posterior is)."""
    from scipy.stats import norm

    import tasks.inference as ti

    ckpt = _checkpoint(tmp_path)
    store, _, _ = _store(tmp_path)
    out = tmp_path / "edge"
    monkeypatch.setattr(ti, "OUTSIDE_WARN", -1.0)
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0:0.5:5", "--out", str(out), *FAST])  # fmt: skip
    assert code == 0
    s = json.loads((out / "summary.json").read_text())["posterior"]["a"]
    expect = norm.cdf((0 - s["mean"]) / s["std"]) + norm.sf((1 - s["mean"]) / s["std"])
    assert s["outside_training_range"] == pytest.approx(expect, rel=1e-9)
    assert "of the posterior of a lies outside the training range [0, 1]" in (
        capsys.readouterr().err
    )

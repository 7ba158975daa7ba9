"""rho_core.elbo: the continuous-time variational bound against closed forms.

For an exact denoiser the bound is tight per sample (its expectation is −log p(x)), so the
Monte-Carlo estimate must scatter around the closed form within its reported standard error;
with the exact Gaussian as the control variate's reference the scatter vanishes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gaussian_cases import gaussian_case  # tests/gaussian_cases.py

from rho_core.data.random_fields import gaussian_field, grf_log_prob, spectrum_grid
from rho_core.errors import ConfigError
from rho_core.exact import FourierGaussianDenoiser
from rho_core.likelihood import log_likelihood
from rho_core.schedules import make_schedule

LN2 = math.log(2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _case(name: str, d: int = 64, b: int = 32, seed: int = 0):
    return gaussian_case(name, d, b, seed)


def _elbo(den, x, sch, seed=1, **kw):
    return log_likelihood(
        den, x, sch, generator=torch.Generator().manual_seed(seed), method="elbo", **kw
    )


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_elbo_exact_gaussian_with_exact_reference_is_the_closed_form(name: str) -> None:
    sch, den, mu, s, x = _case(name)
    x[0] = mu + 4.0 * s  # outlier
    den.calls = 0
    res = _elbo(den, x, sch, samples=64, control_variate=(mu, s * s), eval_batch=4096)
    ref = -den.log_prob(x) / (x.shape[1] * LN2)
    err = (res.bits_per_dim - ref).abs()
    assert float(err.mean()) <= 0.002 and float(err.max()) <= 0.002, err
    assert float(torch.corrcoef(torch.stack([res.bits_per_dim, ref]))[0, 1]) >= 0.99
    assert float(res.log_prob[0]) < float(res.log_prob[1:].min())
    assert res.method == "elbo" and res.nfe == 64 and res.steps == 64
    assert den.calls == 1  # all 64 draws × 32 samples in one call (eval_batch)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_elbo_without_control_variate_is_unbiased_within_its_standard_error(name: str) -> None:
    sch, den, _, _, x = _case(name)
    res = _elbo(den, x, sch, samples=256, control_variate="none", eval_batch=4096)
    err = res.log_prob - den.log_prob(x)  # nats
    z = err / res.log_prob_std
    # the reported standard error is the real scatter (not 10× off either way)
    assert 0.5 <= float(z.pow(2).mean().sqrt()) <= 2.0
    # and the mean over samples is unbiased
    assert abs(float(err.mean())) <= 4.0 * float(res.log_prob_std.pow(2).mean().sqrt()) / math.sqrt(
        x.shape[0]
    )


def test_elbo_imperfect_reference_stays_unbiased_and_shrinks_with_samples() -> None:
    sch, den, _, s, x = _case("cosine")
    ref = -den.log_prob(x) / (x.shape[1] * LN2)
    errs = []
    for k in (64, 1024):
        res = _elbo(
            den, x, sch, samples=k, control_variate=1.5 * s * s, antithetic=True, eval_batch=8192
        )
        e = res.bits_per_dim - ref
        errs.append(float(e.abs().mean()))
        assert abs(float(e.mean())) <= 4 * float(res.bits_per_dim_std.mean()) / math.sqrt(32)
    assert errs[1] < errs[0] / 2.5  # ~ 1/√K
    assert errs[1] <= 0.006


def test_elbo_gaussian_random_field_spectral_control_variate() -> None:
    """Exact Fourier denoiser of a 32² GRF: the default (spectral) control variate gives the
    exact density on the zero-mean subspace, with the ELBO's mean-mode constant
    −½ log(2π τ₀) + ¼."""
    size, amp, idx = 32, 1.0, -2.0
    sch = make_schedule("cosine", 1000, shift=-4.0)
    rng = np.random.default_rng(0)
    fields = np.stack([gaussian_field(size, 2, amp, idx, rng)[None] for _ in range(4)])
    power = spectrum_grid(size, 2, amp, idx)
    scale = float(np.sqrt(power.sum() / size**2))
    den = FourierGaussianDenoiser(sch, torch.as_tensor(power / scale**2))
    y = torch.as_tensor(fields / scale)
    res = _elbo(den, y, sch, samples=64, proposal="mixed")
    tau0 = math.exp(-float(sch.log_snr_table[0]))
    m = size * size
    ref = grf_log_prob(fields, amp, idx) + (m - 1) * math.log(scale)
    ref = ref - 0.5 * math.log(2 * math.pi * tau0) + 0.25
    err = (res.log_prob.numpy() - ref) / (m * LN2)
    assert float(np.abs(err).mean()) <= 0.005, err
    assert float(res.bits_per_dim_std.max()) <= 0.01
    z = (res.log_prob.numpy() - ref) / res.log_prob_std.numpy()
    assert float(np.abs(z).max()) <= 4.5
    # the default proposal (focused on the reference's transition band) is unbiased too
    foc = _elbo(den, y, sch, samples=64)
    z = (foc.log_prob.numpy() - ref) / foc.log_prob_std.numpy()
    assert float(np.abs(z).max()) <= 4.5


def test_elbo_common_random_numbers_and_cond_alignment() -> None:
    """cond rows follow their samples through the batched calls; with shared_noise every sample
    sees the same draws (identical inputs → identical estimates), and differences across a
    parameter are far less noisy than the values."""
    sch = make_schedule("cosine", 1000)
    d = 16

    def den(x, t, cond):  # N(0, v) per sample, v = cond[:, 0]
        abar = sch.alpha_bar_at(t).to(torch.float64)[:, None]
        v = cond[:, :1].to(torch.float64)
        return (torch.sqrt(1 - abar) * x.to(torch.float64) / (abar * v + 1 - abar)).to(x.dtype)

    x = torch.randn(1, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    v = torch.tensor([[0.5], [1.0], [2.0], [1.0]], dtype=torch.float64)
    xs = x.expand(4, -1)
    exact = -0.5 * ((xs**2) / v + torch.log(2 * math.pi * v)).sum(1)
    shared = _elbo(den, xs, sch, cond=v, samples=32, shared_probes=True, eval_batch=8)
    assert float(shared.log_prob[1]) == float(shared.log_prob[3])
    indep = _elbo(den, xs, sch, cond=v, samples=32, eval_batch=8)
    assert float(indep.log_prob[1]) != float(indep.log_prob[3])
    for r in (shared, indep):  # unbiased, per row (cond aligned with its sample)
        assert float(((r.log_prob - exact) / r.log_prob_std).abs().max()) <= 4.5
    d_shared = (shared.log_prob - shared.log_prob[1]) - (exact - exact[1])
    assert float(d_shared.abs().max()) < 0.5 * float(shared.log_prob_std.max())


def test_elbo_options_are_checked() -> None:
    sch, den, _, _, x = _case("linear", b=2)
    with pytest.raises(ConfigError, match="even"):
        _elbo(den, x, sch, samples=5)
    with pytest.raises(ConfigError, match="method"):
        log_likelihood(den, x, sch, method="vlb")
    with pytest.raises(ConfigError, match="proposal"):
        _elbo(den, x, sch, proposal="log")
    with pytest.raises(ConfigError, match="control_variate"):
        _elbo(den, x, sch, control_variate="fourier")
    with pytest.raises(ConfigError, match="spectral"):
        _elbo(den, x, sch, control_variate="spectral")


def test_cli_method_elbo_likelihood_and_infer(tmp_path, capsys) -> None:
    """`rho likelihood/infer --method elbo` on a tiny real checkpoint: the JSON equals the
    library's estimate with the same seed; infer shares the draws over the grid."""
    import json

    from test_cli_likelihood import _checkpoint, _store

    from rho_cli.main import main
    from rho_core.checkpoint import load_for_sampling
    from rho_core.likelihood import model_log_likelihood

    ckpt = _checkpoint(tmp_path)
    store, fields, params = _store(tmp_path)
    out = tmp_path / "ll.json"
    args = ["--method", "elbo", "--samples", "8", "--quiet"]
    code = main(["likelihood", "--checkpoint", str(ckpt), "--data", str(store), "--out", str(out),
                 *args])  # fmt: skip
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["summary"]["method"] == "elbo" and doc["settings"]["method"] == "elbo"
    loaded = load_for_sampling(ckpt, "cpu")
    lib = model_log_likelihood(loaded, fields, params, method="elbo", samples=8)
    got = [s["log_prob"] for s in doc["samples"]]
    assert np.allclose(got, lib.log_prob.numpy(), rtol=0, atol=1e-6)
    assert all(s["log_prob_std"] > 0 for s in doc["samples"])
    code = main(["infer", "--checkpoint", str(ckpt), "--observed", str(store), "--index", "1",
                 "--grid", "a=0.2:0.8:4", "--out", str(tmp_path / "inf"), *args])  # fmt: skip
    assert code == 0
    meta = json.loads((tmp_path / "inf" / "summary.json").read_text())
    assert meta["method"] == "elbo" and "mean" in meta["posterior"]["a"]
    assert "ELBO" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["likelihood", "--checkpoint", str(ckpt), "--data", str(store), "--method", "vlb"])

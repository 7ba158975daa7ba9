"""Training-step sampling: the uniform draw is unchanged, the logit-normal draw follows its
closed-form density, bad settings are clear errors, and the training loop uses the setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2, norm

import rho_core.training as training
from rho_core.config import TrainConfig
from rho_core.data.synthetic import GaussianBlobs
from rho_core.errors import ConfigError
from rho_core.model import default_model_config
from rho_core.timesteps import sample_timesteps, timestep_probabilities

pytestmark = pytest.mark.usefixtures("one_thread")


def test_uniform_is_the_old_randint_draw() -> None:
    # Runs trained before the option existed resume bit-for-bit: same values, same RNG state.
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    got = sample_timesteps(64, 1000, g1)
    want = torch.randint(0, 1000, (64,), generator=g2)
    assert torch.equal(got, want)
    assert torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2))
    np.testing.assert_allclose(timestep_probabilities(1000), 1e-3)


def test_logit_normal_probabilities_closed_form() -> None:
    T, loc, scale, mix = 1000, -0.75, 0.5, 0.5
    p = timestep_probabilities(T, "logit_normal", loc, scale, mix)
    assert p.shape == (T,) and abs(p.sum() - 1) < 1e-12 and (p >= 0).all()
    # Independent: P(t < k) = mix·k/T + (1−mix)·Φ((logit(k/T) − loc)/scale).
    for k in (100, 250, 320, 450, 900):
        u = k / T
        want = mix * u + (1 - mix) * norm.cdf((np.log(u / (1 - u)) - loc) / scale)
        assert abs(p[:k].sum() - want) < 1e-12
    # The band the option is for: t ∈ [200, 450) gets about twice the uniform share.
    assert 0.45 < p[200:450].sum() < 0.55
    pure = timestep_probabilities(T, "logit_normal", loc, scale, 0.0)
    assert abs(pure[: int(T / (1 + np.exp(-loc)))].sum() - 0.5) < 5e-3  # median at sigmoid(loc)


def test_logit_normal_draws_match_the_density() -> None:
    T, n = 50, 40_000
    args = ("logit_normal", 0.3, 0.8, 0.25)
    t = sample_timesteps(n, T, torch.Generator().manual_seed(0), *args)
    assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) <= T - 1
    p = timestep_probabilities(T, *args)
    counts = np.bincount(t.numpy(), minlength=T)
    stat = float((((counts - n * p) ** 2) / (n * p)).sum())
    assert stat < chi2.ppf(0.999, T - 1), stat  # a wrong density fails by orders of magnitude
    # Same generator seed, same draw.
    again = sample_timesteps(n, T, torch.Generator().manual_seed(0), *args)
    assert torch.equal(t, again)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"timestep_sampling": "lognormal"}, "timestep_sampling must be one of"),
        ({"timestep_sampling": "logit_normal", "timestep_scale": 0.0}, "timestep_scale"),
        ({"timestep_sampling": "logit_normal", "timestep_uniform_mix": 1.5}, "uniform_mix"),
        ({"timestep_loc": float("nan")}, "timestep_loc must be finite"),
    ],
)
def test_bad_settings_are_config_errors(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


def test_training_loop_draws_with_the_configured_density(tmp_path, monkeypatch) -> None:
    ds = GaussianBlobs(n=10, spatial_dims=1, size=16, seed=3)
    mc = default_model_config(
        1, 1, ds.param_names, (0.5, 0.2), (1.0, 0.5), cond_dim=16, base_channels=8,
        channel_mult=(1, 2), timesteps=100,
    )  # fmt: skip
    seen = []
    real = training.sample_timesteps

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append((a, out))
        return out

    monkeypatch.setattr(training, "sample_timesteps", spy)
    tc = TrainConfig(
        steps=3, batch_size=4, lr=1e-3, warmup_steps=1, log_every=100, checkpoint_every=0,
        timestep_sampling="logit_normal", timestep_loc=1.0, timestep_scale=0.3,
        timestep_uniform_mix=0.0,
    )  # fmt: skip
    res = training.train(mc, tc, ds, tmp_path)
    assert res.step == 3 and len(seen) == 3
    for a, t in seen:
        assert a[0] == 4 and a[1] == 100 and a[3:] == ("logit_normal", 1.0, 0.3, 0.0)
        # loc = 1, scale 0.3: every draw lies well above the middle (sigmoid(0.1) = 0.52).
        assert int(t.min()) >= 52

"""DiffusionModel: config round-trip, prediction conversions, loss at init, param checks, EMA."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rho_core.conditioning import params_to_tensor
from rho_core.ema import EMA, ema_beta
from rho_core.errors import ConfigError
from rho_core.model import DiffusionModel, ModelConfig, default_model_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(prediction: str = "eps", conditioning: str = "continuous") -> ModelConfig:
    return default_model_config(
        1,
        1,
        ("l", "m"),
        (0.0, -3.0),
        (3.0, 3.0),
        conditioning=conditioning,
        cond_dim=16,
        base_channels=8,
        channel_mult=(1, 2),
        prediction=prediction,
        timesteps=100,
    )


def _perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_config_round_trip_and_cond_dim() -> None:
    cfg = _cfg()
    assert cfg.unet.cond_dim == 16  # taken from the conditioner
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    none = _cfg(conditioning="none")
    assert none.unet.cond_dim == 0
    with pytest.raises(ConfigError, match="prediction"):
        ModelConfig(cfg.unet, cfg.conditioning, prediction="score")
    with pytest.raises(ConfigError, match="unknown UNet options"):
        default_model_config(1, 1, ("a",), (0.0,), (1.0,), widht=3)
    shifted = dataclasses.replace(cfg, schedule_shift=-3)
    assert ModelConfig.from_dict(shifted.to_dict()) == shifted
    assert DiffusionModel(shifted).schedule.shift == -3.0
    old = cfg.to_dict()
    old.pop("schedule_shift")  # checkpoints written before the option existed
    assert ModelConfig.from_dict(old).schedule_shift == 0.0
    for bad in (1.0, float("nan"), "x", True):
        with pytest.raises(ConfigError, match="schedule_shift"):
            dataclasses.replace(cfg, schedule_shift=bad)


def test_default_3d_is_patchified_and_full_resolution_is_reachable() -> None:
    from rho_core.unet import DEFAULT_3D, DEFAULT_3D_FULLRES

    cfg = default_model_config(3, 1, ("a",), (0.0,), (1.0,))
    assert cfg.unet.patch_size == 2
    assert dataclasses.replace(cfg.unet, cond_dim=0, out_channels=1) == DEFAULT_3D
    old = default_model_config(3, 1, ("a",), (0.0,), (1.0,), patch_size=1)
    assert dataclasses.replace(old.unet, cond_dim=0, out_channels=1) == DEFAULT_3D_FULLRES
    assert default_model_config(2, 1, ("a",), (0.0,), (1.0,)).unet.patch_size == 1
    # Checkpoint configs written before patch_size existed load as the full-resolution net.
    d = old.to_dict()
    del d["unet"]["patch_size"]
    assert ModelConfig.from_dict(d).unet.patch_size == 1


def test_loss_at_init_is_mean_noise_square() -> None:
    # Zero-initialised output ⇒ ε̂ = 0 ⇒ per-sample loss = mean(ε²) of the injected noise.
    torch.manual_seed(0)
    model = DiffusionModel(_cfg())
    x0 = torch.randn(4, 1, 8)
    params = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.5, -1.0], [3.0, 2.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    loss = model.loss(x0, params, generator=g, drop_prob=0.5)
    g2 = torch.Generator().manual_seed(7)
    torch.randint(0, 100, (4,), generator=g2)
    noise = torch.randn(x0.shape, generator=g2)
    assert loss.shape == (4,)
    assert torch.allclose(loss, noise.square().flatten(1).mean(1), rtol=1e-5)
    # Same generator seed → same loss.
    again = model.loss(x0, params, generator=torch.Generator().manual_seed(7), drop_prob=0.5)
    assert torch.equal(loss, again)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_denoiser_converts_output_to_eps(prediction: str) -> None:
    torch.manual_seed(1)
    model = DiffusionModel(_cfg(prediction))
    _perturb(model)
    x_t = torch.randn(3, 1, 8)
    t = torch.tensor([5, 50, 99])
    params = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    out = model(x_t, t, params).double()
    abar = model.schedule.alphas_cumprod[t].reshape(-1, 1, 1)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    expected = (x_t - a * out) / s if prediction == "x0" else s * x_t + a * out
    eps = model.denoiser(x_t, t, params)
    assert eps.dtype == torch.float32
    assert torch.allclose(eps.double(), expected, atol=1e-4)


def test_eps_denoiser_is_raw_output_and_scalar_t_broadcasts() -> None:
    torch.manual_seed(2)
    model = DiffusionModel(_cfg())
    _perturb(model)
    x_t = torch.randn(2, 1, 8)
    p = torch.tensor([1.0, 0.5], dtype=torch.float64)
    eps = model.denoiser(x_t, torch.tensor([9]), p)
    assert torch.allclose(eps, model(x_t, torch.tensor([9, 9]), p))


def test_null_condition_equals_dropped_condition() -> None:
    torch.manual_seed(3)
    model = DiffusionModel(_cfg())
    _perturb(model)
    p = torch.tensor([[1.0, 0.5], [2.0, -1.0]], dtype=torch.float64)
    dropped = model.embed(p, 2, drop=torch.tensor([True, True]))
    assert torch.allclose(dropped, model.embed(None, 2))
    assert not torch.allclose(model.embed(p, 2), dropped)


def test_param_count_and_names_are_checked() -> None:
    model = DiffusionModel(_cfg())
    x = torch.randn(2, 1, 8)
    with pytest.raises(ConfigError, match=r"2 parameters \['l', 'm'\]"):
        model(x, torch.tensor([1, 2]), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ConfigError, match="unknown parameter"):
        params_to_tensor([{"l": 1, "n": 2}], model.param_names)


def test_ema_beta_is_half_life_in_samples() -> None:
    assert ema_beta(100, 100) == pytest.approx(0.5)
    assert ema_beta(10, 100) ** 10 == pytest.approx(0.5)
    # Ramp-up: with ratio 0.5 after 40 samples the half-life is 20 samples.
    assert ema_beta(10, 1e6, seen=40, rampup_ratio=0.5) == pytest.approx(0.5 ** (10 / 20))


def test_ema_independent_of_batch_size() -> None:
    # Pulling towards a fixed target: 10 steps of 10 samples = 1 step of 100 samples (h = 100).
    src = torch.nn.Linear(3, 2)
    tgt = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in tgt.parameters():
            p.fill_(1.0)
    small, big = EMA(src, 100.0), EMA(src, 100.0)
    start = [p.clone() for p in src.parameters()]
    for _ in range(10):
        small.update(tgt, 10)
    big.update(tgt, 100)
    for p0, ps, pb in zip(start, small.module.parameters(), big.module.parameters(), strict=True):
        assert torch.allclose(ps, pb, atol=1e-6)
        assert torch.allclose(pb, 0.5 * p0 + 0.5, atol=1e-6)  # half-way after one half-life
    state = small.state_dict()
    fresh = EMA(src, 100.0)
    fresh.load_state_dict(state)
    assert fresh.seen == 100
    assert all(not p.requires_grad for p in fresh.module.parameters())

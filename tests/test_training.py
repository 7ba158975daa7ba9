"""The training loop: overfitting, exact resume, accumulation, LR schedule, bad data and configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rho_core.checkpoint import list_checkpoints
from rho_core.data.synthetic import GaussianBlobs
from rho_core.errors import ConfigError, DataError
from rho_core.model import default_model_config
from rho_core.training import TrainConfig, batch_positions, lr_at, resolve_train_config, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _model_cfg(ds: GaussianBlobs, **kw):
    return default_model_config(
        ds.spatial_dims,
        1,
        ds.param_names,
        (0.5, 0.2),
        (1.0, 0.5),
        cond_dim=16,
        base_channels=8,
        channel_mult=(1, 2),
        timesteps=100,
        **kw,
    )


def _tc(**kw) -> TrainConfig:
    base = dict(
        steps=8,
        batch_size=4,
        lr=2e-3,
        warmup_steps=2,
        log_every=100,
        checkpoint_every=0,
        ema_half_life_samples=50.0,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def blobs() -> GaussianBlobs:
    return GaussianBlobs(n=10, spatial_dims=1, size=16, seed=3)


def test_tiny_model_overfits(tmp_path) -> None:
    ds = GaussianBlobs(n=8, spatial_dims=1, size=16)
    mc = default_model_config(
        1, 1, ds.param_names, (0.5, 0.2), (1.0, 0.5), cond_dim=16, base_channels=16,
        channel_mult=(1, 2), timesteps=100, prediction="eps",
    )  # fmt: skip
    tc = TrainConfig(
        steps=80, batch_size=8, lr=3e-3, warmup_steps=5, log_every=1000, checkpoint_every=0,
        cond_drop_prob=0.0,
    )  # fmt: skip
    res = train(mc, tc, ds, tmp_path)
    losses = np.array(res.losses)
    assert len(losses) == 80 and np.isfinite(losses).all()
    # The ε-loss starts at ≈ 1 (zero-initialised output) and must fall by ≥ 4× in 80 steps.
    assert losses[:10].mean() > 0.6
    assert losses[:10].mean() / losses[-10:].mean() >= 4.0, (losses[:10], losses[-10:])


def test_resume_reproduces_the_uninterrupted_losses(tmp_path, blobs) -> None:
    mc = _model_cfg(blobs)
    tc = _tc(checkpoint_every=3, cond_drop_prob=0.3)
    full = train(mc, tc, blobs, tmp_path / "full")

    class Crash(Exception):
        pass

    def crash_at_5(step: int, metrics: dict) -> None:
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        train(mc, tc, blobs, tmp_path / "cut", callback=crash_at_5)
    # The crash happened after step 5, before its checkpoint: the newest checkpoint is step 3.
    assert [s for s, _ in list_checkpoints(tmp_path / "cut" / "checkpoints")] == [3]
    seen: list[int] = []
    resumed = train(mc, tc, blobs, tmp_path / "cut", callback=lambda s, m: seen.append(s))
    assert resumed.start_step == 3 and seen == [4, 5, 6, 7, 8]
    assert np.allclose(resumed.losses, full.losses[3:], rtol=0, atol=1e-6)
    # Same final weights too (model and EMA), from the final checkpoints.
    a = torch.load(full.checkpoint, weights_only=True)
    b = torch.load(resumed.checkpoint, weights_only=True)
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-6), k
    for k, v in a["ema"]["module"].items():
        assert torch.allclose(v, b["ema"]["module"][k], atol=1e-6), k
    # Nothing left to do: a third call returns at once.
    again = train(mc, tc, blobs, tmp_path / "cut")
    assert again.losses == [] and again.step == 8
    # Starting afresh over existing checkpoints is refused (it would mix two runs).
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(mc, tc, blobs, tmp_path / "cut", resume=False)
    # A different model in the same directory is refused too.
    with pytest.raises(ConfigError, match="different model configuration"):
        train(_model_cfg(blobs, prediction="v"), tc, blobs, tmp_path / "cut")


def test_grad_accumulation_matches_a_large_batch(tmp_path, blobs) -> None:
    mc = _model_cfg(blobs)
    big = train(mc, _tc(steps=3, batch_size=4), blobs, tmp_path / "big")
    acc = train(mc, _tc(steps=3, batch_size=2, grad_accum=2), blobs, tmp_path / "acc")
    assert big.global_batch == acc.global_batch == 4
    assert np.allclose(big.losses, acc.losses, atol=1e-5)
    cfg = json.loads((tmp_path / "acc" / "config.json").read_text())
    assert cfg["global_batch"] == 4 and cfg["train"]["grad_accum"] == 2
    assert cfg["model"] == mc.to_dict()


def test_nan_data_raises_data_error(tmp_path) -> None:
    ds = GaussianBlobs(n=6, spatial_dims=1, size=16)
    ds.fields[2, 0, 5] = np.nan
    with pytest.raises(DataError, match="NaN or inf"):
        train(_model_cfg(ds), _tc(steps=4, batch_size=6), ds, tmp_path)


def test_incompatible_data_is_a_config_error(tmp_path, blobs) -> None:
    two_d = GaussianBlobs(n=4, spatial_dims=2, size=8)
    with pytest.raises(ConfigError, match="1-D but the data is 2-D"):
        train(_model_cfg(blobs), _tc(), two_d, tmp_path)
    odd = GaussianBlobs(n=4, spatial_dims=1, size=15)
    with pytest.raises(ConfigError, match="cannot be halved"):
        train(_model_cfg(odd), _tc(), odd, tmp_path)


def test_lr_schedule_closed_form() -> None:
    cfg = _tc(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1)
    lrs = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_rank_batches_tile_the_global_batch() -> None:
    # 2 ranks × 2 micro-steps × 3 samples: the 4 slices tile [s·12, s·12 + 12) without overlap.
    starts = sorted(batch_positions(5, m, r, 3, 2, 2)[0] for m in range(2) for r in range(2))
    assert starts == [60, 63, 66, 69]


def test_resolve_train_config(tmp_path) -> None:
    assert resolve_train_config({"steps": 10}, lr=None, batch_size=3) == TrainConfig(
        steps=10, batch_size=3
    )
    with pytest.raises(ConfigError, match=r"unknown training config keys \['stpes'\].*steps"):
        resolve_train_config({"stpes": 10})
    with pytest.raises(ConfigError, match="steps"):
        resolve_train_config({"steps": 1.5})
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  steps: 7\n  precision: bf16\nmodel:\n  schedule: linear\n")
    assert resolve_train_config(f) == TrainConfig(steps=7, precision="bf16")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_train_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp8")


def test_bf16_autocast_and_wall_time_checkpoints(tmp_path, blobs) -> None:
    # checkpoint_every=0 (steps) but a tiny wall-time interval: a checkpoint after every step.
    tc = _tc(steps=3, precision="bf16", checkpoint_every_seconds=1e-6, keep_checkpoints=10)
    res = train(_model_cfg(blobs), tc, blobs, tmp_path)
    assert all(math.isfinite(v) for v in res.losses)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [1, 2, 3]


def test_loader_workers_give_the_same_batches(tmp_path, blobs) -> None:
    # Batches are fixed by (seed, step), so loading in a worker process changes nothing.
    mc = _model_cfg(blobs)
    main = train(mc, _tc(steps=3), blobs, tmp_path / "main")
    worker = train(mc, _tc(steps=3, num_workers=1), blobs, tmp_path / "worker")
    assert worker.losses == main.losses


def test_resume_of_a_checkpoint_written_before_an_option_existed(tmp_path, blobs) -> None:
    """A checkpoint whose saved model_config lacks options added later (here the optional UNet
    keys) resumes: missing keys take their defaults before comparing."""
    mc = _model_cfg(blobs)
    tc = _tc(steps=4, checkpoint_every=2)
    train(mc, _tc(steps=2, checkpoint_every=2), blobs, tmp_path / "old")
    [(_, path)] = list_checkpoints(tmp_path / "old" / "checkpoints")
    state = torch.load(path, weights_only=True)
    saved = state["model_config"]
    assert saved == mc.to_dict() and mc.unet.dropout == 0.0 and not mc.unet.coord_channels
    # What an older version wrote: no keys for options that did not exist yet (at defaults).
    saved["unet"].pop("dropout")
    saved["unet"].pop("coord_channels")
    torch.save(state, path)
    resumed = train(mc, tc, blobs, tmp_path / "old")
    assert resumed.start_step == 2 and resumed.step == 4


def test_init_from_starts_at_the_checkpoint_weights(tmp_path, blobs) -> None:
    """Fine-tuning (TrainConfig.init_from): the new run's first loss equals the loss the source
    model's EMA weights give on the same batch, far below a fresh network's; a different model
    or a missing file is refused with the reason."""
    mc = _model_cfg(blobs)
    src = train(mc, _tc(steps=60, lr=3e-3, ema_half_life_samples=20.0), blobs, tmp_path / "src")
    fresh = train(mc, _tc(steps=1, lr=1e-12, warmup_steps=0), blobs, tmp_path / "fresh")
    tuned = train(
        mc, _tc(steps=1, lr=1e-12, warmup_steps=0, init_from=str(src.checkpoint)), blobs,
        tmp_path / "tuned",
    )  # fmt: skip
    assert tuned.start_step == 0 and tuned.step == 1
    # lr ≈ 0: the one step leaves the weights as loaded, so the saved model is the source EMA.
    a = torch.load(src.checkpoint, weights_only=True)["ema"]["module"]
    b = torch.load(tuned.checkpoint, weights_only=True)["model"]
    for k, v in a.items():
        assert torch.allclose(v, b[k], atol=1e-6), k
    # Same seed, same batch and noise: the loaded weights fit it far better than fresh ones.
    assert tuned.losses[0] < 0.7 * fresh.losses[0], (tuned.losses, fresh.losses)
    with pytest.raises(ConfigError, match=r"different model configuration.*prediction"):
        train(_model_cfg(blobs, prediction="v"), _tc(init_from=str(src.checkpoint)), blobs,
              tmp_path / "other")  # fmt: skip
    with pytest.raises(ConfigError, match="does not exist"):
        train(mc, _tc(init_from=str(tmp_path / "nope.pt")), blobs, tmp_path / "none")

"""Checkpoints: atomic writes, keep-last-K, corrupt-newest fallback, RNG state, sampling load."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

from rho_core.checkpoint import (
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_for_sampling,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from rho_core.data.synthetic import GaussianBlobs
from rho_core.errors import CheckpointError
from rho_core.model import DiffusionModel, default_model_config
from rho_core.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "step": step, "model_config": {}}


def test_save_names_keeps_last_k_and_leaves_no_temp_files(tmp_path) -> None:
    for step in (5, 10, 15, 20):
        path = save_checkpoint(_state(step), tmp_path, step, keep=2)
        assert path.name == f"ckpt-{step:08d}.pt"
    assert [s for s, _ in list_checkpoints(tmp_path)] == [15, 20]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000015.pt", "ckpt-00000020.pt"]
    assert load_checkpoint(tmp_path / "ckpt-00000020.pt")["model"]["w"][0] == 20.0


def test_stale_temporaries_of_killed_writers_are_removed_on_the_next_save(tmp_path) -> None:
    # A writer SIGKILLed mid-save leaves ".ckpt-….tmp"; an old one goes at the next save, a
    # fresh one (a save possibly still in progress elsewhere) stays.
    import os
    import time

    stale = tmp_path / ".ckpt-00000005.pt.abc.tmp"
    fresh = tmp_path / ".ckpt-00000007.pt.def.tmp"
    for f in (stale, fresh):
        f.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    save_checkpoint(_state(10), tmp_path, 10, keep=2)
    assert not stale.exists() and fresh.exists()
    assert (tmp_path / "ckpt-00000010.pt").exists()


def test_corrupt_newest_falls_back_with_warning(tmp_path, caplog) -> None:
    for step in (1, 2, 3):
        save_checkpoint(_state(step), tmp_path, step, keep=5)
    newest = tmp_path / "ckpt-00000003.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated write
    (tmp_path / "ckpt-00000002.pt").write_bytes(b"garbage, not a zip")
    with caplog.at_level(logging.WARNING, logger="rho_core.checkpoint"):
        assert latest_valid_checkpoint(tmp_path) == tmp_path / "ckpt-00000001.pt"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and "ckpt-00000003.pt" in warned[0]
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(newest)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    assert latest_valid_checkpoint(tmp_path / "empty") is None


def test_not_a_checkpoint_dict(tmp_path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "ckpt-00000001.pt")
    with pytest.raises(CheckpointError, match="lacks the keys"):
        load_checkpoint(tmp_path / "ckpt-00000001.pt")


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    save_checkpoint({**_state(1), "rng": rng_state()}, tmp_path, 1)
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "ckpt-00000001.pt")["rng"])
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_load_for_sampling_uses_ema_weights(tmp_path) -> None:
    ds = GaussianBlobs(n=6, spatial_dims=1, size=8)
    mc = default_model_config(
        1, 1, ds.param_names, (0.5, 0.2), (1.0, 0.5), cond_dim=8, base_channels=8,
        channel_mult=(1, 2), timesteps=50,
    )  # fmt: skip
    tc = TrainConfig(
        steps=4, batch_size=3, lr=1e-2, warmup_steps=1, checkpoint_every=2, log_every=10,
        ema_half_life_samples=30.0, ema_rampup_ratio=None,
    )  # fmt: skip
    res = train(mc, tc, ds, tmp_path)
    loaded = load_for_sampling(tmp_path, "cpu")  # a run directory: newest valid checkpoint
    assert loaded.path == res.checkpoint and loaded.step == 4
    assert loaded.param_names == ds.param_names and loaded.spatial_dims == 1
    assert loaded.field_shape == (1, 8) and loaded.kind == "synthetic_blobs"
    assert isinstance(loaded.model, DiffusionModel) and not loaded.model.training
    state = load_checkpoint(res.checkpoint)
    ema_w = state["ema"]["module"]["net.out.weight"]
    live_w = state["model"]["net.out.weight"]
    assert not torch.allclose(ema_w, live_w)  # the EMA lags the live weights
    assert torch.equal(loaded.model.state_dict()["net.out.weight"], ema_w)
    assert loaded.train_config["steps"] == 4
    (tmp_path / "other").mkdir()
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        load_for_sampling(tmp_path / "other", "cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_for_sampling(tmp_path / "missing.pt", "cpu")

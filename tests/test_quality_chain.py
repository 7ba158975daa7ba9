"""End-to-end quality guard: data → normalisation → training → sampler → inverse transform.

A tiny real-convention spherical-harmonic store (8³, l ≤ 1: Y_0^0 and the three Y_1^m, which are
x/r, y/r and z/r up to a constant) gets a minmax normalisation, a small U-Net is trained on it
through the product path (``rho_cli.train.build_configs`` on a YAML file, then
``rho_core.training.train``), and one volume per condition is drawn with DPM-Solver++(2M) at 20
steps (``rho_core.checkpoint.load_for_sampling`` + ``rho_core.evaluation.generate``, physical
units) — what ``rho sample`` runs. The test fails when any link of that chain breaks the result:
a wrong inverse transform, a conditioner the network ignores, a sampler that drifts.

Measured (200 steps, batch 4, lr 2e-3, one busy CPU thread, ≈ 12 s of training; train and
sampling seeds 0, 1, 2): Pearson correlation of each Y_1^m sample with its own truth
0.990-0.995, with any other condition's truth ≤ 0.017; rel_l2 0.03-0.05 for Y_0^0 and
0.10-0.15 for Y_1^m. With ``coord_channels`` on, the same within noise (0.990-0.995). At 100
steps the correlations are still 0.46-0.92 and the conditions get mixed up, so the thresholds
below (correlation > 0.9, above every other condition's by > 0.5; rel_l2 < 0.4) catch a model
that has not learned, with a wide margin for a trained one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

MIN_CORR = 0.9  # measured ≥ 0.990
MIN_CORR_GAP = 0.5  # own-truth minus best other-truth correlation; measured ≥ 0.97
MAX_REL_L2 = 0.4  # measured ≤ 0.15
TRAIN_STEPS = 200


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def run_chain(
    tmp: Path, seed: int = 0, steps: int = TRAIN_STEPS, coord_channels: bool | None = None
) -> dict:
    """Run the chain in ``tmp``; returns truth, samples, params, checkpoint and store paths.

    ``coord_channels=None`` leaves the U-Net option unset (the default network).
    """
    from rho_cli.train import build_configs
    from rho_core.checkpoint import load_for_sampling
    from rho_core.data.dataset import StoreDataset
    from rho_core.data.normalization import fit_normalization
    from rho_core.data.spherical_harmonics import generate_spherical_harmonics
    from rho_core.data.store import open_store
    from rho_core.evaluation import generate
    from rho_core.training import train

    store = generate_spherical_harmonics(tmp / "sh.zarr", size=8, l_max=1, convention="real")
    norm = fit_normalization(store, "minmax", write=True)
    assert norm["transform"] == "minmax"
    coord = "" if coord_channels is None else f", coord_channels: {str(coord_channels).lower()}"
    config = tmp / "config.yaml"
    config.write_text(
        f"model: {{base_channels: 16, channel_mult: [1, 2], patch_size: 1{coord}}}\n"
        f"train: {{steps: {steps}, lr: 2.0e-3, batch_size: 4, warmup_steps: 10, seed: {seed},"
        " checkpoint_every: 0, device: cpu}\n"
    )
    model_cfg, train_cfg = build_configs(str(store), str(config))
    assert model_cfg.unet.patch_size == 1 and train_cfg.steps == steps
    res = train(model_cfg, train_cfg, StoreDataset(str(store)), tmp / "run", resume=False)
    assert res.checkpoint is not None and res.step == steps

    s = open_store(store)
    true, params = s.read_batch(np.arange(s.n))
    loaded = load_for_sampling(res.checkpoint, "cpu")
    gen, gen_params = generate(loaded, params, sampler="dpmpp", steps=20, seed=seed)
    np.testing.assert_array_equal(gen_params, params)
    return {
        "true": np.asarray(true, dtype=np.float32),
        "gen": gen,
        "params": params,
        "checkpoint": res.checkpoint,
        "store": store,
    }


@pytest.fixture
def one_thread():
    """One torch thread (the test shares its cores; timings above are for one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_trained_samples_match_their_condition(tmp_path, one_thread):
    from rho_core.evaluation import evaluate

    out = run_chain(tmp_path, seed=0)
    true, gen, params = out["true"], out["gen"], out["params"]
    assert gen.shape == true.shape == (4, 1, 8, 8, 8)
    assert gen.dtype == np.float32 and np.all(np.isfinite(gen))
    # physical units: the normalised [-1, 1] range maps back to Y values within ±0.49
    assert np.abs(gen).max() < 1.0

    labels = [f"l={int(lv)},m={int(mv)}" for lv, mv in params]
    for i, label in enumerate(labels):
        rel = float(np.linalg.norm(gen[i] - true[i]) / np.linalg.norm(true[i]))
        assert rel < MAX_REL_L2, f"{label}: rel_l2 {rel:.3f}"
        if np.ptp(true[i]) == 0:  # Y_0^0 is constant: correlation undefined, rel_l2 suffices
            continue
        own = _pearson(gen[i], true[i])
        others = [
            _pearson(gen[i], true[j]) for j in range(len(labels)) if j != i and np.ptp(true[j]) > 0
        ]
        assert own > MIN_CORR, f"{label}: correlation with its truth {own:.3f}"
        assert own > max(others) + MIN_CORR_GAP, (
            f"{label}: correlation with its truth {own:.3f}, with another condition's "
            f"{max(others):.3f} (the condition does not steer the sample)"
        )

    # evaluate() scores the same draw (seed 0, one batch) through its own inverse transform
    scores = evaluate(
        out["checkpoint"], out["store"], sampler="dpmpp", steps=20, seed=0, device="cpu"
    )
    assert scores["n_conditions"] == 4
    for i, label in enumerate(labels):
        rel = float(np.linalg.norm(gen[i] - true[i]) / np.linalg.norm(true[i]))
        assert scores["per_condition"][label]["rel_l2"] == pytest.approx(rel, rel=1e-4, abs=1e-6)

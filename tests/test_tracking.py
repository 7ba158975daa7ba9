"""MLflow tracking module (real MLflow on a temporary SQLite database) and the figure functions."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rho_core import plots
from tasks import tracking


# ------------------------------------------------------------------------- promotion decision
@pytest.mark.parametrize(
    ("new", "current", "expected"),
    [
        (0.1, None, True),  # no champion yet
        (0.1, 0.2, True),  # strictly better (lower)
        (0.2, 0.1, False),  # worse
        (0.1, 0.1, False),  # a tie keeps the incumbent
        (float("nan"), 0.1, False),  # a broken score never wins
        (float("inf"), None, False),
        (None, None, False),
        (0.3, float("nan"), True),  # a champion without a usable score is replaced
    ],
)
def test_should_promote(new, current, expected):
    assert tracking.should_promote(new, current) is expected


def test_flatten_nested_config_and_dataclasses():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Cfg:
        steps: int = 3
        mult: tuple = (1, 2)

    flat = tracking.flatten({"train": Cfg(), "data": {"size": 16, "sub": {"l_max": 2}}, "x": None})
    assert flat == {
        "train.steps": "3",
        "train.mult": "[1, 2]",
        "data.size": "16",
        "data.sub.l_max": "2",
        "x": "None",
    }
    long = tracking.flatten({"p": "a" * 10_000})["p"]
    assert len(long) == 6000 and long.endswith("[truncated]")


def test_uri_resolution_is_lazy_and_env_driven(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RHO_MLFLOW_ARTIFACTS", raising=False)
    default = tracking.tracking_uri()
    assert default == f"sqlite:///{tracking.REPO_ROOT / 'data' / 'mlflow.db'}"
    assert tracking.artifact_root() == tracking.REPO_ROOT / "data" / "mlartifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/x.db")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path}/x.db"
    assert tracking.artifact_root() == tmp_path / "mlartifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.artifact_root() is None  # the server decides
    # Importing the module must not import (let alone configure) MLflow.
    code = "import sys, tasks.tracking; print('mlflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tracking.REPO_ROOT,
    )
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------- a full logged run
def _tiny_bundle(path: Path, conditioning: str = "continuous", seed: int = 0) -> Path:
    """A tiny untrained 3-D model (8³, 2 parameters) written as a pickle-free bundle."""
    from rho_core import packaging
    from rho_core.model import DiffusionModel, default_model_config

    torch.manual_seed(seed)
    cfg = default_model_config(
        3, 1, ["l", "m"], [0.0, -2.0], [2.0, 2.0], conditioning=conditioning, cond_dim=16,
        timesteps=50, base_channels=8, channel_mult=(1, 2), attention_levels=(),
    )  # fmt: skip
    model = DiffusionModel(cfg).eval()
    return packaging.write_bundle(
        path, model, model_config=cfg.to_dict(),
        normalization={"transform": "minmax", "min": -3.0, "max": 5.0},
        param_names=["l", "m"], field_shape=(1, 8, 8, 8), kind="unit_test",
        param_ranges={"l": [0, 2], "m": [-2, 2]}, sampling={"steps": 4},
    )  # fmt: skip


def _log_one(kind: str, score: float, seed: int, tmp: Path) -> tuple[str, tracking.LoggedModel]:
    run_id = tracking.start_run(kind, run_name=f"test-{seed}")
    tracking.log_params(run_id, {"train": {"steps": 5, "lr": 1e-3}, "data": {"size": 4}})
    tracking.log_history(
        run_id, [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "samples_per_s": 10.0} for s in (1, 2, 3)]
    )
    tracking.log_metrics(
        run_id, {"wasserstein/l=1,m=0": score, "wasserstein_mean": score, "rel_l2_mean": 0.5}
    )
    bundle = _tiny_bundle(tmp / f"bundle-{seed}", seed=seed)
    logged = tracking.log_pyfunc_model(
        run_id, bundle, f"rho-{kind}", description=f"seed {seed}",
        version_tags={"wasserstein_mean": score},
    )  # fmt: skip
    tracking.end_run(run_id)
    return run_id, logged


def test_full_run_logging_registry_and_champion(mlflow_uri, tmp_path):
    kind = "unit_test"
    run1, m1 = _log_one(kind, 0.20, seed=1, tmp=tmp_path)
    c = tracking.client()
    run = c.get_run(run1)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "5" and run.data.params["data.size"] == "4"
    assert math.isclose(run.data.metrics["wasserstein_mean"], 0.20)
    assert math.isclose(run.data.metrics["wasserstein/l_1_m_0"], 0.20)  # made a legal name
    losses = c.get_metric_history(run1, "loss")
    assert sorted((m.step, m.value) for m in losses) == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    # Experiment artifacts sit beside the temporary database, not in ./mlruns; the experiment
    # opens in the model-development view and has a description; so does the Default one.
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.name == "rho-unit_test"
    assert exp.artifact_location.startswith((tmp_path / "mlflow" / "mlartifacts").as_uri())
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "rho model sample" in exp.tags["mlflow.note.content"]
    assert c.get_experiment("0").artifact_location == (
        (tmp_path / "mlflow" / "mlartifacts" / "0").as_uri()
    )
    assert not (Path.cwd() / "mlruns").exists()

    # Figures and a directory artifact (e.g. a samples store).
    fig = plots.loss_curve([1, 2, 3], [1.0, 0.5, 0.3])
    tracking.log_figure(run1, fig, "figures/loss.png")
    d = tmp_path / "samples"
    d.mkdir()
    np.savez(d / "samples.npz", x=np.zeros(3))
    tracking.log_artifact(run1, d, "samples")
    names = {a.path for a in c.list_artifacts(run1, "figures")}
    assert names == {"figures/loss.png"}
    assert {a.path for a in c.list_artifacts(run1, "samples")} == {"samples/samples.npz"}

    # The registered version carries a description and its score; the model has no pickle.
    assert m1.version == "1"
    mv = c.get_model_version(m1.name, "1")
    assert mv.description == "seed 1" and mv.tags["wasserstein_mean"] == "0.2"
    assert "rho model sample" in c.get_registered_model(m1.name).description

    # Champion: first version wins by default; a worse one does not move it; a better one does.
    assert tracking.promote_if_better(m1.name, m1.version, 0.20)
    assert tracking.champion_score(m1.name) == ("1", pytest.approx(0.20))
    _, m2 = _log_one(kind, 0.30, seed=2, tmp=tmp_path)
    assert not tracking.promote_if_better(m2.name, m2.version, 0.30)
    assert tracking.champion_score(m1.name)[0] == "1"
    _, m3 = _log_one(kind, 0.10, seed=3, tmp=tmp_path)
    assert tracking.promote_if_better(m3.name, m3.version, 0.10)
    assert tracking.champion_score(m1.name) == ("3", pytest.approx(0.10))


# ------------------------------------------------------------------------- figures
@pytest.mark.parametrize("spatial", [(8,), (6, 7), (4, 5, 6)])
def test_figures_any_dims(spatial):
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(4, 3, 1, *spatial))
    fig = plots.denoising_grid(frames, [900, 600, 300, 0], ["a", "b", "c"])
    assert len(fig.axes) == 12 + 1  # the panels + one colour bar
    assert fig.axes[0].get_ylabel() == "t = 900" and fig.axes[0].get_title() == "a"
    # x̂₀ beside x_t: two columns per condition; λ written under t; the view is named.
    x0 = 0.1 * frames
    fig = plots.denoising_grid(
        frames, [900, 600, 300, 0], ["a", "b", "c"], x0_frames=x0, log_snr=[-9, -5, -1, 3]
    )
    assert len(fig.axes) == 24 + 1
    assert fig.axes[0].get_title() == "a\nx_t" and fig.axes[1].get_title() == "a\nx̂₀"
    assert fig.axes[0].get_ylabel() == "t = 900\nλ = -9.0"
    assert "log-SNR" in fig._suptitle.get_text()
    if len(spatial) == 3:
        assert "z-slice (z = 3 of 6)" in fig._suptitle.get_text()
    clims = {im.get_clim() for ax in fig.axes[:-1] for im in ax.get_images()}
    assert len(clims) == 1  # one colour range, so the colour bar holds for every panel

    true = rng.normal(size=(3, 1, *spatial))
    gen = 5.0 + rng.normal(size=(3, 1, *spatial))
    fig = plots.slices_figure(true, gen, ["a", "b", "c"])
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 9  # true, generated, residual rows
    lo = min(true.min(), gen.min())
    hi = max(to.max() for to in (true[:, 0], gen[:, 0]))
    # One shared colour range across true and generated (what makes Fig. 2 comparable); the
    # range covers the shown slices, which lie within the data's range.
    clims = [im.get_clim() for im in images]
    assert len(set(clims[:6])) == 1
    vmin, vmax = clims[0]
    assert lo <= vmin < vmax <= hi
    # The residual row: generated − true on a symmetric range of its own.
    resid = images[6].get_array()
    np.testing.assert_allclose(resid.T, plots.to_image(gen[0]) - plots.to_image(true[0]))
    rlo, rhi = clims[6]
    assert rlo == -rhi and rhi >= np.abs(resid).max() - 1e-12
    assert len(fig.axes) == 9 + 2  # nine panels + two colour bars
    assert fig.axes[6].get_xlabel() == "x (voxel)"


def test_rows_by_log_snr_spreads_the_rows():
    # A shifted schedule: λ changes slowly for most steps and quickly at the end.
    lam = np.concatenate([np.linspace(-12, -8, 40), np.linspace(-8, 6, 10)])
    rows = plots.rows_by_log_snr(lam, 5)
    assert rows == sorted(set(rows)) and len(rows) == 5
    picked = lam[rows]
    gaps = np.diff(picked)
    assert gaps.max() / gaps.min() < 2.0  # evenly spread in λ ...
    assert sum(r >= 40 for r in rows) >= 3  # ... so most rows fall in the last 10 steps
    assert plots.rows_by_log_snr(lam[:3], 5) == [0, 1, 2]


def test_loss_curve_legend_and_lr_colour():
    fig = plots.loss_curve([1, 2, 3], [1.0, 0.5, 0.3], [1e-3, 5e-4, 1e-4])
    ax, ax2 = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss", "learning rate"]
    line = ax2.get_lines()[0]
    assert ax2.yaxis.label.get_color() == line.get_color() == "tab:orange"
    assert ax.yaxis.label.get_color() == ax.get_lines()[0].get_color() == "tab:blue"


def test_to_image_takes_central_slice_and_rejects_bad_shapes():
    vol = np.zeros((1, 3, 3, 5))
    vol[0, :, :, 2] = 7.0
    assert np.all(plots.to_image(vol) == 7.0)
    with pytest.raises(ValueError, match="1-3 spatial dims"):
        plots.to_image(np.zeros(5))
    with pytest.raises(ValueError, match="differ"):
        plots.slices_figure(np.zeros((2, 1, 4)), np.zeros((3, 1, 4)), ["a", "b"])

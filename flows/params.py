"""Typed flow parameters: pydantic models whose fields carry defaults and descriptions.

The Prefect UI renders these as forms; the CLI builds them from YAML (``rho pipeline --config``).
Two presets for the end-to-end pipeline: :func:`quick_preset` (the README's job: 16³ volumes,
l ≤ 2, a small 3-D U-Net, a few hundred steps — minutes on 2 CPU cores) and the defaults of
:class:`PipelineParams` (the paper-sized experiment: 32³, l ≤ 6). :func:`resolve` merges the
fields a caller set explicitly over a preset, so ``quick=True`` plus ``{"train": {"steps": 5}}``
means "the quick preset, but 5 steps".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.paths import data_dir


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SphericalHarmonicsParams(_Params):
    """Spherical-harmonic voxel volumes (the paper's 3-D experiment)."""

    size: int = Field(32, ge=4, le=256, description="Grid points per axis (volumes are size³).")
    l_max: int = Field(6, ge=0, le=20, description="Largest degree l; all 0 ≤ l ≤ l_max.")
    convention: Literal["real", "paper"] = Field(
        "real", description="'real' orthonormal real harmonics (2l+1 per l) or the paper's Re Y."
    )
    store: str | None = Field(
        None,
        description="Output Zarr store; default data/stores/sh-<size>-l<l_max>-<convention>.zarr.",
    )
    normalization: Literal["minmax", "standard", "asinh"] = Field(
        "minmax", description="Transform fitted on the store that maps fields to about [-1, 1]."
    )
    workers: int = Field(1, ge=1, le=64, description="Dask workers for generation.")

    def store_path(self) -> str:
        if self.store:
            return self.store
        return str(data_dir() / "stores" / f"sh-{self.size}-l{self.l_max}-{self.convention}.zarr")


class GalaxyMergerParams(_Params):
    """Built-in merger simulations over a parameter grid, rendered into a 2-D image store."""

    out_dir: str | None = Field(None, description="Snapshot folder; default data/sims/merger.")
    store: str | None = Field(None, description="Image store; default data/stores/merger.zarr.")
    image_size: int = Field(64, ge=8, le=1024, description="Image side in pixels.")
    n_particles: int = Field(2000, ge=100, description="Particles per simulation.")
    mass_ratios: list[float] = Field([1.0, 0.5], description="Mass ratios M2/M1 on the grid.")
    pericenters: list[float] = Field([5.0], description="Pericentre distances [kpc] on the grid.")
    t_end: float = Field(100.0, gt=0, description="End time (units of 9.78 Myr).")
    snap_every: float = Field(2.0, gt=0, description="Time between snapshots.")
    normalization: Literal["minmax", "standard", "asinh"] = Field("minmax")


class IngestBonsaiParams(_Params):
    """Ingest existing Bonsai / tipsy snapshots into an image store."""

    snapshots: list[str] = Field(..., description="Snapshot files (tipsy or BonsaiIO).")
    store: str = Field(..., description="Output Zarr store.")
    image_size: int = Field(128, ge=8, le=4096, description="Image side in pixels.")
    params_file: str | None = Field(
        None, description="YAML/JSON with each snapshot's physical parameters."
    )
    normalization: Literal["minmax", "standard", "asinh"] = Field("asinh")


class ModelParams(_Params):
    """Network and diffusion settings."""

    base_channels: int = Field(32, ge=4, description="U-Net channels at the finest level.")
    channel_mult: list[int] = Field([1, 2, 4], description="Channel multiplier per level.")
    num_res_blocks: int = Field(1, ge=1, le=4)
    attention: bool = Field(True, description="Self-attention at the coarsest level.")
    conditioning: Literal["hash", "continuous"] = Field(
        "hash", description="'hash' (the paper's SHA-512 embedding) or 'continuous'."
    )
    cond_dim: int = Field(128, ge=8)
    schedule: Literal["linear", "cosine", "sigmoid"] = Field("cosine")
    timesteps: int = Field(1000, ge=10, le=10000)
    prediction: Literal["eps", "x0", "v"] = Field(
        "x0",
        description="What the network predicts: 'x0' (default; far better-conditioned on short "
        "CPU budgets), 'eps' (the paper's DDPM) or 'v'.",
    )
    schedule_shift: float = Field(
        -4.0,
        ge=-10.0,
        le=0.0,
        description="Log-SNR shift of the schedule's noisy end (0: the plain schedule). -4 makes "
        "the condition, not the noise, decide which field is drawn (docs/results.md).",
    )


class TrainParams(_Params):
    """Optimisation settings (see rho_core.training.TrainConfig for the full set)."""

    steps: int = Field(20000, ge=1, description="Optimizer steps.")
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(200, ge=0)
    ema_half_life_samples: float = Field(5000.0, gt=0, description="EMA half-life in samples seen.")
    cond_drop_prob: float = Field(0.1, ge=0, lt=1, description="Classifier-free guidance drop.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32")
    device: str = Field("auto", description="auto | cpu | cuda | xpu | mps")
    seed: int = Field(0)
    log_every: int = Field(50, ge=1, description="Steps between progress lines / curve points.")
    nproc: int = Field(1, ge=1, le=64, description="Processes (torchrun) for data-parallel runs.")


class EvalParams(_Params):
    """Sampling and scoring."""

    sampler: Literal["ddpm", "ddim", "dpmpp"] = Field("ddim")
    steps: int = Field(50, ge=1, description="Sampler steps.")
    n_conditions: int = Field(6, ge=1, description="Conditions from the store to score and plot.")
    guidance: float = Field(1.0, ge=0, description="Classifier-free guidance scale.")
    clip_x0: float | None = Field(
        1.0,
        gt=0,
        description=(
            "Clip the predicted clean field to ±clip_x0 (normalised space) at every sampler "
            "step; 1 matches the minmax normalisation, whose data lie in [-1, 1]. null: no "
            "clipping (use it with unbounded transforms such as standard/asinh)."
        ),
    )
    seed: int = Field(1)


class PipelineParams(_Params):
    """End to end: data → normalisation → training → sampling + scores → figures → MLflow."""

    data: SphericalHarmonicsParams = Field(default_factory=SphericalHarmonicsParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvalParams = Field(default_factory=EvalParams)
    run_name: str | None = Field(None, description="MLflow run name; default a timestamp.")
    runs_dir: str | None = Field(None, description="Training runs folder; default data/runs.")
    register_model: bool = Field(True, description="Register the model and maybe move 'champion'.")


_QUICK: dict[str, Any] = {
    "data": {"size": 16, "l_max": 2},
    "model": {
        "base_channels": 16,
        "channel_mult": [1, 2],
        "attention": False,
        "cond_dim": 64,
        # x0-prediction: on this tiny set it reaches W1 ≈ 0.02 in 300 steps where ε-prediction
        # stays near 0.15-0.25 (an ε-model's x̂₀ = (x_t − σ ε̂)/α amplifies its errors at the
        # noisiest steps).
        "prediction": "x0",
    },
    "train": {
        "steps": 300,
        "batch_size": 4,
        "lr": 2e-3,
        "warmup_steps": 20,
        "ema_half_life_samples": 400.0,
        "cond_drop_prob": 0.0,
        "log_every": 25,
    },
    "evaluate": {"sampler": "ddim", "steps": 20, "n_conditions": 4},
}


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _deep_merge(out[k], v) if nested else v
    return out


def quick_preset() -> PipelineParams:
    """The README's quick job (≤ 5 min on 2 CPU cores)."""
    return PipelineParams.model_validate(_QUICK)


def resolve(params: PipelineParams | dict | None, quick: bool) -> PipelineParams:
    """Fields set explicitly in ``params`` over the quick preset (``quick``) or the defaults.

    With ``quick``, a field whose value equals the plain default does not override the preset:
    the Prefect UI's form submits every field, defaults included, and would otherwise silently
    replace the whole preset by the paper-sized defaults.
    """
    if isinstance(params, dict):
        params = PipelineParams.model_validate(params)
    if params is None:
        over = {}
    elif quick:
        over = params.model_dump(exclude_unset=True, exclude_defaults=True)
    else:
        over = params.model_dump(exclude_unset=True)
    base = _QUICK if quick else {}
    return PipelineParams.model_validate(_deep_merge(base, over))

"""Typed flow parameters: pydantic models whose fields carry defaults and descriptions.

The Prefect UI renders these as forms; the CLI builds them from YAML (``rho pipeline --config``).
The model, training and evaluation forms are *derived* from the dataclasses of
:mod:`rho_core.config` (:func:`form_model`): same fields, same defaults, same help, same checks —
a new option added there appears here without an edit.

The end-to-end pipeline takes a ``dataset`` and starts from that dataset's preset
(:func:`preset_params`): for 32³ spherical harmonics the best measured recipe
(``configs/quality/sh32-refine.yaml``), or with ``quick`` a minutes-on-a-CPU version.
:func:`resolve` puts the fields a caller changed over that preset; a field left at the value the
form shows by default (:class:`PipelineParams` defaults) does not override the preset, because
the Prefect UI submits every field. The flow logs and returns the parameters that ran.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from rho_core.config import (
    ALIASES,
    EvalConfig,
    ModelOptions,
    TrainConfig,
    resolve_config,
    resolve_section,
)
from rho_core.errors import ConfigError
from tasks.paths import REPO_ROOT, data_dir

Normalization = Literal["minmax", "standard", "asinh", "log"]
Dataset = Literal[
    "spherical_harmonics",
    "hydrogen",
    "galaxy_merger",
    "bonsai",
    "gaussian_random_field",
    "rotational_spectrum",
]
DATASETS: tuple[str, ...] = typing.get_args(Dataset)
#: The best measured recipe of the 32³ spherical harmonics (docs/results.md, section 3a).
DEFAULT_RECIPE = REPO_ROOT / "configs" / "quality" / "sh32-refine.yaml"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------ forms from rho_core.config
class _Section(_Params):
    """A form derived from a :mod:`rho_core.config` dataclass; validated by it as well."""

    section: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for old, convert in ALIASES.get(cls.section, {}).items():
                if old in data:
                    data.update(convert(data.pop(old)))
        return data

    @model_validator(mode="after")
    def _check(self):
        try:
            resolve_section(self.section, self.model_dump())
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def to_config(self):
        """The :mod:`rho_core.config` dataclass of these values."""
        return resolve_section(self.section, self.model_dump())


def form_model(cls: type, name: str, section: str, doc: str, **extra: Any) -> type[_Section]:
    """A pydantic model with the fields, defaults and help of the dataclass ``cls`` (plus
    ``extra`` fields ``name=(type, Field(...))``)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        help_text = str(f.metadata.get("help", ""))
        fields[f.name] = (hints[f.name], Field(f.default, description=help_text))
    for old in ALIASES.get(section, {}):  # older spellings: accepted (the Prefect server
        # checks submitted parameters against the schema), converted, never dumped
        fields[old] = (
            Any,
            Field(None, exclude=True, description="Older spelling; converted when given."),
        )
    fields.update(extra)
    model = create_model(name, __base__=_Section, __module__=__name__, __doc__=doc, **fields)
    model.section = section
    return model


ModelParams = form_model(ModelOptions, "ModelParams", "model", "Network and diffusion settings.")
TrainParams = form_model(
    TrainConfig,
    "TrainParams",
    "train",
    "Optimisation settings (rho_core.config.TrainConfig).",
)
EvalParams = form_model(EvalConfig, "EvalParams", "evaluate", "Sampling and scoring.")


# ------------------------------------------------------------------------------------ datasets
class SphericalHarmonicsParams(_Params):
    """Spherical-harmonic voxel volumes (the paper's 3-D experiment)."""

    size: int = Field(32, ge=4, le=256, description="Grid points per axis (volumes are size³).")
    l_max: int = Field(6, ge=0, le=20, description="Largest degree l; all 0 ≤ l ≤ l_max.")
    convention: Literal["real", "paper"] = Field(
        "real", description="'real' orthonormal real harmonics (2l+1 per l) or the paper's Re Y."
    )
    store: str | None = Field(
        None,
        description="Output Zarr store; default data/stores/sh-SIZE-lLMAX-CONVENTION.zarr.",
    )
    normalization: Normalization = Field(
        "minmax", description="Transform fitted on the store that maps fields to about [-1, 1]."
    )
    workers: int = Field(1, ge=1, le=64, description="Dask workers for generation.")

    def store_path(self) -> str:
        if self.store:
            return self.store
        return str(data_dir() / "stores" / f"sh-{self.size}-l{self.l_max}-{self.convention}.zarr")


class HydrogenParams(_Params):
    """Hydrogen orbital densities |ψ_nlm|² on a voxel grid (deterministic, one per (n, l, m))."""

    size: int = Field(32, ge=4, le=256, description="Grid points per axis (volumes are size³).")
    n_max: int = Field(3, ge=1, le=8, description="Highest principal quantum number n.")
    store: str | None = Field(
        None, description="Output Zarr store; default data/stores/hydrogen-SIZE-nNMAX.zarr."
    )
    normalization: Normalization = Field(
        "asinh", description="Transform fitted on the store (densities span decades: asinh/log)."
    )

    def store_path(self) -> str:
        if self.store:
            return self.store
        return str(data_dir() / "stores" / f"hydrogen-{self.size}-n{self.n_max}.zarr")


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
    normalization: Normalization = Field("minmax")


class IngestBonsaiParams(_Params):
    """Ingest existing Bonsai / tipsy snapshots into an image store."""

    snapshots: list[str] = Field(..., description="Snapshot files (tipsy or BonsaiIO).")
    store: str = Field(..., description="Output Zarr store.")
    image_size: int = Field(128, ge=8, le=4096, description="Image side in pixels.")
    params_file: str | None = Field(
        None, description="YAML/JSON with each snapshot's physical parameters."
    )
    normalization: Normalization = Field("asinh")


class RandomFieldParams(_Params):
    """Gaussian (or log-normal) random fields with power spectrum A·|κ|^n: a stochastic set
    whose true distribution is known (scored as distributions)."""

    size: int = Field(64, ge=4, le=512, description="Points per axis N.")
    dims: int = Field(2, ge=1, le=3, description="Spatial dimensions D.")
    amplitudes: list[float] = Field([0.5, 1.0, 2.0], description="Amplitudes A of the grid.")
    spectral_indices: list[float] = Field(
        [-1.0, -1.5, -2.0, -2.5], description="Spectral indices n of the grid."
    )
    realizations: int = Field(128, ge=1, description="Realisations per (A, n) pair.")
    seed: int = Field(1, description="Seed of the white noise.")
    lognormal: bool = Field(False, description="Log-normal fields instead of Gaussian ones.")
    store: str | None = Field(None, description="Output store; default under data/stores.")
    normalization: Normalization = Field("standard")
    workers: int = Field(1, ge=1, le=64, description="Dask workers for generation.")

    def store_path(self) -> str:
        if self.store:
            return self.store
        ln = "-lognormal" if self.lognormal else ""
        return str(
            data_dir() / "stores" / f"grf-{self.size}-d{self.dims}-k{self.realizations}"
            f"-s{self.seed}{ln}.zarr"
        )


class RotationalParams(_Params):
    """Rigid-rotor rotational spectra (1-D): random asymmetric tops, each at several (T, μ)."""

    points: int = Field(8192, ge=64, le=65536, description="Frequency grid points.")
    f_min: float = Field(2000.0, gt=0, description="Lowest frequency, MHz.")
    f_max: float = Field(26000.0, gt=0, description="Highest frequency, MHz.")
    rotors: int = Field(6, ge=1, le=1000, description="Random asymmetric tops.")
    per_rotor: int = Field(8, ge=1, le=1000, description="(T, μ) draws per molecule.")
    seed: int = Field(0, description="Seed of the molecules and draws.")
    normalization: Literal["log", "asinh", "minmax"] = Field(
        "log", description="Normalisation written with the spectra."
    )
    store: str | None = Field(None, description="Output store; default under data/stores.")

    def store_path(self) -> str:
        if self.store:
            return self.store
        name = f"rot-{self.points}-r{self.rotors}x{self.per_rotor}-s{self.seed}.zarr"
        return str(data_dir() / "stores" / name)


class InferParams(_Params):
    """After training: the posterior of the model's parameters for observed fields
    (``rho infer``; tasks.inference), logged into the run's MLflow record."""

    enabled: bool | None = Field(
        None,
        description="Run parameter inference. Default: on for gaussian_random_field (fresh "
        "realisations at a held-out condition; the exact posterior is logged beside the "
        "model's), off for the other datasets.",
    )
    fields: int = Field(2, ge=1, le=100, description="Observed fields to infer from.")
    method: Literal["elbo", "ode"] = Field(
        "elbo", description="elbo: variational bound (fast); ode: probability-flow ODE (exact)."
    )
    samples: int = Field(32, ge=2, le=4096, description="ELBO (λ, ε) draws per grid node (even).")
    points: int = Field(
        0, ge=0, le=201, description="Grid nodes per parameter (0: 41 for one, 15 for two)."
    )
    zoom: int = Field(
        2,
        ge=0,
        le=5,
        description="Refinement passes: after the pass over the training range, re-grid around "
        "the posterior (mean ± 5 std) — a 64² field's posterior is far narrower than the range.",
    )
    zoom_nodes: int = Field(
        9, ge=0, le=201, description="Nodes per parameter of each refinement grid (0: as points)."
    )
    whiten: bool = Field(
        True,
        description="Lay the refinement grids along the posterior's principal axes (rho infer "
        "--whiten): correlated parameters (a GRF's amplitude and index) are resolved with the "
        "same node count.",
    )
    temperature: float = Field(
        1.0,
        gt=0,
        le=10,
        description="Likelihood temperature τ (rho infer --temperature): the posterior uses "
        "p(x|θ)^τ; τ < 1 widens an over-confident model's posterior by ≈ 1/√τ. Fit it on "
        "separate simulated fields (rho_core.calibration); 1 leaves the likelihood as it is.",
    )

    @model_validator(mode="after")
    def _even(self):
        if self.samples % 2:
            raise ValueError(f"infer.samples must be even, got {self.samples}")
        return self

    def active(self, dataset: str) -> bool:
        return dataset == "gaussian_random_field" if self.enabled is None else self.enabled


# ------------------------------------------------------------------------------------ pipeline
def _recipe(path: Path) -> dict[str, Any]:
    """A recipe file's model/train/evaluate sections, complete (keys it leaves out take the
    rho_core.config defaults, as `rho train --config` reads it — not another recipe's values)."""
    return {k: v for k, v in resolve_config(path).to_dict().items() if k != "data"}


@cache
def _presets() -> dict[tuple[str, bool], dict[str, Any]]:
    """Per (dataset, quick): the pipeline sections that differ from the form's defaults' base.

    Full runs use the best measured recipe of the dataset (a ``configs/`` file); quick runs are
    minutes on 2 CPU cores.
    """
    sh32 = _recipe(DEFAULT_RECIPE)
    grf_recipe = REPO_ROOT / "configs" / "quality" / "grf64.yaml"
    grf = _recipe(grf_recipe) if grf_recipe.is_file() else {}
    spectra_recipe = REPO_ROOT / "configs" / "quality" / "spectra8k.yaml"
    spectra = _recipe(spectra_recipe) if spectra_recipe.is_file() else {}
    tiny_model = {
        "base_channels": 16,
        "channel_mult": [1, 2],
        "attention_levels": [],
        "cond_dim": 64,
        "patch_size": None,
        "refine_channels": 0,
    }
    quick_train = {
        "steps": 300,
        "batch_size": 4,
        "lr": 2e-3,
        "warmup_steps": 20,
        "ema_half_life_samples": 400.0,
        "cond_drop_prob": 0.0,
        "log_every": 25,
        "checkpoint_every": 0,  # only at the end: a quick run should not spend time saving
        "max_minutes": 0.0,
    }
    quick_eval = {"sampler": "ddim", "steps": 20, "max_conditions": 4}
    plain_2d = {"patch_size": None, "refine_channels": 0}
    stationary = {"prediction": "v", "spectral_head": 32, "circular": True, "fourier_features": 1}
    quick = {"model": tiny_model, "train": quick_train, "evaluate": quick_eval}
    return {
        ("spherical_harmonics", False): sh32,
        # x0-prediction: on the tiny set it reaches W1 ≈ 0.02 in 300 steps where ε-prediction
        # stays near 0.15-0.25 (an ε-model's x̂₀ = (x_t − σ ε̂)/α amplifies its errors).
        ("spherical_harmonics", True): {"data": {"size": 16, "l_max": 2}, **quick},
        ("hydrogen", False): {**sh32, "hydrogen": {"size": 32, "n_max": 3}},
        ("hydrogen", True): {"hydrogen": {"size": 16, "n_max": 2}, **quick},
        # 2-D images: not measured yet; the plain model defaults, not the 3-D patch-4 recipe
        ("galaxy_merger", False): {"model": plain_2d, "train": {"steps": 20000, "batch_size": 16}},
        ("galaxy_merger", True): {
            "galaxy_merger": {"image_size": 32, "n_particles": 500, "t_end": 20.0},
            **quick,
        },
        ("bonsai", False): {"model": plain_2d, "train": {"steps": 20000, "batch_size": 16}},
        ("bonsai", True): quick,
        ("gaussian_random_field", False): grf,
        ("gaussian_random_field", True): {
            "random_field": {"size": 16, "realizations": 8, "amplitudes": [1.0]},
            **quick,
            # the full recipe's field-specific choices (configs/quality/grf64.yaml)
            "model": {**tiny_model, **stationary},
        },
        ("rotational_spectrum", False): spectra,
        ("rotational_spectrum", True): {
            "rotational": {"points": 1024, "rotors": 2, "per_rotor": 4},
            **quick,
        },
    }


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = _deep_merge(out[k], v) if nested else v
    return out


def _changed(values: dict, reference: dict) -> dict:
    """The leaves of ``values`` that differ from ``reference`` (nested dicts compared by key)."""
    out = {}
    for k, v in values.items():
        ref = reference.get(k, object())
        if isinstance(v, dict) and isinstance(ref, dict):
            sub = _changed(v, ref)
            if sub:
                out[k] = sub
        elif v != ref:
            out[k] = v
    return out


class PipelineParams(_Params):
    """End to end: data → normalisation → training → sampling + scores → figures → MLflow.

    The model, train and evaluate defaults shown are those of the default dataset's full run
    (the sh32-refine recipe); another dataset or quick starts from its own preset, and the
    fields you change win.
    """

    dataset: Dataset = Field(
        "spherical_harmonics",
        description="Which data to generate and train on; its own section below sets it up.",
    )
    data: SphericalHarmonicsParams = Field(
        default_factory=SphericalHarmonicsParams,
        description="dataset spherical_harmonics: the volumes.",
    )
    hydrogen: HydrogenParams = Field(
        default_factory=HydrogenParams, description="dataset hydrogen: the orbitals."
    )
    galaxy_merger: GalaxyMergerParams = Field(
        default_factory=GalaxyMergerParams,
        description="dataset galaxy_merger: the built-in merger simulations.",
    )
    bonsai: IngestBonsaiParams | None = Field(
        None, description="dataset bonsai: existing Bonsai snapshots to ingest (required there)."
    )
    random_field: RandomFieldParams = Field(
        default_factory=RandomFieldParams,
        description="dataset gaussian_random_field: the random-field grid.",
    )
    rotational: RotationalParams = Field(
        default_factory=RotationalParams,
        description="dataset rotational_spectrum: the molecules and frequency grid.",
    )
    model: ModelParams = Field(  # type: ignore[valid-type]
        default_factory=lambda: ModelParams.model_validate(_presets()[_DEFAULT]["model"])
    )
    train: TrainParams = Field(  # type: ignore[valid-type]
        default_factory=lambda: TrainParams.model_validate(_presets()[_DEFAULT]["train"])
    )
    evaluate: EvalParams = Field(default_factory=EvalParams)  # type: ignore[valid-type]
    infer: InferParams = Field(
        default_factory=InferParams,
        description="Parameter inference after training (default on for random fields).",
    )
    run_name: str | None = Field(None, description="MLflow run name; default a timestamp.")
    runs_dir: str | None = Field(None, description="Training runs folder; default data/runs.")
    register_model: bool = Field(True, description="Register the model and maybe move 'champion'.")

    @model_validator(mode="after")
    def _bonsai_needs_snapshots(self):
        if self.dataset == "bonsai" and self.bonsai is None:
            raise ValueError("dataset bonsai needs the bonsai section (snapshots and store)")
        return self


_DEFAULT = ("spherical_harmonics", False)


def preset_params(dataset: str = "spherical_harmonics", quick: bool = False) -> PipelineParams:
    """The parameters a pipeline run of ``dataset`` (quick or full) uses when nothing is changed
    (e.g. to prefill a deployment's form with the values that will run)."""
    if dataset not in DATASETS:
        raise ConfigError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    base = _deep_merge(
        {k: v for k, v in _presets()[_DEFAULT].items()}, {"dataset": dataset}
    )  # the default recipe's values are the form's defaults
    return PipelineParams.model_validate(_deep_merge(base, _presets()[(dataset, bool(quick))]))


def quick_preset(dataset: str = "spherical_harmonics") -> PipelineParams:
    """The README's quick job (≤ 5 min on 2 CPU cores)."""
    return preset_params(dataset, quick=True)


def resolve(params: PipelineParams | dict | None, quick: bool) -> PipelineParams:
    """The dataset's preset (``quick`` or full) with the fields ``params`` changed put over it.

    A field counts as changed when it was set and differs from the form's default
    (:class:`PipelineParams` ``()``): the Prefect UI submits every field, and would otherwise
    silently replace the whole preset.
    """
    if isinstance(params, dict):
        params = PipelineParams.model_validate(params)
    if params is None:
        return preset_params("spherical_harmonics", quick)
    defaults = PipelineParams().model_dump(mode="json")
    over = _changed(params.model_dump(mode="json", exclude_unset=True), defaults)
    base = preset_params(params.dataset, quick).model_dump(mode="json")
    return PipelineParams.model_validate(_deep_merge(base, over))

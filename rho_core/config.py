"""The one typed configuration of a run: model, training and evaluation settings, one set of
defaults, one resolver.

Every entry point reads its settings through :func:`resolve_config` — ``rho train --config``,
``rho pipeline --config``, the Prefect forms (``flows/params.py`` derives its pydantic models from
these dataclasses), the torchrun workers and the benchmarks — so a setting has exactly one
default, here, and a new model option is declared once (a field of :class:`ModelOptions`; the
network that reads it adds it to :class:`rho_core.unet.UNetConfig`, and
``tests/test_config.py`` fails if the two disagree).

A configuration file (YAML or JSON) holds up to four sections::

    model:    {prediction: x0, schedule_shift: -4.0, patch_size: 4, ...}   # ModelOptions
    train:    {steps: 40000, batch_size: 8, lr: 1.0e-3, max_minutes: 60}   # TrainConfig
    evaluate: {sampler: dpmpp, steps: 20}                                   # EvalConfig
    data:     {...}            # dataset options of the pipeline (flows/params.py checks them)

A file without sections is read as ``train`` keys (the older ``rho train --config`` form).
Unknown sections or keys raise :class:`ConfigError` naming the key and listing the valid ones.
The resolved configuration is written once per run, to ``RUN_DIR/config.json``
(:func:`rho_core.training.train`).

:class:`ModelOptions` are the store-independent choices;
:func:`rho_core.model.build_model_config` fits them to a store (dims, channels, parameter names
and ranges) and returns the :class:`rho_core.model.ModelConfig` that checkpoints record. This
module imports nothing else from the project but :mod:`rho_core.errors` (the bottom layer) and
the light pure checks of :mod:`rho_core.timesteps` and :mod:`rho_core.field_mean`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from rho_core.errors import ConfigError
from rho_core.field_mean import check_field_mean
from rho_core.timesteps import TimestepSampling, check_timestep_sampling

__all__ = [
    "ModelOptions",
    "TrainConfig",
    "EvalConfig",
    "RunConfig",
    "SECTIONS",
    "SCHEDULES",
    "PREDICTIONS",
    "WEIGHTINGS",
    "CONDITIONINGS",
    "PRECISIONS",
    "DEVICES",
    "SAMPLERS",
    "load_config_file",
    "resolve_config",
    "resolve_section",
    "flat_overrides",
    "field_help",
]

Schedule = Literal["linear", "cosine", "sigmoid"]
Prediction = Literal["eps", "x0", "v"]
Weighting = Literal["uniform", "min_snr"]
Conditioning = Literal["continuous", "hash", "none"]
Precision = Literal["fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda", "xpu", "mps"]
Sampler = Literal["ddpm", "ddim", "dpmpp"]

SCHEDULES: tuple[str, ...] = get_args(Schedule)
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)
CONDITIONINGS: tuple[str, ...] = get_args(Conditioning)
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEVICES: tuple[str, ...] = get_args(Device)
SAMPLERS: tuple[str, ...] = get_args(Sampler)

SECTIONS = ("model", "train", "evaluate", "data")


def _opt(default: Any, help: str) -> Any:  # noqa: A002 - the field's help text
    """A dataclass field with a default and its one-line help (shown in forms and ``--help``)."""
    if isinstance(default, list | dict):
        raise TypeError("use a tuple default")
    return field(default=default, metadata={"help": help})


def field_help(cls: type, name: str) -> str:
    """The help text of field ``name`` of a config dataclass (``""`` when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    _need(value in choices, f"{name} must be one of {tuple(choices)}, got {value!r}")


# ------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelOptions:
    """What a user chooses about the model (store-independent); fitted to a store by
    :func:`rho_core.model.build_model_config`.

    Defaults are the measured ones (docs/results.md): x₀-prediction, the cosine schedule shifted
    by −4 towards noise (so the condition, not x_t, decides which field is drawn), continuous
    conditioning, a 32-channel U-Net with levels ``(1, 2, 4)`` and attention at the coarsest one;
    3-D fields get 2³ patches (``patch_size=None``: 2 for 3-D data, 1 otherwise).
    """

    conditioning: Conditioning = _opt(
        "continuous",
        "Condition embedding: continuous (Fourier features of the numbers; interpolates), hash "
        "(the paper's SHA-512 bits; no interpolation) or none.",
    )
    cond_dim: int = _opt(128, "Width of the condition embedding.")
    fourier_features: int = _opt(16, "Fourier frequencies per parameter (continuous).")
    log_params: tuple[str, ...] = _opt(
        (),
        "Positive parameters the continuous embedding sees as log(p), e.g. [amplitude] for an "
        "amplitude spanning a decade (equal resolution per factor; docs/results.md 7).",
    )
    schedule: Schedule = _opt("cosine", "Noise schedule.")
    timesteps: int = _opt(1000, "Diffusion steps T.")
    prediction: Prediction = _opt(
        "x0",
        "What the network predicts: x0 (far better-conditioned on short budgets), eps (the "
        "paper's DDPM) or v.",
    )
    schedule_shift: float = _opt(
        -4.0,
        "Log-SNR shift of the schedule (0: the plain schedule; -4 makes the condition, not the "
        "noise, decide which field is drawn; docs/results.md).",
    )
    base_channels: int = _opt(32, "U-Net channels at the finest level.")
    channel_mult: tuple[int, ...] = _opt((1, 2, 4), "Channel multiplier per U-Net level.")
    num_res_blocks: int = _opt(1, "Residual blocks per level.")
    attention_levels: tuple[int, ...] | None = _opt(
        None, "Levels with self-attention (0 = finest); null: the coarsest level; [] for none."
    )
    num_heads: int = _opt(4, "Attention heads.")
    dropout: float = _opt(0.0, "Dropout inside residual blocks.")
    groups: int = _opt(8, "GroupNorm groups.")
    mid_attention: bool = _opt(True, "Self-attention in the middle block.")
    patch_size: int | None = _opt(
        None, "The stem works on p-sized patches; null: 2 for 3-D fields, 1 otherwise."
    )
    coord_channels: bool = _opt(False, "Append coordinate channels to the input.")
    fourier_channels: int = _opt(
        0, "Octaves of sin/cos position features appended to the input (0: none)."
    )
    learned_positions: int = _opt(
        0, "Grid size per axis of a learned additive position embedding (0: none)."
    )
    refine_channels: int = _opt(
        0, "Width of the full-resolution refinement head (0: none; needs patch_size > 1)."
    )
    out_channels: int | None = _opt(None, "Output channels; null: the field's channels.")
    spectral_head: int = _opt(
        0,
        "Hidden width of a conditioned isotropic Fourier filter added to the network output (0: "
        "none); the exact denoiser family of stationary Gaussian fields (rho_core.spectral_head).",
    )
    circular: bool = _opt(
        False, "Periodic (circular) padding in every convolution, for fields on a periodic box."
    )

    def __post_init__(self) -> None:
        _choice("conditioning", self.conditioning, CONDITIONINGS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("prediction", self.prediction, PREDICTIONS)
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "log_params", tuple(str(n) for n in self.log_params))
        _need(
            not self.log_params or self.conditioning == "continuous",
            f"log_params {list(self.log_params)} needs conditioning: continuous, "
            f"got {self.conditioning!r}",
        )
        if self.attention_levels is not None:
            levels = tuple(int(a) for a in self.attention_levels)
            object.__setattr__(self, "attention_levels", levels)
        shift = self.schedule_shift
        _need(
            not isinstance(shift, bool) and isinstance(shift, int | float),
            f"schedule_shift must be a number, got {shift!r}",
        )
        _need(
            math.isfinite(shift) and -10.0 <= shift <= 0.0,
            f"schedule_shift must be in [-10, 0], got {shift!r}",
        )
        object.__setattr__(self, "schedule_shift", float(shift))
        _need(int(self.timesteps) >= 2, f"timesteps must be ≥ 2, got {self.timesteps}")
        _need(self.cond_dim >= 1, f"cond_dim must be ≥ 1, got {self.cond_dim}")

    def unet_options(self, spatial_dims: int, channels: int) -> dict[str, Any]:
        """The :class:`rho_core.unet.UNetConfig` keyword arguments for a store's fields."""
        unet_names = {f.name for f in dataclasses.fields(ModelOptions)} - _NON_UNET
        kw = {k: getattr(self, k) for k in unet_names}
        if kw["attention_levels"] is None:
            kw["attention_levels"] = (len(self.channel_mult) - 1,)
        if kw["patch_size"] is None:
            kw["patch_size"] = 2 if int(spatial_dims) == 3 else 1
        if kw["out_channels"] is None:
            kw["out_channels"] = int(channels)
        return kw

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


_NON_UNET = frozenset(
    {"conditioning", "cond_dim", "fourier_features", "log_params", "schedule", "timesteps",
     "prediction", "schedule_shift"}
)  # fmt: skip


# ------------------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (plain values; written to ``RUN_DIR/config.json``).

    The global batch is ``batch_size × world_size × grad_accum``. ``max_minutes`` stops the loop
    cleanly (final checkpoint) when that much wall time has passed in this call; ``steps`` still
    sets the learning-rate schedule, so a resumed run continues it.
    """

    steps: int = _opt(2000, "Optimizer steps (the learning-rate schedule's length).")
    batch_size: int = _opt(8, "Samples per process per micro-step.")
    lr: float = _opt(2e-4, "Peak learning rate (AdamW).")
    warmup_steps: int = _opt(100, "Linear warm-up steps.")
    min_lr_ratio: float = _opt(0.0, "The cosine decays to lr × this at the last step.")
    weight_decay: float = _opt(0.0, "AdamW decoupled weight decay.")
    adam_beta1: float = _opt(0.9, "AdamW beta1.")
    adam_beta2: float = _opt(0.999, "AdamW beta2.")
    grad_clip: float = _opt(1.0, "Max global gradient norm (0: no clipping).")
    ema_half_life_samples: float = _opt(10_000.0, "EMA half-life in samples seen.")
    ema_rampup_ratio: float | None = _opt(
        0.05, "EMA half-life at most this × samples seen (null: no ramp-up)."
    )
    grad_accum: int = _opt(1, "Micro-steps per optimizer step.")
    precision: Precision = _opt("fp32", "Autocast precision: fp32, bf16 or fp16 (CUDA/XPU).")
    compile: bool = _opt(False, "Run the network through torch.compile.")
    cond_drop_prob: float = _opt(0.1, "Classifier-free guidance: probability of dropping it.")
    weighting: Weighting = _opt("uniform", "Loss weighting: uniform or min_snr.")
    min_snr_gamma: float = _opt(5.0, "γ of the min-SNR weighting.")
    timestep_sampling: TimestepSampling = _opt(
        "uniform",
        "Which steps t a batch sees: uniform, or logit_normal (t/T = sigmoid(loc + scale·z), "
        "mixed with uniform; rho_core.timesteps).",
    )
    timestep_loc: float = _opt(0.0, "logit_normal: centre of logit(t/T).")
    timestep_scale: float = _opt(1.0, "logit_normal: spread of logit(t/T).")
    timestep_uniform_mix: float = _opt(
        0.0, "logit_normal: fraction of each batch drawn uniformly over all steps."
    )
    seed: int = _opt(0, "Seeds the initial weights, data order and noise.")
    checkpoint_every: int = _opt(500, "Checkpoint every N steps (0: only at the end).")
    checkpoint_every_seconds: float = _opt(0.0, "Also checkpoint after this much wall time.")
    keep_checkpoints: int = _opt(3, "Newest checkpoints kept on disk.")
    log_every: int = _opt(50, "Steps between log lines and loss-curve points.")
    device: Device = _opt("auto", "auto picks CUDA, then XPU, then MPS, then CPU.")
    num_workers: int = _opt(0, "DataLoader worker processes.")
    max_minutes: float = _opt(
        0.0, "Wall-time budget in minutes; stops cleanly with a checkpoint (0: none)."
    )
    nproc: int = _opt(1, "Processes per node (torchrun data parallel; 1: in-process).")
    init_from: str | None = _opt(
        None,
        "Fine-tune: start from this checkpoint's weights (its EMA when saved) with a fresh "
        "optimizer and schedule; the model configuration must match (ignored on resume).",
    )

    def __post_init__(self) -> None:
        need = _need
        need(self.steps >= 1, f"steps must be ≥ 1, got {self.steps}")
        need(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        need(self.grad_accum >= 1, f"grad_accum must be ≥ 1, got {self.grad_accum}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.warmup_steps >= 0, f"warmup_steps must be ≥ 0, got {self.warmup_steps}")
        need(
            0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"
        )
        need(self.weight_decay >= 0, "weight_decay must be ≥ 0")
        need(self.grad_clip >= 0, f"grad_clip must be ≥ 0, got {self.grad_clip}")
        need(self.ema_half_life_samples > 0, "ema_half_life_samples must be > 0")
        need(
            self.ema_rampup_ratio is None or self.ema_rampup_ratio > 0,
            "ema_rampup_ratio must be > 0 or null",
        )
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}")
        need(
            0 <= self.cond_drop_prob < 1, f"cond_drop_prob must be in [0, 1): {self.cond_drop_prob}"
        )
        need(self.weighting in WEIGHTINGS, f"weighting must be one of {WEIGHTINGS}")
        need(self.min_snr_gamma > 0, "min_snr_gamma must be > 0")
        check_timestep_sampling(
            self.timestep_sampling, self.timestep_loc, self.timestep_scale,
            self.timestep_uniform_mix,
        )  # fmt: skip
        need(self.checkpoint_every >= 0, "checkpoint_every must be ≥ 0")
        need(self.checkpoint_every_seconds >= 0, "checkpoint_every_seconds must be ≥ 0")
        need(self.keep_checkpoints >= 1, "keep_checkpoints must be ≥ 1")
        need(self.log_every >= 1, "log_every must be ≥ 1")
        need(self.num_workers >= 0, "num_workers must be ≥ 0")
        need(
            self.max_minutes >= 0 and math.isfinite(self.max_minutes),
            f"max_minutes must be ≥ 0 (0: no budget), got {self.max_minutes}",
        )
        need(1 <= self.nproc <= 1024, f"nproc must be in [1, 1024], got {self.nproc}")
        # A typo such as "gpu" would otherwise only fail deep inside the loop.
        dev = str(self.device).split(":")[0]
        need(dev in DEVICES, f"device must be one of {DEVICES} (or cuda:N), got {self.device!r}")

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


# ---------------------------------------------------------------------------------- evaluate
@dataclass(frozen=True)
class EvalConfig:
    """Sampling and scoring (:func:`rho_core.evaluation.evaluate`).

    One sample per distinct condition of the store (at most ``max_conditions``, evenly spaced);
    batch ``k`` of ``batch_size`` samples draws its noise from a CPU generator seeded
    ``seed + k``. ``clip_x0`` (off by default) clips the sampler's x̂₀ estimate to ±clip_x0 in the
    normalised space at every step.
    """

    sampler: Sampler = _opt("dpmpp", "Sampler: dpmpp (DPM-Solver++), ddim or ddpm.")
    steps: int = _opt(50, "Sampler steps (denoiser evaluations).")
    guidance: float = _opt(1.0, "Classifier-free guidance scale (1: none).")
    eta: float = _opt(0.0, "DDIM stochasticity (0: deterministic).")
    seed: int = _opt(0, "Seed of the sampler noise.")
    max_conditions: int | None = _opt(
        16, "Conditions scored, evenly spaced over the store (null or 0: all)."
    )
    batch_size: int = _opt(16, "Samples generated at once.")
    clip_x0: float | None = _opt(
        None, "Clip the predicted clean field to ±clip_x0 (normalised) at every step; null: off."
    )
    precision: Precision = _opt("fp32", "Autocast precision of the network while sampling.")
    device: Device = _opt("auto", "auto picks CUDA, then XPU, then MPS, then CPU.")
    field_mean: float | Literal["auto"] | None = _opt(
        "auto",
        "Set each drawn field's spatial mean to this (physical units); auto: the exact mean the "
        "store's kind guarantees (0 for Gaussian random fields, off otherwise); null: off.",
    )

    def __post_init__(self) -> None:
        _choice("sampler", self.sampler, SAMPLERS)
        _need(self.steps >= 1, f"evaluate steps must be ≥ 1, got {self.steps}")
        _need(self.guidance >= 0, f"guidance must be ≥ 0, got {self.guidance}")
        _need(self.batch_size >= 1, f"evaluate batch_size must be ≥ 1, got {self.batch_size}")
        _need(
            self.max_conditions is None or self.max_conditions >= 0,
            f"max_conditions must be ≥ 0 or null, got {self.max_conditions}",
        )
        _need(self.clip_x0 is None or self.clip_x0 > 0, "clip_x0 must be > 0 or null")
        _choice("precision", self.precision, PRECISIONS)
        check_field_mean(self.field_mean)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


# ---------------------------------------------------------------------------------- resolver
@dataclass(frozen=True)
class RunConfig:
    """The resolved sections of one configuration; ``data`` is passed through unchecked (the
    pipeline validates it for the chosen dataset; ``rho train`` takes its store from ``--data``)."""

    model: ModelOptions = field(default_factory=ModelOptions)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "evaluate": self.evaluate.to_dict(),
            "data": dict(self.data),
        }


_CLASSES: dict[str, type] = {"model": ModelOptions, "train": TrainConfig, "evaluate": EvalConfig}

#: Older spellings still accepted (section → {old key: function(value) → {new key: value}}).
ALIASES: dict[str, dict[str, Any]] = {
    "model": {"attention": lambda v: {"attention_levels": None if _truthy(v) else ()}},
    "evaluate": {"n_conditions": lambda v: {"max_conditions": v}},
}


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def _plain(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, tuple | list):
        return [_plain(v) for v in d]
    return d


def load_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML (or JSON) mapping; a missing or malformed file → :class:`ConfigError`."""
    import yaml

    p = Path(path)
    if not p.exists() or p.is_dir():  # (a pipe such as bash's <(...) is fine)
        raise ConfigError(f"config file {p} does not exist")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    return d


def _hint_name(hint: Any) -> str:
    """``float`` → "a float", ``Literal["auto"]`` → "'auto'" (for error messages)."""
    if get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in get_args(hint))
    return f"a {getattr(hint, '__name__', str(hint))}"


def _coerce(section: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the field type ``hint`` (ints, floats, bools, choices, tuples)."""
    where = f"{section}.{key}"
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(section, key, value, inner[0])
        for hint_k in inner:  # e.g. float | Literal["auto"]: the first member that takes it
            try:
                return _coerce(section, key, value, hint_k)
            except ConfigError:
                continue
        kinds = " or ".join(_hint_name(h) for h in inner)
        null = " or null" if type(None) in args else ""
        raise ConfigError(f"{where}={value!r} must be {kinds}{null}")
    if value is None:
        raise ConfigError(f"{where} must not be null")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {args}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(section, key, v, args[0]) for v in value)
    try:
        if hint is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{where}={value!r} must be of type {name}") from None
    return value


def resolve_section(
    section: str, base: Mapping[str, Any] | None = None, *overrides: Mapping[str, Any] | None
):
    """One config dataclass (``section``: model, train or evaluate) from ``base`` keys and
    ``overrides`` layers, later layers winning. In ``base`` (a file) ``null`` is a value (e.g.
    ``ema_rampup_ratio: null``); in overrides ``None`` means "not set". Unknown keys →
    :class:`ConfigError` naming the key and listing the valid ones."""
    cls = _CLASSES[section]
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    merged: dict[str, Any] = {}
    for i, layer in enumerate((base, *overrides)):
        for k, v in dict(layer or {}).items():
            if v is None and i > 0:
                continue
            if k in ALIASES.get(section, {}):
                merged.update(ALIASES[section][k](v))
            else:
                merged[k] = v
    unknown = sorted(set(merged) - set(valid))
    if unknown:
        label = {"train": "training", "evaluate": "evaluation"}.get(section, section)
        raise ConfigError(
            f"unknown {label} config keys {unknown} (section {section}:); valid keys: "
            f"{', '.join(valid)}"
        )
    kw = {k: _coerce(section, k, v, hints[k]) for k, v in merged.items()}
    return cls(**kw)


def _sections(d: Mapping[str, Any]) -> dict[str, dict]:
    """Split a config mapping into its sections (a mapping without any is ``train`` keys)."""
    if not any(k in SECTIONS for k in d):
        return {"train": dict(d)}
    extra = sorted(set(d) - set(SECTIONS))
    if extra:
        raise ConfigError(
            f"unknown config section{'s' if len(extra) > 1 else ''} {extra}; use "
            f"{', '.join(s + ':' for s in SECTIONS)}"
        )
    out = {}
    for s in SECTIONS:
        v = d.get(s)
        if v is not None and not isinstance(v, Mapping):
            raise ConfigError(f"config section {s}: must be a mapping of keys to values")
        out[s] = dict(v or {})
    return out


def resolve_config(
    source: RunConfig | Mapping[str, Any] | str | os.PathLike | None = None,
    *overrides: Mapping[str, Any] | None,
) -> RunConfig:
    """Resolve a :class:`RunConfig` from a file, a mapping or a config, plus override layers.

    Each override is a mapping with sections (``{"train": {"steps": 5}}``) or with dotted keys
    (``{"train.steps": 5}``); later layers win, ``None`` values are ignored. Defaults are the
    dataclass defaults. Unknown sections or keys raise :class:`ConfigError`.
    """
    if source is None:
        base: dict[str, dict] = {}
    elif isinstance(source, RunConfig):
        base = source.to_dict()
    elif isinstance(source, Mapping):
        base = _sections(source)
    else:
        base = _sections(load_config_file(source))
    layers = [base]
    for over in overrides:
        if not over:
            continue
        nested: dict[str, dict] = {}
        for k, v in over.items():
            sec, dot, key = str(k).partition(".")
            if dot:
                if sec not in SECTIONS:
                    raise ConfigError(f"unknown config section {sec!r} in {k!r}")
                nested.setdefault(sec, {})[key] = v
            elif k in SECTIONS:
                if v is not None:
                    nested.setdefault(k, {}).update(dict(v))
            else:
                raise ConfigError(f"override {k!r} names no section; write e.g. train.{k}")
        layers.append(nested)
    data: dict = {}
    for layer in layers:
        data.update(layer.get("data") or {})
    sec = {s: [layer.get(s) for layer in layers] for s in ("model", "train", "evaluate")}
    return RunConfig(
        model=resolve_section("model", *sec["model"]),
        train=resolve_section("train", *sec["train"]),
        evaluate=resolve_section("evaluate", *sec["evaluate"]),
        data=data,
    )


def dumps(cfg: RunConfig) -> str:
    """JSON text of a resolved configuration."""
    return json.dumps(cfg.to_dict(), indent=2)


def flat_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Dotted overrides from a flat mapping of train keys and model keys (``{"steps": 5,
    "conditioning": "hash"}`` → ``{"train.steps": 5, "model.conditioning": "hash"}``), the form
    command-line options take; a key of neither section → :class:`ConfigError`."""
    model_keys = {f.name for f in dataclasses.fields(ModelOptions)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for k, v in dict(overrides or {}).items():
        if "." in k:
            out[k] = v
        elif k in train_keys:
            out[f"train.{k}"] = v
        elif k in model_keys:
            out[f"model.{k}"] = v
        else:
            raise ConfigError(
                f"unknown training config keys {[k]}; valid keys: {', '.join(sorted(train_keys))}"
            )
    return out

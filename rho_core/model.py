"""The conditional diffusion model: U-Net + conditioner + noise schedule + prediction type.

:class:`DiffusionModel` is the one place where the network output is interpreted. Its
``forward(x_t, t, params, drop)`` returns the raw network output (ε, x₀ or v, per
``ModelConfig.prediction``); :meth:`DiffusionModel.denoiser` converts it to the ε-prediction that
:func:`rho_core.samplers.sample` expects, and :meth:`DiffusionModel.loss` draws
``t ~ U{0..T−1}``, ``ε ~ N(0, I)`` and the classifier-free drop mask from an injected generator and
returns the per-sample loss

    L_i = w(t_i) · mean‖f_θ(x_t, t_i, c_i) − target_i‖²,   x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε,

with ``target`` and ``w`` (uniform or min-SNR-γ) from :mod:`rho_core.diffusion`.

Shapes: ``x (B, C, *spatial)``, ``t (B,) int64 in [0, T)``, ``params (B, P) float64`` with
columns in ``ModelConfig.param_names`` order (or ``(1, P)``/``(P,)``, broadcast over the batch).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rho_core.conditioning import ConditionerConfig, build_conditioner
from rho_core.config import PREDICTIONS, SCHEDULES, WEIGHTINGS, ModelOptions, resolve_section
from rho_core.diffusion import diffusion_loss, eps_from_output
from rho_core.errors import ConfigError
from rho_core.schedules import make_schedule
from rho_core.unet import UNet, UNetConfig
from rho_core.utils import append_dims

__all__ = [
    "ModelConfig",
    "DiffusionModel",
    "default_model_config",
    "build_model_config",
    "model_config_for_store",
    "conditioner_to_dict",
]


def conditioner_to_dict(cfg: ConditionerConfig) -> dict:
    """Plain-JSON form of a :class:`ConditionerConfig` (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def _conditioner_from_dict(d: dict) -> ConditionerConfig:
    valid = {f.name for f in dataclasses.fields(ConditionerConfig)}
    unknown = set(d) - valid
    if unknown:
        raise ConfigError(
            f"unknown conditioning config keys {sorted(unknown)}; valid: {sorted(valid)}"
        )
    return ConditionerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`DiffusionModel` (stored in every checkpoint).

    ``unet.cond_dim`` is set from ``conditioning`` (``dim``, or 0 for kind ``"none"``). The field
    defaults are what checkpoints written before a field existed mean (``schedule_shift=0``:
    the plain schedule), not what a new run uses — new runs get the defaults of
    :class:`rho_core.config.ModelOptions` through :meth:`ModelOptions.build
    <rho_core.config.ModelOptions.build>`.
    """

    unet: UNetConfig
    conditioning: ConditionerConfig
    schedule: str = "cosine"
    timesteps: int = 1000
    prediction: str = "eps"
    schedule_shift: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.prediction not in PREDICTIONS:
            raise ConfigError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if int(self.timesteps) < 2:
            raise ConfigError(f"timesteps must be ≥ 2, got {self.timesteps}")
        shift = self.schedule_shift
        if isinstance(shift, bool) or not isinstance(shift, int | float):
            raise ConfigError(f"schedule_shift must be a number, got {shift!r}")
        if not (math.isfinite(shift) and -10.0 <= shift <= 0.0):
            raise ConfigError(f"schedule_shift must be in [-10, 0], got {shift!r}")
        object.__setattr__(self, "schedule_shift", float(shift))
        cond_dim = 0 if self.conditioning.kind == "none" else int(self.conditioning.dim)
        if self.unet.cond_dim != cond_dim:
            object.__setattr__(self, "unet", dataclasses.replace(self.unet, cond_dim=cond_dim))

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.conditioning.param_names)

    def to_dict(self) -> dict:
        """Plain-JSON form, the inverse of :meth:`from_dict`."""
        return {
            "unet": self.unet.to_dict(),
            "conditioning": conditioner_to_dict(self.conditioning),
            "schedule": self.schedule,
            "timesteps": int(self.timesteps),
            "prediction": self.prediction,
            "schedule_shift": self.schedule_shift,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - valid
        if unknown:
            raise ConfigError(
                f"unknown model config keys {sorted(unknown)}; valid: {sorted(valid)}"
            )
        d = dict(d)
        d["unet"] = UNetConfig.from_dict(d["unet"])
        d["conditioning"] = _conditioner_from_dict(d["conditioning"])
        return cls(**d)


def build_model_config(
    options: ModelOptions,
    spatial_dims: int,
    channels: int,
    param_names: Sequence[str],
    param_low: Sequence[float],
    param_high: Sequence[float],
) -> ModelConfig:
    """The :class:`ModelConfig` of ``options`` for fields of ``spatial_dims`` dims and
    ``channels`` channels conditioned on ``param_names`` over ``[param_low, param_high]`` (the
    continuous embedding maps that range to [−1, 1]); no parameters → ``conditioning="none"``."""
    kind = options.conditioning if list(param_names) else "none"
    unet = UNetConfig(
        dims=int(spatial_dims),
        in_channels=int(channels),
        **options.unet_options(spatial_dims, channels),
    )
    cond = ConditionerConfig(
        kind=kind,
        dim=int(options.cond_dim),
        param_names=tuple(param_names),
        param_low=tuple(float(v) for v in param_low),
        param_high=tuple(float(v) for v in param_high),
        fourier_features=int(options.fourier_features),
        log_params=tuple(options.log_params) if kind == "continuous" else (),
    )
    return ModelConfig(
        unet=unet,
        conditioning=cond,
        schedule=options.schedule,
        timesteps=int(options.timesteps),
        prediction=options.prediction,
        schedule_shift=options.schedule_shift,
    )


def model_config_for_store(options: ModelOptions, store: str | os.PathLike) -> ModelConfig:
    """:func:`build_model_config` for the fields, parameter names and ranges of the store at
    ``store`` (a parameter with a single value gets the range ``[v, v + 1]``)."""
    from rho_core.data.store import open_store

    s = open_store(store)
    names = list(s.param_names)
    ranges = s.param_ranges()
    low = [float(ranges[n][0]) for n in names]
    high = [float(ranges[n][1]) for n in names]
    high = [h if h > lo else lo + 1.0 for lo, h in zip(low, high, strict=True)]
    return build_model_config(options, s.spatial_dims, int(s.field_shape[0]), names, low, high)


def default_model_config(
    spatial_dims: int,
    channels: int,
    param_names: Sequence[str],
    param_low: Sequence[float],
    param_high: Sequence[float],
    **options,
) -> ModelConfig:
    """The :class:`ModelConfig` of :class:`rho_core.config.ModelOptions` (``options``: its
    fields, e.g. ``prediction="eps"``, ``patch_size=1``) for fields of ``spatial_dims`` dims and
    ``channels`` channels conditioned on ``param_names`` over ``[param_low, param_high]``.

    The defaults and the measurements behind them live in :class:`rho_core.config.ModelOptions`
    (one home): x₀-prediction, ``schedule_shift=−4``, continuous conditioning, a 32-channel
    ``(1, 2, 4)`` U-Net, ``patch_size=2`` for 3-D fields (sizes divisible by 8).
    """
    valid = {f.name for f in dataclasses.fields(ModelOptions)}
    unknown = set(options) - valid
    if unknown:
        raise ConfigError(
            f"unknown UNet options {sorted(unknown)} (model options); valid: {sorted(valid)}"
        )
    opts = resolve_section("model", options)
    return build_model_config(opts, spatial_dims, channels, param_names, param_low, param_high)


def _time_tensor(t, x_t: torch.Tensor) -> torch.Tensor:
    """``t`` as a 1-D tensor on ``x_t``'s device: int64 for integer timesteps (also integral
    floats: bit-identical to the int64 path), float64 for fractional ones (``t`` in [0, T−1],
    log-SNR interpolated linearly between steps, :meth:`Schedule.log_snr_at`; the sinusoidal
    time embedding takes the real t as it is). Used by :mod:`rho_core.likelihood`."""
    t = torch.as_tensor(t, device=x_t.device).reshape(-1)
    if t.is_floating_point() and not bool((t == t.round()).all()):
        return t.to(torch.float64)
    return t.to(torch.int64)


class DiffusionModel(nn.Module):
    """U-Net + conditioner + schedule; see the module docstring for the maths and shapes."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.net = UNet(cfg.unet)
        self.conditioner = (
            None if cfg.conditioning.kind == "none" else build_conditioner(cfg.conditioning)
        )
        self.schedule = make_schedule(cfg.schedule, cfg.timesteps, shift=cfg.schedule_shift)
        self.prediction = cfg.prediction

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.cfg.param_names

    @property
    def timesteps(self) -> int:
        return int(self.cfg.timesteps)

    def _check_params(self, params: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if params is None:
            return None
        params = torch.as_tensor(params)
        if params.ndim == 1:
            params = params[None]
        names = self.param_names
        if params.ndim != 2 or params.shape[1] != len(names):
            raise ConfigError(
                f"model is conditioned on {len(names)} parameters {list(names)}, got params of "
                f"shape {tuple(params.shape)}; pass one column per name in this order"
            )
        if params.shape[0] == 1 and batch != 1:
            params = params.expand(batch, -1)
        elif params.shape[0] != batch:
            raise ConfigError(f"params has {params.shape[0]} rows for a batch of {batch}")
        return params.to(torch.float64)

    def embed(
        self, params: torch.Tensor | None, batch: int, drop: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Condition embedding ``(B, cond_dim)``; ``params=None`` or ``drop[i]`` → learned null."""
        if self.conditioner is None:
            return None
        params = self._check_params(params, batch)
        emb = self.conditioner(params, drop)
        if emb.shape[0] == 1 and batch != 1:
            emb = emb.expand(batch, -1)
        return emb

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        params: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw network output ``(B, C, *spatial)`` (ε, x₀ or v per ``cfg.prediction``).

        ``t`` may be fractional (a float tensor in [0, T−1], see :func:`_time_tensor`).
        """
        t = _time_tensor(t, x_t)
        if t.shape[0] == 1 and x_t.shape[0] != 1:
            t = t.expand(x_t.shape[0])
        return self.net(x_t, t, self.embed(params, x_t.shape[0], drop))

    def denoiser(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        params: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε-prediction ``(B, C, *spatial)`` for :func:`rho_core.samplers.sample`.

        ``drop (B,) bool``: rows that get the unconditional (null) embedding, so classifier-free
        guidance can evaluate the conditional and unconditional halves in one batched call
        (``denoiser.accepts_drop`` tells :func:`rho_core.samplers.guided_eps` it may).
        """
        t = _time_tensor(t, x_t)
        if t.shape[0] == 1 and x_t.shape[0] != 1:
            t = t.expand(x_t.shape[0])
        out = self(x_t, t, params, drop).to(x_t.dtype)
        if t.is_floating_point():  # fractional t: ᾱ from the schedule's log-SNR interpolation
            abar = append_dims(self.schedule.alpha_bar_at(t), x_t.ndim)
            alpha, sigma = abar.sqrt().to(x_t.dtype), (1.0 - abar).sqrt().to(x_t.dtype)
            if self.prediction == "x0":
                return ((x_t - alpha * out) / sigma).to(x_t.dtype)
            if self.prediction == "v":
                return (sigma * x_t + alpha * out).to(x_t.dtype)
            return out
        return eps_from_output(self.prediction, self.schedule, x_t, t, out).to(x_t.dtype)

    denoiser.accepts_drop = True  # type: ignore[attr-defined]

    def eps_linear_multiplier(
        self, t: torch.Tensor, params: torch.Tensor | None, spatial: tuple[int, ...]
    ) -> torch.Tensor | None:
        """The part of ∂ε̂/∂x_t that the spectral head contributes, as a real Fourier multiplier
        on the full FFT grid, float64 ``(B, C, *spatial)`` (None without a head): the head adds
        ``ifftn(g · fftn(x_t))`` to the network output, so ε̂ gets ``m = g`` (ε-prediction),
        ``α g`` (v: ε̂ = σ x_t + α v) or ``−(α/σ) g`` (x₀: ε̂ = (x_t − α x̂₀)/σ). Fractional
        ``t`` as in :meth:`denoiser`. Used by the likelihood's ``control_variate="head"``."""
        x_like = torch.zeros(1, dtype=torch.float32, device=next(self.parameters()).device)
        t = _time_tensor(t, x_like)
        emb_cond = self.embed(params, t.reshape(-1).shape[0], None)
        g = self.net.spectral_multiplier(t, emb_cond, spatial)
        if g is None:
            return None
        g = g.to(torch.float64)
        if self.prediction == "eps":
            return g
        abar = self.schedule.alpha_bar_at(t.to(torch.float64) if t.is_floating_point() else t)
        abar = append_dims(abar.to(torch.float64), g.ndim)
        alpha, sigma = abar.sqrt(), (1.0 - abar).sqrt()
        return alpha * g if self.prediction == "v" else -(alpha / sigma) * g

    def loss_from_noise(
        self,
        x0: torch.Tensor,
        params: torch.Tensor | None,
        t: torch.Tensor,
        noise: torch.Tensor,
        drop: torch.Tensor | None = None,
        weighting: str = "uniform",
        gamma: float = 5.0,
        forward: Callable | None = None,
    ) -> torch.Tensor:
        """Per-sample loss ``(B,)`` for given ``t``, ``noise`` and drop mask.

        ``forward`` is the callable that runs the network (default ``self``); the training loop
        passes its DistributedDataParallel / compiled wrapper of this module here.
        """
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        fwd = self if forward is None else forward
        dtype = x0.dtype

        def model_fn(x_t: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            # float32 in, float32 out: autocast may run the convolutions in bf16/fp16, but the
            # squared error is always formed in float32.
            return fwd(x_t.to(dtype), tt, params, drop).float()

        loss = diffusion_loss(
            model_fn, x0, t, noise, self.schedule, self.prediction, weighting, gamma
        )
        return loss.float()

    def loss(
        self,
        x0: torch.Tensor,
        params: torch.Tensor | None,
        generator: torch.Generator | None = None,
        drop_prob: float = 0.0,
        weighting: str = "uniform",
        gamma: float = 5.0,
        forward: Callable | None = None,
    ) -> torch.Tensor:
        """Per-sample loss ``(B,)`` with ``t``, ``ε`` and the drop mask drawn from ``generator``.

        The draws happen on the generator's device (CPU for a default generator) and are moved
        to ``x0.device``, so a fixed generator gives the same loss on every device.
        """
        b = x0.shape[0]
        gdev = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, self.timesteps, (b,), generator=generator, device=gdev)
        noise = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype)
        drop = torch.rand(b, generator=generator, device=gdev) < drop_prob
        dev = x0.device
        return self.loss_from_noise(
            x0, params, t.to(dev), noise.to(dev), drop.to(dev), weighting, gamma, forward
        )

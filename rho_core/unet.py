"""One U-Net for 1-D, 2-D and 3-D fields, conditioned on time and on a parameter embedding.

Architecture (Ho et al. 2020; Dhariwal & Nichol 2021), written once for any number of spatial
dims through the :func:`conv_nd` factory:

* an input convolution ``C_in → base_channels``;
* ``L = len(channel_mult)`` levels; level ``ℓ`` has ``base_channels · channel_mult[ℓ]`` channels
  and ``num_res_blocks`` residual blocks, each optionally followed by multi-head self-attention
  when ``ℓ ∈ attention_levels``; between levels a stride-2 convolution halves **every** spatial
  axis (a 32³ volume becomes 16³, 8³, …; never the video-style ``(1, 2, 2)`` stride);
* a middle block ``res → attention → res`` at the coarsest resolution;
* the mirrored decoder: per level ``num_res_blocks + 1`` residual blocks on the concatenation with
  the matching skip activation, then nearest-neighbour ×2 up-sampling on every axis + convolution
  to the finer level's width;
* ``GroupNorm → SiLU → conv`` to ``out_channels``, zero-initialised so the untrained network
  outputs exactly 0 (the ε-prediction of "no information").

Conditioning. The timestep ``t`` (int64 in ``[0, T)``) is embedded sinusoidally,

    e_t[k] = cos(t · ω_k),  e_t[k + d/2] = sin(t · ω_k),  ω_k = 10000^(−k/(d/2)),  k < d/2,

and mapped by an MLP to ``emb_dim = 4 · base_channels``. A condition embedding ``c`` of width
``cond_dim`` (from :mod:`rho_core.conditioning`) is projected by a linear layer and added. Every
residual block receives the joint embedding ``e`` and applies it as FiLM (scale-shift) after its
second normalisation:

    h ← GroupNorm(h) · (1 + γ(e)) + β(e),   (γ, β) = Linear(SiLU(e)).

Shapes: input ``x (B, C_in, *spatial)`` with ``len(spatial) == dims``, every spatial size divisible
by ``2^(L−1)``; output ``(B, C_out, *spatial)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rho_core.errors import ConfigError

__all__ = ["UNetConfig", "UNet", "conv_nd", "timestep_embedding"]


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet`.

    Attributes:
        dims: number of spatial dimensions, 1, 2 or 3.
        in_channels / out_channels: field channels ``C`` in and out.
        base_channels: channels of the first level; must be divisible by ``groups``.
        channel_mult: per-level channel multipliers; ``len(channel_mult) − 1`` down-samplings.
        num_res_blocks: residual blocks per level in the encoder (decoder uses one more).
        attention_levels: level indices (0 = full resolution) that get self-attention.
        num_heads: attention heads; each level's channels must be divisible by it.
        dropout: dropout probability inside residual blocks.
        cond_dim: width of the condition embedding passed to ``forward`` (0: unconditional).
        groups: GroupNorm groups.
        mid_attention: self-attention in the middle block.
    """

    dims: int = 3
    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)
    num_heads: int = 4
    dropout: float = 0.0
    cond_dim: int = 0
    groups: int = 8
    mid_attention: bool = True

    def __post_init__(self) -> None:
        # Accept lists (from JSON/YAML) but store tuples so the config stays hashable.
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        if self.dims not in (1, 2, 3):
            raise ConfigError(f"UNet dims must be 1, 2 or 3, got {self.dims}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"channel_mult must be positive integers, got {self.channel_mult}")
        if self.base_channels < 1 or self.base_channels % self.groups:
            raise ConfigError(
                f"base_channels={self.base_channels} must be a positive multiple of "
                f"groups={self.groups}"
            )
        if self.num_res_blocks < 1:
            raise ConfigError(f"num_res_blocks must be ≥ 1, got {self.num_res_blocks}")
        bad = [a for a in self.attention_levels if not 0 <= a < len(self.channel_mult)]
        if bad:
            raise ConfigError(
                f"attention_levels {bad} outside the {len(self.channel_mult)} levels "
                f"0..{len(self.channel_mult) - 1}"
            )
        for m in self.channel_mult:
            if (self.base_channels * m) % self.num_heads:
                raise ConfigError(
                    f"channels {self.base_channels * m} not divisible by num_heads={self.num_heads}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.cond_dim < 0 or self.in_channels < 1 or self.out_channels < 1:
            raise ConfigError("cond_dim must be ≥ 0 and in/out channels ≥ 1")

    @property
    def depth(self) -> int:
        """Number of ×2 down-samplings, ``len(channel_mult) − 1``."""
        return len(self.channel_mult) - 1

    def to_dict(self) -> dict:
        """Plain-JSON form (tuples become lists)."""
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_levels"] = list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        valid = set(cls.__dataclass_fields__)
        unknown = set(d) - valid
        if unknown:
            raise ConfigError(f"unknown UNet config keys {sorted(unknown)}; valid: {sorted(valid)}")
        return cls(**d)

    def check_spatial(self, spatial: tuple[int, ...] | list[int]) -> None:
        """Raise :class:`ConfigError` unless ``spatial`` has ``dims`` sizes divisible by 2^depth."""
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) != self.dims:
            raise ConfigError(
                f"UNet built for {self.dims}-D fields got {len(spatial)} spatial dims {spatial}; "
                f"inputs must be (B, C, {', '.join('S' * self.dims)})"
            )
        factor = 2**self.depth
        bad = [s for s in spatial if s % factor or s < factor]
        if bad:
            raise ConfigError(
                f"spatial size {spatial} cannot be halved {self.depth} times (depth "
                f"{self.depth} = len(channel_mult) − 1 needs every size divisible by {factor}); "
                f"pad/resize the data or use fewer levels in channel_mult"
            )


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``nn.Conv1d``/``Conv2d``/``Conv3d`` for ``dims`` = 1/2/3 (same arguments)."""
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](*args, **kwargs)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B,) → (B, dim)`` float32 (formula in the module docstring)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """``x + conv(drop(SiLU(FiLM(GN(conv(SiLU(GN(x)))), e))))``, 1×1 skip when channels change."""

    def __init__(self, dims: int, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = conv_nd(dims, c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.drop = nn.Dropout(dropout)
        # Zero-initialised last conv: each block starts as the identity (stable deep stacks).
        self.conv2 = _zero(conv_nd(dims, c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else conv_nd(dims, c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
        shape = (*scale.shape, *([1] * (h.ndim - 2)))
        h = self.norm2(h) * (1 + scale.reshape(shape)) + shift.reshape(shape)
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all ``prod(spatial)`` positions, residual, pre-norm.

    ``softmax(Q Kᵀ / √d_head) V`` per head via ``F.scaled_dot_product_attention``.
    """

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        self.heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c = x.shape[:2]
        h = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
        q, k, v = self.qkv(h).reshape(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, d)
        a = a.transpose(1, 2).reshape(b, -1, c)
        return x + self.proj(a).transpose(1, 2).reshape(x.shape)


class Downsample(nn.Module):
    """Stride-2 3×…×3 convolution: halves every spatial axis."""

    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 on every spatial axis, then a 3×…×3 convolution ``c_in → c_out``.

    ``c_out`` is the finer level's width, so the convolution at the finer (8× larger) grid does
    not run at the coarse level's channel count.
    """

    def __init__(self, dims: int, c_in: int, c_out: int | None = None):
        super().__init__()
        self.conv = conv_nd(dims, c_in, c_in if c_out is None else c_out, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Step(nn.Module):
    """A residual block optionally followed by attention (one encoder/decoder step)."""

    def __init__(self, res: ResBlock, attn: Attention | None):
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x)


class UNet(nn.Module):
    """The n-dimensional conditional U-Net (see module docstring).

    ``forward(x (B, C_in, *spatial), t (B,) int64, emb_cond (B, cond_dim) | None) →
    (B, C_out, *spatial)``. ``emb_cond=None`` with ``cond_dim > 0`` means no condition term.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        d, g = cfg.dims, cfg.groups
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(
            nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.cond_proj = nn.Linear(cfg.cond_dim, emb_dim) if cfg.cond_dim > 0 else None
        self.inp = conv_nd(d, cfg.in_channels, ch, 3, padding=1)

        chans = [ch * m for m in cfg.channel_mult]
        self.down = nn.ModuleList()
        skips = [ch]
        c = ch
        for lvl, c_lvl in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                attn = Attention(c_lvl, cfg.num_heads, g) if lvl in cfg.attention_levels else None
                self.down.append(_Step(ResBlock(d, c, c_lvl, emb_dim, cfg.dropout, g), attn))
                c = c_lvl
                skips.append(c)
            if lvl < len(chans) - 1:
                self.down.append(Downsample(d, c))
                skips.append(c)

        self.mid1 = ResBlock(d, c, c, emb_dim, cfg.dropout, g)
        self.mid_attn = Attention(c, cfg.num_heads, g) if cfg.mid_attention else None
        self.mid2 = ResBlock(d, c, c, emb_dim, cfg.dropout, g)

        self.up = nn.ModuleList()
        for lvl in reversed(range(len(chans))):
            c_lvl = chans[lvl]
            for _ in range(cfg.num_res_blocks + 1):
                attn = Attention(c_lvl, cfg.num_heads, g) if lvl in cfg.attention_levels else None
                self.up.append(
                    _Step(ResBlock(d, c + skips.pop(), c_lvl, emb_dim, cfg.dropout, g), attn)
                )
                c = c_lvl
            if lvl > 0:
                self.up.append(Upsample(d, c, chans[lvl - 1]))
                c = chans[lvl - 1]
        assert not skips

        self.out_norm = nn.GroupNorm(g, c)
        self.out = _zero(conv_nd(d, c, cfg.out_channels, 3, padding=1))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, emb_cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        cfg = self.cfg
        if x.ndim != cfg.dims + 2:
            raise ConfigError(
                f"UNet built for {cfg.dims}-D fields expects (B, C, {cfg.dims} spatial dims), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != cfg.in_channels:
            raise ConfigError(
                f"UNet expects {cfg.in_channels} input channels, got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        cfg.check_spatial(x.shape[2:])
        t = t.reshape(-1)
        if t.shape[0] == 1 and x.shape[0] != 1:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t, cfg.base_channels).to(x.dtype))
        if self.cond_proj is not None and emb_cond is not None:
            if emb_cond.shape != (x.shape[0], cfg.cond_dim):
                raise ConfigError(
                    f"condition embedding must be (B={x.shape[0]}, cond_dim={cfg.cond_dim}), "
                    f"got {tuple(emb_cond.shape)}"
                )
            emb = emb + self.cond_proj(emb_cond.to(emb.dtype))

        h = self.inp(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb)
            hs.append(h)
        h = self.mid1(h, emb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid2(h, emb)
        for layer in self.up:
            if isinstance(layer, _Step):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h, emb)
        return self.out(F.silu(self.out_norm(h)))

    def num_parameters(self) -> int:
        """Total trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# Default 3-D configuration for 32³ volumes: 32→16→8, attention at 8³ (512 tokens), ≈ 6.9 M params.
DEFAULT_3D = UNetConfig(
    dims=3, base_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1, attention_levels=(2,)
)

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

Patchified stem (``patch_size = p > 1``, the fast 3-D default). The input convolution becomes a
stride-``p`` convolution with kernel ``2p − 1`` (overlapping windows), so every U-Net level works on
a grid ``p`` times coarser per axis (32³ → 16³ for ``p = 2``: 8× fewer voxels, ≈ 8× fewer FLOPs);
the output head predicts ``C_out · p^dims`` channels on the coarse grid and :func:`unpatchify`
rearranges them into ``p × … × p`` blocks of the full grid (the inverse of :func:`patchify`, a
"pixel shuffle"):

    y[b, c, p·i_1 + r_1, …, p·i_d + r_d] = z[b, c·p^d + (r_1 p^{d−1} + … + r_d), i_1, …, i_d].

``patch_size = 1`` is the plain U-Net (full-resolution top level).

Full-resolution refinement head (``refine_channels = r > 0``, only with ``p > 1``). A patch stem
emits each ``p × … × p`` block as one linear read-out of the coarse features, which is poor at
detail that varies voxel by voxel inside a block (for Y_l^m on a 32³ grid with ``p = 4``, ≈ 90 % of
the error energy sits inside blocks, half of it in the few blocks around the singular centre).
The head adds, on the full grid,

    f = unpatchify(Conv1×1(h_coarse)) ∈ R^{r},   y ← y + Conv3(SiLU(Conv3([f, x]))),

two small ``3 × … × 3`` convolutions over ``r`` per-voxel features and the input ``x``; the last
convolution starts at zero, so a new head leaves the prediction unchanged.

Positional input (``coord_channels``). Convolutions are translation-equivariant: away from the
borders a plain U-Net cannot tell where a voxel sits, yet a field such as Y_l^m(x, y, z) is pinned
to the grid centre. With ``coord_channels`` the ``dims`` coordinate channels of
:func:`coordinate_grid` (``linspace(−1, 1)`` per axis) are appended to the input before the stem.

Fourier features of position (``fourier_channels = F > 0``). A linear coordinate tells a voxel
where it is only coarsely; a line spectrum needs each line placed to within one grid point of
thousands. With ``F`` octaves the input also gets, per axis with coordinate ``c ∈ [−1, 1]``,

    sin(2^k π c), cos(2^k π c),   k = 0 … F − 1,

``2·F·dims`` channels whose finest period is ``2^{2−F}`` in ``c`` (a binary-like code of the
position); the default 0 adds nothing (existing networks unchanged).

Learned positions (``learned_positions = n > 0``, fixed grids only). A free embedding of shape
``(base_channels, (n/p)^dims)``, zero-initialised, is added to the stem's output: the network can
memorise position-specific structure (the line positions of a known molecule) directly instead of
composing it from the position code. The input must then have ``n`` points per axis.

Spectral head (``spectral_head = h > 0``). A conditioned isotropic Fourier filter of the input,
``y ← y + irfftn(g(|κ|, e) · rfftn(x))`` with the gains from an ``h``-wide MLP of the wave-vector
length and the joint embedding ``e`` (:mod:`rho_core.spectral_head`): the exact denoiser of a
stationary Gaussian field is such a filter, which a stack of 3×3 kernels learns slowly at the small
scales of red spectra. Zero-initialised like the output convolution.

Periodic boxes (``circular = True``). Every padded convolution wraps around
(``padding_mode="circular"``), so the network has no border and commutes with periodic shifts
(exactly for ``patch_size = 1``; for ``p > 1`` with shifts by multiples of ``p · 2^(L−1)``).

Shapes: input ``x (B, C_in, *spatial)`` with ``len(spatial) == dims``, every spatial size divisible
by ``p · 2^(L−1)``; output ``(B, C_out, *spatial)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rho_core.errors import ConfigError
from rho_core.spectral_head import SpectralFilter

__all__ = [
    "UNetConfig",
    "UNet",
    "conv_nd",
    "timestep_embedding",
    "patchify",
    "unpatchify",
    "coordinate_grid",
    "fourier_grid",
    "DEFAULT_3D",
    "DEFAULT_3D_FULLRES",
]


_LATER_OPTIONS = ("fourier_channels", "learned_positions", "spectral_head", "circular")
"""UNetConfig fields added after checkpoints existed; omitted from ``to_dict`` when 0."""


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
        patch_size: ``p``: the stem works on ``p × … × p`` patches (see module docstring); 1 =
            full-resolution top level.
        coord_channels: append ``dims`` coordinate channels (each axis' ``linspace(−1, 1)``,
            ``indexing="ij"``) to the input, so the network knows where each voxel sits (see
            module docstring, "Positional input").
        refine_channels: ``r``: width of the full-resolution refinement head (module
            docstring); 0 = none. Needs ``patch_size > 1``.
        fourier_channels: ``F``: octaves of sin/cos position features appended to the input
            (module docstring, "Fourier features of position"); 0 = none.
        learned_positions: ``n``: grid size per axis of a learned additive position embedding
            after the stem (module docstring, "Learned positions"); 0 = none.
        spectral_head: hidden width of the conditioned isotropic Fourier filter added to the
            output (:mod:`rho_core.spectral_head`; module docstring, "Spectral head"); 0 = none.
            Needs ``in_channels == out_channels``.
        circular: periodic (``padding_mode="circular"``) convolutions, for fields on a periodic
            box: no border, the network is exactly translation-equivariant on the torus.
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
    patch_size: int = 1
    coord_channels: bool = False
    refine_channels: int = 0
    fourier_channels: int = 0
    learned_positions: int = 0
    spectral_head: int = 0
    circular: bool = False

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
        if (
            isinstance(self.patch_size, bool)
            or int(self.patch_size) != self.patch_size
            or not (1 <= self.patch_size <= 8)
        ):
            raise ConfigError(f"patch_size must be an integer in [1, 8], got {self.patch_size!r}")
        object.__setattr__(self, "patch_size", int(self.patch_size))
        r = self.refine_channels
        if isinstance(r, bool) or int(r) != r or not 0 <= r <= 256:
            raise ConfigError(f"refine_channels must be an integer in [0, 256], got {r!r}")
        object.__setattr__(self, "refine_channels", int(r))
        fc = self.fourier_channels
        if isinstance(fc, bool) or int(fc) != fc or not 0 <= fc <= 20:
            raise ConfigError(f"fourier_channels must be an integer in [0, 20], got {fc!r}")
        object.__setattr__(self, "fourier_channels", int(fc))
        lp = self.learned_positions
        if isinstance(lp, bool) or int(lp) != lp or lp < 0 or (lp and lp % self.patch_size):
            raise ConfigError(
                f"learned_positions must be 0 or a grid size divisible by patch_size "
                f"{self.patch_size}, got {lp!r}"
            )
        object.__setattr__(self, "learned_positions", int(lp))
        sh = self.spectral_head
        if isinstance(sh, bool) or int(sh) != sh or not 0 <= sh <= 4096:
            raise ConfigError(f"spectral_head must be an integer in [0, 4096], got {sh!r}")
        object.__setattr__(self, "spectral_head", int(sh))
        if sh and self.in_channels != self.out_channels:
            raise ConfigError(
                f"spectral_head filters each channel of the input into the same output channel; "
                f"it needs in_channels == out_channels (got {self.in_channels} → "
                f"{self.out_channels}); set spectral_head=0"
            )
        if not isinstance(self.circular, bool):
            raise ConfigError(f"circular must be true or false, got {self.circular!r}")
        if r and self.patch_size == 1:
            raise ConfigError(
                "refine_channels needs patch_size > 1 (the plain U-Net already works at full "
                "resolution); set refine_channels=0"
            )

    @property
    def depth(self) -> int:
        """Number of ×2 down-samplings, ``len(channel_mult) − 1``."""
        return len(self.channel_mult) - 1

    def to_dict(self) -> dict:
        """Plain-JSON form (tuples become lists). The position options added later
        (``fourier_channels``, ``learned_positions``) are written only when set, so a network
        without them has the same dict as before they existed (checkpoints written earlier still
        resume: the training loop compares these dicts)."""
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_levels"] = list(self.attention_levels)
        for key in _LATER_OPTIONS:
            if not d[key]:
                del d[key]
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
        factor = self.patch_size * 2**self.depth
        bad = [s for s in spatial if s % factor or s < factor]
        if bad:
            why = (
                f"{factor}"
                if self.patch_size == 1
                else (f"{factor} = patch_size {self.patch_size} × 2^{self.depth}")
            )
            raise ConfigError(
                f"spatial size {spatial} cannot be halved {self.depth} times (depth "
                f"{self.depth} = len(channel_mult) − 1 needs every size divisible by {why}); "
                f"pad/resize the data, use fewer levels in channel_mult"
                + (" or a smaller patch_size" if self.patch_size > 1 else "")
            )


# CPU bf16-autocast convolutions over at most this many voxels run in float32 (see _OneDNNConv).
_TINY_BF16_VOXELS = 8
# Route batch-1 CPU convolutions to oneDNN (see :class:`_OneDNNConv`); benchmarks switch it off
# to measure the difference.
ONEDNN_BATCH1 = True


def _mkldnn_ok(dtype: torch.dtype) -> bool:
    mkldnn = torch.backends.mkldnn
    if not ONEDNN_BATCH1 or not mkldnn.is_available() or not mkldnn.enabled:
        return False
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


class _OneDNNConv:
    """Mixin: batch-1 CPU convolutions go straight to oneDNN (``aten.mkldnn_convolution``).

    PyTorch's dispatcher sends a batch-1 convolution with a ≤ 3-wide kernel to its naive
    ``slow_conv3d``/im2col kernel when ``N·C·D·H ≤ 20480`` (every level of a 16³ U-Net, and the
    1-channel stem at 32³); measured here that path is 2–6× slower than oneDNN for the same conv
    (32→32 channels at 16³, one thread: 11 ms vs 1.8 ms). Sampling one volume runs at batch 1,
    so this matters there; batches > 1 already take oneDNN. Same maths, same autograd; under
    CPU autocast the inputs are cast to the autocast dtype as ``conv*d`` would be.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and math.prod(x.shape[2:]) <= _TINY_BF16_VOXELS
            and torch.is_grad_enabled()
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
        ):
            # oneDNN's bf16 weight gradient intermittently returns non-finite values at ≤ 2³
            # voxels (measured: 256→128 channels at 2³, batch 4: 1 in 20 backward passes; none
            # at 4³), which made bf16 training of a 16³ patch-2 net die with NaN within a few
            # steps. These convolutions are tiny, so they run in float32 instead.
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float()).to(torch.bfloat16)
        if x.shape[0] == 1 and x.device.type == "cpu" and self.padding_mode == "zeros":
            w, b = self.weight, self.bias
            if torch.is_autocast_enabled("cpu"):
                dt = torch.get_autocast_dtype("cpu")
                x, w, b = x.to(dt), w.to(dt), None if b is None else b.to(dt)
            if x.dtype == w.dtype and _mkldnn_ok(x.dtype) and not isinstance(self.padding, str):
                return torch.ops.aten.mkldnn_convolution(
                    x.contiguous(), w, b, self.padding, self.stride, self.dilation, self.groups
                )
        return super().forward(x)


class Conv1d(_OneDNNConv, nn.Conv1d):
    """``nn.Conv1d`` with the batch-1 oneDNN fast path of :class:`_OneDNNConv`."""


class Conv2d(_OneDNNConv, nn.Conv2d):
    """``nn.Conv2d`` with the batch-1 oneDNN fast path of :class:`_OneDNNConv`."""


class Conv3d(_OneDNNConv, nn.Conv3d):
    """``nn.Conv3d`` with the batch-1 oneDNN fast path of :class:`_OneDNNConv`."""


REFINE_LAYOUT = {2: torch.channels_last, 3: torch.channels_last_3d}
"""Memory layout of the refinement head's convolution weights, per spatial dimensionality."""


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """``Conv1d``/``Conv2d``/``Conv3d`` for ``dims`` = 1/2/3 (``nn.Conv*d`` arguments and
    parameters, so state dicts are unchanged), with the batch-1 oneDNN fast path."""
    return (Conv1d, Conv2d, Conv3d)[dims - 1](*args, **kwargs)


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


def coordinate_grid(spatial: tuple[int, ...] | torch.Size, like: torch.Tensor) -> torch.Tensor:
    """``(1, d, *spatial)`` voxel coordinates: channel ``i`` is ``linspace(−1, 1, spatial[i])``
    along axis ``i`` (``indexing="ij"``), on ``like``'s device and dtype."""
    axes = [torch.linspace(-1.0, 1.0, int(s), device=like.device) for s in spatial]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    return grid[None].to(like.dtype)


def fourier_grid(
    spatial: tuple[int, ...] | torch.Size, octaves: int, like: torch.Tensor
) -> torch.Tensor:
    """``(1, 2·octaves·d, *spatial)`` position features: for each axis ``i`` (coordinate ``c``
    from :func:`coordinate_grid`) the channels ``sin(2^k π c)`` for k < ``octaves``, then the
    matching cosines; computed in float64, returned in ``like``'s dtype."""
    c = coordinate_grid(spatial, torch.zeros((), dtype=torch.float64, device=like.device))
    k = (2.0 ** torch.arange(octaves, dtype=torch.float64, device=like.device)) * math.pi
    arg = c[:, :, None] * k.reshape(1, 1, -1, *([1] * len(spatial)))  # (1, d, F, *spatial)
    arg = arg.reshape(1, -1, *spatial)
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1).to(like.dtype)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, p·n_1, …, p·n_d) → (B, C·p^d, n_1, …, n_d)``: each ``p^d`` block into channels.

    Channel ``c·p^d + (r_1 p^{d−1} + … + r_d)`` of the output at ``(i_1, …, i_d)`` holds
    ``x[b, c, p·i_1 + r_1, …, p·i_d + r_d]``; :func:`unpatchify` is its exact inverse.
    """
    if p == 1:
        return x
    b, c, *spatial = x.shape
    d = len(spatial)
    n = [s // p for s in spatial]
    # (B, C, n_1, p, n_2, p, …) → (B, C, p, …, p, n_1, …, n_d)
    x = x.reshape(b, c, *[v for k in n for v in (k, p)])
    perm = [0, 1, *[3 + 2 * i for i in range(d)], *[2 + 2 * i for i in range(d)]]
    return x.permute(perm).reshape(b, c * p**d, *n)


def unpatchify(z: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C·p^d, n_1, …, n_d) → (B, C, p·n_1, …, p·n_d)``, the inverse of :func:`patchify`."""
    if p == 1:
        return z
    b, cp, *n = z.shape
    d = len(n)
    c = cp // p**d
    z = z.reshape(b, c, *([p] * d), *n)
    # (B, C, p_1, …, p_d, n_1, …, n_d) → (B, C, n_1, p_1, n_2, p_2, …)
    perm = [0, 1, *[v for i in range(d) for v in (2 + d + i, 2 + i)]]
    return z.permute(perm).reshape(b, c, *[k * p for k in n])


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
        p = cfg.patch_size
        # p = 1: 3×…×3 conv; p > 1: stride-p conv over overlapping (2p − 1)-wide windows.
        k = 3 if p == 1 else 2 * p - 1
        c_in = cfg.in_channels + (d if cfg.coord_channels else 0) + 2 * cfg.fourier_channels * d
        self.inp = conv_nd(d, c_in, ch, k, stride=p, padding=(k - 1) // 2)
        self.pos = None
        if cfg.learned_positions:
            n_tok = cfg.learned_positions // p
            self.pos = nn.Parameter(torch.zeros(1, ch, *([n_tok] * d)))

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
        self.out = _zero(conv_nd(d, c, cfg.out_channels * p**d, 3, padding=1))
        r = cfg.refine_channels
        if r:
            self.refine_feat = conv_nd(d, c, r * p**d, 1)
            self.refine = nn.Sequential(
                conv_nd(d, r + cfg.in_channels, r, 3, padding=1),
                nn.SiLU(),
                _zero(conv_nd(d, r, cfg.out_channels, 3, padding=1)),
            )
            if d > 1:
                # Channels-last weights make oneDNN pick its channels-last kernels for these
                # few-channel full-grid convolutions: ≈ 1.5× faster per conv; with fused AdamW a
                # training step of sh32-refine.yaml on 2 CPU threads went 0.26–0.30 → 0.18–0.20 s
                # (benchmarks/train_recipe.py, docs/training.md).
                # The values are unchanged; load_state_dict and .to(device) keep the layout.
                self.refine.to(memory_format=REFINE_LAYOUT[d])
        self.spectral = (
            SpectralFilter(d, cfg.in_channels, emb_dim, cfg.spectral_head)
            if cfg.spectral_head
            else None
        )
        if cfg.circular:
            for m in self.modules():
                if isinstance(m, nn.modules.conv._ConvNd) and any(q > 0 for q in m.padding):
                    # _conv_forward pads with F.pad(mode="circular") when padding_mode is not
                    # "zeros"; the padding amounts were fixed in __init__.
                    m.padding_mode = "circular"

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
        emb = self.embedding(t, emb_cond, x.shape[0], x.dtype)

        x_in = x
        if cfg.coord_channels:
            grid = coordinate_grid(x.shape[2:], x)
            x = torch.cat([x, grid.expand(x.shape[0], *grid.shape[1:])], dim=1)
        if cfg.fourier_channels:
            ff = fourier_grid(x.shape[2:], cfg.fourier_channels, x)
            x = torch.cat([x, ff.expand(x.shape[0], *ff.shape[1:])], dim=1)
        h = self.inp(x)
        if self.pos is not None:
            if tuple(h.shape[2:]) != tuple(self.pos.shape[2:]):
                raise ConfigError(
                    f"this network learned positions for {cfg.learned_positions} points per "
                    f"axis; got spatial size {tuple(x.shape[2:])}"
                )
            h = h + self.pos.to(h.dtype)
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
        h = F.silu(self.out_norm(h))
        y = unpatchify(self.out(h), cfg.patch_size)
        if cfg.refine_channels:
            f = unpatchify(self.refine_feat(h), cfg.patch_size)
            y = y + self.refine(torch.cat([f, x_in.to(f.dtype)], dim=1))
        if self.spectral is not None:
            y = y + self.spectral(x_in, emb).to(y.dtype)
        return y

    def embedding(
        self, t: torch.Tensor, emb_cond: torch.Tensor | None, batch: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """The joint time/condition embedding ``(B, E)`` every block (and the spectral head)
        receives: ``time_mlp(sinusoid(t)) + cond_proj(emb_cond)``."""
        cfg = self.cfg
        t = t.reshape(-1)
        if t.shape[0] == 1 and batch != 1:
            t = t.expand(batch)
        emb = self.time_mlp(timestep_embedding(t, cfg.base_channels).to(dtype))
        if self.cond_proj is not None and emb_cond is not None:
            if emb_cond.shape != (batch, cfg.cond_dim):
                raise ConfigError(
                    f"condition embedding must be (B={batch}, cond_dim={cfg.cond_dim}), "
                    f"got {tuple(emb_cond.shape)}"
                )
            emb = emb + self.cond_proj(emb_cond.to(emb.dtype))
        return emb

    def spectral_multiplier(
        self, t: torch.Tensor, emb_cond: torch.Tensor | None, spatial: tuple[int, ...]
    ) -> torch.Tensor | None:
        """The spectral head as a Fourier multiplier on the *full* FFT grid: ``(B, C, *spatial)``
        float32 gains g with ``head(x) = ifftn(g · fftn(x))`` (None without a head). The head is
        the exactly linear part of the network's output in its input (its Jacobian is this
        multiplier), which a likelihood estimator can take exactly instead of by probes."""
        if self.spectral is None:
            return None
        b = t.reshape(-1).shape[0] if emb_cond is None else emb_cond.shape[0]
        return self.spectral.multiplier(spatial, self.embedding(t, emb_cond, b, torch.float32))

    def num_parameters(self) -> int:
        """Total trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# The original (heavier) 3-D configuration for 32³ volumes: full-resolution top level,
# 32→16→8, attention at 8³ (512 tokens), ≈ 6.9 M params, ≈ 32 GFLOP per forward of one 32³ volume.
DEFAULT_3D_FULLRES = UNetConfig(
    dims=3, base_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1, attention_levels=(2,)
)
# The fast default: the same U-Net behind a patch-2 stem, so its levels work at 16→8→4.
DEFAULT_3D = UNetConfig(
    dims=3,
    base_channels=32,
    channel_mult=(1, 2, 4),
    num_res_blocks=1,
    attention_levels=(2,),
    patch_size=2,
)

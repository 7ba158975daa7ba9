"""An isotropic Fourier filter of the noisy input, conditioned on time and parameters.

For a statistically homogeneous and isotropic field (a periodic Gaussian random field, the linear
part of any stationary field) the optimal denoiser is a Fourier multiplier that depends on the
wave-vector only through its length: with the field's power ``P(|κ|)`` (unit-normalised DFT) and
``x_t = √ᾱ x₀ + √(1−ᾱ) ε``,

    x̂₀(κ) = W(|κ|, t) · x_t(κ),   W = √ᾱ P / (ᾱ P + 1 − ᾱ) = sigmoid(λ_t + log P(|κ|)) / √ᾱ,

(λ_t = log(ᾱ/(1−ᾱ))). A convolutional U-Net has to assemble such a filter from 3×3 kernels, one
scale per level, and learns the small scales of red spectra (``P`` down by 10³–10⁴) slowly. This
head gives the network the filter family directly: for every distinct wave-vector length on the
grid an MLP maps ``(features of |κ|, joint embedding e of time and condition)`` to one gain per
channel,

    g_c(|κ|, e) = MLP([A e + K φ(|κ|)])_c,   φ(k) = [u, sin(jπu), cos(jπu)]_{j=1..3},
    u = log(max(k, ½)) / log(k_max),

and the head's output ``y = irfftn(g · rfftn(x_t, norm="ortho"), norm="ortho")`` is *added* to the
U-Net's output (in whatever the network predicts: ε, x₀ or v — each is linear in ``x_t`` for a
Gaussian field). The last layer starts at zero, so a new head leaves the prediction unchanged; the
U-Net keeps everything that is not a stationary linear filter (non-Gaussian structure, positions).

The gain depends on ``|κ|`` only for equal grid sizes per axis; on other grids it depends on the
integer wave-vector length ``|κ|`` with ``κ_i = fftfreq(n_i)·n_i`` all the same (a filter in index
space). It is meant for periodic boxes (``UNetConfig.circular``); on non-periodic data it is still
a valid (translation-invariant) linear filter, just not a natural one.

Shapes: ``x (B, C, *spatial)``, ``emb (B, E)`` → ``(B, C, *spatial)``, float32 inside (the FFT
and the gain MLP, also under autocast).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SpectralFilter", "wavevector_lengths"]

_N_HARMONICS = 3


def wavevector_lengths(spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``|κ|`` on the ``rfftn`` grid of ``spatial`` (float64, shape ``(*spatial[:-1],
    spatial[-1] // 2 + 1)``), ``κ_i = fftfreq(n_i)·n_i`` integers (last axis non-negative)."""
    axes = [torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=device) for n in spatial]
    axes[-1] = torch.fft.rfftfreq(spatial[-1], d=1.0 / spatial[-1], dtype=torch.float64,
                                  device=device)  # fmt: skip
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.sqrt(sum(g * g for g in grids))


class SpectralFilter(nn.Module):
    """The conditioned isotropic Fourier filter (module docstring).

    Args:
        dims: spatial dimensions (1, 2 or 3).
        channels: field channels ``C`` (in = out; the filter is diagonal in channels).
        emb_dim: width ``E`` of the joint time/condition embedding.
        hidden: MLP width.
    """

    def __init__(self, dims: int, channels: int, emb_dim: int, hidden: int):
        super().__init__()
        self.dims = dims
        self.channels = channels
        self.emb_proj = nn.Linear(emb_dim, hidden)
        self.k_proj = nn.Linear(1 + 2 * _N_HARMONICS, hidden)
        last = nn.Linear(hidden, channels)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), last)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _shells(self, spatial: tuple[int, ...], device: torch.device):
        """Features of the distinct ``|κ|`` values ``(U, 7)`` and the index map onto the rfft
        grid (long, rfft shape), cached per grid and device."""
        key = (spatial, str(device))
        hit = self._cache.get(key)
        if hit is None:
            k = wavevector_lengths(spatial, device)
            # |κ|² is an integer: unique on it avoids float ties.
            uniq, inverse = torch.unique(torch.round(k * k).long(), return_inverse=True)
            kk = torch.sqrt(uniq.double())
            k_max = float(kk.max().clamp_min(2.0))
            u = torch.log(kk.clamp_min(0.5)) / math.log(k_max)
            j = torch.arange(1, _N_HARMONICS + 1, dtype=torch.float64, device=device)
            ang = math.pi * u[:, None] * j
            feats = torch.cat([u[:, None], torch.sin(ang), torch.cos(ang)], dim=1).float()
            hit = (feats, inverse)
            self._cache[key] = hit
        return hit

    def gains(
        self, spatial: tuple[int, ...], emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-shell gains ``(B, U, C)`` (float32) and the shell index map of the rfft grid."""
        feats, inverse = self._shells(tuple(int(s) for s in spatial), emb.device)
        h = self.emb_proj(emb.float())[:, None, :] + self.k_proj(feats)[None]  # (B, U, H)
        return self.mlp(h), inverse

    def multiplier(self, spatial: tuple[int, ...], emb: torch.Tensor) -> torch.Tensor:
        """The filter as a multiplier on the *full* FFT grid, float32 ``(B, C, *spatial)``:
        ``forward(x) = ifftn(multiplier · fftn(x))`` (its Jacobian in x; the full-grid shell map
        is cached like the rfft one)."""
        spatial = tuple(int(n) for n in spatial)
        with torch.autocast(device_type=emb.device.type, enabled=False):
            g, _ = self.gains(spatial, emb)  # (B, U, C)
        key = ("full", spatial, str(emb.device))
        shell = self._cache.get(key)
        if shell is None:
            axes = [torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=emb.device)
                    for n in spatial]  # fmt: skip
            k2 = torch.round(sum(a * a for a in torch.meshgrid(*axes, indexing="ij"))).long()
            shell = torch.searchsorted(torch.unique(k2), k2)  # same shells as on the rfft grid
            self._cache[key] = shell
        return g[:, shell].movedim(-1, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        spatial = tuple(x.shape[2:])
        axes = tuple(range(2, x.ndim))
        # The gains are few (U shells × C) and set the variance of every scale: keep them in
        # float32 under bf16/fp16 autocast (a 0.4 % bf16 rounding of a gain is a 0.8 % error
        # in that shell's power, larger than what the random-field scores resolve).
        with torch.autocast(device_type=x.device.type, enabled=False):
            g, inverse = self.gains(spatial, emb)  # (B, U, C)
        gain = g[:, inverse]  # (B, *rfft, C)
        gain = gain.movedim(-1, 1)  # (B, C, *rfft)
        spec = torch.fft.rfftn(x.float(), dim=axes, norm="ortho")
        y = torch.fft.irfftn(spec * gain, s=spatial, dim=axes, norm="ortho")
        return y.to(x.dtype)

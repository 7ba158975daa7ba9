"""The conditioned isotropic Fourier filter (rho_core.spectral_head) and periodic U-Nets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rho_core.errors import ConfigError
from rho_core.spectral_head import SpectralFilter, wavevector_lengths
from rho_core.unet import UNet, UNetConfig


def _randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("spatial", [(32,), (8, 8), (6, 4), (4, 4, 4)])
def test_wavevector_lengths_match_numpy(spatial):
    k = wavevector_lengths(spatial, torch.device("cpu")).numpy()
    axes = [np.fft.fftfreq(n) * n for n in spatial]
    axes[-1] = np.fft.rfftfreq(spatial[-1]) * spatial[-1]
    ref = np.sqrt(sum(g**2 for g in np.meshgrid(*axes, indexing="ij")))
    np.testing.assert_allclose(k, ref, atol=1e-12)


@pytest.mark.parametrize("dims,n", [(1, 32), (2, 16), (3, 8)])
def test_filter_is_the_fourier_multiplier_of_its_gains(dims, n):
    """Independent numpy check: y = ifftn(G(|κ|) fftn(x)) on the full grid, with G read off the
    head's per-shell gains by |κ|² (so the rfft/Hermitian bookkeeping is tested too)."""
    head = SpectralFilter(dims, channels=2, emb_dim=12, hidden=16)
    _randomise(head)
    x = torch.randn(3, 2, *([n] * dims), dtype=torch.float64).float()
    emb = torch.randn(3, 12)
    y = head(x, emb).detach().double().numpy()
    g, _ = head.gains((n,) * dims, emb)  # (B, U, C), shells in ascending |κ|²
    k = np.fft.fftfreq(n) * n
    k2 = np.rint(sum(a**2 for a in np.meshgrid(*([k] * dims), indexing="ij"))).astype(int)
    uniq = np.unique(k2)
    shell = np.searchsorted(uniq, k2)
    ax = tuple(range(2, 2 + dims))
    spec = np.fft.fftn(x.double().numpy(), axes=ax)
    gain = g.detach().double().numpy()[:, shell]  # (B, *grid, C)
    gain = np.moveaxis(gain, -1, 1)
    ref = np.fft.ifftn(gain * spec, axes=ax).real
    np.testing.assert_allclose(y, ref, atol=2e-5)


def test_gains_stay_float32_under_bf16_autocast():
    """Under bf16 autocast (training with --precision bf16) the gain MLP still runs in float32:
    its gains equal the fp32 ones exactly, and the filtered field differs from the fp32 one
    only by bf16 rounding elsewhere — here nowhere, the FFT is float32 too."""
    torch.manual_seed(0)
    head = SpectralFilter(2, 1, 8, 16)
    _randomise(head, seed=3)
    x = torch.randn(2, 1, 16, 16)
    emb = torch.randn(2, 8)
    g32, _ = head.gains((16, 16), emb)
    y32 = head(x, emb)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        lin = head.emb_proj(emb)  # a plain Linear does drop to bf16 here
        yb = head(x, emb)
    assert lin.dtype == torch.bfloat16
    assert yb.dtype == torch.float32
    assert torch.equal(yb, y32)
    # and the gains alone, called from the forward's own context manager
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        with torch.autocast(device_type="cpu", enabled=False):
            gb, _ = head.gains((16, 16), emb)
    assert torch.equal(gb, g32)


def test_filter_commutes_with_rotation_and_shift():
    head = SpectralFilter(2, channels=1, emb_dim=8, hidden=16)
    _randomise(head, seed=1)
    x, emb = torch.randn(2, 1, 16, 16), torch.randn(2, 8)
    y = head(x, emb)
    rot = head(x.transpose(2, 3).contiguous(), emb)
    torch.testing.assert_close(rot, y.transpose(2, 3), atol=1e-5, rtol=0)
    sh = head(torch.roll(x, (3, -5), dims=(2, 3)), emb)
    torch.testing.assert_close(sh, torch.roll(y, (3, -5), dims=(2, 3)), atol=1e-5, rtol=0)


def test_new_head_leaves_the_network_output_unchanged():
    cfg = dict(dims=2, base_channels=16, channel_mult=(1, 2), attention_levels=(), cond_dim=4)
    a, b = UNet(UNetConfig(**cfg)), UNet(UNetConfig(**cfg, spectral_head=8))
    torch.manual_seed(0)
    _randomise(a, seed=2, scale=0.05)
    missing = b.load_state_dict(a.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("spectral.") for k in missing)
    x, t, c = torch.randn(2, 1, 16, 16), torch.tensor([1, 700]), torch.randn(2, 4)
    torch.testing.assert_close(b(x, t, c), a(x, t, c))


def test_head_gets_gradients_and_learns_a_wiener_gain():
    """Alone, the head fits the exact denoiser of a 1-D stationary Gaussian field at one noise
    level (a fixed Fourier multiplier) to a small residual in a few hundred Adam steps."""
    torch.manual_seed(0)
    n, abar = 64, 0.5
    k = np.abs(np.fft.rfftfreq(n) * n)
    p = np.where(k > 0, 4.0 * np.maximum(k, 1) ** -1.5, 0.0)
    w = np.sqrt(abar) * p / (abar * p + 1 - abar)  # x̂₀ gain
    head = SpectralFilter(1, channels=1, emb_dim=4, hidden=32)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    emb = torch.zeros(64, 4)
    amp = torch.as_tensor(np.sqrt(p), dtype=torch.float32)
    wt = torch.as_tensor(w, dtype=torch.float32)
    for _ in range(400):
        white = torch.fft.rfft(torch.randn(64, 1, n), norm="ortho")
        x0 = torch.fft.irfft(white * amp, n=n, norm="ortho")
        xt = abar**0.5 * x0 + (1 - abar) ** 0.5 * torch.randn_like(x0)
        loss = ((head(xt, emb) - x0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    g, inverse = head.gains((n,), emb[:1])
    learned = g[0, inverse, 0].detach()
    assert float((learned - wt).abs().max()) < 0.08


def test_circular_unet_commutes_with_periodic_shifts():
    cfg = UNetConfig(dims=2, base_channels=16, channel_mult=(1, 2), attention_levels=(),
                     circular=True, spectral_head=8)  # fmt: skip
    net = UNet(cfg)
    _randomise(net, seed=3, scale=0.05)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 400])
    with torch.no_grad():
        y = net(x, t)
        ys = net(torch.roll(x, (2, 6), dims=(2, 3)), t)
    assert float(y.abs().max()) > 1e-2
    torch.testing.assert_close(ys, torch.roll(y, (2, 6), dims=(2, 3)), atol=1e-4, rtol=0)
    zero = UNet(UNetConfig(**{**cfg.to_dict(), "circular": False}))
    zero.load_state_dict(net.state_dict())
    with torch.no_grad():
        yz = zero(torch.roll(x, (2, 6), dims=(2, 3)), t)
    assert float((yz - ys).abs().max()) > 1e-3  # zero padding breaks it: the test can fail


def test_config_round_trip_and_errors():
    cfg = UNetConfig(dims=2, spectral_head=16, circular=True)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    plain = UNetConfig(dims=2).to_dict()
    assert "spectral_head" not in plain and "circular" not in plain  # old checkpoints unchanged
    with pytest.raises(ConfigError, match="in_channels == out_channels"):
        UNetConfig(dims=2, in_channels=1, out_channels=2, spectral_head=8)
    with pytest.raises(ConfigError, match="spectral_head"):
        UNetConfig(dims=2, spectral_head=-1)
    with pytest.raises(ConfigError, match="circular"):
        UNetConfig(dims=2, circular="yes")


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (3, 8, 8), (3, 1, 6, 6, 6), (3, 6, 6, 6)])
def test_sample_grid_figure_takes_2d_and_3d_fields(shape):
    """The GRF benchmark's sample grid: 2-D images and (the 3-D run) volumes with or without a
    channel axis; a volume shows its central slice."""
    from rho_core.plots_fields import sample_grid_figure

    rng = np.random.default_rng(0)
    fig = sample_grid_figure(rng.normal(size=shape), rng.normal(size=shape), n=3)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 6
    side = shape[-1]
    assert all(im.get_array().shape == (side, side) for im in images)

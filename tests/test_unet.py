"""The n-dimensional U-Net: shapes, down-sampling of every axis, gradients, and config errors."""

from __future__ import annotations

import pytest
import torch

import rho_core.unet as unet_mod
from rho_core.errors import ConfigError
from rho_core.unet import (
    DEFAULT_3D,
    DEFAULT_3D_FULLRES,
    UNet,
    UNetConfig,
    conv_nd,
    coordinate_grid,
    patchify,
    timestep_embedding,
    unpatchify,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(dims: int, attention: bool, cond_dim: int = 6, patch: int = 1) -> UNetConfig:
    return UNetConfig(
        dims=dims,
        in_channels=2,
        out_channels=3,
        base_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,) if attention else (),
        mid_attention=attention,
        num_heads=2,
        cond_dim=cond_dim,
        patch_size=patch,
    )


@pytest.mark.parametrize("patch", [1, 2])
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_shapes_and_zero_init_output(dims: int, attention: bool, patch: int) -> None:
    torch.manual_seed(0)
    net = UNet(_tiny(dims, attention, patch=patch))
    x = torch.randn(3, 2, *([8] * dims))
    y = net(x, torch.tensor([0, 10, 999]), torch.randn(3, 6))
    assert y.shape == (3, 3, *([8] * dims))
    # The output convolution is zero-initialised: an untrained net predicts exactly 0.
    assert torch.count_nonzero(y) == 0
    has_attn = any(type(m).__name__ == "Attention" for m in net.modules())
    assert has_attn == attention


@pytest.mark.parametrize("patch", [1, 2])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_every_parameter_gets_a_gradient(dims: int, patch: int) -> None:
    torch.manual_seed(1)
    net = UNet(_tiny(dims, attention=True, patch=patch))
    with torch.no_grad():  # move off the zero init, which blocks gradients upstream
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 2, *([8] * dims))
    net(x, torch.tensor([3, 500]), torch.randn(2, 6)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_3d_downsamples_all_three_axes() -> None:
    # 16³ with depth 2 must reach 4×4×4 at the middle block (the original kept depth at 16).
    cfg = UNetConfig(dims=3, base_channels=8, channel_mult=(1, 2, 2), attention_levels=())
    net = UNet(cfg)
    seen = {}
    net.mid1.register_forward_hook(lambda m, inp, out: seen.update(mid=inp[0].shape))
    net(torch.randn(1, 1, 16, 16, 16), torch.tensor([5]))
    assert seen["mid"] == (1, 16, 4, 4, 4)


def test_default_3d_config_is_small() -> None:
    n = UNet(DEFAULT_3D).num_parameters()
    assert 1e6 < n < 15e6, n  # the original 3-D model had 167 M
    assert DEFAULT_3D.patch_size == 2 and DEFAULT_3D_FULLRES.patch_size == 1


@pytest.mark.parametrize("dims, p", [(1, 2), (2, 2), (3, 2), (3, 4), (2, 1)])
def test_patchify_round_trip_and_layout(dims: int, p: int) -> None:
    x = torch.randn(2, 3, *([4 * p] * dims))
    z = patchify(x, p)
    assert z.shape == (2, 3 * p**dims, *([4] * dims))
    assert torch.equal(unpatchify(z, p), x)
    # Layout from the docstring: channel c·p^d + Σ r_k p^{d−1−k} at i holds x[c, p·i + r].
    r = [p - 1] * dims
    i = [1] * dims
    flat = sum(rk * p ** (dims - 1 - k) for k, rk in enumerate(r))
    c = 2
    want = x[(1, c, *[p * ik + rk for ik, rk in zip(i, r, strict=True)])]
    assert z[(1, c * p**dims + flat, *i)] == want


def test_patch_stem_works_on_the_coarse_grid() -> None:
    # 16³ with patch 2 and depth 1: the first level runs at 8³, the middle block at 4³.
    cfg = UNetConfig(
        dims=3, base_channels=8, channel_mult=(1, 2), attention_levels=(), patch_size=2
    )
    net = UNet(cfg)
    seen = {}
    net.down[0].register_forward_hook(lambda m, inp, out: seen.update(top=inp[0].shape))
    net.mid1.register_forward_hook(lambda m, inp, out: seen.update(mid=inp[0].shape))
    y = net(torch.randn(1, 1, 16, 16, 16), torch.tensor([5]))
    assert seen["top"] == (1, 8, 8, 8, 8) and seen["mid"] == (1, 16, 4, 4, 4)
    assert y.shape == (1, 1, 16, 16, 16)
    with pytest.raises(ConfigError, match=r"divisible by 4 = patch_size 2.*patch_size"):
        net(torch.randn(1, 1, 10, 12, 12), torch.tensor([5]))
    with pytest.raises(ConfigError, match="patch_size"):
        UNetConfig(dims=3, base_channels=8, patch_size=0)


@pytest.mark.parametrize("dims, stride", [(3, 1), (3, 2), (2, 1), (1, 1)])
def test_batch1_onednn_conv_matches_reference(dims: int, stride: int, monkeypatch) -> None:
    torch.manual_seed(3)
    conv = conv_nd(dims, 4, 6, 3, stride=stride, padding=1)
    x = torch.randn(1, 4, *([8] * dims), requires_grad=True)
    fast = conv(x)
    fast.square().sum().backward()
    g_fast = (x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone())
    x.grad = None
    conv.zero_grad()
    monkeypatch.setattr(unet_mod, "ONEDNN_BATCH1", False)
    ref = conv(x)
    ref.square().sum().backward()
    assert torch.allclose(fast, ref, atol=1e-5)
    for a, b in zip(g_fast, (x.grad, conv.weight.grad, conv.bias.grad), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16  # autocast still applies on the fast path
    monkeypatch.setattr(unet_mod, "ONEDNN_BATCH1", True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), ref, atol=0.1)


def test_condition_changes_output() -> None:
    torch.manual_seed(2)
    net = UNet(_tiny(2, attention=False))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(1, 2, 8, 8), torch.tensor([100])
    a = net(x, t, torch.zeros(1, 6))
    b = net(x, t, torch.ones(1, 6))
    assert (a - b).abs().max() > 1e-4


def test_indivisible_size_names_size_and_depth() -> None:
    net = UNet(UNetConfig(dims=2, base_channels=8, channel_mult=(1, 2, 2), attention_levels=()))
    with pytest.raises(ConfigError, match=r"\(12, 10\).*depth 2.*divisible by 4"):
        net(torch.randn(1, 1, 12, 10), torch.tensor([1]))


def test_wrong_number_of_dims() -> None:
    net = UNet(_tiny(3, attention=False))
    with pytest.raises(ConfigError, match="3-D"):
        net(torch.randn(1, 2, 8, 8), torch.tensor([1]))
    with pytest.raises(ConfigError, match="input channels"):
        net(torch.randn(1, 5, 8, 8, 8), torch.tensor([1]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dims": 4}, "dims"),
        ({"attention_levels": (3,)}, "attention_levels"),
        ({"base_channels": 12}, "groups"),
        ({"num_heads": 3}, "num_heads"),
        ({"dropout": 1.5}, "dropout"),
        ({"patch_size": 9}, "patch_size"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        base = {"dims": 2, "base_channels": 8, "channel_mult": (1, 2), "attention_levels": ()}
        UNetConfig(**{**base, **kwargs})


def test_config_dict_round_trip() -> None:
    cfg = _tiny(3, attention=True)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown UNet config keys"):
        UNetConfig.from_dict({**cfg.to_dict(), "chanels": 3})


def test_timestep_embedding_formula() -> None:
    t = torch.tensor([0, 7])
    e = timestep_embedding(t, 8)
    # k-th frequency ω_k = 10000^(−k/4): cos in the first half, sin in the second.
    w = 10000.0 ** (-torch.arange(4) / 4)
    assert torch.allclose(e[1, :4], torch.cos(7 * w), atol=1e-6)
    assert torch.allclose(e[1, 4:], torch.sin(7 * w), atol=1e-6)
    assert torch.allclose(e[0], torch.cat([torch.ones(4), torch.zeros(4)]))


def test_tiny_bf16_training_convs_run_in_float32() -> None:
    # oneDNN's bf16 conv weight gradient is intermittently non-finite at 2³ voxels; such convs
    # run in float32 under CPU bf16 autocast (output cast back to bf16), larger ones stay bf16.
    torch.manual_seed(4)
    conv = conv_nd(3, 16, 8, 3, padding=1)
    for size, exact in ((2, True), (4, False)):
        x = torch.randn(2, 16, size, size, size)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        assert y.dtype == torch.bfloat16
        want = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=1).to(torch.bfloat16)
        assert torch.equal(y, want) == exact


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_coordinate_grid_values(dims: int) -> None:
    spatial = (4, 6, 8)[:dims]
    g = coordinate_grid(spatial, torch.zeros(1, dtype=torch.float64))
    assert g.shape == (1, dims, *spatial) and g.dtype == torch.float64
    for axis, n in enumerate(spatial):
        idx = [0] * dims
        for i in range(n):  # channel `axis` runs linspace(-1, 1) along its own axis only
            idx[axis] = i
            assert g[(0, axis, *idx)].item() == pytest.approx(-1.0 + 2.0 * i / (n - 1))
        other = [slice(None)] * dims
        other[axis] = 0
        assert torch.all(g[(0, axis, *other)] == -1.0)


@pytest.mark.parametrize("patch", [1, 2])
def test_coord_channels_break_translation_equivariance(patch: int) -> None:
    """With coordinate channels a constant input gives a position-dependent output (the network
    can tell where a voxel sits); without them, far from the borders, it cannot (1-D, 256 long,
    the middle 32 voxels; every ``patch``-th voxel, since the patch head repeats per patch)."""
    base = _tiny(1, attention=False, patch=patch)
    outs = {}
    for coords in (False, True):
        cfg = UNetConfig.from_dict({**base.to_dict(), "coord_channels": coords})
        torch.manual_seed(1)
        net = UNet(cfg)
        assert net.inp.in_channels == base.in_channels + (1 if coords else 0)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
            y = net(torch.ones(2, base.in_channels, 256), torch.tensor([10, 10]), torch.zeros(2, 6))
        assert y.shape == (2, base.out_channels, 256)
        outs[coords] = y[:, :, 112:144:patch].std(dim=-1).max().item()
    assert outs[False] < 1e-5
    assert outs[True] > 1e-3


def test_old_config_without_coord_channels_loads() -> None:
    d = _tiny(3, attention=False).to_dict()
    d.pop("coord_channels")
    assert UNetConfig.from_dict(d).coord_channels is False


def _tiny_patch(dims: int = 2, **kw) -> UNetConfig:
    return UNetConfig(
        dims=dims, base_channels=8, channel_mult=(1, 2), attention_levels=(), mid_attention=False,
        cond_dim=4, patch_size=4, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("dims", [2, 3])
def test_refine_head_starts_as_identity_then_learns(dims: int) -> None:
    """A new refinement head adds exactly zero (its last conv starts at zero), so a net with the
    head computes the same function as the same weights without it; one optimizer step later the
    head's every parameter has moved and the output has changed."""
    torch.manual_seed(0)
    plain = UNet(_tiny_patch(dims))
    for p in plain.out.parameters():  # a trained-looking read-out, not the zero init
        torch.nn.init.normal_(p, std=0.1)
    torch.manual_seed(0)
    ref = UNet(_tiny_patch(dims, refine_channels=4))
    missing, unexpected = ref.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("refine") for k in missing)
    size = (16,) * dims
    x, t, c = torch.randn(2, 1, *size), torch.tensor([3, 700]), torch.randn(2, 4)
    y_plain, y_ref = plain(x, t, c), ref(x, t, c)
    assert y_ref.shape == (2, 1, *size)
    torch.testing.assert_close(y_ref, y_plain, rtol=0, atol=0)
    assert y_plain.abs().max() > 1e-3  # the comparison is not between two zero outputs

    before = {k: v.clone() for k, v in ref.named_parameters() if k.startswith("refine")}
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(2):  # step 1 moves the zero conv, step 2 lets gradient reach the features
        opt.zero_grad()
        ((ref(x, t, c) - x) ** 2).mean().backward()
        opt.step()
    moved = {k: not torch.equal(v, before[k]) for k, v in ref.named_parameters() if k in before}
    assert all(moved.values()), moved
    assert not torch.equal(ref(x, t, c), y_ref)


@pytest.mark.parametrize("dims", [2, 3])
def test_refine_head_weights_are_channels_last_and_compute_the_same(dims: int) -> None:
    """The head's conv weights are stored channels-last (a CPU speed choice, see REFINE_LAYOUT);
    the layout survives load_state_dict and deepcopy (the EMA copy), and the output equals the same
    weights in the default layout, at batch 1 (the oneDNN fast path) and batch 3, with gradients."""
    import copy

    fmt = unet_mod.REFINE_LAYOUT[dims]
    torch.manual_seed(1)
    net = UNet(_tiny_patch(dims, refine_channels=4))
    for p in net.refine.parameters():  # a non-zero head, so it contributes to the output
        torch.nn.init.normal_(p, std=0.2)
    convs = [m for m in net.refine if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert convs and all(m.weight.is_contiguous(memory_format=fmt) for m in convs)
    assert not all(m.weight.is_contiguous() for m in convs)  # really a different layout
    plain = copy.deepcopy(net)
    for m in plain.refine:
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            m.weight.data = m.weight.data.contiguous()
    fresh = UNet(_tiny_patch(dims, refine_channels=4))
    fresh.load_state_dict(plain.state_dict())  # contiguous tensors in, layout kept
    assert all(
        m.weight.is_contiguous(memory_format=fmt)
        for m in [*fresh.refine, *copy.deepcopy(fresh).refine]
        if isinstance(m, torch.nn.modules.conv._ConvNd)
    )
    for b in (1, 3):
        x = torch.randn(b, 1, *(16,) * dims, requires_grad=True)
        t, c = torch.randint(0, 1000, (b,)), torch.randn(b, 4)
        y, y_plain = fresh(x, t, c), plain(x, t, c)
        torch.testing.assert_close(y, y_plain, rtol=1e-5, atol=1e-6)
        (gx,) = torch.autograd.grad(y.square().sum(), x)
        (gx_plain,) = torch.autograd.grad(y_plain.square().sum(), x)
        # float32 sums in another order: agree to 1e-5 of the gradient's scale
        torch.testing.assert_close(gx, gx_plain, rtol=1e-4, atol=1e-5 * float(gx.abs().max()))
    assert (net(x, t, c) - fresh(x, t, c)).abs().max() < 1e-5  # same weights, same function


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"refine_channels": -1}, "refine_channels"),
        ({"refine_channels": 2.5}, "refine_channels"),
        ({"refine_channels": True}, "refine_channels"),
        ({"refine_channels": 4, "patch_size": 1}, "patch_size > 1"),
    ],
)
def test_refine_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNetConfig(**{"patch_size": 4, **kwargs})


def test_refine_config_round_trip_and_old_configs_load() -> None:
    cfg = _tiny_patch(3, refine_channels=8)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    d = _tiny_patch(3).to_dict()
    d.pop("refine_channels")
    assert UNetConfig.from_dict(d).refine_channels == 0

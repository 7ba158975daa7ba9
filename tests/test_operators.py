"""Observation operators (rho_core.operators): values against numpy, linearity, adjoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rho_core.errors import ConfigError, DataError
from rho_core.operators import (
    BlockAverage,
    Linear,
    Mask,
    parse_operator,
    random_projection,
)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _adjoint(op, x):
    """Aᵀ u by autograd, as rho_core.inverse gets it."""
    z = torch.zeros_like(x, requires_grad=True)
    y = op(z)
    u = _rand(*y.shape, seed=9)
    (g,) = torch.autograd.grad(y, z, u)
    return u, g


def test_mask_selects_values_in_c_order_and_broadcasts_over_channels() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((5, 6)) < 0.4
    x = _rand(3, 2, 5, 6)
    y = Mask(m)(x)
    expected = np.stack([x[b].numpy()[:, m].ravel() for b in range(3)])
    assert y.shape == (3, 2 * int(m.sum())) and np.array_equal(y.numpy(), expected)
    # a (C, *spatial) mask picks per channel
    m2 = np.stack([m, ~m])
    y2 = Mask(m2.astype(np.int8))(x)
    assert y2.shape == (3, 30) and np.array_equal(y2.numpy(), x.numpy()[:, m2])
    assert Mask(m).size((2, 5, 6)) == 2 * int(m.sum())
    # embed is the right-inverse on the observed points
    grid = Mask(m).embed(y, (2, 5, 6), fill=0.0)
    assert torch.equal(grid, x * torch.as_tensor(m))


def test_block_average_matches_numpy_in_1_2_3_dims() -> None:
    for shape, f in (((2, 1, 12), 3), ((2, 2, 8, 8), 4), ((1, 1, 4, 6, 8), (2, 3, 4))):
        x = _rand(*shape)
        op = BlockAverage(f)
        y = op(x)
        fs = (f,) * (len(shape) - 2) if isinstance(f, int) else f
        split = list(shape[:2])
        for n, k in zip(shape[2:], fs, strict=True):
            split += [n // k, k]
        ref = x.numpy().reshape(split).mean(axis=tuple(range(3, len(split), 2)))
        assert y.shape == (shape[0], math.prod(ref.shape[1:]))
        assert np.allclose(y.numpy(), ref.reshape(shape[0], -1))
        assert op.size(shape[1:]) == y.shape[1]
        # adjoint = spread each coarse value uniformly over its block, divided by the block size
        u, g = _adjoint(op, x)
        up = u.reshape(shape[0], *ref.shape[1:])
        for ax, k in enumerate(fs):
            up = up.repeat_interleave(k, dim=2 + ax)
        assert torch.allclose(g, up / math.prod(fs))


def test_block_average_rejects_sizes_that_are_not_multiples() -> None:
    with pytest.raises(ConfigError, match="multiple"):
        BlockAverage(5)(_rand(1, 1, 12, 12))
    with pytest.raises(ConfigError, match="positive integers"):
        BlockAverage(0)
    with pytest.raises(ConfigError, match="spatial dims"):
        BlockAverage((2, 2))(_rand(1, 1, 4, 4, 4))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Mask(np.arange(2 * 4 * 4).reshape(2, 4, 4) % 3 == 0),
        lambda: BlockAverage(2),
        lambda: random_projection(5, (2, 4, 4), seed=1),
    ],
)
def test_operators_are_linear_and_their_autograd_adjoint_is_the_transpose(make) -> None:
    op = make()
    x, z = _rand(3, 2, 4, 4, seed=1), _rand(3, 2, 4, 4, seed=2)
    assert torch.allclose(op(2.0 * x - 3.0 * z), 2.0 * op(x) - 3.0 * op(z))
    u, g = _adjoint(op, x)
    # ⟨A x, u⟩ = ⟨x, Aᵀ u⟩ per sample
    assert torch.allclose((op(x) * u).sum(1), (x * g).flatten(1).sum(1))


def test_random_projection_is_reproducible_and_scaled() -> None:
    p1, p2 = random_projection(64, (1, 32, 32), 3), random_projection(64, (1, 32, 32), 3)
    assert torch.equal(p1.matrix, p2.matrix) and p1.matrix.shape == (64, 1024)
    assert not torch.equal(p1.matrix, random_projection(64, (1, 32, 32), 4).matrix)
    x = _rand(200, 1, 32, 32)
    ratio = (p1(x).norm(dim=1) / x.flatten(1).norm(dim=1)).mean()
    assert abs(float(ratio) - math.sqrt(64 / 1024)) < 0.02
    with pytest.raises(ConfigError, match="columns"):
        Linear(p1.matrix)(_rand(1, 1, 4, 4))


def test_parse_operator_forms_and_errors(tmp_path) -> None:
    mask = np.zeros((8, 8), dtype=bool)
    mask[:, ::2] = True
    path = tmp_path / "m.npy"
    np.save(path, mask)
    op = parse_operator(f"mask:{path}", (1, 8, 8))
    assert isinstance(op, Mask) and op.size((1, 8, 8)) == 32
    assert parse_operator("coarse:4", (1, 8, 8)).size((1, 8, 8)) == 4
    assert parse_operator("coarse:2,4", (1, 8, 8)).size((1, 8, 8)) == 8
    assert parse_operator("projection:5:2", (1, 8, 8)).size((1, 8, 8)) == 5
    with pytest.raises(ConfigError, match="does not exist"):
        parse_operator(f"mask:{tmp_path / 'nope.npy'}", (1, 8, 8))
    with pytest.raises(ConfigError, match="does not fit"):
        parse_operator(f"mask:{path}", (1, 4, 4))
    with pytest.raises(ConfigError, match="multiple"):
        parse_operator("coarse:3", (1, 8, 8))
    with pytest.raises(ConfigError, match="unknown operator"):
        parse_operator("blur:2", (1, 8, 8))
    with pytest.raises(DataError, match="no values"):
        Mask(np.zeros((4, 4), dtype=bool))

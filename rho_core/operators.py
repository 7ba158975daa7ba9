"""Linear observation operators A for posterior sampling (:mod:`rho_core.inverse`).

An operator is any callable ``forward(x) -> y`` mapping a batch of fields ``(B, C, *spatial)``
to a batch of observation vectors ``(B, M)`` that is

- **linear**: forward(a x + b z) = a forward(x) + b forward(z) (no offsets, no clipping);
- **differentiable** by torch autograd (plain tensor operations: indexing, reshapes, sums,
  matrix products, FFTs). The sampler gets Aᵀ from a vector–Jacobian product, so an adjoint
  never has to be written by hand;
- **per sample**: row b of the output depends only on sample b.

Writing one is a few lines, e.g. a single line of sight through a 3-D box::

    class LineOfSight:
        def __init__(self, axis: int = -1):
            self.axis = axis

        def __call__(self, x):  # (B, C, X, Y, Z) -> (B, C·X·Y): column sums along ``axis``
            return x.sum(dim=self.axis).flatten(1)

Ready-made here: :class:`Mask` (inpainting, probes), :class:`BlockAverage` (a coarse
observation, the super-resolution problem; any number of spatial dims), :class:`Linear`
(an explicit matrix) and :func:`random_projection`. :func:`parse_operator` turns the command
line's ``mask:FILE.npy`` / ``coarse:F`` / ``projection:M[:SEED]`` into one of them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from rho_core.errors import ConfigError, DataError


class Mask:
    """Inpainting: observe the field where ``mask`` is true, y = x[:, mask] (C-order).

    Args:
        mask: boolean (or 0/1) array of one sample's shape ``(C, *spatial)``, or of the spatial
            shape ``(*spatial)`` (then applied to every channel). Must select at least one value.

    ``n_obs`` counts the observed values per channel-expanded sample once the channel count is
    known (:meth:`size`). :meth:`embed` puts observations back on the grid (for plots).
    """

    def __init__(self, mask: np.ndarray | Tensor) -> None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
        if m.dtype != torch.bool:
            if not bool(((m == 0) | (m == 1)).all()):
                raise DataError("a mask must hold booleans or 0/1 values")
            m = m != 0
        if m.ndim < 1 or not bool(m.any()):
            raise DataError("the mask selects no values; mark at least one observed point")
        self.mask = m.cpu()

    def full_mask(self, sample_shape: Sequence[int]) -> Tensor:
        """The mask broadcast to one sample's ``(C, *spatial)`` shape (ConfigError if it cannot)."""
        shape = tuple(int(n) for n in sample_shape)
        m = self.mask
        if tuple(m.shape) == shape[1:]:
            m = m.unsqueeze(0)
        if m.ndim != len(shape) or m.shape[1:] != shape[1:] or m.shape[0] not in (1, shape[0]):
            raise ConfigError(
                f"mask of shape {tuple(self.mask.shape)} does not fit samples of shape {shape} "
                "(give (C, *spatial) or (*spatial))"
            )
        return m.expand(shape)

    def size(self, sample_shape: Sequence[int]) -> int:
        """M, observed values per sample of ``sample_shape`` = ``(C, *spatial)``."""
        return int(self.full_mask(sample_shape).sum())

    def __call__(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial) -> (B, M)``."""
        m = self.full_mask(x.shape[1:]).to(x.device)
        return x[:, m]

    def embed(self, y: Tensor, sample_shape: Sequence[int], fill: float = math.nan) -> Tensor:
        """``(B, M)`` observations back on the grid ``(B, *sample_shape)``, ``fill`` elsewhere."""
        m = self.full_mask(sample_shape).to(y.device)
        out = torch.full((y.shape[0], *m.shape), fill, dtype=y.dtype, device=y.device)
        out[:, m] = y
        return out

    def __repr__(self) -> str:
        frac = float(self.mask.float().mean())
        return f"Mask(shape={tuple(self.mask.shape)}, observed={frac:.1%})"


class BlockAverage:
    """Coarse observation (super-resolution): the mean over non-overlapping blocks of
    ``factor`` points along every spatial axis, per channel.

    ``(B, C, n₁, …, n_D) -> (B, C · n₁/f₁ · … · n_D/f_D)`` (C-order of ``(C, n₁/f₁, …)``); each
    nᵢ must be a multiple of fᵢ. Works for any number D of spatial dimensions.

    Args:
        factor: one integer for every axis, or one per spatial axis.
    """

    def __init__(self, factor: int | Sequence[int]) -> None:
        f = (factor,) if isinstance(factor, int) else tuple(factor)
        if not f or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in f):
            raise ConfigError(f"block-average factor must be positive integers, got {factor!r}")
        self.factor = f

    def factors(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """One factor per spatial axis (ConfigError if a size is not a multiple)."""
        f = self.factor * len(spatial) if len(self.factor) == 1 else self.factor
        if len(f) != len(spatial):
            raise ConfigError(f"{len(f)} block factors for {len(spatial)} spatial dims")
        for n, k in zip(spatial, f, strict=True):
            if n % k:
                raise ConfigError(f"grid size {n} is not a multiple of the block factor {k}")
        return tuple(f)

    def coarse_shape(self, sample_shape: Sequence[int]) -> tuple[int, ...]:
        """``(C, n₁/f₁, …)``, the observation's shape on its coarse grid."""
        c, *sp = (int(n) for n in sample_shape)
        f = self.factors(sp)
        return (c, *(n // k for n, k in zip(sp, f, strict=True)))

    def size(self, sample_shape: Sequence[int]) -> int:
        """M, observed values per sample."""
        return math.prod(self.coarse_shape(sample_shape))

    def __call__(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial) -> (B, M)``."""
        b, c, *sp = x.shape
        f = self.factors(sp)
        split: list[int] = [b, c]
        for n, k in zip(sp, f, strict=True):
            split += [n // k, k]
        axes = tuple(range(3, 2 + 2 * len(sp) + 1, 2))
        return x.reshape(split).mean(dim=axes).flatten(1)

    def __repr__(self) -> str:
        return f"BlockAverage(factor={self.factor})"


class Linear:
    """An explicit matrix: y = P · x.flatten(1), P of shape ``(M, N)`` with N = C·∏ spatial."""

    def __init__(self, matrix: np.ndarray | Tensor) -> None:
        p = torch.as_tensor(np.asarray(matrix) if not isinstance(matrix, Tensor) else matrix)
        if p.ndim != 2 or p.shape[0] < 1:
            raise DataError(f"the matrix must be 2-D (M, N), got shape {tuple(p.shape)}")
        self.matrix = p.detach().to(torch.float64).cpu()

    def size(self, sample_shape: Sequence[int]) -> int:
        n = math.prod(sample_shape)
        if n != self.matrix.shape[1]:
            raise ConfigError(f"matrix has {self.matrix.shape[1]} columns, samples have {n} values")
        return int(self.matrix.shape[0])

    def __call__(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial) -> (B, M)``."""
        flat = x.flatten(1)
        if flat.shape[1] != self.matrix.shape[1]:
            raise ConfigError(
                f"matrix has {self.matrix.shape[1]} columns, samples have {flat.shape[1]} values"
            )
        return flat @ self.matrix.to(device=x.device, dtype=x.dtype).T

    def __repr__(self) -> str:
        return f"Linear(M={self.matrix.shape[0]}, N={self.matrix.shape[1]})"


def random_projection(n_obs: int, sample_shape: Sequence[int], seed: int = 0) -> Linear:
    """A random Gaussian projection P with iid N(0, 1/N) entries, ``(n_obs, N)``, N = ∏ shape
    (so ‖P x‖ ≈ √(M/N) ‖x‖); reproducible from ``seed``."""
    n = math.prod(int(k) for k in sample_shape)
    if n_obs < 1:
        raise ConfigError(f"a projection needs at least one observation, got {n_obs}")
    g = torch.Generator().manual_seed(int(seed))
    return Linear(torch.randn(n_obs, n, generator=g, dtype=torch.float64) / math.sqrt(n))


def parse_operator(spec: str, sample_shape: Sequence[int]) -> Mask | BlockAverage | Linear:
    """An operator from its command-line form, checked against ``sample_shape`` = (C, *spatial).

    ``mask:FILE.npy`` (a boolean/0-1 array, (C, *spatial) or (*spatial)), ``coarse:F`` (block
    average by F along every axis, or ``coarse:F1,F2,…`` per axis) or ``projection:M[:SEED]``.
    """
    kind, _, arg = spec.partition(":")
    if kind == "mask":
        path = arg
        if not path or not os.path.isfile(path):
            raise ConfigError(f"--operator mask:FILE.npy: mask file {path!r} does not exist")
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read mask {path} as a .npy array: {exc}") from None
        op: Mask | BlockAverage | Linear = Mask(arr)
    elif kind == "coarse":
        try:
            factors = [int(v) for v in arg.split(",")]
        except ValueError:
            raise ConfigError(f"--operator coarse:F needs an integer factor, got {arg!r}") from None
        op = BlockAverage(factors[0] if len(factors) == 1 else factors)
    elif kind == "projection":
        m_text, _, seed_text = arg.partition(":")
        try:
            m, seed = int(m_text), int(seed_text or 0)
        except ValueError:
            raise ConfigError(
                f"--operator projection:M[:SEED] needs integers, got {arg!r}"
            ) from None
        op = random_projection(m, sample_shape, seed)
    else:
        raise ConfigError(
            f"unknown operator {spec!r}; use mask:FILE.npy, coarse:F or projection:M[:SEED]"
        )
    op.size(sample_shape)  # raises ConfigError when it does not fit
    return op

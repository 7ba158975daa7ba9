"""A tiny in-memory dataset of Gaussian blobs conditioned on (amplitude, width), for tests/examples.

Sample ``i`` with parameters ``(a_i, w_i)`` is the centred isotropic blob on the grid
``c = linspace(−1, 1, size)`` per axis,

    ρ_i(x) = a_i · exp(−‖x‖² / (2 w_i²)) · 2 − 1,

so it lies in about ``[−1, 1]`` already (no normaliser needed). ``a`` is drawn from
``U[0.5, 1]`` and ``w`` from ``U[0.2, 0.5]`` with a seeded generator. It exposes the same
attributes the training loop reads from a store-backed dataset (``param_names``,
``spatial_dims``, ``field_shape``, ``normalizer``, ``kind``, ``params``).
"""

from __future__ import annotations

import numpy as np
import torch

from rho_core.errors import ConfigError

__all__ = ["GaussianBlobs"]


class GaussianBlobs(torch.utils.data.Dataset):
    """``n`` blobs of shape ``(channels, size, …)`` with ``spatial_dims`` axes.

    Items are ``(field float32 (C, *spatial), params float64 (2,))``.
    """

    kind = "synthetic_blobs"
    param_names = ("amplitude", "width")

    def __init__(
        self, n: int = 32, spatial_dims: int = 2, size: int = 16, channels: int = 1, seed: int = 0
    ):
        if spatial_dims not in (1, 2, 3):
            raise ConfigError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if n < 1 or size < 2:
            raise ConfigError("need n ≥ 1 samples and size ≥ 2")
        rng = np.random.default_rng(seed)
        amp = rng.uniform(0.5, 1.0, n)
        width = rng.uniform(0.2, 0.5, n)
        self.params = np.stack([amp, width], axis=1).astype(np.float64)
        c = np.linspace(-1.0, 1.0, size)
        grids = np.meshgrid(*([c] * spatial_dims), indexing="ij")
        r2 = sum(g**2 for g in grids)
        fields = amp.reshape(-1, *([1] * spatial_dims)) * np.exp(
            -r2[None] / (2 * width.reshape(-1, *([1] * spatial_dims)) ** 2)
        )
        fields = 2.0 * fields - 1.0
        self.fields = np.repeat(fields[:, None], channels, axis=1).astype(np.float32)
        self.spatial_dims = spatial_dims
        self.field_shape = tuple(self.fields.shape[1:])
        self.normalizer = None
        self.path = None

    def __len__(self) -> int:
        return self.fields.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.fields[i]), torch.from_numpy(self.params[i])

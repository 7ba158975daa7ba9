"""Exponential moving average of network weights with the half-life measured in samples.

After a step that consumed ``n`` training samples every EMA parameter is updated as

    θ̄ ← β θ̄ + (1 − β) θ,    β = 0.5^(n / h),

where ``h`` is the half-life in samples (Karras et al. 2022, "EDM", ``ema_halflife_kimg``): the
weight of a parameter snapshot halves every ``h`` samples, whatever the batch size. With a
ramp-up ratio ``r`` the effective half-life early in training is ``min(h, r · seen)``, so the
average does not stay anchored to the random initialisation in short runs.
Buffers (e.g. normalisation statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "ema_beta"]


def ema_beta(
    batch: int, half_life: float, seen: int = 0, rampup_ratio: float | None = None
) -> float:
    """Decay ``β = 0.5^(batch / h_eff)`` with ``h_eff = min(h, rampup_ratio · seen)`` if ramping.

    ``seen`` is the number of samples consumed *including* this batch.
    """
    h = float(half_life)
    if rampup_ratio is not None:
        h = min(h, rampup_ratio * seen)
    if h <= 0:
        return 0.0
    return 0.5 ** (batch / h)


class EMA:
    """Keeps an averaged copy of ``model`` (``.module``, eval mode, no grad).

    Args:
        model: the live network (the un-wrapped module, not a DDP/compiled wrapper).
        half_life: half-life ``h`` in samples.
        rampup_ratio: see :func:`ema_beta`; ``None`` disables the ramp-up.
    """

    def __init__(self, model: nn.Module, half_life: float, rampup_ratio: float | None = None):
        if half_life <= 0:
            raise ValueError(f"EMA half-life must be > 0 samples, got {half_life}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.half_life = float(half_life)
        self.rampup_ratio = rampup_ratio
        self.seen = 0

    @torch.no_grad()
    def update(self, model: nn.Module, batch: int) -> float:
        """Fold the current weights of ``model`` in after a step of ``batch`` samples; returns β."""
        self.seen += int(batch)
        beta = ema_beta(batch, self.half_life, self.seen, self.rampup_ratio)
        for p_ema, p in zip(self.module.parameters(), model.parameters(), strict=True):
            p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - beta)
        for b_ema, b in zip(self.module.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
        return beta

    def state_dict(self) -> dict:
        """``{"module", "seen", "half_life"}`` of plain values (safe for weights_only loads)."""
        return {"module": self.module.state_dict(), "seen": self.seen, "half_life": self.half_life}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.seen = int(state["seen"])

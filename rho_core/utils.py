"""Small dimension-agnostic helpers for the diffusion math (broadcasting, coefficient gathers).

Everything here works for any number of trailing (spatial/channel) dimensions, so no formula is
written once per dimensionality.
"""

from __future__ import annotations

import torch
from torch import Tensor


def append_dims(x: Tensor, target_ndim: int) -> Tensor:
    """Append singleton dimensions to ``x`` until it has ``target_ndim`` dimensions.

    A per-sample coefficient of shape ``(B,)`` becomes ``(B, 1, ..., 1)`` and then broadcasts
    against a batch ``(B, C, *spatial)`` of any spatial rank (k-diffusion's ``append_dims``).
    """
    missing = target_ndim - x.ndim
    assert missing >= 0, f"input has {x.ndim} dims but target_ndim is {target_ndim}"
    return x[(...,) + (None,) * missing]


def gather(table: Tensor, t: Tensor) -> Tensor:
    """Gather ``table[t]`` for an integer tensor ``t``, returned on ``t``'s device.

    ``table`` is a CPU float64 schedule table; the gather itself is done on the CPU, in float64,
    and the result moved to ``t.device`` (float32 on MPS, which has no float64).
    """
    idx = t.detach().to("cpu", torch.long)
    values = table[idx]
    if t.device.type == "mps":
        values = values.float()
    return values.to(t.device)


def coef(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``table[t]`` as a coefficient broadcastable against ``like`` (its dtype and device).

    The float64 value is rounded once to ``like.dtype`` on the CPU, then moved: schedule math
    stays in float64 and only the final coefficient is cast.
    """
    idx = t.detach().to("cpu", torch.long)
    values = table[idx].to(like.dtype).to(like.device)
    return append_dims(values, like.ndim)

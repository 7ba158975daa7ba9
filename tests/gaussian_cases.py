"""The exact-Gaussian test case shared by the likelihood tests (ODE and ELBO).

x ~ N(μ, diag s²) per coordinate, s linear from 0.05 to 1, μ uniform in [−½, ½]: its exact
denoiser (:class:`rho_core.exact.GaussianDenoiser`) and log-density are known in closed form.
"""

from __future__ import annotations

import torch

from rho_core.exact import GaussianDenoiser
from rho_core.schedules import make_schedule


def gaussian_case(name: str, d: int = 32, b: int = 12, seed: int = 0):
    """``(schedule, denoiser, μ, s, x)``: a T = 1000 ``name`` schedule, the exact denoiser of
    N(μ, diag s²) in ``d`` dimensions and ``b`` samples from it (float64)."""
    sch = make_schedule(name, 1000)
    g = torch.Generator().manual_seed(seed)
    s = torch.linspace(0.05, 1.0, d, dtype=torch.float64)
    mu = torch.rand(d, generator=g, dtype=torch.float64) - 0.5
    den = GaussianDenoiser(sch, mu, s)
    x = mu + s * torch.randn(b, d, generator=g, dtype=torch.float64)
    return sch, den, mu, s, x

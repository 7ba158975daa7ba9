"""Sampling speed of the default 3-D U-Net at 32³ and sampler accuracy with the exact denoiser.

1. Speed: seconds per 32³ volume (batch 1) for each sampler against its number of steps, with
   the default 3-D U-Net of ``rho_core.model.default_model_config`` (random weights: speed does
   not depend on them). If ``rho_core.unet`` is missing, a stated stand-in (four 3×3×3 convs,
   32 channels) is timed instead. Target: ≤ 10 s per volume at 50 steps on 2 CPU cores.
2. Accuracy: data x₀ ~ N(μ, s²) has the exact ε-predictor ε̂ = σ (x_t − α μ)/(α² s² + σ²); the
   table gives each sampler's relative error of the generated std (and of the mean, in units of
   s) at 10/20/50 steps, linear and cosine schedules, default grid. Deterministic samplers are
   affine maps x_T ↦ x₀, so their std is computed exactly from two runs (slope); DDPM is
   stochastic and is measured by Monte Carlo (``--mc`` scalars). Target: the best sampler within
   2 % at 20 steps on cosine.
3. Grids: DDIM and DPM-Solver++(2M) at 20 steps on cosine for each timestep spacing and several
   data stds, and the same with a 1 % error added to ε̂ (a stand-in for a trained network), which
   shows how strongly each grid amplifies network error at the noisy end.

    .venv/bin/python benchmarks/sampling.py [--threads 2] [--precision fp32|bf16]
        [--steps 10,20,50] [--mc 200000] [--skip-speed] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

from rho_core.samplers import SPACINGS, sample
from rho_core.schedules import Schedule, make_schedule

METHODS = ("ddpm", "ddim", "dpmpp")


# ------------------------------------------------------------------------------------------
# Speed
# ------------------------------------------------------------------------------------------


def build_denoiser(size: int) -> tuple[object, str, torch.Tensor | None]:
    """The default 3-D model's ε-denoiser, or a stated stand-in when the U-Net is missing."""
    try:
        from rho_core.model import DiffusionModel, default_model_config

        cfg = default_model_config(
            3, 1, ("amplitude", "width"), (0.5, 0.2), (1.0, 0.5), conditioning="continuous"
        )
        model = DiffusionModel(cfg).eval()
        n_par = sum(p.numel() for p in model.parameters())
        cond = torch.tensor([[0.75, 0.35]], dtype=torch.float64)
        return model.denoiser, f"default 3-D U-Net ({n_par / 1e6:.1f} M params)", cond
    except ImportError:
        net = nn.Sequential(
            nn.Conv3d(1, 32, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(32, 32, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(32, 32, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(32, 1, 3, padding=1),
        ).eval()
        return (lambda x, t, c: net(x)), "stand-in: 4 conv3d layers, 32 channels", None


def speed_table(
    size: int, steps_list: list[int], guidance: float, precision: str
) -> tuple[list[dict], str]:
    denoiser, label, cond = build_denoiser(size)
    if precision != "fp32":
        from rho_core.devices import autocast

        inner = denoiser

        def denoiser(x, t, c):  # noqa: F811 - the autocast wrapper replaces the plain call
            with autocast(torch.device("cpu"), precision):
                return inner(x, t, c)

    shape = (1, 1, size, size, size)
    sch = make_schedule("cosine")
    rows = []

    def timed(method, steps, g=1.0, den=denoiser):
        t0 = time.perf_counter()
        sample(
            den,
            shape,
            sch,
            method,
            steps,
            cond=cond,
            guidance=g,
            generator=torch.Generator().manual_seed(0),
        )
        return time.perf_counter() - t0

    timed("ddim", 2)  # warm-up (allocator, first-call overheads)
    for method in METHODS:
        for steps in steps_list:
            rows.append(
                {"method": method, "steps": steps, "guidance": 1.0, "seconds": timed(method, steps)}
            )
    if guidance != 1.0 and cond is not None:
        steps = max(steps_list)
        rows.append(
            {
                "method": "dpmpp",
                "steps": steps,
                "guidance": guidance,
                "seconds": timed("dpmpp", steps, guidance),
            }
        )
    # the samplers' own cost: same runs with a free denoiser
    for method in METHODS:
        steps = max(steps_list)
        dt = timed(method, steps, den=lambda x, t, c: x)
        rows.append(
            {"method": f"{method} (overhead only)", "steps": steps, "guidance": 1.0, "seconds": dt}
        )
    return rows, label


# ------------------------------------------------------------------------------------------
# Accuracy with the exact Gaussian denoiser
# ------------------------------------------------------------------------------------------


def gaussian_eps(schedule: Schedule, mu: float, s: float, noise: float = 0.0, seed: int = 0):
    """Exact ε̂ for x₀ ~ N(mu, s²); with ``noise`` > 0 plus noise·N(0, 1) per call (seeded)."""
    abar = schedule.alphas_cumprod
    gen = torch.Generator().manual_seed(seed)

    def denoiser(x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        a = float(abar[int(t[0])])
        eps = math.sqrt(1 - a) * (x - math.sqrt(a) * mu) / (a * s * s + 1 - a)
        if noise:
            eps = eps + noise * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return eps

    return denoiser


def affine_moments(schedule, method, steps, mu, s, spacing=None) -> tuple[float, float]:
    """(std error, mean error / s) of a deterministic sampler, exactly: x₀ = A x_T + b."""
    den = gaussian_eps(schedule, mu, s)
    kw = dict(dtype=torch.float64, spacing=spacing)
    out = [
        float(sample(den, (1, 1), schedule, method, steps, x_T=torch.full((1, 1), v), **kw))
        for v in (0.0, 1.0)
    ]
    return abs(out[1] - out[0]) / s - 1.0, (out[0] - mu) / s


def mc_moments(schedule, method, steps, mu, s, n, spacing=None, noise=0.0) -> tuple[float, float]:
    """(std error, mean error / s) by Monte Carlo over ``n`` scalars."""
    den = gaussian_eps(schedule, mu, s, noise=noise, seed=1)
    x = sample(
        den,
        (n, 1),
        schedule,
        method,
        steps,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
        spacing=spacing,
    )
    return float(x.std()) / s - 1.0, (float(x.mean()) - mu) / s


def accuracy_table(steps_list, mu, s, n_mc) -> list[dict]:
    rows = []
    for name in ("linear", "cosine"):
        sch = make_schedule(name)
        for method in METHODS:
            for steps in steps_list:
                if method == "ddpm":
                    se, me = mc_moments(sch, method, steps, mu, s, n_mc)
                else:
                    se, me = affine_moments(sch, method, steps, mu, s)
                rows.append(
                    {
                        "schedule": name,
                        "method": method,
                        "steps": steps,
                        "std_err": se,
                        "mean_err": me,
                    }
                )
        if 1000 not in steps_list:
            se, me = mc_moments(sch, "ddpm", 1000, mu, s, n_mc)
            rows.append(
                {"schedule": name, "method": "ddpm", "steps": 1000, "std_err": se, "mean_err": me}
            )
    return rows


def grid_table(stds, steps, mu, n_mc, noise) -> list[dict]:
    rows = []
    sch = make_schedule("cosine")
    for method in ("ddim", "dpmpp"):
        for spacing in SPACINGS:
            row = {"method": method, "spacing": spacing, "steps": steps}
            for s in stds:
                row[f"std_err@{s:g}"] = affine_moments(sch, method, steps, mu, s, spacing)[0]
            row["noisy_std_err@0.5"] = mc_moments(
                sch, method, steps, mu, 0.5, n_mc, spacing=spacing, noise=noise
            )[0]
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (speed part)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="autocast precision of the network (speed part)",
    )
    ap.add_argument("--steps", default="10,20,50")
    ap.add_argument("--guidance", type=float, default=2.0, help="extra timed row with CFG")
    ap.add_argument("--mu", type=float, default=0.3)
    ap.add_argument("--std", type=float, default=0.5)
    ap.add_argument("--mc", type=int, default=200_000, help="Monte Carlo scalars for DDPM")
    ap.add_argument("--eps-noise", type=float, default=0.01)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", help="also write all results to this JSON file")
    args = ap.parse_args(argv)
    steps_list = [int(v) for v in args.steps.split(",")]
    result: dict = {"config": vars(args)}

    if not args.skip_speed:
        torch.set_num_threads(args.threads)
        rows, label = speed_table(args.size, steps_list, args.guidance)
        result["speed"] = {"model": label, "threads": args.threads, "rows": rows}
        print(f"\nSpeed: seconds per {args.size}³ volume, {label}, {args.threads} threads")
        print(f"{'method':8s} {'steps':>5s} {'guid.':>5s} {'s/volume':>9s} {'s/step':>7s}")
        for r in rows:
            print(
                f"{r['method']:8s} {r['steps']:5d} {r['guidance']:5.1f} {r['seconds']:9.2f} "
                f"{r['seconds'] / r['steps']:7.3f}"
            )

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    acc = accuracy_table(steps_list, args.mu, args.std, args.mc)
    result["accuracy"] = acc
    print(
        f"\nAccuracy, exact Gaussian denoiser, x0 ~ N({args.mu}, {args.std}²), default grid: "
        "relative std error (mean error / s)"
    )
    all_steps = sorted({r["steps"] for r in acc})
    print(f"{'schedule':8s} {'method':6s} " + " ".join(f"{n:>17d}" for n in all_steps))
    for name in ("linear", "cosine"):
        for method in METHODS:
            cells = []
            for n in all_steps:
                r = [
                    x for x in acc if (x["schedule"], x["method"], x["steps"]) == (name, method, n)
                ]
                cells.append(
                    f"{r[0]['std_err'] * 100:+7.2f}% ({r[0]['mean_err'] * 100:+5.2f}%)"
                    if r
                    else " " * 17
                )
            print(f"{name:8s} {method:6s} " + " ".join(cells))

    stds = (0.1, 0.25, 0.5, 1.0, 2.0)
    grid = grid_table(stds, 20, args.mu, min(args.mc, 100_000), args.eps_noise)
    result["grids"] = grid
    print(
        f"\nGrids, cosine, 20 steps: relative std error for data std s; last column with "
        f"{args.eps_noise:g}·N(0,1) added to ε̂ (s = 0.5, Monte Carlo)"
    )
    print(
        f"{'method':6s} {'spacing':9s} "
        + " ".join(f"{'s=' + format(s, 'g'):>8s}" for s in stds)
        + f" {'noisy ε':>9s}"
    )
    for r in grid:
        print(
            f"{r['method']:6s} {r['spacing']:9s} "
            + " ".join(f"{r[f'std_err@{s:g}'] * 100:+7.1f}%" for s in stds)
            + f" {r['noisy_std_err@0.5'] * 100:+8.1f}%"
        )

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

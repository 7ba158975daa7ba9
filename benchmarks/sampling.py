"""Sampling speed of the default 3-D U-Net at 32³ and sampler accuracy with the exact denoiser.

1. Speed. (a) Seconds per network evaluation of one 32³ volume (batch 1, best of ``--reps``,
   variants interleaved) for the default 3-D U-Net (patch 2) and the original full-resolution
   one (patch 1), fp32 and bf16 autocast, with the batch-1 oneDNN convolution path on and off.
   (b) Seconds per 32³ volume (batch 1) for each sampler against its number of steps with the
   default 3-D U-Net of ``rho_core.model.default_model_config`` (random weights: speed does not
   depend on them), plus classifier-free guidance batched (one call of batch 2) vs two calls.
   Target: ≤ 10 s per volume at 50 steps on 2 CPU cores.
2. Accuracy: data x₀ ~ N(μ, s²) has the exact ε-predictor ε̂ = σ (x_t − α μ)/(α² s² + σ²); the
   table gives each sampler's relative error of the generated std (and of the mean, in units of
   s) at 10/20/50 steps, linear and cosine schedules, default grid. Deterministic samplers are
   affine maps x_T ↦ x₀, so their std is computed exactly from two runs (slope); DDPM is
   stochastic and is measured by Monte Carlo (``--mc`` scalars). Target: the best sampler within
   2 % at 20 steps on cosine.
3. Grids: DDIM and DPM-Solver++(2M) at 20 steps on cosine for each timestep spacing and several
   data stds, and the same with a 1 % error added to ε̂ (a stand-in for a trained network), which
   shows how strongly each grid amplifies network error at the noisy end.

    .venv/bin/python benchmarks/sampling.py [--threads 2] [--precision fp32|bf16] [--reps 3]
        [--steps 10,20,50] [--mc 200000] [--skip-speed] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from rho_core.samplers import SPACINGS, sample
from rho_core.schedules import Schedule, make_schedule

METHODS = ("ddpm", "ddim", "dpmpp")


# ------------------------------------------------------------------------------------------
# Speed
# ------------------------------------------------------------------------------------------


def build_model(patch_size: int | None = None):
    """A 3-D model of ``default_model_config`` (random weights: speed does not depend on them);
    ``patch_size=1`` is the original full-resolution network. Returns (model, label, cond)."""
    from rho_core.model import DiffusionModel, default_model_config

    kw = {} if patch_size is None else {"patch_size": patch_size}
    cfg = default_model_config(
        3, 1, ("amplitude", "width"), (0.5, 0.2), (1.0, 0.5), conditioning="continuous", **kw
    )
    torch.manual_seed(0)
    model = DiffusionModel(cfg).eval()
    n_par = sum(p.numel() for p in model.parameters())
    p = cfg.unet.patch_size
    name = "default 3-D U-Net" if patch_size is None else f"3-D U-Net patch_size={p}"
    label = f"{name} (patch {p}, {n_par / 1e6:.1f} M params)"
    cond = torch.tensor([[0.75, 0.35]], dtype=torch.float64)
    return model, label, cond


def _with_precision(model, precision: str):
    """The model's denoiser, under CPU autocast for ``precision != "fp32"``."""
    if precision == "fp32":
        return model.denoiser
    from rho_core.devices import autocast

    def den(x, t, c, drop=None):
        with autocast(torch.device("cpu"), precision):
            return model.denoiser(x, t, c, drop=drop)

    den.accepts_drop = True
    return den


def eval_table(size: int, reps: int) -> list[dict]:
    """Seconds per network evaluation of one volume (batch 1), best of ``reps``, for the default
    (patch-2) and full-resolution (patch-1) nets × fp32/bf16 × the batch-1 oneDNN path on/off,
    interleaved round-robin so machine load hits every variant alike."""
    from torch.utils.flop_counter import FlopCounterMode

    import rho_core.unet as unet_mod

    variants = []
    for patch in (2, 1):
        model, label, cond = build_model(patch)
        x = torch.randn(1, 1, size, size, size)
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            model.denoiser(torch.cat([x, x]), torch.tensor([500, 500]), cond.expand(2, -1))
        gflop = fc.get_total_flops() / 2 / 1e9  # batch 2 counted (oneDNN calls are not)
        for precision in ("fp32", "bf16"):
            for onednn in (True, False):
                variants.append(
                    {
                        "model": f"patch {patch}",
                        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                        "gflop": gflop,
                        "precision": precision,
                        "onednn_batch1": onednn,
                        "seconds": float("inf"),
                        "_den": _with_precision(model, precision),
                        "_args": (x, torch.tensor([500]), cond),
                    }
                )
    try:
        for r in range(reps + 1):
            for v in variants:
                unet_mod.ONEDNN_BATCH1 = v["onednn_batch1"]
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    v["_den"](*v["_args"])
                    dt = time.perf_counter() - t0
                if r > 0:  # round 0 is the warm-up
                    v["seconds"] = min(v["seconds"], dt)
    finally:
        unet_mod.ONEDNN_BATCH1 = True
    return [{k: val for k, val in v.items() if not k.startswith("_")} for v in variants]


def speed_table(
    size: int, steps_list: list[int], guidance: float, precision: str
) -> tuple[list[dict], str]:
    """Seconds per volume for each sampler and number of steps with the default 3-D model."""
    model, label, cond = build_model()
    denoiser = _with_precision(model, precision)
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
    if guidance != 1.0:
        steps = max(steps_list)
        rows.append(
            {
                "method": "dpmpp",
                "steps": steps,
                "guidance": guidance,
                "seconds": timed("dpmpp", steps, guidance),
            }
        )

        def unbatched(x, t, c):  # no ``accepts_drop``: two network calls per step
            return denoiser(x, t, c)

        rows.append(
            {
                "method": "dpmpp (CFG as 2 calls)",
                "steps": steps,
                "guidance": guidance,
                "seconds": timed("dpmpp", steps, guidance, den=unbatched),
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
    ap.add_argument("--reps", type=int, default=3, help="best-of-N for the evaluation table")
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
        ev = eval_table(args.size, args.reps)
        result["evaluation"] = {"threads": args.threads, "rows": ev}
        print(
            f"\nOne network evaluation of one {args.size}³ volume (batch 1), best of "
            f"{args.reps}, {args.threads} threads; × 50 = a 50-step sample"
        )
        print(
            f"{'model':8s} {'params':>7s} {'GFLOP':>6s} {'prec.':5s} {'oneDNN b1':>9s} "
            f"{'s/eval':>7s} {'50 steps':>8s}"
        )
        for r in ev:
            print(
                f"{r['model']:8s} {r['params_M']:6.1f}M {r['gflop']:6.1f} {r['precision']:5s} "
                f"{'on' if r['onednn_batch1'] else 'off':>9s} {r['seconds']:7.3f} "
                f"{50 * r['seconds']:7.1f}s"
            )
        rows, label = speed_table(args.size, steps_list, args.guidance, args.precision)
        result["speed"] = {
            "model": label,
            "threads": args.threads,
            "precision": args.precision,
            "rows": rows,
        }
        print(
            f"\nSpeed: seconds per {args.size}³ volume, {label}, {args.precision}, "
            f"{args.threads} threads"
        )
        print(f"{'method':24s} {'steps':>5s} {'guid.':>5s} {'s/volume':>9s} {'s/step':>7s}")
        for r in rows:
            print(
                f"{r['method']:24s} {r['steps']:5d} {r['guidance']:5.1f} {r['seconds']:9.2f} "
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

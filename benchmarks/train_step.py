"""Training throughput of the default 3-D U-Net at 32³, fp32 vs bf16 autocast, against matmul peak.

For each precision: samples/s of a full training step (forward, backward, AdamW update) and the
achieved GFLOP/s, counting the convolution and matmul FLOPs of one forward+backward with
``torch.utils.flop_counter.FlopCounterMode``. Beside them, in the same run: the machine's fp32
and bf16 matmul peak (a large square GEMM), and the GFLOP/s of the network's dominant
convolution alone. Finally, the loss curves of fp32 and bf16 training from the same
initialisation over a few dozen steps (default at 32³, where the patch-2 net's coarsest level is
4³) and their largest relative difference.

    .venv/bin/python benchmarks/train_step.py [--batch 4] [--steps 5] [--curve-steps 30]
        [--curve-size 32] [--threads N] [--patch-size P] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from rho_core.data.synthetic import GaussianBlobs
from rho_core.devices import autocast
from rho_core.model import DiffusionModel, default_model_config
from rho_core.training import TrainConfig, train
from rho_core.unet import conv_nd

PATCH_SIZE: int | None = None  # --patch-size; None: default_model_config's (2 for 3-D)


def model_config(size_dims: int = 3):
    kw = {} if PATCH_SIZE is None else {"patch_size": PATCH_SIZE}
    return default_model_config(
        size_dims, 1, ("amplitude", "width"), (0.5, 0.2), (1.0, 0.5), conditioning="continuous",
        **kw,
    )  # fmt: skip


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an ``n×n @ n×n`` GEMM in ``dtype`` (best of ``reps``)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def conv_gflops(precision: str, batch: int, reps: int = 3) -> float:
    """GFLOP/s of one 3×3×3 conv, 64→64 channels at 16³ (the U-Net's level-1 workhorse)."""
    conv = conv_nd(3, 64, 64, 3, padding=1)
    x = torch.randn(batch, 64, 16, 16, 16)
    flops = 2 * batch * 64 * 64 * 27 * 16**3
    dev = torch.device("cpu")
    with torch.no_grad(), autocast(dev, precision):
        conv(x)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def step_flops(model: DiffusionModel, x0: torch.Tensor, params: torch.Tensor) -> int:
    """FLOPs (conv + matmul, forward + backward) of one training step's network work."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    g = torch.Generator().manual_seed(0)
    with counter:
        model.loss(x0, params, generator=g).mean().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def throughput(batch: int, steps: int) -> dict:
    """Per-precision step time, fp32 and bf16 steps interleaved so machine load hits both alike.

    Reports the best (min) and median step time over ``steps`` timed steps after one warm-up.
    """
    dev = torch.device("cpu")
    x0 = torch.randn(batch, 1, 32, 32, 32)
    params = torch.tensor([[0.7, 0.3]] * batch, dtype=torch.float64)
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = DiffusionModel(model_config())
        runs[precision] = {
            "model": model,
            "opt": torch.optim.AdamW(model.parameters(), lr=1e-4),
            "gen": torch.Generator().manual_seed(1),
            "times": [],
        }
    flops = step_flops(runs["fp32"]["model"], x0, params)

    def one(precision: str) -> float:
        r = runs[precision]
        t0 = time.perf_counter()
        with autocast(dev, precision):
            loss = r["model"].loss(x0, params, generator=r["gen"], drop_prob=0.1).mean()
        loss.backward()
        r["opt"].step()
        r["opt"].zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for i in range(steps + 1):
        for precision in ("fp32", "bf16"):
            dt = one(precision)
            if i:  # the first step is a warm-up (kernel selection, allocator)
                runs[precision]["times"].append(dt)
    out = {}
    for precision, r in runs.items():
        ts = sorted(r["times"])
        best, med = ts[0], ts[len(ts) // 2]
        out[precision] = {
            "precision": precision,
            "batch": batch,
            "step_s": best,
            "step_s_median": med,
            "samples_per_s": batch / best,
            "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / best / 1e9,
            "parameters_m": r["model"].net.num_parameters() / 1e6,
        }
    return out


def loss_curves(steps: int, size: int, batch: int) -> dict:
    ds = GaussianBlobs(n=64, spatial_dims=3, size=size, seed=0)
    mc = model_config()
    curves = {}
    for precision in ("fp32", "bf16"):
        tc = TrainConfig(
            steps=steps, batch_size=batch, lr=1e-3, warmup_steps=5, checkpoint_every=0,
            log_every=10_000, precision=precision, device="cpu", cond_drop_prob=0.1,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as d:
            curves[precision] = train(mc, tc, ds, d).losses
    a, b = curves["fp32"], curves["bf16"]
    rel = [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b, strict=True)]
    k = max(1, steps // 5)
    win = [
        abs(sum(a[i : i + k]) - sum(b[i : i + k])) / max(abs(sum(a[i : i + k])), 1e-12)
        for i in range(0, steps - k + 1, k)
    ]
    return {
        "window": k,
        "max_rel_diff_window_mean": max(win),
        "steps": steps,
        "size": size,
        "fp32": a,
        "bf16": b,
        "max_rel_diff": max(rel),
        "mean_rel_diff": sum(rel) / len(rel),
        "fp32_first_last": [sum(a[:k]) / k, sum(a[-k:]) / k],
        "bf16_first_last": [sum(b[:k]) / k, sum(b[-k:]) / k],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per precision")
    ap.add_argument("--curve-steps", type=int, default=30, help="0 skips the loss-curve check")
    ap.add_argument("--curve-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument(
        "--patch-size", type=int, help="U-Net patch_size (default: the default config's; 1 = "
        "the original full-resolution net)",
    )  # fmt: skip
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    global PATCH_SIZE
    PATCH_SIZE = args.patch_size
    if args.threads:
        torch.set_num_threads(args.threads)

    res: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    res["matmul_peak_gflops"] = {
        "fp32": matmul_peak(torch.float32),
        "bf16": matmul_peak(torch.bfloat16),
    }
    res["conv_gflops"] = {p: conv_gflops(p, args.batch) for p in ("fp32", "bf16")}
    res["train"] = throughput(args.batch, args.steps)
    if args.curve_steps:
        res["loss_curves"] = loss_curves(args.curve_steps, args.curve_size, args.batch)

    peak = res["matmul_peak_gflops"]
    tr = res["train"]
    print(
        f"3-D U-Net (patch_size {model_config().unet.patch_size}) at 32³: "
        f"{tr['fp32']['parameters_m']:.2f} M parameters, "
        f"{tr['fp32']['gflop_per_step']:.1f} GFLOP per step (batch {args.batch}), "
        f"{res['threads']} threads"
    )
    print("step time: best of the interleaved timed steps (median in the JSON)")
    print(
        f"{'precision':<10}{'step s':>9}{'samples/s':>11}{'GFLOP/s':>10}{'% peak':>8}"
        f"{'conv GFLOP/s':>14}{'conv % peak':>12}{'GEMM peak':>11}"
    )
    for p in ("fp32", "bf16"):
        print(
            f"{p:<10}{tr[p]['step_s']:>9.2f}{tr[p]['samples_per_s']:>11.2f}"
            f"{tr[p]['achieved_gflops']:>10.1f}{100 * tr[p]['achieved_gflops'] / peak[p]:>7.0f}%"
            f"{res['conv_gflops'][p]:>14.1f}{100 * res['conv_gflops'][p] / peak[p]:>11.0f}%"
            f"{peak[p]:>11.1f}"
        )
    print(
        f"bf16 speed-up over fp32: {tr['bf16']['samples_per_s'] / tr['fp32']['samples_per_s']:.2f}×"
    )
    if "loss_curves" in res:
        lc = res["loss_curves"]
        print(
            f"loss curves at {lc['size']}³ over {lc['steps']} steps: fp32 "
            f"{lc['fp32_first_last'][0]:.4f} → {lc['fp32_first_last'][1]:.4f}, bf16 "
            f"{lc['bf16_first_last'][0]:.4f} → {lc['bf16_first_last'][1]:.4f}; "
            f"per-step rel diff max {lc['max_rel_diff']:.1%} mean {lc['mean_rel_diff']:.1%}; "
            f"{lc['window']}-step window means differ by ≤ {lc['max_rel_diff_window_mean']:.1%}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()

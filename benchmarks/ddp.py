"""Data-parallel scaling on this machine: samples/s with 1 and 2 torchrun processes, and the
per-step gradient all-reduce time of the default 3-D U-Net (``rho_core.unet.DEFAULT_3D``).

    .venv/bin/python benchmarks/ddp.py [--size 16] [--batch 2] [--steps 6] [--device cpu|cuda|xpu]
        [--json FILE]

Throughput: a small 3-D U-Net (``base_channels 16``, two levels) on ``size³`` volumes, ε-prediction
MSE with AdamW, real ``DistributedDataParallel`` over ``gloo`` through ``rho_core.launch``; the
per-rank batch is fixed (weak scaling), so with ``W`` ranks each step processes ``W · batch``
samples. Configurations: 1 process × 1 thread, 1 process × 2 threads, 2 processes × 1 thread.

All-reduce: the gradient of ``DEFAULT_3D`` as one flat float32 tensor (what DDP sends, split into
25 MiB buckets), summed over 2 gloo ranks on 127.0.0.1; the median of ``--reduce-repeats``.

Limits, stated: this machine has 2 CPU cores shared by every other process, so 2 ranks can at best
double the 1-thread rate and at best match a 2-thread single process; loopback all-reduce measures
memory copies, not a network. The header prints the load average: when other processes keep the
cores busy, every row is slower and the multi-threaded one suffers most (OpenMP threads wait for
each other at every operation). On a cluster the same script measures the interconnect.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace) -> int:
    """One torchrun rank: time DDP training steps, then (if asked) the all-reduce."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from rho_core import distributed
    from rho_core.unet import DEFAULT_3D, UNet, UNetConfig

    torch.set_num_threads(args.threads)
    ctx = distributed.init_distributed(args.device)
    dev = ctx.device

    def sync() -> None:
        if dev.type != "cpu":
            torch.accelerator.synchronize()
    torch.manual_seed(distributed.rank_seed(0))
    cfg = UNetConfig(dims=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                     attention_levels=(), mid_attention=False)
    model: nn.Module = UNet(cfg).to(dev)
    net = (nn.parallel.DistributedDataParallel(model, device_ids=ctx.ddp_device_ids())
           if ctx.is_distributed else model)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 1, args.size, args.size, args.size, device=dev)
    t = torch.randint(0, 1000, (args.batch,), device=dev)
    eps = torch.randn_like(x)

    def step() -> None:
        loss = nn.functional.mse_loss(net(x, t), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    sync()
    distributed.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    distributed.barrier()
    elapsed = time.perf_counter() - t0
    result = {
        "world_size": ctx.world_size,
        "device": str(dev),
        "backend": ctx.backend,
        "threads_per_rank": args.threads,
        "per_rank_batch": args.batch,
        "steps": args.steps,
        "seconds": elapsed,
        "samples_per_s": ctx.world_size * args.batch * args.steps / elapsed,
        "model_params": model.num_parameters(),
    }
    if args.reduce_repeats and ctx.is_distributed:
        n = UNet(DEFAULT_3D).num_parameters()
        grad = torch.randn(n, device=dev)
        dist.all_reduce(grad)  # warm the connection
        times = []
        for _ in range(args.reduce_repeats):
            sync()
            distributed.barrier()
            t1 = time.perf_counter()
            dist.all_reduce(grad)
            sync()
            times.append(time.perf_counter() - t1)
        worst = distributed.all_reduce_scalar(statistics.median(times), "max")
        result["allreduce"] = {"params": n, "megabytes": 4 * n / 1e6, "median_s": worst,
                               "gbytes_per_s": 4 * n / worst / 1e9}
    if ctx.is_main:
        Path(args.result).write_text(json.dumps(result))
    distributed.shutdown()
    return 0


def _run(args: argparse.Namespace, nproc: int, threads: int, reduce: bool) -> dict:
    from rho_core.launch import launch_torchrun

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        argv = [str(Path(__file__).resolve()), "--worker", "--result", str(out),
                "--threads", str(threads), "--size", str(args.size), "--batch", str(args.batch),
                "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--reduce-repeats", str(args.reduce_repeats if reduce else 0),
                "--device", args.device]
        env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
        launch_torchrun(argv, nproc=nproc, env=env, log_callback=lambda line: None)
        return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16, help="volume edge (voxels)")
    parser.add_argument("--batch", type=int, default=2, help="per-rank batch")
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reduce-repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu",
                        help="cpu (gloo; default), cuda (nccl) or xpu (xccl): one rank per device")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        from rho_core.distributed import exit_worker

        exit_worker(_worker(args))  # no interpreter teardown: see exit_worker

    rows = [
        ("1 proc × 1 thread", _run(args, 1, 1, False)),
        ("1 proc × 2 threads", _run(args, 1, 2, False)),
        ("2 procs × 1 thread", _run(args, 2, 1, True)),
    ]
    base = rows[0][1]["samples_per_s"]
    load = os.getloadavg()[0]
    print(f"DDP on {rows[2][1]['device'].split(':')[0]}/{rows[2][1]['backend']}, "
          f"{os.cpu_count()} cores (shared; 1-min load average {load:.1f}), "
          "3-D U-Net "
          f"{rows[0][1]['model_params']:,} params, {args.size}³ volumes, per-rank batch "
          f"{args.batch}, {args.steps} timed steps")
    print(f"{'configuration':<22}{'samples/s':>11}{'speed-up':>10}")
    for name, r in rows:
        print(f"{name:<22}{r['samples_per_s']:>11.2f}{r['samples_per_s'] / base:>9.2f}×")
    ar = rows[2][1].get("allreduce")
    if ar:
        print(f"all-reduce of DEFAULT_3D gradients ({ar['params']:,} params, "
              f"{ar['megabytes']:.1f} MB fp32) over 2 {rows[2][1]['backend']} ranks: "
              f"{1e3 * ar['median_s']:.1f} ms "
              f"median per step ({ar['gbytes_per_s']:.2f} GB/s)")
    if load > (os.cpu_count() or 1):
        print(f"note: load {load:.1f} > {os.cpu_count()} cores — other processes share the CPUs; "
              "multi-threaded OpenMP (the 2-thread row) degrades worst under oversubscription")
    if args.json:
        out = {name: r for name, r in rows}
        out["load_average_1min"] = load
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

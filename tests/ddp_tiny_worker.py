"""A tiny, self-contained data-parallel training script for the distributed tests.

Run under torchrun (``rho_core.launch.launch_torchrun``) it trains a 2-layer MLP on a fixed
regression set with plain :class:`DistributedDataParallel` and a :class:`DistributedSampler`, and
writes each rank's final parameters to ``OUT/rank{r}.pt``. Imported, :func:`train_tiny` runs the
same training in one process (world size 1), which is what the ranks must reproduce:

with the global batch ``G = b·W``, ``DistributedSampler`` gives rank ``r`` the indices
``perm[r::W]``, so batch ``s`` of rank ``r`` is ``perm[(s·b + j)·W + r]`` for ``j < b``; over all
ranks these are exactly ``perm[s·G : (s+1)·G]``, the one-process batch, and DDP's averaged
gradient equals the one-process gradient of the mean loss.

Command line: ``ddp_tiny_worker.py OUT --steps K --global-batch G [--fail-rank R]``.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

N_SAMPLES, N_IN, N_HIDDEN = 96, 8, 32


def make_data(seed: int = 0) -> TensorDataset:
    """A fixed dataset: x ~ N(0, I₈), y = sin(x·w) + 0.1·x₀ (float32)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, N_IN, generator=g)
    w = torch.randn(N_IN, 1, generator=g)
    y = torch.sin(x @ w) + 0.1 * x[:, :1]
    return TensorDataset(x, y)


def make_model(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N_IN, N_HIDDEN), nn.Tanh(), nn.Linear(N_HIDDEN, 1))


def train_tiny(
    steps: int, global_batch: int, rank: int = 0, world: int = 1, ddp: bool = False, log=print
) -> nn.Module:
    """Train ``steps`` SGD-with-momentum steps; returns the (unwrapped) model."""
    if global_batch % world:
        raise SystemExit(f"global batch {global_batch} is not divisible by world size {world}")
    data = make_data()
    model = make_model()
    net: nn.Module = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=7,
                                 drop_last=True)
    loader = DataLoader(data, batch_size=global_batch // world, sampler=sampler, drop_last=True)
    step, epoch = 0, 0
    while step < steps:
        sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
        for x, y in loader:
            loss = nn.functional.mse_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            log(step, loss.item())
            if step >= steps:
                break
        epoch += 1
    return model


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--fail-rank", type=int, default=-1)
    args = parser.parse_args()

    from rho_core import distributed

    ctx = distributed.init_distributed("cpu")
    print(f"[tiny] rank={ctx.rank} world={ctx.world_size} backend={ctx.backend} pid={os.getpid()}",
          flush=True)
    if ctx.rank == args.fail_rank:
        print(f"[tiny] rank {ctx.rank} fails on purpose", flush=True)
        return 3
    token = distributed.broadcast_object({"token": 1234 + ctx.rank}, src=0)
    ranks = distributed.all_gather_object(ctx.rank)

    def log(step: int, loss: float) -> None:
        mean = distributed.all_reduce_scalar(loss, "mean")
        if distributed.is_main():
            print(f"[tiny] step={step} loss={mean:.10f}", flush=True)

    model = train_tiny(args.steps, args.global_batch, ctx.rank, ctx.world_size, ddp=True, log=log)
    torch.save(
        {"state": model.state_dict(), "token": token, "ranks": ranks,
         "seed": distributed.rank_seed(5)},
        os.path.join(args.out, f"rank{ctx.rank}.pt"),
    )
    distributed.barrier()
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    from rho_core.distributed import exit_worker

    exit_worker(main())  # no interpreter teardown (its gloo SIGABRT flake)

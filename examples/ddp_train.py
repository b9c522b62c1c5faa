"""Data-parallel training with fastloss on torch.distributed (gloo, CPU).

Each rank trains the same small MLP on its shard of the batch with
fastloss's loss and optimizer; DistributedDataParallel averages gradients.
Run with N ranks:

    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --steps 20

`run(rank, world_size, init_method)` is also what tests/test_distributed.py launches.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fastloss.torch as FT
import fastloss.torch.optim as FO


def make_problem(n=64, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return x, y


def make_model(d=8, seed=1):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1)).double()


def make_optimizer(params):
    # the one-line change from torch: torch.optim.Adam -> fastloss.torch.optim.Adam
    return FO.Adam(params, lr=1e-2)


def train(model, x, y, steps):
    opt = make_optimizer(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        loss = FT.huber_loss(model(x), y, delta=0.5)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@contextlib.contextmanager
def process_group(rank, world_size, init_method):
    """A gloo process group for the block, torn down cleanly after it; yields this
    rank's rows of the batch."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        x, y = make_problem()
        shard = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
        yield x[shard], y[shard]
        # both ranks past their last collective before either tears gloo down: a
        # rank that exits while the other is still closing its pairs can abort
        # it ("terminate called without an active exception")
        dist.barrier()
    finally:
        # free what still holds the process group (sharded modules sit in reference
        # cycles) while the interpreter is alive: gloo work destroyed during
        # interpreter shutdown aborts ("terminate called without an active exception")
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def run(rank, world_size, init_method, steps=10, result_path=None):
    """One rank: train on this rank's shard under DDP; rank 0 may save params."""
    with process_group(rank, world_size, init_method) as (x, y):
        params = train(DistributedDataParallel(make_model()), x, y, steps)
        if rank == 0 and result_path:
            torch.save(params, result_path)
    return params


def parse_args(doc):
    """The examples' command line (this one's, fsdp_train.py's, zero_train.py's); rank
    and world size come from the environment torchrun sets. Returns (args, rank, world)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--init-method", default="env://",
                        help="torch.distributed init method (torchrun sets env://)")
    parser.add_argument("--save", default=None, help="rank 0 saves its results here")
    return parser.parse_args(), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def main():
    args, rank, world = parse_args(__doc__)
    params = run(rank, world, args.init_method, args.steps, result_path=args.save)
    if rank == 0:
        x, y = make_problem()
        single = train(make_model(), x, y, args.steps)
        diff = max(float((a - b).abs().max()) for a, b in zip(params, single))
        print(f"{world} ranks x {args.steps} steps: max |param - single-process| = {diff:.2e}")


if __name__ == "__main__":
    main()

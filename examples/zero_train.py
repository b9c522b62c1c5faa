"""ZeRO-1 (optimizer state sharding) with fastloss's optimizer on torch.distributed (gloo, CPU).

``torch.distributed.optim.ZeroRedundancyOptimizer`` gives each rank a partition of the
parameters and builds, per rank, ``optimizer_class(partition, **defaults)``: with
``optimizer_class=fastloss.torch.optim.Adam`` each rank keeps Adam's state for its
partition only and steps it with fastloss's kernels; ZeRO then broadcasts the updated
parameters. DistributedDataParallel averages the gradients as usual. ``max_grad_norm``
passed through ZeRO clips by the norm of the whole gradient (summed over the
partitions). Run with N ranks:

    torchrun --standalone --nproc_per_node=2 examples/zero_train.py --steps 20

Rank 0 prints how far the runs end from single-process full-batch training.
``run(rank, world_size, init_method)`` is also what tests/test_distributed.py calls.
"""
from __future__ import annotations

import os
import sys

import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import fastloss.torch.optim as FO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_train import make_model  # noqa: E402
from fsdp_train import CLIP, LR, main, run_all, train  # noqa: E402

# name -> the ZeRO optimizer; 'adam_resume' hands its state over half-way
RUNS = {
    "adam": lambda ps: ZeroRedundancyOptimizer(ps, optimizer_class=FO.Adam, lr=LR),
    "adamw_clip": lambda ps: ZeroRedundancyOptimizer(ps, optimizer_class=FO.AdamW, lr=LR,
                                                     max_grad_norm=CLIP),
    "adam_resume": lambda ps: ZeroRedundancyOptimizer(ps, optimizer_class=FO.Adam, lr=LR),
}


def _full_state(opt, rank):
    """The whole optimizer's state_dict on every rank (gathered on rank 0, broadcast)."""
    opt.consolidate_state_dict(to=0)
    box = [opt.state_dict() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _run_zero(name, rank, world_size, x, y, steps):
    """One run of RUNS; returns plain tensors only (model and optimizer die here)."""
    make = RUNS[name]
    model = DistributedDataParallel(make_model())
    opt = make(model.parameters())
    if name == "adam_resume":  # a new ZeRO optimizer loads the state half-way
        norms = train(model, x, y, steps // 2, opt)
        state = _full_state(opt, rank)
        opt = make(model.parameters())
        opt.load_state_dict(state)
        norms += train(model, x, y, steps - steps // 2, opt)
    else:
        norms = train(model, x, y, steps, opt)
    out = {name: ([p.detach().clone() for p in model.parameters()], norms)}
    if name == "adam":
        out["adam_state"] = _full_state(opt, rank)
    return out


def run(rank, world_size, init_method, steps=20, result_path=None):
    """One rank: every run of RUNS under DDP + ZeRO on this rank's rows of the batch;
    returns (and rank 0 saves) {name: (params, grad norms)} and the 'adam' run's
    consolidated state_dict."""
    return run_all(_run_zero, RUNS, rank, world_size, init_method, steps, result_path)


if __name__ == "__main__":
    main(__doc__, run, RUNS)

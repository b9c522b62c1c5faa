"""Fully sharded training (FSDP2) with fastloss's optimizer on torch.distributed (gloo, CPU).

``torch.distributed.fsdp.fully_shard`` makes every parameter a DTensor holding this
rank's rows; after backward each rank has its shard of the batch-averaged gradient.
``fastloss.torch.optim`` steps each rank's shard in place, keeps the optimizer state
as DTensors sharded like the parameters (as torch.optim does), and with
``max_grad_norm`` clips by the norm of the whole gradient (all-reduced across the
shards). Run with N ranks:

    torchrun --standalone --nproc_per_node=2 examples/fsdp_train.py --steps 20

Rank 0 prints how far the sharded runs end from single-process full-batch training.
``run(rank, world_size, init_method)`` is also what tests/test_distributed.py calls.
"""
from __future__ import annotations

import os
import sys

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import fastloss.torch as FT
import fastloss.torch.optim as FO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_train import make_model, make_problem, parse_args, process_group  # noqa: E402

LR = 1e-2
CLIP = 0.05  # below the gradient norm of most steps: clipping is active


# the runs compared with single-process training: name -> (optimizer before the
# switch, optimizer after it); the switch (state_dict handed over) is half-way
RUNS = {
    "adam": (lambda ps: FO.Adam(ps, lr=LR), None),
    "adamw_clip": (lambda ps: FO.AdamW(ps, lr=LR, max_grad_norm=CLIP), None),
    # state exchanged both ways with torch.optim.Adam under FSDP2 (DTensor state)
    "adam_then_torch": (lambda ps: FO.Adam(ps, lr=LR), lambda ps: torch.optim.Adam(ps, lr=LR)),
    "torch_then_adam": (lambda ps: torch.optim.Adam(ps, lr=LR), lambda ps: FO.Adam(ps, lr=LR)),
}


def reference_optimizer(name, params):
    """The single-process optimizer a run is compared with."""
    return RUNS["adamw_clip" if name == "adamw_clip" else "adam"][0](params)


def train(model, x, y, steps, opt):
    """Full-batch steps; returns the gradient norm each step saw (clipping runs)."""
    norms = []
    inner = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer: this rank's optimizer
    for _ in range(steps):
        opt.zero_grad()
        FT.huber_loss(model(x), y, delta=0.5).backward()
        opt.step()
        norms.append(getattr(inner, "last_grad_norm", None))
    return norms


def train_single(name, steps):
    """Single-process full-batch reference: (params, grad norms, state_dict)."""
    x, y = make_problem()
    model = make_model()
    opt = reference_optimizer(name, model.parameters())
    norms = train(model, x, y, steps, opt)
    return [p.detach().clone() for p in model.parameters()], norms, opt.state_dict()


def _sharded_model(mesh):
    model = make_model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _run_sharded(name, rank, world_size, x, y, steps):
    """One run of RUNS; returns plain tensors only (the sharded model and optimizer
    die here, before the process group)."""
    first, then = RUNS[name]
    model = _sharded_model(init_device_mesh("cpu", (world_size,)))
    opt = first(model.parameters())
    half = steps // 2 if then is not None else steps
    norms = train(model, x, y, half, opt)
    if then is not None:
        state = opt.state_dict()
        opt = then(model.parameters())
        opt.load_state_dict(state)
        norms += train(model, x, y, steps - half, opt)
    out = {name: ([p.full_tensor().detach() for p in model.parameters()], norms)}
    if name == "adam":
        out["adam_state"] = get_optimizer_state_dict(
            model, opt, options=StateDictOptions(full_state_dict=True))
    return out


def run_all(one_run, names, rank, world_size, init_method, steps, result_path):
    """``one_run(name, rank, world_size, x, y, steps) -> dict`` for each name, in one
    process group; returns the merged results (rank 0 saves them to ``result_path``)."""
    with process_group(rank, world_size, init_method) as (x, y):
        results = {}
        for name in names:
            results.update(one_run(name, rank, world_size, x, y, steps))
        if rank == 0 and result_path:
            torch.save(results, result_path)
    return results


def run(rank, world_size, init_method, steps=20, result_path=None):
    """One rank: every run of RUNS on this rank's rows of the batch under FSDP2; returns
    (and rank 0 saves) {name: (full params, grad norms)} and the full optimizer state
    of the 'adam' run."""
    return run_all(_run_sharded, RUNS, rank, world_size, init_method, steps, result_path)


def main(doc=__doc__, run=run, runs=RUNS):
    """Command line of this example and of zero_train.py."""
    args, rank, world = parse_args(doc)
    results = run(rank, world, args.init_method, args.steps, result_path=args.save)
    if rank == 0:
        for name in runs:
            single = train_single(name, args.steps)[0]
            diff = max(float((a - b).abs().max()) for a, b in zip(results[name][0], single))
            print(f"{name}: {world} ranks x {args.steps} steps: "
                  f"max |param - single-process| = {diff:.2e}")


if __name__ == "__main__":
    main()

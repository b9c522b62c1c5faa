"""``fastloss.torch.optim`` on ``torch.distributed``: DTensor parameters and the global norm.

FSDP2 (``torch.distributed.fsdp.fully_shard``) turns each parameter into a DTensor
whose local tensor is this rank's shard (``Shard(0)`` of the flattened-by-rows
parameter, possibly empty on the last ranks); after backward its gradient is a
DTensor with the same mesh and placements (reduce-scattered). An element-wise
optimizer then steps each rank's shard on its own: this module unwraps parameters,
gradients and state to their local tensors (no copy: ``to_local()`` under
``no_grad`` is the DTensor's own storage) and wraps new state back as DTensors
shaped and placed like the parameter, as ``torch.optim`` does under FSDP2, so
``state_dict()`` and ``torch.distributed.checkpoint`` see the same layout.

The one global quantity is the gradient norm for ``max_grad_norm``::

    ||g||^2 = sum over plain tensors of local sumsq
            + sum over DTensors of (local sumsq all-reduced over the mesh dims they are Shard on)

(Replicate dims hold copies and are not summed). Under
``torch.distributed.optim.ZeroRedundancyOptimizer`` each rank's optimizer holds a
disjoint partition of plain parameters: the plain part is then all-reduced over
ZeRO's process group (``zero_partition_group``), once per step on every rank. The local sums of squares are
fastloss's deterministic float64 chunked sums; the all-reduces run in a fixed order
(first appearance of each (mesh, dims) among the parameters), the same on every rank.

Nothing here imports ``torch.distributed``: until a program imports
``torch.distributed.tensor``, no tensor can be a DTensor.
"""
from __future__ import annotations

import math
import sys

import torch

__all__ = ["is_dtensor", "group_has_dtensors", "local", "local_param_grad", "local_state",
           "zero_partition_group", "wrap_like", "global_grad_norm"]


def _dtensor_cls():
    """The DTensor class, or None while ``torch.distributed.tensor`` is not imported (then
    no tensor can be a DTensor, and this costs no import)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None)


def is_dtensor(t) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (an FSDP2 parameter, its grad, its state)."""
    cls = _dtensor_cls()
    return cls is not None and isinstance(t, cls)


def group_has_dtensors(params) -> bool:
    """True when any tensor of ``params`` (a param group's list) is a DTensor (such a
    group is not replayed by ``fastloss.torch.optim``'s fast path)."""
    cls = _dtensor_cls()
    return cls is not None and any(issubclass(t, cls) for t in set(map(type, params)))


def local(t):
    """This rank's local tensor of a DTensor (same storage: in-place writes update the
    DTensor); any other tensor as it is."""
    if not is_dtensor(t):
        return t
    with torch.no_grad():  # to_local() without autograd returns the storage itself
        return t.to_local()


def _layout(t):
    return t.device_mesh, tuple(t.placements)


def _check_placements(p, name):
    for pl in p.placements:
        if pl.is_partial():
            raise ValueError(f"{name} is a DTensor with a Partial placement {tuple(p.placements)}; "
                             f"fastloss.torch.optim steps sharded or replicated parameters")


def local_param_grad(p, g, name):
    """``(local param, local grad)`` of a parameter with a gradient; raises unless both
    are plain tensors, or both DTensors on the same mesh with the same placements
    (each rank then steps its shard with its shard of the gradient)."""
    pd, gd = is_dtensor(p), is_dtensor(g)
    if not pd and not gd:
        return p, g
    if pd != gd:
        what = ("a DTensor with a plain tensor gradient" if pd
                else "a plain tensor with a DTensor gradient")
        raise TypeError(f"{name} is {what}; parameter and gradient must both be DTensors "
                        f"(FSDP2) or both plain tensors")
    _check_placements(p, name)
    if _layout(g) != _layout(p):
        raise ValueError(f"{name}.grad has placements {tuple(g.placements)} on {g.device_mesh}, "
                         f"its parameter {tuple(p.placements)} on {p.device_mesh}; "
                         f"fastloss.torch.optim steps each rank's shard and needs the gradient "
                         f"sharded like the parameter (as FSDP2's reduce-scatter leaves it)")
    return local(p), local(g)


def local_state(p, key, v, name):
    """The local tensor of state ``key`` of parameter ``p``: a DTensor placed like a
    DTensor ``p`` (its local tensor is returned), a plain tensor for a plain ``p``.
    Scalar state (``step``) is a plain tensor either way, as torch keeps it."""
    pd, vd = is_dtensor(p), is_dtensor(v)
    if not pd and not vd:
        return v
    if pd and vd and _layout(v) == _layout(p):
        return local(v)
    if pd and not vd and v.dim() == 0:
        return v
    have = (f"a DTensor placed {tuple(v.placements)} on {v.device_mesh}" if vd
            else f"a plain tensor of shape {tuple(v.shape)}")
    want = (f"a DTensor placed like the parameter, {tuple(p.placements)} on {p.device_mesh}"
            if pd else "a plain tensor")
    raise ValueError(f"state {key!r} of {name} is {have}; expected {want} (load sharded "
                     f"optimizer state with torch.distributed.checkpoint.state_dict."
                     f"set_optimizer_state_dict)")


def zero_partition_group(depth=4):
    """The process group of the ``ZeroRedundancyOptimizer`` whose ``__init__`` is building
    the calling optimizer (found among the ``depth`` frames above the caller), else None.

    ZeRO builds its per-rank optimizer as ``optimizer_class(partition, **defaults)``
    from its own methods; nothing in the call tells the optimizer it holds a part."""
    mod = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")
    if mod is None:
        return None
    f = sys._getframe(2)
    for _ in range(depth):
        if f is None:
            break
        owner = f.f_locals.get("self")
        if isinstance(owner, mod.ZeroRedundancyOptimizer):
            return owner.process_group
        f = f.f_back
    return None


def wrap_like(p, t):
    """``t`` (a local tensor shaped like ``local(p)``) as state of ``p``: a DTensor with
    ``p``'s mesh, placements, global shape and stride when ``p`` is one, else ``t``."""
    if not is_dtensor(p):
        return t
    return _dtensor_cls().from_local(t, p.device_mesh, p.placements, run_check=False,
                                     shape=p.shape, stride=p.stride())


def global_grad_norm(pairs, local_sumsq, partition_group=None) -> float:
    """The L2 norm of all gradients across ranks (see the module docstring).

    ``pairs``: ``(param, local grad)`` for every gradient in the step, in parameter
    order (the same order on every rank: the all-reduces follow it);
    ``local_sumsq(local grad) -> float``: its sum of squares on this rank;
    ``partition_group``: ZeRO's group, over which the plain tensors' sum is all-reduced
    (every rank of it must call this once per step, with or without gradients).
    """
    total = 0.0
    sharded: dict = {}  # (mesh, shard dims) -> local sum, in first-appearance order
    cls = _dtensor_cls()  # (looked up once: this runs over every gradient of a step)
    for p, g in pairs:
        s = local_sumsq(g)
        if cls is None or not isinstance(p, cls):
            total += s
            continue
        dims = tuple(d for d, pl in enumerate(p.placements) if pl.is_shard())
        if not dims:  # replicated everywhere: every rank holds it whole
            total += s
            continue
        key = (p.device_mesh, dims)
        sharded[key] = sharded.get(key, 0.0) + s
    if partition_group is not None:
        import torch.distributed as dist
        buf = torch.tensor([total], dtype=torch.float64)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=partition_group)
        total = float(buf[0])
    if sharded:
        import torch.distributed as dist
        for (mesh, dims), s in sharded.items():
            buf = torch.tensor([s], dtype=torch.float64)
            for d in dims:
                dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=mesh.get_group(d))
            total += float(buf[0])
    return math.sqrt(total)

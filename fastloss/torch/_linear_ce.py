"""Fused linear + cross-entropy on torch CPU tensors: ``linear_cross_entropy`` (as
torch 2.13's ``F.linear_cross_entropy``) and the module ``LinearCrossEntropyLoss``
(as ``torch.nn.LinearCrossEntropyLoss``, same parameter names and state_dict).

The loss and the gradients of input, linear_weight and linear_bias come from one
chunked pass of :func:`fastloss.linear_cross_entropy` in forward; backward only
scales them by the upstream scalar. With ``reduction='none'`` the gradients
depend on the per-sample upstream gradient, so forward computes the loss only and
backward runs the chunked pass again with it (one more matmul, still no N x V).
"""
from __future__ import annotations

import torch

from ..linear_ce import _run, _validate
from ._bridge import as_numpy, from_numpy
from .functional import _ignore_index, _no_grad, _scaled

__all__ = ["linear_cross_entropy", "LinearCrossEntropyLoss"]


def _problem(input, linear_weight, linear_bias, target, weight, opts, grad_output=None):
    _no_grad(target, "target")
    if weight is not None:
        _no_grad(weight, "weight")
    return _validate(
        as_numpy(input, "input"), as_numpy(linear_weight, "linear_weight"),
        as_numpy(target, "target", floating=target.is_floating_point()),
        None if linear_bias is None else as_numpy(linear_bias, "linear_bias"),
        None if weight is None else as_numpy(weight, "weight"), grad_output=grad_output,
        backend=None, **opts)


def _tensors(grads):
    return tuple(None if g is None else from_numpy(g) for g in grads)


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, linear_weight, linear_bias, target, weight, opts):
        needs = tuple(ctx.needs_input_grad[:3])
        P = _problem(input, linear_weight, linear_bias, target, weight, opts)
        ctx.opts = opts
        ctx.deferred = opts["reduction"] == "none"
        if ctx.deferred:  # per-sample upstream gradient: the gradients wait for backward
            ctx.save_for_backward(input, linear_weight, linear_bias, target, weight)
            loss = _run(P, False)[0]
        else:
            loss, *grads = _run(P, any(needs), needs)
            ctx.save_for_backward(*_tensors(grads))
        return from_numpy(loss)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        if ctx.deferred:
            input, linear_weight, linear_bias, target, weight = ctx.saved_tensors
            go = as_numpy(grad_out.to(input.dtype), "grad_output")
            P = _problem(input, linear_weight, linear_bias, target, weight, ctx.opts, go)
            grads = _tensors(_run(P, True, tuple(ctx.needs_input_grad[:3]))[1:])
        else:
            grads = tuple(None if g is None else _scaled(g, grad_out) for g in ctx.saved_tensors)
        return (*grads, None, None, None)


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         reduction="mean", ignore_index=None, label_smoothing=0.0, options=None,
                         z_loss=0.0, softcap=None, chunk_size=None):
    """``torch.nn.functional.linear_cross_entropy`` (torch 2.13) on CPU float32/float64:
    ``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)`` computed
    in row chunks, never holding the N x V logits.

    ``input`` (N, D) or (D,); ``linear_weight`` (V, D); ``linear_bias`` (V,);
    ``target`` class indices or class probabilities; ``ignore_index=None`` means -100
    as in torch. ``options`` (a ``torch.nn.LinearCrossEntropyOptions``) is accepted
    and ignored: fastloss always chunks; ``chunk_size`` (rows) sets the chunk.
    fastloss extras: ``z_loss``, ``softcap`` (see :func:`fastloss.cross_entropy`).
    K-dimensional weights (V, d1, ..., D) are not supported.
    """
    ignore_index = -100 if ignore_index is None else _ignore_index(ignore_index)
    opts = dict(ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
                softcap=softcap, reduction=reduction, chunk_size=chunk_size)
    return _LinearCE.apply(input, linear_weight, linear_bias, target, weight, opts)


class LinearCrossEntropyLoss(torch.nn.Module):
    """``torch.nn.LinearCrossEntropyLoss`` backed by :func:`linear_cross_entropy`: holds
    ``linear`` (an ``nn.Linear(in_features, num_classes, bias=bias)``) and the class
    ``weight`` buffer, with torch's names, so its state_dict loads either way."""

    def __init__(self, in_features, num_classes, *, bias=False, device=None, dtype=None,
                 reduction="mean", weight=None, ignore_index=None, label_smoothing=0.0,
                 options=None, z_loss=0.0, softcap=None, chunk_size=None):
        super().__init__()
        self.linear = torch.nn.Linear(in_features, num_classes, bias=bias, device=device,
                                      dtype=dtype)
        self.register_buffer("weight", weight)
        self.num_classes = num_classes
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.options = options
        self.z_loss = z_loss
        self.softcap = softcap
        self.chunk_size = chunk_size

    def forward(self, input, target):
        return linear_cross_entropy(
            input, self.linear.weight, target, linear_bias=self.linear.bias, weight=self.weight,
            reduction=self.reduction, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, z_loss=self.z_loss, softcap=self.softcap,
            chunk_size=self.chunk_size)

    def extra_repr(self):
        return (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                f"bias={self.linear.bias is not None}, reduction={self.reduction!r}, "
                f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}")

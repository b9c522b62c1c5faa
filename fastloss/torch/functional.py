"""Losses on torch CPU tensors with autograd, computed by fastloss kernels.

Same signatures as ``torch.nn.functional``. The forward pass computes the
loss and its gradient in one fused kernel call; backward only scales the
saved gradient by the upstream gradient (first-order only).

bfloat16 and float16 inputs follow torch's dtype rules: outside autocast the
loss and the gradient are in the input's dtype; inside
``torch.autocast("cpu", ...)`` the loss is float32 and the gradient in the
input's dtype (:mod:`fastloss.torch._autocast`). Either way the kernels compute
in float32 from the 16-bit values (no float32 copy of the input) and round the
gradient once. Outside autocast, targets and weights are cast to the input's
dtype (fastloss's rule); under autocast float32 ones are read as they are, as
torch computes in float32 there.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from .. import _reduction as R
from .. import classification as _classification
from .. import losses as _losses
from . import _autocast
from ._bridge import as_numpy, from_numpy

__all__ = [
    "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss",
]


def _reduction(size_average, reduce, reduction):
    if size_average is None and reduce is None:
        return reduction
    # torch's legacy arguments: reduce=False -> 'none'; size_average=False -> 'sum'
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


def _no_grad(t, name):
    if t.requires_grad:
        raise ValueError(f"fastloss.torch losses do not differentiate with respect to {name}; "
                         f"pass {name}.detach()")


class _FusedLoss(torch.autograd.Function):
    """forward: (loss, dloss/dinput) from one fastloss call; backward: scale the
    saved gradient (per sample along ``class_axis`` for a classification loss with
    ``reduction='none'``).

    ``fn(x, t, return_grad=True, **kwargs)`` gets NumPy views of the tensors (16-bit
    ones included) and returns ``(loss, grad)``: ``grad`` final, in the input's
    dtype; ``loss`` in the input's dtype or, better for a 16-bit input, its compute
    dtype (float32, not yet rounded). Here the loss is divided by ``weight_mean``
    when given (a weighted average sum(w l) / sum(w); ``grad`` must already hold
    the 1 / sum(w)) and returned in ``fn.loss_dtype`` if ``fn`` has it, else in
    :func:`_autocast.loss_dtype` (float32 under CPU autocast for a 16-bit input,
    else the input's dtype): rounded once."""

    @staticmethod
    def forward(ctx, input, target, fn, kwargs, target_floating, class_axis, weight_mean):
        _no_grad(target, "target")
        x = as_numpy(input, "input", half=True)
        t = as_numpy(target, "target", floating=target_floating, half=True)
        loss, grad = fn(x, t, return_grad=True, **kwargs)
        if weight_mean is not None:  # weighted average: sum(w l) / sum(w)
            loss = loss / weight_mean
        ctx.class_axis = class_axis
        ctx.save_for_backward(from_numpy(grad))
        loss = from_numpy(loss)
        dtype = getattr(fn, "loss_dtype", None) or _autocast.loss_dtype(input)
        return loss if loss.dtype == dtype else loss.to(dtype)  # (.to costs ~1 us even then)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return _scaled(grad, grad_out, ctx.class_axis), None, None, None, None, None, None


def _scaled(grad, grad_out, class_axis=None):
    """``grad * grad_out``; the saved gradient itself when ``grad_out`` is a scalar 1
    (``loss.backward()``), which saves a full pass over an input-sized array.

    Returning the saved tensor is safe: while the graph is retained, the saved
    reference keeps autograd from accumulating into it in place, and once it is
    released nobody else holds it. ``class_axis``: per-sample ``grad_out`` of a
    ``reduction='none'`` classification loss, broadcast along the class axis.
    """
    if grad_out.dim() == 0:
        if grad_out.item() == 1.0:
            return grad
        return (grad * grad_out).to(grad.dtype)
    if class_axis is not None:
        grad_out = grad_out.unsqueeze(class_axis)
    return (grad * grad_out).to(grad.dtype)  # a float32 grad_out under autocast


def _elementwise_call(fn, mixed):
    """The element-wise loss ``fn`` (a public function of :mod:`fastloss.losses`) as
    :class:`_FusedLoss` calls it, returning the loss in the compute dtype (float32
    for a 16-bit input); ``mixed``: float32 targets and weights stay float32
    (torch.autocast on a 16-bit input)."""
    def call(x, t, *, reduction, return_grad, sample_weight=None, weight=None,
             grad_output=None, **options):
        return _losses._evaluate(fn.spec, x, t, options, reduction, sample_weight, return_grad,
                                 None, grad_output, None, weight=weight, wide_loss=True,
                                 mixed=mixed)
    return call


def _apply_elementwise(fn, input, target, reduction, full_weight=None, weighted_average=False,
                       **kwargs):
    """``fn`` through :class:`_FusedLoss`; ``full_weight`` (torch's weight of a loss that
    fastloss takes as ``sample_weight``) expanded to the input's shape first. A
    weighted mean is a sum with grad_output 1 / sum(w): the kernel scales the
    gradient in float32 and a 16-bit gradient is rounded once."""
    weight_mean = None
    if full_weight is not None:
        w = as_numpy(full_weight.expand_as(input), "weight", half=True)
        kwargs["sample_weight"] = w
        if weighted_average and reduction == "mean":
            reduction = "sum"
            weight_mean = float(w.sum(dtype="float64"))
            kwargs["grad_output"] = R.divide(1.0, weight_mean)
    kwargs["reduction"] = reduction
    call = _elementwise_call(fn, _autocast.computes_in_float32(input))
    if weighted_average and full_weight is not None and _autocast.computes_in_float32(input):
        # torch's weighted mse_loss / l1_loss are plain tensor ops, which autocast leaves
        # alone: their loss has the promoted dtype of input, target and weight
        call.loss_dtype = torch.promote_types(torch.promote_types(input.dtype, target.dtype),
                                              full_weight.dtype)
    return _FusedLoss.apply(input, target, call, kwargs, False, None, weight_mean)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """``torch.nn.functional.mse_loss``; with ``weight`` the mean is sum(w l) / sum(w) as torch."""
    return _apply_elementwise(_losses.mse, input, target,
                              _reduction(size_average, reduce, reduction), weight,
                              weighted_average=True)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """``torch.nn.functional.l1_loss``; with ``weight`` the mean is sum(w l) / sum(w) as torch."""
    return _apply_elementwise(_losses.mae, input, target,
                              _reduction(size_average, reduce, reduction), weight,
                              weighted_average=True)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """``torch.nn.functional.huber_loss``; with ``weight`` the mean is mean(w l) as torch."""
    return _apply_elementwise(_losses.huber, input, target, reduction, weight, delta=delta)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """``torch.nn.functional.smooth_l1_loss``."""
    return _apply_elementwise(_losses.smooth_l1, input, target,
                              _reduction(size_average, reduce, reduction), beta=beta)


def _tensor_options(**tensors):
    """The given tensor options as NumPy arrays, as they are (fastloss broadcasts them)."""
    kwargs = {}
    for name, t in tensors.items():
        if t is not None:
            _no_grad(t, name)
            kwargs[name] = as_numpy(t, name, half=True)
    return kwargs


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """``torch.nn.functional.binary_cross_entropy`` (probabilities clipped to [1e-12, 1-1e-12]);
    ``weight`` broadcasts against the input as in torch."""
    return _apply_elementwise(_losses.binary_cross_entropy, input, target,
                              _reduction(size_average, reduce, reduction), eps=1e-12,
                              **_tensor_options(weight=weight))


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,
                                     reduce=None, reduction="mean", pos_weight=None):
    """``torch.nn.functional.binary_cross_entropy_with_logits``; ``weight`` broadcasts
    against the input, ``pos_weight`` along its last axis, as in torch."""
    return _apply_elementwise(_losses.binary_cross_entropy_with_logits, input, target,
                              _reduction(size_average, reduce, reduction),
                              **_tensor_options(weight=weight, pos_weight=pos_weight))


# --- classification ----------------------------------------------------------------

def _apply_classification(fn, input, target, weight, **kwargs):
    """``fn`` (a classification loss's internal form, which takes ``loss_dtype``) through
    :class:`_FusedLoss`; ``weight`` (C,).

    bfloat16 / float16 input: computed in float32 from the 16-bit logits (no float32
    copy of them), the gradient in the input's dtype. The loss is in the input's dtype,
    or float32 under ``torch.autocast("cpu")``, as ``torch.nn.functional``'s."""
    if weight is not None:
        _no_grad(weight, "weight")
        kwargs["weight"] = as_numpy(weight, "weight", half=True)
    if torch.is_autocast_enabled("cpu"):
        fn = functools.partial(fn, loss_dtype=np.dtype(np.float32))
    return _FusedLoss.apply(input, target, fn, kwargs, target.is_floating_point(),
                            1 if input.dim() >= 2 else None, None)


def _ignore_index(ignore_index):
    if isinstance(ignore_index, torch.Tensor):
        ignore_index = ignore_index.item()
    return ignore_index


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """``torch.nn.functional.cross_entropy``: softmax cross-entropy on logits.

    ``input`` (N, C), (N, C, d1, ..., dk) or (C,); ``target`` class indices
    (N,) / (N, d1, ..., dk) / () or class probabilities of the input's shape;
    ``weight`` (C,); ``'mean'`` divides by the summed weights of the non-ignored
    targets (probability targets: by N). Loss and gradient come from one pass of
    :func:`fastloss.cross_entropy`; no log-softmax is materialised. bfloat16 /
    float16 logits: see :func:`_apply_classification` (autocast included).
    """
    return _apply_classification(
        _classification._cross_entropy, input, target, weight,
        ignore_index=_ignore_index(ignore_index), label_smoothing=label_smoothing,
        reduction=_reduction(size_average, reduce, reduction))


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """``torch.nn.functional.nll_loss`` on log-probabilities: l = -w_y input[y]."""
    return _apply_classification(
        _classification._nll_loss, input, target, weight,
        ignore_index=_ignore_index(ignore_index),
        reduction=_reduction(size_average, reduce, reduction))

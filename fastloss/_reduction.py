"""Reductions: from per-sample losses to the value a loss function returns, and
the factor its per-sample gradients are multiplied by.

For ``reduction`` r, per-sample losses l_i and a denominator D (the number of
samples, or the sum of the target weights of a weighted cross-entropy):

* r = 'none': the l_i themselves, in the input's dtype;
* r = 'sum':  L = T,      T = sum_i l_i in float64 (:func:`total`);
* r = 'mean': L = T / D   (IEEE for D == 0: NaN for 0 / 0, as PyTorch).

The gradient of L is dl_i/dx times ``grad_output`` / D for 'mean' and times
``grad_output`` otherwise (:func:`grad_factor`); with r = 'none' grad_output
may instead be an array of the losses' shape (:func:`split_grad_output`).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _validate as v

__all__ = ["divide", "total", "reduced_loss", "split_grad_output", "grad_factor", "grad_scale"]


def divide(a, b) -> float:
    """a / b in float64 with IEEE results for b == 0 (+-inf; NaN for 0 / 0 and
    NaN / 0), without the cost of a NumPy errstate."""
    a, b = float(a), float(b)
    if b != 0.0:
        return a / b
    if a == 0.0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def total(losses) -> float:
    """T = sum of the per-sample losses, accumulated in float64."""
    return float(np.sum(losses, dtype=np.float64))


def reduced_loss(reduction: str, losses, total_: float, denom, dtype: np.dtype, shape: tuple):
    """The loss to return: ``losses`` as ``dtype`` in ``shape`` ('none'), else a
    ``dtype`` scalar T ('sum') or T / denom ('mean'); ``total_`` is T."""
    if reduction == "none":
        return losses.astype(dtype, copy=False).reshape(shape)
    if reduction == "sum":
        return dtype.type(total_)
    return dtype.type(divide(total_, denom))


def split_grad_output(grad_output, reduction: str, dtype: np.dtype, shape: tuple, *,
                      strict: bool = True):
    """The upstream gradient as (per-sample array of ``shape`` or None, scalar factor).

    None -> (None, 1.0); a scalar -> (None, its value); an array needs
    reduction 'none' and the losses' ``shape``, and is cast to ``dtype``.
    ``strict``: the scalar (a number or a 0-d array) must be real (not bool, not
    NaN), as the classification losses check it; ``strict=False``: any real numeric 0-d
    value, cast to float64, NaN and Inf kept (the element-wise losses' check).
    """
    if grad_output is None:
        return None, 1.0
    if not isinstance(grad_output, (numbers.Number, np.generic, np.ndarray)):
        grad_output = v._as_array(grad_output, "grad_output")   # lists, tensors: named errors
    if np.ndim(grad_output) == 0:
        if strict:      # a number, or a 0-d array (e.g. torch's backward): its value
            value = grad_output[()] if isinstance(grad_output, np.ndarray) else grad_output
            return None, v.real_scalar(value, "grad_output", finite=False)
        return None, float(v.float_like(grad_output, "grad_output",
                                        np.dtype(np.float64)).reshape(-1)[0])
    if reduction != "none":
        raise ValueError(f"grad_output must be a scalar for reduction={reduction!r}")
    return v.float_like(grad_output, "grad_output", dtype, shape), 1.0


def grad_factor(reduction: str, go_scale: float, denom) -> float:
    """Scalar factor of the per-sample gradients: go_scale / denom for 'mean'
    (IEEE for denom == 0), go_scale otherwise."""
    if reduction != "mean":
        return float(go_scale)
    d = float(denom)
    return float(go_scale) / d if d != 0.0 else divide(go_scale, d)  # one call on the hot path


def grad_scale(reduction: str, grad_output, dtype: np.dtype, shape: tuple, denom):
    """What the per-sample gradients are multiplied by: the grad_output array
    ('none'; ``shape``, ``dtype``) or the ``dtype`` scalar of :func:`grad_factor`
    (strict scalar check)."""
    go, go_scale = split_grad_output(grad_output, reduction, dtype, shape)
    if go is not None:
        return go
    return dtype.type(grad_factor(reduction, go_scale, denom))

"""Element-wise regression and binary losses.

Every function has the signature::

    loss(pred, target, *, reduction='mean', sample_weight=None,
         return_grad=False, out=None, grad_output=None, backend=None, **options)

and returns the reduced loss (a NumPy scalar of ``pred``'s dtype for
``'mean'``/``'sum'``, an array for ``'none'``), or ``(loss, grad)`` with
``return_grad=True``, computed in one fused pass. ``grad`` is
d(reduced loss)/d(pred); ``'mean'`` divides by the element count as PyTorch
does. ``sample_weight`` (same shape as ``pred``, or ``(N,)`` for a 2-D
``pred``) multiplies each element's loss; ``'mean'`` still divides by the
element count (PyTorch's ``weight=``, Keras' ``sample_weight``).
``out`` receives the gradient (it may be ``pred`` itself, for an in-place
gradient, but may not partly overlap an input); ``grad_output`` is the upstream gradient: an
array of ``pred``'s shape for ``'none'``, a scalar otherwise.

Inputs of any memory layout and byte order are accepted (copied to C order
when needed); targets, weights and ``grad_output`` are cast to ``pred``'s
dtype. Weights are not range-checked (negative weights are allowed, NaN
propagates). NaN/Inf in any input propagate to the loss and gradient; empty
input gives what PyTorch gives ('mean' -> nan, 'sum' -> 0, 'none' -> empty).
The work is cut into fixed blocks whose double-precision sums are added in a
fixed order, so results are bitwise identical for any thread count.
"""
from __future__ import annotations

import numpy as np

from . import _backend, _reference, _threads
from . import _validate as v

__all__ = [
    "mse", "sse", "mae", "l1", "huber", "smooth_l1", "quantile", "log_cosh",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge", "squared_hinge",
]


def _sample_weight(w, dtype, shape):
    if w is None:
        return None
    w = v.float_like(w, "sample_weight", dtype)
    if w.shape == shape:
        return w
    if len(shape) == 2 and w.shape == shape[:1]:
        return np.ascontiguousarray(np.broadcast_to(w[:, None], shape))
    raise ValueError(
        f"sample_weight has shape {w.shape}, expected {shape}"
        + (f" or {shape[:1]}" if len(shape) == 2 else "")
    )


def _grad_output(go, red, dtype, shape):
    """Return (per-element upstream array or None, scalar factor)."""
    if go is None:
        return None, 1.0
    if np.ndim(go) == 0:
        # a scalar upstream gradient; NaN/Inf propagate like any other input
        return None, float(v.float_like(go, "grad_output", np.dtype(np.float64)).reshape(-1)[0])
    if red != "none":
        raise ValueError(f"grad_output must be a scalar for reduction={red!r}")
    return v.float_like(go, "grad_output", dtype, shape), 1.0


def _check_overlap(out, **arrays):
    """``out`` may be one of the inputs exactly (each block is read before it is
    written), but must not partly overlap one: that would be a race."""
    for name, a in arrays.items():
        if a is not None and np.may_share_memory(out, a) and not (
                a.ctypes.data == out.ctypes.data and a.strides == out.strides):
            raise ValueError(f"out overlaps {name} without being the same array")


def _elementwise(name, pred, target, *, reduction, sample_weight, return_grad, out,
                 grad_output, backend, pred_name="pred", a=0.0, aux=None, check=None,
                 ref_opts=None):
    pred = v.float_input(pred, pred_name)
    dtype, shape = pred.dtype, pred.shape
    target = v.float_like(target, "target", dtype, shape)
    red = v.reduction(reduction)
    return_grad = v.boolean(return_grad, "return_grad")
    weight = _sample_weight(sample_weight, dtype, shape)
    go, go_scale = _grad_output(grad_output, red, dtype, shape)
    v.out_needs_grad(out, return_grad)
    if out is not None:
        v.out_array(out, "out", shape, dtype)
        _check_overlap(out, pred=pred, target=target, sample_weight=weight, grad_output=go)
    b = 0.0
    if check is not None:  # value checks that need the validated arrays
        a, ref_opts = check(pred, target)
        if isinstance(a, tuple):
            a, b = a
    n = pred.size
    gscale = go_scale / n if (red == "mean" and n) else go_scale
    grad = (out if out is not None else np.empty(shape, dtype)) if return_grad else None

    if _backend.resolve(backend) == "native":
        lout = np.empty(shape, dtype) if red == "none" else None
        flat = (lambda x: None if x is None else x.reshape(-1))
        total = _backend.kernels.elementwise(
            _backend.kernels.ELEMENTWISE_KINDS[name], flat(pred), flat(target), flat(aux),
            flat(weight), flat(go), flat(grad), flat(lout), float(a), float(b), float(gscale),
            _threads.get_num_threads(),
        )
    else:
        opts = dict(ref_opts or {})
        if aux is not None:
            opts["pos_weight"] = aux
        with np.errstate(all="ignore"):
            l, g = getattr(_reference, name)(pred, target, **opts)
            if weight is not None:
                l = l * weight
                g = g * weight
            if go is not None:
                g = g * go
            if grad is not None:
                np.multiply(g, dtype.type(gscale), out=grad, casting="unsafe")
        lout = l.astype(dtype, copy=False) if red == "none" else None
        total = float(np.sum(l, dtype=np.float64))

    if red == "none":
        loss = lout
    elif red == "sum":
        loss = dtype.type(total)
    else:
        loss = dtype.type(total / n) if n else dtype.type(np.nan)
    return (loss, grad) if return_grad else loss


def mse(pred, target, *, reduction="mean", sample_weight=None, return_grad=False, out=None,
        grad_output=None, backend=None):
    """Mean squared error: l = (pred - target)^2; dl/dpred = 2 (pred - target).

    PyTorch ``mse_loss``; Keras ``MeanSquaredError``. With ``sample_weight``,
    'mean' divides by the element count (Keras; PyTorch's BCE and huber); PyTorch's
    ``mse_loss(weight=)`` divides by sum(weight) instead.
    """
    return _elementwise("mse", pred, target, reduction=reduction, sample_weight=sample_weight,
                        return_grad=return_grad, out=out, grad_output=grad_output, backend=backend)


def sse(pred, target, *, reduction="sum", sample_weight=None, return_grad=False, out=None,
        grad_output=None, backend=None):
    """Half sum of squared errors: l = 0.5 (pred - target)^2; dl/dpred = pred - target.

    The seeds' ``sum_squares_error``; the default reduction is ``'sum'``.
    """
    return _elementwise("sse", pred, target, reduction=reduction, sample_weight=sample_weight,
                        return_grad=return_grad, out=out, grad_output=grad_output, backend=backend)


def mae(pred, target, *, reduction="mean", sample_weight=None, return_grad=False, out=None,
        grad_output=None, backend=None):
    """Mean absolute error (L1): l = |pred - target|; dl/dpred = sign(pred - target), 0 at 0.

    PyTorch ``l1_loss``; Keras ``MeanAbsoluteError``. With ``sample_weight``,
    'mean' divides by the element count; PyTorch's ``l1_loss(weight=)`` divides by
    sum(weight).
    """
    return _elementwise("mae", pred, target, reduction=reduction, sample_weight=sample_weight,
                        return_grad=return_grad, out=out, grad_output=grad_output, backend=backend)


l1 = mae


def huber(pred, target, *, delta=1.0, reduction="mean", sample_weight=None, return_grad=False,
          out=None, grad_output=None, backend=None):
    """Huber loss, d = pred - target:
    l = 0.5 d^2 if |d| <= delta else delta (|d| - 0.5 delta);
    dl/dpred = d if |d| <= delta else delta sign(d).

    PyTorch ``huber_loss(delta=)``; Keras ``Huber(delta=)``.
    """
    delta = v.real_scalar(delta, "delta", low=0.0, low_open=True)
    return _elementwise("huber", pred, target, reduction=reduction, sample_weight=sample_weight,
                        return_grad=return_grad, out=out, grad_output=grad_output, backend=backend,
                        a=delta, ref_opts={"delta": delta})


def smooth_l1(pred, target, *, beta=1.0, reduction="mean", sample_weight=None, return_grad=False,
              out=None, grad_output=None, backend=None):
    """Smooth L1, d = pred - target:
    l = 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta; beta = 0 is L1.

    PyTorch ``smooth_l1_loss(beta=)``; equals ``huber(delta=beta) / beta``.
    """
    beta = v.real_scalar(beta, "beta", low=0.0)
    if beta == 0.0:
        return mae(pred, target, reduction=reduction, sample_weight=sample_weight,
                   return_grad=return_grad, out=out, grad_output=grad_output, backend=backend)
    return _elementwise("smooth_l1", pred, target, reduction=reduction,
                        sample_weight=sample_weight, return_grad=return_grad, out=out,
                        grad_output=grad_output, backend=backend, a=beta, ref_opts={"beta": beta})


def quantile(pred, target, *, q=0.5, reduction="mean", sample_weight=None, return_grad=False,
             out=None, grad_output=None, backend=None):
    """Quantile (pinball) loss, r = target - pred:
    l = q r if r >= 0 else (q - 1) r; dl/dpred = -q (r > 0), 1 - q (r < 0), 0 (r = 0).

    scikit-learn ``mean_pinball_loss(alpha=q)``; q = 0.5 is half the MAE.
    """
    q = v.real_scalar(q, "q", low=0.0, high=1.0, low_open=True, high_open=True)
    return _elementwise("quantile", pred, target, reduction=reduction,
                        sample_weight=sample_weight, return_grad=return_grad, out=out,
                        grad_output=grad_output, backend=backend, a=q, ref_opts={"q": q})


def log_cosh(pred, target, *, reduction="mean", sample_weight=None, return_grad=False, out=None,
             grad_output=None, backend=None):
    """Log-cosh: l = log(cosh(pred - target)); dl/dpred = tanh(pred - target).

    Computed as 0.5 log1p(sinh^2 d) (|d| - log 2 for |d| >= 20): accurate near 0,
    finite for any finite d. Keras ``LogCosh``.
    """
    return _elementwise("log_cosh", pred, target, reduction=reduction,
                        sample_weight=sample_weight, return_grad=return_grad, out=out,
                        grad_output=grad_output, backend=backend)


def _check_probabilities(p, t):
    k = _backend.kernels
    bad = (k.count_outside_unit(p.reshape(-1)) if k is not None
           else np.count_nonzero((p < 0) | (p > 1)))
    if bad:
        raise ValueError("input must hold probabilities in [0, 1] (use "
                         "binary_cross_entropy_with_logits for logits)")


def binary_cross_entropy(input, target, *, eps=1e-7, reduction="mean", sample_weight=None,
                         return_grad=False, out=None, grad_output=None, backend=None):
    """Binary cross-entropy on probabilities, p clipped to [eps, 1 - eps]:
    l = -(t log p + (1 - t) log(1 - p)); dl/dp = (p - t) / (p (1 - p)) at the clipped p.

    PyTorch ``binary_cross_entropy`` (its ``weight=`` is ``sample_weight``);
    Keras ``BinaryCrossentropy`` (``epsilon``). Clipping as the seeds do keeps
    the loss finite; the gradient is taken at the clipped value. ``eps`` must be
    in (0, 0.5); the bounds are taken in the input's dtype and kept strictly
    inside (0, 1) (float32: 1 - eps is at most 1 - 6e-8 however small eps is).
    ``input`` outside [0, 1] is an error; NaN propagates.
    """
    eps = v.real_scalar(eps, "eps", low=0.0, high=0.5, low_open=True, high_open=True)

    def check(p, t):
        _check_probabilities(p, t)
        lo, hi = _reference.clip_bounds(eps, p.dtype)
        return (float(lo), float(hi)), {"eps": eps}

    return _elementwise("binary_cross_entropy", input, target, reduction=reduction,
                        sample_weight=sample_weight, return_grad=return_grad, out=out,
                        grad_output=grad_output, backend=backend, pred_name="input",
                        check=check, ref_opts={"eps": eps})


def binary_cross_entropy_with_logits(input, target, *, pos_weight=None, reduction="mean",
                                     sample_weight=None, return_grad=False, out=None,
                                     grad_output=None, backend=None):
    """Binary cross-entropy on logits x, stable for any x:
    l = -(pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))
      = c log1p(exp(-|x|)) + ((1 - t) x if x >= 0 else -pw t x),  c = 1 - t + pw t;
    dl/dx = c sigmoid(x) - pw t.

    PyTorch ``binary_cross_entropy_with_logits`` (``pos_weight`` broadcasts
    along the last axis); Keras ``BinaryCrossentropy(from_logits=True)``.
    """
    a, aux = 1.0, None
    if pos_weight is not None:
        if np.ndim(pos_weight) == 0:
            a = v.real_scalar(pos_weight, "pos_weight", low=0.0)
        else:
            x = v.float_input(input, "input")
            pw = v.float_like(pos_weight, "pos_weight", x.dtype)
            try:
                aux = np.ascontiguousarray(np.broadcast_to(pw, x.shape))
            except ValueError:
                raise ValueError(f"pos_weight of shape {pw.shape} does not broadcast to input "
                                 f"of shape {x.shape}") from None
            if np.any(pw < 0) or not np.all(np.isfinite(pw)):
                raise ValueError("pos_weight must be finite and >= 0")
    return _elementwise("binary_cross_entropy_with_logits", input, target, reduction=reduction,
                        sample_weight=sample_weight, return_grad=return_grad, out=out,
                        grad_output=grad_output, backend=backend, pred_name="input",
                        a=a, aux=aux, ref_opts={"pos_weight": a})


def _hinge_targets(p, t):
    """Kernel option 1.0 when targets are in {0, 1}, 0.0 for {-1, +1}; else an error."""
    k = _backend.kernels
    if k is not None:
        kind = k.label_set(t.reshape(-1))
    else:
        kind = 0 if np.all((t == 1) | (t == -1)) else (1 if np.all((t == 0) | (t == 1)) else -1)
    if kind == 0:
        return 0.0, {"zero_one": False}
    if kind == 1:
        return 1.0, {"zero_one": True}
    raise ValueError("target for hinge losses must hold only -1 and +1 (or only 0 and 1)")


def hinge(pred, target, *, reduction="mean", sample_weight=None, return_grad=False, out=None,
          grad_output=None, backend=None):
    """Hinge: y in {-1, +1} (targets in {0, 1} map to 2t - 1), m = 1 - y pred:
    l = max(m, 0); dl/dpred = -y where m > 0, else 0.

    Keras ``Hinge``; with 'mean' it is the mean over all elements.
    """
    return _elementwise("hinge", pred, target, reduction=reduction, sample_weight=sample_weight,
                        return_grad=return_grad, out=out, grad_output=grad_output,
                        backend=backend, check=_hinge_targets)


def squared_hinge(pred, target, *, reduction="mean", sample_weight=None, return_grad=False,
                  out=None, grad_output=None, backend=None):
    """Squared hinge: l = max(1 - y pred, 0)^2; dl/dpred = -2 y max(1 - y pred, 0).

    Keras ``SquaredHinge``; targets as for :func:`hinge`.
    """
    return _elementwise("squared_hinge", pred, target, reduction=reduction,
                        sample_weight=sample_weight, return_grad=return_grad, out=out,
                        grad_output=grad_output, backend=backend, check=_hinge_targets)

"""Softmax, log-softmax and the cross-entropy family.

Conventions (as the element-wise losses, see ``fastloss.losses``):
``reduction`` is ``'mean'`` | ``'sum'`` | ``'none'``; ``return_grad=True``
returns ``(loss, grad)`` from one fused pass, ``grad`` being d(reduced
loss)/d(input) in the input's shape and dtype; ``out=`` receives the
gradient; ``grad_output=`` is the upstream gradient (a scalar, or an array
of the loss's shape for ``'none'``); ``backend`` is ``'native'`` or
``'numpy'``.

Shapes follow PyTorch: logits (N, C), or (N, C, d1, ..., dk) with classes on
axis 1, or a single unbatched sample (C,). Class-index targets are (N,) /
(N, d1, ..., dk) / () of int32 or int64; class-probability targets have the
logits' shape and a float dtype.

Inputs may be float32, float64, bfloat16 (``ml_dtypes.bfloat16``) or float16.
16-bit inputs are computed in float32 (the float32 kernels on float32 tiles of
the widened rows, never a float32 copy of the whole input): the gradient (or
softmax) comes back in the input's dtype, rounded to nearest-even from the
float32 result, and the loss in the input's dtype (as torch outside autocast).
Class weights, probability targets and a per-sample ``grad_output`` are used in
float32 (cast to it, not to the 16-bit type).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _backend, _dtypes, _threads
from . import _reduction as R
from . import _reference_classification as _ref
from . import _validate as v

__all__ = [
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
    "cross_entropy", "nll_loss", "categorical_cross_entropy", "multi_margin",
]


# --- helpers -------------------------------------------------------------------

def _axis(axis, ndim, name="axis"):
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (numbers.Integral,)):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    a = int(axis)
    if not -ndim <= a < ndim:
        raise ValueError(f"{name}={a} is out of range for an array of {ndim} dimensions")
    return a % ndim


def _rows(x, axis):
    """(M, C) C-contiguous rows with the class axis last (a view when axis is last)."""
    if axis == x.ndim - 1:
        return x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
    return np.ascontiguousarray(np.moveaxis(x, axis, -1)).reshape(-1, x.shape[axis])


def _unrows(r, shape, axis):
    """Inverse of _rows: (M, C) back to ``shape`` with the class axis at ``axis``."""
    moved = shape[:axis] + shape[axis + 1:] + (shape[axis],)
    return np.moveaxis(r.reshape(moved), -1, axis)


def _put(result, out, name="out"):
    """Copy ``result`` into ``out`` (when given) and return the array to hand back."""
    if out is None:     # (np.ascontiguousarray would make a 0-d result 1-d)
        return result if result.flags.c_contiguous else np.ascontiguousarray(result)
    if result is not out:
        np.copyto(out, result)
    return out


def _int_scalar(value, name):
    if type(value) is int:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


_INT64_MAX = 2 ** 63 - 1


def _label_error(labels, flat, bad, C, ignore_index, name):
    """ValueError for the label at flat position ``bad``, with its true value."""
    pos = np.unravel_index(bad, labels.shape) if labels.ndim > 1 else (bad,)
    pos = tuple(int(p) for p in pos)
    ignored = "" if ignore_index is None else f" (ignore_index={ignore_index})"
    return ValueError(f"{name} holds class index {int(flat[bad])} at position "
                      f"{pos if len(pos) > 1 else (pos[0] if pos else ())}, outside [0, {C})"
                      f"{ignored}")


def _labels(target, C, name="target"):
    """Class indices: int32/int64 kept, other integer dtypes cast to int64 (uint64
    values above int64, which no class or ignore_index can be, are refused first)."""
    t = v._as_array(target, name)
    if t.dtype.kind in "iu":
        if t.dtype.kind == "u" and t.dtype.itemsize == 8:
            flat = t.reshape(-1)
            big = flat > _INT64_MAX
            if big.any():
                raise _label_error(t, flat, int(np.argmax(big)), C, None, name)
        if t.dtype not in _INDEX_DTYPES:
            t = t.astype(np.int64)
        if t.flags.c_contiguous and t.dtype.isnative:
            return t
        return v.native_order(t).reshape(t.shape)
    if t.dtype.kind == "f" or _dtypes.is_half(t.dtype):
        raise TypeError(f"{name} holds floats ({t.dtype}) where class indices are expected: "
                        "pass int32/int64 class indices, or class probabilities with the "
                        "logits' shape")
    raise TypeError(f"{name} must hold int32/int64 class indices, got dtype {t.dtype}")


def _check_label_range(labels, C, ignore_index, weight64=None, name="target"):
    """First bad label raises; returns (count of non-ignored, sum of their weights).
    ``ignore_index`` None: no label is ignored."""
    flat = labels.reshape(-1)
    if ignore_index is None:
        badmask = (flat < 0) | (flat >= C)
        if badmask.any():
            raise _label_error(labels, flat, int(np.argmax(badmask)), C, None, name)
        return flat.size, float(flat.size)
    if _backend.kernels is not None:
        bad, count, wsum = _backend.kernels.ce_check_labels(flat, C, ignore_index, weight64)
    else:
        valid = flat != ignore_index
        badmask = valid & ((flat < 0) | (flat >= C))
        bad = int(np.argmax(badmask)) if badmask.any() else -1
        count = int(np.count_nonzero(valid))
        wsum = float(np.sum(weight64[flat[valid]])) if weight64 is not None else float(count)
    if bad >= 0:
        raise _label_error(labels, flat, bad, C, ignore_index, name)
    return count, wsum


def _ignore_index(value):
    """ignore_index: an integer within int64 (labels are int64)."""
    i = _int_scalar(value, "ignore_index")
    if not -_INT64_MAX - 1 <= i <= _INT64_MAX:
        raise ValueError(f"ignore_index must fit in int64, got {i}")
    return i


def _weight(weight, C, dtype):
    if weight is None:
        return None
    w = v._as_array(weight, "weight")
    if w.dtype.kind not in "fiu" and not _dtypes.is_half(w.dtype):
        raise TypeError(f"weight must be a real float or integer array, got dtype {w.dtype}")
    if w.ndim != 1 or w.shape[0] != C:
        raise ValueError(f"weight has shape {w.shape}, expected ({C},): one weight per class")
    return v.native_order(w.astype(dtype, copy=False))


def _scalar(value, name, low, high=None, low_open=False):
    """Fast path for plain in-range Python floats/ints; real_scalar otherwise."""
    if type(value) in (float, int) and value >= low and (high is None or value <= high) \
            and not (low_open and value == low) and math.isfinite(value):
        return float(value)
    return v.real_scalar(value, name, low=low, high=high, low_open=low_open)


class _Problem:
    """Logits and targets validated and laid out as rows (M, C)."""

    __slots__ = ("x", "rows", "C", "axis", "shape", "loss_shape", "labels", "probs",
                 "unbatched", "dtype", "cdtype", "target")


def _classification_input(logits, target, name="input", allow_probs=True):
    """Validate logits/targets of any torch layout; returns a _Problem."""
    x = v.float_input(logits, name, half=True)
    P = _Problem()
    P.x, P.dtype, P.shape = x, x.dtype, x.shape
    P.cdtype = _dtypes.compute_dtype(x.dtype)     # what the arithmetic runs in
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (classes), got a scalar")
    P.unbatched = x.ndim == 1
    P.axis = 0 if x.ndim == 1 else 1
    P.C = x.shape[P.axis]
    if P.C == 0:
        raise ValueError(f"{name} has no classes (size 0 on the class axis)")
    loss_shape = x.shape[:P.axis] + x.shape[P.axis + 1:]
    P.loss_shape = loss_shape
    t = v._as_array(target, "target")
    if (t.dtype.kind == "f" or _dtypes.is_half(t.dtype)) and allow_probs:
        if t.shape == loss_shape:
            raise TypeError(f"target holds floats ({t.dtype}) of shape {t.shape} where class "
                            "indices are expected: pass int32/int64 class indices, or class "
                            f"probabilities of the {name}' shape {x.shape}")
        if t.shape != x.shape:
            raise ValueError(f"class-probability target has shape {t.shape}, expected the "
                             f"{name}' shape {x.shape} (or pass int class indices of shape "
                             f"{loss_shape})")
        P.target = v.float_like(t, "target", P.cdtype)
        P.probs = _rows(P.target, P.axis)
        P.labels = None
    else:
        lab = P.target = _labels(t, P.C)
        if lab.shape != loss_shape:
            raise ValueError(f"target has shape {lab.shape}, expected {loss_shape} class "
                             f"indices for {name} of shape {x.shape}")
        P.labels = lab.reshape(-1)
        P.probs = None
    P.rows = _rows(x, P.axis)
    return P


# --- softmax / log_softmax -------------------------------------------------------

def _softmax_impl(x, axis, out, backend, log_out, name):
    x = v.float_input(x, name, half=True)
    shape = x.shape
    ax = _axis(axis, max(x.ndim, 1))
    if out is not None:
        v.out_array(out, "out", shape, x.dtype)
        v.out_overlap(out, exact_ok=(name,), **{name: x})
    if x.size == 0:
        return _put(np.empty(x.shape, x.dtype), out)
    x = x.reshape(shape or (1,))    # a 0-d input is one class (as torch: 1.0 / 0.0)
    rows = _rows(x, ax)
    kind = _dtypes.half_kind(x.dtype)
    if _backend.resolve(backend) == "native":
        direct = out is not None and ax == x.ndim - 1
        r = out.reshape(rows.shape) if direct else np.empty(rows.shape, x.dtype)
        if kind:
            _backend.kernels.softmax_half(kind, int(log_out), _dtypes.bits(rows), None,
                                          _dtypes.bits(r), _threads.get_num_threads())
        else:
            _backend.kernels.softmax_rows(rows, r, log_out, _threads.get_num_threads())
    else:
        with np.errstate(all="ignore"):
            r = _narrow((_ref.log_softmax if log_out else _ref.softmax)(_dtypes.widen(rows)),
                        x.dtype)
    return _put(_unrows(r, x.shape, ax).reshape(shape), out)


def _narrow(a, dtype):
    """The reference's float32 result of a 16-bit input rounded to ``dtype`` (nearest-even,
    overflow -> Inf without a warning); other results as they are."""
    if a.dtype == dtype:
        return a
    with np.errstate(all="ignore"):
        r = _dtypes.round_to(a, dtype)
    return r[()] if np.ndim(a) == 0 else r


def softmax(x, axis=-1, *, out=None, backend=None):
    """softmax(x)_c = exp(x_c - m) / sum_k exp(x_k - m) along ``axis`` (m = max).

    Stable for any finite x; masked entries (-inf) get probability 0; a NaN,
    a +inf, or a row of only -inf gives NaN for that row (as PyTorch). A 0-d x
    is one class (axis 0 or -1): 1.0 (log_softmax: 0.0), as PyTorch. ``out`` may
    be ``x`` itself; any other overlap with ``x`` raises ValueError.
    """
    return _softmax_impl(x, axis, out, backend, False, "x")


def log_softmax(x, axis=-1, *, out=None, backend=None):
    """log_softmax(x)_c = (x_c - m) - log sum_k exp(x_k - m) along ``axis``."""
    return _softmax_impl(x, axis, out, backend, True, "x")


def _softmax_backward_impl(y, grad_output, axis, out, backend, log_in, name):
    y = v.float_input(y, name, half=True)
    shape = y.shape
    g = v.float_like(grad_output, "grad_output", y.dtype, y.shape)
    ax = _axis(axis, max(y.ndim, 1))
    if out is not None:
        v.out_array(out, "out", y.shape, y.dtype)
        v.out_overlap(out, exact_ok=(name, "grad_output"), **{name: y, "grad_output": g})
    if y.size == 0:
        return _put(np.empty(y.shape, y.dtype), out)
    y, g = y.reshape(shape or (1,)), g.reshape(shape or (1,))
    yr, gr = _rows(y, ax), _rows(g, ax)
    kind = _dtypes.half_kind(y.dtype)
    if _backend.resolve(backend) == "native":
        direct = out is not None and ax == y.ndim - 1
        r = out.reshape(yr.shape) if direct else np.empty(yr.shape, y.dtype)
        if kind:
            _backend.kernels.softmax_half(kind, 2 + int(log_in), _dtypes.bits(yr),
                                          _dtypes.bits(gr), _dtypes.bits(r),
                                          _threads.get_num_threads())
        else:
            _backend.kernels.softmax_backward_rows(yr, gr, r, log_in,
                                                   _threads.get_num_threads())
    else:
        with np.errstate(all="ignore"):
            r = _narrow((_ref.log_softmax_backward if log_in else _ref.softmax_backward)(
                _dtypes.widen(yr), _dtypes.widen(gr)), y.dtype)
    return _put(_unrows(r, y.shape, ax).reshape(shape), out)


def softmax_backward(y, grad_output, axis=-1, *, out=None, backend=None):
    """Backward of softmax given its output y = softmax(x) and the upstream
    gradient: dx = y (grad_output - sum(grad_output y)) along ``axis``. ``out``
    may be ``y`` or ``grad_output`` itself; any other overlap raises ValueError. A
    16-bit ``grad_output`` is cast to ``y``'s dtype."""
    return _softmax_backward_impl(y, grad_output, axis, out, backend, False, "y")


def log_softmax_backward(log_probs, grad_output, axis=-1, *, out=None, backend=None):
    """Backward of log_softmax given its output and the upstream gradient:
    dx = grad_output - exp(log_probs) sum(grad_output) along ``axis``. ``out``
    may be ``log_probs`` or ``grad_output`` itself; any other overlap raises ValueError."""
    return _softmax_backward_impl(log_probs, grad_output, axis, out, backend, True, "log_probs")


# --- cross-entropy -----------------------------------------------------------------

def _ce_pass(native, rows, labels, probs, w, go, grad, row_loss, ignore_index, eps, zl, cap,
             sce, sz, W):
    """One cross-entropy pass over the (M, C) ``rows``, by the kernel or the NumPy
    reference: per-row losses into ``row_loss`` (float64, M), the gradient (scaled by
    ``sce`` / ``sz``) over ``grad`` (None: no gradient); returns (sum of the row losses,
    sum of their z-loss parts) in float64. ``labels`` None for probability targets.
    16-bit ``rows`` (and ``grad``): ``probs``, ``w`` and ``go`` are float32; the
    float32 computation on the widened rows, the gradient rounded into ``grad``."""
    kind = _dtypes.half_kind(rows.dtype)
    if native and kind:
        return _backend.kernels.cross_entropy_half(
            kind, _dtypes.bits(rows), labels if labels is not None else np.empty(0, np.int64),
            probs, w, go, None if grad is None else _dtypes.bits(grad), row_loss,
            ignore_index, eps, zl, 0.0 if cap is None else cap, float(sce), float(sz), W,
            _threads.get_num_threads())
    if native:
        return _backend.kernels.cross_entropy(
            rows, labels if labels is not None else np.empty(0, np.int64), probs, w, go, grad,
            row_loss, ignore_index, eps, zl, 0.0 if cap is None else cap, float(sce),
            float(sz), W, _threads.get_num_threads())
    with np.errstate(all="ignore"):
        rl, g, zrow = _ref.cross_entropy(
            _dtypes.widen(rows), labels, probs, weight=w, ignore_index=ignore_index,
            label_smoothing=eps, z_loss=zl, softcap=cap, grad_scale=sce, z_grad_scale=sz,
            grad_output=go, want_grad=grad is not None)
    row_loss[...] = rl
    if grad is not None:
        np.copyto(grad, _narrow(g, grad.dtype))
    return R.total(rl), R.total(zrow)


def _ce_reduced(red, zl, row_loss, total, ztotal, wsum, count, dtype, shape):
    """The cross-entropy loss to return: with z-loss and 'mean', the cross-entropy part
    averaged over sum(w_y) and the z-loss part over the non-ignored samples."""
    if _dtypes.is_half(dtype):
        return _narrow(_ce_reduced(red, zl, row_loss, total, ztotal, wsum, count,
                                   np.dtype(np.float64), shape), dtype)
    if red == "mean" and zl:
        return dtype.type(R.divide(total - ztotal, wsum) + R.divide(ztotal, count))
    return R.reduced_loss(red, row_loss, total, wsum, dtype, shape)


def _reduced(red, row, denom, dtype, shape):
    """R.reduced_loss of the per-row losses ``row``; a 16-bit loss rounded once from
    float64 (beyond float16's range: Inf, without a warning)."""
    if _dtypes.is_half(dtype):
        return _narrow(R.reduced_loss(red, row.astype(np.float64), R.total(row), denom,
                                      np.dtype(np.float64), shape), dtype)
    return R.reduced_loss(red, row, R.total(row), denom, dtype, shape)


def _zero(value):
    """A plain Python 0 / 0.0 (the default of an option the fast path leaves out)."""
    return (type(value) is float or type(value) is int) and value == 0


def _cross_entropy_plain(logits, target, ignore_index, reduction, return_grad, out, backend,
                         loss_dtype):
    """The common cross-entropy call (float32/float64 (N, C) logits and int32/int64
    class indices as plain ndarrays, 'mean' or 'sum', no weight, smoothing, z-loss,
    soft-cap or grad_output) in one native call that checks the arrays itself
    (kernels.cross_entropy_plain); None when the call is anything else, or when a
    label or ``out`` is not right: the general path then validates it and raises
    its usual errors. Same results, bit for bit, as the general path."""
    if not ((return_grad is True or (return_grad is False and out is None))
            and type(ignore_index) is int and -_INT64_MAX - 1 <= ignore_index <= _INT64_MAX
            and type(reduction) is str and (reduction == "mean" or reduction == "sum")
            and (backend is None or (type(backend) is str and backend == "native"))
            and _backend.kernels is not None and _backend.resolve(backend) == "native"):
        return None
    mean = reduction == "mean"
    r = _backend.kernels.cross_entropy_plain(logits, target, out, return_grad, ignore_index,
                                             mean, _threads.get_num_threads())
    if r is None:
        return None
    total, count, grad = r
    dtype = logits.dtype if loss_dtype is None else loss_dtype
    loss = dtype.type(R.divide(total, count) if mean else total)  # as R.reduced_loss
    return (loss, grad) if return_grad else loss


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, label_smoothing=0.0,
                  reduction="mean", return_grad=False, out=None, grad_output=None,
                  inplace=False, z_loss=0.0, softcap=None, backend=None):
    """Softmax cross-entropy on logits, PyTorch's ``F.cross_entropy`` semantics.

    With p = softmax(z) over the class axis, lse = logsumexp(z), eps =
    ``label_smoothing`` and w = ``weight`` (ones by default):

    * class-index target y: l = (1 - eps) w_y (lse - z_y) + eps/C sum_c w_c (lse - z_c),
      0 where y == ``ignore_index``; ``'mean'`` divides the sum by sum of w_y over
      the non-ignored targets (NaN when there are none, as PyTorch);
    * class-probability target t (float, logits' shape):
      l = sum_c w_c ((1 - eps) t_c + eps/C) (lse - z_c); ``'mean'`` divides by
      the number of samples; ``ignore_index`` does not apply.

    Gradient: dl/dz_c = A p_c - a_c with a_c the coefficient of (lse - z_c) and
    A = sum_c a_c. Opt-in extras for large vocabularies:

    * ``z_loss`` = zeta adds zeta lse^2 per (non-ignored) sample, averaged over
      the non-ignored samples for ``'mean'`` (PaLM's z-loss; not class-weighted);
    * ``softcap`` = s replaces z by s tanh(z / s) first (Gemma-style soft-capping);
      the gradient includes its derivative 1 - tanh^2(z / s).

    ``inplace=True`` (needs ``return_grad=True``) writes the gradient over
    ``logits`` (a C-contiguous, writable float array) and returns it: no
    logits-sized array is allocated for 2-D and unbatched inputs (K-dim inputs
    use a transposed copy). ``out`` may be ``logits`` itself (as ``inplace``);
    ``out`` (or the logits, with ``inplace``) overlapping the target, the weights
    or grad_output, or partly overlapping the logits, raises ValueError. Keras:
    ``SparseCategoricalCrossentropy(from_logits=True)`` /
    ``CategoricalCrossentropy(from_logits=True)``.
    """
    return _cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                          label_smoothing=label_smoothing, reduction=reduction,
                          return_grad=return_grad, out=out, grad_output=grad_output,
                          inplace=inplace, z_loss=z_loss, softcap=softcap, backend=backend)


def _cross_entropy(logits, target, *, weight=None, ignore_index=-100, label_smoothing=0.0,
                   reduction="mean", return_grad=False, out=None, grad_output=None,
                   inplace=False, z_loss=0.0, softcap=None, backend=None, loss_dtype=None):
    """:func:`cross_entropy`; ``loss_dtype`` (internal: the torch adapter under autocast
    asks for float32) overrides the dtype of the returned loss."""
    if (weight is None and grad_output is None and softcap is None and inplace is False
            and type(logits) is np.ndarray and type(target) is np.ndarray
            and _zero(label_smoothing) and _zero(z_loss)):
        plain = _cross_entropy_plain(logits, target, ignore_index, reduction, return_grad, out,
                                     backend, loss_dtype)
        if plain is not None:
            return plain
    red = v.reduction(reduction)
    return_grad = v.boolean(return_grad, "return_grad")
    inplace = v.boolean(inplace, "inplace")
    ignore_index = _ignore_index(ignore_index)
    eps = _scalar(label_smoothing, "label_smoothing", 0.0, 1.0)
    zl = _scalar(z_loss, "z_loss", 0.0)
    cap = None if softcap is None else _scalar(softcap, "softcap", 0.0, low_open=True)
    if inplace:
        if not return_grad:
            raise ValueError("inplace=True writes the gradient over logits: pass return_grad=True")
        if out is not None:
            raise ValueError("pass either out= or inplace=True, not both")
        if not isinstance(logits, np.ndarray) or not _dtypes.is_float(logits.dtype):
            raise TypeError("inplace=True needs logits as a float32, float64, bfloat16 or "
                            "float16 numpy array")
        if not (logits.flags.c_contiguous and logits.flags.writeable and logits.dtype.isnative):
            raise ValueError("inplace=True needs C-contiguous, writable, native-byte-order logits")
    v.out_needs_grad(out, return_grad)

    P = _classification_input(logits, target, "logits")
    dtype, C, M = P.dtype, P.C, P.rows.shape[0]
    w = _weight(weight, C, P.cdtype)
    if out is not None:
        v.out_array(out, "out", P.shape, dtype)

    # denominators ('mean') and label validation -- before any logit is read
    if P.labels is not None:
        count, wsum = _check_label_range(P.labels.reshape(P.loss_shape), C, ignore_index,
                                         None if w is None else w.astype(np.float64))
    else:
        count = M
        wsum = float(M)
    go, go_scale = R.split_grad_output(grad_output, red, P.cdtype, P.loss_shape)
    if out is not None or inplace:
        # the kernel reads targets and weights again after writing the gradient rows
        v.out_overlap(logits if inplace else out, exact_ok=() if inplace else ("logits",),
                      out_name="logits" if inplace else "out", logits=None if inplace else P.x,
                      target=P.target, weight=w, grad_output=_go_memory(grad_output, go))
    if go is not None:
        go = go.reshape(M)
    sce, sz = R.grad_factor(red, go_scale, wsum), R.grad_factor(red, go_scale, count)
    W = float(C) if w is None else float(np.sum(w, dtype=np.float64))

    # gradient buffer, as rows
    grad_rows = None
    if return_grad:
        if inplace and (P.x.ndim <= 2):
            grad_rows = P.rows
        elif out is not None and P.x.ndim <= 2:
            grad_rows = out.reshape(P.rows.shape)
        else:
            grad_rows = np.empty(P.rows.shape, dtype)

    row_loss = np.empty(M, np.float64)
    total, ztotal = _ce_pass(_backend.resolve(backend) == "native", P.rows, P.labels, P.probs,
                             w, go, grad_rows, row_loss, ignore_index, eps, zl, cap, sce, sz, W)
    loss = _ce_reduced(red, zl, row_loss, total, ztotal, wsum, count,
                       dtype if loss_dtype is None else loss_dtype, P.loss_shape)
    if not return_grad:
        return loss
    if P.x.ndim <= 2:
        if inplace:
            return loss, logits
        return loss, (out if out is not None else grad_rows.reshape(P.shape))
    g = _unrows(grad_rows, P.shape, P.axis)
    if inplace:
        np.copyto(logits, g)
        return loss, logits
    return loss, _put(g, out)


# --- nll / categorical / multi-margin (NumPy: O(N) work plus a zero fill) -------------

def nll_loss(log_probs, target, *, weight=None, ignore_index=-100, reduction="mean",
             return_grad=False, out=None, grad_output=None, backend=None):
    """Negative log-likelihood on log-probabilities, PyTorch's ``F.nll_loss``:
    l = -w_y log_probs[y] (0 where y == ignore_index); ``'mean'`` divides by the sum
    of w_y over non-ignored targets. Gradient: -w_y (times the reduction scale) at
    the target class, 0 elsewhere. Shapes as :func:`cross_entropy` (index targets).

    Both backends run the same NumPy code: the work is O(N) gathers plus the
    zero fill of the gradient, which NumPy already does at memory speed.
    ``out`` may be ``log_probs`` itself; any other overlap raises ValueError.
    """
    return _nll_loss(log_probs, target, weight=weight, ignore_index=ignore_index,
                     reduction=reduction, return_grad=return_grad, out=out,
                     grad_output=grad_output, backend=backend)


def _nll_loss(log_probs, target, *, weight=None, ignore_index=-100, reduction="mean",
              return_grad=False, out=None, grad_output=None, backend=None, loss_dtype=None):
    """:func:`nll_loss`; ``loss_dtype`` as :func:`_cross_entropy`'s."""
    red = v.reduction(reduction)
    return_grad = v.boolean(return_grad, "return_grad")
    ignore_index = _ignore_index(ignore_index)
    v.out_needs_grad(out, return_grad)
    _backend.resolve(backend)
    P = _classification_input(log_probs, target, "log_probs", allow_probs=False)
    dtype, C = P.dtype, P.C
    w = _weight(weight, C, P.cdtype)
    count, wsum = _check_label_range(P.labels.reshape(P.loss_shape), C, ignore_index,
                                     None if w is None else w.astype(np.float64))
    scale = _row_scale(red, grad_output, P, wsum) if return_grad else None
    _check_out(out, P, "log_probs", weight=w, grad_output=_go_memory(grad_output, scale))
    row, wy = _ref.nll_rows(P.rows, P.labels, weight=w, ignore_index=ignore_index)
    loss = _reduced(red, row, wsum, dtype if loss_dtype is None else loss_dtype, P.loss_shape)
    if not return_grad:
        return loss
    g = np.zeros(P.rows.shape, dtype)     # (16-bit: the float32 values rounded in)
    valid = P.labels != ignore_index
    idx = np.nonzero(valid)[0]
    with np.errstate(all="ignore"):
        g[idx, P.labels[idx]] = (-wy[idx] * scale[idx] if np.ndim(scale) else -wy[idx] * scale)
    return loss, _put(_unrows(g, P.shape, P.axis), out)


def _go_memory(grad_output, go):
    """The memory grad_output occupies, for the out= overlap rule: the per-sample array
    ``go`` when there is one, else the caller's 0-d array (its value is read first,
    but the rule does not depend on that)."""
    if go is not None and np.ndim(go):
        return go
    if grad_output is None or isinstance(grad_output, (numbers.Number, np.generic)):
        return None
    return v._as_array(grad_output, "grad_output")


def _check_out(out, P, name, **others):
    """out= of the NumPy-computed losses: shape and dtype of the input ``name``, which
    it may be exactly; no other overlap with it, the target or ``others``."""
    if out is None:
        return
    v.out_array(out, "out", P.shape, P.dtype)
    v.out_overlap(out, exact_ok=(name,), **{name: P.x}, target=P.target, **others)


def _reduce_rows(red, row, g, P, scale, out):
    """Reduce per-row losses ``row`` (mean over the M rows) and, when ``scale`` (the
    per-row factor of :func:`_row_scale`) is given, scale the per-row gradients ``g``
    of the reduced loss into ``out``."""
    M = P.rows.shape[0]
    loss = _reduced(red, row, M, P.dtype, P.loss_shape)
    if scale is None:
        return loss
    with np.errstate(all="ignore"):
        g = g * (scale[:, None] if np.ndim(scale) else scale)
    return loss, _put(_narrow(g.astype(P.cdtype, copy=False), P.dtype).reshape(P.shape), out)


def _row_scale(red, grad_output, P, denom):
    """Per-row (M,) array or common scalar gradient factor of the reduced loss."""
    scale = R.grad_scale(red, grad_output, P.cdtype, P.loss_shape, denom)
    return scale.reshape(P.rows.shape[0]) if np.ndim(scale) else scale


def categorical_cross_entropy(probs, target, *, eps=1e-7, normalize=False, reduction="mean",
                              return_grad=False, out=None, grad_output=None, backend=None):
    """Cross-entropy on probabilities (the seeds' ``cross_entropy_error``):
    l_i = -sum_c t_c log(clip(q_c, eps, 1)), batch mean for ``'mean'``, with
    q = p, or q = p / sum_c p_c with ``normalize=True``.

    ``probs`` is (N, C) or one sample (C,), in [0, 1] (``normalize=True``: any
    values >= 0, e.g. unnormalised scores); ``target`` is one-hot / class
    probabilities of the same shape, or int class indices (N,) / (). The
    gradient is G = -t / clip(q, eps, 1), taken at the clipped value (as
    ``binary_cross_entropy``); with ``normalize``, (G - sum_c G_c q_c) / sum_c p_c.
    The seeds add ``delta`` (log(p + 1e-7)) instead of clipping; the two agree to
    within eps / p. Keras: ``CategoricalCrossentropy`` (pass ``normalize=True``:
    Keras divides by the row sum; it clips to [eps, 1 - eps], a difference of at most
    eps per row) / ``SparseCategoricalCrossentropy``. ``out`` may be ``probs``
    itself; any other overlap raises ValueError.
    """
    red = v.reduction(reduction)
    return_grad = v.boolean(return_grad, "return_grad")
    normalize = v.boolean(normalize, "normalize")
    e = v.real_scalar(eps, "eps", low=0.0, high=1.0, low_open=True, high_open=True)
    v.out_needs_grad(out, return_grad)
    _backend.resolve(backend)
    p = v.float_input(probs, "probs", half=True)
    if p.ndim not in (1, 2):
        raise ValueError(f"probs must be (N, C) or (C,), got shape {p.shape}")
    if normalize and np.any(p < 0):
        raise ValueError("probs must be >= 0 with normalize=True (use cross_entropy for logits)")
    if not normalize and np.any((p < 0) | (p > 1)):
        raise ValueError("probs must hold probabilities in [0, 1] (use cross_entropy for logits, "
                         "normalize=True for unnormalised scores)")
    P = _classification_input(p, target, "probs")
    C, M = P.C, P.rows.shape[0]
    if P.labels is not None:
        _check_label_range(P.labels.reshape(P.loss_shape), C, None)
    scale = _row_scale(red, grad_output, P, M) if return_grad else None
    _check_out(out, P, "probs", grad_output=_go_memory(grad_output, scale))
    if P.probs is not None:
        t = P.probs
    else:
        t = np.zeros(P.rows.shape, P.cdtype)
        t[np.arange(M), P.labels] = 1
    with np.errstate(all="ignore"):
        row, g = _ref.categorical_cross_entropy(_dtypes.widen(P.rows), t, e, normalize)
    return _reduce_rows(red, row, g, P, scale, out)


def multi_margin(input, target, *, p=1, margin=1.0, weight=None, reduction="mean",
                 return_grad=False, out=None, grad_output=None, backend=None):
    """Multi-class hinge, PyTorch's ``F.multi_margin_loss``:
    l_i = sum_{j != y} w_y max(0, margin - x_y + x_j)^p / C, p in {1, 2};
    ``'mean'`` divides by N (not by the weights). ``input`` is (N, C) or (C,);
    ``target`` (N,), or for one sample (C,) / (1, C) of shape () or (1,) (the
    loss, for ``'none'``, has the target's shape, as PyTorch). ``out`` may be
    ``input`` itself; any other overlap raises ValueError.
    """
    red = v.reduction(reduction)
    return_grad = v.boolean(return_grad, "return_grad")
    if p not in (1, 2) or isinstance(p, bool):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    margin = v.real_scalar(margin, "margin")
    v.out_needs_grad(out, return_grad)
    _backend.resolve(backend)
    x = v.float_input(input, "input", half=True)
    if x.ndim not in (1, 2):
        raise ValueError(f"input must be (N, C) or (C,), got shape {x.shape}")
    # one sample: torch takes a target of shape () or (1,) for (C,) and (1, C) alike
    target = v._as_array(target, "target")
    one = x.ndim == 1 or x.shape[0] == 1
    xs = x.reshape((1, -1) if target.ndim == 1 else -1) if one and x.size else x
    P = _classification_input(xs, target, "input", allow_probs=False)
    P.x, P.shape = x, x.shape
    C = P.C
    w = _weight(weight, C, P.cdtype)
    _check_label_range(P.labels.reshape(P.loss_shape), C, None)
    scale = _row_scale(red, grad_output, P, P.rows.shape[0]) if return_grad else None
    _check_out(out, P, "input", weight=w, grad_output=_go_memory(grad_output, scale))
    with np.errstate(all="ignore"):
        row, g = _ref.multi_margin(_dtypes.widen(P.rows), P.labels, p=p, margin=margin,
                                   weight=w)
    return _reduce_rows(red, row, g, P, scale, out)

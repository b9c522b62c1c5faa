"""Element-wise regression and binary losses: the public functions.

One function per entry of the loss table (:mod:`fastloss._elementwise_spec`),
made here from it: ``fastloss.huber`` is, in effect::

    def huber(pred, target, *, delta=1.0, reduction='mean', sample_weight=None,
              return_grad=False, out=None, grad_output=None, backend=None):
        return _evaluate(HUBER, pred, target, {'delta': delta}, reduction, ...)

:func:`_evaluate` checks the options against the table and the arrays, then
runs the native kernel (``kernels.elementwise``) or the table's NumPy reference.

Every function has the signature::

    loss(pred, target, *, reduction='mean', sample_weight=None,
         return_grad=False, out=None, grad_output=None, backend=None, **options)

and returns the reduced loss (a NumPy scalar of ``pred``'s dtype for
``'mean'``/``'sum'``, an array for ``'none'``), or ``(loss, grad)`` with
``return_grad=True``, computed in one fused pass. ``grad`` is
d(reduced loss)/d(pred); ``'mean'`` divides by the element count as PyTorch
does. ``sample_weight`` (Keras': same shape as ``pred``, or ``(N,)`` for a
2-D ``pred``, one weight per row) multiplies each element's loss; ``'mean'``
still divides by the element count. The binary cross-entropies also take
PyTorch's ``weight`` (any shape that broadcasts to ``pred`` from the last axis:
``(1,)``, ``(C,)``, ``(1, C)``, ``(N, C)``...; so a 1-D weight is per column
there and per row as ``sample_weight``); given both, they multiply.
``out`` receives the gradient (it may be ``pred`` itself, for an in-place
gradient, but may not partly overlap any array the kernel reads: pred, target,
weights, ``pos_weight``, grad_output); ``grad_output`` is the upstream gradient: an
array of ``pred``'s shape for ``'none'``, a scalar otherwise.

Inputs of any memory layout and byte order are accepted (copied to C order
when needed); targets, weights and ``grad_output`` are cast to ``pred``'s
dtype (so a bfloat16 ``pred`` gets bfloat16 targets).

16-BIT INPUTS: ``pred`` may be ``ml_dtypes.bfloat16`` or ``np.float16``. The
kernels widen them to float32 a block at a time (no float32 copy of the arrays),
compute and sum exactly as for float32, and round the gradient (hessian,
'none' losses) to ``pred``'s dtype, nearest-even, once: the float32 result on
the widened values, correctly rounded; values beyond float16's range become
Inf. The reduced loss is the float32 value rounded to ``pred``'s dtype (as
PyTorch returns it outside autocast); ``out=`` must then have ``pred``'s dtype.

Weights are not range-checked (negative weights are allowed, NaN
propagates). NaN/Inf in any input propagate to the loss and gradient; empty
input gives what PyTorch gives ('mean' -> nan, 'sum' -> 0, 'none' -> empty).
The work is cut into fixed blocks whose double-precision sums are added in a
fixed order, so results are bitwise identical for any thread count.
"""
from __future__ import annotations

import numpy as np

from . import _backend, _dtypes, _threads
from . import _reduction as R
from . import _validate as v
from ._elementwise_spec import LOSSES


def _companion_dtype(a, dtype, mixed):
    """The dtype a companion array (target, weights, pos_weight) is cast to: ``dtype``
    (pred's). ``mixed`` (torch.autocast on a 16-bit pred, which computes in float32):
    float32 and 16-bit companions are read as they are (the kernel widens each array
    on its own), others are cast to float32."""
    if not mixed:
        return dtype
    d = getattr(a, "dtype", None)
    if d is not None and (np.dtype(d) == np.float32 or _dtypes.is_half(d)):
        return np.dtype(d)
    return np.dtype(np.float32)


def _sample_weight(w, dtype, shape, mixed=False):
    if w is None:
        return None
    w = v.float_like(w, "sample_weight", _companion_dtype(w, dtype, mixed))
    if w.shape == shape:
        return w
    if len(shape) == 2 and w.shape == shape[:1]:
        return np.ascontiguousarray(np.broadcast_to(w[:, None], shape))
    raise ValueError(
        f"sample_weight has shape {w.shape}, expected {shape}"
        + (f" or {shape[:1]}" if len(shape) == 2 else "")
    )


def _broadcast(a, name, loss, shape):
    """Array ``a`` broadcast (as NumPy and PyTorch do) to the input's ``shape``, C order
    (``a`` itself when it has that shape: it stays an exact alias for the out= rule)."""
    if a.shape == shape:
        return a
    try:
        return np.ascontiguousarray(np.broadcast_to(a, shape))
    except ValueError:
        raise ValueError(f"{name} of shape {a.shape} does not broadcast to "
                         f"{loss.pred_name} of shape {shape}") from None


def _weights(loss, sample_weight, weight, dtype, shape, mixed=False):
    """The per-element weights the loss is multiplied by, as ``(name, array)`` (the
    name for the out= rule; ``(None, None)`` when unweighted): ``sample_weight``
    (Keras: the input's shape, or (N,) per row of a 2-D input), PyTorch's
    ``weight`` (broadcast against the input from the last axis), or both multiplied."""
    sw = _sample_weight(sample_weight, dtype, shape, mixed)
    if weight is None:
        return ("sample_weight", sw) if sw is not None else (None, None)
    if not loss.torch_weight:
        raise TypeError(f"{loss.name}() got an unexpected keyword argument 'weight'")
    w = v.float_like(weight, "weight", _companion_dtype(weight, dtype, mixed))
    w = _broadcast(w, "weight", loss, shape)
    return ("weight", w) if sw is None else ("sample_weight * weight", sw * w)


def _range_text(o):
    parts = [f"{'>' if o.low_open else '>='} {o.low}" if o.low is not None else "",
             f"{'<' if o.high_open else '<='} {o.high}" if o.high is not None else ""]
    return " and ".join(p for p in parts if p)


def _outside(o, a):
    """Mask of the entries of array ``a`` outside option ``o``'s range (or not finite)."""
    bad = ~np.isfinite(a)
    if o.low is not None:
        bad |= (a <= o.low) if o.low_open else (a < o.low)
    if o.high is not None:
        bad |= (a >= o.high) if o.high_open else (a > o.high)
    return bad


def _scalar_options(loss, given):
    """Option name -> checked float (the default where not given). A per-element
    option given as an array is left as it is (checked once pred is known)."""
    unknown = set(given) - {o.name for o in loss.options}
    if unknown:
        raise TypeError(f"{loss.name}() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    opts = {}
    for o in loss.options:
        value = given.get(o.name)
        if value is None and (o.per_element or o.name not in given):
            opts[o.name] = o.default
        elif o.per_element and np.ndim(value) != 0:
            opts[o.name] = value
        else:
            opts[o.name] = v.real_scalar(value, o.name, low=o.low, high=o.high,
                                         low_open=o.low_open, high_open=o.high_open)
    return opts


def _per_element_option(loss, opts, pred, mixed=False):
    """The per-element option given as an array, broadcast to ``pred`` and checked
    (C order, pred's dtype), or None; its scalar slot in ``opts`` gets the default."""
    for o in loss.options:
        if o.per_element and not isinstance(opts[o.name], float):
            value = opts[o.name]
            a = v.float_like(value, o.name, _companion_dtype(value, pred.dtype, mixed))
            aux = _broadcast(a, o.name, loss, pred.shape)
            if np.any(_outside(o, a)):
                raise ValueError(f"{o.name} must be finite and {_range_text(o)}")
            opts[o.name] = o.default
            return o.name, aux
    return None, None


def _check_probabilities(loss, p):
    k, hk = _backend.kernels, _dtypes.half_kind(p.dtype)
    if k is None:
        bad = np.count_nonzero((p < 0) | (p > 1))
    elif hk:
        bad = k.count_outside_unit_half(hk, _dtypes.bits(p).reshape(-1))
    else:
        bad = k.count_outside_unit(p.reshape(-1))
    if bad:
        raise ValueError(f"{loss.pred_name} must hold probabilities in [0, 1] (use "
                         "binary_cross_entropy_with_logits for logits)")


def _zero_one(loss, t):
    """The body's ``zero_one`` flag: False for targets in {-1, +1}, True for {0, 1}."""
    k, hk = _backend.kernels, _dtypes.half_kind(t.dtype)
    if k is not None:
        kind = (k.label_set_half(hk, _dtypes.bits(t).reshape(-1)) if hk
                else k.label_set(t.reshape(-1)))
    else:
        kind = 0 if np.all((t == 1) | (t == -1)) else (1 if np.all((t == 0) | (t == 1)) else -1)
    if kind < 0:
        raise ValueError(f"target for {loss.name} must hold only -1 and +1 (or only 0 and 1)")
    return kind == 1


def _native_kind(loss):
    k = _backend.kernels
    if getattr(k, "ELEMENTWISE_PARAMS", {}).get(loss.name) != loss.params:
        raise RuntimeError(f"the native extension was built from another loss table (no "
                           f"{loss.name}{loss.params}): rebuild it (python setup.py build_ext "
                           "--inplace)")
    return k.ELEMENTWISE_KINDS[loss.name]


def _evaluate(loss, pred, target, options, reduction, sample_weight, return_grad, out,
              grad_output, backend, hessian=False, weight=None, wide_loss=False, mixed=False):
    """Loss ``loss`` (an entry of the table) with its ``options`` (name -> value),
    as the public functions document. With ``hessian=True`` (loss objects'
    gradient_hessian) returns ``(loss, grad, hess)``, hess scaled as grad.
    ``weight``: PyTorch's (only for a loss with ``torch_weight``).

    Internal (fastloss.torch): ``wide_loss`` returns the loss in the compute dtype
    (float32 for a 16-bit pred: not rounded to 16 bits); ``mixed`` keeps float32
    and 16-bit companion arrays of a 16-bit pred as they are (torch.autocast)."""
    opts = _scalar_options(loss, options)
    for name, coefficient in loss.coefficients:
        opts[name] = float(coefficient(opts))
    pred = v.float_input(pred, loss.pred_name, half=True)
    dtype, shape = pred.dtype, pred.shape
    cdt = _dtypes.compute_dtype(dtype)
    half = cdt != dtype     # bfloat16 / float16: computed in float32
    mixed = mixed and half
    aux_name, aux = _per_element_option(loss, opts, pred, mixed)
    target = v.float_like(target, "target", _companion_dtype(target, dtype, mixed), shape)
    red = v.reduction(reduction)
    return_grad = v.boolean(return_grad, "return_grad") or hessian
    weight_name, weight = _weights(loss, sample_weight, weight, dtype, shape, mixed)
    go, go_scale = R.split_grad_output(grad_output, red, dtype, shape, strict=False)
    v.out_needs_grad(out, return_grad)
    if out is not None:
        v.out_array(out, "out", shape, dtype)
        # every array the kernel reads
        v.out_overlap(out, pred=pred, target=target, grad_output=go,
                      **{name: a for name, a in ((weight_name, weight), (aux_name, aux))
                         if a is not None})
    if loss.pred == "probability":
        _check_probabilities(loss, pred)
    if loss.target == "labels":
        opts["zero_one"] = _zero_one(loss, target)
    n = pred.size
    gscale = R.grad_factor(red, go_scale, n)
    grad = (out if out is not None else np.empty(shape, dtype)) if return_grad else None
    hess = np.empty(shape, dtype) if hessian else None
    ldt = cdt if wide_loss else dtype  # the loss's dtype

    if _backend.resolve(backend) == "native":
        lout = np.empty(shape, ldt) if red == "none" else None
        flat = (lambda x: None if x is None else x.reshape(-1))
        k = _backend.kernels
        total = (k.elementwise_half if half else k.elementwise)(
            _native_kind(loss), flat(pred), flat(target), flat(aux), flat(weight), flat(go),
            flat(grad), flat(lout), tuple(float(opts[name]) for name in loss.params),
            float(gscale), _threads.get_num_threads(), -1, flat(hess))
    else:
        # 16-bit: widened to float32, computed there, outputs rounded once
        pred, target, weight, go, aux = (None if a is None else _dtypes.widen(a)
                                         for a in (pred, target, weight, go, aux))
        if aux is not None:
            opts[aux_name] = aux
        with np.errstate(all="ignore"):
            l, g = loss.reference(pred, target, **opts)
            h = loss.hessian(pred, target, **opts) if hessian else None
            if weight is not None:
                l = l * weight
                g = g * weight
                h = None if h is None else h * weight
            if go is not None:
                g = g * go
                h = None if h is None else h * go
            if grad is not None:
                np.multiply(g, cdt.type(gscale), out=grad, casting="unsafe")
            if h is not None:
                np.multiply(h, cdt.type(gscale), out=hess, casting="unsafe")
            lout = l.astype(ldt, copy=False) if red == "none" else None
        total = R.total(l)

    if red == "none" or ldt == cdt:
        loss_value = R.reduced_loss(red, lout, total, n, ldt, shape)
    else:   # 16 bits: the float32 value, rounded once (float16 overflow: Inf)
        with np.errstate(over="ignore"):
            loss_value = ldt.type(R.reduced_loss(red, None, total, n, cdt, shape))
    if hessian:
        return loss_value, grad, hess
    return (loss_value, grad) if return_grad else loss_value


def _public_function(loss):
    """The public function of ``loss``, with its options as keyword arguments."""
    options = "".join(f"{o.name}={None if o.per_element else o.default!r}, "
                      for o in loss.options)
    passed = ", ".join(f"{o.name!r}: {o.name}" for o in loss.options)
    x = loss.pred_name
    weight = ("weight=None, ", ", weight=weight") if loss.torch_weight else ("", "")
    source = (f"def {loss.name}({x}, target, *, {options}reduction={loss.reduction!r},\n"
              f"        sample_weight=None, {weight[0]}return_grad=False, out=None,\n"
              "        grad_output=None, backend=None):\n"
              f"    return _evaluate(LOSS, {x}, target, {{{passed}}}, reduction, sample_weight,\n"
              f"                     return_grad, out, grad_output, backend{weight[1]})\n")
    namespace = {"_evaluate": _evaluate, "LOSS": loss}
    exec(compile(source, f"<fastloss.losses: {loss.name}>", "exec"), namespace)
    fn = namespace[loss.name]
    fn.__module__, fn.__doc__, fn.spec = __name__, loss.doc, loss
    return fn


FUNCTIONS = {loss.name: _public_function(loss) for loss in LOSSES}
"""name -> public function, one per loss of the table (aliases not repeated)."""

globals().update(FUNCTIONS)
for _loss in LOSSES:
    for _alias in _loss.aliases:
        globals()[_alias] = FUNCTIONS[_loss.name]

__all__ = [name for loss in LOSSES for name in (loss.name, *loss.aliases)]

"""Global gradient-norm clipping."""
from __future__ import annotations

import math

import numpy as np

from .. import _backend, _dtypes, _threads, _validate
from ._base import _global_norm, numba_available

__all__ = ["clip_grad_norm"]


def clip_grad_norm(grads, max_norm, *, error_if_nonfinite=False, backend=None) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_``: ``total = sqrt(sum_i ||g_i||^2)``,
    ``g_i *= min(1, max_norm / (total + 1e-6))`` (always applied); returns ``total``
    (a Python float). The sum of squares runs in float64 over fixed 4096-element
    chunks, combined in order, so the result does not depend on the thread count.
    A NaN/Inf total raises with ``error_if_nonfinite=True``, else makes the grads NaN
    (as PyTorch). To clip inside an optimizer step without writing the grads, pass
    ``max_grad_norm=`` to the optimizer instead.
    """
    max_norm = _validate.real_scalar(max_norm, "max_norm", low=0.0)
    _validate.boolean(error_if_nonfinite, "error_if_nonfinite")
    if isinstance(grads, np.ndarray):
        grads = [grads]
    grads = list(grads)
    for i, g in enumerate(grads):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"grads[{i}] must be a numpy.ndarray, got {type(g).__name__}")
        if not _dtypes.is_float(g.dtype) or not g.dtype.isnative:
            raise TypeError(f"grads[{i}] must be float32, float64, bfloat16 or float16 (native "
                            f"order), got {g.dtype}")
        if not g.flags.c_contiguous or not g.flags.writeable:
            raise ValueError(f"grads[{i}] must be C-contiguous and writable (scaled in place)")
    name = _backend.resolve(backend, native_ok=numba_available() if backend != "numpy" else None)
    native = name == "native"
    flat = [g.reshape(-1) for g in grads]
    if native:
        _threads.numba_threads()
    total = _global_norm(flat, native)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"the total norm of the gradients is {total}: cannot clip")
    coef = min(1.0, max_norm / (total + 1e-6)) if not math.isnan(total) else total
    for g in flat:
        if native and g.dtype.itemsize != 2:
            from . import _kernels_numba as K
            K.kernel("scale", (), g.shape[0])(g, g.dtype.type(coef))
        else:  # (16-bit: the product in float32, rounded once)
            g[...] = g.astype(np.float32) * np.float32(coef) if g.dtype.itemsize == 2 else \
                g * g.dtype.type(coef)
    return total

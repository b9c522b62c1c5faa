"""Input checks run before any native call.

Kernels run with bounds checks off, so everything they rely on (dtype,
shape, contiguity, writability, parameter ranges) is checked here and
reported with a ValueError/TypeError that names the argument.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from . import _dtypes
from ._dtypes import FLOAT_DTYPES
REDUCTIONS = ("mean", "sum", "none")


def _as_array(x, name):
    """An ndarray view of ``x``: NumPy arrays as they are, DLPack producers (torch,
    JAX CPU arrays) and array-interface objects without a copy where possible."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, TypeError, RuntimeError, ValueError):
            pass  # e.g. a device array, or a tensor that requires grad: try the slow way
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}: {exc}") from None


def native_order(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array in native byte order (copies only when needed)."""
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    # (np.ascontiguousarray would turn a 0-d array into shape (1,))
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def float_input(x, name: str, *, half: bool = False) -> np.ndarray:
    """Predictions/logits: float32 or float64 (and, with ``half``, bfloat16 or float16),
    returned C-contiguous, native order."""
    a = _as_array(x, name)
    if half and _dtypes.is_half(a.dtype):
        return native_order(a)
    if a.dtype.kind != "f" or a.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        also = ", bfloat16 or float16" if half else " or float64"
        first = "float32, float64" if half else "float32"
        raise TypeError(f"{name} must be a {first}{also} array, got dtype {a.dtype}")
    return native_order(a)


def float_like(x, name: str, dtype: np.dtype, shape: tuple | None = None) -> np.ndarray:
    """A real-valued companion array (target, weight...) cast to ``dtype``.

    Integers and booleans are accepted and cast; complex, object and string
    arrays are refused. With ``shape``, it must match exactly.
    """
    a = _as_array(x, name)
    if a.dtype.kind not in "fiub" and not _dtypes.is_half(a.dtype):
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    if a.dtype != dtype:
        a = a.astype(dtype)
    return native_order(a)


def writable_array(a, name: str, why: str = "") -> np.ndarray:
    """An array the kernels write into: numpy.ndarray, C-contiguous, writable, native
    byte order (``why`` is appended to the layout messages)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous{why}")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only{why}")
    if not a.dtype.isnative:
        raise ValueError(f"{name} must be in native byte order")
    return a


def out_needs_grad(out, return_grad: bool) -> None:
    """``out=`` receives the gradient, so it only makes sense with return_grad=True."""
    if out is not None and not return_grad:
        raise ValueError("out= receives the gradient: pass return_grad=True")


def out_array(out, name: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """A caller-provided output buffer: exact shape and dtype, C-contiguous, writable."""
    if isinstance(out, np.ndarray) and out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if isinstance(out, np.ndarray) and out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, expected {tuple(shape)}")
    return writable_array(out, name)


def out_overlap(out: np.ndarray, *, exact_ok=None, out_name: str = "out", **arrays) -> None:
    """The one rule for ``out=`` buffers: ``out`` may be one of the inputs exactly
    (same address, strides, shape and dtype: kernels read each block before writing
    it), but must not partly overlap any input (that would be a race); None entries
    are skipped. ``exact_ok``: the names of the inputs ``out`` may be exactly (None:
    all of them; a kernel that reads an input again after writing ``out`` leaves its
    name out). ``out_name`` names the buffer in the message (e.g. ``logits`` for an
    in-place gradient)."""
    for name, a in arrays.items():
        if a is None or not np.may_share_memory(out, a):
            continue
        exact = (a.ctypes.data == out.ctypes.data and a.strides == out.strides
                 and a.shape == out.shape and a.dtype == out.dtype)
        if not exact:
            raise ValueError(f"{out_name} overlaps {name} without being the same array")
        if exact_ok is not None and name not in exact_ok:
            why = (f"only {' or '.join(exact_ok)} may be passed as {out_name}" if exact_ok
                   else f"{out_name} is written while {name} is still read")
            raise ValueError(f"{out_name} overlaps {name} (it is {name} itself): {why}")


def reduction(value) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {value!r}")
    return value


def real_scalar(value, name: str, *, low=None, high=None, low_open=False, high_open=False,
                finite=True) -> float:
    """A real scalar parameter within [low, high] (open ends when asked)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {v}")
    return v


def boolean(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)

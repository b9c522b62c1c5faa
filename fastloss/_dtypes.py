"""The floating dtypes fastloss takes, and what it computes them in.

* float32, float64: computed in their own precision (as always).
* bfloat16 (``ml_dtypes.bfloat16``, the NumPy bfloat16 that JAX uses) and
  ``np.float16``: *storage* types. Kernels widen them to float32 a tile at a
  time (exact), compute in float32 with the float32 kernels' sums, and round
  results stored in 16 bits to nearest, ties to even (NaN stays NaN, values
  beyond the 16-bit range become Inf, as NumPy's and torch's casts do).

``ml_dtypes`` is an optional extra (``pip install ml_dtypes``, or
``pip install fastloss[bf16]``): it is imported only when bfloat16 is asked for
by name, and an array that already has the bfloat16 dtype means it is loaded.

The kind codes match native/_half.h: 1 bfloat16, 2 float16 (0: not 16-bit).
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
FLOAT16 = np.dtype(np.float16)
HALF_NONE, HALF_BF16, HALF_F16 = 0, 1, 2

_ML_DTYPES_MISSING = ("bfloat16 needs the ml_dtypes package (NumPy's bfloat16, as used by JAX): "
                      "pip install ml_dtypes  (or: pip install fastloss[bf16])")


def bfloat16() -> np.dtype:
    """NumPy's bfloat16 dtype from ml_dtypes; ImportError saying what to install."""
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(_ML_DTYPES_MISSING) from None
    return np.dtype(ml_dtypes.bfloat16)


def is_bfloat16(dtype) -> bool:
    """True for ml_dtypes' bfloat16 (checked without importing ml_dtypes)."""
    dtype = np.dtype(dtype)
    return (dtype.itemsize == 2 and dtype.type.__name__ == "bfloat16"   # (dtype.name is slow)
            and dtype.type.__module__.split(".")[0] == "ml_dtypes")


def half_kind(dtype) -> int:
    """HALF_BF16 / HALF_F16 for the 16-bit storage types, HALF_NONE otherwise."""
    dtype = np.dtype(dtype)
    if dtype.itemsize != 2:
        return HALF_NONE
    if dtype == FLOAT16:
        return HALF_F16
    return HALF_BF16 if is_bfloat16(dtype) else HALF_NONE


def is_half(dtype) -> bool:
    """True for bfloat16 and float16."""
    return half_kind(dtype) != HALF_NONE


def is_float(dtype, *, half: bool = True) -> bool:
    """A floating dtype fastloss takes: float32/float64, and the 16-bit ones when ``half``."""
    dtype = np.dtype(dtype)
    return dtype in FLOAT_DTYPES or (half and is_half(dtype))


def compute_dtype(dtype) -> np.dtype:
    """The dtype the arithmetic runs in: float32 for the 16-bit types, else the dtype."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if is_half(dtype) else dtype


def widen(a: np.ndarray) -> np.ndarray:
    """``a`` in its compute dtype (a float32 copy of a 16-bit array; else ``a`` itself)."""
    return a.astype(np.float32) if is_half(a.dtype) else a


def round_to(a, dtype) -> np.ndarray:
    """``a`` (float32 or float64) rounded to ``dtype``: NumPy's and ml_dtypes' casts round
    to nearest, ties to even, overflow -> Inf, NaN kept. A float64 value is rounded once,
    straight to the 16-bit type (the correctly rounded reference)."""
    return np.asarray(a).astype(dtype)


def bits(a: np.ndarray) -> np.ndarray:
    """The uint16 view of a 16-bit array (what the kernels take)."""
    return a.view(np.uint16)


def name(dtype) -> str:
    """'bfloat16', 'float16', 'float32', ..."""
    return np.dtype(dtype).name

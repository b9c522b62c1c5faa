"""Where an optimizer's numbers live: param, state and master-weight dtypes.

* Params (and their grads, which must have the param's dtype) are float32, float64,
  bfloat16 (``ml_dtypes.bfloat16``) or float16. The update math runs in the param's
  *compute dtype*: float32 for the 16-bit types (``_dtypes.compute_dtype``).
* State buffers (moments, momentum, sums) are by default in the param's dtype (as
  torch keeps them for bf16 params); ``state_dtype`` stores them in another floating
  type no wider than the compute dtype: float32 params take float32, bfloat16 or
  float16 state; 16-bit params the same three; float64 params float64 or float32.
  Buffers are widened on load and rounded (nearest-even) on store, element by element
  inside the kernel (``_convert_numba``).
* ``master_weights=True``: a 16-bit param gets a float32 copy in its state
  (``MASTER``); the update runs on the copy and the param is the copy rounded to
  nearest-even after each step (float32/float64 params need none: no effect).
"""
from __future__ import annotations

import numpy as np

from .. import _dtypes

__all__ = ["MASTER", "state_dtype_arg", "buffer_dtype", "zeros", "full", "empty",
           "role_code", "master_of", "fresh_state", "infer_state_dtype"]

MASTER = "master_param"  # the state key of a 16-bit param's float32 master copy

_CODES = {"bfloat16": 1, "float16": 2}  # _half_numba's BF16, F16; 3: float32 in float64


def state_dtype_arg(v, name="state_dtype"):
    """``v`` as a NumPy floating dtype (None stays None): float32, float64, float16,
    bfloat16 (``"bfloat16"`` or ``ml_dtypes.bfloat16``); TypeError naming ``name``
    for anything else."""
    if v is None:
        return None
    if isinstance(v, str) and v == "bfloat16":
        return _dtypes.bfloat16()
    try:
        dt = np.dtype(v)
    except TypeError:
        dt = None
    if dt is None or not _dtypes.is_float(dt) or not dt.isnative:
        raise TypeError(f"{name} must be a floating dtype (float32, float64, float16 or "
                        f"bfloat16), got {v!r}")
    return dt


def buffer_dtype(pdt, sdt):
    """The dtype of the state buffers of a param of dtype ``pdt`` (``sdt``: the
    optimizer's ``state_dtype`` or None); TypeError when ``sdt`` is wider than the
    param's compute dtype or 16-bit for a float64 param."""
    if sdt is None or sdt == pdt:
        return pdt
    cdt = _dtypes.compute_dtype(pdt)
    if sdt.itemsize > cdt.itemsize or (cdt.itemsize == 8 and sdt.itemsize == 2):
        raise TypeError(f"state_dtype {sdt} does not suit {pdt} params (their update runs "
                        f"in {cdt}: choose " + ("float64 or float32)" if cdt.itemsize == 8
                                                 else "float32, bfloat16 or float16)"))
    return sdt


def zeros(p, sdt):
    """A zero state buffer shaped like ``p`` in ``sdt`` (None: ``p``'s dtype), written
    here: ``np.zeros`` leaves large buffers on the shared zero page, so the first step,
    which reads then writes each state element, would fault twice per page (0.85 s
    instead of 0.3 s for Adam's 512 MB of state on a 64M tensor)."""
    return full(p, 0, sdt)


def full(p, value, sdt):
    return np.full(p.shape, value, sdt or p.dtype)


def empty(p, sdt):
    return np.empty(p.shape, sdt or p.dtype)


def role_code(dt, cdt) -> int:
    """How a kernel role stored as ``dt`` is read by a kernel computing in ``cdt``: 0 in
    place, 1 bfloat16, 2 float16, 3 float32 widened to float64."""
    if dt == cdt:
        return 0
    if dt.itemsize == 2:
        return _CODES[_dtypes.name(dt)] if _dtypes.is_half(dt) else -1
    return 3


def master_of(p):
    """A new float32 master copy of a 16-bit param."""
    return p.astype(np.float32)


def fresh_state(rule, p, group, state_dtype, master_weights) -> dict:
    """A param's state before its first step: ``rule``'s buffers (``_new_state``) in the
    state dtype, and a float32 master copy of a 16-bit param under ``master_weights``."""
    st = rule._new_state(p, group, buffer_dtype(p.dtype, state_dtype))
    if master_weights and p.dtype.itemsize == 2:
        st[MASTER] = master_of(p)
    return st


def infer_state_dtype(params, state):
    """The ``state_dtype`` a state list was made with (functional API): None when every
    buffer has its param's dtype, else the one other dtype they share (ValueError if
    several)."""
    found = {v.dtype for p, st in zip(params, state) for k, v in st.items()
             if isinstance(v, np.ndarray) and k != MASTER and v.dtype != p.dtype}
    if len(found) > 1:
        raise ValueError(f"state buffers have several dtypes {sorted(map(str, found))}; pass "
                         f"state_dtype=")
    return found.pop() if found else None

"""16-bit storage in the Numba optimizer kernels: the multi-tensor loop over mixed storage.

The per-optimizer kernel bodies of ``_kernels_numba`` access elements through
``_convert_numba.ld`` / ``st``, which dispatch on the array type at compile time. This
module's multi-tensor loop (``_multi._runner`` around ``views``) hands each body
``numba.carray`` views typed by the role's storage, so the conversion happens in
registers inside the body's (vectorised) loop -- no buffers, each element read and
written once:

* ``DIRECT``: stored in the compute dtype -- a carray of it;
* ``BF16``: bfloat16 bits -- a **uint16** carray (widened to float32, rounded back to
  nearest even);
* ``F16``: float16 bits -- an **int16** carray (the integer type is only a compile-time
  tag telling float16 from bfloat16);
* ``F32``: float32 storage of a float64 param's state -- a float32 carray (read exactly,
  rounded to nearest even on store).

The result is the compute-dtype update of the widened values, rounded once per stored
value (the NumPy reference does the same on whole arrays: ``_engine.Launch``).

Role codes (``codes`` of a launch, one per kernel argument array) are the ones above.
With master weights the param role is the float32 master copy and ``out`` gives the
16-bit param's code (its address in the table's last column): the body gets the pair
``(master, param)`` and ``st`` writes both.
"""
from __future__ import annotations

import numba
import numpy as np

from . import _kernels_numba as K
from . import _multi
from ._convert_numba import bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, ptr

__all__ = ["DIRECT", "BF16", "F16", "F32", "multi_kernel", "to_f32", "from_f32"]

DIRECT, BF16, F16, F32 = 0, 1, 2, 3


@numba.njit(inline="always")
def to_f32(h, kind):
    """float32 of 16-bit bits ``h`` of kind BF16 or F16."""
    return bf16_to_f32(h) if kind == BF16 else f16_to_f32(h)


@numba.njit(inline="always")
def from_f32(x, kind):
    """16-bit bits of kind BF16 or F16 of the float32 ``x``, nearest-even."""
    return f32_to_bf16(x) if kind == BF16 else f32_to_f16(x)


# ---------------------------------------------------------------------------
# the views of one table row, typed by storage

_TAGS = {BF16: np.uint16(0), F16: np.int16(0), F32: np.float32(0)}


def _view(j, code):
    """``view(row, s, n, like)``: elements [s, s + n) of table column ``j`` as a carray
    of the storage type of ``code`` (DIRECT: ``like``'s type, the compute dtype)."""
    if code == DIRECT:
        @numba.njit(inline="always")
        def view(row, s, n, like):
            return numba.carray(ptr(row[j], s, like), n)
        return view
    tag = _TAGS[code]

    @numba.njit(inline="always")
    def view(row, s, n, like):
        return numba.carray(ptr(row[j], s, tag), n)
    return view


def _master(j, code):
    """The param role of a master-weights launch: the pair (float32 master at column 0,
    16-bit param of ``code`` at column ``j``)."""
    master, param = _view(0, F32), _view(j, code)

    @numba.njit(inline="always")
    def view(row, s, n, like):
        return (master(row, s, n, like), param(row, s, n, like))
    return view


def _append(views, v):
    @numba.njit(inline="always")
    def more(row, s, n, like):
        return views(row, s, n, like) + (v(row, s, n, like),)
    return more


def views(codes, out):
    """The views of a table row for roles stored as ``codes``, ``out``: the master's
    16-bit param code or DIRECT (see the module docstring)."""
    v0 = _view(0, codes[0]) if out == DIRECT else _master(len(codes), out)

    @numba.njit(inline="always")
    def vs(row, s, n, like):
        return (v0(row, s, n, like),)
    for j in range(1, len(codes)):
        vs = _append(vs, _view(j, codes[j]))
    return vs


_compiled: dict = {}


def multi_kernel(name, flags, codes, out, parallel):
    """The multi-tensor loop around kernel ``name`` (see ``_multi.multi_kernel``) for
    roles stored as ``codes`` (a tuple, one per kernel array) and master output ``out``."""
    key = (name, flags, codes, out, parallel)
    k = _compiled.get(key)
    if k is None:
        body = K.kernel(name, flags, 0)
        k = _compiled[key] = K._jit(_multi._runner(body, views(codes, out)), parallel,
                                    cache=False)  # (see _multi.multi_kernel)
    return k


# ---------------------------------------------------------------------------
# the conversions alone, as kernels (tests: against NumPy's casts)

def _cvt_load(src, kind, dst):
    """dst = src widened (tests: the conversions against NumPy's casts)."""
    for i in range(src.shape[0]):
        dst[i] = to_f32(src[i], kind)


def _cvt_store(src, kind, dst):
    """dst = src rounded to 16 bits of ``kind`` (tests)."""
    for i in range(src.shape[0]):
        dst[i] = from_f32(src[i], kind)


for _f in (_cvt_load, _cvt_store):
    K.FACTORIES[_f.__name__.lstrip("_")] = (lambda f: lambda: f)(_f)

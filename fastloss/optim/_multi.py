"""Multi-tensor launch: one Numba call steps every tensor of a group.

A group is a list of tensors that share a dtype and a kernel variant (the
kernel name, its option flags and its scalars). Its buffers arrive as an
int64 table ``addr[k, j]``: the address of role ``j`` (param, grad, then the
state buffers in the kernel's argument order) of tensor ``k``, plus the
prefix sums ``offs`` of the tensors' element counts. The work is cut into
``nparts`` equal ranges of the concatenated elements (boundaries rounded to
``ALIGN`` elements), across tensor boundaries; part ``q`` walks the tensors
it overlaps and runs the serial per-array kernel of ``_kernels_numba`` on
``numba.carray`` views of those addresses. Each element's update depends
only on that element, so the result does not depend on the split (nor on
the thread count).

A role an option turns off points at a 1-element dummy buffer that the
kernel never reads (the flags are compile-time constants).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from . import _kernels_numba as K
from ._convert_numba import ptr as _ptr

__all__ = ["multi_kernel", "ALIGN"]

ALIGN = 64  # part boundaries in elements (whole cache lines for both dtypes)


@numba.njit(inline="always")
def _part(q, nparts, total):
    """Element range [lo, hi) of part q: equal shares rounded to ALIGN elements."""
    lo = (total * q // nparts) // ALIGN * ALIGN
    hi = total if q == nparts - 1 else (total * (q + 1) // nparts) // ALIGN * ALIGN
    return lo, hi


@numba.njit(inline="always")
def _first(offs, lo):
    """The tensor holding element lo (the last k with offs[k] <= lo, skipping empty ones)."""
    k = np.searchsorted(offs, lo, side="right") - 1
    return k


@numba.njit(inline="always")
def _views3(r, s, n, like):
    return (numba.carray(_ptr(r[0], s, like), n), numba.carray(_ptr(r[1], s, like), n),
            numba.carray(_ptr(r[2], s, like), n))


@numba.njit(inline="always")
def _views4(r, s, n, like):
    return _views3(r, s, n, like) + (numba.carray(_ptr(r[3], s, like), n),)


@numba.njit(inline="always")
def _views5(r, s, n, like):
    return _views4(r, s, n, like) + (numba.carray(_ptr(r[4], s, like), n),)


def _runner(body, views):
    """The multi-tensor loop around the serial kernel ``body``; ``views`` makes the
    carrays of one table row (as many as ``body`` takes) for elements [s, s + n).
    (A closure over two dispatchers: Numba's own cache key of it changes in every
    process; ``_kernels_numba._njit`` gives it the stable key of ``_numba_cache``.)"""
    def run(addr, offs, nparts, like, *scalars):
        total = offs[-1]
        for q in prange(nparts):
            lo, hi = _part(q, nparts, total)
            k = _first(offs, lo)
            while lo < hi:
                a = offs[k]
                s = lo - a
                e = min(hi, offs[k + 1]) - a
                if e > s:
                    body(*views(addr[k], s, e - s, like), *scalars)
                lo = a + e
                k += 1
    return run


VIEWS = {3: _views3, 4: _views4, 5: _views5}
_compiled: dict = {}


def multi_kernel(name: str, flags: tuple, nroles: int, parallel: bool):
    """The multi-tensor loop around kernel ``name`` (``flags`` as for
    ``_kernels_numba.kernel``), over ``nroles`` buffers; ``parallel``: parts run on
    Numba's thread pool, else one after the other."""
    key = (name, flags, parallel)
    k = _compiled.get(key)
    if k is None:
        body = K.kernel(name, flags, 0)  # the serial per-array kernel
        # not disk-cached: two runners compiled in different processes can carry the
        # same symbol name, and loaded into one process the second would call the
        # first's code (measured: a wrong Adam after an AdamW)
        k = _compiled[key] = K._jit(_runner(body, VIEWS[nroles]), parallel, cache=False)
    return k


@K._njit
def address(a):
    """The address of ``a``'s first element (``a.ctypes.data`` costs ~0.7 us in
    Python, this call ~0.1 us)."""
    return a.ctypes.data


@K._njit
def common_value(addrs, like):
    """The scalar stored at every address in ``addrs`` (of ``like``'s type) if they are
    all equal, else NaN (a per-parameter step count read in one call)."""
    t = numba.carray(_ptr(addrs[0], 0, like), 1)[0]
    for k in range(1, addrs.shape[0]):
        if numba.carray(_ptr(addrs[k], 0, like), 1)[0] != t:
            return like - like + np.nan
    return t


@K._njit
def store_value(addrs, value):
    """Write ``value`` at every address in ``addrs``."""
    for k in range(addrs.shape[0]):
        numba.carray(_ptr(addrs[k], 0, value), 1)[0] = value

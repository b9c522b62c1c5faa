"""``C += A @ B`` through the BLAS that NumPy ships (its gemm with beta = 1).

``np.matmul`` has no beta: accumulating a product into an existing array costs
a scratch product and a separate, single-threaded ``+=`` pass. NumPy's wheels
bundle OpenBLAS (``numpy.libs`` / ``numpy/.dylibs``); :func:`gemm_acc` calls
its ``cblas_?gemm`` through ctypes with beta = 1, so the accumulation happens
inside the (threaded) GEMM. Not found, or failing a self-test against
``np.matmul`` when first used, it falls back to ``matmul`` into a scratch plus
``+=``: the same sums in the same order (one product, then one addition per
element), so both paths give the same bits when K fits one of BLAS's K-panels.
"""
from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

__all__ = ["gemm_acc", "available", "single_threaded"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_lib = None  # None: not looked up yet; False: unavailable; else {dtype char: (fn, int type)}
_set_local = None  # openblas_set_num_threads_local (OpenBLAS >= 0.3.27) or None


def _candidates():
    root = os.path.dirname(os.path.dirname(np.__file__))
    for d in (os.path.join(root, "numpy.libs"), os.path.join(os.path.dirname(np.__file__),
                                                               ".dylibs")):
        yield from sorted(glob.glob(os.path.join(d, "*openblas*")))


def _bind(path):
    """{'f': sgemm, 'd': dgemm} with their integer type, from the library at path."""
    lib = ctypes.CDLL(path)
    for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
        try:
            s, d = (getattr(lib, f"{prefix}cblas_{t}gemm{suffix}") for t in "sd")
        except AttributeError:
            continue
        if suffix:
            it = ctypes.c_int64
        else:  # an unsuffixed OpenBLAS may still be built with 64-bit integers
            cfg = getattr(lib, "openblas_get_config", None)
            if cfg is None:
                continue
            cfg.restype = ctypes.c_char_p
            it = ctypes.c_int64 if b"USE64BITINT" in cfg() else ctypes.c_int
        out = {}
        for ch, fn, real in (("f", s, ctypes.c_float), ("d", d, ctypes.c_double)):
            fn.restype = None
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, it, it, it, real,
                           ctypes.c_void_p, it, ctypes.c_void_p, it, real, ctypes.c_void_p, it]
            out[ch] = (fn, it)
        return out
    return None


def _self_test():
    """The bound gemm against np.matmul on every layout it will see (an ABI slip
    gives garbage, not rounding differences)."""
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        def r(*shape):
            return rng.standard_normal(shape).astype(dt)
        for a in (r(4, 7), r(7, 4).T, r(4, 9)[:, :7]):
            for b in (r(7, 3), r(3, 7).T):
                for c in (r(4, 3), r(3, 4).T, r(4, 5)[:, :3]):
                    want = c + a @ b
                    if not _call(a, b, c) or not np.allclose(c, want, rtol=1e-5, atol=1e-6):
                        return False
    return True


def _lookup():
    global _lib, _set_local
    _lib = False
    for path in _candidates():
        try:
            bound = _bind(path)
        except OSError:
            continue
        if bound:
            _lib = bound
            fn = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
                _set_local = fn
            try:
                ok = _self_test()
            except Exception:  # noqa: BLE001 - any failure disables the fast path
                ok = False
            if not ok:
                _lib = False
            return


def available():
    """Whether NumPy's BLAS gemm was found (and passed its self-test)."""
    if _lib is None:
        _lookup()
    return bool(_lib)


def single_threaded():
    """Make NumPy's BLAS run single-threaded in the calling thread (for the worker
    threads of a caller that splits the work itself); False when it cannot."""
    if not available() or _set_local is None:
        return False
    _set_local(1)
    return True


def _layout(a):
    """(transposed?, leading dimension) of a 2-D view that BLAS can read in place
    (one unit stride, the other at least the extent it spans); None otherwise."""
    m, n = a.shape
    s0, s1 = a.strides
    if s0 % a.itemsize or s1 % a.itemsize or s0 < 0 or s1 < 0:
        return None
    s0, s1 = s0 // a.itemsize, s1 // a.itemsize
    if s1 == 1 or n == 1:
        ld = s0 if m > 1 else n
        if ld >= max(1, n):
            return False, ld
    if s0 == 1 or m == 1:
        ld = s1 if n > 1 else m
        if ld >= max(1, m):
            return True, ld
    return None


def _call(A, B, C):
    """C += A @ B by the bound gemm; False when a layout does not suit BLAS."""
    lc = _layout(C)
    if lc is None:
        return False
    if lc[0]:  # column-major C: C^T += B^T A^T
        A, B, C = B.T, A.T, C.T
        lc = (False, lc[1])
    la, lb = _layout(A), _layout(B)
    if la is None or lb is None:
        return False
    fn, it = _lib[A.dtype.char]
    M, N = C.shape
    K = A.shape[1]
    fn(_ROW_MAJOR, _TRANS if la[0] else _NO_TRANS, _TRANS if lb[0] else _NO_TRANS,
       M, N, K, 1.0, A.ctypes.data, la[1], B.ctypes.data, lb[1], 1.0, C.ctypes.data, lc[1])
    return True


def gemm_acc(A, B, C, scratch=None):
    """``C += A @ B`` for 2-D float32/float64 arrays of one dtype (C not overlapping
    A or B). Through BLAS with beta = 1 when NumPy's BLAS was found; else
    ``np.matmul(A, B, out=scratch[:M])`` (scratch: at least C's rows, or None to
    allocate) then ``C += scratch``."""
    M, N = C.shape
    if A.shape != (M, A.shape[1]) or B.shape != (A.shape[1], N):
        raise ValueError(f"gemm_acc: shapes {A.shape} @ {B.shape} into {C.shape}")
    if not (A.dtype == B.dtype == C.dtype) or C.dtype.char not in "fd":
        raise TypeError("gemm_acc: A, B and C must share a float32/float64 dtype")
    if M == 0 or N == 0 or A.shape[1] == 0:
        return C
    if available() and _call(A, B, C):
        return C
    s = np.empty((M, N), C.dtype) if scratch is None else scratch[:M]
    np.matmul(A, B, out=s)
    C += s
    return C

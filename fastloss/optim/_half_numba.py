"""16-bit storage in the Numba optimizer kernels: conversions and the tiled multi-tensor loop.

The per-optimizer kernels of ``_kernels_numba`` compute in one dtype (float32 for
16-bit params). Roles stored in another dtype -- bfloat16 / float16 params, grads or
state, float32 state of float64 params -- go through a *tile*: the multi-tensor loop
(``tiled_runner``) widens ``TILE`` elements of each such role into a per-thread buffer
of the compute dtype, runs the unchanged kernel body on the tile, and rounds the roles
the kernel writes back into their storage (round to nearest, ties to even). No copy of
a whole tensor is made, and the result is the compute-dtype update of the widened
values, rounded once per stored value (the NumPy reference does the same on whole
arrays: ``_engine.Launch``).

Conversions (``numba.extending.intrinsic``, LLVM IR; bit for bit NumPy's and ml_dtypes'
casts, NaN anywhere NaN; tests/test_optim_half.py):

* bfloat16 -> float32: the 16 bits become the high half of the float (exact);
* float32 -> bfloat16: ``(u + 0x7fff + ((u >> 16) & 1)) >> 16`` (ties to even, overflow
  to Inf); a NaN keeps its sign and top payload and is made quiet;
* float16 <-> float32: LLVM's ``fpext`` / ``fptrunc`` of ``half`` (F16C's vcvtph2ps /
  vcvtps2ph on x86: exact / nearest-even, subnormals and Inf as IEEE, NaN made quiet).

Role codes (``codes`` of a launch, one per kernel argument array): ``DIRECT`` (stored in
the compute dtype: used in place), ``BF16``, ``F16`` (16-bit storage, float32 compute),
``F32`` (float32 storage, float64 compute). With master weights the param role is the
float32 master copy and ``out`` gives the 16-bit param's code: after each tile the
master is rounded into the param (an extra address column of the table).
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from . import _kernels_numba as K
from numba.core import cgutils

from ._multi import _first, _part

__all__ = ["DIRECT", "BF16", "F16", "F32", "TILE", "tiled_runner", "to_f32", "from_f32"]

DIRECT, BF16, F16, F32 = 0, 1, 2, 3
TILE = 1024  # elements per role and tile (float32 buffers of 4 KiB: all roles fit in L1)

_i16, _i32 = ir.IntType(16), ir.IntType(32)


@intrinsic
def _ptr(typingctx, addr, offset, like):
    """``(like *) addr + offset`` (``like``: a float or integer scalar of the element type)."""
    if not isinstance(like, (types.Float, types.Integer)):
        return None
    sig = types.CPointer(like)(addr, offset, like)

    def codegen(context, builder, signature, args):
        base = builder.inttoptr(args[0], context.get_value_type(signature.return_type))
        return cgutils.gep(builder, base, args[1])

    return sig, codegen


@intrinsic
def bf16_to_f32(typingctx, h):
    """float32 from bfloat16 bits (a uint16)."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        w = builder.zext(builder.trunc(args[0], _i16), _i32)
        return builder.bitcast(builder.shl(w, ir.Constant(_i32, 16)), ir.FloatType())

    return types.float32(h), codegen


@intrinsic
def f32_to_bf16(typingctx, x):
    """bfloat16 bits (a uint16) of a float32, nearest-even; NaN kept (quiet, sign kept)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        c = lambda v: ir.Constant(_i32, v)  # noqa: E731
        u = builder.bitcast(args[0], _i32)
        nan = builder.icmp_unsigned(">", builder.and_(u, c(0x7FFFFFFF)), c(0x7F800000))
        lsb = builder.and_(builder.lshr(u, c(16)), c(1))
        r = builder.add(u, builder.add(c(0x7FFF), lsb))
        r = builder.select(nan, builder.or_(u, c(0x00400000)), r)
        return builder.trunc(builder.lshr(r, c(16)), _i16)

    return types.uint16(x), codegen


@intrinsic
def f16_to_f32(typingctx, h):
    """float32 from float16 bits (a uint16): LLVM ``fpext half``."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        hv = builder.bitcast(builder.trunc(args[0], _i16), ir.HalfType())
        return builder.fpext(hv, ir.FloatType())

    return types.float32(h), codegen


@intrinsic
def f32_to_f16(typingctx, x):
    """float16 bits (a uint16) of a float32: LLVM ``fptrunc`` to ``half`` (nearest-even)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), _i16)

    return types.uint16(x), codegen


@numba.njit(inline="always")
def to_f32(h, kind):
    """float32 of 16-bit bits ``h`` of kind BF16 or F16."""
    return bf16_to_f32(h) if kind == BF16 else f16_to_f32(h)


@numba.njit(inline="always")
def from_f32(x, kind):
    """16-bit bits of kind BF16 or F16 of the float32 ``x``, nearest-even."""
    return f32_to_bf16(x) if kind == BF16 else f32_to_f16(x)


# ---------------------------------------------------------------------------
# one role of the tiled loop: load (a view of the compute dtype) and store back

_U16 = np.uint16(0)
_F32 = np.float32(0)


def _role(j, code, write, cdt):
    """``(load, store)`` of table column ``j`` stored as ``code``; ``store`` is a no-op
    unless ``write``. ``load(row, t, n, buf, like)`` returns elements [t, t + n) of the
    tensor in the compute dtype: the storage itself (DIRECT) or ``buf`` filled with them."""
    if code == DIRECT:
        @numba.njit(inline="always")
        def load(row, t, n, buf, like):
            return numba.carray(_ptr(row[j], t, like), n)

        @numba.njit(inline="always")
        def store(row, t, n, buf, like):
            pass

        return load, store
    if code == F32:
        @numba.njit(inline="always")
        def load(row, t, n, buf, like):
            src = numba.carray(_ptr(row[j], t, _F32), n)
            for i in range(n):
                buf[i] = src[i]
            return buf[:n]

        @numba.njit(inline="always")
        def store(row, t, n, buf, like):
            if write:
                dst = numba.carray(_ptr(row[j], t, _F32), n)
                for i in range(n):
                    dst[i] = np.float32(buf[i])

        return load, store
    kind = code

    @numba.njit(inline="always")
    def load(row, t, n, buf, like):
        src = numba.carray(_ptr(row[j], t, _U16), n)
        for i in range(n):
            buf[i] = to_f32(src[i], kind)
        return buf[:n]

    @numba.njit(inline="always")
    def store(row, t, n, buf, like):
        if write:
            dst = numba.carray(_ptr(row[j], t, _U16), n)
            for i in range(n):
                dst[i] = from_f32(buf[i], kind)

    return load, store


def _master_out(j, kind):
    """The store of a master-weights launch: column 0 (the float32 master, updated in
    place) rounded into the 16-bit param at column ``j``."""
    @numba.njit(inline="always")
    def store(row, t, n, buf, like):
        src = numba.carray(_ptr(row[0], t, _F32), n)
        dst = numba.carray(_ptr(row[j], t, _U16), n)
        for i in range(n):
            dst[i] = from_f32(src[i], kind)

    return store


@numba.njit(inline="always")
def _noop(row, t, n, buf, like):
    pass


def tiled_runner(body, codes, out, cdt):
    """The multi-tensor loop (as ``_multi._runner``) that runs the serial kernel ``body``
    tile by tile, roles stored as ``codes`` (grad, role 1, is read only); ``out``: the
    16-bit code of a master-weights param (its address in the table's last column), or
    DIRECT. ``cdt``: the compute dtype (NumPy type)."""
    n = len(codes)
    L, S = zip(*[_role(j, c, j != 1, cdt) for j, c in enumerate(codes)])
    S = S + (_noop,) * (5 - n)
    S0, S1, S2, S3, S4 = S
    SX = _noop if out == DIRECT else _master_out(n, out)
    call = _CALLS[n](body, *L)

    def run(addr, offs, nparts, like, *scalars):
        total = offs[-1]
        # one tile buffer per part, made before the parallel loop (Numba hoists an
        # allocation inside prange out of it: the threads would share it)
        allbufs = np.empty((nparts, n, TILE), cdt)
        for q in prange(nparts):
            bufs = allbufs[q]
            lo, hi = _part(q, nparts, total)
            k = _first(offs, lo)
            while lo < hi:
                a = offs[k]
                s = lo - a
                e = min(hi, offs[k + 1]) - a
                row = addr[k]
                while s < e:
                    m = min(TILE, e - s)
                    call(row, s, m, bufs, like, scalars)
                    S0(row, s, m, bufs[0], like)
                    S1(row, s, m, bufs[1], like)
                    S2(row, s, m, bufs[2], like)
                    S3(row, s, m, bufs[min(3, n - 1)], like)  # (no-ops past n roles)
                    S4(row, s, m, bufs[min(4, n - 1)], like)
                    SX(row, s, m, bufs[0], like)
                    s += m
                lo = a + e
                k += 1
    return run


def _call3(body, L0, L1, L2):
    @numba.njit(inline="always")
    def call(row, t, n, b, like, scalars):
        body(L0(row, t, n, b[0], like), L1(row, t, n, b[1], like), L2(row, t, n, b[2], like),
             *scalars)
    return call


def _call4(body, L0, L1, L2, L3):
    @numba.njit(inline="always")
    def call(row, t, n, b, like, scalars):
        body(L0(row, t, n, b[0], like), L1(row, t, n, b[1], like), L2(row, t, n, b[2], like),
             L3(row, t, n, b[3], like), *scalars)
    return call


def _call5(body, L0, L1, L2, L3, L4):
    @numba.njit(inline="always")
    def call(row, t, n, b, like, scalars):
        body(L0(row, t, n, b[0], like), L1(row, t, n, b[1], like), L2(row, t, n, b[2], like),
             L3(row, t, n, b[3], like), L4(row, t, n, b[4], like), *scalars)
    return call


_CALLS = {3: _call3, 4: _call4, 5: _call5}
_compiled: dict = {}


def multi_kernel(name, flags, codes, out, cdt, parallel):
    """The tiled multi-tensor loop around kernel ``name`` (see ``_multi.multi_kernel``)
    for roles stored as ``codes`` (a tuple, one per kernel array) and master output
    ``out``; ``cdt``: the compute dtype."""
    key = (name, flags, codes, out, np.dtype(cdt).char, parallel)
    k = _compiled.get(key)
    if k is None:
        body = K.kernel(name, flags, 0)
        k = _compiled[key] = K._jit(tiled_runner(body, codes, out, np.dtype(cdt).type),
                                    parallel)
    return k


# ---------------------------------------------------------------------------
# global-norm helpers on 16-bit gradients (as _kernels_numba's, on the widened values)

from ._reference import CHUNK  # noqa: E402


def _sumsq_chunks_half(g, kind, out):
    """out[k] = sum of g[i]^2 in float64 over chunk k (``g``: 16-bit bits of ``kind``)."""
    n = g.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    for k in prange(nchunks):
        lo = k * CHUNK
        hi = min(lo + CHUNK, n)
        s = 0.0
        for i in range(lo, hi):
            x = numba.float64(to_f32(g[i], kind))
            s += x * x
        out[k] = s


def _nonfinite_chunks_half(g, kind, out):
    """out[k] = 1 if chunk k of ``g`` (16-bit bits of ``kind``) holds a NaN or Inf."""
    n = g.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    mask = np.uint16(0x7F80) if kind == BF16 else np.uint16(0x7C00)
    for k in prange(nchunks):
        lo = k * CHUNK
        hi = min(lo + CHUNK, n)
        bad = 0
        for i in range(lo, hi):
            if g[i] & mask == mask:
                bad = 1
        out[k] = bad


def _cvt_load(src, kind, dst):
    """dst = src widened (tests: the conversions against NumPy's casts)."""
    for i in range(src.shape[0]):
        dst[i] = to_f32(src[i], kind)


def _cvt_store(src, kind, dst):
    """dst = src rounded to 16 bits of ``kind`` (tests)."""
    for i in range(src.shape[0]):
        dst[i] = from_f32(src[i], kind)


for _f in (_sumsq_chunks_half, _nonfinite_chunks_half, _cvt_load, _cvt_store):
    K.FACTORIES[_f.__name__.lstrip("_")] = (lambda f: lambda: f)(_f)

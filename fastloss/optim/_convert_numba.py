"""Element access of the Numba optimizer kernels in any storage dtype: ``ld`` / ``st``.

The kernel bodies of ``_kernels_numba`` read ``ld(a, i)`` and write ``st(a, i, x)``
instead of ``a[i]``; which code that is depends on the array's Numba type, chosen at
compile time (``numba.extending.overload``), so one body compiles for every storage
combination and converts in registers (no buffers):

* a float32 / float64 array: ``a[i]`` and ``a[i] = x`` (a float64 ``x`` stored into
  float32 storage is rounded to nearest even by the store, as NumPy's cast);
* a **uint16** array holds **bfloat16** bits: ``ld`` widens them to float32 (exact),
  ``st`` rounds a float32 to bfloat16 (nearest even);
* an **int16** array holds **float16** bits (the integer type is only a tag: the bits
  are IEEE binary16): ``fpext`` / ``fptrunc`` of LLVM's ``half``;
* a 2-tuple ``(master, param)``: a float32 master copy and its 16-bit param; ``ld``
  reads the master, ``st`` writes the master and the param rounded from it.

Conversions (``numba.extending.intrinsic``, LLVM IR; bit for bit NumPy's and ml_dtypes'
casts, NaN anywhere NaN; tests/test_optim_half.py):

* bfloat16 -> float32: the 16 bits become the high half of the float (exact);
* float32 -> bfloat16: ``(u + 0x7fff + ((u >> 16) & 1)) >> 16`` (ties to even, overflow
  to Inf); a NaN keeps its sign and top payload and is made quiet;
* float16 <-> float32: LLVM's ``fpext`` / ``fptrunc`` of ``half`` (F16C's vcvtph2ps /
  vcvtps2ph on x86: exact / nearest-even, subnormals and Inf as IEEE, NaN made quiet).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

__all__ = ["ptr", "bf16_to_f32", "f32_to_bf16", "f16_to_f32", "f32_to_f16", "ld", "st"]

_i16, _i32 = ir.IntType(16), ir.IntType(32)


@intrinsic
def ptr(typingctx, addr, offset, like):
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
    """float32 from bfloat16 bits (a 16-bit integer)."""
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
        nan = builder.fcmp_unordered("uno", args[0], args[0])  # (one vcmpunordps)
        lsb = builder.and_(builder.lshr(u, c(16)), c(1))
        r = builder.add(u, builder.add(c(0x7FFF), lsb))
        r = builder.select(nan, builder.or_(u, c(0x00400000)), r)
        return builder.trunc(builder.lshr(r, c(16)), _i16)

    return types.uint16(x), codegen


@intrinsic
def f16_to_f32(typingctx, h):
    """float32 from float16 bits (a 16-bit integer): LLVM ``fpext half``."""
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


def ld(arr, idx):
    """``arr[idx]`` in the compute dtype (see the module docstring)."""
    raise NotImplementedError  # (compiled code only)


def st(arr, idx, val):
    """``arr[idx] = val`` in ``arr``'s storage (see the module docstring)."""
    raise NotImplementedError  # (compiled code only)


def _is_master(a):
    return isinstance(a, types.BaseTuple)


# (argument names unlike the bodies' variables: a parallel body must not see its loop
# index ``i`` assigned by an inlined call)
@overload(ld)
def _ld(arr, idx):
    if _is_master(arr):
        return lambda arr, idx: arr[0][idx]
    if arr.dtype == types.uint16:
        return lambda arr, idx: bf16_to_f32(arr[idx])
    if arr.dtype == types.int16:
        return lambda arr, idx: f16_to_f32(arr[idx])
    if isinstance(arr.dtype, types.Float):
        return lambda arr, idx: arr[idx]
    return None


@overload(st)
def _st(arr, idx, val):
    if _is_master(arr):
        def store_master(arr, idx, val):
            arr[0][idx] = val
            st(arr[1], idx, val)
        return store_master
    if arr.dtype == types.uint16:
        def store_bf16(arr, idx, val):
            arr[idx] = f32_to_bf16(val)
        return store_bf16
    if arr.dtype == types.int16:
        def store_f16(arr, idx, val):
            arr[idx] = f32_to_f16(val)
        return store_f16
    if isinstance(arr.dtype, types.Float):
        def store(arr, idx, val):
            arr[idx] = val
        return store
    return None

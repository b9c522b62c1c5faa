"""16-bit storage types: the native bfloat16/float16 <-> float32 conversions against
ml_dtypes' and NumPy's casts, bit for bit, on every instruction-set level (every one
of the 65536 16-bit patterns widened; float32 values at every rounding boundary
rounded), and the dtype helpers of fastloss._dtypes."""
import numpy as np
import pytest

import fastloss
from fastloss import _backend, _dtypes

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 tests need ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
USABLE = _backend.simd_info()["simd_usable"] if fastloss.native_available() else []
KINDS = [(_dtypes.HALF_BF16, BF16), (_dtypes.HALF_F16, np.dtype(np.float16))]


def _same(got_f32, want_f32):
    """Equal bits, NaN anywhere NaN (payloads may differ)."""
    g, w = got_f32.view(np.uint32), want_f32.view(np.uint32)
    nan = np.isnan(want_f32)
    np.testing.assert_array_equal(np.isnan(got_f32), nan)
    np.testing.assert_array_equal(g[~nan], w[~nan])


def _hostile_floats():
    rng = np.random.default_rng(7)
    u = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    # every float32 near a bf16 / f16 rounding boundary: low bits all patterns around half
    base = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32)
    low16 = np.array([0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff], np.uint32)
    low13 = np.array([0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff], np.uint32)
    near = np.concatenate([(base[:, None] & 0xffff0000) | low16, (base[:, None] & 0xffffe000) | low13]).ravel()
    special = np.array([0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001,
                        0x7f800001, 0x7f7fffff, 0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001,
                        0x38800000, 0x387fffff, 0x33800000, 0x33000000, 0x33000001, 0x00000001,
                        0x3f800000, 0x7f7f8000, 0x7f7f7fff], np.uint32)
    # float16 subnormal range densely
    sub = np.linspace(0, 2.0**-14, 50_001, dtype=np.float32).view(np.uint32)
    return np.concatenate([u, near, special, special | 0x80000000, sub]).view(np.float32)


@pytest.mark.parametrize("level", USABLE)
@pytest.mark.parametrize("kind,dtype", KINDS, ids=["bfloat16", "float16"])
def test_widen_every_pattern(level, kind, dtype):
    k = _backend.load_level(level)
    for n in (65536, 37, 0):   # and a tail, and nothing
        src = np.arange(n, dtype=np.uint16)
        got = np.empty(n, np.float32)
        k.half_to_float32(kind, src, got)
        _same(got, src.view(dtype).astype(np.float32))


@pytest.mark.parametrize("level", USABLE)
@pytest.mark.parametrize("kind,dtype", KINDS, ids=["bfloat16", "float16"])
def test_round_nearest_even(level, kind, dtype):
    k = _backend.load_level(level)
    x = _hostile_floats()
    for a in (x, x[:29]):
        got = np.empty(a.size, np.uint16)
        k.float32_to_half(kind, np.ascontiguousarray(a), got)
        with np.errstate(over="ignore", invalid="ignore"):
            want = a.astype(dtype)
        _same(got.view(dtype).astype(np.float32), want.astype(np.float32))


def test_dtype_helpers():
    assert _dtypes.half_kind(BF16) == _dtypes.HALF_BF16 and _dtypes.is_bfloat16(BF16)
    assert _dtypes.half_kind(np.float16) == _dtypes.HALF_F16 and not _dtypes.is_bfloat16(np.float16)
    for d in (np.float32, np.float64, np.int16, np.uint16, np.dtype("V2")):
        assert _dtypes.half_kind(d) == _dtypes.HALF_NONE
    assert _dtypes.compute_dtype(BF16) == np.float32 and _dtypes.compute_dtype(np.float64) == np.float64
    assert _dtypes.bfloat16() == BF16
    assert _dtypes.is_float(BF16) and not _dtypes.is_float(BF16, half=False)


def test_float_input_half_opt_in():
    from fastloss import _validate as v
    a = np.ones(3, BF16)
    with pytest.raises(TypeError, match="x must be a float32 or float64 array"):
        v.float_input(a, "x")
    assert v.float_input(a, "x", half=True) is a
    with pytest.raises(TypeError, match="x must be a float32, float64, bfloat16 or float16"):
        v.float_input(np.ones(3, np.int16), "x", half=True)


def test_torch_bridge_shares_bfloat16_memory():
    torch = pytest.importorskip("torch")
    from fastloss.torch._bridge import as_numpy, from_numpy
    t = torch.tensor([1.5, -2.0, float("nan")], dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="x has dtype torch.bfloat16"):
        as_numpy(t, "x")
    a = as_numpy(t, "x", half=True)
    assert a.dtype == BF16 and a.ctypes.data == t.data_ptr()
    back = from_numpy(a)
    assert back.dtype == torch.bfloat16 and back.data_ptr() == t.data_ptr()
    assert as_numpy(t.half(), "x", half=True).dtype == np.float16

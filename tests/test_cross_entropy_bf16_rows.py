"""bfloat16 cross-entropy rows read straight from the 16-bit logits (the avx2 and
avx512 levels' _bf16_rows.h: the max from integer max / min of the bits, the exps
(interleaved on avx2), the exponent-add exp where m + max|z| <= 86, the gradient
rounded in registers; the loss alone too) give the float32 kernel's bits, rounded,
on every level:
tails of every length, targets at every position of a group of 16, several chunks,
chunks of -inf, signed zeros, all-negative rows, subnormals, NaN of either sign and
Inf, unaligned and streamed gradients."""
import numpy as np
import pytest

import fastloss
from fastloss import _backend, _threads
from fastloss import classification as fc

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
LEVELS = _backend.simd_info()["simd_usable"] if fastloss.native_available() else []
pytestmark = pytest.mark.skipif(not fastloss.native_available(), reason="no native extension")


def _ulp(v):
    return float(ml_dtypes.finfo(BF16).eps) * 2.0 ** np.floor(np.log2(max(abs(v), 1e-30)))


def _check(x, y, nts=(1, 2), out=None, **kw):
    """x's bf16 gradient (and loss) against the float32 kernel's on the widened x."""
    before = _threads.get_num_threads()
    try:
        _threads.set_num_threads(1)
        l32, g32 = fc.cross_entropy(x.astype(np.float32), y, return_grad=True, **kw)
        want = g32.astype(BF16).view(np.uint16)
        for nt in nts:
            _threads.set_num_threads(nt)
            loss, g = fc.cross_entropy(x, y, return_grad=True, out=out, **kw)
            np.testing.assert_array_equal(g.view(np.uint16), want, err_msg=f"threads {nt}")
            only = fc.cross_entropy(x, y, **kw)           # the loss alone: the same sums
            assert np.asarray(only).tobytes() == np.asarray(loss).tobytes()
            l32f = np.asarray(l32, np.float64)
            lf = np.asarray(loss).astype(np.float64)
            with np.errstate(invalid="ignore"):
                ok = (np.isnan(lf) & np.isnan(l32f)) | (lf == l32f) | \
                    (np.abs(lf - l32f) <= np.vectorize(_ulp)(l32f))
            assert np.all(ok), (nt, lf, l32f)
    finally:
        _threads.set_num_threads(before)


@pytest.fixture(params=LEVELS)
def level(request):
    before = _backend.simd_level
    _backend.set_simd_level(request.param)
    yield request.param
    _backend.set_simd_level(before)


@pytest.mark.parametrize("C", [17, 33, 47, 160, 1000, 8192 + 37, 20011])
@pytest.mark.parametrize("scale", [3.0, 60.0], ids=["tame", "wide"])
def test_rows_are_float32_kernel_rounded(level, C, scale):
    rng = np.random.default_rng(C)
    N = 37
    x = (rng.normal(size=(N, C)) * scale).astype(BF16)
    y = (np.arange(N) * 7 + C - 19) % C       # targets in the tail and in every group slot
    _check(x, y)
    _check(x, y, reduction="none", grad_output=rng.normal(size=N).astype(np.float32))


def test_hostile_rows(level):
    rng = np.random.default_rng(3)
    N, C = 12, 2 * 8192 + 21
    x = (rng.normal(size=(N, C)) * 3).astype(np.float32)
    x[0, :8192] = -np.inf             # a chunk of -inf
    x[1, :] = 0.0                     # signed zeros: the max and exps of ties
    x[1, ::3] = -0.0
    x[2, 5] = np.nan
    x[3, C - 2] = np.nan              # in the tail
    x[4, 100] = np.inf
    x[5, :] = -np.inf
    x[5, C - 1] = 1.0
    x[6, 9000] = 85.0                 # m + max|z| just inside / outside 86
    x[7, 9000] = 88.0
    x[7, 10] = -3.0
    x[8, :] = -80.0                   # exps near float32's underflow
    x[8, 3] = 5.0
    x = x.astype(BF16)
    y = rng.integers(0, C, N)
    y[0] = 8192 + 3
    y[9] = -100
    w = rng.uniform(0.5, 2.0, C).astype(np.float32)
    _check(x, y)
    _check(x, y, weight=w, z_loss=1e-3, reduction="none")


@pytest.mark.parametrize("align", [2, 16, 0])
def test_unaligned_streamed_gradient(level, align):
    """More than 4M values (streamed stores) into an out= at an address that is 2, 16 or
    0 mod 32 bytes (no streaming, 16-byte streamed stores, 32-byte ones)."""
    rng = np.random.default_rng(4)
    N, C = 130, 32016
    x = (rng.normal(size=(N, C)) * 3).astype(BF16)
    y = rng.integers(0, C, N)
    buf = np.empty(N * C + 16, BF16)
    off = ((align - buf.ctypes.data) % 32) // 2
    out = buf[off:off + N * C].reshape(N, C)
    assert out.ctypes.data % 32 == align
    _check(x, y, nts=(2,), out=out)


def test_row_path_on_vector_levels():
    """avx2 and avx512 take the row path (the tests above run it there), baseline the
    16-bit tiles."""
    for lv in LEVELS:
        assert _backend.load_level(lv).CE_BF16_ROWS == (lv != "baseline"), lv


def test_integer_max_edges(level):
    """The max pass from the bits: rows whose max is negative, -0, +0 beside -0, a
    subnormal, +-inf; NaN of either sign beside negatives; spans of 32 and tails."""
    rng = np.random.default_rng(5)
    C = 8192 + 77
    tiny = float(np.finfo(np.float32).tiny)
    rows = []
    for span in (C, 31, 64, 77):
        base = -np.abs(rng.normal(size=C)).astype(np.float32) * 5 - 0.5
        r = np.full(C, -np.inf, np.float32)
        r[:span] = base[:span]
        rows.append(r.copy())                           # all negative
        z = r.copy(); z[span // 2] = -0.0; rows.append(z)   # max -0
        z = r.copy(); z[span // 3] = -0.0; z[span - 1] = 0.0; rows.append(z)  # +0 and -0
        z = r.copy(); z[span - 1] = -tiny / 8; rows.append(z)  # a negative subnormal max
        z = r.copy(); z[0] = tiny / 4; rows.append(z)       # a positive subnormal max
        z = r.copy(); z[span // 2] = -np.nan; rows.append(z)   # -NaN among negatives
        z = r.copy(); z[span - 1] = np.nan; rows.append(z)     # +NaN among negatives
        z = r.copy(); z[1] = np.inf; rows.append(z)
        z = np.full(C, -np.inf, np.float32); z[span - 1] = -3.0; rows.append(z)
    x = np.stack(rows)
    x[5::9] = np.copysign(x[5::9], -1.0)        # -NaN keeps its sign bit
    x = x.astype(BF16)
    bits = x.view(np.uint16)
    assert np.any(bits == 0xffc0) or np.any((bits & 0x8000) & ((bits & 0x7fff) > 0x7f80))
    y = (np.arange(len(x)) * 13) % 31
    _check(x, y)
    _check(x, y, reduction="none")

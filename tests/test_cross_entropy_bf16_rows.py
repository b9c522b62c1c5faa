"""bfloat16 cross-entropy rows read straight from the 16-bit logits (the avx2 and
avx512 levels' _bf16_rows.h: the max from integer max / min of the bits, the exps
(interleaved on avx2) by an exp of 16-bit precision (relative error 3.2e-6), the
exponent-add exp where m + max|z| <= 86, the gradient rounded in registers; the loss
alone too; the split schedule's items): on every level the gradient and loss are the
correctly rounded bfloat16 of the float64 values, bit for bit, but where that value
lies within 1e-5 of a rounding midpoint (there one ulp either way); the same bits for
any thread count and schedule: tails of every length, targets at every position of a
group of 16, several chunks, chunks of -inf, signed zeros, all-negative rows,
subnormals, NaN of either sign and Inf, unaligned and streamed gradients."""
import numpy as np
import pytest

import fastloss
from fastloss import _backend, _threads
from fastloss import classification as fc

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
LEVELS = _backend.simd_info()["simd_usable"] if fastloss.native_available() else []
pytestmark = pytest.mark.skipif(not fastloss.native_available(), reason="no native extension")
NEAR = 1e-5     # relative distance to a rounding midpoint within which either side is right
TINY = 1e-30    # below this (exps cut off at e^-87.3), an absolute error of TINY is allowed


def _ulp(a):
    """bfloat16's ulp at |a| (float64 array; the subnormal spacing below tiny)."""
    fi = ml_dtypes.finfo(BF16)
    a = np.maximum(np.abs(a), float(fi.tiny))
    return float(fi.eps) * 2.0 ** np.floor(np.log2(a))


def assert_rounded(got, ref, slack=None, what=""):
    """got (bfloat16) == ref (float64) correctly rounded, except: where ref lies within
    NEAR |ref| of a midpoint between two bfloat16 values (either neighbour), where
    |ref| < TINY (within TINY), and where ``slack`` (a mask) is set (within one ulp
    plus 1e-6 of max |ref|: a target class's p - 1 cancels in float32)."""
    got = np.asarray(got)
    assert got.dtype == BF16, (what, got.dtype)
    g = got.astype(np.float64).ravel()
    ref = np.asarray(ref, np.float64).ravel()
    assert np.array_equal(np.isnan(g), np.isnan(ref)), what
    with np.errstate(invalid="ignore"):
        want = ref.astype(BF16).astype(np.float64)
        a = np.abs(ref)
        u = _ulp(ref)
        near = np.abs(a - (np.floor(a / u) * u + u / 2)) <= NEAR * a
        ok = np.isnan(ref) | (g == want) | (near & (np.abs(g - ref) <= u))
        ok |= (a < TINY) & (np.abs(g - ref) <= TINY)
        if slack is not None:
            fin = ref[np.isfinite(ref)]
            big = np.max(np.abs(fin)) if fin.size else 0.0
            ok |= slack.ravel() & (np.abs(g - ref) <= u + 1e-6 * big)
    assert ok.all(), (what, g[~ok][:5], ref[~ok][:5], int((~ok).sum()))


def _check(x, y, nts=(1, 2), out=None, **kw):
    """x's bf16 gradient and loss against the float64 reference on the widened x;
    the same bits for every thread count in nts and for the loss alone."""
    before = _threads.get_num_threads()
    l64, g64 = fc.cross_entropy(x.astype(np.float64), y, return_grad=True, backend="numpy",
                                **kw)
    target = np.zeros(x.shape, bool)
    rows = np.flatnonzero(y >= 0)
    target[rows, y[rows]] = True
    first = None
    try:
        for nt in nts:
            _threads.set_num_threads(nt)
            loss, g = fc.cross_entropy(x, y, return_grad=True, out=out, **kw)
            only = fc.cross_entropy(x, y, **kw)           # the loss alone: the same sums
            assert np.asarray(only).tobytes() == np.asarray(loss).tobytes()
            got = (np.asarray(loss).tobytes(), g.tobytes())
            if first is None:
                first = got
                assert_rounded(g, g64, target, f"gradient, threads {nt}")
                assert_rounded(np.asarray(loss), l64, None, f"loss, threads {nt}")
            else:
                assert got == first, f"threads {nt}"
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
def test_rows_are_correctly_rounded(level, C, scale):
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


@pytest.mark.parametrize("N", [1, 3, 7])
def test_split_schedule_gives_the_row_bits(level, N):
    """Few long rows: with two threads or more the split schedule's (row, chunk) items
    (_ce_bf16_item), with one the rows: the same bits (the same exps and sums)."""
    rng = np.random.default_rng(N)
    C = 3 * 8192 + 45
    x = (rng.normal(size=(N, C)) * 4).astype(BF16)
    x[0, 8192:16384] = -np.inf                      # a chunk of -inf
    if N > 1:
        x[1, 20000] = np.nan                        # a NaN row
    if N > 3:
        x[3, 9000] = 88.0                           # m + max|z| > 86: the guarded exp
        x[4, :] = 0.0                               # ties, signed zeros
        x[4, ::3] = -0.0
    y = rng.integers(0, C, N)
    y[0] = 16384 + 17 if N > 1 else 5           # (not in the -inf chunk)
    if N > 2:
        y[2] = -100
    w = rng.uniform(0.5, 2.0, C).astype(np.float32)
    _check(x, y, nts=(1, 2, 3))
    _check(x, y, nts=(1, 2), weight=w, z_loss=1e-3, reduction="none")


def test_row_exp(level):
    """The rows' exp (fl_bf16_exp16, through the module's bf16_row_exp): relative error
    at most 3.2e-6 on [-87.3, 0], exp(+-0) = 1, x < -87.3 and -inf give 0, NaN stays
    NaN; the tame variant gives the same bits on [-86, 0]; avx2 and avx512 agree."""
    rng = np.random.default_rng(11)
    x = np.concatenate([-np.linspace(0, 87.3, 1 << 21, dtype=np.float32),
                        -rng.exponential(3.0, 1 << 18).astype(np.float32),
                        -np.float32(2.0) ** -np.arange(0, 149, dtype=np.float32),
                        np.float32([0.0, -0.0, -86.0, -87.29, -87.31, -88.0, -104.0,
                                    -np.inf, np.nan, -1e-45])]).astype(np.float32)
    x = np.concatenate([x, np.zeros((-len(x)) % 16, np.float32)])
    mod = _backend.load_level(level)
    out = np.empty_like(x)
    if not mod.bf16_row_exp(x, out, False):
        assert level == "baseline"
        return
    ref = np.exp(x.astype(np.float64))
    live = x >= -87.3
    assert np.max(np.abs(out[live] / ref[live] - 1)) <= 3.2e-6
    assert np.all(out[(x < -87.3) | np.isneginf(x)] == 0)
    assert np.isnan(out[np.isnan(x)]).all()
    assert np.all(out[x == 0] == 1.0)
    tame = (x >= -86) & (x <= 0)
    xt = np.concatenate([x[tame], np.zeros((-tame.sum()) % 16, np.float32)])
    ot = np.empty_like(xt)
    assert mod.bf16_row_exp(xt, ot, True)
    np.testing.assert_array_equal(ot[:tame.sum()].view(np.uint32), out[tame].view(np.uint32))
    if {"avx2", "avx512"} <= set(LEVELS):
        other = _backend.load_level("avx512" if level == "avx2" else "avx2")
        o2 = np.empty_like(x)
        assert other.bf16_row_exp(x, o2, False)
        np.testing.assert_array_equal(o2.view(np.uint32), out.view(np.uint32))
    with pytest.raises(ValueError, match="multiple of 16"):
        mod.bf16_row_exp(x[:15], out[:15], False)

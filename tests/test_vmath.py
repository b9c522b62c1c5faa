"""Accuracy and special values of the vectorised math in fastloss/native/_vmath.h.

The kernels are reached through the test hook ``vmath_apply(name, x, out)`` of the level
module in use (``_backend.kernels``; FASTLOSS_SIMD picks another level).
References are computed one precision up: float64 NumPy for float32, np.longdouble
(x87 80-bit on x86) for float64. Errors are measured in units in the last place of
the correctly rounded result (so subnormal results are judged on the subnormal grid).

The rounding tricks these kernels rely on (``(x*log2e + S) - S`` to round to an
integer, ``x - ((1 + x) - 1)`` for the rounding error of ``1 + x``) are folded away by
``-fassociative-math`` / ``-ffast-math``; the sweeps, the reduction-boundary test and
the log1p-correction test then fail by orders of magnitude (see the test docstrings),
and ``-ffinite-math-only`` breaks the special-value tests. The header also refuses to
compile under those flags (``test_header_refuses_unsafe_math``).

Vectorisation is checked outside the test suite (compiler-dependent): compile
fastloss/_kernels_<level>.c with the level's flags plus -fopt-info-vec-optimized
(tools/vec_report.py --level avx2) and look for
"loop vectorized using 32 byte vectors" at the native/_vmath.pxi / native/elementwise.pxi loops.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

from fastloss import _backend

K = _backend.kernels
pytestmark = pytest.mark.skipif(K is None, reason="native extension not built")

FUNCS = ("exp", "expm1", "log", "log1p", "tanh", "sigmoid")
DTYPES = (np.float32, np.float64)
# Measured maxima over dense sweeps (float32 / float64, in ulp), AVX-512 build with
# FMA [baseline SSE2 build without FMA]: exp 1.06 / 0.97 [1.01 / 0.94], expm1 1.58 /
# 1.80 [1.73 / 1.93], log 0.75 / 0.76 [0.82 / 0.87], log1p 0.75 / 0.75 [0.82 / 0.82],
# tanh 2.28 / 2.46 [2.28 / 2.45], sigmoid 2.58 / 2.68 [2.58 / 2.68].
MAX_ULP = 3.0
# relative error bound for normal results
MAX_REL = {np.float32: 3e-7, np.float64: 1e-15}
LN2 = 0.6931471805599453

HAVE_EXTENDED = np.finfo(np.longdouble).nmant >= 63


def _need_reference(dtype):
    if dtype == np.float64 and not HAVE_EXTENDED:
        pytest.skip("np.longdouble is not extended precision on this platform")


def vm(name, x):
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    K.vmath_apply(name, x, out)
    return out


def reference(name, x):
    hp = np.float64 if x.dtype == np.float32 else np.longdouble
    with np.errstate(all="ignore"):
        xh = x.astype(hp)
        if name == "sigmoid":
            e = np.exp(-np.abs(xh))
            return np.where(xh >= 0, 1 / (1 + e), e / (1 + e))
        if name == "exp_nonpos":
            return np.exp(xh)
        if name == "log1p_01":
            return np.log1p(xh)
        return getattr(np, name)(xh)


def check(name, x, max_ulp=MAX_ULP):
    """Compare vm(name, x) with the reference: exact for non-finite results,
    max_ulp otherwise, and MAX_REL relative error for normal results."""
    x = np.ascontiguousarray(x)
    dtype = x.dtype.type
    y = vm(name, x)
    r = reference(name, x)
    with np.errstate(over="ignore"):
        rd = r.astype(dtype)
    nonfin = ~np.isfinite(rd)
    np.testing.assert_array_equal(y[nonfin], rd[nonfin], err_msg=f"{name} non-finite results")
    fin = ~nonfin
    xf, yf, rf, rdf = x[fin], y[fin], r[fin], rd[fin]
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(yf.astype(r.dtype) - rf) / np.spacing(np.abs(rdf)).astype(r.dtype)
    err = np.where(np.isnan(err), np.inf, err)
    if err.size:
        i = int(np.argmax(err))
        assert err[i] <= max_ulp, (
            f"{name}({xf[i]!r}) = {yf[i]!r}, expected {rdf[i]!r}: {float(err[i]):.2f} ulp")
        normal = np.abs(rdf) >= np.finfo(dtype).tiny
        rel = np.abs(yf[normal].astype(r.dtype) / rf[normal] - 1)
        if rel.size:
            j = int(np.argmax(rel))
            assert rel[j] <= MAX_REL[dtype], (
                f"{name}({xf[normal][j]!r}): relative error {float(rel[j]):.3g}")
    return y


def _lin(lo, hi, n, dtype):
    return np.linspace(lo, hi, n).astype(dtype)


def _mags(dtype, n):
    """n magnitudes spread log-uniformly from the smallest subnormal to the max."""
    fi = np.finfo(dtype)
    lo, hi = np.log2(float(fi.smallest_subnormal)), np.log2(float(fi.max))
    with np.errstate(over="ignore"):
        return np.minimum(np.exp2(np.linspace(lo, hi, n)), float(fi.max)).astype(dtype)


def sweep(name, dtype, n=100_000):
    """Dense sweep over the function's whole interesting range and its edges."""
    f32 = dtype == np.float32
    m = _mags(dtype, n)
    parts = [m, -m, _lin(-1, 1, n, dtype)]
    if name == "exp":
        parts.append(_lin(-105, 90, n, dtype) if f32 else _lin(-750, 712, n, dtype))
        # subnormal results
        parts.append(_lin(-104, -87, n, dtype) if f32 else _lin(-746, -707, n, dtype))
    elif name == "expm1":
        parts.append(_lin(-30, 90, n, dtype) if f32 else _lin(-50, 712, n, dtype))
    elif name in ("log", "log1p"):
        parts += [_lin(0.5, 2, n, dtype), _lin(-1, 3, n, dtype)]
        # subnormal inputs
        tiny = np.finfo(dtype).tiny
        parts.append(np.linspace(0, float(tiny) * 4, n).astype(dtype))
    elif name == "tanh":
        parts += [_lin(-25, 25, n, dtype), _lin(-0.01, 0.01, n, dtype)]
    elif name == "sigmoid":
        parts.append(_lin(-120, 120, n, dtype) if f32 else _lin(-800, 800, n, dtype))
    return np.concatenate(parts)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", FUNCS)
def test_accuracy_sweep(name, dtype):
    _need_reference(dtype)
    check(name, sweep(name, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", FUNCS)
def test_random_bits(name, dtype, rng):
    """Random bit patterns: every exponent, sign, NaN and Inf."""
    _need_reference(dtype)
    it = np.uint32 if dtype == np.float32 else np.uint64
    bits = rng.integers(0, np.iinfo(it).max, 50_000, dtype=it, endpoint=True)
    check(name, bits.view(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["exp", "expm1"])
def test_reduction_boundaries(name, dtype):
    """x near k ln2 and (k + 1/2) ln2, where round(x / ln2) changes.

    The argument reduction computes k = (x log2e + S) - S with S = 1.5 * 2^p: the
    addition rounds to an integer. Under -fassociative-math GCC folds the two
    constants away, k is no longer an integer, r = x - k ln2 collapses to ~0 and the
    result becomes 2^round(x/ln2): off by up to 41% (millions of ulp), so this test
    (and every sweep) fails.
    """
    _need_reference(dtype)
    kmax = 127 if dtype == np.float32 else 1023
    k = np.arange(-60 if name == "expm1" else -kmax - 20, kmax + 1, dtype=np.float64)
    centres = np.concatenate([k * LN2, (k + 0.5) * LN2]).astype(dtype)
    xs = [centres]
    up, down = centres.copy(), centres.copy()
    for _ in range(4):
        up = np.nextafter(up, dtype(np.inf))
        down = np.nextafter(down, dtype(-np.inf))
        xs += [up, down]
    check(name, np.concatenate(xs))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_log1p_keeps_rounding_error_of_one_plus_x(dtype):
    """log1p(x) for x where 1 + x is inexact, down to x far below eps.

    The kernel adds c / u with c = x - ((1 + x) - 1), the exact rounding error of
    u = 1 + x. -fassociative-math folds c to 0: log1p(1e-9) in float32 would then be
    log(1) = 0 and log1p(3e-8) 5.96e-8 (100% off), so this test fails.
    """
    _need_reference(dtype)
    eps = float(np.finfo(dtype).eps)
    x = np.concatenate([np.geomspace(eps * 1e-6, 0.5, 5000),
                        -np.geomspace(eps * 1e-6, 0.5, 5000),
                        np.geomspace(1, 1e6, 2000)]).astype(dtype)
    y = check("log1p", x)
    small = np.abs(x) < eps / 4          # here 1 + x rounds to exactly 1
    np.testing.assert_array_equal(y[small], x[small])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_overflow_underflow_thresholds(dtype):
    """exp around log(max) and the subnormal/zero boundary; expm1 near the top."""
    _need_reference(dtype)
    fi = np.finfo(dtype)
    pts = []
    for c in (np.log(float(fi.max)), np.log(float(fi.tiny)),
              np.log(float(fi.smallest_subnormal)), np.log(float(fi.smallest_subnormal)) - LN2):
        x = np.full(41, c, dtype=dtype)
        for i in range(20):
            x[2 * i + 1:] = np.nextafter(x[2 * i + 1:], dtype(np.inf))
        x2 = np.full(41, c, dtype=dtype)
        for i in range(20):
            x2[2 * i + 1:] = np.nextafter(x2[2 * i + 1:], dtype(-np.inf))
        pts += [x, x2]
    x = np.concatenate(pts)
    y = check("exp", x)
    big = x > np.log(float(fi.max)) + 1e-3
    assert np.all(np.isposinf(y[big]))
    check("expm1", x[x > 0])
    check("sigmoid", -x)


NAN, INF = np.nan, np.inf


def _special_table(dtype):
    fi = np.finfo(dtype)
    sub, mx = fi.smallest_subnormal, fi.max
    return {
        "exp": [(NAN, NAN), (INF, INF), (-INF, 0.0), (0.0, 1.0), (-0.0, 1.0),
                (mx, INF), (-mx, 0.0), (sub, 1.0), (-sub, 1.0)],
        "expm1": [(NAN, NAN), (INF, INF), (-INF, -1.0), (0.0, 0.0), (-0.0, -0.0),
                  (sub, sub), (-sub, -sub), (mx, INF), (-mx, -1.0)],
        "log": [(NAN, NAN), (INF, INF), (-INF, NAN), (0.0, -INF), (-0.0, -INF),
                (-1.0, NAN), (-sub, NAN), (1.0, 0.0), (-mx, NAN)],
        "log1p": [(NAN, NAN), (INF, INF), (-INF, NAN), (-1.0, -INF), (-2.0, NAN),
                  (0.0, 0.0), (-0.0, -0.0), (sub, sub), (-sub, -sub), (-mx, NAN)],
        "tanh": [(NAN, NAN), (INF, 1.0), (-INF, -1.0), (0.0, 0.0), (-0.0, -0.0),
                 (sub, sub), (-sub, -sub), (mx, 1.0), (-mx, -1.0), (30.0, 1.0)],
        "sigmoid": [(NAN, NAN), (INF, 1.0), (-INF, 0.0), (0.0, 0.5), (-0.0, 0.5),
                    (mx, 1.0), (-mx, 0.0)],
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", FUNCS)
def test_special_values(name, dtype):
    table = _special_table(dtype)[name]
    x = np.array([a for a, _ in table], dtype=dtype)
    want = np.array([b for _, b in table], dtype=dtype)
    # repeat so the values go through the vector body as well as the scalar tail
    reps = 19
    y = vm(name, np.tile(x, reps)).reshape(reps, -1)
    for row in y:
        np.testing.assert_array_equal(row, want, err_msg=f"{name} {dtype.__name__}")
        # the sign of zero results, too
        z = want == 0
        np.testing.assert_array_equal(np.signbit(row[z]), np.signbit(want[z]),
                                      err_msg=f"{name}: sign of zero")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", FUNCS)
def test_nan_propagates_in_every_lane(name, dtype):
    """A NaN anywhere in a vector gives NaN there and leaves the other lanes alone."""
    x = np.linspace(0.1, 3, 64).astype(dtype)
    clean = vm(name, x)
    for pos in (0, 3, 7, 8, 15, 31, 63):
        xn = x.copy()
        xn[pos] = np.nan
        y = vm(name, xn)
        assert np.isnan(y[pos])
        np.testing.assert_array_equal(np.delete(y, pos), np.delete(clean, pos))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_apply_hook(dtype):
    x = np.linspace(-2, 2, 37).astype(dtype)
    y = vm("exp", x)
    assert y.dtype == dtype
    inplace = x.copy()
    K.vmath_apply("exp", inplace, inplace)
    np.testing.assert_array_equal(inplace, y)
    K.vmath_apply("log", x[:0].copy(), x[:0].copy())  # empty is fine
    with pytest.raises(ValueError, match="name"):
        K.vmath_apply("sin", x, np.empty_like(x))
    with pytest.raises(ValueError, match="elements"):
        K.vmath_apply("exp", x, np.empty(3, dtype))


def _compiler():
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


@pytest.mark.parametrize("flags", [["-ffast-math"],
                                   ["-fassociative-math", "-fno-signed-zeros",
                                    "-fno-trapping-math"],
                                   ["-ffinite-math-only"]],
                         ids=["fast-math", "associative-math", "finite-math-only"])
def test_header_refuses_unsafe_math(tmp_path, flags):
    """_vmath.h stops the build under the flags that would break it silently."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler")
    header_dir = os.path.join(os.path.dirname(K.__file__), "native")
    if not os.path.exists(os.path.join(header_dir, "_vmath.h")):
        pytest.skip("_vmath.h not installed next to the extension")
    src = tmp_path / "t.c"
    src.write_text('#include "_vmath.h"\nfloat f(float x) { return fl_expf(x); }\n')
    ok = subprocess.run([cc, "-O2", "-c", str(src), "-o", str(tmp_path / "t.o"),
                         "-I", header_dir], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([cc, "-O2", *flags, "-c", str(src), "-o", str(tmp_path / "t2.o"),
                          "-I", header_dir], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "must not be compiled" in bad.stderr


# --- restricted-domain helpers of bce-with-logits (float32) -------------------------

def test_exp_nonpos_float32():
    """exp for x <= 0: subnormal results rounded once, -inf -> 0, NaN -> NaN."""
    x = np.concatenate([_lin(-110, 0, 400_000, np.float32), _lin(-104, -87, 100_000, np.float32),
                        -_mags(np.float32, 50_000), np.array([0.0, -0.0, -np.inf], np.float32)])
    y = check("exp_nonpos", x, max_ulp=1.5)
    assert y[-1] == 0 and y[-3] == 1 and y[-2] == 1
    assert np.isnan(vm("exp_nonpos", np.array([np.nan], np.float32)))[0]


def test_log1p_01_float32():
    """log1p on [0, 1] as e Q(e): <= 2 ulp (1.53 measured), subnormal e exact, NaN -> NaN."""
    x = np.concatenate([_lin(0, 1, 400_000, np.float32), _mags(np.float32, 100_000)[:60_000],
                        np.random.default_rng(1).random(100_000).astype(np.float32)])
    x = x[(x >= 0) & (x <= 1)]
    check("log1p_01", x, max_ulp=2.0)
    assert np.isnan(vm("log1p_01", np.array([np.nan], np.float32)))[0]

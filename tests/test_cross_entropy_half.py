"""Softmax, log_softmax and the cross-entropy family on bfloat16 and float16 inputs.

Both backends against the float64 reference computed on the same 16-bit inputs
(widened exactly): losses within one 16-bit ulp of the correctly rounded value
(float32 losses within 1e-5 relative), gradients and softmax within one 16-bit
ulp; the native 16-bit kernel equal bit for bit to the float32 kernel on the
widened rows, rounded (but the bfloat16 rows of the avx2 / avx512 levels, whose exp
has 16-bit precision: tests/test_cross_entropy_bf16_rows.py); any thread count,
every instruction-set level; NaN/Inf,
float16 overflow, bad input; torch parity in bfloat16, outside and inside
torch.autocast("cpu").
"""
import numpy as np
import pytest

import fastloss
from fastloss import _backend, _threads
from fastloss import classification as fc

ml_dtypes = pytest.importorskip("ml_dtypes")

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALF = [BF16, F16]
BACKENDS = ["numpy"] + (["native"] if fastloss.native_available() else [])
native_only = pytest.mark.skipif(not fastloss.native_available(), reason="no native extension")


def _ulp(ref, dtype):
    """One ulp of ``dtype`` at the (float64) values ``ref`` (subnormal spacing below tiny)."""
    fi = ml_dtypes.finfo(dtype)
    a = np.maximum(np.abs(np.asarray(ref, np.float64)), float(fi.tiny))
    return float(fi.eps) * 2.0 ** np.floor(np.log2(a))


def assert_within_ulp(got, ref, dtype, what=""):
    """One 16-bit ulp of the float64 value; plus the float32 computation's absolute error
    (1e-6 of the largest |ref|) where a value is a difference of larger terms (a label-
    smoothed gradient p K - eps/C cancels to ~1e-13 where p K ~ eps/C ~ 1e-6: no
    float32 computation gets such a value to 16-bit relative precision)."""
    got = np.asarray(got)
    assert got.dtype == dtype, (what, got.dtype)
    g = got.astype(np.float64)
    ref = np.asarray(ref, np.float64)
    same_nan = np.isnan(g) == np.isnan(ref)
    assert same_nan.all(), what
    fin = ref[np.isfinite(ref)]
    f32 = 1e-6 * np.max(np.abs(fin)) if fin.size else 0.0
    ok = np.isnan(ref) | (g == ref) | (np.abs(g - ref) <= _ulp(ref, dtype) + f32)
    assert ok.all(), (what, g[~ok][:5], ref[~ok][:5])


def _data(dtype, shape, C_axis=1, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * scale).astype(dtype)
    C = shape[C_axis] if len(shape) > 1 else shape[0]
    lshape = shape[:C_axis] + shape[C_axis + 1:] if len(shape) > 1 else ()
    y = rng.integers(0, C, lshape).astype(np.int64)
    return x, y


CE_OPTIONS = [
    {},
    {"weight": "w"},
    {"ignore_index": 1},
    {"label_smoothing": 0.1},
    {"label_smoothing": 0.2, "weight": "w"},
    {"z_loss": 1e-3},
    {"softcap": 5.0},
    {"probs": True},
    {"probs": True, "weight": "w", "label_smoothing": 0.1},
]
SHAPES = [(13, 7), (9, 5, 3), (6,), (40, 300)]


def _ce_args(opts, x, y, dtype):
    opts = dict(opts)
    C = x.shape[1] if x.ndim > 1 else x.shape[0]
    rng = np.random.default_rng(5)
    if opts.pop("probs", False):
        t = rng.random(x.shape)
        t = (t / t.sum(axis=1 if x.ndim > 1 else 0, keepdims=True)).astype(dtype)
        y = t
    if opts.get("weight") == "w":
        opts["weight"] = rng.uniform(0.5, 2.0, C).astype(np.float32)
    if opts.get("ignore_index") == 1 and y.ndim and y.dtype.kind == "i":
        y = y.copy()
        y.reshape(-1)[::3] = 1
    return y, opts


def _reference(x, y, opts, **kw):
    """float64 reference on the widened 16-bit inputs (and float32 weights)."""
    y64 = y.astype(np.float64) if y.dtype.kind != "i" else y
    o = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}
    return fc.cross_entropy(x.astype(np.float64), y64, return_grad=True, backend="numpy",
                            **o, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("opts", CE_OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_against_float64(backend, dtype, shape, opts, reduction):
    _check_ce(backend, dtype, shape, opts, reduction)


def _check_ce(backend, dtype, shape, opts, reduction):
    x, y = _data(dtype, shape)
    y, o = _ce_args(opts, x, y, dtype)
    loss, grad = fc.cross_entropy(x, y, reduction=reduction, return_grad=True,
                                  backend=backend, **o)
    l64, g64 = _reference(x, y, o, reduction=reduction)
    assert_within_ulp(loss, l64, dtype, "loss")
    assert grad.shape == x.shape
    assert_within_ulp(grad, g64, dtype, "grad")


@native_only
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("opts", CE_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_long_rows(dtype, opts):
    """Rows of several chunks, few of them (2 threads: the split schedule), and more."""
    before = _threads.get_num_threads()
    try:
        _threads.set_num_threads(2)
        _check_ce("native", dtype, (5, 40000), opts, "mean")
        _check_ce("native", dtype, (9, 17000), opts, "none")
    finally:
        _threads.set_num_threads(before)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_grad_output_and_loss_only(backend, dtype):
    x, y = _data(dtype, (11, 6))
    go = np.random.default_rng(3).random(11).astype(np.float32)
    loss, grad = fc.cross_entropy(x, y, reduction="none", return_grad=True, grad_output=go,
                                  backend=backend)
    l64, g64 = _reference(x, y, {}, reduction="none", grad_output=go.astype(np.float64))
    assert_within_ulp(loss, l64, dtype)
    assert_within_ulp(grad, g64, dtype)
    only = fc.cross_entropy(x, y, backend=backend)
    assert only.dtype == dtype
    assert_within_ulp(only, _reference(x, y, {})[0], dtype)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_internal_float32_loss(dtype):
    """The torch adapter's autocast path: a float32 loss from the 16-bit logits."""
    x, y = _data(dtype, (12, 9))
    for red in ("mean", "none"):
        loss, grad = fc._cross_entropy(x, y, reduction=red, return_grad=True,
                                       loss_dtype=np.dtype(np.float32))
        l64, g64 = _reference(x, y, {}, reduction=red)
        assert np.asarray(loss).dtype == np.float32 and grad.dtype == dtype
        np.testing.assert_allclose(np.asarray(loss, np.float64), l64, rtol=1e-5)
        nl = fc._nll_loss(x, y, reduction=red, loss_dtype=np.dtype(np.float32))
        assert np.asarray(nl).dtype == np.float32


@native_only
def _bf16_rows(dtype, opts, shape):
    """This level computes these bfloat16 logits by _bf16_rows.h (index targets, no
    smoothing or soft-cap, 32 classes or more)."""
    return (fastloss.native_available() and dtype == BF16 and not opts and shape[-1] >= 32
            and bool(getattr(_backend.kernels, "CE_BF16_ROWS", False)))


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape", [(300, 10), (64, 1000), (3, 20000), (9, 20000), (2, 9000)],
                         ids=str)
@pytest.mark.parametrize("opts", [{}, {"softcap": 4.0, "label_smoothing": 0.1}, {"probs": True}],
                         ids=["plain", "cap+ls", "probs"])
def test_native_is_float32_kernel_rounded_any_threads(dtype, shape, opts):
    """The 16-bit kernel = the float32 kernel on the widened rows, rounded, for any
    thread count; but the bfloat16 rows of the avx2 / avx512 levels (_bf16_rows.h, plain
    index targets, C >= 32), whose exp has 16-bit precision: within one ulp of the
    float64 values there (tests/test_cross_entropy_bf16_rows.py: correctly rounded but
    near midpoints), the same bits for any thread count."""
    x, y = _data(dtype, shape, seed=2)
    if _bf16_rows(dtype, opts, shape):
        results = []
        before = _threads.get_num_threads()
        try:
            for nt in (1, 2, 3):
                _threads.set_num_threads(nt)
                results.append(fc.cross_entropy(x, y, reduction="sum", return_grad=True,
                                                backend="native"))
        finally:
            _threads.set_num_threads(before)
        l64, g64 = _reference(x, y, {}, reduction="sum")
        assert_within_ulp(results[0][0], l64, dtype, "loss")
        assert_within_ulp(results[0][1], g64, dtype, "gradient")
        for loss, grad in results[1:]:
            assert loss.tobytes() == results[0][0].tobytes()
            assert grad.tobytes() == results[0][1].tobytes()
        return
    y, o = _ce_args(opts, x, y, dtype)
    y32 = y.astype(np.float32) if y.dtype.kind == "f" else y
    before = _threads.get_num_threads()
    try:
        _threads.set_num_threads(1)
        l32, g32 = fc.cross_entropy(x.astype(np.float32), y32, reduction="sum",
                                    return_grad=True, backend="native", **o)
        results = []
        for nt in (1, 2, 3):
            _threads.set_num_threads(nt)
            results.append(fc.cross_entropy(x, y, reduction="sum", return_grad=True,
                                            backend="native", **o))
    finally:
        _threads.set_num_threads(before)
    for loss, grad in results:
        assert loss == np.asarray(l32).astype(np.float64).astype(dtype) or \
            abs(float(loss) - float(l32)) <= _ulp(float(l32), dtype)
        np.testing.assert_array_equal(grad.view(np.uint16), g32.astype(dtype).view(np.uint16))
        assert loss.tobytes() == results[0][0].tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", [((17, 33), -1), ((4, 6, 5), 1), ((3, 20000), -1)],
                         ids=str)
def test_softmax_family(backend, dtype, log, shape, axis):
    x, _ = _data(dtype, shape)
    f = fc.log_softmax if log else fc.softmax
    y = f(x, axis=axis, backend=backend)
    y64 = f(x.astype(np.float64), axis=axis, backend="numpy")
    assert_within_ulp(y, y64, dtype, "forward")
    g = np.random.default_rng(4).normal(size=shape).astype(dtype)
    b = fc.log_softmax_backward if log else fc.softmax_backward
    gx = b(y, g, axis=axis, backend=backend)
    gx64 = b(y.astype(np.float64), g.astype(np.float64), axis=axis, backend="numpy")
    assert_within_ulp(gx, gx64, dtype, "backward")
    out = x.copy()
    assert f(out, axis=axis, out=out, backend=backend) is out
    np.testing.assert_array_equal(out.view(np.uint16), y.view(np.uint16))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_nll_margin_categorical(backend, dtype):
    x, y = _data(dtype, (10, 6))
    w = np.linspace(0.5, 2, 6).astype(np.float32)
    for red in ("mean", "sum", "none"):
        loss, g = fc.nll_loss(x, y, weight=w, ignore_index=2, reduction=red, return_grad=True,
                              backend=backend)
        l64, g64 = fc.nll_loss(x.astype(np.float64), y, weight=w.astype(np.float64),
                               ignore_index=2, reduction=red, return_grad=True)
        assert_within_ulp(loss, l64, dtype, "nll")
        assert_within_ulp(g, g64, dtype, "nll grad")
        loss, g = fc.multi_margin(x, y, reduction=red, return_grad=True, backend=backend)
        l64, g64 = fc.multi_margin(x.astype(np.float64), y, reduction=red, return_grad=True)
        assert_within_ulp(loss, l64, dtype, "margin")
        assert_within_ulp(g, g64, dtype, "margin grad")
    p = (np.random.default_rng(1).random((10, 6)) * 0.9 + 0.05).astype(dtype)
    loss, g = fc.categorical_cross_entropy(p, y, return_grad=True, backend=backend)
    l64, g64 = fc.categorical_cross_entropy(p.astype(np.float64), y, return_grad=True)
    assert_within_ulp(loss, l64, dtype, "categorical")
    assert_within_ulp(g, g64, dtype, "categorical grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_nan_inf_rows(backend, dtype):
    x, y = _data(dtype, (4, 6))
    x[1, 2] = np.nan
    x[2, :] = -np.inf
    x[3, 0] = -np.inf
    y[3] = 1
    loss, g = fc.cross_entropy(x, y, reduction="none", return_grad=True, backend=backend)
    assert np.isnan(loss[1].astype(np.float32)) and np.isnan(g[1].astype(np.float32)).all()
    assert np.isnan(loss[2].astype(np.float32))
    assert np.isfinite(loss[[0, 3]].astype(np.float32)).all()
    assert g[3, 0] == 0
    s = fc.softmax(x, backend=backend).astype(np.float32)
    assert np.isnan(s[1]).all() and np.isnan(s[2]).all() and s[3, 0] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_overflow_becomes_inf(backend):
    x = np.array([[60000.0, -60000.0], [-60000.0, 60000.0]], np.float16)
    y = np.array([1, 0])
    assert fc.cross_entropy(x, y, reduction="sum", backend=backend) == np.inf
    loss = fc.cross_entropy(x, y, reduction="none", backend=backend)
    assert loss.dtype == F16 and np.isinf(loss).all()
    ls = fc.log_softmax(x, backend=backend)
    assert ls.dtype == F16 and np.isinf(ls[0, 1]) and ls[0, 0] == 0


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_out_and_inplace(dtype):
    x, y = _data(dtype, (8, 5))
    loss, g = fc.cross_entropy(x, y, return_grad=True)
    out = np.empty_like(x)
    assert fc.cross_entropy(x, y, return_grad=True, out=out)[1] is out
    np.testing.assert_array_equal(out.view(np.uint16), g.view(np.uint16))
    xi = x.copy()
    li, gi = fc.cross_entropy(xi, y, return_grad=True, inplace=True)
    assert gi is xi and li == loss
    np.testing.assert_array_equal(xi.view(np.uint16), g.view(np.uint16))
    with pytest.raises(TypeError, match="out has dtype float32"):
        fc.cross_entropy(x, y, return_grad=True, out=np.empty(x.shape, np.float32))
    other = F16 if dtype == BF16 else BF16
    with pytest.raises(TypeError, match="out has dtype"):
        fc.cross_entropy(x, y, return_grad=True, out=np.empty(x.shape, other))
    with pytest.raises(TypeError, match="out has dtype"):
        fc.softmax(x, out=np.empty(x.shape, np.float32))
    buf = np.empty((9, 5), dtype)
    buf[:8] = x
    with pytest.raises(ValueError, match="overlaps"):
        fc.cross_entropy(buf[:8], y, return_grad=True, out=buf[1:])
    with pytest.raises(TypeError, match="class indices"):
        fc.cross_entropy(x, y.astype(dtype))


@native_only
@pytest.mark.parametrize("level", _backend.simd_info()["simd_usable"]
                         if fastloss.native_available() else [])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_every_level(level, dtype):
    before = _backend.simd_level
    try:
        _backend.set_simd_level(level)
        for shape in [(40, 7), (33, 1000), (3, 20000)]:
            x, y = _data(dtype, shape, seed=7)
            loss, g = fc.cross_entropy(x, y, return_grad=True, label_smoothing=0.1)
            l64, g64 = _reference(x, y, {"label_smoothing": 0.1})
            assert_within_ulp(loss, l64, dtype)
            assert_within_ulp(g, g64, dtype)
            assert_within_ulp(fc.softmax(x), fc.softmax(x.astype(np.float64)), dtype)
    finally:
        _backend.set_simd_level(before)


# --- torch ----------------------------------------------------------------------------

def _torch_case(kind):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(16, 10, generator=g) * 3).bfloat16()
    y = torch.randint(0, 10, (16,), generator=g)
    kw = {}
    if kind == "probs":
        y = torch.softmax(torch.randn(16, 10, generator=g), 1).bfloat16()
    elif kind == "weight":
        kw["weight"] = torch.rand(10, generator=g) + 0.5
    elif kind == "ignore":
        y[::4] = -100
    elif kind == "smoothing":
        kw["label_smoothing"] = 0.1
    return torch, x, y, kw


@pytest.mark.parametrize("kind", ["index", "probs", "weight", "ignore", "smoothing"])
@pytest.mark.parametrize("autocast", [False, True], ids=["plain", "autocast"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_cross_entropy_bf16(kind, autocast, reduction):
    torch, x, y, kw = _torch_case(kind)
    import fastloss.torch as FT
    F = torch.nn.functional
    if kind == "weight" and not autocast:
        kw["weight"] = kw["weight"].bfloat16()     # torch wants the input's dtype here
    results = []
    for fn in (F.cross_entropy, FT.cross_entropy):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = fn(xi, y, reduction=reduction, **kw)
        go = torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape)
        loss.backward(go.to(loss.dtype) if reduction == "none" else None)
        results.append((loss, xi.grad))
    (lt, gt), (lf, gf) = results
    want = torch.float32 if autocast else torch.bfloat16
    assert lt.dtype == lf.dtype == want and gf.dtype == gt.dtype == torch.bfloat16
    if autocast:   # both float32 from the same bf16 logits
        torch.testing.assert_close(lf, lt, rtol=1e-5, atol=1e-6)
    else:          # torch's bf16 kernels round intermediates: a few bf16 ulps
        torch.testing.assert_close(lf.float(), lt.float(), rtol=3e-2, atol=1e-2)
    torch.testing.assert_close(gf.float(), gt.float(), rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("autocast", [False, True], ids=["plain", "autocast"])
def test_torch_nll_loss_bf16(autocast):
    torch, x, y, _ = _torch_case("ignore")
    import fastloss.torch as FT
    lp = torch.log_softmax(x.float(), 1).bfloat16()
    results = []
    for fn in (torch.nn.functional.nll_loss, FT.nll_loss):
        xi = lp.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = fn(xi, y)
        loss.backward()
        results.append((loss, xi.grad))
    (lt, gt), (lf, gf) = results
    assert lt.dtype == lf.dtype and gf.dtype == gt.dtype == torch.bfloat16
    torch.testing.assert_close(lf.float(), lt.float(), rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(gf.float(), gt.float(), rtol=1e-2, atol=1e-3)


def test_torch_module_and_float16():
    torch, x, y, _ = _torch_case("index")
    import fastloss.torch as FT
    xi = x.half().requires_grad_()
    loss = FT.CrossEntropyLoss(label_smoothing=0.1)(xi, y)
    loss.backward()
    xt = x.half().requires_grad_()
    ref = torch.nn.functional.cross_entropy(xt, y, label_smoothing=0.1)
    ref.backward()
    assert loss.dtype == xi.grad.dtype == torch.float16
    torch.testing.assert_close(loss, ref, rtol=2e-3, atol=1e-3)
    torch.testing.assert_close(xi.grad, xt.grad, rtol=2e-3, atol=2e-4)


@native_only
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_tiny_gradients_round_exactly(dtype):
    """Exps near float32's underflow times small K: subnormal float32 gradients (the
    bf16 fast rounding instruction reads them as zero: the exact path takes them)."""
    C = 4000
    x = np.zeros((64, C), np.float32)
    x[:, 1:] = -np.linspace(80.0, 88.0, C - 1)
    x[5, 7] = np.nan        # a NaN row: NaN bits as the float32 -> 16-bit cast gives them
    x[6, 9] = -np.nan
    x = x.astype(dtype)
    y = np.zeros(64, np.int64)
    g32 = fc.cross_entropy(x.astype(np.float32), y, return_grad=True, grad_output=1e-3)[1]
    assert np.any((g32 != 0) & (np.abs(g32) < np.finfo(np.float32).tiny))
    g = fc.cross_entropy(x, y, return_grad=True, grad_output=1e-3)[1]
    np.testing.assert_array_equal(g.view(np.uint16), g32.astype(dtype).view(np.uint16))


@native_only
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("shape", [(300, 10), (64, 1000), (3, 20000)], ids=str)
def test_softmax_is_float32_kernel_rounded_any_threads(dtype, shape):
    x, _ = _data(dtype, shape, seed=4)
    g = np.random.default_rng(6).normal(size=shape).astype(dtype)
    before = _threads.get_num_threads()
    try:
        for log in (False, True):
            f = fc.log_softmax if log else fc.softmax
            b = fc.log_softmax_backward if log else fc.softmax_backward
            _threads.set_num_threads(1)
            y32 = f(x.astype(np.float32))
            gx32 = b(y32.astype(dtype).astype(np.float32), g.astype(np.float32))
            for nt in (1, 2, 3):
                _threads.set_num_threads(nt)
                y = f(x)
                np.testing.assert_array_equal(y.view(np.uint16), y32.astype(dtype).view(np.uint16))
                gx = b(y, g)
                np.testing.assert_array_equal(gx.view(np.uint16),
                                              gx32.astype(dtype).view(np.uint16))
    finally:
        _threads.set_num_threads(before)


@native_only
def test_large_gradient_streamed():
    """A gradient of more than 4M values is written with non-temporal stores (not at a
    64-byte boundary: the first values one by one); the same bits."""
    rng = np.random.default_rng(8)
    x = (rng.normal(size=(1030, 4099)) * 3).astype(BF16)
    y = rng.integers(0, 4099, 1030)
    y[::7] = -100
    loss, g = fc.cross_entropy(x, y, return_grad=True)
    if _bf16_rows(BF16, {}, x.shape):     # an exp of 16-bit precision: within one ulp
        l64, g64 = _reference(x, y, {})
        assert_within_ulp(loss, l64, BF16, "loss")
        assert_within_ulp(g, g64, BF16, "gradient")
        return
    l32, g32 = fc.cross_entropy(x.astype(np.float32), y, return_grad=True)
    np.testing.assert_array_equal(g.view(np.uint16), g32.astype(BF16).view(np.uint16))
    assert abs(float(loss) - float(l32)) <= _ulp(float(l32), BF16)

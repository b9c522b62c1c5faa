"""cross_entropy: torch parity for every option, NumPy reference, gradients, edge cases."""
import itertools
import tracemalloc

import numpy as np
import pytest

import fastloss
from fastloss import _reference_classification as ref
from fastloss.classification import cross_entropy

DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def _torch_ce(x, t, *, weight=None, **kw):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.set_num_threads(1)
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t)
    wt = None if weight is None else torch.tensor(weight)
    loss = F.cross_entropy(xt, tt, weight=wt, **kw)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


def _case(rng, N, C, dtype, ldtype, ignore):
    x = (rng.normal(size=(N, C)) * 3).astype(dtype)
    y = rng.integers(0, C, N).astype(ldtype)
    if ignore:
        y[::3] = -100
    w = rng.uniform(0.2, 2.0, C).astype(dtype)
    return x, y, w


@pytest.mark.parametrize("C", [7, 20000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_index_targets_match_torch(rng, backend, C, dtype):
    pytest.importorskip("torch")
    N = 6
    for ldtype, red, use_w, ignore, eps in itertools.product(
            [np.int32, np.int64], ["mean", "sum", "none"], [False, True], [False, True],
            [0.0, 0.15]):
        x, y, w = _case(rng, N, C, dtype, ldtype, ignore)
        w = w if use_w else None
        l, g = cross_entropy(x, y, weight=w, label_smoothing=eps, reduction=red,
                             return_grad=True, backend=backend)
        lt, gt = _torch_ce(x, y.astype(np.int64), weight=w, label_smoothing=eps, reduction=red)
        assert l.dtype == dtype and g.dtype == dtype and g.shape == x.shape
        assert np.shape(l) == np.shape(lt)
        np.testing.assert_allclose(l, lt, **_tol(dtype), err_msg=f"{ldtype} {red} {use_w} {ignore} {eps}")
        np.testing.assert_allclose(g, gt, **_tol(dtype), err_msg=f"{ldtype} {red} {use_w} {ignore} {eps}")
        # loss only gives the same loss
        l2 = cross_entropy(x, y, weight=w, label_smoothing=eps, reduction=red, backend=backend)
        np.testing.assert_array_equal(l2, l)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [5, 9000])
def test_probability_targets_match_torch(rng, backend, dtype, C):
    pytest.importorskip("torch")
    N = 5
    for red, use_w, eps in itertools.product(["mean", "sum", "none"], [False, True], [0.0, 0.3]):
        x = (rng.normal(size=(N, C)) * 2).astype(dtype)
        t = rng.dirichlet(np.ones(C), N).astype(dtype)
        t[0] = 0
        t[0, 1] = 1  # one-hot row
        w = rng.uniform(0.2, 2.0, C).astype(dtype) if use_w else None
        l, g = cross_entropy(x, t, weight=w, label_smoothing=eps, reduction=red,
                             return_grad=True, backend=backend)
        lt, gt = _torch_ce(x, t, weight=w, label_smoothing=eps, reduction=red)
        np.testing.assert_allclose(l, lt, **_tol(dtype))
        np.testing.assert_allclose(g, gt, **_tol(dtype))


@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_kdim_and_unbatched_match_torch(rng, backend, red):
    pytest.importorskip("torch")
    x = rng.normal(size=(3, 5, 4, 2))
    y = rng.integers(0, 5, (3, 4, 2))
    y[0, 1, 1] = -100
    w = rng.uniform(0.5, 2, 5)
    for kw in [{}, dict(weight=w, label_smoothing=0.1)]:
        l, g = cross_entropy(x, y, reduction=red, return_grad=True, backend=backend, **kw)
        lt, gt = _torch_ce(x, y, reduction=red, **kw)
        np.testing.assert_allclose(l, lt, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g, gt, rtol=1e-10, atol=1e-12)
    t = rng.dirichlet(np.ones(5), (3, 4, 2)).transpose(0, 3, 1, 2).copy()
    l, g = cross_entropy(x, t, reduction=red, return_grad=True, backend=backend)
    lt, gt = _torch_ce(x, t, reduction=red)
    np.testing.assert_allclose(l, lt, rtol=1e-10)
    np.testing.assert_allclose(g, gt, rtol=1e-10, atol=1e-12)
    # unbatched (C,) with a scalar index, and with a probability vector
    x1 = rng.normal(size=7)
    for t1 in (np.int64(3), rng.dirichlet(np.ones(7))):
        l, g = cross_entropy(x1, t1, reduction=red, return_grad=True, backend=backend,
                             label_smoothing=0.2)
        lt, gt = _torch_ce(x1, t1, reduction=red, label_smoothing=0.2)
        assert np.shape(l) == np.shape(lt) == ()
        np.testing.assert_allclose(l, lt, rtol=1e-10)
        np.testing.assert_allclose(g, gt, rtol=1e-10, atol=1e-12)


def _numgrad(f, x, h=1e-6):
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        lp = f(x)
        flat[i] = old - h
        lm = f(x)
        flat[i] = old
        gf[i] = (lp - lm) / (2 * h)
    return g


OPTION_SETS = [
    dict(),
    dict(weight=True, label_smoothing=0.2),
    dict(weight=True, z_loss=1e-2),
    dict(softcap=3.0, label_smoothing=0.1),
    dict(weight=True, label_smoothing=0.3, z_loss=0.05, softcap=2.5),
]


@pytest.mark.parametrize("opts", OPTION_SETS)
@pytest.mark.parametrize("soft", [False, True])
def test_gradient_finite_differences(rng, backend, opts, soft):
    N, C = 4, 6
    x = rng.normal(size=(N, C)) * 2
    if soft:
        t = rng.dirichlet(np.ones(C), N)
    else:
        t = rng.integers(0, C, N)
        t[1] = -100
    kw = dict(opts)
    if kw.pop("weight", False):
        kw["weight"] = rng.uniform(0.5, 2, C)
    for red in ("mean", "sum"):
        _, g = cross_entropy(x, t, reduction=red, return_grad=True, backend=backend, **kw)
        num = _numgrad(lambda z: float(cross_entropy(z, t, reduction=red, backend=backend, **kw)), x)
        np.testing.assert_allclose(g, num, atol=1e-7, rtol=1e-6)
    # 'none' with an upstream gradient
    go = rng.normal(size=N)
    _, g = cross_entropy(x, t, reduction="none", grad_output=go, return_grad=True,
                         backend=backend, **kw)
    num = _numgrad(lambda z: float(np.dot(cross_entropy(z, t, reduction="none", backend=backend,
                                                        **kw), go)), x)
    np.testing.assert_allclose(g, num, atol=1e-7, rtol=1e-6)
    # scalar upstream gradient scales the gradient
    _, g1 = cross_entropy(x, t, return_grad=True, backend=backend, **kw)
    _, g3 = cross_entropy(x, t, return_grad=True, backend=backend, grad_output=3.0, **kw)
    np.testing.assert_allclose(g3, 3 * g1, rtol=1e-12)


def test_zloss_softcap_match_torch_autograd(rng, backends):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    N, C = 8, 11
    x = rng.normal(size=(N, C)) * 4
    y = rng.integers(0, C, N)
    y[2] = -100
    for be in backends:
        l, g = cross_entropy(x, y, z_loss=0.1, softcap=5.0, label_smoothing=0.1,
                             return_grad=True, backend=be)
        xt = torch.tensor(x, requires_grad=True)
        zc = 5.0 * torch.tanh(xt / 5.0)
        yt = torch.tensor(y)
        keep = yt != -100
        lt = F.cross_entropy(zc, yt, label_smoothing=0.1) + 0.1 * (
            torch.logsumexp(zc, 1)[keep] ** 2).mean()
        lt.backward()
        np.testing.assert_allclose(l, lt.item(), rtol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), atol=1e-14, rtol=1e-10)


@pytest.mark.skipif(not fastloss.native_available(), reason="native backend missing")
@pytest.mark.parametrize("C", [10, 1000, 20000])
def test_native_float32_accuracy_vs_float64_reference(rng, C):
    N = 24 if C < 20000 else 6
    x64 = rng.normal(size=(N, C)) * 5
    y = rng.integers(0, C, N)
    w64 = rng.uniform(0.5, 2, C)
    for kw in [{}, dict(label_smoothing=0.1), dict(z_loss=1e-3, softcap=10.0)]:
        for red in ("mean", "sum"):
            l32, g32 = cross_entropy(x64.astype(np.float32), y, weight=w64.astype(np.float32),
                                     reduction=red, return_grad=True, backend="native", **kw)
            l64, g64 = cross_entropy(x64.astype(np.float32).astype(np.float64), y,
                                     weight=w64.astype(np.float32).astype(np.float64),
                                     reduction=red, return_grad=True, backend="numpy", **kw)
            assert abs(float(l32) - l64) <= 1e-6 * abs(l64)
            assert np.max(np.abs(g32 - g64)) <= 1e-6
    # 'none' and unreduced gradient: each row within 1e-6 relative
    l32, g32 = cross_entropy(x64.astype(np.float32), y, reduction="sum", return_grad=True,
                             backend="native")
    l64, g64 = cross_entropy(x64.astype(np.float32).astype(np.float64), y, reduction="sum",
                             return_grad=True, backend="numpy")
    assert np.max(np.abs(g32 - g64)) <= 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_native_matches_reference_all_options(rng, backend, dtype):
    N, C = 9, 13
    x = rng.normal(size=(N, C)).astype(dtype)
    y = rng.integers(0, C, N)
    y[4] = 7
    y[5] = 7
    t = rng.dirichlet(np.ones(C), N).astype(dtype)
    w = rng.uniform(0.5, 2, C).astype(dtype)
    for target, weight, eps, zl, cap, red in itertools.product(
            [y, t], [None, w], [0.0, 0.25], [0.0, 0.01], [None, 4.0], ["mean", "sum", "none"]):
        l, g = cross_entropy(x, target, weight=weight, label_smoothing=eps, z_loss=zl,
                             softcap=cap, ignore_index=7, reduction=red, return_grad=True,
                             backend=backend)
        x64 = x.astype(np.float64)
        l64, g64 = cross_entropy(x64, target if target is y else t.astype(np.float64),
                                 weight=None if weight is None else w.astype(np.float64),
                                 label_smoothing=eps, z_loss=zl, softcap=cap, ignore_index=7,
                                 reduction=red, return_grad=True, backend="numpy")
        np.testing.assert_allclose(l, l64, rtol=3e-6 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(g, g64, atol=1e-6 if dtype == np.float32 else 1e-13)


def test_large_logits_and_masked_classes(rng, backend):
    torch = pytest.importorskip("torch")
    N, C = 6, 20000   # 3 chunks per row, one of them fully masked in row 1
    x = rng.normal(size=(N, C)).astype(np.float32) * 1e4
    x[0, ::2] = -np.inf
    x[1, :16384] = -np.inf
    y = rng.integers(0, C, N)
    y[0] = 1
    y[1] = 16390
    l, g = cross_entropy(x, y, reduction="none", return_grad=True, backend=backend)
    lt, gt = _torch_ce(x, y, reduction="none")
    assert np.all(np.isfinite(l)) and np.all(np.isfinite(g))
    np.testing.assert_allclose(l, lt, rtol=1e-6)
    np.testing.assert_allclose(g, gt, atol=1e-6)
    assert np.all(g[0, ::2] == 0) and np.all(g[1, :16384] == 0)
    # target on a masked class: infinite loss, like torch
    y2 = y.copy()
    y2[0] = 0
    l2 = cross_entropy(x, y2, reduction="none", backend=backend)
    assert l2[0] == np.inf and np.all(np.isfinite(l2[1:]))


@pytest.mark.parametrize("C", [10, 20000])
def test_nan_inf_propagate_to_their_row(rng, backend, C):
    N = 5
    x = rng.normal(size=(N, C)).astype(np.float32)
    x[1, 3] = np.nan
    x[0, 0] = np.nan
    x[2, 4] = np.inf
    x[3, :] = -np.inf
    y = np.full(N, 2)
    l, g = cross_entropy(x, y, reduction="none", return_grad=True, backend=backend)
    assert np.isnan(l[0]) and np.isnan(l[1]) and np.isnan(l[2]) and np.isnan(l[3])
    assert np.isfinite(l[4])
    assert np.all(np.isnan(g[0:4])) and np.all(np.isfinite(g[4]))
    for r in range(4):   # the loss alone agrees
        assert np.isnan(cross_entropy(x[r:r + 1], y[r:r + 1], backend=backend))
    lm = cross_entropy(x, y, backend=backend)
    assert np.isnan(lm)


def test_all_ignored_gives_torch_result(rng, backend):
    x = rng.normal(size=(4, 5))
    y = np.full(4, -100)
    for eps in (0.0, 0.1):
        l, g = cross_entropy(x, y, label_smoothing=eps, return_grad=True, backend=backend)
        lt, gt = _torch_ce(x, y, label_smoothing=eps)
        assert np.isnan(l) and np.isnan(lt)
        np.testing.assert_array_equal(g, gt)
        assert cross_entropy(x, y, reduction="sum", backend=backend) == 0


def test_empty_batch(backend):
    x = np.zeros((0, 5), np.float32)
    y = np.zeros(0, np.int64)
    assert np.isnan(cross_entropy(x, y, backend=backend))
    l, g = cross_entropy(x, y, reduction="sum", return_grad=True, backend=backend)
    assert l == 0 and g.shape == (0, 5)


def test_out_and_inplace(rng, backend):
    x = rng.normal(size=(8, 30)).astype(np.float32)
    y = rng.integers(0, 30, 8)
    l, g = cross_entropy(x, y, return_grad=True, backend=backend, label_smoothing=0.1)
    out = np.empty_like(x)
    l2, g2 = cross_entropy(x, y, return_grad=True, out=out, backend=backend, label_smoothing=0.1)
    assert g2 is out and l2 == l
    np.testing.assert_array_equal(out, g)
    xi = x.copy()
    l3, g3 = cross_entropy(xi, y, return_grad=True, inplace=True, backend=backend,
                           label_smoothing=0.1)
    assert g3 is xi and l3 == l
    np.testing.assert_array_equal(xi, g)
    # K-dim inplace works too (through a transposed copy)
    xk = rng.normal(size=(2, 4, 3))
    yk = rng.integers(0, 4, (2, 3))
    lk, gk = cross_entropy(xk, yk, return_grad=True, backend=backend)
    xk2 = xk.copy()
    lk2, gk2 = cross_entropy(xk2, yk, return_grad=True, inplace=True, backend=backend)
    assert gk2 is xk2 and lk2 == lk
    np.testing.assert_array_equal(xk2, gk)


@pytest.mark.skipif(not fastloss.native_available(), reason="native backend missing")
def test_inplace_allocates_no_logits_sized_array(rng):
    N, C = 512, 2048   # 4 MiB of float32 logits
    x = rng.normal(size=(N, C)).astype(np.float32)
    y = rng.integers(0, C, N)
    cross_entropy(x.copy(), y, return_grad=True, inplace=True)  # warm up
    for inplace in (True, False):
        xi = x.copy()
        tracemalloc.start()
        tracemalloc.reset_peak()
        cross_entropy(xi, y, return_grad=True, inplace=inplace, label_smoothing=0.1)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if inplace:
            assert peak < 64 * N + 65536, peak          # O(N): row losses, labels
        else:
            assert peak >= x.nbytes                      # the gradient array


@pytest.mark.skipif(not fastloss.native_available(), reason="native backend missing")
@pytest.mark.parametrize("shape", [(3, 40000), (64, 700), (300, 20000), (5000, 10)])
def test_thread_count_does_not_change_results(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    y = rng.integers(0, shape[1], shape[0])
    t = rng.dirichlet(np.ones(shape[1]), shape[0]).astype(np.float32) if shape[0] < 100 or shape[1] < 32 else None
    results = []
    for nt in (1, 2, 3, 1):
        with fastloss.num_threads(nt):
            for target in ([y] if t is None else [y, t]):
                l, g = cross_entropy(x, target, return_grad=True, label_smoothing=0.1,
                                     z_loss=1e-3)
                results.append((nt, l, g))
    per = len(results) // 4
    for k in range(per):
        base = results[k]
        for j in range(1, 4):
            other = results[j * per + k]
            assert base[1] == other[1]
            np.testing.assert_array_equal(base[2], other[2])


def test_noncontiguous_and_byteswapped_inputs(rng, backend):
    x = rng.normal(size=(10, 12))
    y = rng.integers(0, 6, 10)
    xs = x[:, ::2]
    l, g = cross_entropy(xs, y, return_grad=True, backend=backend)
    l2, g2 = cross_entropy(np.ascontiguousarray(xs), y, return_grad=True, backend=backend)
    assert l == l2
    np.testing.assert_array_equal(g, g2)
    xb = np.ascontiguousarray(xs).astype(">f8")
    l3 = cross_entropy(xb, y.astype(">i8"), backend=backend)
    assert l3 == l


BAD = [
    (lambda x, y: cross_entropy(x, np.array([0, 1, 5, 2])), ValueError, r"class index 5 at position 2"),
    (lambda x, y: cross_entropy(x, np.array([0, -1, 1, 2])), ValueError, r"class index -1 at position 1"),
    (lambda x, y: cross_entropy(x, y.astype(np.float32)), TypeError, "floats"),
    (lambda x, y: cross_entropy(x, y.astype(bool)), TypeError, "class indices"),
    (lambda x, y: cross_entropy(x, np.ones((4, 4), np.float32)), ValueError, "shape"),
    (lambda x, y: cross_entropy(x, y[:3]), ValueError, "shape"),
    (lambda x, y: cross_entropy(x, y, weight=np.ones(4)), ValueError, "weight"),
    (lambda x, y: cross_entropy(x, y, weight=np.ones(5, complex)), TypeError, "weight"),
    (lambda x, y: cross_entropy(x, y, weight=np.ones((5, 1))), ValueError, "weight"),
    (lambda x, y: cross_entropy(x, y, label_smoothing=1.5), ValueError, "label_smoothing"),
    (lambda x, y: cross_entropy(x, y, label_smoothing=-0.1), ValueError, "label_smoothing"),
    (lambda x, y: cross_entropy(x, y, reduction="avg"), ValueError, "reduction"),
    (lambda x, y: cross_entropy(x.astype(int), y), TypeError, "logits"),
    (lambda x, y: cross_entropy(x, y, ignore_index=1.5), TypeError, "ignore_index"),
    (lambda x, y: cross_entropy(x, y, z_loss=-1.0), ValueError, "z_loss"),
    (lambda x, y: cross_entropy(x, y, softcap=0.0), ValueError, "softcap"),
    (lambda x, y: cross_entropy(x, y, inplace=True), ValueError, "return_grad"),
    (lambda x, y: cross_entropy(x, y, out=np.empty_like(x)), ValueError, "return_grad"),
    (lambda x, y: cross_entropy(x, y, return_grad=True, out=np.empty((4, 4))), ValueError, "out"),
    (lambda x, y: cross_entropy(x, y, return_grad=True, out=np.empty((4, 5), np.float32)), TypeError, "out"),
    (lambda x, y: cross_entropy(x[:, ::2], y % 2, return_grad=True, inplace=True), ValueError, "contiguous"),
    (lambda x, y: cross_entropy(x, y, reduction="mean", grad_output=np.ones(4), return_grad=True), ValueError, "grad_output"),
    (lambda x, y: cross_entropy(x, y, reduction="none", grad_output=np.ones(3), return_grad=True), ValueError, "grad_output"),
    (lambda x, y: cross_entropy(np.float64(1.0), 0), ValueError, "dimension"),
    (lambda x, y: cross_entropy(np.zeros((4, 0)), np.zeros(4, int)), ValueError, "classes"),
]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_input(rng, backend, i):
    fn, exc, match = BAD[i]
    x = rng.normal(size=(4, 5))
    y = np.array([0, 1, 4, 2])
    x0 = x.copy()
    with fastloss.num_threads(1):
        fastloss.set_backend(backend)
        try:
            with pytest.raises(exc, match=match):
                fn(x, y)
        finally:
            fastloss.set_backend(None)
    np.testing.assert_array_equal(x, x0)


def test_bad_label_leaves_inplace_logits_untouched(rng):
    x = rng.normal(size=(4, 5)).astype(np.float32)
    x0 = x.copy()
    with pytest.raises(ValueError, match=r"class index 9 at position 3"):
        cross_entropy(x, np.array([0, 1, 2, 9]), return_grad=True, inplace=True)
    np.testing.assert_array_equal(x, x0)
    with pytest.raises(ValueError, match=r"position \(1, 2\)"):
        cross_entropy(np.zeros((2, 3, 4)), np.array([[0, 1, 2, 0], [0, 1, 3, 0]]))


def test_reference_matches_seeds_style_formula(rng):
    # reference row loss without options is -log softmax[y]
    x = rng.normal(size=(5, 4))
    y = rng.integers(0, 4, 5)
    row, _, _ = ref.cross_entropy(x, y)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    np.testing.assert_allclose(row, -np.log(p[np.arange(5), y]), rtol=1e-13)


def test_kdim_none_with_grad_output_and_out(rng, backend):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(2, 4, 3, 5))
    y = rng.integers(0, 4, (2, 3, 5))
    y[1, 2, 3] = -100
    go = rng.normal(size=(2, 3, 5))
    out = np.empty_like(x)
    l, g = cross_entropy(x, y, reduction="none", grad_output=go, return_grad=True, out=out,
                         backend=backend, label_smoothing=0.05)
    assert g is out and l.shape == (2, 3, 5)
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(y), reduction="none",
                                           label_smoothing=0.05)
    lt.backward(torch.tensor(go))
    np.testing.assert_allclose(l, lt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("C", [10, 20000])
def test_inplace_soft_targets_and_options(rng, backend, C):
    x = rng.normal(size=(4, C)).astype(np.float32)
    t = rng.dirichlet(np.ones(C), 4).astype(np.float32)
    w = rng.uniform(0.5, 2, C).astype(np.float32)
    for target in (t, rng.integers(0, C, 4)):
        kw = dict(weight=w, label_smoothing=0.1, z_loss=1e-3, softcap=8.0, backend=backend)
        l, g = cross_entropy(x, target, return_grad=True, **kw)
        xi = x.copy()
        li, gi = cross_entropy(xi, target, return_grad=True, inplace=True, **kw)
        assert gi is xi and li == l
        np.testing.assert_array_equal(xi, g)

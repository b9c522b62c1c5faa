"""fastloss.linear_cross_entropy: parity with the composite cross_entropy(input @ W.T + b)
for every option, both backends, chunk sizes that do and do not divide N; bad input
raises before any work; memory stays at one chunk; the torch adapter and module."""
import numpy as np
import pytest

import fastloss
from fastloss import linear_cross_entropy as lce

BACKENDS = ["numpy"] + (["native"] if fastloss.native_available() else [])
N, D, V = 23, 6, 17


def _problem(seed=0, n=N, d=D, v=V, ignore=True):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, d))
    W = rng.standard_normal((v, d))
    b = rng.standard_normal(v)
    y = rng.integers(0, v, n)
    if ignore and n > 3:
        y[[1, n - 2]] = -100
    return h, W, b, y


def _composite(h, W, b, y, grad_output=None, **kw):
    Z = h @ W.T + (0 if b is None else b)
    loss, gz = fastloss.cross_entropy(Z, y, return_grad=True, grad_output=grad_output,
                                      backend="numpy", **kw)
    return loss, gz @ W, gz.T @ h, None if b is None else gz.sum(axis=0)


OPTIONS = [
    {},
    {"weight": "w"},
    {"label_smoothing": 0.2},
    {"z_loss": 1e-2},
    {"softcap": 2.5},
    {"weight": "w", "label_smoothing": 0.1, "z_loss": 3e-2, "softcap": 4.0},
    {"ignore_index": 3},
]


def _opts(opt, v=V):
    o = dict(opt)
    if o.get("weight") == "w":
        o["weight"] = np.linspace(0.5, 2.0, v)
    return o


def _close(got, want):
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("chunk_size", [None, 1, 5])  # N = 23: one chunk, divides, does not
def test_parity_with_composite(backend, reduction, opt, chunk_size):
    h, W, b, y = _problem()
    o = _opts(opt)
    y = np.where(y == -100, o.get("ignore_index", -100), y)
    got = lce(h, W, y, linear_bias=b, reduction=reduction, return_grad=True,
              chunk_size=chunk_size, backend=backend, **o)
    _close(got, _composite(h, W, b, y, reduction=reduction, **o))
    loss_only = lce(h, W, y, linear_bias=b, reduction=reduction, chunk_size=chunk_size,
                    backend=backend, **o)
    np.testing.assert_allclose(loss_only, got[0], rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block", [1, 4, 17])  # V = 17: class blocks that divide V and not
def test_weight_grad_class_blocks(backend, block, monkeypatch):
    import fastloss.linear_ce as mod

    monkeypatch.setattr(mod, "_BLOCK_BYTES", block * D * 8)
    h, W, b, y = _problem(11)
    o = _opts(OPTIONS[5])
    _close(lce(h, W, y, linear_bias=b, return_grad=True, chunk_size=4, backend=backend, **o),
           _composite(h, W, b, y, **o))


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_bias_probability_targets_and_unbatched(backend):
    h, W, _, y = _problem(1, ignore=False)
    _close(lce(h, W, y, return_grad=True, chunk_size=4, backend=backend),
           _composite(h, W, None, y))
    t = np.random.default_rng(2).dirichlet(np.ones(V), N)
    _close(lce(h, W, t, return_grad=True, chunk_size=7, backend=backend, label_smoothing=0.1),
           _composite(h, W, None, t, label_smoothing=0.1))
    got = lce(h[0], W, y[0], return_grad=True, reduction="none", backend=backend)
    want = _composite(h[:1], W, None, y[:1], reduction="none")
    assert np.shape(got[0]) == () and got[1].shape == (D,)
    _close((got[0], got[1], got[2]), (want[0][0], want[1][0], want[2]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_output(backend):
    h, W, b, y = _problem(3)
    go = np.random.default_rng(4).standard_normal(N)
    _close(lce(h, W, y, linear_bias=b, reduction="none", grad_output=go, return_grad=True,
               chunk_size=6, backend=backend),
           _composite(h, W, b, y, reduction="none", grad_output=go))
    _close(lce(h, W, y, linear_bias=b, grad_output=2.5, return_grad=True, chunk_size=6,
               backend=backend),
           _composite(h, W, b, y, grad_output=2.5))


def test_float32_matches_float64():
    h, W, b, y = _problem(5, n=64, d=16, v=300)
    got = lce(*(a.astype(np.float32) for a in (h, W)), y, linear_bias=b.astype(np.float32),
              return_grad=True, chunk_size=10)
    assert all(g.dtype == np.float32 for g in got[1:]) and got[0].dtype == np.float32
    _close_tol = dict(rtol=2e-4, atol=2e-6)
    for g, w in zip(got, _composite(h, W, b, y)):
        np.testing.assert_allclose(g, w, **_close_tol)


def test_all_ignored_mean_is_nan_with_zero_gradients():
    h, W, b, y = _problem(6)
    y[:] = -100
    loss, gi, gW, gb = lce(h, W, y, linear_bias=b, return_grad=True, chunk_size=4)
    assert np.isnan(loss)
    want = _composite(h, W, b, y)
    assert np.isnan(want[0])
    for g in (gi, gW, gb):
        assert not np.any(g)


def test_empty_batch():
    h, W, b, y = _problem(7)
    loss, gi, gW, gb = lce(h[:0], W, y[:0], linear_bias=b, reduction="sum", return_grad=True)
    assert loss == 0 and gi.shape == (0, D) and not np.any(gW) and not np.any(gb)


# --- bad input: a clear error naming the argument, before any work --------------------------

def _bad_cases():
    h, W, b, y = _problem(8)
    return [
        (dict(input=h[None]), ValueError, "input"),
        (dict(input=h.astype(np.int64)), TypeError, "input"),
        (dict(linear_weight=W[:, :-1]), ValueError, "linear_weight"),
        (dict(linear_weight=W[None]), ValueError, "linear_weight"),
        (dict(linear_weight=W.astype(np.float32)), TypeError, "linear_weight"),
        (dict(linear_weight=W[:0]), ValueError, "linear_weight"),
        (dict(linear_bias=b[:-1]), ValueError, "linear_bias"),
        (dict(linear_bias=b.astype(np.float32)), TypeError, "linear_bias"),
        (dict(target=np.where(y == -100, V, y)), ValueError, "target"),
        (dict(target=y[:-1]), ValueError, "target"),
        (dict(target=y.astype(np.float64)), ValueError, "target"),
        (dict(weight=np.ones(V + 1)), ValueError, "weight"),
        (dict(ignore_index=1.5), TypeError, "ignore_index"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
        (dict(z_loss=-1.0), ValueError, "z_loss"),
        (dict(softcap=0.0), ValueError, "softcap"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(chunk_size=2.0), TypeError, "chunk_size"),
        (dict(return_grad=1), TypeError, "return_grad"),
        (dict(grad_output=np.ones(N)), ValueError, "grad_output"),
        (dict(backend="gpu"), ValueError, "backend"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_input_raises_before_work(case, monkeypatch):
    kw, exc, name = _bad_cases()[case]
    h, W, b, y = _problem(8)
    args = dict(input=h, linear_weight=W, target=y, linear_bias=b, return_grad=True)
    args.update(kw)
    import fastloss.linear_ce as mod

    def no_work(*a, **k):
        raise AssertionError("work started before validation finished")
    monkeypatch.setattr(mod, "_run", no_work)
    with pytest.raises(exc, match=name):
        fastloss.linear_cross_entropy(**args)


# --- memory: one chunk, never N x V ------------------------------------------------------------

def test_peak_memory_is_one_chunk():
    import tracemalloc

    n, d, v, chunk = 512, 32, 4000, 32
    h, W, b, y = (a.astype(np.float32) if a.dtype.kind == "f" else a
                  for a in _problem(9, n=n, d=d, v=v))
    lce(h[:4], W, y[:4] % v, linear_bias=b, return_grad=True, chunk_size=chunk)  # warm
    tracemalloc.start()
    out = lce(h, W, y, linear_bias=b, return_grad=True, chunk_size=chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    returned = sum(g.nbytes for g in out[1:])
    logits = 4 * n * v
    assert peak - returned <= logits / 8, (peak - returned) / logits


# --- torch -------------------------------------------------------------------------------------

def _torch_problem(dtype):
    torch = pytest.importorskip("torch")
    h, W, b, y = (torch.from_numpy(a) for a in _problem(10, n=7, d=3, v=5))
    cast = [t.to(dtype).requires_grad_() for t in (h, W, b)]
    return torch, (*cast, y)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_gradcheck(reduction):
    torch = pytest.importorskip("torch")
    import fastloss.torch as ft

    _, (h, W, b, y) = _torch_problem(torch.float64)

    cw = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)

    def f(h, W, b):
        return ft.linear_cross_entropy(h, W, y, linear_bias=b, weight=cw, reduction=reduction,
                                       label_smoothing=0.1, z_loss=1e-2, softcap=3.0,
                                       chunk_size=3)
    assert torch.autograd.gradcheck(f, (h, W, b))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_matches_torch_linear_cross_entropy(reduction):
    torch = pytest.importorskip("torch")
    if not hasattr(torch.nn.functional, "linear_cross_entropy"):
        pytest.skip("torch without F.linear_cross_entropy")
    import fastloss.torch as ft

    _, (h, W, b, y) = _torch_problem(torch.float64)
    cw = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    kw = dict(linear_bias=b, weight=cw, reduction=reduction, label_smoothing=0.1)
    grads = []
    for fn in (ft.linear_cross_entropy, torch.nn.functional.linear_cross_entropy):
        for t in (h, W, b):
            t.grad = None
        loss = fn(h, W, y, **kw)
        loss.sum().backward() if reduction == "none" else (loss * 1.5).backward()
        grads.append((loss.detach(), h.grad, W.grad, b.grad))
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c)


def test_torch_module_swaps_in():
    torch = pytest.importorskip("torch")
    if not hasattr(torch.nn, "LinearCrossEntropyLoss"):
        pytest.skip("torch without nn.LinearCrossEntropyLoss")
    import fastloss.torch as ft

    ours = ft.LinearCrossEntropyLoss(3, 5, bias=True, dtype=torch.float64, ignore_index=4)
    theirs = torch.nn.LinearCrossEntropyLoss(3, 5, bias=True, dtype=torch.float64,
                                             ignore_index=4)
    theirs.load_state_dict(ours.state_dict())
    _, (h, _, _, y) = _torch_problem(torch.float64)
    y = y.clamp(min=0)
    a, c = ours(h, y), theirs(h, y)
    torch.testing.assert_close(a, c)
    a.backward()
    g = ours.linear.weight.grad.clone()
    c.backward()
    torch.testing.assert_close(g, theirs.linear.weight.grad)


def test_torch_bad_input_names_the_argument():
    torch = pytest.importorskip("torch")
    import fastloss.torch as ft

    _, (h, W, b, y) = _torch_problem(torch.float64)
    with pytest.raises(TypeError, match="linear_weight"):
        ft.linear_cross_entropy(h, W.float(), y)
    with pytest.raises(ValueError, match="weight"):
        ft.linear_cross_entropy(h, W, y, weight=torch.ones(5, dtype=torch.float64,
                                                           requires_grad=True))


# --- BLAS accumulation and lanes -----------------------------------------------------------------

def test_gemm_acc_layouts_and_fallback(monkeypatch):
    from fastloss import _blas

    rng = np.random.default_rng(12)
    for dt in (np.float32, np.float64):
        a, b = rng.standard_normal((9, 13)).astype(dt), rng.standard_normal((5, 13)).astype(dt)
        for A in (a[:7], a[:7, ::-1].copy()[:, ::-1]):
            for C in (rng.standard_normal((7, 5)).astype(dt),
                      rng.standard_normal((5, 7)).astype(dt).T):
                want = C + A @ b.T
                got = _blas.gemm_acc(A, b.T, C.copy(order="K"))
                np.testing.assert_allclose(got, want, rtol=1e-5)
    monkeypatch.setattr(_blas, "_lib", False)  # NumPy's BLAS not found: matmul + add
    C = np.ones((3, 2))
    np.testing.assert_array_equal(_blas.gemm_acc(np.eye(3), np.full((3, 2), 2.0), C), 3.0)


@pytest.mark.parametrize("lanes", [True, False])
def test_bits_do_not_depend_on_threads(lanes, monkeypatch):
    """Lanes split by fixed units (class blocks, feature halves): any thread count
    gives the same bits; without lanes (or without NumPy's BLAS) too."""
    import fastloss.linear_ce as mod

    monkeypatch.setattr(mod, "_LANE_MIN_FLOPS", 0 if lanes else 1 << 62)
    monkeypatch.setattr(mod, "_BLOCK_BYTES", 40 * 130 * 4)
    for dt in (np.float32, np.float64):
        h, W, b, y = _problem(13, n=101, d=130, v=157)
        h, W, b = (a.astype(dt) for a in (h, W, b))
        outs = []
        for t in (1, 2, 3):
            with fastloss.num_threads(t):
                outs.append(lce(h, W, y, linear_bias=b, return_grad=True, chunk_size=30,
                                label_smoothing=0.1))
        for o in outs[1:]:
            for g, w in zip(o, outs[0]):
                np.testing.assert_array_equal(g, w)
        if dt == np.float64:
            _close(outs[1], _composite(h, W, b, y, label_smoothing=0.1))


def test_without_numpy_blas(monkeypatch):
    from fastloss import _blas

    monkeypatch.setattr(_blas, "_lib", False)
    h, W, b, y = _problem(14)
    _close(lce(h, W, y, linear_bias=b, return_grad=True, chunk_size=5),
           _composite(h, W, b, y))

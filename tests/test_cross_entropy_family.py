"""nll_loss, categorical_cross_entropy (the seeds' formula), multi_margin; hypothesis."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastloss
from fastloss.classification import (categorical_cross_entropy, cross_entropy, multi_margin,
                                     nll_loss)



def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_nll_loss_matches_torch(rng, red):
    torch = _torch()
    lp = np.log(rng.dirichlet(np.ones(6), 8))
    y = rng.integers(0, 6, 8)
    y[3] = -100
    w = rng.uniform(0.5, 2, 6)
    for weight in (None, w):
        l, g = nll_loss(lp, y, weight=weight, reduction=red, return_grad=True)
        xt = torch.tensor(lp, requires_grad=True)
        lt = torch.nn.functional.nll_loss(xt, torch.tensor(y), reduction=red,
                                          weight=None if weight is None else torch.tensor(w))
        lt.sum().backward()
        np.testing.assert_allclose(l, lt.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12)
    # K-dim
    lpk = np.log(rng.dirichlet(np.ones(4), (2, 3))).transpose(0, 2, 1).copy()
    yk = rng.integers(0, 4, (2, 3))
    xt = torch.tensor(lpk, requires_grad=True)
    lt = torch.nn.functional.nll_loss(xt, torch.tensor(yk), reduction=red)
    lt.sum().backward()
    l, g = nll_loss(lpk, yk, reduction=red, return_grad=True)
    np.testing.assert_allclose(l, lt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12)
    # nll(log_softmax) == cross_entropy
    x = rng.normal(size=(8, 6))
    from fastloss.classification import log_softmax
    np.testing.assert_allclose(nll_loss(log_softmax(x), y, reduction=red),
                               cross_entropy(x, y, reduction=red), rtol=1e-12)


def test_nll_loss_errors(rng):
    lp = np.log(rng.dirichlet(np.ones(4), 3))
    with pytest.raises(ValueError, match="class index 4 at position 1"):
        nll_loss(lp, np.array([0, 4, 1]))
    with pytest.raises(TypeError, match="class indices"):
        nll_loss(lp, np.array([0.0, 1.0, 1.0]))


def _seeds_cee(y, t):
    # the lecture notes' cross_entropy_error, one-hot and index versions
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_categorical_matches_seeds(rng, dtype):
    p = rng.dirichlet(np.ones(10), 5).astype(dtype)
    y = rng.integers(0, 10, 5)
    onehot = np.eye(10, dtype=dtype)[y]
    ref = _seeds_cee(p.astype(np.float64), y)
    for t in (y, onehot):
        l = categorical_cross_entropy(p, t)
        assert l.dtype == dtype
        # the seeds add 1e-7 inside the log, we clip: equal within eps / p
        np.testing.assert_allclose(l, ref, rtol=1e-5)
    # the lecture's single sample
    yv = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    tv = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(categorical_cross_entropy(yv, tv.astype(float)), 0.510825457,
                               rtol=1e-6)
    np.testing.assert_allclose(categorical_cross_entropy(yv, np.int64(2)), 0.510825457, rtol=1e-6)
    # zero probability on the true class stays finite (clipped)
    assert np.isfinite(categorical_cross_entropy(np.array([[0.0, 1.0]]), np.array([0])))


def test_categorical_gradient_and_errors(rng):
    p = rng.dirichlet(np.ones(4), 3)
    t = rng.dirichlet(np.ones(4), 3)
    # normalize=True (Keras' renormalisation, issue 15): also on scores above 1
    for red, norm, scale in (("mean", False, 1), ("sum", False, 1), ("mean", True, 3),
                             ("sum", True, 1)):
        kw = dict(reduction=red, normalize=norm)
        _, g = categorical_cross_entropy(p * scale, t, return_grad=True, **kw)
        h = 1e-7
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            a, b = p * scale, p * scale
            a[idx] += h
            b[idx] -= h
            num[idx] = (categorical_cross_entropy(a, t, **kw)
                        - categorical_cross_entropy(b, t, **kw)) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-5)
    with pytest.raises(ValueError, match="probabilities"):
        categorical_cross_entropy(p * 3, t)
    with pytest.raises(ValueError, match="eps"):
        categorical_cross_entropy(p, t, eps=0)
    with pytest.raises(ValueError, match="class index"):
        categorical_cross_entropy(p, np.array([0, 1, 4]))


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("red", ["mean", "sum", "none"])
def test_multi_margin_matches_torch(rng, p, red):
    torch = _torch()
    x = rng.normal(size=(7, 5))
    y = rng.integers(0, 5, 7)
    w = rng.uniform(0.5, 2, 5)
    for weight, margin in ((None, 1.0), (w, 0.7)):
        l, g = multi_margin(x, y, p=p, margin=margin, weight=weight, reduction=red,
                            return_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        lt = torch.nn.functional.multi_margin_loss(
            xt, torch.tensor(y), p=p, margin=margin, reduction=red,
            weight=None if weight is None else torch.tensor(w))
        lt.sum().backward()
        np.testing.assert_allclose(l, lt.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="p must be"):
        multi_margin(x, y, p=3)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 9), c=st.integers(1, 40), seed=st.integers(0, 2 ** 31),
       eps=st.sampled_from([0.0, 0.1, 1.0]), weighted=st.booleans(), soft=st.booleans(),
       red=st.sampled_from(["mean", "sum", "none"]), f32=st.booleans(),
       zl=st.sampled_from([0.0, 0.01]), cap=st.sampled_from([None, 3.0]))
def test_hypothesis_native_equals_numpy(n, c, seed, eps, weighted, soft, red, f32, zl, cap):
    rng = np.random.default_rng(seed)
    dt = np.float32 if f32 else np.float64
    x = (rng.normal(size=(n, c)) * rng.uniform(0.1, 20)).astype(dt)
    if soft:
        t = rng.dirichlet(np.ones(c), n).astype(dt) if n else np.zeros((0, c), dt)
    else:
        t = rng.integers(-1, c, n)
    w = rng.uniform(0.1, 3, c).astype(dt) if weighted else None
    kw = dict(weight=w, label_smoothing=eps, reduction=red, return_grad=True, ignore_index=-1,
              z_loss=zl, softcap=cap)
    l1, g1 = cross_entropy(x, t, backend="numpy", **kw)
    if not fastloss.native_available():
        return
    l2, g2 = cross_entropy(x, t, backend="native", **kw)
    tol = 2e-5 if f32 else 1e-11
    np.testing.assert_allclose(l2, l1, rtol=tol, atol=tol)
    np.testing.assert_allclose(g2, g1, rtol=tol, atol=tol)

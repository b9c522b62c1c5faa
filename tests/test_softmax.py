"""softmax / log_softmax and their backward: torch parity, reference, edge cases."""
import numpy as np
import pytest

import fastloss
from fastloss.classification import (log_softmax, log_softmax_backward, softmax,
                                     softmax_backward)



def _tol(dtype):
    return dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((7,), 0), ((5, 10), -1), ((3, 20000), 1),
                                        ((4, 6, 3), 1), ((2, 3, 5), 0)])
def test_forward_and_backward_match_torch(rng, backend, dtype, shape, axis):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    x = (rng.normal(size=shape) * 4).astype(dtype)
    go = rng.normal(size=shape).astype(dtype)
    for fn, bw, tfn in ((softmax, softmax_backward, torch.softmax),
                        (log_softmax, log_softmax_backward, torch.log_softmax)):
        y = fn(x, axis=axis, backend=backend)
        xt = torch.tensor(x, requires_grad=True)
        yt = tfn(xt, axis)
        yt.backward(torch.tensor(go))
        assert y.dtype == dtype and y.shape == x.shape
        np.testing.assert_allclose(y, yt.detach().numpy(), **_tol(dtype))
        gx = bw(y, go, axis=axis, backend=backend)
        np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-5 if dtype == np.float32 else 1e-10,
                                   atol=1e-5 if dtype == np.float32 else 1e-13)


def test_stability_and_special_values(rng, backend):
    x = rng.normal(size=(5, 20000)).astype(np.float32) * 1e4
    x[0, ::3] = -np.inf
    x[1, :] = -np.inf
    x[2, 5] = np.nan
    x[3, 7] = np.inf
    p = softmax(x, backend=backend)
    lp = log_softmax(x, backend=backend)
    for r in (0, 4):
        assert np.all(np.isfinite(p[r])) and abs(p[r].sum(dtype=np.float64) - 1) < 1e-5
    assert np.all(p[0, ::3] == 0) and np.all(lp[0, ::3] == -np.inf)
    for r in (1, 2, 3):
        assert np.all(np.isnan(p[r])) and np.all(np.isnan(lp[r]))


def test_backward_finite_differences(rng, backend):
    x = rng.normal(size=(3, 5))
    go = rng.normal(size=(3, 5))
    h = 1e-6
    for fn, bw in ((softmax, softmax_backward), (log_softmax, log_softmax_backward)):
        g = bw(fn(x, backend=backend), go, backend=backend)
        num = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            xp, xm = x.copy(), x.copy()
            xp[idx] += h
            xm[idx] -= h
            num[idx] = np.sum((fn(xp, backend=backend) - fn(xm, backend=backend)) * go) / (2 * h)
        np.testing.assert_allclose(g, num, atol=1e-8)


def test_out_and_errors(rng, backend):
    x = rng.normal(size=(4, 6)).astype(np.float32)
    out = np.empty_like(x)
    assert softmax(x, out=out, backend=backend) is out
    np.testing.assert_allclose(out, softmax(x, backend=backend))
    out2 = np.empty_like(x)
    assert log_softmax(x, axis=0, out=out2, backend=backend) is out2
    with pytest.raises(ValueError, match="axis"):
        softmax(x, axis=2)
    with pytest.raises(TypeError, match="x"):
        softmax(x.astype(int))
    with pytest.raises(ValueError, match="shape"):
        softmax_backward(x, x[:2])
    with pytest.raises(TypeError, match="out"):
        softmax(x, out=np.empty((4, 6)))
    assert softmax(np.zeros((0, 3)), backend=backend).shape == (0, 3)


@pytest.mark.skipif(not fastloss.native_available(), reason="native backend missing")
def test_threads_deterministic(rng):
    x = rng.normal(size=(64, 3000)).astype(np.float32)
    with fastloss.num_threads(1):
        a = softmax(x)
    with fastloss.num_threads(2):
        b = softmax(x)
    np.testing.assert_array_equal(a, b)

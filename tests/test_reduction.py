"""fastloss._reduction: the reductions and gradient factors the loss families share."""
import math

import numpy as np
import pytest

from fastloss import _reduction as R


def test_divide_ieee():
    assert R.divide(3, 2) == 1.5
    assert R.divide(1.0, 0.0) == math.inf
    assert R.divide(-1.0, 0.0) == -math.inf
    assert R.divide(1.0, -0.0) == -math.inf
    assert math.isnan(R.divide(0.0, 0.0))
    assert math.isnan(R.divide(math.nan, 0.0))
    assert math.isnan(R.divide(math.nan, 2.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reduced_loss(dtype):
    dt = np.dtype(dtype)
    losses = np.array([1.0, 2.0, 4.0, 8.0])
    T = R.total(losses)
    assert T == 15.0 and type(T) is float
    none = R.reduced_loss("none", losses, T, 4, dt, (2, 2))
    assert none.dtype == dt and none.shape == (2, 2)
    np.testing.assert_array_equal(none.reshape(-1), losses.astype(dt))
    s = R.reduced_loss("sum", losses, T, 4, dt, (2, 2))
    assert s.dtype == dt and s == 15.0
    m = R.reduced_loss("mean", losses, T, 4, dt, (2, 2))
    assert m.dtype == dt and m == dt.type(15.0 / 4)
    assert np.isnan(R.reduced_loss("mean", losses[:0], 0.0, 0, dt, (0,)))  # as PyTorch


def test_split_grad_output():
    dt = np.dtype(np.float32)
    assert R.split_grad_output(None, "mean", dt, (3,)) == (None, 1.0)
    assert R.split_grad_output(2, "mean", dt, (3,)) == (None, 2.0)
    go, s = R.split_grad_output([1, 2, 3], "none", dt, (3,))
    assert s == 1.0 and go.dtype == dt and go.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="grad_output must be a scalar for reduction='sum'"):
        R.split_grad_output([1, 2, 3], "sum", dt, (3,))
    with pytest.raises(ValueError, match="grad_output has shape"):
        R.split_grad_output([1, 2], "none", dt, (3,))
    # strict (classification): a real number, not bool, not NaN
    with pytest.raises(TypeError, match="grad_output"):
        R.split_grad_output(True, "mean", dt, (3,))
    with pytest.raises(ValueError, match="grad_output"):
        R.split_grad_output(math.nan, "mean", dt, (3,))
    # lenient (element-wise losses): any real 0-d value, NaN kept
    assert R.split_grad_output(True, "mean", dt, (3,), strict=False) == (None, 1.0)
    _, s = R.split_grad_output(np.array(math.nan), "mean", dt, (3,), strict=False)
    assert math.isnan(s)


def test_grad_factor_and_scale():
    assert R.grad_factor("mean", 3.0, 4) == 0.75
    assert R.grad_factor("sum", 3, 4) == 3.0
    assert R.grad_factor("mean", 1.0, 0) == math.inf
    dt = np.dtype(np.float32)
    s = R.grad_scale("mean", 2.0, dt, (3,), 4)
    assert s.dtype == dt and s == dt.type(0.5)
    a = R.grad_scale("none", [1, 2, 3], dt, (3,), 3)
    assert a.dtype == dt and a.shape == (3,)

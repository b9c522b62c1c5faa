"""Loss objects wrap the functions: same numbers, forward/backward, early option checks."""
import numpy as np
import pytest

import fastloss

OBJECTS = [
    (fastloss.MSELoss, fastloss.mse, {}),
    (fastloss.SSELoss, fastloss.sse, {}),
    (fastloss.L1Loss, fastloss.mae, {}),
    (fastloss.HuberLoss, fastloss.huber, {"delta": 0.5}),
    (fastloss.SmoothL1Loss, fastloss.smooth_l1, {"beta": 0.3}),
    (fastloss.QuantileLoss, fastloss.quantile, {"q": 0.2}),
    (fastloss.LogCoshLoss, fastloss.log_cosh, {}),
    (fastloss.BCELoss, fastloss.binary_cross_entropy, {"eps": 1e-6}),
    (fastloss.BCEWithLogitsLoss, fastloss.binary_cross_entropy_with_logits,
     {"pos_weight": np.array([1.0, 2.0, 3.0])}),
    (fastloss.HingeLoss, fastloss.hinge, {}),
    (fastloss.SquaredHingeLoss, fastloss.squared_hinge, {}),
]


def _data(fn, rng):
    p = rng.uniform(0.05, 0.95, (10, 3))
    t = rng.choice([-1.0, 1.0], (10, 3)) if "hinge" in fn.__name__ else rng.uniform(0, 1, (10, 3))
    return p, t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("cls,fn,opts", OBJECTS, ids=[o[0].__name__ for o in OBJECTS])
def test_object_matches_function(cls, fn, opts, reduction, rng):
    p, t = _data(fn, rng)
    w = rng.uniform(size=10)
    crit = cls(reduction, **opts)
    loss, grad = fn(p, t, reduction=reduction, sample_weight=w, return_grad=True, **opts)
    np.testing.assert_array_equal(crit.loss(p, t, sample_weight=w), loss)
    np.testing.assert_array_equal(crit.gradient(p, t, sample_weight=w), grad)
    l2, g2 = crit.loss_gradient(p, t, sample_weight=w)
    np.testing.assert_array_equal(l2, loss)
    np.testing.assert_array_equal(g2, grad)
    np.testing.assert_array_equal(crit.forward(p, t, sample_weight=w), loss)
    np.testing.assert_array_equal(crit.backward(), grad)
    np.testing.assert_array_equal(crit(p, t, sample_weight=w), loss)
    go = rng.uniform(size=p.shape) if reduction == "none" else 0.5
    _, expected = fn(p, t, reduction=reduction, sample_weight=w, return_grad=True,
                     grad_output=go, **opts)
    np.testing.assert_allclose(crit.backward(go), expected, rtol=1e-15)
    assert cls.__name__ in repr(crit)


def test_out_buffer_and_float32(rng):
    p, t = (a.astype(np.float32) for a in _data(fastloss.mse, rng))
    crit = fastloss.HuberLoss(delta=0.1)
    out = np.empty_like(p)
    loss = crit.forward(p, t, out=out)
    assert crit.backward() is out and loss.dtype == np.float32
    assert crit.gradient(p, t, out=out) is out


def test_options_checked_at_construction():
    with pytest.raises(ValueError, match="delta"):
        fastloss.HuberLoss(delta=-1)
    with pytest.raises(ValueError, match="q"):
        fastloss.QuantileLoss(q=1.0)
    with pytest.raises(ValueError, match="reduction"):
        fastloss.MSELoss("avg")
    with pytest.raises(ValueError, match="backend"):
        fastloss.MSELoss(backend="cuda")
    with pytest.raises(TypeError):
        fastloss.MSELoss(delta=1.0)  # not an option of mse
    with pytest.raises(TypeError):
        fastloss.ElementwiseLoss()


def test_backward_before_forward():
    crit = fastloss.MSELoss()
    with pytest.raises(RuntimeError, match="forward"):
        crit.backward()
    crit.forward(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="grad_output"):
        crit.backward(np.ones(4))


def test_defaults():
    assert fastloss.SSELoss().reduction == "sum"
    assert fastloss.MSELoss().reduction == "mean"
    assert fastloss.MAELoss is fastloss.L1Loss

"""Loss objects wrap the functions: same numbers, forward/backward, early option checks."""
import numpy as np
import pytest

import fastloss
from fastloss._elementwise_spec import LOSSES as SPECS
from fastloss.loss_objects import CLASSES


def _options(spec):
    """Each option at its first example (per-element ones: an array for 3 columns)."""
    opts = {}
    for o in spec.options:
        opts[o.name] = (np.array([1.0, 2.0, 3.0]) if o.per_element
                        else (o.examples or (o.default,))[0])
    return opts


# (class, function, options) per loss of the table
OBJECTS = [(CLASSES[spec.cls], getattr(fastloss, spec.name), _options(spec)) for spec in SPECS]


def _data(fn, rng):
    p = rng.uniform(0.05, 0.95, (10, 3))
    t = (rng.choice([-1.0, 1.0], (10, 3)) if fn.spec.target == "labels"
         else rng.uniform(0, 1, (10, 3)))
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


@pytest.mark.parametrize("cls,fn,opts", OBJECTS, ids=[o[0].__name__ for o in OBJECTS])
def test_gradient_hessian_gradient_is_the_gradient(cls, fn, opts, rng):
    """gradient_hessian's gradient is gradient()'s, bit for bit; out= receives it."""
    p, t = _data(fn, rng)
    w = rng.uniform(size=10)
    for reduction in ("mean", "sum", "none"):
        crit = cls(reduction, **opts)
        out = np.empty_like(p)
        g, h = crit.gradient_hessian(p, t, sample_weight=w, out=out)
        assert g is out and h.shape == p.shape and h.dtype == p.dtype
        np.testing.assert_array_equal(g, crit.gradient(p, t, sample_weight=w))


@pytest.mark.parametrize("cls", [CLASSES["BCELoss"], CLASSES["BCEWithLogitsLoss"]],
                         ids=["BCELoss", "BCEWithLogitsLoss"])
def test_bce_objects_take_torch_weight(cls, rng):
    """PyTorch's weight= fixed at construction, broadcast against each input; checked early."""
    p, t = rng.uniform(0.05, 0.95, (10, 3)), rng.uniform(0, 1, (10, 3))
    w, sw = np.array([0.5, 1.0, 2.0]), rng.uniform(size=10)
    crit = cls("sum", weight=w)
    fn = cls.function
    np.testing.assert_array_equal(crit.loss(p, t, sample_weight=sw),
                                  fn(p, t, weight=w, sample_weight=sw, reduction="sum"))
    g, h = crit.gradient_hessian(p, t)
    g2, h2 = cls("sum").gradient_hessian(p, t, sample_weight=np.broadcast_to(w, p.shape))
    np.testing.assert_array_equal(g, g2)
    np.testing.assert_array_equal(h, h2)
    cls(weight=np.ones((4, 3)))  # broadcasts against an input of 4 rows: fine later
    with pytest.raises(TypeError, match="weight must be a real numeric array"):
        cls(weight=np.array(["a"]))
    with pytest.raises(ValueError, match="weight of shape"):
        cls(weight=np.ones((4, 3))).loss(p, t)

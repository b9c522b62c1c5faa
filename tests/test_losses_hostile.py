"""Hostile input to the element-wise losses (issue 15): out= aliasing every input,
options at the edge of float32's precision."""
import numpy as np
import pytest

import fastloss
from fastloss._elementwise_spec import BY_NAME, LOSSES as SPECS


# --- out= and the per-element options --------------------------------------

def test_out_partly_overlapping_pos_weight_is_refused(backend):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 8))
    t = rng.random((4, 8))
    buf = rng.random(4 * 8 + 3) + 0.5
    pw = buf[:32].reshape(4, 8)        # a full-shape pos_weight ...
    out = buf[3:35].reshape(4, 8)      # ... and out= three elements further on
    before = buf.copy()
    with pytest.raises(ValueError, match="out overlaps pos_weight"):
        fastloss.binary_cross_entropy_with_logits(x, t, pos_weight=pw, return_grad=True,
                                                  out=out, backend=backend)
    np.testing.assert_array_equal(buf, before)


def test_out_exactly_pos_weight_works(backend):
    rng = np.random.default_rng(2)
    x, t = rng.normal(size=(5, 3)), rng.random((5, 3))
    pw = rng.random((5, 3)) + 0.5
    want = fastloss.binary_cross_entropy_with_logits(x, t, pos_weight=pw.copy(),
                                                     return_grad=True, backend=backend)
    got = fastloss.binary_cross_entropy_with_logits(x, t, pos_weight=pw, return_grad=True,
                                                    out=pw, backend=backend)
    assert got[1] is pw
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


# --- options near float32's rounding ------------------------------------------

def _inputs(spec, n=400):
    rng = np.random.default_rng(3)
    if spec.pred == "probability":
        p = rng.random(n)
    else:
        p = rng.normal(size=n) * 2
    t = rng.random(n) if spec.target == "probability" else rng.normal(size=n)
    if spec.target == "labels":
        t = np.where(t > 0, 1.0, -1.0)
    p[:4] = [0.0, 1.0, 0.5, 1e-3] if spec.pred == "probability" else [0.0, 1e-8, -1e-8, 0.1]
    return p.astype(np.float32), t.astype(np.float32)


# option values that float32 does not hold (some round to a bound of the range)
EDGE = {
    "q": [1 - 1e-8, 1 - 3e-8, 1e-8, 1e-40, 0.1, 1 / 3],
    "delta": [1 / 3, 0.1, 1e-20, 3e19, 1 - 1e-9],
    "beta": [1 / 3, 0.1, 1e-40, 1e-46, 1 + 1e-9],
    "eps": [1e-8, 1e-12, 0.1, 0.5 - 1e-9],
    "pos_weight": [1 / 3, 1e-40, 1 + 1e-9, 3e38],
}
EDGE_CASES = [pytest.param(spec, o.name, value, id=f"{spec.name}-{o.name}={value!r}")
              for spec in SPECS for o in spec.options for value in EDGE[o.name]]


@pytest.mark.skipif(not fastloss.native_available(), reason="compares the two backends")
@pytest.mark.parametrize("spec,name,value", EDGE_CASES)
def test_float32_options_the_backends_agree(spec, name, value):
    """Both backends compute with the same float32 coefficients: each derived from
    the option as given, in double, and rounded once to float32 (q = 1 - 1e-8 gave
    0 instead of 1e-8 |r| natively). The backends still differ by a few ulp (fused
    multiply-adds; exp/log kernels, and their cancellation in the logits' gradient)."""
    p, t = _inputs(spec)
    fn = getattr(fastloss, spec.name)
    res = [fn(p, t, reduction="none", return_grad=True, backend=b, **{name: value})
           for b in ("numpy", "native")]
    ulp = np.finfo(np.float32).eps
    rtol, atol = (16 * ulp, 16 * ulp * min(1 + value, 1e30)) if spec.transcendental else (4 * ulp, 0)
    for a, b in zip(*res):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)


def test_quantile_float32_near_one():
    """q = 1 - 1e-8: the loss below the target is 1e-8 |r| (not 0), the gradient 1e-8."""
    p, t = np.float32([2.0, 0.0]), np.float32([0.0, 2.0])
    for backend in ["numpy"] + (["native"] if fastloss.native_available() else []):
        loss, grad = fastloss.quantile(p, t, q=1 - 1e-8, reduction="none", return_grad=True,
                                       backend=backend)
        np.testing.assert_allclose(loss, [2e-8, 2.0], rtol=1e-6)
        np.testing.assert_allclose(grad, [1e-8, -1.0], rtol=1e-6)

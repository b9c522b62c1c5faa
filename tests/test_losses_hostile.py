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


# --- property: out= overlapping any input either works exactly or is refused ----------

from hypothesis import HealthCheck, event, given, settings, strategies as st  # noqa: E402

BACKENDS = ["numpy"] + (["native"] if fastloss.native_available() else [])


def _fill(role, spec, rng, size, dtype):
    """Values valid for ``role`` of loss ``spec``."""
    if role == "pred":
        v = rng.uniform(0.05, 0.95, size) if spec.pred == "probability" else rng.normal(size=size)
    elif role == "target" and spec.target == "labels":
        v = rng.choice([-1.0, 1.0], size)
    elif role == "target":
        v = rng.uniform(0, 1, size)
    else:  # weights, pos_weight, grad_output
        v = rng.uniform(0.1, 2, size)
    return v.astype(dtype)


@st.composite
def aliasing_cases(draw):
    # half the cases on the losses with the most inputs (weight=, pos_weight=)
    spec = draw(st.sampled_from(SPECS) | st.sampled_from(
        [s for s in SPECS if s.torch_weight or any(o.per_element for o in s.options)]))
    shape = draw(st.sampled_from([(12,), (4, 3), (2, 3, 2), (1,)]))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    roles = {"pred": shape, "target": shape}
    if draw(st.booleans()):
        roles["sample_weight"] = draw(st.sampled_from(
            [shape] + ([shape[:1]] if len(shape) == 2 else [])))
    if spec.torch_weight and draw(st.booleans()):
        roles["weight"] = draw(st.sampled_from([shape, shape[-1:], (1,) * len(shape)]))
    if any(o.per_element for o in spec.options) and draw(st.booleans()):
        roles["pos_weight"] = draw(st.sampled_from([shape, shape[-1:]]))
    if reduction == "none" and draw(st.booleans()):
        roles["grad_output"] = shape
    victim = draw(st.sampled_from(sorted(roles)))
    n, m = int(np.prod(shape)), int(np.prod(roles[victim]))
    shift = draw(st.sampled_from([0, 0, 1 - n, m - 1]) | st.integers(1 - n, m - 1))
    return dict(spec=spec, shape=shape, reduction=reduction, roles=roles, victim=victim,
                shift=shift, dtype=draw(st.sampled_from([np.float32, np.float64])),
                backend=draw(st.sampled_from(BACKENDS)), seed=draw(st.integers(0, 2**32 - 1)))


def _call(spec, arrays, reduction, backend, out=None):
    kw = {k: a for k, a in arrays.items() if k not in ("pred", "target")}
    return getattr(fastloss, spec.name)(arrays["pred"], arrays["target"], reduction=reduction,
                                        return_grad=True, out=out, backend=backend, **kw)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(aliasing_cases())
def test_out_overlapping_any_input(case):
    """out= placed at a random offset over one input (pred, target, sample_weight,
    weight, pos_weight, grad_output) of a random loss: the call either gives exactly
    what it gives without the overlap (an exact alias, or an input the call copies
    first, e.g. a per-row sample_weight) or raises a ValueError before writing anything."""
    spec, shape, roles, victim = case["spec"], case["shape"], case["roles"], case["victim"]
    dtype, rng = case["dtype"], np.random.default_rng(case["seed"])
    n, m = int(np.prod(shape)), int(np.prod(roles[victim]))
    arrays = {r: _fill(r, spec, rng, s, dtype) for r, s in roles.items()}
    a = n                               # the victim's offset in one shared buffer ...
    b = a + case["shift"]               # ... and out's
    buf = _fill(victim, spec, rng, a + max(m, case["shift"] + n) + n, dtype)
    arrays[victim] = buf[a:a + m].reshape(roles[victim])
    out = buf[b:b + n].reshape(shape)
    want = _call(spec, {r: x.copy() for r, x in arrays.items()}, case["reduction"],
                 case["backend"])
    before = buf.copy()
    exact = case["shift"] == 0 and roles[victim] == shape
    try:
        loss, grad = _call(spec, arrays, case["reduction"], case["backend"], out=out)
    except ValueError as exc:
        assert f"out overlaps {victim}" in str(exc)
        assert not exact
        np.testing.assert_array_equal(buf, before)  # nothing written
        event("refused: out partly overlaps the input")
        event(f"refused with out over {victim}")
        return
    event("exact alias: worked" if exact else "partial overlap of an input copied first: worked")
    event(f"worked with out over {victim}")
    assert grad is out
    np.testing.assert_array_equal(loss, want[0])
    np.testing.assert_array_equal(grad, want[1])

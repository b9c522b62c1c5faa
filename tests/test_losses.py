"""Element-wise losses: every backend against the NumPy reference formulas,
gradients by central finite differences, random shapes (hypothesis), NaN/Inf,
empty input, memory layouts, ``out=``, thread-count independence and float32
sum accuracy.

float32 results are compared with a float64 evaluation of the reference on
the same (float32-rounded) inputs, with float32 tolerances.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastloss
from fastloss._elementwise_spec import BY_NAME, LOSSES as SPECS

needs_native = pytest.mark.skipif(not fastloss.native_available(), reason="no native extension")
DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


# --- data: kinks kept away so finite differences and branches are clean -------

def _away(rng, shape, kinks, gap=0.05, lo=0.05, hi=3.0):
    """Signed values with |x| in [lo, hi] and at least ``gap`` from every kink."""
    mag = rng.uniform(lo, hi, shape)
    for k in kinks:
        near = np.abs(mag - k) < gap
        mag[near] = k + 2 * gap
    return mag * rng.choice([-1.0, 1.0], shape)


def _regression(kink_key=None, default=1.0):
    def make(rng, shape, opts):
        kinks = [0.0] + ([opts.get(kink_key, default)] if kink_key else [])
        t = rng.normal(size=shape)
        return t + _away(rng, shape, kinks), t
    return make


def _bce_data(rng, shape, opts):
    return rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape)


def _logits_data(rng, shape, opts):
    return rng.normal(scale=4.0, size=shape), rng.uniform(0, 1, shape)


def _hinge_data(rng, shape, opts):
    y = rng.choice([-1.0, 1.0], shape)
    p = y * (1 - _away(rng, shape, [0.0], lo=0.1, hi=2.0))  # margin 1 - y p never near 0
    return p, ((y + 1) / 2 if opts.get("_zero_one") else y)


def _data_maker(spec):
    if spec.pred == "probability":
        return _bce_data
    if spec.pred == "logit":
        return _logits_data
    if spec.target == "labels":
        return _hinge_data
    kink = {o.name: o.default for o in spec.options}.get(spec.kink, 1.0)
    return _regression(spec.kink, kink)


def _option_sets(spec):
    """Defaults, each option's examples ("array" for a per-element one), {0, 1} labels."""
    sets = [{}]
    for o in spec.options:
        sets += [{o.name: x} for x in o.examples] + ([{o.name: "array"}] if o.per_element else [])
    return sets + ([{"_zero_one": True}] if spec.target == "labels" else [])


# name -> (function, option sets, data maker), from the loss table. Keys starting
# with "_" are test-only.
LOSSES = {spec.name: (getattr(fastloss, spec.name), _option_sets(spec), _data_maker(spec))
          for spec in SPECS}
CASES = [pytest.param(name, opts, id="-".join([name] + [f"{k}={v}" for k, v in opts.items()]))
         for name, (_, options, _) in LOSSES.items() for opts in options]
DEFAULT_CASES = [pytest.param(name, {}, id=name) for name in LOSSES]


def _make(name, opts, shape, dtype, rng):
    """(pred, target, call options) in ``dtype``."""
    fn, _, data = LOSSES[name]
    p, t = data(rng, shape, opts)
    call = {k: v for k, v in opts.items() if not k.startswith("_")}
    if call.get("pos_weight") == "array":
        call["pos_weight"] = rng.uniform(0.5, 3.0, shape[-1]).astype(dtype)
    return p.astype(dtype), t.astype(dtype), call


def _reference_eval(name, call, p, t):
    """Per-element (l, g) from the table's NumPy reference, in float64."""
    p = p.astype(np.float64)
    t = t.astype(np.float64)
    spec = BY_NAME[name]
    r = {}
    for o in spec.options:
        value = call.get(o.name, o.default)
        r[o.name] = (np.broadcast_to(np.asarray(value, np.float64), p.shape) if o.per_element
                     else float(value))
    if spec.target == "labels":
        r["zero_one"] = not np.any(t == -1)
    return spec.reference(p, t, **r)


def _expected(name, call, p, t, reduction, w=None, go=None):
    """Reduced loss and gradient in float64, written out independently of losses.py."""
    l, g = _reference_eval(name, call, p, t)
    if w is not None:
        w = np.asarray(w, np.float64)
        w = w[:, None] if w.shape != p.shape else w
        l, g = l * w, g * w
    if reduction == "none":
        return l, (g if go is None else g * go)
    scale = 1.0 if go is None else float(go)
    if reduction == "sum":
        return l.sum(), g * scale
    return l.sum() / l.size, g * scale / l.size


def _close(actual, expected, dtype, rtol=None):
    """Element-wise match with tolerances for ``dtype``; atol scales with the data."""
    rtol = rtol or (2e-5 if dtype == np.float32 else 1e-10)
    expected = np.asarray(expected, np.float64)
    finite = expected[np.isfinite(expected)]
    scale = np.max(np.abs(finite)) if finite.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=rtol * max(scale, 1e-30), equal_nan=True)


# --- against the reference: loss x option x dtype x reduction x weight x grad_output

@pytest.mark.parametrize("shape,weight", [((64,), "none"), ((64,), "full"), ((37, 5), "none"),
                                          ((37, 5), "full"), ((37, 5), "row")],
                         ids=["1d", "1d-w", "2d", "2d-w", "2d-roww"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,opts", CASES)
def test_against_reference(name, opts, dtype, reduction, weight, shape, rng, backends):
    fn = LOSSES[name][0]
    p, t, call = _make(name, opts, shape, dtype, rng)
    w = {"none": None, "full": rng.uniform(0, 2, shape),
         "row": rng.uniform(0, 2, shape[:1])}[weight]
    w = None if w is None else w.astype(dtype)
    for go in (None, rng.uniform(-2, 2, shape).astype(dtype) if reduction == "none" else 0.7):
        el, eg = _expected(name, call, p, t, reduction, w, go)
        for backend in backends:
            loss, grad = fn(p, t, reduction=reduction, sample_weight=w, return_grad=True,
                            grad_output=go, backend=backend, **call)
            assert grad.dtype == dtype and grad.shape == shape
            assert loss.dtype == dtype
            assert np.shape(loss) == (shape if reduction == "none" else ())
            _close(loss, el, dtype)
            _close(grad, eg, dtype)
            # return_grad=False gives the same loss
            loss2 = fn(p, t, reduction=reduction, sample_weight=w, backend=backend, **call)
            np.testing.assert_array_equal(loss2, loss)


@pytest.mark.parametrize("name,opts", CASES)
def test_one_dimensional_and_list_input(name, opts, rng, backends):
    """Python lists are accepted (float64, like np.asarray)."""
    fn = LOSSES[name][0]
    p, t, call = _make(name, opts, (9,), np.float64, rng)
    call = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in call.items()}
    for backend in backends:
        got = fn(p.tolist(), t.tolist(), backend=backend, **call)
        assert got == fn(p, t, backend=backend, **call)


@pytest.mark.parametrize("name,opts", DEFAULT_CASES)
def test_zero_dimensional_input(name, opts, rng, backends):
    """0-d pred/target (as PyTorch allows): 0-d loss for 'none' and a 0-d gradient."""
    fn = LOSSES[name][0]
    p, t, _ = _make(name, opts, (1,), np.float32, rng)
    for backend in backends:
        l, g = fn(p[0], t[0], reduction="none", return_grad=True, backend=backend)
        l1, g1 = fn(p, t, reduction="none", return_grad=True, backend=backend)
        assert l.shape == () and g.shape == () and l == l1[0] and g == g1[0]


def test_sse_default_is_sum_and_half(rng):
    p, t = rng.normal(size=10), rng.normal(size=10)
    assert np.isclose(fastloss.sse(p, t), 0.5 * np.sum((p - t) ** 2))
    assert np.isclose(fastloss.mse(p, t), np.mean((p - t) ** 2))


def test_l1_is_mae():
    assert fastloss.l1 is fastloss.mae


def test_smooth_l1_is_scaled_huber(rng):
    p, t = rng.normal(size=50), rng.normal(size=50)
    for beta in (0.3, 1.0, 2.0):
        a, ga = fastloss.smooth_l1(p, t, beta=beta, return_grad=True)
        b, gb = fastloss.huber(p, t, delta=beta, return_grad=True)
        assert np.isclose(a, b / beta)
        np.testing.assert_allclose(ga, gb / beta)


def test_hinge_zero_one_targets_match_signed(rng, backends):
    p = rng.normal(size=(20, 3))
    y = rng.choice([-1.0, 1.0], (20, 3))
    for fn in (fastloss.hinge, fastloss.squared_hinge):
        for backend in backends:
            a = fn(p, y, reduction="none", backend=backend)
            b = fn(p, (y + 1) / 2, reduction="none", backend=backend)
            np.testing.assert_array_equal(a, b)


def test_bce_clips_as_documented(backends):
    """Probabilities 0 and 1 are clipped to [eps, 1 - eps]: finite loss and gradient."""
    p = np.array([0.0, 1.0, 0.0, 1.0])
    t = np.array([0.0, 1.0, 1.0, 0.0])
    for backend in backends:
        l, g = fastloss.binary_cross_entropy(p, t, reduction="none", return_grad=True,
                                             backend=backend)
        assert np.all(np.isfinite(l)) and np.all(np.isfinite(g))
        np.testing.assert_allclose(l, [-np.log1p(-1e-7)] * 2 + [-np.log(1e-7)] * 2, rtol=1e-6)


def test_bce_logits_extreme_logits_are_stable(backends):
    x = np.array([-1e4, -50.0, 50.0, 1e4], np.float32)
    for t in (0.0, 1.0, 0.3):
        tt = np.full(4, t, np.float32)
        for backend in backends:
            l, g = fastloss.binary_cross_entropy_with_logits(x, tt, reduction="none",
                                                             return_grad=True, backend=backend)
            assert np.all(np.isfinite(l)) and np.all(np.isfinite(g))
            assert np.all(l >= 0)
            np.testing.assert_allclose(g, [-t, -t, 1 - t, 1 - t], atol=1e-6)
    # confident correct predictions keep full relative accuracy in float32
    x = np.array([-12.0, 12.0], np.float32)
    t = np.array([0.0, 1.0], np.float32)
    for backend in backends:
        l = fastloss.binary_cross_entropy_with_logits(x, t, reduction="none", backend=backend)
        np.testing.assert_allclose(l, np.log1p(np.exp(-12.0)), rtol=1e-6)
    # ... and so does their (tiny) gradient: -+e/(1 + e), e = exp(-|x|), not 0
    x = np.array([-30.0, -12.0, 12.0, 30.0], np.float32)
    t = np.array([0.0, 0.0, 1.0, 1.0], np.float32)
    e = np.exp(-np.abs(x.astype(np.float64)))
    for backend in backends:
        for pw in (1.0, 2.5):
            l, g = fastloss.binary_cross_entropy_with_logits(
                x, t, reduction="none", return_grad=True, pos_weight=pw, backend=backend)
            np.testing.assert_allclose(g, np.where(t == 1, -pw, 1) * e / (1 + e), rtol=1e-6)
            np.testing.assert_allclose(l, np.where(t == 1, pw, 1) * np.log1p(e), rtol=1e-6)


def test_bce_logits_float32_dense_sweep_matches_float64(backends):
    # the float32 kernel (fused exp / log1p with shared 1/(1 + e)) against a
    # float64 evaluation, over logits down to where the loss leaves the normal range
    x = np.linspace(-80.0, 80.0, 160_001).astype(np.float32)
    xd = x.astype(np.float64)
    e = np.exp(-np.abs(xd))
    for tv in (0.0, 1.0):
        t = np.full_like(x, tv)
        ref = np.log1p(e) + np.where(xd >= 0, (1 - tv) * xd, -tv * xd)
        sig, sigc = np.where(xd >= 0, 1, e) / (1 + e), np.where(xd >= 0, e, 1) / (1 + e)
        gref = (1 - tv) * sig - tv * sigc  # sig - t without cancellation
        for backend in backends:
            l, g = fastloss.binary_cross_entropy_with_logits(x, t, reduction="none",
                                                             return_grad=True, backend=backend)
            np.testing.assert_allclose(l, ref, rtol=1e-6, atol=0)
            np.testing.assert_allclose(g, gref, rtol=1e-6, atol=0)



def test_bce_logits_float32_fractional_targets_within_4_ulp(backends):
    # the native float32 kernel, soft targets and pos_weight: loss and gradient within
    # 4 float32 ulp of the size
    # of their terms (|c log1p e| + |lin|, |(1 - t) sig| + |pw t sigc|) of a float64
    # evaluation (3.3 / 3.6 measured over a dense sweep; the gradient cancels near 0)
    x = np.linspace(-40.0, 40.0, 80_001).astype(np.float32)
    xd = x.astype(np.float64)
    e = np.exp(-np.abs(xd))
    sig, sigc = np.where(xd >= 0, 1, e) / (1 + e), np.where(xd >= 0, e, 1) / (1 + e)
    ulp = np.float64(np.finfo(np.float32).eps) / 2  # relative, at the low end of a binade
    for tv in (0.1, 0.5, 0.9):
        for pw in (1.0, 2.5):
            t = np.full_like(x, tv)
            pt, omt = pw * np.float64(np.float32(tv)), 1 - np.float64(np.float32(tv))
            lin = np.where(xd >= 0, omt * xd, -pt * xd)
            ref, lscale = (omt + pt) * np.log1p(e) + lin, (omt + pt) * np.log1p(e) + np.abs(lin)
            gref, gscale = omt * sig - pt * sigc, omt * sig + pt * sigc
            for backend in [b for b in backends if b != "numpy"]:
                l, g = fastloss.binary_cross_entropy_with_logits(
                    x, t, reduction="none", return_grad=True, pos_weight=pw, backend=backend)
                assert np.all(np.abs(l - ref) <= 4 * ulp * lscale), (tv, pw, backend)
                assert np.all(np.abs(g - gref) <= 4 * ulp * gscale), (tv, pw, backend)

def test_pseudo_huber_is_the_textbook_formula(backends):
    """The stable form equals delta^2 (sqrt(1 + (d/delta)^2) - 1) and its derivatives;
    ~0.5 d^2 near 0, ~delta |d| - delta^2 far out, finite gradient delta sign(d) at Inf."""
    d = np.concatenate([-np.logspace(-3, 3, 50), np.logspace(-3, 3, 50)])
    for delta in (0.3, 1.0, 4.0):
        s = np.sqrt(1 + (d / delta) ** 2)
        for backend in backends:
            crit = fastloss.PseudoHuberLoss("none", delta=delta, backend=backend)
            l, g = crit.loss_gradient(d, np.zeros_like(d))
            _, h = crit.gradient_hessian(d, np.zeros_like(d))
            np.testing.assert_allclose(l, delta**2 * (s - 1), rtol=1e-6)  # cancels near 0
            np.testing.assert_allclose(g, d / s, rtol=1e-12)
            np.testing.assert_allclose(h, s**-3, rtol=1e-12)
    for backend in backends:
        l, g = fastloss.pseudo_huber(np.array([1e-8, 1e8, np.inf]), np.zeros(3), delta=2.0,
                                     reduction="none", return_grad=True, backend=backend)
        np.testing.assert_allclose(l[:2], [0.5e-16, 2e8 - 4], rtol=1e-12)
        assert l[2] == np.inf and g[2] == 2.0


def test_log_cosh_large_and_small_differences(backends):
    d = np.array([1e-8, 1e-3, 19.9, 20.0, 30.0, 1e30])
    for backend in backends:
        l, g = fastloss.log_cosh(d, np.zeros_like(d), reduction="none", return_grad=True,
                                 backend=backend)
        series = d * d / 2 - d**4 / 12 + d**6 / 45  # log cosh d near 0
        ref = np.where(d < 1e-2, series, np.logaddexp(d, -d) - np.log(2))
        np.testing.assert_allclose(l, ref, rtol=1e-12)
        np.testing.assert_allclose(g, np.tanh(d), rtol=1e-12)


# --- gradients by central finite differences (float64) ----------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,opts", CASES)
def test_gradient_finite_differences(name, opts, reduction, rng, backends):
    fn = LOSSES[name][0]
    shape = (3, 4)
    p, t, call = _make(name, opts, shape, np.float64, rng)
    w = rng.uniform(0.5, 2, shape[:1])
    go = rng.uniform(-2, 2, shape) if reduction == "none" else 0.7
    h = 1e-6

    for backend in backends:
        def scalar(x):
            l = fn(x, t, reduction=reduction, sample_weight=w, backend=backend, **call)
            return float(np.sum(l * go))

        _, grad = fn(p, t, reduction=reduction, sample_weight=w, grad_output=go,
                     return_grad=True, backend=backend, **call)
        num = np.empty(shape)
        for k in np.ndindex(shape):
            xp, xm = p.copy(), p.copy()
            xp[k] += h
            xm[k] -= h
            num[k] = (scalar(xp) - scalar(xm)) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8, err_msg=backend)


# --- hessians: gradient_hessian by central finite differences of the gradient -------

def _object(name, reduction, call):
    return fastloss.loss_objects.CLASSES[BY_NAME[name].cls](reduction, **call)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,opts", CASES)
def test_hessian_finite_differences(name, opts, reduction, rng, backends):
    """d2l/dpred2 (diagonal) against (g(p + h) - g(p - h)) / 2h in float64; the data keep
    away from the kinks (the gradient of element i depends on pred_i only)."""
    shape = (3, 4)
    p, t, call = _make(name, opts, shape, np.float64, rng)
    w = rng.uniform(0.5, 2, shape[:1])
    h = 1e-6
    for backend in backends:
        crit = _object(name, reduction, {**call, "backend": backend})
        grad, hess = crit.gradient_hessian(p, t, sample_weight=w)
        assert hess.shape == shape and hess.dtype == np.float64
        np.testing.assert_array_equal(grad, crit.gradient(p, t, sample_weight=w))
        num = (crit.gradient(p + h, t, sample_weight=w)
               - crit.gradient(p - h, t, sample_weight=w)) / (2 * h)
        np.testing.assert_allclose(hess, num, rtol=1e-6, atol=1e-8, err_msg=backend)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,opts", CASES)
def test_hessian_native_matches_reference(name, opts, dtype, rng, backends):
    """Both backends against the float64 reference hessian, with weights, NaN propagating."""
    p, t, call = _make(name, opts, (40, 3), dtype, rng)
    p[5, 1] = np.nan
    w = rng.uniform(0, 2, p.shape).astype(dtype)
    spec = BY_NAME[name]
    r = {o.name: (np.broadcast_to(np.asarray(call.get(o.name, o.default), np.float64), p.shape)
                  if o.per_element else float(call.get(o.name, o.default)))
         for o in spec.options}
    if spec.target == "labels":
        r["zero_one"] = not np.any(t == -1)
    expected = spec.hessian(p.astype(np.float64), t.astype(np.float64), **r) * w
    for backend in backends:
        _, hess = _object(name, "sum", {**call, "backend": backend}).gradient_hessian(
            p, t, sample_weight=w)
        assert hess.dtype == dtype and np.isnan(hess[5, 1])
        _close(hess, expected, dtype)


@needs_native
@pytest.mark.parametrize("name,opts", DEFAULT_CASES)
def test_hessian_with_upstream_gradient_native_matches_numpy(name, opts, rng):
    """The kernel's hessian output scaled by a per-element grad_output ('none')."""
    p, t, call = _make(name, opts, (300, 7), np.float64, rng)
    go = rng.uniform(-2, 2, p.shape)
    w = rng.uniform(0, 2, p.shape)
    got = {backend: fastloss.losses._evaluate(
        BY_NAME[name], p, t, call, "none", w, True, None, go, backend, hessian=True)
        for backend in ("native", "numpy")}
    for a, b in zip(got["native"], got["numpy"]):
        _close(a, b, np.float64)


def test_hessian_at_the_kinks(backend):
    """Where l'' jumps, the hessian takes the value of the branch the gradient takes."""
    d = np.array([-1.0, 0.0, 1.0, 2.0])  # pred - target, target 0
    z = np.zeros(4)
    cases = [  # (loss, options, expected hessian at d)
        ("mae", {}, [0, 0, 0, 0]),
        ("huber", {"delta": 1.0}, [1, 1, 1, 0]),       # |d| <= delta is quadratic
        ("smooth_l1", {"beta": 1.0}, [0, 1, 0, 0]),    # |d| < beta is quadratic
        ("smooth_l1", {"beta": 0.0}, [0, 0, 0, 0]),
        ("quantile", {"q": 0.3}, [0, 0, 0, 0]),
    ]
    for name, call, expected in cases:
        _, hess = _object(name, "sum", {**call, "backend": backend}).gradient_hessian(d, z)
        np.testing.assert_array_equal(hess, expected, err_msg=name)
    y = np.ones(4)  # margin m = 1 - pred: 0 at pred = 1
    for name, expected in (("hinge", [0, 0, 0, 0]), ("squared_hinge", [2, 2, 0, 0])):
        _, hess = _object(name, "sum", {"backend": backend}).gradient_hessian(
            np.array([-1.0, 0.0, 1.0, 2.0]), y)
        np.testing.assert_array_equal(hess, expected, err_msg=name)


# --- hypothesis: random shapes and values, native against the NumPy backend --

def _hyp_arrays(draw, name, shape, dtype):
    n = int(np.prod(shape))
    width = 32 if dtype == np.float32 else 64
    spec = BY_NAME[name]
    if spec.pred == "probability":
        pe = st.floats(0, 1, width=width)
        te = st.floats(0, 1, width=width)
    elif spec.pred == "logit":
        pe = st.floats(-200, 200, width=width)
        te = st.floats(0, 1, width=width)
    elif spec.target == "labels":
        pe = st.floats(-1e3, 1e3, width=width)
        te = st.sampled_from(draw(st.sampled_from([(-1.0, 1.0), (0.0, 1.0)])))
    else:
        pe = st.floats(-1e4, 1e4, width=width)
        te = st.floats(-1e4, 1e4, width=width)
    small = n <= 64
    if small:
        p = np.array(draw(st.lists(pe, min_size=n, max_size=n)), dtype).reshape(shape)
        t = np.array(draw(st.lists(te, min_size=n, max_size=n)), dtype).reshape(shape)
    else:  # large: hypothesis picks the seed, numpy fills the values
        r = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
        if spec.pred == "probability":
            p = r.uniform(0, 1, shape)
        else:
            p = r.normal(scale=scale, size=shape)
        if spec.target == "labels":
            t = r.choice([-1.0, 1.0], shape)
        elif spec.target == "probability":
            t = r.uniform(0, 1, shape)
        else:
            t = r.normal(scale=scale, size=shape)
        p, t = p.astype(dtype), t.astype(dtype)
    return p, t


@needs_native
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_hypothesis_native_matches_numpy(data):
    name = data.draw(st.sampled_from(sorted(LOSSES)))
    dtype = data.draw(st.sampled_from(DTYPES))
    shape = data.draw(st.one_of(
        st.tuples(st.integers(0, 64)),
        st.tuples(st.integers(0, 8), st.integers(1, 8)),
        st.tuples(st.integers(64, 12000)),           # crosses 2048-element blocks
        st.tuples(st.integers(1, 500), st.integers(2, 30)),
    ))
    reduction = data.draw(st.sampled_from(REDUCTIONS))
    p, t = _hyp_arrays(data.draw, name, shape, dtype)
    call = {}
    for o in BY_NAME[name].options:  # each option: left out, or drawn from its range
        if data.draw(st.booleans()):
            lo = -10.0 if o.low is None else o.low + (0.01 if o.low_open else 0.0)
            hi = min(10.0 if o.high is None else o.high - (0.01 if o.high_open else 0.0),
                     lo + 10.0)
            call[o.name] = data.draw(st.sampled_from([o.default, *o.examples])
                                     | st.floats(lo, hi))
    r = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kw = {}
    if data.draw(st.booleans()):  # sample weights: full shape or one per row
        wshape = shape[:1] if (len(shape) == 2 and data.draw(st.booleans())) else shape
        kw["sample_weight"] = r.uniform(0, 3, wshape).astype(dtype)
    if data.draw(st.booleans()):
        kw["grad_output"] = (r.uniform(-2, 2, shape).astype(dtype) if reduction == "none"
                             else data.draw(st.floats(-5, 5)))
    fn = LOSSES[name][0]
    ln, gn = fn(p, t, reduction=reduction, return_grad=True, backend="native", **call, **kw)
    lr, gr = fn(p, t, reduction=reduction, return_grad=True, backend="numpy", **call, **kw)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    _close(gn, gr, dtype, rtol)
    _close(ln, lr, dtype, rtol)
    assert np.shape(ln) == np.shape(lr) and gn.shape == p.shape


# --- NaN / Inf propagation -------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,opts", CASES)
def test_nan_propagates(name, opts, dtype, rng, backends):
    fn = LOSSES[name][0]
    p, t, call = _make(name, opts, (6, 4), dtype, rng)
    p[2, 1] = np.nan
    if BY_NAME[name].target != "labels":  # hinge targets must be labels
        t[4, 3] = np.nan
    for backend in backends:
        l, g = fn(p, t, reduction="none", return_grad=True, backend=backend, **call)
        nan = np.isnan(p) | np.isnan(t)
        assert np.all(np.isnan(l[nan])) and np.all(np.isnan(g[nan])), backend
        assert np.all(np.isfinite(l[~nan])) and np.all(np.isfinite(g[~nan])), backend
        for red in ("mean", "sum"):
            l, g = fn(p, t, reduction=red, return_grad=True, backend=backend, **call)
            assert np.isnan(l) and np.all(np.isnan(g[nan])) and np.all(np.isfinite(g[~nan]))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,opts", [c for c in CASES
                                       if BY_NAME[c.values[0]].pred != "probability"])
def test_inf_propagates(name, opts, dtype, rng, backends):
    """+-Inf predictions: native equals the reference (Inf where the loss is
    infinite; NaN where the formula meets 0 * Inf, as in PyTorch)."""
    fn = LOSSES[name][0]
    p, t, call = _make(name, opts, (6, 4), dtype, rng)
    p[1, 1], p[3, 2] = np.inf, -np.inf
    el, eg = _expected(name, call, p, t, "none")
    for backend in backends:
        l, g = fn(p, t, reduction="none", return_grad=True, backend=backend, **call)
        _close(l, el, dtype)
        _close(g, eg, dtype)
        if BY_NAME[name].pred == "real" and BY_NAME[name].target == "real":
            assert np.isinf(l[1, 1]) and np.isinf(l[3, 2])  # regression losses grow without bound
            assert np.isinf(fn(p, t, backend=backend, **call))


def test_nan_grad_output_propagates(rng, backends):
    p, t = rng.normal(size=8), rng.normal(size=8)
    for backend in backends:
        _, g = fastloss.mse(p, t, return_grad=True, grad_output=np.nan, backend=backend)
        assert np.all(np.isnan(g))
        go = np.ones(8)
        go[3] = np.inf
        _, g = fastloss.mse(p, t, reduction="none", return_grad=True, grad_output=go,
                            backend=backend)
        assert np.isinf(g[3]) and np.all(np.isfinite(np.delete(g, 3)))


def test_bce_inf_probability_is_rejected():
    with pytest.raises(ValueError, match="input"):
        fastloss.binary_cross_entropy(np.array([np.inf, 0.5]), np.array([1.0, 0.0]))


# --- empty input: what PyTorch gives ------------------------------------------------

@pytest.mark.parametrize("shape", [(0,), (0, 3)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,opts", CASES)
def test_empty_input(name, opts, dtype, shape, backends):
    fn = LOSSES[name][0]
    p = np.empty(shape, dtype)
    call = {k: v for k, v in opts.items() if not k.startswith("_")}
    if call.get("pos_weight") == "array":
        call["pos_weight"] = np.ones(shape[-1] or 1, dtype)[: shape[-1]] if len(shape) == 2 \
            else 2.0
    for backend in backends:
        for go in (None, 2.0):
            l, g = fn(p, p, reduction="mean", return_grad=True, grad_output=go,
                      backend=backend, **call)
            assert np.isnan(l) and l.dtype == dtype and g.shape == shape and g.dtype == dtype
        l, g = fn(p, p, reduction="sum", return_grad=True, backend=backend, **call)
        assert l == 0 and l.dtype == dtype and g.shape == shape
        l, g = fn(p, p, reduction="none", return_grad=True, backend=backend, **call)
        assert l.shape == shape and l.dtype == dtype and g.shape == shape


# --- layouts: non-contiguous, sliced, Fortran, big-endian -------------------

def _layouts(a):
    """Views/copies of the 2-D array ``a`` holding the same values, in other layouts."""
    wide = np.zeros((a.shape[0], 2 * a.shape[1] + 1), a.dtype)
    wide[:, 1::2] = a
    rows = np.zeros((2 * a.shape[0], a.shape[1]), a.dtype)
    rows[::2] = a
    return {
        "fortran": np.asfortranarray(a),
        "strided": wide[:, 1::2],
        "row-sliced": rows[::2],
        "transposed": np.ascontiguousarray(a.T).T,
        "big-endian": a.astype(a.dtype.newbyteorder(">")),
        "readonly": np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape),
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,opts", CASES)
def test_layouts_give_the_same_answer(name, opts, dtype, rng, backends):
    fn = LOSSES[name][0]
    p, t, call = _make(name, opts, (23, 7), dtype, rng)
    w = rng.uniform(0, 2, p.shape).astype(dtype)
    go = rng.uniform(-1, 1, p.shape).astype(dtype)
    for backend in backends:
        base = fn(p, t, reduction="none", sample_weight=w, grad_output=go, return_grad=True,
                  backend=backend, **call)
        base_mean = fn(p, t, sample_weight=w, return_grad=True, backend=backend, **call)
        lp, lt, lw, lg = (_layouts(a) for a in (p, t, w, go))
        for kind in lp:
            assert not lp[kind].flags.c_contiguous or kind == "big-endian" or kind == "readonly"
            got = fn(lp[kind], lt[kind], reduction="none", sample_weight=lw[kind],
                     grad_output=lg[kind], return_grad=True, backend=backend, **call)
            np.testing.assert_array_equal(got[0], base[0], err_msg=f"{backend} {kind}")
            np.testing.assert_array_equal(got[1], base[1], err_msg=f"{backend} {kind}")
            assert got[1].flags.c_contiguous and got[1].dtype.isnative
            got = fn(lp[kind], t, sample_weight=w, return_grad=True, backend=backend, **call)
            assert got[0] == base_mean[0]
            np.testing.assert_array_equal(got[1], base_mean[1])


def test_inputs_are_not_modified(rng, backends):
    p, t = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    w = rng.uniform(size=50)
    pc, tc, wc = p.copy(), t.copy(), w.copy()
    for backend in backends:
        fastloss.huber(p, t, sample_weight=w, return_grad=True, backend=backend)
    np.testing.assert_array_equal(p, pc)
    np.testing.assert_array_equal(t, tc)
    np.testing.assert_array_equal(w, wc)


# --- out= --------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,opts", DEFAULT_CASES)
def test_out_is_filled_and_returned(name, opts, reduction, rng, backends):
    fn = LOSSES[name][0]
    p, t, call = _make(name, opts, (11, 3), np.float32, rng)
    for backend in backends:
        out = np.full(p.shape, np.nan, np.float32)
        l, g = fn(p, t, reduction=reduction, return_grad=True, out=out, backend=backend)
        assert g is out
        l2, g2 = fn(p, t, reduction=reduction, return_grad=True, backend=backend)
        np.testing.assert_array_equal(out, g2)
        np.testing.assert_array_equal(l, l2)


@pytest.mark.parametrize("name,opts", DEFAULT_CASES)
def test_out_may_be_the_prediction_itself(name, opts, rng, backends):
    """In-place gradient (out=pred) is allowed and correct; partial overlap is refused."""
    fn = LOSSES[name][0]
    p, t, call = _make(name, opts, (70_000,), np.float32, rng)  # several blocks, parallel
    for backend in backends:
        expect_l, expect_g = fn(p, t, return_grad=True, backend=backend)
        buf = p.copy()
        l, g = fn(buf, t, return_grad=True, out=buf, backend=backend)
        assert g is buf and l == expect_l
        np.testing.assert_array_equal(buf, expect_g)
        big = np.concatenate([p, p[:1]])
        with pytest.raises(ValueError, match="out overlaps pred"):
            fn(big[:-1], t, return_grad=True, out=big[1:], backend=backend)
        tt = t.copy()
        with pytest.raises(ValueError, match="out overlaps target"):
            fn(p[1:], tt[:-1], return_grad=True, out=tt[1:], backend=backend)


# --- threads: bitwise identical for any thread count, and run to run -------------

@needs_native
@pytest.mark.parametrize("name,opts", DEFAULT_CASES)
def test_thread_count_independent(name, opts):
    rng = np.random.default_rng(7)
    p, t, call = _make(name, opts, (150_000, 2), np.float32, rng)
    w = rng.uniform(size=150_000).astype(np.float32)
    fn = LOSSES[name][0]
    results = []
    for nt in (1, 2, 2, 3):
        with fastloss.num_threads(nt):
            results.append(fn(p, t, sample_weight=w, return_grad=True, backend="native"))
    for loss, grad in results[1:]:
        assert loss == results[0][0]  # bitwise
        np.testing.assert_array_equal(grad, results[0][1])


# --- float32 sums stay accurate -------------------------------------------------

@needs_native
@pytest.mark.parametrize("name", ["mse", "huber", "binary_cross_entropy_with_logits"])
def test_float32_sum_accuracy(name):
    """float32 'mean' within 1e-6 relative of float64 on 2M elements (10M in bench/)."""
    rng = np.random.default_rng(3)
    n = 2_000_000
    fn = LOSSES[name][0]
    if name == "binary_cross_entropy_with_logits":
        p = rng.normal(scale=3, size=n).astype(np.float32)
        t = (rng.uniform(size=n) < 0.5).astype(np.float32)
    else:
        p = rng.normal(size=n).astype(np.float32)
        t = rng.normal(size=n).astype(np.float32)
    exact = fn(p.astype(np.float64), t.astype(np.float64), backend="native")
    got = fn(p, t, backend="native")
    assert got.dtype == np.float32
    assert abs(float(got) - exact) <= 1e-6 * abs(exact)

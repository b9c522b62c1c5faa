"""Hostile input for the classification family (issue 15): out= overlapping the
inputs, non-finite class weights, labels outside int64, torch/Keras parity gaps,
and a property test of the out= overlap rule over every function with out=."""
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import fastloss as fl
from fastloss.classification import (categorical_cross_entropy, cross_entropy,
                                     log_softmax, log_softmax_backward, multi_margin,
                                     nll_loss, softmax, softmax_backward)

try:
    import torch
    F = torch.nn.functional
except ImportError:     # the torch comparisons skip; the rest runs
    torch = F = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")


# --- out= overlapping an input ---------------------------------------------------------

def _logits(rng, n=6, c=5, dtype=np.float64):
    return (rng.normal(size=(n, c)) * 2).astype(dtype)


def _shifted(a, shift):
    """A copy of ``a`` living in a buffer that ``out = buf[:a.size]`` partly overlaps."""
    buf = np.zeros(a.size + abs(shift) + 1, a.dtype)
    view = buf[shift:shift + a.size].reshape(a.shape)
    view[...] = a
    return buf, view


@pytest.mark.parametrize("shift", [1, 3])
def test_cross_entropy_out_partly_overlapping_logits_raises(rng, backend, shift):
    buf, z = _shifted(_logits(rng), shift)
    out = buf[:z.size].reshape(z.shape)
    with pytest.raises(ValueError, match="out overlaps logits"):
        cross_entropy(z, np.array([0, 1, 2, 3, 4, 0]), return_grad=True, out=out, backend=backend)


def test_cross_entropy_out_partly_overlapping_probability_target_raises(rng, backend):
    z = _logits(rng)
    t = np.full(z.shape, 0.2)
    buf, t = _shifted(t, 2)
    out = buf[:z.size].reshape(z.shape)
    with pytest.raises(ValueError, match="out overlaps target"):
        cross_entropy(z, t, return_grad=True, out=out, backend=backend)


def test_cross_entropy_out_exactly_the_probability_target_raises(rng, backend):
    z = _logits(rng)
    t = np.full(z.shape, 0.2)
    with pytest.raises(ValueError, match="out overlaps target"):
        cross_entropy(z, t, return_grad=True, out=t, backend=backend)


def test_cross_entropy_out_overlapping_weight_raises(rng, backend):
    z = rng.normal(size=5)
    buf = np.ones(7)
    w, out = buf[2:7], buf[0:5]
    with pytest.raises(ValueError, match="out overlaps weight"):
        cross_entropy(z, 2, weight=w, return_grad=True, out=out, backend=backend)
    with pytest.raises(ValueError, match="out overlaps weight"):
        cross_entropy(z, 2, weight=out, return_grad=True, out=out, backend=backend)


def test_cross_entropy_out_overlapping_labels_raises(rng, backend):
    buf = np.zeros(6 * 5, np.int64)
    labels = buf[:6]
    labels[:] = [0, 1, 2, 3, 4, 0]
    out = buf.view(np.float64).reshape(6, 5)
    with pytest.raises(ValueError, match="out overlaps target"):
        cross_entropy(_logits(rng), labels, return_grad=True, out=out, backend=backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [5, 40, 9000])
def test_cross_entropy_out_exactly_the_logits_same_result(rng, backend, dtype, c):
    z = _logits(rng, 4, c, dtype)
    y = np.array([0, 1, 2, 3])
    for kw in ({}, {"label_smoothing": 0.1, "weight": rng.random(c).astype(dtype)}):
        loss, g = cross_entropy(z, y, return_grad=True, backend=backend, **kw)
        z2 = z.copy()
        loss2, g2 = cross_entropy(z2, y, return_grad=True, out=z2, backend=backend, **kw)
        assert g2 is z2 and loss2 == loss
        np.testing.assert_array_equal(g2, g)


@pytest.mark.parametrize("what", ["target", "weight", "labels"])
def test_cross_entropy_inplace_with_target_or_weight_overlapping_logits_raises(rng, backend, what):
    z = _logits(rng)
    if what == "target":
        buf, z = _shifted(z, 0)
        t, w = buf[1:1 + z.size].reshape(z.shape), None
    elif what == "weight":
        t, w = np.array([0, 1, 2, 3, 4, 0]), z[1, :]
    else:
        buf = np.zeros(z.size, np.int64)
        t, w = buf[:6], None
        z = buf.view(np.float64).reshape(z.shape)
        z[...] = 0.0       # labels 0: valid until a gradient is written
    name = "weight" if what == "weight" else "target"
    with pytest.raises(ValueError, match=f"logits overlaps {name}"):
        cross_entropy(z, t, weight=w, return_grad=True, inplace=True, backend=backend)
    with pytest.raises(ValueError, match="logits overlaps target"):
        cross_entropy(z, z, return_grad=True, inplace=True, backend=backend)


@pytest.mark.parametrize("fn", [softmax, log_softmax])
def test_softmax_out_partly_overlapping_input_raises_exact_alias_works(rng, backend, fn):
    x = rng.normal(size=(4, 9000))
    buf, xv = _shifted(x, 5)
    with pytest.raises(ValueError, match="out overlaps x"):
        fn(xv, out=buf[:x.size].reshape(x.shape), backend=backend)
    ref = fn(x, backend=backend)
    x2 = x.copy()
    assert fn(x2, out=x2, backend=backend) is x2
    np.testing.assert_array_equal(x2, ref)


@pytest.mark.parametrize("bw,fw", [(softmax_backward, softmax),
                                   (log_softmax_backward, log_softmax)])
def test_softmax_backward_out_overlaps_raise_exact_alias_works(rng, backend, bw, fw):
    x = rng.normal(size=(4, 50))
    y = fw(x)
    go = rng.normal(size=x.shape)
    ref = bw(y, go, backend=backend)
    for which in ("y", "grad_output"):
        buf, yv = _shifted(y, 3)
        gv = go
        if which == "grad_output":
            buf, gv = _shifted(go, 3)
            yv = y
        out = buf[:x.size].reshape(x.shape)
        name = "grad_output" if which == "grad_output" else ("y" if bw is softmax_backward
                                                              else "log_probs")
        with pytest.raises(ValueError, match=f"out overlaps {name}"):
            bw(yv, gv, out=out, backend=backend)
        y2, g2 = y.copy(), go.copy()
        alias = y2 if which == "y" else g2
        assert bw(y2, g2, out=alias, backend=backend) is alias
        np.testing.assert_array_equal(alias, ref)


def test_nll_categorical_multi_margin_out_partial_overlap_raises(rng, backend):
    lp = log_softmax(_logits(rng))
    y = np.array([0, 1, 2, 3, 4, 0])
    p = softmax(_logits(rng))
    for fn, x, name in ((nll_loss, lp, "log_probs"), (categorical_cross_entropy, p, "probs"),
                        (multi_margin, lp, "input")):
        buf, xv = _shifted(x, 2)
        with pytest.raises(ValueError, match=f"out overlaps {name}"):
            fn(xv, y, return_grad=True, out=buf[:x.size].reshape(x.shape), backend=backend)
        ref = fn(x, y, return_grad=True, backend=backend)
        x2 = x.copy()
        loss, g = fn(x2, y, return_grad=True, out=x2, backend=backend)
        assert g is x2 and loss == ref[0]
        np.testing.assert_array_equal(g, ref[1])
    t = np.eye(5)[y]
    with pytest.raises(ValueError, match="out overlaps target"):
        categorical_cross_entropy(p, t, return_grad=True, out=t, backend=backend)
    w = np.ones(5)
    with pytest.raises(ValueError, match="out overlaps weight"):
        nll_loss(lp[0], 1, weight=w, return_grad=True, out=w, backend=backend)
    with pytest.raises(ValueError, match="out overlaps weight"):
        multi_margin(lp[0], 1, weight=w, return_grad=True, out=w, backend=backend)


# --- a class weight that is not finite, for a class no row uses ------------------------

@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
@pytest.mark.parametrize("c", [4, 100])
def test_cross_entropy_nonfinite_weight_of_unused_class_gives_finite_gradient(
        rng, backend, dtype, bad, c):
    z = _logits(rng, 6, c, dtype)
    y = np.array([0, 1, 3, 1, 0, 3])
    w = rng.random(c).astype(dtype) + 0.5
    w[2] = bad
    loss, g = cross_entropy(z, y, weight=w, return_grad=True, backend=backend)
    zt = torch.tensor(z, requires_grad=True)
    lt = F.cross_entropy(zt, torch.tensor(y), weight=torch.tensor(w))
    lt.backward()
    assert np.all(np.isfinite(g))
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss, lt.item(), **tol)
    np.testing.assert_allclose(g, zt.grad.numpy(), **tol)


# --- labels outside int64, ignore_index outside int64 ----------------------------------

def _label_calls():
    z = np.zeros((3, 4))
    p = np.full((3, 4), 0.25)
    return [lambda t: cross_entropy(z, t), lambda t: nll_loss(z, t),
            lambda t: categorical_cross_entropy(p, t), lambda t: multi_margin(z, t)]


@pytest.mark.parametrize("k", range(4))
def test_uint64_label_above_int64_is_reported_with_its_true_value(k):
    fn = _label_calls()[k]
    for big in (2 ** 64 - 100, 2 ** 64 - 5, 2 ** 63):
        t = np.array([0, big, 1], dtype=np.uint64)   # 2^64 - 100 wraps to ignore_index -100
        with pytest.raises(ValueError, match=f"target holds class index {big} at position 1"):
            fn(t)


@pytest.mark.parametrize("k", [2, 3])
def test_int64_min_label_is_refused_where_nothing_is_ignored(k):
    with pytest.raises(ValueError, match=f"target holds class index {-2 ** 63} at position 1"):
        _label_calls()[k](np.array([0, -2 ** 63, 1]))


@needs_torch
@pytest.mark.parametrize("ignore_index", [2 ** 63, -2 ** 63 - 1, 2 ** 64 - 100])
def test_ignore_index_outside_int64_raises_valueerror(ignore_index):
    z = np.zeros((3, 4))
    for fn in (cross_entropy, nll_loss):
        with pytest.raises(ValueError, match="ignore_index"):
            fn(z, np.array([0, 1, 2]), ignore_index=ignore_index)
    import fastloss.torch.functional as tf
    with pytest.raises(ValueError, match="ignore_index"):
        tf.cross_entropy(torch.zeros(3, 4), torch.tensor([0, 1, 2]), ignore_index=ignore_index)


# --- torch parity -----------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [3.0, -1e30, np.inf, -np.inf, np.nan])
def test_softmax_of_a_scalar_as_torch(backend, dtype, value):
    x = np.array(value, dtype)
    for fn, tfn in ((softmax, torch.softmax), (log_softmax, torch.log_softmax)):
        for axis in (0, -1):
            y = fn(x, axis=axis, backend=backend)
            assert y.shape == () and y.dtype == dtype
            np.testing.assert_array_equal(y, tfn(torch.tensor(x), axis).numpy())
        out = np.empty((), dtype)
        assert fn(x, out=out, backend=backend) is out
        np.testing.assert_array_equal(out, y)
    for bw, fw, tfn in ((softmax_backward, softmax, torch.softmax),
                        (log_softmax_backward, log_softmax, torch.log_softmax)):
        xt = torch.tensor(x, requires_grad=True)
        tfn(xt, 0).backward(torch.tensor(np.array(2.5, dtype)))
        g = bw(fw(x), np.array(2.5, dtype), backend=backend)
        assert g.shape == ()
        np.testing.assert_array_equal(g, xt.grad.numpy())
    with pytest.raises(ValueError, match="axis"):
        softmax(x, axis=1, backend=backend)


@needs_torch
@pytest.mark.parametrize("fname", ["cross_entropy", "nll_loss"])
def test_unbatched_reduction_none_with_0d_grad_output_as_torch(rng, backend, fname):
    x = rng.normal(size=5)
    fn = {"cross_entropy": cross_entropy, "nll_loss": nll_loss}[fname]
    xt = torch.tensor(x, requires_grad=True)
    lt = getattr(F, fname)(xt, torch.tensor(2), reduction="none")
    lt.backward(torch.tensor(3.0))
    for go in (np.array(3.0), np.array(3.0, np.float32), torch.tensor(3.0), 3.0):
        loss, g = fn(x, np.int64(2), reduction="none", return_grad=True, grad_output=go,
                     backend=backend)
        assert np.shape(loss) == ()
        np.testing.assert_allclose(loss, lt.item(), rtol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    with pytest.raises(TypeError, match="grad_output"):
        fn(x, np.int64(2), reduction="none", return_grad=True, grad_output=np.array(True))


@needs_torch
@pytest.mark.parametrize("shape,tshape", [((5,), (1,)), ((5,), ()), ((1, 5), ()),
                                          ((1, 5), (1,))])
@pytest.mark.parametrize("red", ["none", "mean", "sum"])
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_single_sample_targets_as_torch(rng, backend, shape, tshape, red, p):
    x = rng.normal(size=shape)
    t = np.array(3).reshape(tshape)
    xt = torch.tensor(x, requires_grad=True)
    lt = F.multi_margin_loss(xt, torch.tensor(t), p=p, reduction=red)
    go = rng.normal(size=lt.shape)
    lt.backward(torch.tensor(go))
    loss, g = multi_margin(x, t, p=p, reduction=red, return_grad=True,
                           grad_output=go if red == "none" else float(go), backend=backend)
    assert np.shape(loss) == tuple(lt.shape) and g.shape == x.shape
    np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="target"):
        multi_margin(x, np.array([1, 2]), backend=backend)


# --- Keras: CategoricalCrossentropy renormalises the probabilities -----------------------

def _keras_cce(p, t, eps):
    """keras.losses.categorical_crossentropy(from_logits=False), written out: divide by
    the row sum, clip to [eps, 1 - eps], -sum t log."""
    q = p / p.sum(axis=-1, keepdims=True)
    return -np.sum(t * np.log(np.clip(q, eps, 1 - eps)), axis=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_categorical_cross_entropy_normalize_as_keras(rng, backend, dtype):
    p = rng.random((6, 5)).astype(dtype) * 3       # scores, rows not summing to 1
    t = np.eye(5, dtype=dtype)[[0, 1, 2, 3, 4, 0]]
    loss = categorical_cross_entropy(p, t, normalize=True, reduction="none", backend=backend)
    np.testing.assert_allclose(loss, _keras_cce(p.astype(np.float64), t, 1e-7),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    # default: no renormalisation (as before), p above 1 refused
    with pytest.raises(ValueError, match="probs"):
        categorical_cross_entropy(p, t, backend=backend)
    # normalised rows: the same as without normalize; integer targets too
    q = p / p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(categorical_cross_entropy(q, t, normalize=True, backend=backend),
                               categorical_cross_entropy(q, t, backend=backend), rtol=1e-6)
    np.testing.assert_allclose(
        categorical_cross_entropy(p, np.argmax(t, 1), normalize=True, backend=backend),
        categorical_cross_entropy(p, t, normalize=True, backend=backend), rtol=1e-6)
    with pytest.raises(ValueError, match="probs"):
        categorical_cross_entropy(-p, t, normalize=True, backend=backend)
    with pytest.raises(TypeError, match="normalize"):
        categorical_cross_entropy(p, t, normalize=1, backend=backend)


# --- property: out= overlapping any input either works exactly or raises ValueError ---------

def _calls():
    """(name, call, main input, other inputs, the inputs out may be exactly, target kind,
    K-dim inputs allowed) for every classification function with out=."""
    def ce(a, out, be):
        return cross_entropy(a["logits"], a["target"], weight=a.get("weight"),
                             return_grad=True, out=out, backend=be, label_smoothing=0.1)

    def ce_soft(a, out, be):
        return cross_entropy(a["logits"], a["target"], weight=a.get("weight"),
                             return_grad=True, out=out, backend=be)

    def ce_none(a, out, be):
        return cross_entropy(a["logits"], a["target"], reduction="none", return_grad=True,
                             grad_output=a["grad_output"], out=out, backend=be)

    def sm(fn):
        return lambda a, out, be: fn(a["x"], axis=a["axis"], out=out, backend=be)

    def smb(fn, yname):
        return lambda a, out, be: fn(a[yname], a["grad_output"], axis=a["axis"], out=out,
                                     backend=be)

    def nll(a, out, be):
        return nll_loss(a["log_probs"], a["target"], weight=a.get("weight"),
                        return_grad=True, out=out, backend=be)

    def cce(a, out, be):
        return categorical_cross_entropy(a["probs"], a["target"], return_grad=True, out=out,
                                         backend=be)

    def mm(a, out, be):
        return multi_margin(a["input"], a["target"], weight=a.get("weight"),
                            return_grad=True, out=out, backend=be)

    return [
        ("cross_entropy", ce, "logits", ("target", "weight"), ("logits",), "labels", True),
        ("cross_entropy_soft", ce_soft, "logits", ("target", "weight"), ("logits",), "probs",
         True),
        ("cross_entropy_none", ce_none, "logits", ("target", "grad_output"), ("logits",),
         "labels", True),
        ("softmax", sm(softmax), "x", (), ("x",), None, True),
        ("log_softmax", sm(log_softmax), "x", (), ("x",), None, True),
        ("softmax_backward", smb(softmax_backward, "y"), "y", ("grad_output",),
         ("y", "grad_output"), None, True),
        ("log_softmax_backward", smb(log_softmax_backward, "log_probs"), "log_probs",
         ("grad_output",), ("log_probs", "grad_output"), None, True),
        ("nll_loss", nll, "log_probs", ("target", "weight"), ("log_probs",), "labels", True),
        ("categorical_cross_entropy", cce, "probs", ("target",), ("probs",), "probs", False),
        ("multi_margin", mm, "input", ("target", "weight"), ("input",), "labels", False),
    ]


_CALLS = _calls()


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(k=st.integers(0, len(_CALLS) - 1), n=st.integers(1, 5), c=st.integers(1, 12),
       f32=st.booleans(), layout=st.sampled_from(["unbatched", "2d", "kdim"]),
       which=st.integers(0, 3), shift=st.integers(-40, 40), seed=st.integers(0, 2 ** 16),
       native=st.booleans())
def test_property_out_overlapping_any_input_works_exactly_or_raises(
        k, n, c, f32, layout, which, shift, seed, native):
    name, call, main, others, aliasable, target_kind, kdim_ok = _CALLS[k]
    be = "native" if native and fl.native_available() else "numpy"
    dtype, itype = (np.float32, np.int32) if f32 else (np.float64, np.int64)
    rng = np.random.default_rng(seed)
    if layout == "kdim" and not kdim_ok:
        layout = "2d"
    shape = {"unbatched": (c,), "2d": (n, c), "kdim": (n, c, 3)}[layout]
    axis = 0 if layout == "unbatched" else 1
    lshape = shape[:axis] + shape[axis + 1:]
    a = {"axis": axis}
    x = rng.normal(size=shape).astype(dtype)
    if main in ("probs", "y"):
        x = softmax(x, axis=axis)
    elif main == "log_probs":
        x = log_softmax(x, axis=axis)
    a[main] = x
    if target_kind == "labels":
        a["target"] = rng.integers(0, c, size=lshape).astype(itype)
    elif target_kind == "probs":
        a["target"] = softmax(rng.normal(size=shape).astype(dtype), axis=axis)
    if "weight" in others:
        a["weight"] = (rng.random(c) + 0.5).astype(dtype)
    if "grad_output" in others:
        a["grad_output"] = rng.normal(size=x.shape if name.endswith("backward") else lshape
                                      ).astype(dtype)
    expected = call(a, None, be)
    exp_grad = expected[1] if isinstance(expected, tuple) else expected
    # out and one input (the victim; int labels as a view of the same bytes) in one
    # buffer, the victim at a random offset from out
    victims = [m for m in (main,) + others if m in a]
    victim = victims[which % len(victims)]
    vsrc = a[victim]
    size = int(np.prod(shape))
    lo = min(0, shift)
    buf = np.zeros(max(size, vsrc.size) + abs(shift) + size, dtype)
    out = buf[-lo:-lo + size].reshape(shape)
    vbuf = buf if vsrc.dtype == dtype else buf.view(itype)
    vv = vbuf[shift - lo:shift - lo + vsrc.size].reshape(vsrc.shape)
    vv[...] = vsrc
    overlaps = np.shares_memory(out, vv)
    exact = overlaps and shift == 0 and vv.shape == out.shape and vv.dtype == out.dtype
    try:
        got = call(dict(a, **{victim: vv}), out, be)
    except ValueError as e:
        assert overlaps and not (exact and victim in aliasable), (name, victim, shift, e)
        assert f"out overlaps {victim}" in str(e)
        event("raised ValueError (partial overlap)" if not exact
              else "raised ValueError (exact alias not supported)")
        return
    assert not overlaps or (exact and victim in aliasable), (name, victim, shift)
    event("exact alias: same result" if overlaps else "no overlap: same result")
    g = got[1] if isinstance(got, tuple) else got
    assert g is out
    np.testing.assert_array_equal(g, exp_grad)
    if isinstance(got, tuple):
        np.testing.assert_array_equal(got[0], expected[0])


# --- every error for bad input: ValueError/TypeError naming the argument ---------------------

_RAGGED = [[1], [1, 2]]


@pytest.mark.parametrize("fname", ["cross_entropy", "nll_loss", "categorical_cross_entropy",
                                   "multi_margin"])
def test_ragged_or_odd_arguments_raise_errors_naming_them(backend, fname):
    fn = getattr(fl, fname)
    x = np.full((3, 4), 0.25)
    y = np.array([0, 1, 2])
    cases = [("target", dict(target=_RAGGED)), ("target", dict(target=[0, 1, 2 ** 64])),
             ("target", dict(target=np.array(["a", "b", "c"]))),
             ("grad_output", dict(grad_output=_RAGGED, reduction="none")),
             ("grad_output", dict(grad_output=np.array(True))),
             ("grad_output", dict(grad_output=object())),
             ("grad_output", dict(grad_output=np.ones(2), reduction="none"))]
    if fname != "categorical_cross_entropy":
        cases += [("weight", dict(weight=_RAGGED)), ("weight", dict(weight="abc"))]
    for argname, kw in cases:
        kw = dict(kw)
        t = kw.pop("target", y)
        with pytest.raises((ValueError, TypeError), match=argname):
            fn(x, t, return_grad=True, backend=backend, **kw)
    with pytest.raises((ValueError, TypeError), match="probs|input|logits|log_probs"):
        fn(_RAGGED, y, backend=backend)
    for bw in (fl.softmax_backward, fl.log_softmax_backward):
        with pytest.raises((ValueError, TypeError), match="grad_output"):
            bw(x, _RAGGED, backend=backend)

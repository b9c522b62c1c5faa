"""Bad input to the element-wise losses: a ValueError/TypeError naming the
argument, raised in Python before any native call, with no output written."""
import numpy as np
import pytest

import fastloss
from fastloss._elementwise_spec import BY_NAME, LOSSES as SPECS

P = np.linspace(0.1, 0.9, 12).reshape(4, 3)
T = np.linspace(0.9, 0.1, 12).reshape(4, 3)
Y = np.array([[1.0, -1.0, 1.0]] * 4)
ALL = [getattr(fastloss, spec.name) for spec in SPECS]
IDS = [f.__name__ for f in ALL]


def _target(fn):
    return Y if BY_NAME[fn.__name__].target == "labels" else T


def _pred_name(fn):
    return BY_NAME[fn.__name__].pred_name


def _option_values(o):
    """(values giving ValueError, values that must work) for option ``o`` of the table."""
    bad = [np.nan, np.inf, -np.inf]
    if o.low is not None:
        bad += [o.low - 1.0] + ([o.low] if o.low_open else [])
    if o.high is not None:
        bad += [o.high + 0.5] + ([o.high] if o.high_open else [])
    ok = [o.default, *o.examples] + ([o.low] if o.low is not None and not o.low_open else [])
    if o.per_element:  # an array along the last axis: one bad entry is enough
        bad += [np.array([o.default, v, o.default]) for v in (np.nan, o.low - 1.0)]
        ok += [np.array([o.default, *o.examples, o.default][:3])]
    return bad, ok


OPTIONS = [pytest.param(getattr(fastloss, spec.name), o.name, *_option_values(o),
                        id=f"{spec.name}-{o.name}")
           for spec in SPECS for o in spec.options]


@pytest.mark.parametrize("fn", ALL, ids=IDS)
def test_common_bad_arguments(fn, backend):
    t = _target(fn)
    pname = _pred_name(fn)

    def call(p=P, tt=t, **kw):
        return fn(p, tt, backend=backend, **kw)

    cases = [
        # mismatched shapes
        (ValueError, "target", dict(tt=t[:, :2])),
        (ValueError, "target", dict(tt=t.T)),
        (ValueError, "target", dict(tt=t.reshape(-1))),
        # predictions must be floats (the 16-bit ones: tests/test_losses_half.py)
        (TypeError, pname, dict(p=(P * 10).astype(np.int64))),
        (TypeError, pname, dict(p=P > 0.5)),
        (TypeError, pname, dict(p=P.astype(np.complex128))),
        (TypeError, pname, dict(p=P.astype(object))),
        (TypeError, pname, dict(p=P.astype(np.int16))),
        (TypeError, pname, dict(p=np.array([["a"] * 3] * 4))),
        (TypeError, "target", dict(tt=t.astype(np.complex64))),
        (TypeError, "target", dict(tt=t.astype(object))),
        # out=
        (ValueError, "out", dict(return_grad=True, out=np.empty((3, 4)))),
        (TypeError, "out", dict(return_grad=True, out=np.empty((4, 3), np.float32))),
        (TypeError, "out", dict(return_grad=True, out=[[0.0] * 3] * 4)),
        (ValueError, "out", dict(return_grad=True, out=np.empty((4, 6))[:, ::2])),
        (ValueError, "out", dict(return_grad=True, out=np.asfortranarray(np.empty((4, 3))))),
        (TypeError, "out", dict(return_grad=True, out=np.empty((4, 3), ">f8"))),
        (ValueError, "out", dict(out=np.empty((4, 3)))),  # out without return_grad
        # sample_weight
        (ValueError, "sample_weight", dict(sample_weight=np.ones(3))),
        (ValueError, "sample_weight", dict(sample_weight=np.ones((4, 1)))),
        (ValueError, "sample_weight", dict(sample_weight=np.ones((3, 4)))),
        (ValueError, "sample_weight", dict(sample_weight=np.ones(12))),
        (TypeError, "sample_weight", dict(sample_weight=np.ones((4, 3), complex))),
        (TypeError, "sample_weight", dict(sample_weight="heavy")),
        # reduction, return_grad, grad_output
        (ValueError, "reduction", dict(reduction="avg")),
        (ValueError, "reduction", dict(reduction=None)),
        (TypeError, "return_grad", dict(return_grad="yes")),
        (ValueError, "grad_output", dict(reduction="mean", grad_output=np.ones((4, 3)))),
        (ValueError, "grad_output", dict(reduction="none", grad_output=np.ones((3, 4)))),
        (TypeError, "grad_output", dict(reduction="none", grad_output=np.ones((4, 3), complex))),
        (TypeError, "grad_output", dict(grad_output=1j)),
        (TypeError, "grad_output", dict(grad_output="x")),
        (ValueError, "backend", dict(backend_override="gpu")),
    ]
    for exc, name, kw in cases:
        if "backend_override" in kw:
            with pytest.raises(exc, match=name):
                fn(P, t, backend=kw["backend_override"])
            continue
        out = kw.get("out")
        before = out.copy() if isinstance(out, np.ndarray) else None
        with pytest.raises(exc, match=name):
            call(**kw)
        if before is not None:
            np.testing.assert_array_equal(out, before)  # nothing written


def test_one_dimensional_sample_weight_must_match(backend):
    with pytest.raises(ValueError, match="sample_weight"):
        fastloss.mse(np.ones(5), np.ones(5), sample_weight=np.ones(4), backend=backend)


def test_read_only_out(backend):
    out = np.zeros((4, 3))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        fastloss.mse(P, T, return_grad=True, out=out, backend=backend)


@pytest.mark.parametrize("fn,name,values,ok", OPTIONS)
def test_bad_loss_options(fn, name, values, ok, backend):
    for value in values:
        with pytest.raises(ValueError, match=name):
            fn(P, T, backend=backend, **{name: value})
    per_element = any(o.per_element for o in BY_NAME[fn.__name__].options if o.name == name)
    for value in ["1.0", None if not per_element else "x", True]:
        with pytest.raises(TypeError, match=name):
            fn(P, T, backend=backend, **{name: value})
    for value in ok:
        assert np.isfinite(fn(P, T, backend=backend, **{name: value}))


def test_pos_weight_shape(backend):
    with pytest.raises(ValueError, match="pos_weight"):
        fastloss.binary_cross_entropy_with_logits(P, T, pos_weight=np.ones(4), backend=backend)
    with pytest.raises(TypeError, match="pos_weight"):
        fastloss.binary_cross_entropy_with_logits(P, T, pos_weight=np.ones(3, complex),
                                                  backend=backend)


def test_bce_tiny_eps_stays_finite(backend):
    """eps below float32's resolution near 1: the upper bound is the largest float32
    below 1, so p = 1 and p = 0 still give finite losses and gradients."""
    for dtype in (np.float32, np.float64):
        p = np.array([0.0, 1.0, 0.0, 1.0], dtype)
        t = np.array([0.0, 1.0, 1.0, 0.0], dtype)
        for eps in (1e-12, 1e-30):
            l, g = fastloss.binary_cross_entropy(p, t, eps=eps, reduction="none",
                                                 return_grad=True, backend=backend)
            assert np.all(np.isfinite(l)) and np.all(np.isfinite(g)), (dtype, eps)
            assert l[0] < 1e-6 and l[1] < 1e-6 and l[2] > 10 and l[3] > 10


def test_bce_needs_probabilities(backend):
    for bad in (-0.1, 1.1, np.inf, -np.inf):
        p = P.copy()
        p[1, 2] = bad
        with pytest.raises(ValueError, match="input"):
            fastloss.binary_cross_entropy(p, T, backend=backend)


@pytest.mark.parametrize("fn", [getattr(fastloss, s.name) for s in SPECS if s.target == "labels"],
                         ids=[s.name for s in SPECS if s.target == "labels"])
def test_hinge_targets_outside_the_set(fn, backend):
    for bad in ([1.0, -1.0, 0.0], [0.5, 1.0, 0.0], [2.0, 1.0, -1.0], [np.nan, 1.0, -1.0]):
        out = np.zeros(3)
        with pytest.raises(ValueError, match="target"):
            fn(np.zeros(3), np.array(bad), backend=backend, return_grad=True, out=out)
        assert not out.any()
    fn(np.zeros(3), np.array([1, 0, 1]), backend=backend)  # {0, 1} integers are fine


def test_value_checks_without_the_extension(monkeypatch):
    """The label/probability checks have a NumPy path for builds without the extension."""
    from fastloss import _backend

    monkeypatch.setattr(_backend, "kernels", None)
    with pytest.raises(ValueError, match="target"):
        fastloss.hinge(np.zeros(3), np.array([1.0, 0.5, -1.0]))
    with pytest.raises(ValueError, match="input"):
        fastloss.binary_cross_entropy(np.array([0.5, 1.5]), np.array([1.0, 0.0]))
    assert fastloss.hinge(np.zeros(3), np.array([1.0, 0.0, 1.0])) == 1.0
    assert np.isnan(fastloss.binary_cross_entropy(np.array([np.nan, 0.5]), np.ones(2)))

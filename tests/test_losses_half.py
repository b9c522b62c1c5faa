"""Element-wise losses on bfloat16 and float16 predictions, every loss and option of
the table, both backends.

* Against the float64 reference computed on the same 16-bit inputs: gradients,
  hessians and 'none' losses within one 16-bit ulp of the correctly rounded value;
  the reduced loss (returned in 16 bits) within one ulp, and the float32 loss of the
  internal path (what torch.autocast returns) within 1e-5 relative.
* The defining property: a 16-bit result is the float32 computation on the widened
  inputs rounded once, bit for bit (NaN/Inf included), for any thread count.
* float16 overflow on output -> Inf; bad input; torch parity in and out of autocast.
"""
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

import fastloss
from fastloss import _backend, _dtypes, losses
from fastloss._elementwise_spec import BY_NAME


def _sibling(name):
    """A module of this directory (pytest runs with --import-mode=importlib)."""
    path = pathlib.Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_fastloss_tests_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the cases (every loss x option) and data of the float32/float64 tests, reused
_base = _sibling("test_losses")
CASES, LOSSES, _expected, _make = _base.CASES, _base.LOSSES, _base._expected, _base._make

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 tests need ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
HALF = [BF16, np.dtype(np.float16)]
HALF_IDS = ["bf16", "f16"]


def _ordered(a):
    """16-bit values as integers in value order (+0 and -0 both 0): neighbours differ by 1."""
    b = _dtypes.bits(np.ascontiguousarray(a)).astype(np.int32)
    return np.where(b & 0x8000, -(b & 0x7fff), b)


def _within_ulp(got, exact, dtype):
    """``got`` (16-bit) within one ulp of ``exact`` (float64) correctly rounded to dtype;
    NaN exactly where ``exact`` is NaN."""
    got = np.asarray(got)
    assert got.dtype == dtype
    with np.errstate(over="ignore", invalid="ignore"):
        want = _dtypes.round_to(np.asarray(exact, np.float64), dtype)
    nan = np.isnan(np.asarray(want, np.float32))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan)
    dist = np.abs(_ordered(got) - _ordered(want))[~nan]
    assert dist.size == 0 or dist.max() <= 1, (dist.max(), got[~nan][dist.argmax()],
                                               want[~nan][dist.argmax()])


def _same_bits(a, b):
    """Equal 16-bit patterns, NaN wherever NaN (payloads may differ)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype
    nan = np.isnan(b.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(a.astype(np.float32)), nan)
    np.testing.assert_array_equal(_dtypes.bits(np.ascontiguousarray(a))[~nan],
                                  _dtypes.bits(np.ascontiguousarray(b))[~nan])


def _half_case(name, opts, shape, dtype, rng):
    """(pred, target, call options) in the 16-bit ``dtype``."""
    p, t, call = _make(name, opts, shape, np.float64, rng)
    call = {k: (v.astype(dtype) if isinstance(v, np.ndarray) else v) for k, v in call.items()}
    return p.astype(dtype), t.astype(dtype), call


# --- against the float64 reference on the same 16-bit inputs -----------------

@pytest.mark.parametrize("weight", ["none", "full", "row"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("name,opts", CASES)
def test_against_float64_reference(name, opts, dtype, reduction, weight, rng, backend):
    shape = (37, 5)
    fn = LOSSES[name][0]
    p, t, call = _half_case(name, opts, shape, dtype, rng)
    w = {"none": None, "full": rng.uniform(0, 2, shape),
         "row": rng.uniform(0, 2, shape[:1])}[weight]
    w = None if w is None else w.astype(dtype)
    go = rng.uniform(-2, 2, shape).astype(dtype) if reduction == "none" else 0.7
    for g_out in (None, go):
        wide = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v)
                for k, v in call.items()}
        el, eg = _expected(name, wide, p, t, reduction, w,
                           None if g_out is None else np.asarray(g_out, np.float64))
        loss, grad = fn(p, t, reduction=reduction, sample_weight=w, return_grad=True,
                        grad_output=g_out, backend=backend, **call)
        assert grad.shape == shape and np.shape(loss) == (shape if reduction == "none" else ())
        _within_ulp(grad, eg, dtype)
        _within_ulp(loss, el, dtype)
        # the internal float32 loss (torch.autocast): 1e-5 relative
        spec = BY_NAME[name]
        options = {k: v for k, v in call.items()}
        l32, g2 = losses._evaluate(spec, p, t, options, reduction, w, True, None, g_out,
                                   backend, wide_loss=True)
        assert np.asarray(l32).dtype == np.float32
        _same_bits(g2, grad)
        np.testing.assert_allclose(np.asarray(l32, np.float64), el, rtol=1e-5,
                                   atol=1e-5 * np.max(np.abs(el)))


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("name,opts", CASES)
def test_hessian(name, opts, dtype, rng, backend):
    p, t, call = _half_case(name, opts, (50,), dtype, rng)
    crit = fastloss.loss_objects.CLASSES[BY_NAME[name].cls](backend=backend, **call)
    g, h = crit.gradient_hessian(p, t)
    spec = BY_NAME[name]
    r = {o.name: (np.broadcast_to(np.asarray(call.get(o.name, o.default), np.float64), p.shape)
                  if o.per_element else float(call.get(o.name, o.default))) for o in spec.options}
    if spec.target == "labels":
        r["zero_one"] = not np.any(t == -1)
    P, T = p.astype(np.float64), t.astype(np.float64)
    n = 1 if spec.reduction == "sum" else p.size
    _within_ulp(h, spec.hessian(P, T, **r) / n, dtype)
    _within_ulp(g, spec.reference(P, T, **r)[1] / n, dtype)


# --- the float32 computation rounded once: bitwise, NaN/Inf, threads ------------

def _hostile(name, opts, dtype, rng, n):
    p, t, call = _half_case(name, opts, (n,), dtype, rng)
    spec = BY_NAME[name]
    idx = rng.choice(n, 12, replace=False)
    p[idx[:3]] = np.nan
    if spec.target != "labels":
        t[idx[3:5]] = np.nan
    if spec.pred not in ("probability",):
        p[idx[5:8]] = [np.inf, -np.inf, 60000]
    if spec.target not in ("labels", "probability"):
        t[idx[8:10]] = [np.inf, -60000]
    return p, t, call


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("name,opts", CASES)
def test_is_float32_rounded_once(name, opts, dtype, rng, backend):
    """grad, hessian and loss of 16-bit inputs == the float32 results on the widened
    inputs, rounded to 16 bits (bit for bit; NaN and Inf propagate as in float32)."""
    fn = LOSSES[name][0]
    p, t, call = _hostile(name, opts, dtype, rng, 1000)
    wide = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) else v) for k, v in call.items()}
    p32, t32 = p.astype(np.float32), t.astype(np.float32)
    for reduction in ("mean", "sum", "none"):
        with np.errstate(all="ignore"):
            l, g = fn(p, t, reduction=reduction, return_grad=True, backend=backend, **call)
            l32, g32 = fn(p32, t32, reduction=reduction, return_grad=True, backend=backend, **wide)
            _same_bits(g, g32.astype(dtype))
            _same_bits(np.asarray(l), np.asarray(l32).astype(dtype))
    assert np.isnan(g[np.isnan(p)].astype(np.float32)).all()
    cls = fastloss.loss_objects.CLASSES[BY_NAME[name].cls]
    with np.errstate(all="ignore"):
        _, h = cls(backend=backend, **call).gradient_hessian(p, t)
        _, h32 = cls(backend=backend, **wide).gradient_hessian(p32, t32)
        _same_bits(h, h32.astype(dtype))


def _params(spec, call, t):
    """The kernel's option tuple (options, derived coefficients, zero_one); a
    per-element option is given its scalar default."""
    o = {x.name: (x.default if x.per_element or x.name not in call else float(call[x.name]))
         for x in spec.options}
    values = [o[x.name] for x in spec.options] + [f(o) for _, f in spec.coefficients]
    if spec.target == "labels":
        values.append(float(not np.any(t.astype(np.float32) == -1)))
    return tuple(float(v) for v in values)


def _same_sum(a, b):
    same = np.float64(a).tobytes() == np.float64(b).tobytes()
    assert same or (np.isnan(a) and np.isnan(b)), (a, b)


@pytest.mark.parametrize("n", [1, 127, 128, 1000, 3 * 2048 + 200])
@pytest.mark.parametrize("name,opts", CASES)
def test_bfloat16_kernel_is_float32_kernel_rounded(name, opts, n, rng):
    """The native bfloat16 kernel against the float32 kernel on the widened inputs,
    bit for bit, the double loss sum included (the public functions round it to 16
    bits, where a changed summation order could hide). Prediction, target and
    gradient all bfloat16 and no weights: the case the one-pass loops take
    (native/elementwise_bf16.h); sizes with whole and partial chunks, several
    blocks; 1 and 2 threads."""
    if not fastloss.native_available():
        pytest.skip("no native extension")
    k, spec = _backend.kernels, BY_NAME[name]
    kind = k.ELEMENTWISE_KINDS[name]
    p, t, call = _hostile(name, opts, BF16, rng, max(n, 12))
    p, t = p[:n].copy(), t[:n].copy()
    par = _params(spec, call, t)
    p32, t32 = p.astype(np.float32), t.astype(np.float32)
    for nt in (1, 2):
        g16, g32 = np.empty_like(p), np.empty_like(p32)
        with np.errstate(all="ignore"):
            s16 = k.elementwise_half(kind, p, t, None, None, None, g16, None, par, 0.37, nt, 0)
            s32 = k.elementwise(kind, p32, t32, None, None, None, g32, None, par, 0.37, nt, 0)
        _same_sum(s16, s32)
        _same_bits(g16, g32.astype(BF16))
        # the plain data (finite sums)
        q, u = _half_case(name, opts, (n,), BF16, rng)[:2]
        g16 = np.empty_like(q)
        with np.errstate(all="ignore"):
            s16 = k.elementwise_half(kind, q, u, None, None, None, g16, None, par, 1.0 / n, nt, 0)
            s32 = k.elementwise(kind, q.astype(np.float32), u.astype(np.float32), None, None,
                                None, g32, None, par, 1.0 / n, nt, 0)
        _same_sum(s16, s32)
        _same_bits(g16, g32.astype(BF16))


def test_bfloat16_gradient_over_its_own_input(rng):
    """grad written over pred (or target): the one-pass loops need them apart, so
    the kernel takes the tiles; same result as into a fresh array."""
    if not fastloss.native_available():
        pytest.skip("no native extension")
    k = _backend.kernels
    kind = k.ELEMENTWISE_KINDS["mse"]
    p = rng.normal(size=5000).astype(BF16)
    t = rng.normal(size=5000).astype(BF16)
    want = np.empty_like(p)
    s = k.elementwise_half(kind, p, t, None, None, None, want, None, (), 1.0, 1, 0)
    for inplace in ("pred", "target"):
        q, u = p.copy(), t.copy()
        out = q if inplace == "pred" else u
        assert k.elementwise_half(kind, q, u, None, None, None, out, None, (), 1.0, 1, 0) == s
        _same_bits(out, want)

@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("name", ["mse", "huber", "binary_cross_entropy_with_logits", "hinge"])
def test_thread_count_does_not_change_bits(name, dtype, rng):
    if not fastloss.native_available():
        pytest.skip("no native extension")
    fn = LOSSES[name][0]
    p, t, call = _half_case(name, {}, (300_007,), dtype, rng)
    results = []
    for nt in (1, 2, 3):
        with fastloss.num_threads(nt):
            results.append(fn(p, t, return_grad=True, backend="native", **call))
    for loss, grad in results[1:]:
        _same_bits(np.asarray(loss), np.asarray(results[0][0]))
        _same_bits(grad, results[0][1])


def test_float16_overflow_on_output_is_inf(backend):
    p = np.array([300.0, -300.0, 1.0], np.float16)
    t = np.array([-300.0, 300.0, 1.0], np.float16)
    l, g = fastloss.mse(p, t, reduction="none", return_grad=True, backend=backend)
    assert l.dtype == np.float16 and np.isinf(l[:2]).all() and l[2] == 0
    np.testing.assert_array_equal(g, [1200.0, -1200.0, 0.0])
    assert np.isinf(fastloss.mse(p, t, reduction="sum", backend=backend))
    # the gradient overflows too when it is beyond float16's range
    g = fastloss.sse(np.array([60000.0], np.float16), np.array([-60000.0], np.float16),
                     return_grad=True, backend=backend)[1]
    assert np.isposinf(g[0])


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_companions_cast_to_pred_dtype_and_out(dtype, rng, backend):
    """float64 targets/weights are cast to pred's 16-bit dtype; out= in place."""
    p, t = rng.normal(size=40), rng.normal(size=40)
    w = rng.uniform(size=40)
    ph = p.astype(dtype)
    a = fastloss.huber(ph, t, sample_weight=w, return_grad=True, backend=backend)
    b = fastloss.huber(ph, t.astype(dtype), sample_weight=w.astype(dtype), return_grad=True,
                       backend=backend)
    _same_bits(a[1], b[1])
    _same_bits(np.asarray(a[0]), np.asarray(b[0]))
    out = np.empty(40, dtype)
    loss, grad = fastloss.huber(ph, t, return_grad=True, out=out, backend=backend)
    assert grad is out
    inplace = ph.copy()
    fastloss.huber(inplace, t, return_grad=True, out=inplace, backend=backend)
    _same_bits(inplace, out)


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("name", ["mse", "huber", "binary_cross_entropy_with_logits"])
def test_mixed_reads_float32_companions(name, dtype, rng, backend):
    """The internal torch.autocast path: float32 target, weight and pos_weight are read
    in float32 (not rounded to 16 bits); 16-bit gradient, float32 loss."""
    p, t, _ = _make(name, {}, (40, 3), np.float64, rng)
    p, t = p.astype(dtype), t.astype(np.float32)
    w = rng.uniform(0.5, 2, (40, 3)).astype(np.float32)
    opts = ({"pos_weight": rng.uniform(0.5, 3, 3).astype(np.float32)}
            if name.startswith("binary") else {})
    l, g = losses._evaluate(BY_NAME[name], p, t, opts, "mean", w, True, None, None, backend,
                            wide_loss=True, mixed=True)
    wide = {k: v.astype(np.float64) for k, v in opts.items()}
    el, eg = _expected(name, wide, p, t, "mean", w)
    assert np.asarray(l).dtype == np.float32
    np.testing.assert_allclose(float(l), el, rtol=1e-5)
    _within_ulp(g, eg, dtype)


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_empty_zero_dim_and_strided(dtype, backend):
    e = np.ones(0, dtype)
    assert np.isnan(np.float32(fastloss.mse(e, e, backend=backend)))
    assert fastloss.mse(e, e, reduction="sum", backend=backend) == 0
    l, g = fastloss.mse(e, e, reduction="none", return_grad=True, backend=backend)
    assert l.shape == g.shape == (0,) and l.dtype == g.dtype == dtype
    l, g = fastloss.huber(np.array(2.0, dtype), np.array(0.0, dtype), reduction="none",
                          return_grad=True, backend=backend)
    assert l.shape == g.shape == () and float(l) == 1.5 and float(g) == 1.0
    a = np.arange(40, dtype=np.float32).reshape(8, 5).astype(dtype)
    l, g = fastloss.mse(a[:, ::2], a[:, ::2] + 1, return_grad=True, backend=backend)
    assert float(l) == 1.0 and g.flags.c_contiguous and g.shape == (8, 3)


# --- bad input ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_bad_input(dtype, backend):
    p = np.ones(6, dtype)
    other = BF16 if dtype == np.float16 else np.dtype(np.float16)
    for wrong in (np.float32, other):
        with pytest.raises(TypeError, match="out has dtype"):
            fastloss.mse(p, p, return_grad=True, out=np.empty(6, wrong), backend=backend)
    with pytest.raises(TypeError, match="pred must be a float32, float64, bfloat16 or float16"):
        fastloss.mse(np.ones(6, np.int16), p, backend=backend)
    with pytest.raises(ValueError, match="input must hold probabilities"):
        fastloss.binary_cross_entropy(np.array([0.5, 1.5], dtype), np.ones(2, dtype),
                                      backend=backend)
    with pytest.raises(ValueError, match="target for hinge"):
        fastloss.hinge(p, np.full(6, 0.5, dtype), backend=backend)


def test_ml_dtypes_missing_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes -> ImportError
    with pytest.raises(ImportError, match="pip install ml_dtypes"):
        _dtypes.bfloat16()
    torch = pytest.importorskip("torch")
    from fastloss.torch import functional as FT
    x = torch.ones(4, dtype=torch.bfloat16)
    with pytest.raises(ImportError, match="pip install ml_dtypes"):
        FT.mse_loss(x, x)


def test_native_kernel_checks_its_arrays():
    if not fastloss.native_available():
        pytest.skip("no native extension")
    k = fastloss._backend.kernels
    p = np.ones(8, BF16)
    kind = k.ELEMENTWISE_KINDS["mse"]
    with pytest.raises(TypeError, match="target must be float32, bfloat16 or float16"):
        k.elementwise_half(kind, p, np.ones(8), None, None, None, None, None, (), 1.0, 1)
    with pytest.raises(ValueError, match="grad must be 1-D, C-contiguous, of length 8"):
        k.elementwise_half(kind, p, p, None, None, None, np.empty(7, BF16), None, (), 1.0, 1)
    ro = np.empty(8, BF16)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="grad is read-only"):
        k.elementwise_half(kind, p, p, None, None, None, ro, None, (), 1.0, 1)


# --- torch: functional, in and out of autocast, forward and backward -------------

TORCH_CASES = [
    ("mse_loss", {}), ("mse_loss", {"weight": "full"}), ("l1_loss", {}),
    ("huber_loss", {"delta": 0.5}), ("smooth_l1_loss", {"beta": 0.5}),
    ("binary_cross_entropy", {}), ("binary_cross_entropy", {"weight": "row"}),
    ("binary_cross_entropy_with_logits", {}),
    ("binary_cross_entropy_with_logits", {"pos_weight": "col", "weight": "col"}),
]


def _torch_data(torch, name, kw, dtype, target_dtype=None):
    g = torch.Generator().manual_seed(5)
    shape = (64, 7)
    if name == "binary_cross_entropy":
        x = torch.rand(shape, generator=g) * 0.96 + 0.02
    else:
        x = torch.randn(shape, generator=g) * 2
    t = (torch.rand(shape, generator=g) if name.startswith("binary")
         else torch.randn(shape, generator=g))
    opts = {}
    for key, kind in kw.items():
        if isinstance(kind, str):
            size = {"full": shape, "row": (64, 1), "col": (7,)}[kind]
            opts[key] = (torch.rand(size, generator=g) + 0.5).to(target_dtype or dtype)
        else:
            opts[key] = kind
    return x.to(dtype), t.to(target_dtype or dtype), opts


def _run(F, name, x, t, opts, reduction, autocast, upstream):
    x = x.clone().requires_grad_()
    with torch_autocast(x.dtype, autocast):
        loss = getattr(F, name)(x, t, reduction=reduction, **opts)
    if upstream is None:
        loss.backward(torch_ones_like(loss))
    else:
        loss.backward(upstream.to(loss.dtype) if upstream.dim() else upstream.to(loss.dtype))
    return loss.detach(), x.grad


def torch_autocast(dtype, enabled):
    import torch
    return torch.autocast("cpu", dtype=dtype, enabled=enabled)


def torch_ones_like(t):
    import torch
    return torch.ones_like(t)


def _grad_close(torch, got, want, ulps):
    """Two 16-bit tensors within ``ulps`` of each other."""
    assert got.dtype == want.dtype
    from fastloss.torch._bridge import as_numpy
    a, b = as_numpy(got, "got", half=True), as_numpy(want, "want", half=True)
    np.testing.assert_array_equal(np.isnan(a.astype(np.float32)), np.isnan(b.astype(np.float32)))
    assert np.abs(_ordered(a) - _ordered(b)).max() <= ulps


@pytest.mark.parametrize("upstream", ["one", "scaled"])
@pytest.mark.parametrize("autocast", [False, True], ids=["eager", "autocast"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("tdtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name,kw", TORCH_CASES)
def test_torch_parity(name, kw, tdtype, reduction, autocast, upstream):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as TF
    from fastloss.torch import functional as FT
    dtype = getattr(torch, tdtype)
    x, t, opts = _torch_data(torch, name, kw, dtype)
    up = None
    if upstream == "scaled":
        up = (torch.rand((64, 7), generator=torch.Generator().manual_seed(9)) + 0.5
              if reduction == "none" else torch.tensor(1.7))
    la, ga = _run(TF, name, x, t, opts, reduction, autocast, up)
    lb, gb = _run(FT, name, x, t, opts, reduction, autocast, up)
    # (torch's weighted mse_loss / l1_loss are plain tensor ops: 16 bits under autocast)
    composite = "weight" in kw and name in ("mse_loss", "l1_loss")
    assert lb.dtype == la.dtype == (torch.float32 if autocast and not composite else dtype)
    assert gb.dtype == ga.dtype == dtype
    if autocast and not composite:
        # torch computes in float32 from the same 16-bit values: the float32 loss to
        # 1e-5, the gradient rounded once (twice with a non-1 upstream gradient)
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6 * float(la.abs().max()))
        _grad_close(torch, gb, ga, 1 if up is None else 2)
    else:
        # torch rounds each 16-bit intermediate: a few ulps of the largest value
        for got, want in ((lb, la), (gb, ga)):
            eps = torch.finfo(want.dtype).eps
            torch.testing.assert_close(got, want, rtol=4 * eps,
                                       atol=4 * eps * float(want.float().abs().max()))


@pytest.mark.parametrize("tdtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name,kw", [("mse_loss", {"weight": "full"}), ("huber_loss", {}),
                                     ("binary_cross_entropy_with_logits",
                                      {"pos_weight": "col", "weight": "col"})])
def test_torch_autocast_float32_target_and_weights(name, kw, tdtype):
    """Under autocast a 16-bit input with float32 target/weights computes in float32
    with them as they are, as torch does (no rounding of the target to 16 bits)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as TF
    from fastloss.torch import functional as FT
    dtype = getattr(torch, tdtype)
    x, t, opts = _torch_data(torch, name, kw, dtype, target_dtype=torch.float32)
    la, ga = _run(TF, name, x, t, opts, "mean", True, None)
    lb, gb = _run(FT, name, x, t, opts, "mean", True, None)
    assert lb.dtype == la.dtype == torch.float32 and gb.dtype == ga.dtype == dtype
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=0)
    _grad_close(torch, gb, ga, 1)


def test_torch_nn_modules_under_autocast():
    torch = pytest.importorskip("torch")
    import fastloss.torch as FLT
    x, t, _ = _torch_data(torch, "binary_cross_entropy_with_logits", {}, torch.bfloat16)
    pw = torch.rand(7) + 0.5                # a float32 buffer, as in a bf16 model
    res = []
    for mod in (torch.nn.BCEWithLogitsLoss(pos_weight=pw), FLT.BCEWithLogitsLoss(pos_weight=pw),
                torch.nn.MSELoss(), FLT.MSELoss()):
        xx = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = mod(xx, t)
        loss.backward()
        res.append((loss, xx.grad))
    for (la, ga), (lb, gb) in (res[:2], res[2:]):
        assert lb.dtype == la.dtype == torch.float32 and gb.dtype == torch.bfloat16
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=0)
        _grad_close(torch, gb, ga, 1)

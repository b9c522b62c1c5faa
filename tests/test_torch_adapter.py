"""fastloss.torch: autograd losses and modules against torch.nn.functional."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
TF = torch.nn.functional
import fastloss  # noqa: E402
import fastloss.torch as FT  # noqa: E402

REDUCTIONS = ["mean", "sum", "none"]


def _data(dtype, shape=(7, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=dtype, generator=g)
    t = torch.randn(shape, dtype=dtype, generator=g)
    tb = (torch.rand(shape, generator=g) > 0.5).to(dtype)
    w = torch.rand(shape, dtype=dtype, generator=g) + 0.1
    pw = torch.rand(shape[-1], dtype=dtype, generator=g) + 0.5
    return x, t, tb, w, pw


def _cases(t, tb, w, pw):
    return [
        ("mse", FT.mse_loss, TF.mse_loss, t, {}),
        ("mse-w", FT.mse_loss, TF.mse_loss, t, {"weight": w}),
        ("l1", FT.l1_loss, TF.l1_loss, t, {}),
        ("l1-w", FT.l1_loss, TF.l1_loss, t, {"weight": w}),
        ("huber", FT.huber_loss, TF.huber_loss, t, {"delta": 0.7}),
        ("huber-w", FT.huber_loss, TF.huber_loss, t, {"delta": 1.3, "weight": w}),
        ("smooth_l1", FT.smooth_l1_loss, TF.smooth_l1_loss, t, {"beta": 0.5}),
        ("smooth_l1-0", FT.smooth_l1_loss, TF.smooth_l1_loss, t, {"beta": 0.0}),
        ("bce", FT.binary_cross_entropy, TF.binary_cross_entropy, tb, {"weight": w}),
        ("bce_logits", FT.binary_cross_entropy_with_logits,
         TF.binary_cross_entropy_with_logits, tb, {"pos_weight": pw, "weight": w}),
    ]


def _assert_same_as_torch(name, ours, theirs, inp, target, reduction, kw, dtype):
    """Loss values and input gradients (under a non-trivial upstream gradient) equal."""
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    a_in = inp.clone().requires_grad_()
    b_in = inp.clone().requires_grad_()
    a = ours(a_in, target, reduction=reduction, **kw)
    b = theirs(b_in, target, reduction=reduction, **kw)
    assert a.dtype == dtype and a.shape == b.shape, name
    torch.testing.assert_close(a, b, **tol, msg=name)
    up = torch.rand_like(a) + 0.5  # a non-trivial upstream gradient
    (a * up).sum().backward()
    (b * up).sum().backward()
    torch.testing.assert_close(a_in.grad, b_in.grad, **tol, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_values_and_grads_match_torch(dtype, reduction):
    x, t, tb, w, pw = _data(dtype)
    for name, ours, theirs, target, kw in _cases(t, tb, w, pw):
        inp = torch.sigmoid(x) if name == "bce" else x
        _assert_same_as_torch(name, ours, theirs, inp, target, reduction, kw, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(reduction):
    x, t, tb, w, pw = _data(torch.float64, (4, 3), seed=1)
    for name, ours, _, target, kw in _cases(t, tb, w, pw):
        inp = (torch.sigmoid(x) if name == "bce" else x).clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda z: ours(z, target, reduction=reduction, **kw),
                                        (inp,)), name


def test_modules_match_functional():
    x, t, tb, w, pw = _data(torch.float32)
    pairs = [
        (FT.MSELoss(), torch.nn.MSELoss(), t),
        (FT.L1Loss(reduction="sum"), torch.nn.L1Loss(reduction="sum"), t),
        (FT.HuberLoss(delta=0.5), torch.nn.HuberLoss(delta=0.5), t),
        (FT.SmoothL1Loss(beta=2.0), torch.nn.SmoothL1Loss(beta=2.0), t),
        (FT.BCEWithLogitsLoss(pos_weight=pw), torch.nn.BCEWithLogitsLoss(pos_weight=pw), tb),
        (FT.BCELoss(weight=w), torch.nn.BCELoss(weight=w), tb),
    ]
    for ours, theirs, target in pairs:
        inp = torch.sigmoid(x) if isinstance(ours, FT.BCELoss) else x
        torch.testing.assert_close(ours(inp, target), theirs(inp, target))


def test_noncontiguous_input_is_copied_not_wrong():
    x, t, *_ = _data(torch.float32, (6, 8))
    xs = x.t().requires_grad_()  # non-contiguous
    a = FT.mse_loss(xs, t.t())
    a.backward()
    xt = x.t().clone().requires_grad_()
    b = TF.mse_loss(xt, t.t())
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(xs.grad, xt.grad)


def test_clear_errors():
    x, t, *_ = _data(torch.float32)
    with pytest.raises(TypeError, match="float16"):
        FT.mse_loss(x.to(torch.int16), t)
    with pytest.raises(ValueError, match="target"):
        FT.mse_loss(x, t.clone().requires_grad_())
    with pytest.raises(ValueError, match="device"):
        FT.mse_loss(x.to("meta"), t.to("meta"))


def test_plain_functions_accept_tensors_without_copy():
    x, t, *_ = _data(torch.float32)
    out = np.empty((7, 5), np.float32)
    loss, grad = fastloss.mse(x, t, return_grad=True, out=out)
    assert np.isclose(loss, TF.mse_loss(x, t).item())
    from fastloss import _validate

    assert np.shares_memory(_validate.float_input(x, "pred"), x.numpy())


def test_import_fastloss_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = "import sys, fastloss; print('torch' in sys.modules)"
    env = {"PYTHONPATH": str(__import__("pathlib").Path(fastloss.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=env).stdout.strip()
    assert out == "False"


# --- cross_entropy / nll_loss -------------------------------------------------------------

def _class_data(dtype, shape=(7, 5), seed=0, ignore=-100):
    """logits of ``shape`` (classes on axis 1, or axis 0 when 1-D), index targets with one
    ignored entry, probability targets and class weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=dtype, generator=g) * 2
    C = shape[1] if len(shape) > 1 else shape[0]
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    y = torch.randint(0, C, tshape, generator=g)
    if y.dim():
        y.view(-1)[1] = ignore
    probs = torch.softmax(torch.randn(shape, dtype=dtype, generator=g), dim=1 if len(shape) > 1
                          else 0)
    w = torch.rand(C, dtype=dtype, generator=g) + 0.2
    return x, y, probs, w


def _class_cases(y, probs, w):
    y2, y3 = y.masked_fill(y == -100, 2), y.masked_fill(y == -100, 3)
    return [
        ("ce", FT.cross_entropy, TF.cross_entropy, y, {}),
        ("ce-w", FT.cross_entropy, TF.cross_entropy, y, {"weight": w}),
        ("ce-ls", FT.cross_entropy, TF.cross_entropy, y, {"label_smoothing": 0.2}),
        ("ce-w-ls-ii", FT.cross_entropy, TF.cross_entropy, y2,
         {"weight": w, "label_smoothing": 0.1, "ignore_index": 2}),
        ("ce-probs", FT.cross_entropy, TF.cross_entropy, probs, {}),
        ("ce-probs-w-ls", FT.cross_entropy, TF.cross_entropy, probs,
         {"weight": w, "label_smoothing": 0.3}),
        ("nll", FT.nll_loss, TF.nll_loss, y, {}),
        ("nll-w", FT.nll_loss, TF.nll_loss, y, {"weight": w}),
        ("nll-w-ii", FT.nll_loss, TF.nll_loss, y3, {"weight": w, "ignore_index": 3}),
    ]


def _class_input(name, x):
    return torch.log_softmax(x, dim=1 if x.dim() > 1 else 0) if name.startswith("nll") else x


CLASS_SHAPES = [(7, 5), (3, 4, 2, 3), (6,)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", CLASS_SHAPES)
def test_classification_values_and_grads_match_torch(dtype, reduction, shape):
    x, y, probs, w = _class_data(dtype, shape)
    for name, ours, theirs, target, kw in _class_cases(y, probs, w):
        inp = _class_input(name, x)
        _assert_same_as_torch(name, ours, theirs, inp, target, reduction, kw, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2), (4,)])
def test_classification_gradcheck_float64(reduction, shape):
    x, y, probs, w = _class_data(torch.float64, shape, seed=3)
    for name, ours, _, target, kw in _class_cases(y, probs, w):
        inp = _class_input(name, x).detach().requires_grad_()
        assert torch.autograd.gradcheck(lambda z: ours(z, target, reduction=reduction, **kw),
                                        (inp,)), name


def test_classification_backward_plain_and_scaled():
    """loss.backward() (upstream 1: the saved gradient is handed on) and a scaled upstream
    gradient, twice through a retained graph: the second pass sees an unmodified gradient."""
    x, y, _, w = _class_data(torch.float32, (9, 6))
    a_in, b_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = FT.cross_entropy(a_in @ torch.eye(6), y, weight=w)
    b = TF.cross_entropy(b_in @ torch.eye(6), y, weight=w)
    a.backward(retain_graph=True)
    b.backward(retain_graph=True)
    torch.testing.assert_close(a_in.grad, b_in.grad)
    (3 * a).backward()
    (3 * b).backward()
    torch.testing.assert_close(a_in.grad, b_in.grad)


def test_classification_legacy_reduction_args():
    x, y, _, w = _class_data(torch.float64)
    for kw in (dict(size_average=False), dict(reduce=False), dict(size_average=True, reduce=True)):
        with pytest.warns(UserWarning):  # torch warns about its legacy arguments
            b = TF.cross_entropy(x, y, **kw)
        torch.testing.assert_close(FT.cross_entropy(x, y, **kw), b)
        with pytest.warns(UserWarning):
            b = TF.nll_loss(torch.log_softmax(x, 1), y, weight=w, **kw)
        torch.testing.assert_close(FT.nll_loss(torch.log_softmax(x, 1), y, weight=w, **kw), b)


def test_classification_all_ignored_mean_is_nan_as_torch():
    x, y, *_ = _class_data(torch.float32)
    y = torch.full_like(y, -100)
    assert torch.isnan(FT.cross_entropy(x, y)) and torch.isnan(TF.cross_entropy(x, y))
    assert FT.cross_entropy(x, y, reduction="sum") == 0


def test_classification_modules_match_torch():
    x, y, probs, w = _class_data(torch.float32, (8, 5))
    pairs = [
        (FT.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(), x, y),
        (FT.CrossEntropyLoss(weight=w, ignore_index=1, label_smoothing=0.1, reduction="sum"),
         torch.nn.CrossEntropyLoss(weight=w, ignore_index=1, label_smoothing=0.1,
                                   reduction="sum"), x, y.masked_fill(y == -100, 1)),
        (FT.CrossEntropyLoss(weight=w), torch.nn.CrossEntropyLoss(weight=w), x, probs),
        (FT.NLLLoss(weight=w, reduction="none"), torch.nn.NLLLoss(weight=w, reduction="none"),
         torch.log_softmax(x, 1), y),
    ]
    for ours, theirs, inp, target in pairs:
        torch.testing.assert_close(ours(inp, target), theirs(inp, target))
        assert ours.state_dict().keys() == theirs.state_dict().keys()
    m = FT.CrossEntropyLoss(weight=w).double()  # the weight buffer follows .to()/.double()
    assert m.weight.dtype == torch.float64
    torch.testing.assert_close(m(x.double(), y), TF.cross_entropy(x.double(), y, weight=w.double()))
    assert FT.NLLLoss().weight is None


def test_classification_clear_errors():
    x, y, probs, w = _class_data(torch.float32)
    # (16-bit logits are accepted since issue 12: tests/test_cross_entropy_half.py)
    with pytest.raises(TypeError, match="float32, float64, bfloat16 and float16"):
        FT.cross_entropy(x.to(torch.int32), y)
    with pytest.raises(ValueError, match="device"):
        FT.cross_entropy(x.to("meta"), y.to("meta"))
    with pytest.raises(ValueError, match="target"):
        FT.cross_entropy(x, probs.clone().requires_grad_())
    with pytest.raises(ValueError, match="class index"):
        FT.cross_entropy(x, torch.full_like(y, 5))
    with pytest.raises(ValueError, match="shape"):
        FT.cross_entropy(x, y[:3])


WEIGHT_SHAPES = [(), (1,), (5,), (1, 5), (7, 5), (7, 1)]


@pytest.mark.parametrize("backend", ["numpy"] + (["native"] if fastloss.native_available() else []))
@pytest.mark.parametrize("wshape", WEIGHT_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_weight_broadcasts_as_torch(reduction, dtype, wshape, backend):
    """torch's weight= goes through unexpanded (fastloss broadcasts it as torch);
    the modules keep it as a buffer."""
    x, t, tb, _, pw = _data(dtype)
    w = torch.rand(wshape, dtype=dtype, generator=torch.Generator().manual_seed(3)) + 0.1
    fastloss.set_backend(backend)
    try:
        _assert_same_as_torch("bce", FT.binary_cross_entropy, TF.binary_cross_entropy,
                              torch.sigmoid(x), tb, reduction, {"weight": w}, dtype)
        _assert_same_as_torch("bce_logits", FT.binary_cross_entropy_with_logits,
                              TF.binary_cross_entropy_with_logits, x, tb, reduction,
                              {"weight": w, "pos_weight": pw}, dtype)
        for ours, theirs, inp in (
                (FT.BCELoss(weight=w, reduction=reduction),
                 torch.nn.BCELoss(weight=w, reduction=reduction), torch.sigmoid(x)),
                (FT.BCEWithLogitsLoss(weight=w, reduction=reduction),
                 torch.nn.BCEWithLogitsLoss(weight=w, reduction=reduction), x)):
            torch.testing.assert_close(ours(inp, tb), theirs(inp, tb))
    finally:
        fastloss.set_backend(None)


def test_bce_weight_needing_grad_is_refused():
    x, _, tb, w, _ = _data(torch.float64)
    with pytest.raises(ValueError, match="with respect to weight"):
        FT.binary_cross_entropy_with_logits(x, tb, weight=w.requires_grad_())
    with pytest.raises(ValueError, match="does not broadcast"):
        FT.binary_cross_entropy_with_logits(x, tb, weight=torch.ones(7))

"""Element-wise losses against PyTorch (loss and autograd gradient), for every
backend, dtype, reduction, weight and grad_output where PyTorch has the loss."""
import numpy as np
import pytest

import fastloss

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _regression(rng, shape, kink):
    t = rng.normal(size=shape)
    mag = rng.uniform(0.05, 3, shape)
    mag[np.abs(mag - kink) < 0.05] = kink + 0.1
    return t + mag * rng.choice([-1.0, 1.0], shape), t


# (ours, torch, options, data, torch's weight=: False = none, True = 'mean' divides by
# the element count as fastloss does, "sum_w" = 'mean' divides by sum(weight) instead;
# PyTorch 2.13 does that for mse_loss and l1_loss only)
CASES = {
    "mse": (fastloss.mse, F.mse_loss, {}, lambda r, s: _regression(r, s, 0.0), "sum_w"),
    "l1": (fastloss.mae, F.l1_loss, {}, lambda r, s: _regression(r, s, 0.0), "sum_w"),
    "huber": (fastloss.huber, F.huber_loss, {}, lambda r, s: _regression(r, s, 1.0), True),
    "huber-delta=0.3": (fastloss.huber, F.huber_loss, {"delta": 0.3},
                        lambda r, s: _regression(r, s, 0.3), True),
    "smooth_l1": (fastloss.smooth_l1, F.smooth_l1_loss, {},
                  lambda r, s: _regression(r, s, 1.0), False),
    "smooth_l1-beta=0.5": (fastloss.smooth_l1, F.smooth_l1_loss, {"beta": 0.5},
                           lambda r, s: _regression(r, s, 0.5), False),
    "smooth_l1-beta=0": (fastloss.smooth_l1, F.smooth_l1_loss, {"beta": 0.0},
                         lambda r, s: _regression(r, s, 0.0), False),
    "bce": (fastloss.binary_cross_entropy, F.binary_cross_entropy, {},
            lambda r, s: (r.uniform(0.02, 0.98, s), r.uniform(0, 1, s)), True),
    "bce-hard-targets": (fastloss.binary_cross_entropy, F.binary_cross_entropy, {},
                         lambda r, s: (r.uniform(0.02, 0.98, s),
                                       r.integers(0, 2, s).astype(float)), True),
    "bce_logits": (fastloss.binary_cross_entropy_with_logits,
                   F.binary_cross_entropy_with_logits, {},
                   lambda r, s: (r.normal(scale=4, size=s), r.uniform(0, 1, s)), True),
    "bce_logits-pos_weight=2.5": (fastloss.binary_cross_entropy_with_logits,
                                  F.binary_cross_entropy_with_logits, {"pos_weight": 2.5},
                                  lambda r, s: (r.normal(scale=4, size=s),
                                                r.uniform(0, 1, s)), True),
    "bce_logits-pos_weight=array": (fastloss.binary_cross_entropy_with_logits,
                                    F.binary_cross_entropy_with_logits, {"pos_weight": "array"},
                                    lambda r, s: (r.normal(scale=4, size=s),
                                                  r.integers(0, 2, s).astype(float)), True),
}


def _torch_kwargs(opts, dtype):
    kw = {}
    for k, v in opts.items():
        kw[k] = torch.as_tensor(np.asarray(v, dtype)) if k == "pos_weight" else v
    return kw


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case,weight", [(c, w) for c in CASES for w in ("none", "full", "row")
                                         if w == "none" or CASES[c][4]])
def test_matches_torch(case, dtype, reduction, weight, rng, backends):
    ours, theirs, opts, data, has_weight = CASES[case]
    shape = (29, 6)
    p, t = (a.astype(dtype) for a in data(rng, shape))
    opts = dict(opts)
    if opts.get("pos_weight") == "array":
        opts["pos_weight"] = rng.uniform(0.5, 3, shape[1]).astype(dtype)
    w = {"none": None, "full": rng.uniform(0, 2, shape), "row": rng.uniform(0, 2, shape[0])}[weight]
    w = None if w is None else w.astype(dtype)
    go = rng.uniform(-2, 2, shape).astype(dtype) if reduction == "none" else dtype(0.7)

    tp = torch.tensor(p, requires_grad=True)
    tkw = _torch_kwargs(opts, dtype)
    norm = 1.0
    if w is not None:
        tw = np.broadcast_to(w if w.shape == shape else w[:, None], shape).copy()
        tkw["weight"] = torch.tensor(tw)
        if reduction == "mean" and has_weight == "sum_w":
            norm = tw.sum(dtype=np.float64) / tw.size
    tl = theirs(tp, torch.tensor(t), reduction=reduction, **tkw)
    tl.backward(torch.as_tensor(go))
    expected_loss = tl.detach().numpy() * norm
    expected_grad = tp.grad.numpy() * norm

    rtol = 2e-5 if dtype == np.float32 else 1e-10
    for backend in backends:
        loss, grad = ours(p, t, reduction=reduction, sample_weight=w, return_grad=True,
                          grad_output=go, backend=backend, **opts)
        scale = max(np.max(np.abs(expected_loss)), 1e-30)
        np.testing.assert_allclose(loss, expected_loss, rtol=rtol, atol=rtol * scale)
        gscale = max(np.max(np.abs(expected_grad)), 1e-30)
        np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=rtol * gscale,
                                   err_msg=backend)
        assert loss.dtype == dtype and grad.dtype == dtype


@pytest.mark.parametrize("case", list(CASES))
def test_empty_matches_torch(case, backends):
    ours, theirs, opts, _, _ = CASES[case]
    opts = {k: (np.ones(3) if v == "array" else v) for k, v in opts.items()}
    p = np.empty((0, 3))
    for reduction in ("mean", "sum", "none"):
        tp = torch.tensor(p, requires_grad=True)
        tl = theirs(tp, torch.tensor(p), reduction=reduction, **_torch_kwargs(opts, np.float64))
        for backend in backends:
            loss = ours(p, p, reduction=reduction, backend=backend, **opts)
            np.testing.assert_array_equal(loss, tl.detach().numpy())



# --- PyTorch's weight= on the binary cross-entropies (issue 15) ------------------

BCE_PAIRS = {
    "bce": (fastloss.binary_cross_entropy, F.binary_cross_entropy),
    "bce_logits": (fastloss.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits),
}
# (input shape, weight shape): every shape torch broadcasts against the input
WEIGHT_SHAPES = [((6, 4), ()), ((6, 4), (1,)), ((6, 4), (4,)), ((6, 4), (1, 4)),
                 ((6, 4), (6, 4)), ((6, 4), (6, 1)), ((5,), (5,)), ((5,), (1,)),
                 ((3, 2, 4), (4,)), ((3, 2, 4), (2, 1)), ((3, 2, 4), (3, 1, 4)), ((4, 4), (4,))]


def _bce_data(rng, name, shape, dtype):
    x = rng.normal(size=shape) * 2
    p = 1 / (1 + np.exp(-x)) if name == "bce" else x
    return p.astype(dtype), rng.random(shape).astype(dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape,wshape", WEIGHT_SHAPES, ids=[f"{s}-w{w}" for s, w in WEIGHT_SHAPES])
@pytest.mark.parametrize("name", list(BCE_PAIRS))
def test_bce_torch_weight_matches_torch(name, shape, wshape, dtype, reduction, rng, backends):
    """weight= broadcast against the input exactly as torch does (a (4,) weight on a
    (4, 4) input is per column, not per row as sample_weight would be)."""
    ours, theirs = BCE_PAIRS[name]
    p, t = _bce_data(rng, name, shape, dtype)
    w = rng.uniform(0, 2, wshape).astype(dtype)
    go = rng.uniform(-2, 2, shape).astype(dtype) if reduction == "none" else dtype(0.7)
    tp = torch.tensor(p, requires_grad=True)
    tl = theirs(tp, torch.tensor(t), weight=torch.tensor(w), reduction=reduction)
    tl.backward(torch.as_tensor(go))
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    for backend in backends:
        loss, grad = ours(p, t, weight=w, reduction=reduction, return_grad=True,
                          grad_output=go, backend=backend)
        assert loss.dtype == grad.dtype == dtype and np.shape(loss) == tuple(tl.shape)
        want = tl.detach().numpy()
        np.testing.assert_allclose(loss, want, rtol=rtol, atol=rtol * np.abs(want).max(),
                                   err_msg=backend)
        want = tp.grad.numpy()
        np.testing.assert_allclose(grad, want, rtol=rtol, atol=rtol * np.abs(want).max(),
                                   err_msg=backend)


@pytest.mark.parametrize("name", list(BCE_PAIRS))
def test_bce_weight_and_sample_weight_multiply(name, rng, backend):
    """Both given: the loss is multiplied by both (sample_weight per row, weight per column)."""
    ours, _ = BCE_PAIRS[name]
    p, t = _bce_data(rng, name, (6, 4), np.float64)
    w, sw = rng.uniform(0, 2, 4), rng.uniform(0, 2, 6)
    both = ours(p, t, weight=w, sample_weight=sw, reduction="none", return_grad=True,
                backend=backend)
    one = ours(p, t, weight=w[None, :] * sw[:, None], reduction="none", return_grad=True,
               backend=backend)
    for a, b in zip(both, one):
        np.testing.assert_allclose(a, b, rtol=1e-15)


@pytest.mark.parametrize("name", list(BCE_PAIRS))
def test_bce_weight_bad_input(name, backend):
    ours, _ = BCE_PAIRS[name]
    p = np.full((6, 4), 0.5)
    with pytest.raises(ValueError, match=r"weight of shape \(6,\) does not broadcast"):
        ours(p, p, weight=np.ones(6), backend=backend)
    with pytest.raises(ValueError, match=r"weight of shape \(2, 6, 4\) does not broadcast"):
        ours(p, p, weight=np.ones((2, 6, 4)), backend=backend)
    with pytest.raises(TypeError, match="weight must be a real numeric array"):
        ours(p, p, weight=np.ones(4, complex), backend=backend)
    with pytest.raises(TypeError, match="unexpected keyword argument 'weight'"):
        fastloss.mse(p, p, weight=np.ones(4))

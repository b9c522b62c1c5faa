"""fastloss.optim vs torch.optim: 100 steps, every option, compared after each step."""
import numpy as np
import pytest

import fastloss.optim as fo

torch = pytest.importorskip("torch")

SHAPES = [(7, 13), (5,), (3, 4, 2)]

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-6, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.01, alpha=0.3, centered=True, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, betas=(0.3, 0.9))),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.01, maximize=True, eps=1e-4)),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, weight_decay=0.1, maximize=True)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
]

RTOL = {np.float64: 1e-6, np.float32: 1e-5}


def assert_close(actual, desired, dtype, err_msg=""):
    """Relative tolerance, with values near zero judged against the array's scale
    (float32 rounding after 100 steps is relative to the largest entries, not to
    an entry that happens to cross zero)."""
    desired = np.asarray(desired)
    rtol = RTOL[dtype]
    atol = rtol * max(float(np.abs(desired).max(initial=0.0)), 1e-3)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=err_msg)


def _problem(dtype, seed=0, steps=100):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    # gradients of mixed scale, a few exact zeros
    grads = [[(rng.standard_normal(s) * rng.choice([1e-3, 1.0, 10.0])).astype(dtype)
              for s in SHAPES] for _ in range(steps)]
    grads[3][0][0, :4] = 0
    return params, grads


def _torch_opt(name, tparams, kw):
    return getattr(torch.optim, name)(tparams, **kw, foreach=False)


def _step_both(opt, topt, tparams, gs):
    """One step of ours and of torch's with the same gradients; ours's return value."""
    res = opt.step(gs)
    for tp, g in zip(tparams, gs):
        tp.grad = torch.from_numpy(g.copy())
    topt.step()
    return res


def _assert_trajectory_matches_torch(name, params, grads, kw):
    """Ours and torch's optimizer `name` from the same float64 start end equal."""
    tparams = [torch.tensor(p.copy()) for p in params]
    opt = getattr(fo, name)(params, **kw)
    topt = _torch_opt(name, tparams, kw)
    for gs in grads:
        _step_both(opt, topt, tparams, gs)
    for p, tp in zip(params, tparams):
        assert_close(p, tp.numpy(), np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{'-'.join(k)}" for n, k in CASES])
def test_matches_torch(name, kw, dtype):
    params, grads = _problem(dtype)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = getattr(fo, name)(params, **kw, backend="native")
    topt = _torch_opt(name, tparams, kw)
    for k, gs in enumerate(grads):
        assert _step_both(opt, topt, tparams, gs) is True
        for p, tp in zip(params, tparams):
            assert p.dtype == dtype
            assert_close(p, tp.detach().numpy(), dtype, err_msg=f"step {k}")
    # state buffers match too
    for i, tp in enumerate(tparams):
        for key, v in topt.state[tp].items():
            ours = opt.state[i][key]
            if key == "step":
                assert ours == int(v)
            elif isinstance(ours, np.ndarray):
                assert_close(ours, v.numpy(), dtype)


def test_lr_changed_between_steps_and_groups():
    dtype = np.float64
    params, grads = _problem(dtype, seed=1, steps=30)
    tparams = [torch.tensor(p.copy()) for p in params]
    groups = [{"params": params[:1], "lr": 0.02, "amsgrad": True},
              {"params": params[1:], "betas": (0.5, 0.9), "weight_decay": 0.1}]
    tgroups = [{"params": tparams[:1], "lr": 0.02, "amsgrad": True},
               {"params": tparams[1:], "betas": (0.5, 0.9), "weight_decay": 0.1}]
    opt = fo.AdamW(groups, lr=0.005)
    topt = torch.optim.AdamW(tgroups, lr=0.005, foreach=False)
    for k, gs in enumerate(grads):
        for og, tg in zip(opt.param_groups, topt.param_groups):
            og["lr"] = tg["lr"] = 0.01 / (1 + k)
        _step_both(opt, topt, tparams, gs)
    for p, tp in zip(params, tparams):
        assert_close(p, tp.numpy(), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_clip_grad_norm_matches_torch(dtype):
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(s).astype(dtype) * 3 for s in [(100, 50), (7,), (9000,)]]
    tg = [torch.tensor(g.copy(), requires_grad=False) for g in grads]
    tps = []
    for t in tg:
        p = torch.zeros_like(t, requires_grad=True)
        p.grad = t
        tps.append(p)
    tnorm = torch.nn.utils.clip_grad_norm_(tps, 1.5)
    norm = fo.clip_grad_norm(grads, 1.5)
    assert norm == pytest.approx(float(tnorm), rel=1e-6 if dtype == np.float64 else 1e-5)
    for g, t in zip(grads, tg):
        assert_close(g, t.numpy(), dtype)


def test_fused_clipping_matches_torch_clip_then_step():
    dtype = np.float64
    params, grads = _problem(dtype, seed=4, steps=20)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = fo.SGD(params, lr=0.1, momentum=0.9, max_grad_norm=0.5)
    topt = torch.optim.SGD(tparams, lr=0.1, momentum=0.9, foreach=False)
    for gs in grads:
        snapshot = [g.copy() for g in gs]
        opt.step(gs)
        for g, s in zip(gs, snapshot):  # fused: the caller's grads are not written
            assert np.array_equal(g, s)
        for tp, g in zip(tparams, gs):
            tp.grad = torch.from_numpy(g.copy())
        tnorm = torch.nn.utils.clip_grad_norm_(tparams, 0.5)
        assert opt.last_grad_norm == pytest.approx(float(tnorm), rel=1e-9)
        topt.step()
    for p, tp in zip(params, tparams):
        assert_close(p, tp.detach().numpy(), dtype)


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

_unit = st.floats(0.0, 0.999)


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-4, 0.5), betas=st.tuples(_unit, _unit), eps=st.floats(1e-10, 1e-2),
       wd=st.sampled_from([0.0, 1e-3, 0.5]), amsgrad=st.booleans(), maximize=st.booleans(),
       decoupled=st.booleans(), seed=st.integers(0, 2**16))
def test_adam_random_hyperparameters_match_torch(lr, betas, eps, wd, amsgrad, maximize,
                                                decoupled, seed):
    params, grads = _problem(np.float64, seed=seed, steps=10)
    kw = dict(lr=lr, betas=betas, eps=eps, weight_decay=wd, amsgrad=amsgrad, maximize=maximize)
    _assert_trajectory_matches_torch("AdamW" if decoupled else "Adam", params, grads, kw)


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-4, 0.5), momentum=st.sampled_from([0.0, 0.3, 0.9]),
       dampening=st.sampled_from([0.0, 0.5]), nesterov=st.booleans(),
       wd=st.sampled_from([0.0, 1e-2]), maximize=st.booleans(), seed=st.integers(0, 2**16))
def test_sgd_random_hyperparameters_match_torch(lr, momentum, dampening, nesterov, wd,
                                               maximize, seed):
    if nesterov and (momentum == 0 or dampening != 0):
        nesterov = False
    params, grads = _problem(np.float64, seed=seed, steps=10)
    kw = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
              weight_decay=wd, maximize=maximize)
    _assert_trajectory_matches_torch("SGD", params, grads, kw)


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-4, 0.1), alpha=_unit, eps=st.floats(1e-10, 1e-2),
       momentum=st.sampled_from([0.0, 0.5]), centered=st.booleans(),
       wd=st.sampled_from([0.0, 1e-2]), lr_decay=st.sampled_from([0.0, 0.1]),
       seed=st.integers(0, 2**16))
def test_rmsprop_adagrad_random_hyperparameters_match_torch(lr, alpha, eps, momentum, centered,
                                                            wd, lr_decay, seed):
    if centered:
        # centered with alpha near 0 computes var = g^2 - g^2: pure rounding noise (PyTorch
        # fuses it with an FMA, we do not), ill-conditioned for any implementation
        alpha = max(alpha, 0.5)
    params, grads = _problem(np.float64, seed=seed, steps=10)
    cases = [("RMSprop", dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                              centered=centered, weight_decay=wd)),
             ("Adagrad", dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=wd))]
    for name, kw in cases:
        _assert_trajectory_matches_torch(name, [p.copy() for p in params], grads, kw)


@pytest.mark.parametrize("name,kw", [
    ("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)), ("Adagrad", dict(lr=0.1)),
    ("NAdam", dict(lr=0.01)), ("Adamax", dict(lr=0.01)),
])
def test_load_torch_state_dict_and_continue(name, kw):
    """Train 5 steps in torch, hand the state to fastloss, continue both."""
    params, grads = _problem(np.float64, seed=7, steps=10)
    tparams = [torch.tensor(p.copy()) for p in params]
    topt = getattr(torch.optim, name)(tparams, **kw, foreach=False)
    for gs in grads[:5]:
        for tp, g in zip(tparams, gs):
            tp.grad = torch.from_numpy(g.copy())
        topt.step()
    ours = [tp.numpy().copy() for tp in tparams]
    opt = getattr(fo, name)(ours, **kw)
    opt.load_state_dict(topt.state_dict())
    for gs in grads[5:]:
        _step_both(opt, topt, tparams, gs)
    for p, tp in zip(ours, tparams):
        assert_close(p, tp.numpy(), np.float64)
    assert "foreach" not in opt.state_dict()["param_groups"][0]

"""fastloss.torch.optim against torch.optim: trajectories, state_dict exchange, schedulers."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastloss.torch as FT  # noqa: E402
import fastloss.torch.optim as FO  # noqa: E402

SHAPES = [(7, 13), (5,), (3, 4, 2)]

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.5)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.01, alpha=0.3, centered=True, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.9), maximize=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True, eps=1e-4)),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, weight_decay=0.1, maximize=True)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CASES]
RTOL = {torch.float64: 1e-6, torch.float32: 1e-5}


def assert_close(actual, desired, dtype, msg=""):
    """Relative tolerance; entries near zero judged against the tensor's scale."""
    rtol = RTOL[dtype]
    actual, desired = actual.detach(), desired.detach()
    atol = rtol * max(float(desired.abs().max()) if desired.numel() else 0.0, 1e-3)
    torch.testing.assert_close(actual, desired, rtol=rtol, atol=atol, msg=msg)


def _params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, dtype=dtype, generator=g) for s in SHAPES]


def _grads(dtype, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        scale = [1e-3, 1.0, 10.0][int(torch.randint(0, 3, (), generator=g))]
        out.append([torch.randn(s, dtype=dtype, generator=g) * scale for s in SHAPES])
    if steps > 3:
        out[3][0][0, :4] = 0
    return out


def _pair(name, kw, dtype, groups=False):
    p0 = _params(dtype)
    a = [torch.nn.Parameter(p.clone()) for p in p0]
    b = [torch.nn.Parameter(p.clone()) for p in p0]
    if groups:  # two groups, the second with its own lr
        pa = [{"params": a[:2]}, {"params": a[2:], "lr": kw["lr"] * 3}]
        pb = [{"params": b[:2]}, {"params": b[2:], "lr": kw["lr"] * 3}]
    else:
        pa, pb = a, b
    return a, b, getattr(FO, name)(pa, **kw), getattr(torch.optim, name)(pb, **kw)


def _run(params, opt, grads, sched=None):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        if sched is not None:
            sched.step()


def _assert_unchanged(params, snap, opt, state):
    """``params`` equal ``snap`` and the optimizer's state equals ``state`` (a deep copy)."""
    for p, s in zip(params, snap):
        assert torch.equal(p, s)
    after = opt.state_dict()["state"]
    for i in state:
        for k in state[i]:
            assert torch.equal(state[i][k], after[i][k])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_trajectory_matches_torch(name, kw, dtype):
    a, b, oa, ob = _pair(name, kw, dtype, groups=True)
    assert isinstance(oa, getattr(torch.optim, name))
    grads = _grads(dtype, 100)
    for k in range(0, 100, 25):
        _run(a, oa, grads[k:k + 25])
        _run(b, ob, grads[k:k + 25])
        for i, (pa, pb) in enumerate(zip(a, b)):
            assert_close(pa, pb, dtype, f"param {i} after {k + 25} steps")
    for pa, pb in zip(a, b):
        sa, sb = oa.state[pa], ob.state[pb]
        assert sorted(sa) == sorted(sb)
        for key in sb:
            assert sa[key].dtype == sb[key].dtype and sa[key].shape == sb[key].shape, key
            assert_close(sa[key].to(dtype), sb[key].to(dtype), dtype, key)


@pytest.mark.parametrize("direction", ["torch->fastloss", "fastloss->torch"])
@pytest.mark.parametrize("name,kw", [c for c in CASES if c[1].get("maximize") is not True],
                         ids=[i for i, c in zip(IDS, CASES) if c[1].get("maximize") is not True])
def test_state_dict_exchange(name, kw, direction):
    dtype = torch.float64
    grads = _grads(dtype, 20)
    # reference: one torch optimizer for 20 steps
    ref = [torch.nn.Parameter(p) for p in _params(dtype)]
    _run(ref, getattr(torch.optim, name)(ref, **kw), grads)
    first, second = (torch.optim, FO) if direction == "torch->fastloss" else (FO, torch.optim)
    ps = [torch.nn.Parameter(p) for p in _params(dtype)]
    o1 = getattr(first, name)(ps, **kw)
    _run(ps, o1, grads[:10])
    sd = copy.deepcopy(o1.state_dict())
    o2 = getattr(second, name)(ps, **kw)
    o2.load_state_dict(sd)
    assert o2.state_dict()["param_groups"] == sd["param_groups"]
    _run(ps, o2, grads[10:])
    for p, r in zip(ps, ref):
        assert_close(p, r, dtype)


def test_state_dict_round_trip_keeps_torch_format():
    ps = [torch.nn.Parameter(p) for p in _params(torch.float32)]
    opt = FO.Adam(ps, lr=1e-2, amsgrad=True)
    _run(ps, opt, _grads(torch.float32, 3))
    sd = opt.state_dict()
    ref = torch.optim.Adam([torch.nn.Parameter(p) for p in _params(torch.float32)], lr=1e-2,
                           amsgrad=True)
    assert sd["param_groups"][0].keys() == ref.state_dict()["param_groups"][0].keys()
    st = sd["state"][0]
    assert st["step"].dtype == torch.float32 and st["step"].dim() == 0 and st["step"] == 3
    assert set(st) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}


@pytest.mark.parametrize("sched", ["step", "lambda", "onecycle"])
def test_lr_scheduler(sched):
    dtype = torch.float64
    name, kw = ("SGD", dict(lr=0.1, momentum=0.9)) if sched != "onecycle" else \
        ("Adam", dict(lr=0.01))
    a, b, oa, ob = _pair(name, kw, dtype)
    make = {
        "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
        "lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + t)),
        # OneCycleLR also cycles Adam's beta1 through the group's 'betas'
        "onecycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05,
                                                                  total_steps=40),
    }[sched]
    grads = _grads(dtype, 40)
    _run(a, oa, grads, make(oa))
    _run(b, ob, grads, make(ob))
    for pa, pb in zip(a, b):
        assert_close(pa, pb, dtype)
    assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]


def test_params_without_grad_are_skipped():
    a, b, oa, ob = _pair("Adam", dict(lr=0.1), torch.float32)
    before = a[1].detach().clone()
    for step in range(3):
        for i, (pa, pb) in enumerate(zip(a, b)):
            g = torch.full(pa.shape, 0.5 + step) if i != 1 else None
            pa.grad, pb.grad = g, (None if g is None else g.clone())
        oa.step()
        ob.step()
    assert torch.equal(a[1], before) and a[1] not in oa.state and b[1] not in ob.state
    for pa, pb in zip(a, b):
        assert_close(pa, pb, torch.float32)
    oa.zero_grad()
    assert all(p.grad is None for p in a)
    oa.step()  # nothing to do
    assert oa.state[a[0]]["step"] == 3


def test_model_training_with_fastloss_loss_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(32, 10)
    y = torch.randint(0, 4, (32,))

    def make():
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(),
                                   torch.nn.Linear(16, 4))

    ma, mb = make(), make()
    oa = FO.AdamW(ma.parameters(), lr=1e-2)
    ob = torch.optim.AdamW(mb.parameters(), lr=1e-2)
    for _ in range(20):
        oa.zero_grad()
        ob.zero_grad()
        FT.cross_entropy(ma(x), y, label_smoothing=0.1).backward()
        torch.nn.functional.cross_entropy(mb(x), y, label_smoothing=0.1).backward()
        oa.step()
        ob.step()
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)


def test_closure_named_params_and_noncontiguous_param():
    base = torch.randn(6, 4, dtype=torch.float64)
    pa = torch.nn.Parameter(base.t().contiguous().t())  # non-contiguous (column-major) parameter
    pb = torch.nn.Parameter(base.clone())
    assert not pa.is_contiguous()
    oa = FO.RMSprop([("w", pa)], lr=0.01, momentum=0.5)
    ob = torch.optim.RMSprop([("w", pb)], lr=0.01, momentum=0.5)
    target = torch.randn(6, 4, dtype=torch.float64)

    def closure(p, o):
        def f():
            o.zero_grad()
            loss = ((p - target) ** 2 * torch.arange(4.0, dtype=p.dtype)).sum()
            loss.backward()
            return loss
        return f

    for _ in range(10):
        la = oa.step(closure(pa, oa))
        lb = ob.step(closure(pb, ob))
        torch.testing.assert_close(la, lb)
    torch.testing.assert_close(pa, pb)
    assert oa.state_dict()["param_groups"][0]["param_names"] == ["w"]


def test_bad_input_raises_before_anything_changes():
    dtype = torch.float32
    with pytest.raises(ValueError, match="device meta"):
        FO.Adam([torch.nn.Parameter(torch.zeros(3, device="meta"))])
    with pytest.raises(TypeError, match="complex64"):  # (float16 and bfloat16: test_optim_half)
        FO.SGD([torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))], lr=0.1)
    with pytest.raises(ValueError, match="differentiable"):
        FO.Adam([torch.nn.Parameter(torch.zeros(3))], differentiable=True)
    with pytest.raises(ValueError):
        FO.Adam([torch.nn.Parameter(torch.zeros(3))], lr=-1.0)  # torch's own check

    # a later bad parameter: the first one and every state stay untouched
    a = [torch.nn.Parameter(p) for p in _params(dtype)]
    opt = FO.Adam(a, lr=0.1)
    _run(a, opt, _grads(dtype, 2))
    snap = [p.detach().clone() for p in a]
    state = copy.deepcopy(opt.state_dict()["state"])
    for p in a:
        p.grad = torch.ones_like(p)
    if hasattr(a[2], "grad_dtype"):  # torch >= 2.10 refuses such grads unless asked
        a[2].grad_dtype = None
    a[2].grad = torch.zeros(a[2].shape, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"params\[2\].grad has dtype"):
        opt.step()
    a[2].grad = None
    opt.param_groups[0]["betas"] = (0.9, 1.5)  # e.g. set by a buggy scheduler
    with pytest.raises(ValueError, match="betas"):
        opt.step()
    _assert_unchanged(a, snap, opt, state)

    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = FO.SGD(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()

    p = torch.nn.Parameter(torch.zeros(3))
    opt = FO.Adam([p])
    torch_sd = torch.optim.Adam([torch.nn.Parameter(torch.zeros(4))]).state_dict()
    torch_sd["state"] = {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(4),
                             "exp_avg_sq": torch.zeros(4)}}
    opt.load_state_dict(torch_sd)
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match="shape"):
        opt.step()
    assert torch.equal(p, torch.zeros(3))


def test_add_param_group_checked():
    opt = FO.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    with pytest.raises(TypeError, match="complex64"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))]})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.5})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["momentum"] == 0


def test_fused_and_foreach_flags_accepted():
    a, b, _, ob = _pair("Adam", dict(lr=0.01), torch.float32)
    oa = FO.Adam(a, lr=0.01, fused=True)
    grads = _grads(torch.float32, 10)
    _run(a, oa, grads)
    _run(b, ob, grads)
    for pa, pb in zip(a, b):
        assert_close(pa, pb, torch.float32)
    np.testing.assert_equal(oa.param_groups[0]["fused"], True)


def test_views_follow_replaced_data_and_reloaded_state():
    """The cached NumPy views are rebuilt when p.data or the state tensors are replaced."""
    dtype = torch.float64
    a, b, oa, ob = _pair("Adam", dict(lr=0.01, amsgrad=True), dtype)
    grads = _grads(dtype, 30)
    _run(a, oa, grads[:5])
    _run(b, ob, grads[:5])
    sa, sb = copy.deepcopy(oa.state_dict()), copy.deepcopy(ob.state_dict())
    _run(a, oa, grads[5:10])
    _run(b, ob, grads[5:10])
    oa.load_state_dict(sa)  # back to step 5 in the same optimizer
    ob.load_state_dict(sb)
    for pa, pb in zip(a, b):
        new = torch.randn(pa.shape, dtype=dtype)
        pa.data = new.clone()  # new memory behind the same Parameter
        pb.data = new.clone()
    oa.state[a[0]]["step"].fill_(2.0)  # an in-place edit of the state is seen too
    ob.state[b[0]]["step"].fill_(2.0)
    _run(a, oa, grads[10:])
    _run(b, ob, grads[10:])
    for pa, pb in zip(a, b):
        assert_close(pa, pb, dtype)
    assert float(oa.state[a[0]]["step"]) == 22.0


@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=0.01, amsgrad=True)), ("NAdam", {}),
                                     ("SGD", dict(lr=0.1, momentum=0.9)),
                                     ("RMSprop", dict(centered=True, momentum=0.5)),
                                     ("Adagrad", {}), ("Adamax", {})])
def test_scalar_and_empty_params(name, kw):
    """A 0-dim parameter (a learnable temperature) and an empty one step like torch."""
    dtype = torch.float64
    a = [torch.nn.Parameter(torch.tensor(0.7, dtype=dtype)),
         torch.nn.Parameter(torch.zeros(0, 3, dtype=dtype))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    oa, ob = getattr(FO, name)(a, **kw), getattr(torch.optim, name)(b, **kw)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        gs = [torch.randn((), dtype=dtype, generator=g), torch.zeros(0, 3, dtype=dtype)]
        for p, q, gg in zip(a, b, gs):
            p.grad, q.grad = gg.clone(), gg.clone()
        oa.step()
        ob.step()
    for p, q in zip(a, b):
        assert_close(p, q, dtype)
        assert {k: v.shape for k, v in oa.state[p].items()} == \
            {k: v.shape for k, v in ob.state[q].items()}


def test_tensor_lr_and_namespace():
    assert FT.optim is FO
    a, b, _, _ = _pair("Adam", dict(lr=0.01), torch.float64)
    oa = FO.Adam(a, lr=torch.tensor(0.01), foreach=False)
    ob = torch.optim.Adam(b, lr=torch.tensor(0.01), foreach=False)
    grads = _grads(torch.float64, 10)
    _run(a, oa, grads)
    _run(b, ob, grads)
    for pa, pb in zip(a, b):
        assert_close(pa, pb, torch.float64)


# ---------------------------------------------------------------------------
# the replayed step (same params, state and checked gradients) follows every change

def test_replay_follows_changes_between_steps():
    dtype = torch.float32
    a, b, oa, ob = _pair("Adam", dict(lr=0.01, amsgrad=True), dtype, groups=True)
    grads = _grads(dtype, 12)
    for p, q, g in zip(a, b, grads[0]):  # gradients kept: zero_grad(set_to_none=False)
        p.grad, q.grad = g.clone(), g.clone()

    def both(fn):
        fn(a, oa)
        fn(b, ob)

    def fill(k):
        def f(ps, o):
            o.zero_grad(set_to_none=False)
            for p, g in zip(ps, grads[k]):
                p.grad.add_(g)  # in place: the same gradient tensors
        return f

    for k in range(3):
        both(fill(k))
        both(lambda ps, o: o.step())
    # a state tensor replaced by assignment, a parameter's data replaced, a gradient
    # dropped, a non-contiguous gradient reused with new values, an option changed
    both(lambda ps, o: o.state[ps[0]].__setitem__("exp_avg",
                                                   o.state[ps[0]]["exp_avg"] * 0.5))
    both(lambda ps, o: setattr(ps[1], "data", ps[1].data.clone() + 1))
    both(lambda ps, o: setattr(ps[2], "grad", None))
    both(lambda ps, o: o.step())
    both(lambda ps, o: setattr(ps[1].grad, "data", ps[1].grad.data * 3))  # moved memory
    both(lambda ps, o: o.step())
    nc = torch.randn(13, 7, dtype=dtype).t()
    for ps in (a, b):
        ps[0].grad = nc.clone()  # clone keeps the strides
    assert not a[0].grad.is_contiguous()
    both(lambda ps, o: o.step())
    both(lambda ps, o: ps[0].grad.mul_(-2.0))
    both(lambda ps, o: o.step())
    both(lambda ps, o: o.param_groups[1].__setitem__("lr", 0.05))
    for k in range(3, 8):
        both(lambda ps, o: setattr(ps[2], "grad", grads[k][2].clone()))
        both(lambda ps, o: o.step())
    for pa, pb in zip(a, b):
        assert_close(pa, pb, dtype)
    for pa, pb in zip(a, b):
        for key in ob.state[pb]:
            assert_close(oa.state[pa][key], ob.state[pb][key], dtype, key)


def test_one_bad_grad_among_200_changes_nothing():
    ps = [torch.nn.Parameter(torch.randn(40)) for _ in range(200)]
    opt = FO.AdamW(ps, lr=0.1)
    for _ in range(3):
        for p in ps:
            p.grad = torch.randn(40)
        opt.step()
    snap = [p.detach().clone() for p in ps]
    state = copy.deepcopy(opt.state_dict()["state"])
    ps[150].grad = torch.randn(40).to_sparse()
    with pytest.raises(ValueError, match=r"params\[150\] has a sparse gradient"):
        opt.step()
    ps[150].grad = torch.randn(80)[::2]  # non-contiguous: fine
    ps[151].grad = ps[151].detach()[:]  # the parameter itself
    with pytest.raises(ValueError, match=r"params\[151\].grad shares memory"):
        opt.step()
    _assert_unchanged(ps, snap, opt, state)


@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=0.01)), ("SGD", dict(lr=0.1, momentum=0.9)),
                                     ("RMSprop", dict(lr=0.01))])
def test_max_grad_norm_matches_torch_clip_then_step(name, kw):
    dtype = torch.float64
    a, b, _, ob = _pair(name, kw, dtype)
    oa = getattr(FO, name)(a, **kw, max_grad_norm=0.5)
    for gs in _grads(dtype, 15):
        for p, q, g in zip(a, b, gs):
            p.grad, q.grad = g.clone(), g.clone()
        norm = torch.nn.utils.clip_grad_norm_(b, 0.5)
        oa.step()
        ob.step()
        assert oa.last_grad_norm == pytest.approx(float(norm), rel=1e-12)
        for p, g in zip(a, gs):
            assert torch.equal(p.grad, g)  # the grads are not modified
    for pa, pb in zip(a, b):
        assert_close(pa, pb, dtype)
    with pytest.raises(ValueError, match="max_grad_norm"):
        FO.Adam(a, max_grad_norm=0.0)


def test_skip_nonfinite_changes_nothing():
    a = [torch.nn.Parameter(p) for p in _params(torch.float32)]
    opt = FO.AdamW(a, lr=0.1, skip_nonfinite=True)
    _run(a, opt, _grads(torch.float32, 2))
    snap = [p.detach().clone() for p in a]
    state = copy.deepcopy(opt.state_dict()["state"])
    a[1].grad[2] = float("inf")
    opt.step()
    assert opt.skipped_steps == 1
    _assert_unchanged(a, snap, opt, state)
    a[1].grad[2] = 0.0
    opt.step()
    assert float(opt.state[a[0]]["step"]) == 3.0

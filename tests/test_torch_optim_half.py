"""fastloss.torch.optim with bfloat16/float16 parameters, state_dtype and master weights,
against torch.optim: fused Adam/AdamW/Adagrad on bf16 within one bf16 ulp per step; the
others against torch's float32 update of the widened values (torch's non-fused bf16 path
rounds every intermediate to bf16)."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")
import fastloss.torch.optim as FO  # noqa: E402

N = 3000
_TENSOR_STATE = ("step", "mu_product")


def _ulp(m, dt):
    mant = 7 if dt == torch.bfloat16 else 10
    e = torch.floor(torch.log2(m.clamp_min(2.0 ** -126)))
    return torch.clamp_min(2.0 ** (e - mant), 2.0 ** -133 if mant == 7 else 2.0 ** -24)


def _max_ulps(got, want, old):
    g, w, o = got.double(), want.double(), old.double()
    m = torch.maximum(torch.maximum(g.abs(), w.abs()), o.abs())
    fin = torch.isfinite(w)
    return ((g - w).abs() / _ulp(m, got.dtype))[fin].max().item()


def _pair(name, kw, dtype, fl_extra=None, seed=0):
    torch.manual_seed(seed)
    p0 = torch.randn(N, dtype=dtype)
    a, b = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    return a, b, getattr(FO, name)([a], **kw, **(fl_extra or {}))


def _set_grads(ps, g):
    for p in ps:
        p.grad = g.clone()


FUSED = [("Adam", dict(lr=0.01)), ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
         ("AdamW", dict(lr=0.01)), ("Adagrad", dict(lr=0.1, lr_decay=0.01))]


@pytest.mark.parametrize("name,kw", FUSED, ids=[f"{n}-{len(k)}" for n, k in FUSED])
def test_bf16_trajectory_matches_torch_fused(name, kw):
    """Eight steps of both optimizers side by side, resynchronised after each step:
    params and state within one bf16 ulp of torch's fused step; Adam/AdamW params are
    bit-identical over the whole unsynchronised trajectory."""
    a, b, oa = _pair(name, kw, torch.bfloat16)
    ob = getattr(torch.optim, name)([b], **kw, fused=True)
    free_a, free_b = a.detach().clone(), b.detach().clone()
    for t in range(8):
        _set_grads([a, b], torch.randn(N, dtype=torch.bfloat16))
        old = b.detach().clone()
        olds = {k: v.clone() for k, v in ob.state[b].items()}
        oa.step()
        ob.step()
        assert _max_ulps(a, b, old) <= 1
        for k, v in oa.state[a].items():
            if k not in _TENSOR_STATE:
                assert v.dtype == torch.bfloat16
                assert _max_ulps(v, ob.state[b][k], olds.get(k, v)) <= 1, k
        with torch.no_grad():  # resynchronise
            a.copy_(b)
            for k, v in ob.state[b].items():
                if k not in _TENSOR_STATE:
                    oa.state[a][k].copy_(v)
    if name in ("Adam", "AdamW") and not kw.get("amsgrad"):
        pa, pb = torch.nn.Parameter(free_a), torch.nn.Parameter(free_b)
        oa, ob = getattr(FO, name)([pa], **kw), getattr(torch.optim, name)([pb], **kw, fused=True)
        torch.manual_seed(1)
        for t in range(10):
            _set_grads([pa, pb], torch.randn(N, dtype=torch.bfloat16))
            oa.step()
            ob.step()
        assert torch.equal(pa, pb)


OTHERS = [("SGD", dict(lr=0.1)), ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
          ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
          ("Adagrad", dict(lr=0.1, weight_decay=0.05)),
          ("RMSprop", dict(lr=0.01)), ("RMSprop", dict(lr=0.01, centered=True, momentum=0.9)),
          ("Adamax", dict(lr=0.01, weight_decay=0.1)), ("NAdam", dict(lr=0.01)),
          ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True))]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("name,kw", OTHERS, ids=[f"{n}-{len(k)}" for n, k in OTHERS])
def test_16bit_steps_match_torch_float32_update_rounded(name, kw, dtype):
    """Each step from the same 16-bit state: params and state within one 16-bit ulp of
    torch's (single-tensor) float32 update of the widened values, rounded once. (torch's
    own bf16 path for these rounds every intermediate to bf16; torch's fused SGD on bf16
    CPU tensors (2.13) leaves most elements unchanged, so it is no reference.)"""
    a, _, oa = _pair(name, kw, dtype)
    b = torch.nn.Parameter(a.detach().float())
    ob = getattr(torch.optim, name)([b], **kw, foreach=False)
    for t in range(5):
        g = torch.randn(N, dtype=dtype)
        a.grad, b.grad = g.clone(), g.float()
        old = a.detach().clone()
        olds = {k: v.clone() for k, v in oa.state[a].items()}
        oa.step()
        ob.step()
        assert _max_ulps(a, b.detach().to(dtype), old) <= 1
        for k, v in oa.state[a].items():
            if k not in _TENSOR_STATE:
                assert v.dtype == dtype
                assert _max_ulps(v, ob.state[b][k].to(dtype), olds.get(k, v)) <= 1, k
        with torch.no_grad():  # torch continues from the 16-bit values
            b.copy_(a.float())
            for k, v in oa.state[a].items():
                if k not in _TENSOR_STATE:
                    ob.state[b][k].copy_(v.float())


def test_bf16_real_torch_nonfused_close():
    """Against torch's own bf16 single-tensor RMSprop (every intermediate rounded to
    bf16): params agree to a few bf16 ulps of their scale."""
    a, b, oa = _pair("RMSprop", dict(lr=0.01), torch.bfloat16)
    ob = torch.optim.RMSprop([b], lr=0.01, foreach=False)
    for t in range(5):
        _set_grads([a, b], torch.randn(N, dtype=torch.bfloat16))
        oa.step()
        ob.step()
    assert (a.float() - b.float()).abs().max() <= 4 * 2.0 ** -8 * b.abs().max().float()


@pytest.mark.parametrize("sdt", [torch.bfloat16, torch.float16, "bfloat16"])
def test_state_dtype_float32_params(sdt):
    """float32 params with 16-bit moments: the state is stored 16-bit, the step equals
    fastloss.optim's with the same state_dtype (NumPy backend) bit for bit, and the
    state_dict keeps the dtype and resumes bit-identically."""
    import fastloss.optim as fo
    a, _, oa = _pair("Adam", dict(lr=0.01, amsgrad=True), torch.float32,
                     dict(state_dtype=sdt))
    want = torch.bfloat16 if sdt != torch.float16 else torch.float16
    assert oa.state_dtype == want
    ref_p = a.detach().numpy().copy()
    ref = fo.Adam([ref_p], lr=0.01, amsgrad=True, state_dtype=sdt if isinstance(sdt, str)
                  else ("bfloat16" if sdt == torch.bfloat16 else np.float16),
                  backend="numpy")
    for t in range(3):
        g = torch.randn(N)
        a.grad = g
        oa.step()
        ref.step([g.numpy()])
    assert np.array_equal(a.detach().numpy(), ref_p)
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert oa.state[a][k].dtype == want
    sd = copy.deepcopy(oa.state_dict())
    assert sd["state"][0]["exp_avg"].dtype == want
    c = torch.nn.Parameter(a.detach().clone())
    oc = FO.Adam([c], lr=0.01, amsgrad=True, state_dtype=sdt)
    oc.load_state_dict(sd)
    assert oc.state[c]["exp_avg"].dtype == want
    for t in range(3):
        _set_grads([a, c], torch.randn(N))
        oa.step()
        oc.step()
    assert torch.equal(a, c)
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert torch.equal(oa.state[a][k], oc.state[c][k])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_master_weights(dtype):
    """Master weights: float32 ``master_param`` in the state (and the state_dict); the
    param is it rounded; the master follows torch's float32 AdamW on the widened values
    when the state is float32 too; a state_dict round trip restores both."""
    a, _, oa = _pair("AdamW", dict(lr=1e-3), dtype,
                     dict(master_weights=True, state_dtype=torch.float32))
    b = torch.nn.Parameter(a.detach().float())
    ob = torch.optim.AdamW([b], lr=1e-3, foreach=False)
    for t in range(4):
        g = torch.randn(N, dtype=dtype)
        a.grad, b.grad = g.clone(), g.float()
        oa.step()
        ob.step()
    m = oa.state[a]["master_param"]
    assert m.dtype == torch.float32 and torch.equal(a.detach(), m.to(dtype))
    assert (m - b.detach()).abs().max() <= 1e-6 * b.abs().max()
    sd = copy.deepcopy(oa.state_dict())
    assert sd["state"][0]["master_param"].dtype == torch.float32
    c = torch.nn.Parameter(a.detach().clone())
    oc = FO.AdamW([c], lr=1e-3, master_weights=True, state_dtype=torch.float32)
    oc.load_state_dict(sd)
    assert torch.equal(oc.state[c]["master_param"], m)  # not rounded through the param
    for t in range(3):
        _set_grads([a, c], torch.randn(N, dtype=dtype))
        oa.step()
        oc.step()
    assert torch.equal(a, c) and torch.equal(oa.state[a]["master_param"],
                                             oc.state[c]["master_param"])
    # from a plain torch optimizer's state_dict: the master is made from the param
    d = torch.nn.Parameter(a.detach().clone())
    od = FO.AdamW([d], lr=1e-3, master_weights=True)
    plain = torch.optim.AdamW([torch.nn.Parameter(a.detach().clone())], lr=1e-3)
    od.load_state_dict(plain.state_dict())
    d.grad = torch.randn(N, dtype=dtype)
    od.step()
    assert od.state[d]["master_param"].dtype == torch.float32


def test_16bit_model_training_and_replay():
    """A bf16 model trained with the replayed (fast) step equals fastloss.optim's NumPy
    reference; grads of the wrong dtype are refused before anything changes."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(),
                                torch.nn.Linear(30, 4)).to(torch.bfloat16)
    ref = copy.deepcopy(model)
    opt = FO.Adam(model.parameters(), lr=1e-2)
    tref = torch.optim.Adam(ref.parameters(), lr=1e-2, fused=True)
    x = torch.randn(64, 20, dtype=torch.bfloat16)
    for t in range(5):
        for m, o in ((model, opt), (ref, tref)):
            o.zero_grad()
            m(x).float().pow(2).mean().backward()
            o.step()
        for p, q in zip(model.parameters(), ref.parameters()):
            assert torch.equal(p, q)
    snap = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    params = list(model.parameters())
    if hasattr(params[2], "grad_dtype"):
        params[2].grad_dtype = None
    params[2].grad = torch.zeros(params[2].shape, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"params\[2\].grad has dtype"):
        opt.step()
    for p, s in zip(model.parameters(), snap):
        assert torch.equal(p, s)
    for k, v in opt.state_dict()["state"].items():
        for key, t in v.items():
            assert torch.equal(t, state["state"][k][key])


def test_bad_state_dtype():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(TypeError, match="state_dtype"):
        FO.Adam([p], state_dtype=torch.int32)
    with pytest.raises(TypeError, match="state_dtype"):
        FO.Adam([p], state_dtype=torch.float64)  # wider than the float32 update
    with pytest.raises(TypeError, match="master_weights"):
        FO.Adam([p], master_weights=1)


def test_master_follows_replaced_weights():
    """``p.data = new`` under master weights: the next step starts from the new weights
    (a new master), not from the old master."""
    p = torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))
    opt = FO.SGD([p], lr=0.5, master_weights=True)
    p.grad = torch.ones(8, dtype=torch.bfloat16)
    opt.step()
    assert torch.equal(p, torch.full((8,), 0.5, dtype=torch.bfloat16))
    p.data = torch.full((8,), 4.0, dtype=torch.bfloat16)
    opt.step()
    assert torch.equal(p, torch.full((8,), 3.5, dtype=torch.bfloat16))
    assert torch.equal(opt.state[p]["master_param"], torch.full((8,), 3.5))


def test_torch_bf16_state_dict_loads_into_fastloss_optim():
    import fastloss.optim as fo
    import ml_dtypes
    a = torch.nn.Parameter(torch.randn(6, dtype=torch.bfloat16))
    ta = torch.optim.Adam([a], lr=0.1)
    a.grad = torch.randn(6, dtype=torch.bfloat16)
    ta.step()
    p = a.detach().float().numpy().astype(ml_dtypes.bfloat16)
    opt = fo.Adam([p], lr=0.1)
    opt.load_state_dict(ta.state_dict())
    st = opt.state[0]
    assert st["exp_avg"].dtype == ml_dtypes.bfloat16 and st["step"] == 1
    np.testing.assert_array_equal(st["exp_avg"].astype(np.float32),
                                  ta.state[a]["exp_avg"].float().numpy())

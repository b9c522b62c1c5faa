"""The compiled identity checks behind the torch optimizers' group replay
(``native/_pyobjects.pxi``, used by ``fastloss/torch/_slots.py``): identity, never
equality, so a tensor replaced by an equal one is seen."""
from __future__ import annotations

import numpy as np
import pytest

from fastloss import _backend

torch = pytest.importorskip("torch")
import fastloss.torch.optim as FO  # noqa: E402

K = _backend.kernels
pytestmark = pytest.mark.skipif(K is None, reason="needs the compiled extension")
_dp = torch.Tensor.data_ptr


def test_same_objects_is_identity():
    a = [torch.tensor(1.0), torch.tensor(2.0), None, 3]
    assert K.same_objects(a, list(a))
    assert not K.same_objects(a, a[:3])
    b = list(a)
    b[0] = torch.tensor(1.0)  # equal, not the same
    assert not K.same_objects(a, b)
    assert K.same_objects([], [])


def test_grads_if_new():
    ps = [torch.nn.Parameter(torch.randn(3)) for _ in range(4)]
    for p in ps[:3]:
        p.grad = torch.randn(3)
    cached = [p.grad for p in ps]
    assert K.grads_if_new(ps, cached) is None
    ps[1].grad = ps[1].grad.clone()
    new = K.grads_if_new(ps, cached)
    assert len(new) == 4 and new[1] is ps[1].grad and new[3] is None
    ps[3].grad = torch.zeros(3)
    assert K.grads_if_new(ps, [p.grad for p in ps]) is None
    with pytest.raises(ValueError):
        K.grads_if_new(ps, cached[:2])


def test_same_addresses_sees_moved_memory():
    ts = [torch.randn(5) for _ in range(3)]
    addrs = np.array([t.data_ptr() for t in ts], np.int64)
    assert K.same_addresses(ts, addrs, _dp)
    assert not K.same_addresses(ts[:2], addrs, _dp)
    ts[2].data = torch.randn(5)  # the same tensor object, other memory
    assert not K.same_addresses(ts, addrs, _dp)


def test_same_dict_values():
    ds = [{"step": torch.tensor(1.0), "m": torch.zeros(2)}, {"step": torch.tensor(1.0)}]
    vals = [v for d in ds for v in d.values()]
    assert K.same_dict_values(ds, vals)
    ds[1]["step"] = torch.tensor(1.0)  # an equal scalar: not the same
    assert not K.same_dict_values(ds, vals)
    ds[1]["step"] = vals[2]
    ds[0]["extra"] = None
    assert not K.same_dict_values(ds, vals)
    del ds[0]["extra"], ds[1]["step"]
    assert not K.same_dict_values(ds, vals)
    assert not K.same_dict_values([{"a": 1}, None], [1])


def test_replay_sees_equal_but_new_scalar_state():
    """Replacing a 1-element parameter's state tensors and step by equal-valued new ones
    (equality would call them the same) makes the step use the new tensors."""
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(1)) for _ in range(3)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    oa, ob = FO.Adam(ps, lr=0.1), torch.optim.Adam(qs, lr=0.1)
    for p, q in zip(ps, qs):
        p.grad, q.grad = torch.zeros(1), torch.zeros(1)
    for k in range(6):
        for p, q in zip(ps, qs):  # the same gradient tensors, new values
            g = torch.randn(1)
            p.grad.copy_(g)
            q.grad.copy_(g)
        if k == 3:  # fresh but equal objects, new memory
            for o, x in ((oa, ps[1]), (ob, qs[1])):
                st = o.state[x]
                for key in list(st):
                    st[key] = st[key].clone()
        oa.step()
        ob.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        torch.testing.assert_close(oa.state[ps[1]][key], ob.state[qs[1]][key])


def test_zero_grad_keeps_the_replay_and_checks_new_grads():
    """``zero_grad()`` (grads to None) keeps the group's replay but drops its gradients:
    the next step checks the new ones; a step with no gradient changes nothing."""
    torch.manual_seed(1)
    ps = [torch.nn.Parameter(torch.randn(*s)) for s in [(3, 4), (5,), (1,), (2, 2)] * 5]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    oa, ob = FO.Adam(ps, lr=0.05), torch.optim.Adam(qs, lr=0.05)
    for k in range(7):
        oa.zero_grad()
        ob.zero_grad()
        if k == 4:  # no gradients at all: nothing moves, the old grads are not used
            snap = [p.detach().clone() for p in ps]
            oa.step()
            for p, s in zip(ps, snap):
                torch.testing.assert_close(p.detach(), s, rtol=0, atol=0)
            continue
        for j, (p, q) in enumerate(zip(ps, qs)):
            if k == 5 and j == 7:
                continue  # one parameter without a gradient this step
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        if k < 5:  # (after k = 5 the step counts differ: two launches, no replay)
            assert oa._fl_fast
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q)
    oa.zero_grad()  # a bad new gradient among good ones: raised before anything changes
    for p in ps:
        p.grad = torch.randn_like(p)
    ps[3].grad = ps[3].grad.to_sparse()
    snap = [p.detach().clone() for p in ps]
    with pytest.raises(ValueError):
        oa.step()
    for p, s in zip(ps, snap):
        torch.testing.assert_close(p.detach(), s, rtol=0, atol=0)


def test_new_grad_addresses():
    ps = [torch.randn(3, 2), torch.randn(0), torch.randn(4)]
    meta = [(p.dtype, p.shape, p.data_ptr(), p.numel() * 4) for p in ps]
    gs = [torch.randn(3, 2), torch.randn(0), torch.randn(4)]

    def call(gs=gs, ps=ps):
        return K.new_grad_addresses(gs, ps, meta, torch.Tensor, torch.strided)

    ptrs, live = call()
    assert ptrs == [g.data_ptr() for g in gs]
    assert live == [gs[0].data_ptr(), gs[2].data_ptr()]  # (the empty one is not stepped)
    for bad in (torch.randn(3, 2, dtype=torch.float64), torch.randn(2, 3),
                torch.randn(2, 3).t(), torch.randn(3, 2).to_sparse(),
                torch.nn.Parameter(torch.randn(3, 2)), ps[0].view(3, 2)):
        assert call([bad, *gs[1:]]) is None
    assert call(gs, [ps[0].t(), *ps[1:]]) is None  # a param no longer contiguous
    assert call(gs[:2]) is None

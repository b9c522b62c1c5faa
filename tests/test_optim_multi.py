"""Multi-tensor steps: one native call per group and kernel variant; the functional core."""
import copy
import pickle

import numpy as np
import pytest

import fastloss
import fastloss.optim as fo
from fastloss.optim import _kernels_numba as K
from fastloss.optim import _multi as M
from fastloss.optim import functional as F

from test_optim import IDS, OPTIONS, _problem


def test_split_across_tensor_boundaries_is_bitwise_per_array():
    """Any number of parts, boundaries anywhere (empty, 1-element, unaligned tensors):
    the same bits as the per-array kernel."""
    rng = np.random.default_rng(3)
    sizes = [0, 1, 63, 64, 65, 1000, 3, 0, 4097, 7]
    f32 = np.float32
    sc = (f32(1e-2), f32(0.1), f32(0.9), f32(0.999), f32(0.001), f32(1e-8), f32(0.1),
          f32(0.99), f32(1.0))
    flags = (True, True, True)
    base = [[rng.standard_normal(n).astype(f32) for n in sizes] for _ in range(5)]
    base[2] = [np.abs(a) for a in base[2]]  # v >= 0
    base[3] = [np.abs(a) for a in base[3]]
    ref = copy.deepcopy(base)
    body = K.kernel("adam", flags, 0)
    for arrs in zip(*ref):
        if arrs[0].size:
            body(*arrs, *sc)
    for nparts in (1, 2, 3, 7, 64):
        got = copy.deepcopy(base)
        addr = np.array([[a.ctypes.data for a in arrs] for arrs in zip(*got)], np.int64)
        offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        for parallel in (False, True):
            work = copy.deepcopy(got)
            addr = np.array([[a.ctypes.data for a in arrs] for arrs in zip(*work)], np.int64)
            M.multi_kernel("adam", flags, 5, parallel)(addr, offs, nparts, f32(0), *sc)
            for a, b in zip(work, ref):
                for x, y in zip(a, b):
                    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name,kw", OPTIONS[::3], ids=IDS[::3])
def test_many_tensors_parallel_equals_numpy(name, kw, threads, monkeypatch):
    monkeypatch.setattr(K, "PARALLEL_THRESHOLD", 0)
    sizes = [(5, 7), (300,), (1,), (0,), (2000,), (33, 3)] * 4
    res = {}
    for backend in ("native", "numpy"):
        params, grads = _problem(np.float32, sizes=sizes, steps=4)
        opt = getattr(fo, name)(params, **kw, backend=backend)
        with fastloss.num_threads(threads):
            for gs in grads:
                opt.step(gs)
        res[backend] = params
    for a, b in zip(res["native"], res["numpy"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", ["dtype", "shape", "alias", "type"])
@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_one_bad_grad_among_200_changes_nothing(bad, backend):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(50).astype(np.float32) for _ in range(200)]
    opt = fo.Adam(params, amsgrad=True, backend=backend)
    grads = [rng.standard_normal(50).astype(np.float32) for _ in range(200)]
    opt.step(grads)
    before = ([p.copy() for p in params], pickle.dumps(opt.state_dict()))
    grads = list(grads)
    grads[150] = {"dtype": grads[150].astype(np.float64), "shape": grads[150][:49],
                  "alias": params[150][::-1], "type": grads[150].tolist()}[bad]
    with pytest.raises((ValueError, TypeError), match=r"grads\[150\]"):
        opt.step(grads)
    for a, b in zip(params, before[0]):
        np.testing.assert_array_equal(a, b)
    assert pickle.dumps(opt.state_dict()) == before[1]


# ---------------------------------------------------------------------------
# functional core

@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("name,kw", OPTIONS, ids=IDS)
def test_functional_equals_class_bitwise(name, kw, backend):
    kw = dict(kw)
    hp = dict(kw)
    pa, grads = _problem(np.float32, steps=6)
    pb = [p.copy() for p in pa]
    opt = getattr(fo, name)(pa, **kw, backend=backend)
    state = F.init(name, pb, **hp)
    for gs in grads:
        opt.step(gs)
        assert F.update(name, pb, gs, state, hp, backend=backend) is state
    for a, b in zip(pa, pb):
        np.testing.assert_array_equal(a, b)
    sd = opt.state_dict()["state"]
    for i, st in enumerate(state):
        assert sd[i].keys() == st.keys()
        for key, v in st.items():
            np.testing.assert_array_equal(v, sd[i][key])


def test_functional_step_argument_and_class_objects():
    p1, p2 = np.ones(4, np.float32), np.ones(4, np.float32)
    g = np.linspace(-1, 1, 4).astype(np.float32)
    s1 = F.init(fo.AdamW, [p1])
    s2 = F.init("adamw", [p2])
    for t in (1, 2, 3):
        F.update(fo.AdamW, [p1], [g], s1, {"lr": 0.1})
    F.update("AdamW", [p2], [g], s2, {"lr": 0.1}, step=1)
    F.update("AdamW", [p2], [g], s2, {"lr": 0.1}, step=2)
    F.update("AdamW", [p2], [g], s2, {"lr": 0.1}, step=3)
    np.testing.assert_array_equal(p1, p2)
    assert s1[0]["step"] == s2[0]["step"] == 3


@pytest.mark.parametrize("call,exc,msg", [
    (lambda p, s: F.update("adamx", p, [np.ones(3)], s), ValueError, "unknown optimizer"),
    (lambda p, s: F.update("adam", p, [np.ones(3)], s, {"foo": 1}), TypeError, "foo"),
    (lambda p, s: F.update("adam", p, [np.ones(3)], s, {"lr": -1}), ValueError, "lr"),
    (lambda p, s: F.update("adam", p, [np.ones(4)], s), ValueError, "shape"),
    (lambda p, s: F.update("adam", p, [np.ones(3)], s * 2), ValueError, "state"),
    (lambda p, s: F.update("adam", p, [np.ones(3)], [dict(s[0], exp_avg=np.ones(2))]),
     ValueError, "exp_avg"),
    (lambda p, s: F.update("adam", p, [np.ones(3)], s, step=0), ValueError, "step"),
    (lambda p, s: F.update("sgd", p, [np.ones(3)], [{"momentum_buffer": None}], step=2),
     ValueError, "step"),
    (lambda p, s: F.update(len, p, [np.ones(3)], s), TypeError, "opt"),
])
def test_functional_bad_input_changes_nothing(call, exc, msg):
    p = [np.ones(3)]
    s = F.init("adam", p)
    F.update("adam", p, [np.full(3, 0.5)], s)
    before = (p[0].copy(), pickle.dumps(s))
    with pytest.raises(exc, match=msg):
        call(p, s)
    np.testing.assert_array_equal(p[0], before[0])
    assert pickle.dumps(s) == before[1]

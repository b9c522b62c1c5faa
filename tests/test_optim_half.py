"""fastloss.optim with 16-bit params and state: bfloat16/float16 params, state_dtype,
master weights; the Numba conversions bit for bit against NumPy/ml_dtypes casts."""
import pickle

import numpy as np
import pytest

import fastloss.optim as fo
from fastloss.optim import _half_numba as H
from fastloss.optim import _kernels_numba as K
from fastloss.optim import functional as F

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALF = [BF16, F16]
HIDS = ["bf16", "f16"]

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1, betas=(0.2, 0.9), maximize=True)),
    ("AdamW", dict(lr=0.01, amsgrad=True)),
    ("Adamax", dict(lr=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Lion", dict(lr=0.01, weight_decay=0.1)),
]
IDS = [f"{n}-{'-'.join(k)}" for n, k in CASES]
SIZES = ((6, 5), (11,), (1500,))  # the last spans many vectors


def _bits(a):
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a.view(
        np.uint32 if a.dtype.itemsize == 4 else np.uint64)


def _problem(dtype, steps=4, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SIZES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SIZES] for _ in range(steps)]
    return params, grads


def _run(name, kw, dtype, backend, steps=4, **extra):
    params, grads = _problem(dtype, steps)
    opt = getattr(fo, name)(params, **kw, backend=backend, **extra)
    for gs in grads:
        opt.step(gs)
    return params, opt


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(_bits(a), _bits(b))


def _same_run(ra, rb):
    (pa, oa), (pb, ob) = ra, rb
    for a, b in zip(pa, pb):
        _same(a, b)
    for i in oa.state:
        assert oa.state[i].keys() == ob.state[i].keys()
        for k, v in oa.state[i].items():
            if isinstance(v, np.ndarray):
                _same(v, ob.state[i][k])
            else:
                assert v == ob.state[i][k]


# ---------------------------------------------------------------------------
# conversions

@pytest.mark.parametrize("kind,dtype", [(H.BF16, BF16), (H.F16, F16)], ids=HIDS)
def test_conversions_bit_exact(kind, dtype):
    """Every 16-bit pattern widens as NumPy/ml_dtypes cast it; float32 values (random
    bits, ties, overflow, subnormal boundaries, NaN, Inf) round as they cast them."""
    allbits = np.arange(65536, dtype=np.uint16)
    out = np.empty(65536, np.float32)
    K.kernel("cvt_load", (), 1)(allbits, kind, out)
    want = allbits.view(dtype).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(out), nan)
    np.testing.assert_array_equal(out.view(np.uint32)[~nan], want.view(np.uint32)[~nan])

    rng = np.random.default_rng(0)
    x = rng.integers(0, 2 ** 32, 400_000, dtype=np.uint64).astype(np.uint32)
    shift = 16 if kind == H.BF16 else 13
    ties = (x & ~np.uint32((1 << shift) - 1)) | np.uint32(1 << (shift - 1))  # exact halves
    special = np.array([0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 65504, 65519.99, 65520,
                        2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -14, 3.4e38,
                        3.3961776e38, 1e-40], np.float32)
    xs = np.concatenate([x.view(np.float32), ties.view(np.float32), special, want])
    h = np.empty(xs.size, np.uint16)
    K.kernel("cvt_store", (), 1)(xs, kind, h)
    with np.errstate(all="ignore"):
        w = xs.astype(dtype).view(np.uint16)
    nanx = np.isnan(xs)
    np.testing.assert_array_equal(np.isnan(h.view(dtype)), nanx)
    np.testing.assert_array_equal(h[~nanx], w[~nanx])


# ---------------------------------------------------------------------------
# 16-bit params: backends, reference, options

@pytest.mark.parametrize("dtype", HALF, ids=HIDS)
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_half_native_equals_numpy_bitwise(name, kw, dtype):
    rn = _run(name, kw, dtype, "native")
    rr = _run(name, kw, dtype, "numpy")
    _same_run(rn, rr)
    for v in rn[1].state[0].values():
        if isinstance(v, np.ndarray):
            assert v.dtype == dtype  # state in the param's dtype by default, as torch


def _ulp(m, dtype):
    """One 16-bit ulp at magnitude ``m`` (float64)."""
    mant, tiny = (7, 2.0 ** -133) if dtype == BF16 else (10, 2.0 ** -24)
    e = np.floor(np.log2(np.maximum(m, 2.0 ** -126)))
    return np.maximum(2.0 ** (e - mant), tiny)


def _within_one_ulp(got, want, old, dtype):
    g, w, o = (np.asarray(a, np.float64) for a in (got, want, old))
    m = np.maximum(np.maximum(np.abs(g), np.abs(w)), np.abs(o))
    fin = np.isfinite(w)
    assert (np.abs(g - w)[fin] <= _ulp(m, dtype)[fin]).all(), np.max(
        np.abs(g - w)[fin] / _ulp(m, dtype)[fin])


@pytest.mark.parametrize("dtype", HALF, ids=HIDS)
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_half_step_within_one_ulp_of_float64_reference(name, kw, dtype):
    """Each step from the same 16-bit params and state: params and state buffers within
    one 16-bit ulp of the float64 update of the widened values, correctly rounded."""
    params, grads = _problem(dtype, steps=3)
    opt = getattr(fo, name)(params, **kw)
    for gs in grads:
        ref_p = [p.astype(np.float64) for p in params]
        ref = getattr(fo, name)(ref_p, **kw, backend="numpy")
        sd = opt.state_dict()
        for st in sd["state"].values():  # widened copies of the 16-bit state
            for k, v in st.items():
                if isinstance(v, np.ndarray):
                    st[k] = v.astype(np.float64)
        ref.load_state_dict(sd)
        old = [p.copy() for p in params]
        olds = {i: {k: v.copy() for k, v in st.items() if isinstance(v, np.ndarray)}
                for i, st in opt.state.items()}
        opt.step(gs)
        ref.step([g.astype(np.float64) for g in gs])
        for a, r, o in zip(params, ref_p, old):
            _within_one_ulp(a, r.astype(dtype), o, dtype)
        for i, st in opt.state.items():
            for k, v in st.items():
                if isinstance(v, np.ndarray):
                    _within_one_ulp(v, ref.state[i][k].astype(dtype), olds[i].get(k, v), dtype)


@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("sdt", [BF16, F16, np.float32], ids=["bf16", "f16", "f32"])
@pytest.mark.parametrize("name,kw", CASES[1::2], ids=IDS[1::2])
def test_state_dtype_float32_params(name, kw, sdt, backend):
    """float32 params with 16-bit (or float32) state: buffers in that dtype, native ==
    NumPy bit for bit; float32 state is the plain optimizer."""
    ra = _run(name, kw, np.float32, backend, state_dtype=sdt)
    for st in ra[1].state.values():
        for v in st.values():
            if isinstance(v, np.ndarray):
                assert v.dtype == sdt
    other = "numpy" if backend == "native" else "native"
    _same_run(ra, _run(name, kw, np.float32, other, state_dtype=sdt))
    if sdt == np.float32:
        _same_run(ra, _run(name, kw, np.float32, backend))


@pytest.mark.parametrize("pdt,extra", [
    (np.float64, dict(state_dtype=np.float32)),
    (BF16, dict(state_dtype=F16)),
    (F16, dict(state_dtype=BF16)),
    (F16, dict(state_dtype=np.float32)),
    (BF16, dict(master_weights=True)),
    (F16, dict(master_weights=True, state_dtype=BF16)),
], ids=["f64-f32state", "bf16-f16state", "f16-bf16state", "f16-f32state", "bf16-master",
        "f16-master-bf16state"])
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_mixed_storage_native_equals_numpy_bitwise(name, kw, pdt, extra):
    """Every storage combination the kernel bodies compile for (in-register conversion
    per role): native == NumPy reference bit for bit, params, state and master."""
    _same_run(_run(name, kw, pdt, "native", **extra), _run(name, kw, pdt, "numpy", **extra))


@pytest.mark.parametrize("dtype", HALF, ids=HIDS)
@pytest.mark.parametrize("name,kw", CASES[::2], ids=IDS[::2])
def test_master_weights_step_float32_master(name, kw, dtype):
    """With master weights and float32 state, the master follows the float32 optimizer
    on the widened params and grads bit for bit, and the param is the master rounded."""
    params, grads = _problem(dtype)
    p32 = [p.astype(np.float32) for p in params]
    opt = getattr(fo, name)(params, **kw, master_weights=True, state_dtype=np.float32)
    ref = getattr(fo, name)(p32, **kw)
    for gs in grads:
        opt.step(gs)
        ref.step([g.astype(np.float32) for g in gs])
    for i, (p, r) in enumerate(zip(params, p32)):
        _same(opt.state[i]["master_param"], r)
        _same(p, r.astype(dtype))
    # numpy backend: the same
    pn, _ = _run(name, kw, dtype, "numpy", master_weights=True, state_dtype=np.float32)
    for a, b in zip(params, pn):
        _same(a, b)


def test_master_weights_keep_small_updates():
    """bf16 params at 1.0 with updates of 1e-4: without master weights every update
    rounds away; with them the param moves once the sum crosses half an ulp."""
    p, q = np.ones(64, BF16), np.ones(64, BF16)
    a = fo.SGD([p], lr=1e-4)
    b = fo.SGD([q], lr=1e-4, master_weights=True)
    for _ in range(100):
        a.step([np.ones(64, BF16)])
        b.step([np.ones(64, BF16)])
    assert (p == 1).all()
    assert (q.astype(np.float32) < 0.995).all()
    assert b.state[0]["master_param"].dtype == np.float32


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_master_weights_no_effect_on_float32(backend):
    ra = _run("Adam", dict(lr=0.01), np.float32, backend, master_weights=True)
    assert "master_param" not in ra[1].state[0]
    _same_run(ra, _run("Adam", dict(lr=0.01), np.float32, backend))


@pytest.mark.parametrize("extra", [dict(state_dtype=BF16), dict(master_weights=True),
                                   dict(master_weights=True, state_dtype=np.float32),
                                   dict(state_dtype=F16)],
                         ids=["bf16-state", "master", "master-f32-state", "f16-state"])
@pytest.mark.parametrize("name,kw", CASES[1::3], ids=IDS[1::3])
def test_state_dict_round_trip_resumes_bit_identically(name, kw, extra):
    dtype = BF16 if "master_weights" in extra else np.float32
    params, grads = _problem(dtype, steps=6)
    opt = getattr(fo, name)(params, **kw, **extra)
    for gs in grads[:3]:
        opt.step(gs)
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    for i, st in opt.state.items():
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                assert sd["state"][i][k].dtype == v.dtype
    copies = [p.copy() for p in params]
    new = getattr(fo, name)(copies, **kw, **extra)
    new.load_state_dict(sd)
    for gs in grads[3:]:
        opt.step(gs)
        new.step(gs)
    _same_run((params, opt), (copies, new))


def test_load_state_dict_casts_to_state_dtype_and_makes_master():
    p = np.ones(5, BF16)
    plain = fo.Adam([np.ones(5, BF16)])
    plain.step([np.ones(5, BF16)])
    opt = fo.Adam([p], master_weights=True, state_dtype=np.float32)
    opt.load_state_dict(plain.state_dict())
    st = opt.state[0]
    assert st["exp_avg"].dtype == np.float32 and st["master_param"].dtype == np.float32
    _same(st["master_param"], p.astype(np.float32))
    back = fo.Adam([np.ones(5, BF16)])
    back.load_state_dict(opt.state_dict())  # master dropped, state cast to bf16
    assert "master_param" not in back.state[0] and back.state[0]["exp_avg"].dtype == BF16


# ---------------------------------------------------------------------------
# functional API, clipping, non-finite

@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("extra", [{}, dict(state_dtype="bfloat16"), dict(master_weights=True)],
                         ids=["plain", "bf16-state", "master"])
def test_functional_half_equals_class(extra, backend):
    dtype = F16 if "state_dtype" not in extra else np.float32
    pa, grads = _problem(dtype)
    pb = [p.copy() for p in pa]
    opt = fo.AdamW(pa, lr=0.01, backend=backend, **extra)
    state = F.init("adamw", pb, **extra)
    for gs in grads:
        opt.step(gs)
        F.update("adamw", pb, gs, state, {"lr": 0.01}, backend=backend)
    for a, b in zip(pa, pb):
        _same(a, b)
    for i, st in enumerate(state):
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                _same(v, opt.state[i][k])


@pytest.mark.parametrize("dtype", HALF, ids=HIDS)
def test_clip_and_skip_nonfinite_half(dtype):
    pa, grads = _problem(dtype)
    pb = [p.copy() for p in pa]
    a = fo.Adam(pa, max_grad_norm=1.0, skip_nonfinite=True)
    b = fo.Adam(pb, max_grad_norm=1.0, skip_nonfinite=True, backend="numpy")
    for gs in grads:
        a.step(gs)
        b.step(gs)
        assert a.last_grad_norm == b.last_grad_norm
    for x, y in zip(pa, pb):
        _same(x, y)
    bad = [g.copy() for g in grads[0]]
    bad[2][7] = np.inf
    before = [p.copy() for p in pa]
    assert a.step(bad) is False and b.step(bad) is False
    for x, y in zip(pa, before):
        _same(x, y)
    c = fo.SGD([np.ones(3, dtype)], skip_nonfinite=True)
    assert c.step([np.array([1, np.nan, 1], dtype)]) is False


# ---------------------------------------------------------------------------
# bad input

@pytest.mark.parametrize("bad", ["dtype", "f32-grad", "shape"])
@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_one_bad_grad_among_200_half_changes_nothing(bad, backend):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(50).astype(BF16) for _ in range(200)]
    opt = fo.Adam(params, backend=backend, master_weights=True)
    grads = [rng.standard_normal(50).astype(BF16) for _ in range(200)]
    opt.step(grads)
    before = [p.copy() for p in params]
    sd = pickle.dumps(opt.state_dict())
    grads[150] = {"dtype": grads[150].astype(F16), "f32-grad": grads[150].astype(np.float32),
                  "shape": grads[150][:49]}[bad]
    with pytest.raises((TypeError, ValueError), match=r"grads\[150\]"):
        opt.step(grads)
    for a, b in zip(params, before):
        _same(a, b)
    assert pickle.dumps(opt.state_dict()) == sd


@pytest.mark.parametrize("make,exc,msg", [
    (lambda: fo.Adam([np.ones(3, np.float32)], state_dtype=np.int32), TypeError, "state_dtype"),
    (lambda: fo.Adam([np.ones(3, np.float32)], state_dtype="int8"), TypeError, "state_dtype"),
    (lambda: fo.Adam([np.ones(3, np.float32)], state_dtype="nope"), TypeError, "state_dtype"),
    (lambda: fo.Adam([np.ones(3, np.float32)], state_dtype=np.float64), TypeError,
     "state_dtype float64"),
    (lambda: fo.Adam([np.ones(3)], state_dtype=BF16), TypeError, "state_dtype bfloat16"),
    (lambda: fo.Adam([np.ones(3, BF16)], master_weights="yes"), TypeError, "master_weights"),
    (lambda: fo.Adam([np.ones(3, np.int16)]), TypeError, "bfloat16 or float16"),
    (lambda: F.init("adam", [np.ones(3, np.float32)], state_dtype=complex), TypeError,
     "state_dtype"),
])
def test_bad_state_dtype_and_params(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


def test_sixteen_bit_state_with_sixteen_bit_params():
    p = np.ones(4, BF16)
    opt = fo.Adam([p], state_dtype=F16)
    opt.step([np.ones(4, BF16)])
    assert opt.state[0]["exp_avg"].dtype == F16 and p.dtype == BF16
    q = np.ones(4)
    fo.Adam([q], state_dtype=np.float32).step([np.ones(4)])  # float64 params, float32 state


def test_state_buffer_of_wrong_dtype_refused_before_writes():
    p = np.ones(4, np.float32)
    opt = fo.Adam([p], state_dtype=BF16)
    opt.step([np.ones(4, np.float32)])
    opt.state[0]["exp_avg"] = np.zeros(4, np.float32)  # replaced by hand
    before = p.copy()
    with pytest.raises(ValueError, match="exp_avg"):
        opt.step([np.ones(4, np.float32)])
    _same(p, before)


@pytest.mark.parametrize("extra", [{}, dict(state_dtype=F16), dict(master_weights=True)],
                         ids=["plain", "f16-state", "master"])
@pytest.mark.parametrize("name,kw", CASES[1::4], ids=IDS[1::4])
def test_parallel_half_equal_numpy_bitwise(name, kw, extra, monkeypatch):
    """The parallel multi-tensor loop on 16-bit storage, many tensors, parts cut across
    tensor boundaries: bit for bit the NumPy reference, for 1 and 2 threads."""
    import fastloss
    monkeypatch.setattr(K, "PARALLEL_THRESHOLD", 0)
    rng = np.random.default_rng(3)
    sizes = [(5, 7), (3000,), (1,), (0,), (2000,), (33, 3), (40000,)] * 3
    res = {}
    for threads in (1, 2):
        for backend in ("native", "numpy"):
            params = [rng.standard_normal(s).astype(BF16) for s in sizes] if not res else \
                [p.copy() for p in res["init"]]
            res.setdefault("init", [p.copy() for p in params])
            grads = [[np.random.default_rng(k).standard_normal(s).astype(BF16) for s in sizes]
                     for k in range(3)]
            opt = getattr(fo, name)(params, **kw, backend=backend, **extra)
            with fastloss.num_threads(threads):
                for gs in grads:
                    opt.step(gs)
            res[(threads, backend)] = params
    for key in [(1, "native"), (2, "native")]:
        for a, b in zip(res[key], res[(1, "numpy")]):
            _same(a, b)


@pytest.mark.parametrize("dtype", HALF, ids=HIDS)
def test_clip_grad_norm_and_arena_half(dtype):
    rng = np.random.default_rng(0)
    base = [rng.standard_normal(s).astype(dtype) for s in [(300, 70), (5,), (10001,)]]
    a, b = [g.copy() for g in base], [g.copy() for g in base]
    na = fo.clip_grad_norm(a, 1.0)
    nb = fo.clip_grad_norm(b, 1.0, backend="numpy")
    want = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in base))
    assert na == nb and abs(na - want) <= 1e-12 * want
    for x, y, g in zip(a, b, base):
        _same(x, y)
        _same(x, (g.astype(np.float32) * np.float32(1.0 / (na + 1e-6))).astype(dtype))
    arena = fo.Arena(base)
    assert arena.flat_param.dtype == dtype
    opt = fo.Adam([arena.flat_param])
    opt.step([arena.pack_grads(base)])
    ref = [p.copy() for p in base]
    fo.Adam(ref).step(base)
    for v, r in zip(arena.params, ref):
        _same(v, r)


def test_master_follows_replaced_param():
    p = np.ones(8, BF16)
    opt = fo.SGD([p], lr=0.5, master_weights=True)
    opt.step([np.ones(8, BF16)])
    q = np.full(8, 4.0, BF16)
    opt.param_groups[0]["params"][0] = q  # loading new weights
    opt.step([np.ones(8, BF16)])
    _same(q, np.full(8, 3.5, BF16))
    _same(opt.state[0]["master_param"], np.full(8, 3.5, np.float32))

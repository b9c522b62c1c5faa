"""fastloss.optim without torch: backends, state_dict, bad input, NaN, arena, seeds' formulas."""
import copy
import pickle
import re

import numpy as np
import pytest

import fastloss
import fastloss.optim as fo
from fastloss.optim import _kernels_numba as K
from fastloss.optim import _multi as M
from fastloss.optim import functional as F

DTYPES = [np.float32, np.float64]

# one case per optimizer with every option switched on, and one plain
OPTIONS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.9, epsilon_mode="keras")),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1, betas=(0.2, 0.9), maximize=True)),
    ("Adam", dict(lr=0.01, epsilon_mode="keras", eps=1e-7)),
    ("AdamW", dict(lr=0.01, amsgrad=True)),
    ("Adamax", dict(lr=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Lion", dict(lr=0.01, weight_decay=0.1)),
]
IDS = [f"{n}-{'-'.join(k)}" for n, k in OPTIONS]


def _problem(dtype, sizes=((6, 5), (11,)), steps=12, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in sizes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in sizes] for _ in range(steps)]
    return params, grads


def _run(name, kw, dtype, backend, sizes=((6, 5), (11,)), steps=12):
    params, grads = _problem(dtype, sizes, steps)
    opt = getattr(fo, name)(params, **kw, backend=backend)
    for gs in grads:
        opt.step(gs)
    return params, opt


# the parallel twins are checked on one case per optimizer (compile time counts)
PARALLEL_CASES = [(n, kw) for n, kw in OPTIONS if len(kw) > 2 or n in ("Lion", "Adamax")]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,kw", OPTIONS, ids=IDS)
def test_native_equals_numpy_bitwise(name, kw, dtype):
    _check_native_equals_numpy(name, kw, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,kw", PARALLEL_CASES,
                         ids=[f"{n}-{'-'.join(k)}" for n, k in PARALLEL_CASES])
def test_parallel_native_equals_numpy_bitwise(name, kw, dtype, monkeypatch):
    monkeypatch.setattr(K, "PARALLEL_THRESHOLD", 0)
    _check_native_equals_numpy(name, kw, dtype)


def _check_native_equals_numpy(name, kw, dtype):
    pn, on = _run(name, kw, dtype, "native")
    pr, orf = _run(name, kw, dtype, "numpy")
    assert on.backend == "native" and orf.backend == "numpy"
    for a, b in zip(pn, pr):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    for i in on.state:
        for key, v in on.state[i].items():
            if isinstance(v, np.ndarray):
                assert v.dtype == dtype and v.shape == pn[i].shape
                np.testing.assert_array_equal(v, orf.state[i][key])
            else:
                assert v == orf.state[i][key]


@pytest.mark.parametrize("name,kw", OPTIONS, ids=IDS)
def test_state_dict_round_trip_resumes_bit_identically(name, kw):
    dtype = np.float32
    params, grads = _problem(dtype, steps=10)
    ref = [p.copy() for p in params]
    opt = getattr(fo, name)(params, **kw)
    for gs in grads[:5]:
        opt.step(gs)
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    mid = [p.copy() for p in params]
    for gs in grads[5:]:
        opt.step(gs)
    # resume in a fresh optimizer from the checkpoint
    resumed = [m.copy() for m in mid]
    opt2 = getattr(fo, name)(resumed, **kw)
    opt2.load_state_dict(sd)
    for gs in grads[5:]:
        opt2.step(gs)
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a, b)
    # and the straight run equals the checkpointed one
    opt3 = getattr(fo, name)(ref, **kw)
    for gs in grads:
        opt3.step(gs)
    for a, b in zip(params, ref):
        np.testing.assert_array_equal(a, b)


def test_state_dict_is_a_copy_and_checks_shapes():
    p = np.ones(4)
    opt = fo.Adam([p])
    opt.step([np.ones(4)])
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][:] = 99
    assert not np.any(opt.state[0]["exp_avg"] == 99)
    other = fo.Adam([np.ones(5)])
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(sd)
    with pytest.raises(ValueError, match="param groups"):
        fo.Adam([{"params": [np.ones(4)]}, {"params": [np.ones(4)]}]).load_state_dict(sd)


def test_param_groups_per_group_options():
    dtype = np.float64
    params, grads = _problem(dtype, sizes=((3,), (4,)), steps=5)
    a, b = [p.copy() for p in params]
    opt = fo.SGD([{"params": [params[0]], "lr": 0.1, "momentum": 0.9},
                  {"params": [params[1]]}], lr=0.01)
    oa = fo.SGD([a], lr=0.1, momentum=0.9)
    ob = fo.SGD([b], lr=0.01)
    for gs in grads:
        opt.step(gs)
        oa.step([gs[0]])
        ob.step([gs[1]])
    np.testing.assert_array_equal(params[0], a)
    np.testing.assert_array_equal(params[1], b)
    assert opt.param_groups[1]["momentum"] == 0.0


# ---------------------------------------------------------------------------
# the seeds' one-step formulas, by hand (g = 0.5, w = 1, lr = 0.1)

def test_seed_formulas_one_step():
    g = np.array([0.5])

    # momentum (seed: v = gamma v + eta g; W -= v), from v = 0: W = 1 - 0.1*0.5
    w = np.array([1.0])
    opt = fo.SGD([w], lr=0.1, momentum=0.9)
    opt.step([g])
    assert w[0] == pytest.approx(1 - 0.1 * 0.5, abs=1e-15)
    opt.step([g])  # v = 0.9*0.05 + 0.05 = 0.095
    assert w[0] == pytest.approx(0.95 - 0.095, abs=1e-15)

    # AdaGrad: G = g^2; W -= eta g / (sqrt(G) + eps)  -> 1 - 0.1 (eps = 1e-10)
    w = np.array([1.0])
    fo.Adagrad([w], lr=0.1).step([g])
    assert w[0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-10), abs=1e-15)

    # RMSProp: E = 0.9*0 + 0.1 g^2; W -= eta g / (sqrt(E) + eps)
    w = np.array([1.0])
    fo.RMSprop([w], lr=0.1, alpha=0.9, eps=1e-8).step([g])
    e = 0.1 * 0.25
    assert w[0] == pytest.approx(1 - 0.1 * 0.5 / (np.sqrt(e) + 1e-8), abs=1e-15)

    # Adam: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2 -> step of ~lr
    w = np.array([1.0])
    fo.Adam([w], lr=0.1).step([g])
    assert w[0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8), abs=1e-15)


def test_keras_adam_epsilon_hat():
    """Keras: lr_t = lr sqrt(1-b2^t)/(1-b1^t); p -= lr_t m/(sqrt(v) + eps)."""
    rng = np.random.default_rng(0)
    p = rng.standard_normal(6)
    grads = [rng.standard_normal(6) * 1e-4 for _ in range(3)]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-3  # large eps: the placements differ visibly
    q, m, v = p.copy(), np.zeros(6), np.zeros(6)
    opt = fo.Adam([p], lr=lr, eps=eps, epsilon_mode="keras")
    torch_like = fo.Adam([p.copy()], lr=lr, eps=eps)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        q = q - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
        opt.step([g])
        torch_like.step([g])
    np.testing.assert_allclose(p, q, rtol=1e-12)
    assert not np.allclose(torch_like._params[0], q, rtol=1e-6)


def test_keras_rmsprop_eps_inside_sqrt():
    p = np.array([1.0, -2.0])
    g = np.array([0.3, 1e-4])
    fo.RMSprop([p], lr=0.01, alpha=0.9, eps=1e-7, epsilon_mode="keras").step([g])
    a = 0.1 * g * g
    np.testing.assert_allclose(p, np.array([1.0, -2.0]) - 0.01 * g / np.sqrt(a + 1e-7),
                               rtol=1e-14)


def test_lion_by_hand():
    rng = np.random.default_rng(1)
    p = rng.standard_normal(8)
    q, m = p.copy(), np.zeros(8)
    opt = fo.Lion([p], lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)
    for _ in range(4):
        g = rng.standard_normal(8)
        g[0] = 0.0
        c = 0.9 * m + 0.1 * g
        q = q * (1 - 0.01 * 0.1) - 0.01 * np.sign(c)
        m = 0.99 * m + 0.01 * g
        opt.step([g])
    np.testing.assert_allclose(p, q, rtol=1e-14, atol=1e-15)


def test_defaults_match_torch():
    p = [np.zeros(2)]
    assert fo.SGD(p).defaults["lr"] == 1e-3
    d = fo.Adam(p).defaults
    assert (d["lr"], d["betas"], d["eps"], d["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    assert fo.AdamW(p).defaults["weight_decay"] == 1e-2
    d = fo.RMSprop(p).defaults
    assert (d["lr"], d["alpha"], d["eps"]) == (1e-2, 0.99, 1e-8)
    d = fo.Adagrad(p).defaults
    assert (d["lr"], d["eps"], d["initial_accumulator_value"]) == (1e-2, 1e-10, 0.0)


# ---------------------------------------------------------------------------
# bad input: clear error, nothing changed

def _snapshot(opt):
    return ([p.copy() for p in opt._params],
            pickle.dumps(opt.state_dict()))


BAD_STEPS = [
    ("count", lambda ps: [np.zeros_like(ps[0])], ValueError, "grads"),
    ("shape", lambda ps: [np.zeros((2, 2)), np.zeros_like(ps[1])], ValueError, "shape"),
    ("dtype", lambda ps: [np.zeros_like(ps[0], np.float32), np.zeros_like(ps[1])], TypeError,
     "dtype"),
    ("list", lambda ps: [ps[0].tolist(), np.zeros_like(ps[1])], TypeError, "ndarray"),
    ("bare", lambda ps: np.zeros(3), TypeError, "list"),
    ("alias", lambda ps: [ps[0], np.zeros_like(ps[1])], ValueError, "shares memory"),
]


@pytest.mark.parametrize("case,make,exc,msg", BAD_STEPS, ids=[b[0] for b in BAD_STEPS])
@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_bad_step_changes_nothing(case, make, exc, msg, backend):
    params = [np.arange(6.0).reshape(2, 3), np.ones(4)]
    opt = fo.Adam(params, amsgrad=True, backend=backend)
    opt.step([np.ones((2, 3)), np.ones(4)])
    before = _snapshot(opt)
    with pytest.raises(exc, match=msg):
        opt.step(make(params))
    after = _snapshot(opt)
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    assert before[1] == after[1]


@pytest.mark.parametrize("change,exc,msg", [
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(eps=-1e-8), ValueError, "eps"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(betas=(1.0, 0.9)), ValueError, "betas"),
    (dict(betas=(0.9, -0.1)), ValueError, "betas"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(amsgrad="yes"), TypeError, "amsgrad"),
])
def test_bad_hyperparameter_mutated_between_steps(change, exc, msg):
    """A group changed to a bad value after construction fails at step, before any write,
    even when only the second group is bad."""
    params = [np.ones(3), np.ones(2)]
    opt = fo.Adam([{"params": [params[0]]}, {"params": [params[1]]}])
    before = _snapshot(opt)
    opt.param_groups[1].update(change)
    with pytest.raises(exc, match=msg):
        opt.step([np.ones(3), np.ones(2)])
    assert pickle.dumps(opt.state_dict()["state"]) == pickle.dumps(
        pickle.loads(before[1])["state"])
    np.testing.assert_array_equal(params[0], before[0][0])


@pytest.mark.parametrize("make,exc,msg", [
    (lambda: fo.SGD([np.ones(3)], lr=-0.1), ValueError, "lr"),
    (lambda: fo.SGD([np.ones(3)], nesterov=True), ValueError, "Nesterov"),
    (lambda: fo.SGD([np.ones(3)], momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "Nesterov"),
    (lambda: fo.SGD([np.ones(3)], momentum=-0.9), ValueError, "momentum"),
    (lambda: fo.Adam([np.ones(3)], betas=(0.9, 1.0)), ValueError, "betas"),
    (lambda: fo.Adam([np.ones(3)], eps=-1.0), ValueError, "eps"),
    (lambda: fo.AdamW([np.ones(3)], weight_decay=-1.0), ValueError, "weight_decay"),
    (lambda: fo.RMSprop([np.ones(3)], alpha=-0.5), ValueError, "alpha"),
    (lambda: fo.RMSprop([np.ones(3)], epsilon_mode="tf"), ValueError, "epsilon_mode"),
    (lambda: fo.Adagrad([np.ones(3)], lr_decay=-1.0), ValueError, "lr_decay"),
    (lambda: fo.Adagrad([np.ones(3)], initial_accumulator_value=-1.0), ValueError,
     "initial_accumulator_value"),
    (lambda: fo.Adam([np.ones((3, 4))[:, 0]]), ValueError, "contiguous"),
    (lambda: fo.Adam([np.ones(3).astype(">f8")]), ValueError, "byte order"),
    (lambda: fo.Adam([np.ones(3, np.int64)]), TypeError, "float32"),
    (lambda: fo.Adam([[1.0, 2.0]]), TypeError, "ndarray"),
    (lambda: fo.Adam(np.ones(3)), TypeError, "list"),
    (lambda: fo.Adam([]), ValueError, "empty"),
    (lambda: fo.Adam([np.ones(3)], foo=1), TypeError, "foo"),
    (lambda: fo.Adam([{"params": [np.ones(3)], "foo": 1}]), TypeError, "foo"),
    (lambda: fo.Adam([np.ones(3)], backend="gpu"), ValueError, "backend"),
])
def test_bad_construction(make, exc, msg):
    with pytest.raises(exc, match=msg):
        make()


def test_read_only_and_duplicate_params():
    p = np.ones(3)
    p.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        fo.SGD([p])
    q = np.ones(3)
    with pytest.raises(ValueError, match="more than once"):
        fo.SGD([q, q])
    opt = fo.SGD([q])
    q.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        opt.step([np.ones(3)])


# ---------------------------------------------------------------------------
# NaN / Inf

@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_nonfinite_grads_propagate(backend):
    p = np.zeros(4, np.float32)
    opt = fo.Adam([p], backend=backend)
    assert opt.step([np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)]) is True
    assert np.isnan(p[0]) and np.isnan(p[1]) and np.isnan(p[2]) and np.isfinite(p[3])


@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_skip_nonfinite_leaves_everything(backend, clip, monkeypatch):
    monkeypatch.setattr(K, "PARALLEL_THRESHOLD", 0)
    params = [np.ones(5000, np.float32), np.ones(3, np.float32)]
    opt = fo.AdamW(params, skip_nonfinite=True, max_grad_norm=clip, backend=backend)
    assert opt.step([np.full(5000, 0.1, np.float32), np.ones(3, np.float32)]) is True
    before = _snapshot(opt)
    bad = np.full(5000, 0.1, np.float32)
    bad[4321] = np.inf
    assert opt.step([bad, np.ones(3, np.float32)]) is False
    assert opt.skipped_steps == 1
    after = _snapshot(opt)
    np.testing.assert_array_equal(before[0][0], after[0][0])
    assert before[1] == after[1]
    assert opt.step([np.full(5000, 0.1, np.float32), np.ones(3, np.float32)]) is True
    assert opt.state[0]["step"] == 2


# ---------------------------------------------------------------------------
# clipping

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_clip_grad_norm_backends_and_threads(dtype):
    rng = np.random.default_rng(5)
    base = [rng.standard_normal(s).astype(dtype) for s in [(300, 70), (5,), (10001,)]]
    expect = np.sqrt(sum(np.sum(b.astype(np.float64) ** 2) for b in base))
    results = []
    for backend, threads in [("native", 1), ("native", 2), ("numpy", 1)]:
        grads = [b.copy() for b in base]
        with fastloss.num_threads(threads):
            norm = fo.clip_grad_norm(grads, 2.0, backend=backend)
        assert norm == pytest.approx(expect, rel=1e-12)
        np.testing.assert_allclose(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads)),
                                   2.0, rtol=1e-5)
        results.append((norm, grads))
    # native: identical for any thread count
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_array_equal(a, b)


def test_clip_grad_norm_small_norm_untouched_and_errors():
    g = np.array([0.1, 0.2])
    norm = fo.clip_grad_norm([g], 10.0)
    assert norm == pytest.approx(np.sqrt(0.05))
    np.testing.assert_array_equal(g, [0.1, 0.2])
    with pytest.raises(RuntimeError, match="norm"):
        fo.clip_grad_norm([np.array([np.nan])], 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        fo.clip_grad_norm([g], -1.0)
    with pytest.raises(ValueError, match="writable"):
        ro = np.ones(3)
        ro.setflags(write=False)
        fo.clip_grad_norm([ro], 1.0)


# ---------------------------------------------------------------------------
# arena

def test_arena_views_share_memory():
    rng = np.random.default_rng(2)
    orig = [rng.standard_normal(s) for s in [(3, 4), (5,), (2, 2, 2)]]
    arena = fo.Arena(orig)
    assert arena.size == 12 + 5 + 8
    for v, o in zip(arena.params, orig):
        assert v.shape == o.shape and np.shares_memory(v, arena.flat_param)
        np.testing.assert_array_equal(v, o)
        assert not np.shares_memory(v, o)
    arena.params[1][2] = 42.0
    assert arena.flat_param[12 + 2] == 42.0
    for g in arena.grads:
        assert np.shares_memory(g, arena.flat_grad)
    with pytest.raises(TypeError, match="dtype"):
        fo.Arena([np.ones(2), np.ones(2, np.float32)])


@pytest.mark.parametrize("name,kw", OPTIONS, ids=IDS)
def test_arena_step_equals_per_tensor(name, kw):
    dtype = np.float32
    params, grads = _problem(dtype, sizes=((7, 9), (4,), (3, 5, 2)), steps=6)
    arena = fo.Arena(params)
    opt_a = getattr(fo, name)([arena.flat_param], **kw)
    opt_t = getattr(fo, name)(params, **kw)
    for gs in grads:
        arena.pack_grads(gs)
        opt_a.step([arena.flat_grad])
        opt_t.step(gs)
    for v, p in zip(arena.params, params):
        np.testing.assert_array_equal(v, p)


# ---------------------------------------------------------------------------
# kernels stay in float32

def test_float32_kernels_have_no_double_arithmetic_and_vectorise():
    numba = pytest.importorskip("numba")
    f32 = np.float32
    a = np.zeros(4, f32)
    w = f32(0.1)
    cases = {  # name: (flags, args)
        "sgd": ((True, True, False, True), (a, a, a, w, w, w, w, w)),
        "adagrad": ((True, False), (a, a, a, w, w, w, w)),
        "adagrad-keras": ((True, True), (a, a, a, w, w, w, w)),
        "rmsprop": ((True, True, True, True, False), (a, a, a, a, a, w, w, w, w, w, w, w)),
        "adam": ((True, True, True), (a, a, a, a, a, w, w, w, w, w, w, w, w, w)),
        "adamax": ((True, True, False), (a, a, a, a, w, w, w, w, w, w, w)),
        "adamax-keras": ((True, True, True), (a, a, a, a, w, w, w, w, w, w, w)),
        "nadam": ((True, True), (a, a, a, a, w, w, w, w, w, w, w, w, w, w, w)),
        "lion": ((True, False), (a, a, a, w, w, w, w, w, w, w)),
        "scale": ((), (a, w)),
    }
    pat = re.compile(r"(fadd|fsub|fmul|fdiv|fcmp \w+|fpext|sitofp|uitofp|call)[^\n]*double")
    for name, (flags, ar) in cases.items():
        # fresh compile without the cache (cached code cannot be inspected)
        f = numba.njit(error_model="numpy")(K.FACTORIES[name.split("-")[0]](*flags))
        f(*ar)
        sig = f.signatures[0]
        ir = f.inspect_llvm(sig)
        bad = [ln for ln in ir.splitlines() if pat.search(ln) and "PyFloat" not in ln]
        assert not bad, (name, bad[:3])
        if name in ("adam", "rmsprop", "sgd"):
            assert "<8 x float>" in ir or "<4 x float>" in ir, f"{name} did not vectorise"


def test_no_writable_cache_falls_back_with_warning(monkeypatch):
    """Numba raises at decoration when no cache location is writable: we compile
    in memory instead and warn once."""
    numba = pytest.importorskip("numba")
    real = numba.njit
    calls = []

    def fake_njit(**opts):
        calls.append(opts.get("cache"))
        if opts.get("cache"):
            raise RuntimeError("cannot cache function 'x': no locator available for file 'y'")
        return real(**opts)

    monkeypatch.setattr(K, "_numba_njit", fake_njit)
    monkeypatch.setattr(K, "_no_cache_warned", False)
    with pytest.warns(fastloss.FastlossWarning, match="NUMBA_CACHE_DIR"):
        f = K._njit(K.FACTORIES["scale"]())
    a = np.ones(3)
    f(a, 2.0)
    np.testing.assert_array_equal(a, 2.0)
    assert calls == [True, False]


def test_betas_list_mutated_in_place_is_revalidated():
    p = np.ones(3)
    opt = fo.Adam([{"params": [p], "betas": [0.9, 0.999]}])
    opt.step([np.ones(3)])
    opt.param_groups[0]["betas"][0] = 1.5
    before = p.copy()
    with pytest.raises(ValueError, match="betas"):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, before)


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_empty_and_scalar_params(backend):
    ps = [np.zeros(0, np.float32), np.array(2.0, np.float32), np.ones((0, 3), np.float32)]
    opt = fo.Adam(ps, lr=0.1, backend=backend, max_grad_norm=1.0)
    assert opt.step([np.zeros(0, np.float32), np.array(1.0, np.float32),
                     np.ones((0, 3), np.float32)])
    assert ps[1].shape == () and ps[1] == pytest.approx(1.9)
    assert fo.clip_grad_norm([np.zeros(0)], 1.0) == 0.0


def test_numpy_scalar_hyperparameters():
    """np.float32 / np.float64 option values behave like Python floats."""
    a, b = np.ones(5, np.float32), np.ones(5, np.float32)
    g = np.linspace(-1, 1, 5).astype(np.float32)
    fo.RMSprop([a], lr=np.float32(0.01), momentum=np.float64(0.9),
               weight_decay=np.float32(0.1)).step([g])
    fo.RMSprop([b], lr=0.01, momentum=0.9, weight_decay=float(np.float32(0.1))).step([g])
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# multi-tensor steps: one native call per group and kernel variant

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


def test_replayed_step_follows_state_and_option_changes():
    """The native step replays a group's last launch only while its state holds the same
    buffers, the step counts agree and the kernel variant is the same."""
    res = {}
    for backend in ("native", "numpy"):
        params, grads = _problem(np.float32, sizes=((6, 5), (11,), (0,)), steps=12)
        opt = fo.Adam(params, lr=0.05, backend=backend)
        for k, gs in enumerate(grads):
            if k == 3:
                opt.state[0]["exp_avg"] = opt.state[0]["exp_avg"] * 0.5
            if k == 5:
                opt.param_groups[0]["amsgrad"] = True
            if k == 7:
                opt.state[1]["step"] = 2  # a different count for one param
            if k == 9:
                opt.param_groups[0]["lr"] = 0.01
                opt.load_state_dict(opt.state_dict())
            opt.step(gs)
        res[backend] = (params, opt.state_dict())
    for a, b in zip(res["native"][0], res["numpy"][0]):
        np.testing.assert_array_equal(a, b)
    assert pickle.dumps(res["native"][1]) == pickle.dumps(res["numpy"][1])

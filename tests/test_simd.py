"""Instruction-set levels: the loader (FASTLOSS_SIMD, what is built, what the CPU runs),
switching levels in a process, every level against the NumPy reference, and the
AVX2 and AVX-512 levels giving the same bits. The full kernel tests run once per
level in CI (.ci/run: FASTLOSS_SIMD=<level> pytest ...)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastloss
from fastloss import _backend
from fastloss.tools import cli

pytestmark = pytest.mark.skipif(not fastloss.native_available(), reason="no native extension")

_ENV = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fastloss.__file__))}
USABLE = _backend.simd_info()["simd_usable"] if fastloss.native_available() else []


@pytest.fixture
def level_restored():
    before = _backend.simd_level
    yield
    _backend.set_simd_level(before)


def _run(code, **env):
    # run where the imported fastloss lives: from a checkout's root `python -c` would
    # import the uncompiled source tree instead of the installed package
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**_ENV, **env}, timeout=120, cwd=_ENV["PYTHONPATH"])
    return out


def test_info_lists_levels():
    i = _backend.simd_info()
    assert i["simd_compiled"][0] == "baseline" and i["simd_cpu"][0] == "baseline"
    assert i["simd_usable"] == [lv for lv in i["simd_compiled"] if lv in i["simd_cpu"]]
    assert i["simd_level"] in i["simd_usable"]
    if i["simd_requested"] == "auto":
        assert i["simd_level"] == i["simd_usable"][-1]   # the best one
    out = cli.info()
    assert out["simd_level"] == i["simd_level"] and "extension_simd" in out


@pytest.mark.parametrize("level", USABLE)
def test_level_modules_say_what_they_are(level):
    k = _backend.load_level(level)
    simd = k.build_info()["simd"]
    assert simd == {"avx512": "avx512", "avx2": "avx2+fma"}.get(level, simd)
    if level == "baseline":
        assert "avx" not in simd
    assert tuple(k.cpu_levels()) == tuple(_backend.simd_info()["simd_cpu"])


def test_set_level_switches_and_rejects(level_restored):
    for level in USABLE:
        _backend.set_simd_level(level)
        assert _backend.simd_level == level
        assert _backend.kernels is _backend.load_level(level)
    _backend.set_simd_level(None)
    assert _backend.simd_level == USABLE[-1]
    with pytest.raises(ValueError, match="level must be one of"):
        _backend.set_simd_level("sse9")


def test_unusable_level_raises_or_warns(level_restored, monkeypatch):
    monkeypatch.setattr(_backend, "_compiled", ("baseline", "avx2", "avx512"))
    monkeypatch.setattr(_backend, "_cpu", ("baseline",))
    with pytest.raises(RuntimeError, match="cannot run here"):
        _backend.set_simd_level("avx512")
    with pytest.warns(fastloss.FastlossWarning, match="not supported by this CPU"):
        assert _backend._choose_level("avx512") == "baseline"
    monkeypatch.setattr(_backend, "_cpu", ("baseline", "avx2", "avx512"))
    monkeypatch.setattr(_backend, "_compiled", ("baseline",))
    with pytest.warns(fastloss.FastlossWarning, match="was not built"):
        assert _backend._choose_level("avx2") == "baseline"


def test_env_forces_a_level_in_a_fresh_process():
    code = "from fastloss import _backend; print(_backend.simd_level)"
    out = _run(code, FASTLOSS_SIMD="baseline")
    assert out.returncode == 0 and out.stdout.strip() == "baseline", out.stderr
    out = _run(code, FASTLOSS_SIMD="sse9")
    assert out.returncode != 0 and "FASTLOSS_SIMD must be one of" in out.stderr
    # the avx512 module hidden: a clear warning, the best level below it
    out = _run("import sys; sys.modules['fastloss._kernels_avx512'] = None\n" + code,
               FASTLOSS_SIMD="avx512")
    assert out.returncode == 0 and "FASTLOSS_SIMD=avx512" in out.stderr, out.stderr
    assert out.stdout.strip() == ("avx2" if "avx2" in USABLE else "baseline")


@pytest.mark.parametrize("level", USABLE)
def test_bench_reports_and_forces_the_level(level, capsys, level_restored):
    assert cli.main(["bench", "--tiny", "--no-torch", "--kernels", "mse",
                     "--simd", level]) == 0
    assert f"native kernels: {level} level (forced with --simd" in capsys.readouterr().out


def _cases(rng):
    """(name, call) pairs over the float32 and float64 kernels with exp/log in them."""
    out = []
    for dt in (np.float32, np.float64):
        for n, c in ((64, 10), (33, 1000), (3, 9001)):
            x = (rng.normal(size=(n, c)) * 4).astype(dt)
            y = rng.integers(0, c, n)
            out.append((f"ce {n}x{c} {dt.__name__}",
                        lambda b, x=x, y=y: fastloss.cross_entropy(x, y, return_grad=True,
                                                                   backend=b)))
            out.append((f"log_softmax {n}x{c} {dt.__name__}",
                        lambda b, x=x: (fastloss.log_softmax(x, backend=b),)))
        p = (rng.normal(size=20011) * 5).astype(dt)
        t = (rng.random(20011) < 0.5).astype(dt)
        for f in (fastloss.binary_cross_entropy_with_logits, fastloss.log_cosh):
            out.append((f"{f.__name__} {dt.__name__}",
                        lambda b, f=f, p=p, t=t: f(p, t, return_grad=True, backend=b)))
    return out


@pytest.mark.parametrize("level", USABLE)
def test_every_level_matches_the_reference(level, level_restored):
    _backend.set_simd_level(level)
    for name, call in _cases(np.random.default_rng(7)):
        ref, got = call("numpy"), call("native")
        for r, g in zip(ref, got):
            dt = np.asarray(g).dtype
            tol = dict(rtol=2e-5, atol=1e-6) if dt == np.float32 else dict(rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(r, np.float64),
                                       err_msg=f"{level}: {name}", **tol)


@pytest.mark.skipif(not {"avx2", "avx512"} <= set(USABLE), reason="needs both levels")
def test_avx2_and_avx512_give_the_same_bits(level_restored):
    res = {}
    for level in ("avx2", "avx512"):
        _backend.set_simd_level(level)
        res[level] = [call("native") for _, call in _cases(np.random.default_rng(8))]
    for (name, _), a, b in zip(_cases(np.random.default_rng(8)), res["avx2"], res["avx512"]):
        for u, v in zip(a, b):
            assert np.array_equal(u, v), name


@pytest.mark.parametrize("level", USABLE)
def test_tame_blocks_give_the_guarded_bits(level, level_restored):
    """A loss with ``tame`` (its body without the guards huge or non-finite inputs need,
    run on blocks whose |pred| all lie within the bound) gives every element the same
    bits as its guarded body: ``x`` (one block) is tame, the same values in chunks made
    guarded by one element just outside the bound each give the same losses,
    gradients and hessians."""
    from fastloss._elementwise_spec import LOSSES
    from fastloss import loss_objects
    _backend.set_simd_level(level)
    block = _backend.kernels.ELEMENTWISE_BLOCK
    chunk = _backend.kernels.ELEMENTWISE_CHUNK      # the span of one tame scan
    rng = np.random.default_rng(3)
    for spec in [s for s in LOSSES if s.tame is not None]:
        fn = getattr(fastloss, spec.name)
        b = np.float32(spec.tame)
        x = rng.uniform(-b, b, block).astype(np.float32)
        x[:6] = [b, -b, 0.0, -0.0, np.nextafter(b, 0), -np.nextafter(b, 0)]
        out = np.arange(chunk - 1, block, chunk)          # the last of every chunk
        keep = np.ones(block, bool)
        keep[out] = False
        t = rng.random(block).astype(np.float32)
        opts = [{}] + [{o.name: o.examples[0]} for o in spec.options if o.examples]
        opts += [{o.name: rng.uniform(0.1, 3.0, block).astype(np.float32)}
                 for o in spec.options if o.per_element]
        # just outside, and what a tame kernel computed first (a prepass's scan) would
        # make garbage of: every chunk guarded
        for bad in (np.nextafter(b, np.float32(np.inf)), np.inf, -np.inf, np.nan, -1e30):
            guarded = x.copy()
            guarded[out] = bad
            for kw in opts:
                for extra in ({}, {"sample_weight": rng.uniform(0.5, 1.5, block).astype(np.float32)}):
                    a = fn(x, t, reduction="none", return_grad=True, **kw, **extra)
                    g = fn(guarded, t, reduction="none", return_grad=True, **kw, **extra)
                    for u, v in zip(a, g):
                        assert np.array_equal(u[keep], v[keep]), (spec.name, level, kw, extra, bad)
                    # ... and the outside values themselves are the guarded kernels' (the
                    # reference's), not what a tame kernel made of them
                    r = fn(guarded, t, reduction="none", return_grad=True, backend="numpy",
                           **kw, **extra)
                    for u, v in zip(g, r):
                        np.testing.assert_allclose(u[out], v[out], rtol=1e-5, atol=1e-30,
                                                   equal_nan=True, err_msg=f"{spec.name} {bad}")
        guarded = x.copy()
        guarded[out] = np.nextafter(b, np.float32(np.inf))
        obj = getattr(loss_objects, spec.cls)()
        a, g = obj.gradient_hessian(x, t), obj.gradient_hessian(guarded, t)
        for u, v in zip(a, g):
            assert np.array_equal(np.asarray(u)[keep], np.asarray(v)[keep]), (spec.name, level)


@pytest.mark.parametrize("level", USABLE)
def test_fold_default_gives_the_general_bits(level, level_restored):
    """An option marked ``fold_default`` runs, at its default, a copy of the loops with
    the default as a literal (the compiler folds it): the same bits as the general
    loops, reached here through a per-element array of the default, for losses,
    gradients ('none', 'mean': the gradient store with its scale) over tame and guarded
    chunks, soft and hard targets, NaN and infinities."""
    from fastloss._elementwise_spec import LOSSES
    _backend.set_simd_level(level)
    rng = np.random.default_rng(5)
    n = 3 * _backend.kernels.ELEMENTWISE_BLOCK + 77
    x = (rng.standard_normal((n // 7, 7)) * 8).astype(np.float32)
    x.flat[::997] = 120.0                        # some chunks guarded
    x.flat[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, -200.0]
    for spec in LOSSES:
        for o in [o for o in spec.options if o.fold_default]:
            assert o.per_element, "the general loops at the default need the per-element path"
            fn = getattr(fastloss, spec.name)
            for t in (rng.random(x.shape), rng.random(x.shape) < 0.5):
                t = t.astype(np.float32)
                for red in ("none", "mean"):
                    a = fn(x, t, reduction=red, return_grad=True, **{o.name: o.default})
                    b = fn(x, t, reduction=red, return_grad=True,
                           **{o.name: np.full(x.shape[-1], o.default, np.float32)})
                    for u, v in zip(a, b):
                        assert np.array_equal(u, v, equal_nan=True), (spec.name, o.name, red, level)


@pytest.mark.parametrize("level", USABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prefetching_gives_the_same_bits(level, dtype, level_restored):
    """Large calls of the losses marked ``prefetch`` prefetch their inputs ahead of each
    chunk: forced on (ahead_min=0) and off, every output and the sum keep their bits,
    on 1 and 2 threads, with and without the optional arrays (weights, upstream
    gradient, a per-element option, hessians, 'none' losses), over a length whose last
    block and chunk are partial."""
    _backend.set_simd_level(level)
    K = _backend.kernels
    rng = np.random.default_rng(11)
    n = 3 * K.ELEMENTWISE_BLOCK + 333
    x = (rng.standard_normal(n) * 6).astype(dtype)
    x[::501] = 120.0                                 # guarded chunks too
    t = rng.random(n).astype(dtype)
    w, go, aux = (rng.uniform(0.5, 1.5, n).astype(dtype) for _ in range(3))
    from fastloss._elementwise_spec import LOSSES
    for spec in LOSSES:            # (the losses not marked prefetch: trivially the same)
        name, kind = spec.name, K.ELEMENTWISE_KINDS[spec.name]
        per_elem = any(o.per_element for o in spec.options)
        params = tuple(1e-7 if p == "eps" else 1.0 for p in K.ELEMENTWISE_PARAMS[name])
        for opt in ({}, {"aux": aux if per_elem else None, "weight": w, "grad_output": go,
                         "hessian": True, "loss_out": True}):
            for nt in (1, 2):
                res = []
                for ahead_min in (0, 1 << 62):
                    g = np.empty_like(x)
                    h = np.empty_like(x) if opt.get("hessian") else None
                    lo = np.empty_like(x) if opt.get("loss_out") else None
                    s = K.elementwise(kind, x, t, opt.get("aux"), opt.get("weight"),
                                      opt.get("grad_output"), g, lo, params, 1.0 / n, nt, 0,
                                      h, ahead_min)
                    res.append((s, g, h, lo))
                (s0, *a0), (s1, *a1) = res
                assert s0 == s1 or (np.isnan(s0) and np.isnan(s1)), (name, opt.keys(), nt)
                for u, v in zip(a0, a1):
                    if u is not None:
                        assert np.array_equal(u.view(np.uint8), v.view(np.uint8)), \
                            (name, level, dtype, sorted(opt), nt)

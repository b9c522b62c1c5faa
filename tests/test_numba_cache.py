"""The Numba disk cache of the optimizer kernels (fastloss/optim/_numba_cache.py): fresh
processes load every per-array kernel from disk (the multi-tensor runners compile in
memory); kernels cached by different processes never share a symbol name; an edited
kernel source misses; unexpected Numba internals compile in memory."""
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

import fastloss  # noqa: E402
from fastloss.optim import _kernels_numba as K  # noqa: E402
from fastloss.optim import _multi as M  # noqa: E402
from fastloss.optim import _numba_cache as C  # noqa: E402

ROOT = pathlib.Path(fastloss.__file__).resolve().parent.parent

# One Adam step over float32 tensors (the _multi runner) and a float16 one (the
# _half_numba runner); prints the dispatchers' disk-cache hits and misses.
CHILD = r"""
import json, sys
import numpy as np
from fastloss.optim import _numba_cache as C
if sys.argv[1] == "edited":  # (before any kernel module is imported)
    C._sources = "an edited kernel source"
import fastloss.optim as fo
from fastloss.optim import _kernels_numba as K, _multi as M, _half_numba as H
ps = [np.ones(n, np.float32) for n in (10, 300)] + [np.ones(50, np.float16)]
opt = fo.Adam(ps, lr=1e-3)
opt.step([np.full_like(p, 0.1) for p in ps])
runners = [d for c in (M._compiled, H._compiled) for d in c.values()]
every = runners + list(K._compiled.values()) + [M.address]
count = lambda ds, a: sum(sum(getattr(d.stats, a).values()) for d in ds)
print(json.dumps({"runners": len(runners), "runner_hits": count(runners, "cache_hits"),
                  "runner_misses": count(runners, "cache_misses"),
                  "hits": count(every, "cache_hits"), "misses": count(every, "cache_misses")}))
"""


def _child(code, cache_dir, *args):
    """The JSON last line printed by ``python -c code *args`` run in ``cache_dir`` with
    NUMBA_CACHE_DIR there and this fastloss first on the path."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cache_dir,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def _run(cache_dir, mode="plain"):
    out = _child(CHILD, cache_dir, mode)
    return out, sum(len(f) for _, _, f in os.walk(cache_dir))


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    d = tmp_path_factory.mktemp("numba_cache")
    return d, _run(d)


def test_second_process_loads_every_kernel_from_disk(cold):
    # the multi-tensor runners are compiled in memory (_multi.multi_kernel: two runners
    # cached by different processes can share a symbol name and call each other's
    # code once loaded into one process); every other kernel loads from disk
    d, (first, nfiles) = cold
    assert first["runners"] == 2 and first["runner_hits"] == 0
    second, nfiles2 = _run(d)
    assert second["misses"] == second["runner_misses"], second  # (runners: compiled)
    assert second["runner_hits"] == 0
    assert nfiles2 == nfiles  # no entry appended


def test_edited_source_misses_and_reuses_the_files(cold):
    d, (first, nfiles) = cold
    edited, nfiles2 = _run(d, "edited")
    assert edited["hits"] == 0 and edited["misses"] == first["misses"]
    assert nfiles2 == nfiles  # the emptied index reuses the data files


def test_runner_key_is_stable_and_covers_body_flags_and_views():
    def runner(flags, nroles=5, parallel=False):
        return K._jit(M._runner(K.kernel("adam", flags, 0), M.VIEWS[nroles]), parallel)

    a, b = runner((True, False, False)), runner((True, False, False))
    assert a is not b and C.describe(a) == C.describe(b)  # two dispatchers, one key
    assert isinstance(a._cache, C.Cache) and a._cache._fingerprint == b._cache._fingerprint
    keys = {repr(C.describe(r)) for r in (a, runner((True, True, False)), runner(
        (True, False, False), nroles=4), runner((True, False, False), parallel=True))}
    assert len(keys) == 4


def test_undescribable_closure_is_not_cached():
    import numba

    marker = object()

    def f(x):
        return x if marker is None else x + 1
    with pytest.raises(TypeError, match="no stable cache key"):
        C.describe(f)
    assert not C.install(numba.njit(cache=True)(f))


def test_unexpected_numba_internals_compile_in_memory(monkeypatch):
    monkeypatch.setattr(C, "_SUPPORTED", False)
    monkeypatch.setattr(K, "_no_cache_warned", False)
    with pytest.warns(fastloss.FastlossWarning, match="cache internals"):
        f = K._njit(K.FACTORIES["scale"]())
    assert type(f._cache).__name__ == "NullCache"
    a = np.ones(3)
    f(a, 2.0)
    np.testing.assert_array_equal(a, 2.0)


def test_sources_list_every_module_with_kernel_code():
    here = pathlib.Path(C.__file__).parent
    jit = re.compile(r"njit|@intrinsic|@overload|prange")
    with_kernels = {p.name for p in here.glob("*.py") if jit.search(p.read_text())}
    assert with_kernels <= set(C.SOURCES)
    assert all((here / s).is_file() for s in C.SOURCES)


# Variant pairs of one factory closure (same qualified name and argument types):
# (kernel, flags of X, flags of Y, elements, state stored as bfloat16 bits).
PAIRS = [("adam", (True, True, False), (True, False, False), 300, False),  # Adam(wd) / AdamW
         ("sgd", (False, True, False, False), (False, True, False, True), 300, False),  # nesterov
         ("rmsprop", (True, False, False, False, False), (True, False, True, False, False), 300,
          False),  # centered or not
         ("adagrad", (False, False), (False, True), 300, False),  # eps inside the sqrt or not
         # parallel: the loop is a parfor gufunc, named by hash(parfor) (an address) and uid
         ("sgd", (False, True, False, False), (False, True, False, True), 1 << 14, False)]
if importlib.util.find_spec("ml_dtypes"):
    PAIRS.append(("adam", (True, False, False), (True, False, True), 300, True))  # amsgrad

# "cache": compile the given variants, each with Numba's function counter set to the same
# start (index * 10**5) in both caching processes and hash(parfor) fixed (two processes
# allocating alike), so that names made from them are equal in the two processes.
# "load": load every variant, then call each directly and through a multi-tensor runner
# compiled afterwards in this process (it links the kernel by symbol name), alternating X
# and Y; each result against the NumPy reference, bit for bit.
# Prints the calls' results, the disk-cache hits and each kernel's symbol names.
COLLIDE = r"""
import itertools, json, sys
import numpy as np
from numba.core import bytecode, event
from numba.parfors import parfor
from fastloss.optim import _half_numba as H, _kernels_numba as K, _numba_cache as C
from fastloss.optim import _reference as R

mode, variants = sys.argv[1], [tuple(tuple(a) if isinstance(a, list) else a for a in v)
                               for v in json.loads(sys.argv[2])]
if sys.argv[3] == "nofix":  # Numba's own per-process counter
    event.unregister("numba:compile", C._UIDS)
NARRAYS = {"sgd": 3, "adagrad": 3, "rmsprop": 5, "adam": 5}


def call(name, flags, n, bf16, how):
    k = K.kernel(name, flags, n)
    na = NARRAYS[name]
    rng = np.random.default_rng(5)
    arrays = [rng.uniform(0.5, 1.5, n).astype(np.float32) for _ in range(na)]
    nscalars = k.py_func.__code__.co_argcount - na
    scalars = [np.float32(x) for x in rng.uniform(0.2, 0.6, nscalars)]
    if bf16:  # state as bfloat16 bits; the reference on it widened, rounded back
        import ml_dtypes
        arrays[2:] = [a.astype(ml_dtypes.bfloat16).view(np.uint16) for a in arrays[2:]]
    wide = [a.view(ml_dtypes.bfloat16).astype(np.float32) if a.dtype == np.uint16 else a.copy()
            for a in arrays]
    getattr(R, name)(*wide, *scalars, *flags)
    want = [w.astype(ml_dtypes.bfloat16).view(np.uint16) if a.dtype == np.uint16 else w
            for a, w in zip(arrays, wide)]
    if how == "direct":
        k(*arrays, *scalars)
    else:
        codes = tuple(H.BF16 if a.dtype == np.uint16 else H.DIRECT for a in arrays)
        run = H.multi_kernel(name, flags, codes, H.DIRECT, False)
        run(np.array([[a.ctypes.data for a in arrays]], np.int64),
            np.array([0, n], np.int64), 1, np.float32(0), *scalars)
    return all(a.tobytes() == w.tobytes() for a, w in zip(arrays, want))


def symbols(k):
    lib = next(iter(k.overloads.values())).library
    mine = (k.py_func.__qualname__.split(".")[-1], "parfor_gufunc")
    return sorted(f.name for f in lib._shared_module.functions
                  if not f.is_declaration and any(m in f.name for m in mine))


results = []
if mode == "cache":
    parfor.Parfor.__hash__ = lambda self: 0x7F0012345670
    for i, v in enumerate(variants):
        bytecode.FunctionIdentity._unique_ids = itertools.count(10**5 * (i + 1))
        results.append(call(*v, "direct"))
else:
    xs, ys = variants[0::2], variants[1::2]
    results += [call(*v, "direct") for v in variants]  # (each Y loaded after its X)
    for x, y in zip(xs, ys):
        order = [(x, "direct"), (y, "direct")]
        if x[2] < K.PARALLEL_THRESHOLD:  # (a runner calls the serial kernel)
            order = [(x, "runner"), (y, "runner")] + order + [(y, "runner"), (x, "runner")]
        results += [call(*v, how) for v, how in order]
ks = [K.kernel(name, flags, n) for name, flags, n, _ in variants]
print(json.dumps({"ok": results, "hits": [sum(k.stats.cache_hits.values()) for k in ks],
                  "misses": sum(sum(k.stats.cache_misses.values()) for k in ks),
                  "symbols": [symbols(k) for k in ks]}))
"""


def _collide(cache_dir, mode, variants, fix=True):
    return _child(COLLIDE, cache_dir, mode, json.dumps(variants), "fix" if fix else "nofix")


def test_kernels_cached_by_two_processes_never_call_each_other(tmp_path):
    # process A caches variant X of each pair, process B variant Y, both compiled with
    # the same Numba counter values (the names Numba gives would be equal); process C
    # loads both and must run each variant's own code, directly and from a runner
    xs = [(name, fx, n, bf) for name, fx, _, n, bf in PAIRS]
    ys = [(name, fy, n, bf) for name, _, fy, n, bf in PAIRS]
    a, b = _collide(tmp_path, "cache", xs), _collide(tmp_path, "cache", ys)
    assert all(a["ok"]) and all(b["ok"])
    for sx, sy in zip(a["symbols"], b["symbols"]):
        assert sx and sy and not set(sx) & set(sy)  # names unique by content
    c = _collide(tmp_path, "load", [v for xy in zip(xs, ys) for v in xy])
    assert min(c["hits"]) >= 1 and c["misses"] == 0  # every variant loaded from disk
    assert all(c["ok"]), c["ok"]


def test_numba_counter_alone_gives_equal_names(tmp_path):
    # the arrangement above is the worst case: with Numba's own counter the two
    # processes name the X and Y kernels alike
    pairs = [PAIRS[0], PAIRS[1], PAIRS[4]]  # Adam(wd) / AdamW, SGD serial and parallel
    a = _collide(tmp_path, "cache", [(nm, fx, n, bf) for nm, fx, _, n, bf in pairs], fix=False)
    b = _collide(tmp_path, "cache", [(nm, fy, n, bf) for nm, _, fy, n, bf in pairs], fix=False)
    assert a["symbols"] == b["symbols"]

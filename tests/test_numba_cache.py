"""The Numba disk cache of the optimizer kernels (fastloss/optim/_numba_cache.py): fresh
processes load every kernel, multi-tensor runners included, from disk; an edited kernel
source misses; unexpected Numba internals compile in memory."""
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


def _run(cache_dir, mode="plain"):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, cwd=cache_dir,
                         check=True,
                         capture_output=True, text=True).stdout
    nfiles = sum(len(f) for _, _, f in os.walk(cache_dir))
    return json.loads(out.splitlines()[-1]), nfiles


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

"""Throughput of the vectorised math in fastloss/native/_vmath.h against NumPy's ufuncs.

Single thread on both sides (``vmath_apply`` is a plain serial loop; NumPy ufuncs
are serial). 10M elements, out= preallocated, so both sides stream 2 arrays.

    flock /tmp/fastloss-bench.lock python -m pytest bench/bench_vmath.py --benchmark-enable \
        --benchmark-group-by=group --benchmark-columns=median,iqr,rounds
"""
import numpy as np
import pytest

from fastloss import _backend

K = _backend.kernels
pytestmark = pytest.mark.skipif(K is None, reason="native extension not built")

N = 10_000_000
NUMPY = {"exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "tanh": np.tanh}


def _input(name, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(N) * 4).astype(dtype)
    if name in ("log", "log1p"):
        x = np.abs(x) + dtype(0.01)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("impl", ["fastloss", "numpy"])
@pytest.mark.parametrize("name", ["exp", "expm1", "log", "log1p", "tanh", "sigmoid"])
def test_vmath_throughput(benchmark, name, impl, dtype):
    if impl == "numpy" and name not in NUMPY:
        pytest.skip("NumPy has no sigmoid ufunc")
    benchmark.group = f"vmath {name} {np.dtype(dtype).name} 10M"
    x = _input(name, dtype)
    out = np.empty_like(x)
    if impl == "fastloss":
        benchmark(K.vmath_apply, name, x, out)
    else:
        benchmark(NUMPY[name], x, out=out)

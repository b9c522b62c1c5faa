"""Fused cross-entropy loss + gradient, float32: native vs NumPy backend vs torch.

Every peer runs with fastloss's thread count (torch.set_num_threads). torch
gets a tensor created once with requires_grad=True and each round runs
forward + backward + grad reset; fastloss writes the gradient into a
preallocated ``out=`` buffer (the training-loop usage). Results are checked
against the float64 NumPy reference before anything is timed.

    flock /tmp/fastloss-bench.lock python -m pytest bench/bench_cross_entropy.py --benchmark-enable
    PYTHONPATH=. flock /tmp/fastloss-bench.lock python bench/bench_cross_entropy.py   # table, GB/s

GB/s counts the logits read once plus the gradient written once (8 bytes per
float32 logit); the machine's streaming bandwidth is a triad measured with
the same thread count (``fastloss.tools.bandwidth`` when present, else Numba).
"""
from __future__ import annotations

import functools
import statistics
import sys
import time

import numpy as np
import pytest

import fastloss
from fastloss import classification as fc

SIZES = [(4096, 1000), (1024, 32000), (256, 10), (8, 131072)]
IMPLS = ["native", "numpy", "torch"]
TARGET_VS_TORCH = {(4096, 1000): 5, (1024, 32000): 6, (256, 10): 3}
TARGET_VS_NUMPY = {(4096, 1000): 10, (1024, 32000): 10}


def _data(N, C):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(N, C)) * 3).astype(np.float32)
    y = rng.integers(0, C, N).astype(np.int64)
    return x, y


def _reference(x, y):
    return fc.cross_entropy(x.astype(np.float64), y, return_grad=True, backend="numpy")


def make_runner(impl, N, C):
    """A zero-argument callable doing one fused loss+grad step, and a checker."""
    x, y = _data(N, C)
    if impl in ("native", "numpy"):
        if impl == "native" and not fastloss.native_available():
            pytest.skip("native backend missing")
        g = np.empty_like(x)

        def run():
            return fc.cross_entropy(x, y, return_grad=True, out=g, backend=impl)

        def result():
            l, gg = run()
            return float(l), gg
    else:
        torch = pytest.importorskip("torch")
        torch.set_num_threads(fastloss.get_num_threads())
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.tensor(y)
        F = torch.nn.functional

        def run():
            loss = F.cross_entropy(xt, yt)
            loss.backward()
            xt.grad = None
            return loss

        def result():
            loss = F.cross_entropy(xt, yt)
            loss.backward()
            gg = xt.grad.numpy().copy()
            xt.grad = None
            return loss.item(), gg
    return run, result, x, y


def check(impl, N, C):
    run, result, x, y = make_runner(impl, N, C)
    l, g = result()
    lr, gr = _reference(x, y)
    assert abs(l - lr) <= 1e-5 * abs(lr), (impl, l, lr)
    assert np.max(np.abs(g - gr)) <= 1e-6, impl
    return run


def _rounds(impl, N, C):
    return 3 if impl == "numpy" and N * C > 10 ** 6 else (10 if N * C > 10 ** 6 else 50)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cross_entropy_fused(benchmark, impl, size):
    N, C = size
    if getattr(benchmark, "disabled", False) and N * C > 10 ** 6:
        pytest.skip("large size: only with --benchmark-enable (keeps the test suite fast)")
    benchmark.group = f"cross_entropy {N}x{C} float32 threads={fastloss.get_num_threads()}"
    run = check(impl, N, C)
    benchmark.extra_info["bytes"] = 8 * N * C
    benchmark.pedantic(run, rounds=_rounds(impl, N, C), iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:
        med = benchmark.stats.stats.median
        benchmark.extra_info["GB/s"] = 8 * N * C / med / 1e9


# --- stand-alone table ---------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def streaming_bandwidth():
    try:
        from fastloss.tools.bandwidth import measure_bandwidth

        return measure_bandwidth(n=8_000_000, repeats=5)["triad"], "fastloss.tools.bandwidth triad"
    except ImportError:
        pass
    import numba

    @numba.njit(parallel=True, cache=False)
    def triad(a, b, c, s):
        for i in numba.prange(a.shape[0]):
            a[i] = b[i] + s * c[i]

    numba.set_num_threads(min(fastloss.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    n = 8_000_000
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    triad(a, b, c, 0.5)
    best = min(_time_once(lambda: triad(a, b, c, 0.5)) for _ in range(5))
    return 24 * n / best / 1e9, "numba triad"


def _time_once(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median_time(fn, rounds):
    fn()
    return statistics.median(_time_once(fn) for _ in range(rounds))


def main(argv=None):
    bw, how = streaming_bandwidth()
    nt = fastloss.get_num_threads()
    print(f"threads {nt}; streaming bandwidth {bw:.1f} GB/s ({how}, 24 B/element)")
    print(f"{'size':>14} {'impl':>7} {'median':>11} {'GB/s':>6} {'%bw':>5} {'x torch':>8} {'x numpy':>8}")
    for N, C in SIZES:
        times = {}
        for impl in IMPLS:
            try:
                run = check(impl, N, C)
            except BaseException as exc:  # torch missing etc.
                print(f"{N}x{C} {impl}: skipped ({exc})")
                continue
            times[impl] = median_time(run, _rounds(impl, N, C))
        for impl, t in times.items():
            gbs = 8 * N * C / t / 1e9
            xt = times["torch"] / t if "torch" in times else float("nan")
            xn = times["numpy"] / t if "numpy" in times else float("nan")
            print(f"{f'{N}x{C}':>14} {impl:>7} {t * 1e6:9.0f}us {gbs:6.1f} {100 * gbs / bw:4.0f}% "
                  f"{xt:8.2f} {xn:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

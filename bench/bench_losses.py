"""Fused loss + gradient of the element-wise losses: native vs NumPy backend vs
PyTorch forward+backward, float32, one pytest-benchmark group per loss and size
(e.g. ``mse-10M-float32``).

    flock /tmp/fastloss-bench.lock python -m pytest bench/bench_losses.py --benchmark-enable
    flock /tmp/fastloss-bench.lock python bench/bench_losses.py      # table with ratios, GB/s

Implementations timed in each group:

* ``native``       -- ``fastloss.<loss>(..., return_grad=True, out=grad)``: the intended
                      training-step use, no allocation per step;
* ``native-alloc`` -- the same without ``out=`` (a fresh gradient array each call);
* ``numpy``        -- the NumPy backend with ``out=grad``;
* ``torch``        -- a real PyTorch training step on tensors created once:
                      ``x.grad = None`` (what ``zero_grad()`` does) then
                      ``loss = F.<loss>(x, t); loss.backward()``, with
                      ``torch.set_num_threads`` = fastloss's thread count.

Every implementation's loss and gradient are checked against the NumPy
reference in float64 before it is timed, so a fast wrong kernel cannot win.
Bytes moved per element: read pred + target, write grad = 3 x 4 bytes; GB/s is
that over the median time, and "% bw" compares it with the streaming triad
bandwidth of :func:`fastloss.tools.bandwidth.measure_bandwidth` (same pattern: read
2 arrays, write 1; write-allocate not counted in either). "% bw" is meaningful
at 10M (120 MB, beyond the caches); smaller sizes run from cache and can pass 100%.
"""
import functools
import sys
import time

import numpy as np
import pytest

import fastloss

SIZES = {"10M": 10_000_000, "1M": 1_000_000, "100K": 100_000}
MAIN = ["mse", "huber", "binary_cross_entropy_with_logits"]
OTHERS = ["sse", "mae", "smooth_l1", "quantile", "log_cosh", "binary_cross_entropy", "hinge",
          "squared_hinge"]
CASES = [(loss, size) for loss in MAIN for size in SIZES] + [(loss, "1M") for loss in OTHERS]
IMPLS = ["native", "native-alloc", "numpy", "torch"]
SHORT = {"binary_cross_entropy_with_logits": "bce_logits", "binary_cross_entropy": "bce"}
TORCH_NAMES = {"mse": "mse_loss", "mae": "l1_loss", "huber": "huber_loss",
               "smooth_l1": "smooth_l1_loss", "binary_cross_entropy": "binary_cross_entropy",
               "binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits"}


@functools.lru_cache(maxsize=2)
def data(loss, n):
    """float32 (pred, target) for ``loss``, fixed seed."""
    rng = np.random.default_rng(2024)
    if loss == "binary_cross_entropy":
        p = rng.uniform(0.01, 0.99, n)
    elif loss == "binary_cross_entropy_with_logits":
        p = rng.normal(scale=3.0, size=n)
    else:
        p = rng.normal(size=n)
    if loss in ("hinge", "squared_hinge"):
        t = rng.choice([-1.0, 1.0], n)
    elif loss.startswith("binary"):
        t = (rng.uniform(size=n) < 0.5).astype(np.float64)
    else:
        t = rng.normal(size=n)
    return p.astype(np.float32), t.astype(np.float32)


@functools.lru_cache(maxsize=2)
def expected(loss, n):
    """The NumPy reference in float64 on the same float32 inputs: (loss, grad)."""
    p, t = data(loss, n)
    fn = getattr(fastloss, loss)
    return fn(p.astype(np.float64), t.astype(np.float64), return_grad=True, backend="numpy")


def make_step(loss, n, impl):
    """A no-argument callable doing one fused loss + gradient; returns (loss, grad)."""
    p, t = data(loss, n)
    fn = getattr(fastloss, loss)
    if impl in ("native", "numpy"):
        if impl == "native" and not fastloss.native_available():
            pytest.skip("native extension not available")
        grad = np.empty_like(p)
        return lambda: fn(p, t, return_grad=True, out=grad, backend=impl)
    if impl == "native-alloc":
        if not fastloss.native_available():
            pytest.skip("native extension not available")
        return lambda: fn(p, t, return_grad=True, backend="native")
    torch = pytest.importorskip("torch")
    if loss not in TORCH_NAMES:
        pytest.skip(f"PyTorch has no {loss}")
    torch.set_num_threads(fastloss.get_num_threads())
    tfn = getattr(torch.nn.functional, TORCH_NAMES[loss])
    x = torch.from_numpy(p.copy()).requires_grad_()
    tt = torch.from_numpy(t)

    def step():
        x.grad = None  # optimizer.zero_grad() (set_to_none=True, its default)
        out = tfn(x, tt)
        out.backward()
        return out.detach().numpy(), x.grad.numpy()

    return step


def check(loss, n, result):
    """Loss within 1e-5 relative and gradient within float32 tolerance of the reference."""
    el, eg = expected(loss, n)
    got_l, got_g = result
    assert abs(float(got_l) - float(el)) <= 1e-5 * abs(float(el)), (got_l, el)
    np.testing.assert_allclose(got_g, eg, rtol=1e-4, atol=1e-5 * np.max(np.abs(eg)))


@pytest.fixture(scope="module")
def bandwidth(request):
    """Streaming triad GB/s with the current thread count (only when timing)."""
    opt = request.config.getoption
    disabled = opt("benchmark_disable", False) and not opt("benchmark_enable", False)
    if disabled or opt("benchmark_skip", False):
        return None
    from fastloss.tools.bandwidth import measure_bandwidth

    return measure_bandwidth()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("loss,size", CASES, ids=[f"{SHORT.get(l, l)}-{s}" for l, s in CASES])
def test_loss_and_grad(benchmark, bandwidth, loss, size, impl):
    n = SIZES[size]
    if benchmark.disabled and n > 1_000_000:
        pytest.skip("10M cases only when timing (--benchmark-enable); 1M and 100K check the same")
    benchmark.group = f"{SHORT.get(loss, loss)}-{size}-float32"
    step = make_step(loss, n, impl)
    check(loss, n, step())
    benchmark(step)
    if benchmark.stats is not None:
        gbs = 12.0 * n / benchmark.stats.stats.median / 1e9
        benchmark.extra_info["GB/s"] = round(gbs, 2)
        benchmark.extra_info["bytes_per_element"] = 12
        benchmark.extra_info["threads"] = fastloss.get_num_threads()
        if bandwidth:
            benchmark.extra_info["triad_GB/s"] = round(bandwidth["triad"], 2)
            benchmark.extra_info["pct_of_triad"] = round(100 * gbs / bandwidth["triad"], 1)


@pytest.mark.skipif(not fastloss.native_available(), reason="native extension not available")
@pytest.mark.parametrize("loss", MAIN)
def test_float32_sum_accuracy_10M(loss):
    """float32 'mean' and 'sum' within 1e-6 relative of float64 on 10M elements."""
    p, t = data(loss, 10_000_000)
    fn = getattr(fastloss, loss)
    for reduction in ("mean", "sum"):
        exact = float(fn(p.astype(np.float64), t.astype(np.float64), reduction=reduction))
        got = fn(p, t, reduction=reduction)
        assert got.dtype == np.float32
        assert abs(float(got) - exact) <= 1e-6 * abs(exact), (loss, reduction, got, exact)


# --- a plain table (python bench/bench_losses.py) ------------------------------------

def _median_time(step, min_time=1.0):
    step()
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < 5 or (time.perf_counter() < t_end and len(times) < 200):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(sizes=("10M",)):
    from fastloss.tools.bandwidth import measure_bandwidth

    bw = measure_bandwidth()
    print(f"threads {fastloss.get_num_threads()}; streaming triad {bw['triad']:.1f} GB/s "
          f"(in place {bw['inplace']:.1f}); bytes/element 12 (read pred + target, write grad)")
    print(f"{'group':<26}{'impl':<14}{'median ms':>10}{'GB/s':>8}{'% bw':>7}"
          f"{'x numpy':>9}{'x torch':>9}")
    for loss, size in CASES:
        if size not in sizes:
            continue
        n = SIZES[size]
        times = {}
        for impl in IMPLS:
            try:
                step = make_step(loss, n, impl)
            except pytest.skip.Exception:
                continue
            check(loss, n, step())
            times[impl] = _median_time(step)
        group = f"{SHORT.get(loss, loss)}-{size}-float32"
        for impl, t in times.items():
            gbs = 12.0 * n / t / 1e9
            vs_np = times["numpy"] / t if "numpy" in times else float("nan")
            vs_t = times["torch"] / t if "torch" in times else float("nan")
            print(f"{group:<26}{impl:<14}{t * 1e3:>10.2f}{gbs:>8.1f}"
                  f"{100 * gbs / bw['triad']:>7.0f}{vs_np:>9.2f}{vs_t:>9.2f}")


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ("10M",))

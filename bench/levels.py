"""The instruction-set levels against each other and against torch, in ONE process.

    ATEN_CPU_CAPABILITY=avx2 flock /tmp/fastloss-bench.lock python bench/levels.py [threads] [levels] [case]

(threads: default 2; levels: comma-separated, default avx2,avx512 among those this
CPU runs; case: only the cases whose name contains it, e.g. bce.) For each case
(float32 cross-entropy fwd+bwd at 256x10, 4096x1000 and 1024x32000, bce-with-logits
10M) the fastloss API on every level (the level's
module swapped into ``_backend.kernels`` before each call) and torch
(``F.<loss>`` forward + backward) are first checked against the NumPy reference,
then timed in alternating rounds (``fastloss.tools.benchmark.time_peers``, the
order reversed every round), so every peer sees the same load. Prints the median
ms per peer, each level's speed-up over torch, each level's time over the
highest level's, and GB/s with the share of the streaming triad bandwidth
measured at start (float64, best of 5, before the rounds); for bce also the share of
a float32 triad over the same arrays' bytes timed as a peer in the same rounds (the
host's bandwidth swings by 1.5x within minutes: this share compares like with like);
then the same from the fastest call of each peer (on a
shared 2-core machine a 2-thread call that waits for a busy core takes a whole
scheduler slice, and medians then measure the neighbours). ``ATEN_CPU_CAPABILITY`` restricts torch (avx2: what torch runs
on an AVX2 machine); it must be set before torch is imported, hence in the
environment.
"""
import sys
import time

import numpy as np

import fastloss
from fastloss import _backend, _threads
from fastloss.tools import benchmark

CE_SHAPES = [(256, 10), (4096, 1000), (1024, 32000)]
BCE_N = 10_000_000


def _at_level(level, fn):
    mod = _backend.load_level(level)

    def run():
        _backend.kernels = mod
        return fn()

    return run


def _recorded(fn, times):
    """fn, appending the duration of each call to times."""
    def run():
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        return out

    return run


def _line(name, t, nbytes, bw, levels):
    top = levels[-1]
    parts = [f"{lv} {t[lv] * 1e3:.3f} ms = {t['torch'] / t[lv]:.2f}x torch, "
             f"{nbytes / t[lv] / 1e9:.1f} GB/s ({100 * nbytes / t[lv] / 1e9 / bw:.0f}% bw)"
             for lv in levels]
    ratios = ", ".join(f"{lv}/{top} {t[lv] / t[top]:.2f}" for lv in levels if lv != top)
    return (f"{name}: torch {t['torch'] * 1e3:.3f} ms | " + " | ".join(parts) +
            (f" | {ratios}" if ratios else ""))


def _triad_runner(n):
    """A float32 triad a = b + s c over n elements (Numba, fastloss's threads): the
    same bytes as bce-with-logits (two arrays read, one written), timed as a peer in
    the same rounds, so its share is measured under the same load."""
    from fastloss.tools import bandwidth

    _threads.numba_threads()
    a, b, c = (np.full(n, v, np.float32) for v in (0.0, 1.0, 2.0))
    s = np.float32(1e-6)
    return lambda: bandwidth._triad(a, b, c, s)


def _share(name, t, levels):
    return (f"{name}: in-round float32 triad {t['triad'] * 1e3:.3f} ms; " +
            ", ".join(f"{lv} at {100 * t['triad'] / t[lv]:.0f}% of its bandwidth" for lv in levels))


def _cases(levels, torch):
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    for n, c in CE_SHAPES:
        x = (3 * rng.standard_normal((n, c))).astype(np.float32)
        y = rng.integers(0, c, n)
        yield (f"cross_entropy {n}x{c}", 2 * x.nbytes, fastloss.cross_entropy, x, y,
               F.cross_entropy)
    x = rng.standard_normal(BCE_N).astype(np.float32)
    t = (rng.random(BCE_N) < 0.5).astype(np.float32)
    yield ("bce_logits 10M", 3 * x.nbytes, fastloss.binary_cross_entropy_with_logits, x, t,
           F.binary_cross_entropy_with_logits)


def main(argv):
    import torch

    nt = int(argv[0]) if argv else 2
    usable = _backend.simd_info()["simd_usable"]
    levels = [lv for lv in (argv[1].split(",") if len(argv) > 1 else ["avx2", "avx512"])
              if lv in usable]
    _threads.set_num_threads(nt)
    torch.set_num_threads(nt)
    bw = benchmark.measure_bandwidth(benchmark.SIZES["full"])["triad"]
    print(f"{nt} threads, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"levels {levels}, triad bandwidth {bw:.1f} GB/s")
    fastest = []
    only = argv[2] if len(argv) > 2 else ""
    for name, nbytes, fn, x, target, tfn in _cases(levels, torch):
        if only not in name:
            continue
        runners = {lv: _at_level(lv, benchmark._fastloss_runner(fn, x, target, "native"))
                   for lv in levels}
        runners["torch"] = benchmark._torch_loss_runner(torch, tfn, x, target)
        benchmark._loss_check({"numpy": benchmark._fastloss_runner(fn, x, target, "numpy"),
                               **runners}, "float32")()
        if name.startswith("bce"):
            runners["triad"] = _triad_runner(x.size)
        times = {peer: [] for peer in runners}
        med = benchmark.time_peers({peer: _recorded(f, times[peer]) for peer, f in runners.items()},
                                   min_rounds=5, max_time=2.0)
        low = {p: min(t) for p, t in times.items()}
        print("median  " + _line(name, med, nbytes, bw, levels))
        fastest.append(_line(name, low, nbytes, bw, levels))
        if "triad" in runners:
            print("median  " + _share(name, med, levels))
            fastest.append(_share(name, low, levels))
    for line in fastest:
        print("fastest " + line)
    _backend.set_simd_level(None)


if __name__ == "__main__":
    main(sys.argv[1:])

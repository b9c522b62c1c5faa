"""Where do 2+ threads start to pay for the element-wise loss kernel?

Times the native kernel alone (no Python validation) serially and with
``fastloss.get_num_threads()`` threads (forced past the built-in threshold),
for mse and bce-with-logits, float32, fused loss + gradient, sizes 1K..1M:
back to back (OpenMP workers spinning) and "cold" (after a 2 ms pause, workers
asleep, as in a training loop that does other work between loss calls).
The kernel's ``EW_PAR_MIN`` / ``EW_PAR_MIN_TRANSC`` in fastloss/native/elementwise.pxi
are set from this.

    flock /tmp/fastloss-bench.lock python bench/par_threshold.py

Measured 2026-11-23, 2-core Xeon @ 2.8 GHz (AVX-512), load average ~2 from
other jobs (best-of-batches hides most of it), with the vectorised exp/log1p of
the vmath branch; microseconds per call, speed-up of 2 threads over 1:

    n        mse warm  mse cold   bce_logits warm  bce_logits cold
    4096       1.06      0.95          1.21             0.88
    8192       1.17      1.01          1.70             1.32
    16384      0.92      1.41          1.92             1.09
    32768      1.44      0.88          1.94             1.31
    65536      1.31      1.02          1.78             1.31
    131072     2.25      1.69          1.92             1.83
    1048576    2.27      1.95          ~0.7-1.7 (noisy)  1.71

Hence 65536 for the cheap losses (between the warm and the cold crossover)
and 8192 for the losses with exp/log.
"""
import sys
import time

import numpy as np

import fastloss
from fastloss import _backend

SIZES = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576]


def _time(fn, min_time=0.2):
    """Best per-call time over 7 batches lasting about ``min_time``/7 each."""
    fn()
    t0, reps = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.02:
        fn()
        reps += 1
    batch = max(1, int(reps * min_time / 7 / 0.02))
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - t0) / batch)
    return float(np.min(times))  # best batch: robust to other processes on the machine


def _time_cold(fn, reps=40):
    """Best time of calls made after a 2 ms pause: OpenMP workers have gone to
    sleep, as between loss calls in a training loop with other work in between."""
    fn()
    times = []
    for _ in range(reps):
        time.sleep(0.002)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def main(threads=None):
    k = _backend.kernels
    if k is None:
        sys.exit("native extension not available")
    nt = threads or max(2, fastloss.get_num_threads())
    rng = np.random.default_rng(0)
    print(f"threads {nt}; current ELEMENTWISE_PAR_MIN = {k.ELEMENTWISE_PAR_MIN}, "
          f"ELEMENTWISE_PAR_MIN_TRANSCENDENTAL = {k.ELEMENTWISE_PAR_MIN_TRANSCENDENTAL}")
    print(f"{'loss':<12}{'n':>9}{'serial us':>11}{f'{nt} thr us':>11}{'speed-up':>10}"
          f"{'serial cold':>13}{f'{nt} thr cold':>13}{'speed-up':>10}")
    for name in ("mse", "binary_cross_entropy_with_logits"):
        kind = k.ELEMENTWISE_KINDS[name]
        for n in SIZES:
            p = rng.normal(size=n).astype(np.float32)
            t = rng.uniform(size=n).astype(np.float32)
            g = np.empty_like(p)

            def run(threads):
                return lambda: k.elementwise(kind, p, t, None, None, None, g, None,
                                             (1.0,) * len(k.ELEMENTWISE_PARAMS[name]),
                                             1.0 / n, threads, 0)

            ts, tp = _time(run(1)), _time(run(nt))
            cs, cp = _time_cold(run(1)), _time_cold(run(nt))
            label = "mse" if name == "mse" else "bce_logits"
            print(f"{label:<12}{n:>9}{ts * 1e6:>11.1f}{tp * 1e6:>11.1f}{ts / tp:>10.2f}"
                  f"{cs * 1e6:>13.1f}{cp * 1e6:>13.1f}{cs / cp:>10.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)

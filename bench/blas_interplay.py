"""fastloss's OpenMP threads beside NumPy's BLAS threads, in one training-style loop.

A NumPy network's step alternates matrix products (OpenBLAS: its idle threads
busy-wait for a while after each product) with the loss (fastloss: its idle OpenMP
threads also spin before they sleep). On a machine with few cores the two pools then
fight over the cores. Each configuration runs in a fresh process (the OpenMP and
OpenBLAS settings are read at start-up) and times, alternating, a float32 ``A @ B``
(512 x 512) followed by bce-with-logits with its gradient over n elements (``out=``
given), then the loss alone back to back; medians in ms.

    PYTHONPATH=. flock /tmp/fastloss-bench.lock python bench/blas_interplay.py [n] [threads]

Measured 2026-12-02 on the shared 2-vCPU dev machine (AMD EPYC, 2 threads, n = 1M),
loss after a product / that product / loss back to back, ms, over three runs:

    fastloss's default (GOMP_SPINCOUNT=10000)   0.27-1.26 / 1.30-1.65 / 0.23-0.24
    GOMP_SPINCOUNT=300000 (libgomp's default)    3.19-3.31 / 4.75-4.84 / 0.18-0.23
    OMP_WAIT_POLICY=passive                      0.40-0.47 / 1.27-1.30 / 0.35-0.36
    GOMP_SPINCOUNT=1000                          0.50-0.54 / 1.28-1.40 / 0.42-0.44
    GOMP_SPINCOUNT=30000                         1.81-3.18 / 1.29-2.10 / 0.17-0.20
    fastloss.set_num_threads(1)                  0.36-0.37 / 1.27-1.30 / 0.32-0.33

With libgomp's own spin count a loss after a product ran 14-18x slower than alone and
the product itself 3.7x slower: the idle threads of both runtimes kept the two cores
busy. n = 10M, one run: fastloss's default 5.05 / 1.37 / 2.88, libgomp's 5.87 / 2.42 /
2.92. (fastloss._backend.OMP_SPIN_COUNT: how fastloss sets it.)
"""
import os
import subprocess
import sys

CHILD = r"""
import sys, time
import numpy as np
import fastloss
n, threads, one = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
fastloss.set_num_threads(1 if one else threads)
rng = np.random.default_rng(0)
x = rng.standard_normal(n).astype(np.float32)
t = (rng.random(n) < 0.5).astype(np.float32)
g = np.empty_like(x)
A, B = (rng.standard_normal((512, 512)).astype(np.float32) for _ in range(2))
loss = lambda: fastloss.binary_cross_entropy_with_logits(x, t, return_grad=True, out=g)
loss(); A @ B
after, prod, alone = [], [], []
for _ in range(100):
    t0 = time.perf_counter(); A @ B; t1 = time.perf_counter(); loss(); t2 = time.perf_counter()
    prod.append(t1 - t0); after.append(t2 - t1)
for _ in range(300):
    t0 = time.perf_counter(); loss(); alone.append(time.perf_counter() - t0)
med = lambda v: 1e3 * float(np.median(v))
print(f"{med(after):.3f} / {med(prod):.3f} / {med(alone):.3f}")
"""

CONFIGS = [
    ("fastloss's default", {}, "0"),
    ("GOMP_SPINCOUNT=300000 (libgomp's)", {"GOMP_SPINCOUNT": "300000"}, "0"),
    ("OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "passive"}, "0"),
    ("GOMP_SPINCOUNT=1000", {"GOMP_SPINCOUNT": "1000"}, "0"),
    ("GOMP_SPINCOUNT=30000", {"GOMP_SPINCOUNT": "30000"}, "0"),
    ("fastloss.set_num_threads(1)", {}, "1"),
]


def main(argv):
    n = int(float(argv[0])) if argv else 1_000_000
    threads = argv[1] if len(argv) > 1 else "2"
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    base["OPENBLAS_NUM_THREADS"] = threads
    print(f"n = {n}, {threads} threads: loss after a 512x512 product / the product / "
          f"loss back to back (ms, medians)")
    for name, env, one in CONFIGS:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), threads, one],
                             env={**base, **env}, capture_output=True, text=True)
        print(f"{name:>34}  {out.stdout.strip() or out.stderr.strip()[-300:]}")


if __name__ == "__main__":
    main(sys.argv[1:])

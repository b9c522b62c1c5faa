"""Time two kernel modules against each other in ONE process.

On a shared, noisy machine two separate benchmark runs differ by more than most
changes are worth; loading both modules into one process and alternating
between them in short blocks puts both under the same load. A module is named
by a level of this tree's build (``avx2``: fastloss._kernels_avx2) or by another
build's root and a level (``/tmp/base:avx512``; a build from before the level
modules: ``/tmp/base``, its fastloss/_kernels*.so):

    python tools/ab_builds.py avx2 avx512 4096x1000          # the two levels here
    cp -r fastloss /tmp/base/                      # a copy of the old build (with its .so)
    python setup.py build_ext --inplace --force    # the new build, here
    python tools/ab_builds.py avx512 /tmp/base:avx512 4096x1000   # cross-entropy N x C
    python tools/ab_builds.py avx2 /tmp/base:avx2 bce [threads]   # mse | huber | bce | bce_prob | log_cosh (10M float32)
    python tools/ab_builds.py avx2 /tmp/base:avx2 bce@32768 1     # ... over 32768 elements (in cache)
    python tools/ab_builds.py avx2 /tmp/base:avx2 bf16:4096x32000  # cross-entropy on bfloat16 logits
    python tools/ab_builds.py avx512 /tmp/base:avx512 half:mse     # a bfloat16 loss + gradient, 10M

Prints the median (and min) per build and B/A (> 1: build A, the first, is faster).
"""
import glob
import importlib.util
import os
import sys
import time

import numpy as np


def load(name):
    root, _, level = name.rpartition(":") if ":" in name else ("", "", name)
    if not root and not os.path.isdir(level):
        from fastloss import _backend

        return _backend.load_level(level)
    if not root:  # an old single-module build
        root, level = level, ""
    path = glob.glob(f"{root}/fastloss/_kernels{'_' + level if level else ''}.*so")[0]
    spec = importlib.util.spec_from_file_location(os.path.basename(path).split(".")[0], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def runner(K, what, nt, rng):
    what, _, size = what.partition("@")
    if what in ("bce", "mse", "huber", "log_cosh", "bce_prob"):
        n = int(size) if size else 10_000_000
        x = rng.normal(size=n).astype(np.float32) * 3
        t = (rng.random(n) < 0.5).astype(np.float32)
        a, b = 1.0, 0.0
        if what == "bce_prob":  # probabilities, clipped to [eps, 1 - eps]
            x = rng.random(n).astype(np.float32)
            a, b = 1e-7, 1 - 1e-7
        g = np.empty_like(x)
        name = {"bce": "binary_cross_entropy_with_logits",
                "bce_prob": "binary_cross_entropy"}.get(what, what)
        kind = K.ELEMENTWISE_KINDS[name]
        if hasattr(K, "ELEMENTWISE_PARAMS"):  # options by name, in a tuple
            # eps for bce_prob; delta, pos_weight... = 1
            params = tuple(a if p == "eps" else 1.0 for p in K.ELEMENTWISE_PARAMS[name])
            return (lambda: K.elementwise(kind, x, t, None, None, None, g, None, params,
                                          1.0 / n, nt)), 12 * n
        # older builds: generic option slots a, b
        return (lambda: K.elementwise(kind, x, t, None, None, None, g, None, a, b,
                                      1.0 / n, nt)), 12 * n
    if what.startswith("half:"):  # a bfloat16 element-wise loss + gradient, 10M
        import ml_dtypes

        n = 10_000_000
        name = {"bce": "binary_cross_entropy_with_logits"}.get(what[5:], what[5:])
        x = (rng.normal(size=n) * 3).astype(ml_dtypes.bfloat16)
        t = (rng.random(n) < 0.5).astype(ml_dtypes.bfloat16)
        g = np.empty_like(x)
        params = tuple(1.0 for _ in K.ELEMENTWISE_PARAMS[name])
        kind = K.ELEMENTWISE_KINDS[name]
        return (lambda: K.elementwise_half(kind, x, t, None, None, None, g, None, params,
                                           1.0 / n, nt)), 6 * n
    bf16 = what.startswith("bf16:")
    N, C = map(int, what.removeprefix("bf16:").split("x"))
    x = (rng.normal(size=(N, C)) * 3).astype(np.float32)
    y = rng.integers(0, C, N)
    rl = np.empty(N)
    if bf16:  # bfloat16 logits (their bits), the bf16 gradient
        import ml_dtypes

        xb = x.astype(ml_dtypes.bfloat16).view(np.uint16)
        gb = np.empty_like(xb)
        return (lambda: K.cross_entropy_half(1, xb, y, None, None, None, gb, rl, -100, 0.0,
                                             0.0, 0.0, 1.0 / N, 1.0 / N, float(C), nt)), 4 * N * C
    g = np.empty_like(x)
    return (lambda: K.cross_entropy(x, y, None, None, None, g, rl, -100, 0.0, 0.0, 0.0,
                                    1.0 / N, 1.0 / N, float(C), nt)), 8 * N * C


def main(argv):
    a_dir, b_dir, what = argv[:3]
    nt = int(argv[3]) if len(argv) > 3 else 2
    fa, nbytes = runner(load(a_dir), what, nt, np.random.default_rng(0))
    fb, _ = runner(load(b_dir), what, nt, np.random.default_rng(0))
    fa(), fb()
    ta, tb = [], []
    # calls per block: 5, or for small arrays as many as move ~30 MB (a block long
    # enough that the scheduler's noise averages out)
    calls = max(5, 30_000_000 // nbytes)
    for blk in range(40):
        order = ((fa, ta), (fb, tb)) if blk % 2 == 0 else ((fb, tb), (fa, ta))
        for f, ts in order:
            for _ in range(calls):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
    ma, mb = np.median(ta), np.median(tb)
    print(f"{what} threads={nt}: A med {ma * 1e3:.3f} ms (min {min(ta) * 1e3:.3f}) | "
          f"B med {mb * 1e3:.3f} ms (min {min(tb) * 1e3:.3f}) | B/A {mb / ma:.3f} | "
          f"A {nbytes / ma / 1e9:.1f} GB/s, B {nbytes / mb / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Streaming memory bandwidth of this machine, the yardstick for bandwidth-bound kernels.

Two parallel Numba kernels over float64 arrays much larger than the caches,
using fastloss's thread count:

* ``triad``:  ``a[i] = b[i] + s * c[i]`` -- read 2 arrays, write 1 (like a loss
  that reads pred and target and writes grad).
* ``inplace``: ``x[i] += s * y[i]`` -- read 2, write 1 in place (like an
  optimizer step on a parameter).

Bytes counted per element: 3 x 8 = 24 for both (the STREAM convention). The
write-allocate read that a plain store to ``a`` costs in the triad is *not*
counted, so the triad figure is the useful bandwidth an application sees for
that access pattern; with it the bus moves 32 bytes per element. The in-place update
reads ``x`` anyway, so it has no write-allocate. Each figure is the best of
``repeats`` runs, as STREAM reports.

Usage: ``python -m fastloss.tools.bandwidth`` or :func:`measure_bandwidth`.
"""
from __future__ import annotations

import time

import numba  # a dependency; fastloss imports this module only when it is used
import numpy as np

from .. import _threads

__all__ = ["measure_bandwidth"]

@numba.njit(parallel=True, cache=True)
def _fill(a, value):
    for i in numba.prange(a.shape[0]):
        a[i] = value + i * 1e-9


@numba.njit(parallel=True, cache=True)
def _triad(a, b, c, s):
    for i in numba.prange(a.shape[0]):
        a[i] = b[i] + s * c[i]


@numba.njit(parallel=True, cache=True)
def _update(x, y, s):
    for i in numba.prange(x.shape[0]):
        x[i] += s * y[i]


def measure_bandwidth(n: int = 16_000_000, repeats: int = 7) -> dict:
    """Measure streaming bandwidth with the current fastloss thread count.

    ``n`` float64 elements per array (3 arrays; the default, 384 MB in all, is
    far beyond any cache). Returns a dict: ``triad`` and ``inplace`` in GB/s
    (10^9 bytes/s, 24 bytes counted per element, best of ``repeats``),
    their medians (``triad_median``, ``inplace_median``), ``n``, ``threads``
    and ``bytes_per_element``.
    """
    n = int(n)
    repeats = int(repeats)
    if n < 1 or repeats < 1:
        raise ValueError("n and repeats must be >= 1")
    fill, triad, update = _fill, _triad, _update
    threads = _threads.numba_threads()
    a, b, c = (np.empty(n) for _ in range(3))
    for arr, value in ((a, 0.0), (b, 1.0), (c, 2.0)):  # parallel first touch
        fill(arr, value)
    s = 1e-6
    triad(a[:64], b[:64], c[:64], s)  # compile outside the timing
    update(a[:64], c[:64], s)

    def best_and_median(fn, *args):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t0)
        gbs = 24.0 * n / np.array(times) / 1e9
        return float(gbs.max()), float(np.median(gbs))

    tri, tri_med = best_and_median(triad, a, b, c, s)
    inp, inp_med = best_and_median(update, a, c, s)
    return {"triad": tri, "inplace": inp, "triad_median": tri_med, "inplace_median": inp_med,
            "n": n, "threads": threads, "bytes_per_element": 24}


def main():  # pragma: no cover - a measurement, not a test
    r = measure_bandwidth()
    print(f"streaming bandwidth, {r['threads']} thread(s), {r['n']:,} float64 x 3 arrays, "
          f"24 bytes/element counted (no write-allocate):")
    print(f"  triad  a = b + s c : {r['triad']:.1f} GB/s (median {r['triad_median']:.1f})")
    print(f"  inplace x += s y   : {r['inplace']:.1f} GB/s (median {r['inplace_median']:.1f})")


if __name__ == "__main__":  # pragma: no cover
    main()

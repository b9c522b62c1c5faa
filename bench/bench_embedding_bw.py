"""Is an Adam step on one 64M-element float32 tensor (``nn.Embedding(1_000_000, 64)``) at
the memory roofline? fastloss and torch fused against what the memory system can move.

Adam moves 28 bytes per float32 element (read p, g, m, v; write p, m, v). Printed, each
in one process, alternating the peers round by round, for 1 and 2 threads:

* ``inplace``: ``fastloss.tools.bandwidth``'s in-place kernel (``x += s*y``, float64,
  read 2 write 1) -- the yardstick ``fastloss bench`` uses -- once as that tool reports
  it (best of its repeats) and once timed in the alternating rounds below;
* ``streams7``: the same access pattern as Adam with no arithmetic to speak of
  (``p += s*g; m += s*g; v += s*g`` on float32: 4 reads, 3 writes), once on plain pages
  and once on arrays ``madvise``d to transparent huge pages (2 MB);
* ``fastloss``: ``fastloss.torch.optim.Adam(...).step()`` (gradients set, state made);
* ``torch_fused``: ``torch.optim.Adam(..., fused=True).step()``;
* ``first step``: the first step of each (the state is allocated and its pages are
  first touched inside it).

The float32 rows count 28 bytes an element; ``inplace`` 24 bytes per float64 element, as
that tool does. Medians of ``ROUNDS`` rounds; ``% inplace`` against the alternating
in-place median.

    PYTHONPATH=. python bench/bench_embedding_bw.py [rounds]
"""
from __future__ import annotations

import mmap
import statistics
import sys
import time

import numba
import numpy as np

import fastloss

N = 1_000_000 * 64
NB = 16_000_000  # float64 elements of the in-place yardstick (as fastloss.tools.bandwidth)
BYTES = 28  # Adam, float32: read p, g, m, v; write p, m, v
ROUNDS = 15


@numba.njit(parallel=True, cache=True)
def _streams7(p, g, m, v, s):
    for i in numba.prange(p.shape[0]):
        x = s * g[i]
        p[i] += x
        m[i] += x
        v[i] += x


def _huge(n):
    """A zeroed float32 array on anonymous memory advised to use transparent huge pages."""
    buf = mmap.mmap(-1, n * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buf.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buf, np.float32)


def _gbs(t):
    return BYTES * N / t / 1e9


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(threads, rounds=ROUNDS):
    import torch

    from fastloss.tools.bandwidth import _update, measure_bandwidth
    import fastloss.torch.optim as FO

    fastloss.set_num_threads(threads)
    torch.set_num_threads(threads)
    bw = measure_bandwidth()
    print(f"\n== {threads} thread(s) ==")
    print(f"inplace (fastloss.bandwidth, x += s*y float64): {bw['inplace']:.1f} GB/s best, "
          f"{bw['inplace_median']:.1f} median; triad {bw['triad']:.1f}")

    torch.manual_seed(0)
    w = torch.nn.Embedding(1_000_000, 64).weight.detach()
    g = torch.randn_like(w) * 0.1
    makers = {"fastloss": lambda ps: FO.Adam(ps, lr=1e-3),
              "torch_fused": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)}
    for make in makers.values():  # compile outside the timing (a small tensor)
        q = torch.nn.Parameter(torch.zeros(1 << 20))
        q.grad = torch.ones_like(q)
        make([q]).step()
    peers, first = {}, {}
    for name, make in makers.items():
        p = torch.nn.Parameter(w.clone())
        p.grad = g.clone()
        opt = make([p])
        first[name] = _time(opt.step)  # the state is made and first touched here
        opt.step()
        peers[name] = opt.step
    for label, alloc in (("streams7 (4 KB pages)", lambda: np.zeros(N, np.float32)),
                         ("streams7 (huge pages)", lambda: _huge(N))):
        a = [alloc() for _ in range(4)]
        a[1][:] = 1.0
        _streams7(*a, np.float32(1e-6))  # compile, touch
        peers[label] = lambda a=a: _streams7(*a, np.float32(1e-6))
    x, y = np.full(NB, 1.0), np.full(NB, 2.0)
    _update(x[:64], y[:64], 1e-6)
    peers["inplace (x += s*y)"] = lambda: _update(x, y, 1e-6)
    times = {name: [] for name in peers}
    for _ in range(rounds):  # alternate round by round
        for name, fn in peers.items():
            times[name].append(_time(fn))
    rows = {name: statistics.median(ts) for name, ts in times.items()}
    inplace = 24 * NB / rows.pop("inplace (x += s*y)") / 1e9
    print(f"inplace x += s*y float64, alternating with the rows below: {inplace:.1f} GB/s "
          f"(median)")

    print(f"{'':28s} {'ms':>8s} {'GB/s':>7s} {'% inplace':>9s} {'% streams7':>10s}")
    ref = rows["streams7 (4 KB pages)"]
    for label, t in rows.items():
        print(f"{label:28s} {t * 1e3:8.2f} {_gbs(t):7.1f} {100 * _gbs(t) / inplace:8.0f}% "
              f"{100 * ref / t:9.0f}%")
    for name, t in first.items():
        print(f"first step {name:17s} {t * 1e3:8.2f}  (steady {rows[name] * 1e3:.2f}: state "
              f"allocation and first touch {(t - rows[name]) * 1e3:.0f} ms, once)")
    print(f"fastloss / torch_fused speed: {rows['torch_fused'] / rows['fastloss']:.2f}x")


def test_streams7_and_huge_pages():
    """The roofline kernel does what it says; the huge-page buffers are zeroed float32."""
    a = [_huge(1000) for _ in range(4)]
    assert all(x.dtype == np.float32 and not x.any() for x in a)
    a[1][:] = 2.0
    _streams7(*a, np.float32(0.5))
    assert all((x == 1.0).all() for x in (a[0], a[2], a[3]))


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    for threads in (1, 2):
        run(threads, rounds)


if __name__ == "__main__":
    main()

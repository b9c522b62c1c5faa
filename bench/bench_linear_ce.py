"""Fused linear + cross-entropy (issue 13), float32 fwd+bwd: time and memory.

Peers, all at fastloss's thread count, each producing the loss and the gradients
of input and linear_weight (2048 x 512 -> 32000 unless told):

* ``fastloss``: :func:`fastloss.linear_cross_entropy` (NumPy in, return_grad=True);
* ``fastloss.torch``: :func:`fastloss.torch.linear_cross_entropy`, forward + backward;
* ``matmuls``: the three matmuls alone (logits, grad_input, grad_weight) into
  preallocated N x V / N x D / V x D buffers: the floor, with no loss at all;
* ``torch``: torch's ``F.linear_cross_entropy`` (reference path, options=None);
* ``torch-chunked``: the same with ``options=torch.nn.LinearCrossEntropyOptions()``.

    PYTHONPATH=. python bench/bench_linear_ce.py            # timing table, ratios, one process
    PYTHONPATH=. python bench/bench_linear_ce.py --memory   # peak extra memory, both sizes
    python -m pytest bench/bench_linear_ce.py --benchmark-enable

Timing: rounds alternate between the peers in one process, medians compared.
Memory: each (peer, size) in a fresh subprocess: tracemalloc peak (NumPy's
allocations) and peak-RSS delta (everything, BLAS workspace and allocator slack
included), minus the gradients returned (input and linear_weight), against the
bar of 1/8 of the N x V float32 logits.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

import fastloss

SIZE = (2048, 512, 32000)
MEMORY_SIZES = [(2048, 512, 32000), (2048, 1024, 128256)]
IMPLS = ["fastloss", "fastloss.torch", "matmuls", "torch", "torch-chunked"]
MAX_VS_MATMULS = 1.10
MIN_VS_TORCH = 1.15


def _data(N, D, V):
    rng = np.random.default_rng(0)
    h = rng.standard_normal((N, D), dtype=np.float32)
    W = rng.standard_normal((V, D), dtype=np.float32) * np.float32(D ** -0.5)
    y = rng.integers(0, V, N).astype(np.int64)
    return h, W, y


def _torch_loss(impl):
    """The torch peer's loss function (input, linear_weight, target) -> loss."""
    import torch

    torch.set_num_threads(fastloss.get_num_threads())
    if impl == "fastloss.torch":
        import fastloss.torch as ft

        return ft.linear_cross_entropy
    opts = torch.nn.LinearCrossEntropyOptions() if impl == "torch-chunked" else None

    def fn(a, b, t):
        return torch.nn.functional.linear_cross_entropy(a, b, t, options=opts)
    return fn


def make_runner(impl, N, D, V):
    """(run, result): one fwd+bwd step, and one returning (loss, grad_input, grad_weight)."""
    h, W, y = _data(N, D, V)
    if impl == "fastloss":
        def result():
            loss, gi, gW, _ = fastloss.linear_cross_entropy(h, W, y, return_grad=True)
            return float(loss), gi, gW
        return result, result
    if impl == "matmuls":
        Z, gi, gW = np.empty((N, V), np.float32), np.empty_like(h), np.empty_like(W)

        def run():
            np.matmul(h, W.T, out=Z)
            np.matmul(Z, W, out=gi)
            np.matmul(Z.T, h, out=gW)
        return run, None
    torch = pytest.importorskip("torch")
    fn = _torch_loss(impl)
    ht = torch.from_numpy(h).requires_grad_()
    Wt = torch.from_numpy(W).requires_grad_()
    yt = torch.from_numpy(y)

    def result():
        ht.grad = Wt.grad = None
        loss = fn(ht, Wt, yt)
        loss.backward()
        return loss.item(), ht.grad.numpy(), Wt.grad.numpy()
    return result, result


def check(impl, N, D, V):
    """The peer's result against the float64 composite; returns its runner."""
    run, result = make_runner(impl, N, D, V)
    if result is None:
        return run
    loss, gi, gW = result()
    h, W, y = _data(N, D, V)
    h64, W64 = h.astype(np.float64), W.astype(np.float64)
    lr, gz = fastloss.cross_entropy(h64 @ W64.T, y, return_grad=True)
    assert abs(loss - lr) <= 1e-5 * abs(lr), (impl, loss, lr)
    for g, gr in ((gi, gz @ W64), (gW, gz.T @ h64)):
        assert np.max(np.abs(g - gr)) <= 1e-5 * max(1.0, np.max(np.abs(gr))), impl
    return run


@pytest.mark.parametrize("impl", IMPLS)
def test_linear_ce_fwd_bwd(benchmark, impl):
    N, D, V = SIZE
    if getattr(benchmark, "disabled", False):
        N, D, V = 256, 64, 3000  # the suite only checks results, at a small size
    benchmark.group = f"linear_cross_entropy {N}x{D}->{V} float32 threads={fastloss.get_num_threads()}"
    run = check(impl, N, D, V)
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)


# --- memory ------------------------------------------------------------------------------

def _peak_rss_bytes():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_memory(impl, N, D, V):
    """Peak extra bytes of one fwd+bwd beyond the inputs and the returned gradients:
    (tracemalloc peak, peak-RSS delta). tracemalloc sees every NumPy allocation (all
    of fastloss's, also behind the torch adapter, whose tensors are NumPy views) but
    not torch's own; the RSS delta sees everything, BLAS workspace included."""
    import tracemalloc

    h, W, y = _data(N, D, V)
    returned = h.nbytes + W.nbytes  # grad_input, grad_weight
    if impl == "fastloss":
        def fn(a, b, t):
            return fastloss.linear_cross_entropy(a, b, t, return_grad=True)
        args = (h, W, y)
        small = (h[:8], W[:64], y[:8] % 64)
    else:
        import torch

        loss_fn = _torch_loss(impl)

        def fn(a, b, t):
            a, b = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
            loss_fn(a, b, torch.from_numpy(t)).backward()
            return a.grad, b.grad
        args = (h, W, y)
        small = (h[:8], W[:64], y[:8] % 64)
    fn(*small)  # warm: thread pools, lazy imports
    before = _peak_rss_bytes()
    tracemalloc.start()
    out = fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = _peak_rss_bytes() - before
    del out
    # the returned gradients count in the RSS delta; in tracemalloc only when NumPy made them
    traced_returned = returned if impl.startswith("fastloss") else 0
    return peak - traced_returned, rss - returned


def memory_table(impls=("fastloss", "fastloss.torch", "torch", "torch-chunked")):
    print("peak extra memory of fwd+bwd beyond inputs and returned gradients, "
          "as a fraction of the N x V float32 logits (bar: 1/8 = 0.125)")
    print(f"{'size':>22} {'impl':>15} {'tracemalloc':>12} {'fraction':>9} {'RSS delta':>10} "
          f"{'fraction':>9}")
    for N, D, V in MEMORY_SIZES:
        logits = 4 * N * V
        for impl in impls:
            cmd = [sys.executable, __file__, "--memory-one", impl, str(N), str(D), str(V)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                print(f"{N}x{D}->{V} {impl}: failed: {r.stderr.strip().splitlines()[-1:]}")
                continue
            traced, rss = json.loads(r.stdout.strip().splitlines()[-1])["extra"]
            print(f"{f'{N}x{D}->{V}':>22} {impl:>15} {traced / 2**20:10.1f}MB "
                  f"{traced / logits:9.3f} {rss / 2**20:8.1f}MB {rss / logits:9.3f}")


# --- timing table ---------------------------------------------------------------------------

def _time_once(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def timing_table(rounds=7):
    N, D, V = SIZE
    runs = {}
    for impl in IMPLS:
        try:
            runs[impl] = check(impl, N, D, V)
        except BaseException as exc:  # torch missing etc.
            print(f"{impl}: skipped ({exc})")
    for fn in runs.values():
        fn()
    times = {impl: [] for impl in runs}
    for _ in range(rounds):  # alternating rounds
        for impl, fn in runs.items():
            times[impl].append(_time_once(fn))
    med = {impl: statistics.median(t) for impl, t in times.items()}
    print(f"fwd+bwd {N}x{D}->{V} float32, threads {fastloss.get_num_threads()}, "
          f"median of {rounds} alternating rounds")
    for impl, t in med.items():
        print(f"{impl:>15} {t * 1e3:9.1f} ms  {t / med['fastloss']:6.2f}x fastloss")
    if "matmuls" in med:
        r = med["fastloss"] / med["matmuls"]
        print(f"fastloss / matmuls = {r:.3f} (bar <= {MAX_VS_MATMULS})")
    for peer in ("torch", "torch-chunked"):
        if peer in med:
            r = med[peer] / med["fastloss"]
            print(f"{peer} / fastloss = {r:.3f} (bar >= {MIN_VS_TORCH})")


def main(argv):
    if argv[:1] == ["--memory-one"]:
        impl, N, D, V = argv[1], *map(int, argv[2:5])
        print(json.dumps({"extra": measure_memory(impl, N, D, V)}))
    elif argv[:1] == ["--memory"]:
        memory_table()
    else:
        timing_table()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

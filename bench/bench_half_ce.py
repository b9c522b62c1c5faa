"""Cross-entropy fwd+bwd on bfloat16 logits: fastloss bf16 against fastloss float32 and
torch bf16, timed in ONE process in alternating rounds (``time_peers``).

    PYTHONPATH=. flock /tmp/fastloss-bench.lock python bench/bench_half_ce.py [threads] [levels] [NxC,...]
    FASTLOSS_SIMD=avx2 ATEN_CPU_CAPABILITY=avx2 PYTHONPATH=. python bench/bench_half_ce.py 2 avx2

(threads: default 2; levels: comma-separated instruction-set levels to run fastloss
at, swapped in-process, default the best one; sizes default 4096x32000.) Peers:
``fastloss bf16 <level>`` (the bf16 logits, the bf16 gradient into a preallocated
``out=`` buffer), ``fastloss f32 <level>`` (the same logits widened, float32
gradient), ``torch bf16`` (``F.cross_entropy`` forward + backward on a bf16 tensor
that requires grad: a bf16 loss and gradient, as fastloss's). Every peer is checked
against the float64 reference first. Issue 12's bar at 4096x32000: bf16 at least
1.5x fastloss float32 and 10x torch bf16.
"""
import sys

import numpy as np
import pytest

import fastloss
from fastloss import _backend, _threads
from fastloss import classification as fc
from fastloss.tools import benchmark


def _runners(torch, x, y, levels, at_level):
    """{peer: fn}; at_level(level, fn): fn with that level's kernels (bench/levels.py)."""
    x32 = x.astype(np.float32)
    runners = {}
    for lv in levels:
        gb, g32 = np.empty_like(x), np.empty_like(x32)
        runners[f"fastloss bf16 {lv}"] = at_level(
            lv, lambda gb=gb: fc.cross_entropy(x, y, return_grad=True, out=gb))
        runners[f"fastloss f32 {lv}"] = at_level(
            lv, lambda g32=g32: fc.cross_entropy(x32, y, return_grad=True, out=g32))
    xt = torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16).requires_grad_()
    yt = torch.from_numpy(y)

    def torch_bf16():
        xt.grad = None
        loss = torch.nn.functional.cross_entropy(xt, yt)
        loss.backward()
        return loss.detach().float().numpy(), xt.grad.float().numpy()

    runners["torch bf16"] = torch_bf16
    return runners


def _check(runners, x, y):
    l64, g64 = fc.cross_entropy(x.astype(np.float64), y, return_grad=True, backend="numpy")
    for name, run in runners.items():
        loss, grad = run()
        loss, grad = float(np.asarray(loss, np.float64)), np.asarray(grad).astype(np.float64)
        assert abs(loss - l64) <= 1e-2 * abs(l64), (name, loss, l64)
        assert np.max(np.abs(grad - g64)) <= 1e-2 * np.max(np.abs(g64)), name


def test_half_ce_peers_agree():
    """The peers (this level) against the float64 reference, at a small size."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    if not fastloss.native_available():
        pytest.skip("native backend missing")
    x, y = _data(64, 3000)
    _check(_runners(torch, x, y, [_backend.simd_level], lambda lv, fn: fn), x, y)


def _data(n, c):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((n, c))).astype(np.dtype(__import__("ml_dtypes").bfloat16))
    return x, rng.integers(0, c, n)


def main(argv):
    import torch
    from levels import _at_level    # (bench/ is on the path when run as a script)

    nt = int(argv[0]) if argv else 2
    usable = _backend.simd_info()["simd_usable"]
    levels = [lv for lv in (argv[1].split(",") if len(argv) > 1 else [_backend.simd_level])
              if lv in usable]
    sizes = [tuple(int(v) for v in s.split("x"))
             for s in (argv[2].split(",") if len(argv) > 2 else ["4096x32000"])]
    _threads.set_num_threads(nt)
    torch.set_num_threads(nt)
    print(f"{nt} threads, fastloss {fastloss.__version__} levels {levels}, torch "
          f"{torch.__version__} ({torch.backends.cpu.get_cpu_capability()})")
    for n, c in sizes:
        x, y = _data(n, c)
        runners = _runners(torch, x, y, levels, _at_level)
        _check(runners, x, y)
        med = benchmark.time_peers(runners, min_rounds=5, max_time=2.0)
        print(f"cross_entropy fwd+bwd {n}x{c}: " +
              ", ".join(f"{p} {t * 1e3:.1f} ms" for p, t in med.items()))
        for lv in levels:
            b = med[f"fastloss bf16 {lv}"]
            print(f"  {lv}: bf16 = {med[f'fastloss f32 {lv}'] / b:.2f}x fastloss float32, "
                  f"{med['torch bf16'] / b:.1f}x torch bf16")
    _backend.set_simd_level(None)


if __name__ == "__main__":
    main(sys.argv[1:])

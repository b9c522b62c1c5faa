"""Start-up cost of the Numba optimizer kernels with a warm disk cache.

Runs fresh Python processes one after the other, all with the same empty
``NUMBA_CACHE_DIR``, and prints for each the time of the first optimizer step
(optimizer built, then one timed ``step``: kernel compile or cache load included)
and the number of files in the cache directory afterwards. Run 1 compiles; from
run 2 on every kernel should load from disk and the file count stay constant.
Two cases: ``fastloss.optim.Adam`` on three small NumPy arrays and
``fastloss.torch.optim.Adam`` on a small ``nn.Module``.

    PYTHONPATH=. flock /tmp/fastloss-bench.lock python bench/numba_cache_startup.py [runs]
"""
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, time
import numpy as np
if sys.argv[1] == "numpy":
    import fastloss.optim as fo
    ps = [np.ones(n, np.float32) for n in (10, 300, 4000)]
    gs = [np.full_like(p, 0.1) for p in ps]
    opt = fo.Adam(ps, lr=1e-3)
    t = time.perf_counter()
    opt.step(gs)
else:
    import torch
    import fastloss.torch.optim as fto
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    m(torch.randn(4, 8)).sum().backward()
    opt = fto.Adam(m.parameters(), lr=1e-3)
    t = time.perf_counter()
    opt.step()
print(time.perf_counter() - t)
"""


def main(runs=3):
    for case in ("numpy", "torch"):
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, NUMBA_CACHE_DIR=d)
            for r in range(1, runs + 1):
                out = subprocess.run([sys.executable, "-c", CHILD, case], env=env, check=True,
                                     capture_output=True, text=True).stdout
                nfiles = sum(len(f) for _, _, f in os.walk(d))
                print(f"{case:6s} run {r}: first step {float(out):6.3f} s, cache files {nfiles}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)

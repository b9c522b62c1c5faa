"""Start-up cost of the Numba optimizer kernels with a warm disk cache.

Runs fresh Python processes one after the other, all with the same empty
``NUMBA_CACHE_DIR``, and prints for each the time of the first optimizer step
(optimizer built, then one timed ``step``: kernel compile or cache load included)
and the number of files in the cache directory afterwards. Run 1 compiles; from
run 2 on every kernel should load from disk and the file count stay constant.
Two cases: ``fastloss.optim.Adam`` on three small NumPy arrays and
``fastloss.torch.optim.Adam`` on a small ``nn.Module``. The children run in the cache
directory, so they import the fastloss of ``PYTHONPATH`` (made absolute), not the cwd's.

    PYTHONPATH=. flock /tmp/fastloss-bench.lock python bench/numba_cache_startup.py [runs]

Measured 2026-12-01 on the shared 2-core dev machine (load ~4), two alternating rounds of
PYTHONPATH=<main or branch>, seconds of the first step in runs 1 / 2 / 3, cache files:

    before (main b083bad)  numpy  2.17-2.30 / 1.78-1.97 / 2.00   files 6, 7, 8 (one more each run)
                           torch  2.59-2.83 / 1.90-1.93 / 1.93-2.99  files 7, 8, 9
    after (_numba_cache)   numpy  1.91-2.15 / 0.59-0.64 / 0.60   files 6, 6, 6
                           torch  2.50-3.20 / 1.01-1.23 / 0.89-1.17  files 7, 7, 7

What is left of a warm first step is Numba's own first-load set-up (its registries, and
``scipy.linalg`` for its BLAS check), not fastloss's kernels.
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
            path = os.pathsep.join(os.path.abspath(p) for p in
                                   os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
            env = dict(os.environ, NUMBA_CACHE_DIR=d, PYTHONPATH=path)
            for r in range(1, runs + 1):
                out = subprocess.run([sys.executable, "-c", CHILD, case], env=env, cwd=d,
                                     check=True, capture_output=True, text=True).stdout
                nfiles = sum(len(f) for _, _, f in os.walk(d))
                print(f"{case:6s} run {r}: first step {float(out):6.3f} s, cache files {nfiles}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)

"""Which loops of the .pxi kernels did GCC vectorise?

Compiles the Cython-generated C of one level module, fastloss/_kernels_<level>.c
(run ``python setup.py build_ext --inplace`` first), with that level's flags plus
``-fopt-info-vec-optimized`` and maps each "loop vectorized" note back to the
.pxi source line through the ``/* "fastloss/x.pxi":N`` comments Cython leaves
(x: a path under fastloss/, e.g. ``native/_ce_steps.pxi``); loops in the C
headers (``native/*.h``, the generated element-wise one included) are reported
at their own lines.

    python tools/vec_report.py [native/elementwise.pxi | native/_ce_steps.pxi | native/elementwise_losses.h] [--level avx2]

(level: avx512, the default, avx2 or baseline; the flags are setup.py's SIMD_LEVEL_FLAGS)
"""
import os
import re
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np

FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-fPIC"]
LEVEL_FLAGS = {"baseline": ["-march=x86-64"], "avx2": ["-march=x86-64-v3"],
               "avx512": ["-march=x86-64-v4", "-mprefer-vector-width=512"]}


def main(only=None, level="avx512"):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c_file = os.path.join(root, "fastloss", f"_kernels_{level}.c")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["gcc", "-c", *FLAGS, *LEVEL_FLAGS[level], "-I" + sysconfig.get_paths()["include"],
               "-I" + np.get_include(), "-I" + os.path.join(root, "fastloss"),
               "-I" + os.path.join(root, "fastloss", "native"),
               "-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION", c_file,
               "-o", os.path.join(tmp, "k.o"), "-fopt-info-vec-optimized"]
        notes = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    where, cur = {}, None
    with open(c_file) as f:
        for i, line in enumerate(f, 1):
            m = re.search(r'"fastloss/((?:\w+/)?\w+\.pxi)":(\d+)', line)
            if m:
                cur = (m.group(1), int(m.group(2)))
            where[i] = cur
    found = {}
    for line in notes.splitlines():
        m = re.match(r".*_kernels_\w+\.c:(\d+):\d+: optimized: loop vectorized using (\d+) byte",
                     line)
        h = re.match(r".*fastloss/((?:\w+/)?\w+\.h):(\d+):\d+: optimized: loop vectorized "
                     r"using (\d+) byte", line)
        if h:
            src = (h.group(1), int(h.group(2)))
            if only is None or src[0] == only:
                found.setdefault(src, set()).add(int(h.group(3)))
        elif m and where.get(int(m.group(1))):
            src = where[int(m.group(1))]
            if only is None or src[0] == only:
                found.setdefault(src, set()).add(int(m.group(2)))
    sources = {}
    for (pxi, line), widths in sorted(found.items()):
        if pxi not in sources:
            with open(os.path.join(root, "fastloss", pxi)) as f:
                sources[pxi] = f.read().splitlines()
        text = sources[pxi]
        # the loop header and the statement under it say which loop this is
        body = text[line].strip() if line < len(text) else ""
        print(f"{pxi}:{line:<5} {'/'.join(map(str, sorted(widths))):>6} B  "
              f"{text[line - 1].strip()[:45]:<45} {body[:60]}")


if __name__ == "__main__":
    args = sys.argv[1:]
    lvl = "avx512"
    if "--level" in args:
        k = args.index("--level")
        lvl = args[k + 1]
        del args[k:k + 2]
    main(args[0] if args else None, lvl)

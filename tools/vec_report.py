"""Which loops of the .pxi kernels did GCC vectorise?

Compiles the Cython-generated fastloss/_kernels.c (run ``python setup.py
build_ext --inplace`` first) with the build's flags plus
``-fopt-info-vec-optimized`` and maps each "loop vectorized" note back to the
.pxi source line through the ``/* "fastloss/x.pxi":N`` comments Cython leaves
(x: a path under fastloss/, e.g. ``native/_ce_steps.pxi``); loops in the C
headers (``native/*.h``, the generated element-wise one included) are reported
at their own lines.

    python tools/vec_report.py [native/elementwise.pxi | native/_ce_steps.pxi | native/elementwise_losses.h]
"""
import os
import re
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np

FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-march=native", "-mprefer-vector-width=512",
         "-fopenmp", "-fPIC"]


def main(only=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c_file = os.path.join(root, "fastloss", "_kernels.c")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["gcc", "-c", *FLAGS, "-I" + sysconfig.get_paths()["include"],
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
        m = re.match(r".*_kernels\.c:(\d+):\d+: optimized: loop vectorized using (\d+) byte", line)
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
    main(sys.argv[1] if len(sys.argv) > 1 else None)

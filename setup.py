"""Build script: compiles the native kernels with the system C compiler.

* One source (fastloss/_kernels.pyx), one extension module per instruction-set
  level: ``fastloss._kernels_baseline`` always, and on x86-64 with GCC or Clang
  ``_kernels_avx2`` (x86-64-v3) and ``_kernels_avx512`` (x86-64-v4);
  fastloss/_backend.py imports the best one the running CPU supports, so a
  build runs on any x86-64 machine. ``FASTLOSS_PORTABLE=1`` builds the
  baseline module only.
* OpenMP is used when the compiler accepts ``-fopenmp`` (and
  ``FASTLOSS_NO_OPENMP`` is not set); otherwise the modules are built serial.
* Never ``-ffast-math``: NaN/Inf must propagate and our polynomial
  approximations rely on exact rounding.
* The element-wise loss kernels are generated first: fastloss/native/
  elementwise_codegen.py writes native/elementwise_losses.h from the loss
  table fastloss/_elementwise_spec.py (both loaded by file path).
* If Cython or a compiler is missing, the package still installs and
  ``import fastloss`` uses the NumPy backend.
"""
import glob
import importlib.util
import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _try_compile(compiler, flags, link_flags=(), code="int main(void){return 0;}\n"):
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=list(flags))
            compiler.link_executable(objs, "probe", output_dir=tmp,
                                     extra_postargs=list(link_flags))
            return True
        except Exception:
            return False


OMP_PROBE = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"


# --- instruction-set levels: one module per level (runtime dispatch) ---------
# level -> the target flags to try, in order (the first the compiler accepts
# wins; older compilers lack the x86-64-vN names). None: the compiler default.
# AVX-512 prefers 512-bit vectors (10-15% on softmax/cross-entropy, measured).
SIMD_LEVEL_FLAGS = {
    "baseline": (("-march=x86-64",), None),
    "avx2": (("-march=x86-64-v3",), ("-march=haswell",)),
    "avx512": (("-march=x86-64-v4", "-mprefer-vector-width=512"),
               ("-march=skylake-avx512", "-mprefer-vector-width=512")),
}


def _simd_levels():
    """The levels this platform gets a module for (before asking the compiler)."""
    import platform

    if os.environ.get("FASTLOSS_PORTABLE", "0") not in ("", "0"):
        print("fastloss: FASTLOSS_PORTABLE set, building the baseline level only")
        return ["baseline"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        return ["baseline", "avx2", "avx512"]
    return ["baseline"]


def _level_flags(compiler, level):
    """The target flags of a level module, or None when the compiler has none."""
    if compiler.compiler_type == "msvc":
        return [] if level == "baseline" else None
    for flags in SIMD_LEVEL_FLAGS[level]:
        if flags is None:
            return []
        if _try_compile(compiler, flags):
            return list(flags)
    return None


def _assign_level_flags(build):
    """Give each level module its target flags; drop the levels the compiler cannot
    build (printed). Builds the modules in parallel unless -j was given."""
    kept = []
    for ext in build.extensions:
        level = ext.name.rsplit("_", 1)[-1]
        flags = _level_flags(build.compiler, level)
        if flags is None:
            print(f"fastloss: the compiler cannot target the {level} level; not built")
            continue
        ext.extra_compile_args = list(ext.extra_compile_args) + flags
        print(f"fastloss: {ext.name}: {ext.extra_compile_args}")
        kept.append(ext)
    build.extensions[:] = kept
    if not build.parallel:
        build.parallel = min(len(kept), os.cpu_count() or 1)


class BuildExt(build_ext):
    def build_extensions(self):
        cc = self.compiler
        is_msvc = cc.compiler_type == "msvc"
        compile_args, link_args = [], []
        if is_msvc:
            compile_args += ["/O2", "/openmp"]
        else:
            for flag in ("-O3", "-fno-math-errno", "-fno-trapping-math"):
                if _try_compile(cc, [flag]):
                    compile_args.append(flag)
            if os.environ.get("FASTLOSS_NO_OPENMP", "0") in ("", "0") and _try_compile(
                cc, ["-fopenmp"], ["-fopenmp"], OMP_PROBE
            ):
                compile_args.append("-fopenmp")
                link_args.append("-fopenmp")
            else:
                print("fastloss: compiler has no OpenMP; building a serial extension")
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + list(ext.extra_compile_args or [])
            ext.extra_link_args = link_args + list(ext.extra_link_args or [])
        print(f"fastloss: compile flags {compile_args}, link flags {link_args}")
        _assign_level_flags(self)
        super().build_extensions()


def _generate_sources():
    """Write the generated headers (from the loss table); return their paths."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "fastloss", "native", "elementwise_codegen.py")
    spec = importlib.util.spec_from_file_location("_fastloss_elementwise_codegen", path)
    codegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codegen)
    return [os.path.relpath(codegen.write())]


def _extensions():
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:
        print(f"fastloss: cannot build the native extension ({exc}); NumPy backend only")
        return []
    try:
        _generate_sources()
    except Exception as exc:  # a broken loss table: say so, install the NumPy backend
        print(f"fastloss: cannot generate the element-wise kernels ({exc!r}); NumPy backend only")
        return []
    exts = [
        Extension(
            f"fastloss._kernels_{level}",
            [f"fastloss/_kernels_{level}.pyx"],   # a stub including fastloss/_kernels.pyx
            include_dirs=[numpy.get_include(), "fastloss", "fastloss/native"],
            # headers (the generated one included): a change in one recompiles the modules
            depends=sorted(glob.glob(os.path.join("fastloss", "native", "*.h"))),
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            optional=True,  # a failed compile leaves the NumPy backend, not a failed install
        )
        for level in _simd_levels()
    ]
    return cythonize(
        exts,
        nthreads=min(len(exts), os.cpu_count() or 1),
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
        },
        quiet=True,
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})

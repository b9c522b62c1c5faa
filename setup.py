"""Build script: compiles fastloss/_kernels.pyx with the system C compiler.

* OpenMP is used when the compiler accepts ``-fopenmp``; otherwise the
  extension is built serial.
* ``-march=native`` (AVX2/AVX-512 on the build machine) unless
  ``FASTLOSS_PORTABLE=1`` is set, which builds for the baseline ISA.
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
            if os.environ.get("FASTLOSS_PORTABLE", "0") not in ("", "0"):
                print("fastloss: FASTLOSS_PORTABLE set, building for the baseline ISA")
            elif _try_compile(cc, ["-march=native"]):
                compile_args.append("-march=native")
                # On AVX-512 machines use the full 512-bit registers (measured 10-15% on
                # softmax/cross-entropy); a no-op on AVX2-only machines.
                if _try_compile(cc, ["-march=native", "-mprefer-vector-width=512"]):
                    compile_args.append("-mprefer-vector-width=512")
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
    ext = Extension(
        "fastloss._kernels",
        ["fastloss/_kernels.pyx"],
        include_dirs=[numpy.get_include(), "fastloss", "fastloss/native"],
        # headers (the generated one included): a change in one recompiles the extension
        depends=sorted(glob.glob(os.path.join("fastloss", "native", "*.h"))),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        optional=True,  # a failed compile leaves the NumPy backend, not a failed install
    )
    return cythonize(
        [ext],
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

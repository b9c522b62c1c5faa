"""Backend selection: ``numpy`` (the reference) or ``native`` (compiled kernels).

Order of precedence: the ``backend=`` argument of a call, then
:func:`set_backend`, then the ``FASTLOSS_BACKEND`` environment variable, then
``native`` when the compiled extension imported, else ``numpy``.

The native kernels come as one module per instruction-set level
(``_kernels_baseline``, ``_kernels_avx2``, ``_kernels_avx512``: the same code
built for x86-64, x86-64-v3, x86-64-v4); ``kernels`` is the best one that was
built and that the CPU runs, or the level ``FASTLOSS_SIMD`` asks for (a lower
one: for tests and for users who need it).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import warnings

__all__ = ["BACKENDS", "SIMD_LEVELS", "get_backend", "set_backend", "native_available",
           "resolve", "simd_info", "set_simd_level", "load_level"]

BACKENDS = ("numpy", "native")
SIMD_LEVELS = ("baseline", "avx2", "avx512")   # lowest first


class FastlossWarning(UserWarning):
    """Warnings issued by fastloss (for example, a missing native extension)."""


def _import_level(level):
    return importlib.import_module(f"{__package__}._kernels_{level}")


# How long fastloss's idle OpenMP threads spin before they sleep. libgomp reads it
# once, from GOMP_SPINCOUNT when it is loaded (with the first kernel module); its own
# default, 300000 spins (8 ms here: a spin is a PAUSE, 27 ns on this AMD EPYC), keeps
# idle threads busy long after a call. In a loop that alternates NumPy matrix products
# (OpenBLAS, whose idle threads spin too) with fastloss calls, the two pools of
# spinning threads then fight over the cores: on 2 cores a 1M-element bce-with-logits
# after a 512x512 product took 3.0-4.3 ms (0.17-0.23 alone), the product 4.8-5.0 ms
# instead of 1.3 (bench/blas_interplay.py, medians, five runs). With 10000 spins (0.27
# ms): 0.24-1.26 ms and 1.3-1.65 ms there, back to back 0.17-0.24 ms; 1000 spins or
# OMP_WAIT_POLICY=passive fix the loop too but wake the threads for every call (0.35-
# 0.44 ms back to back). Set for libgomp only while the first kernel module loads
# (other libraries' OpenMP runtimes, loaded later, do not see it), and only when the
# user set neither GOMP_SPINCOUNT nor OMP_WAIT_POLICY; no effect when this process had
# loaded libgomp before.
OMP_SPIN_COUNT = "10000"


def _import_first_level(level):
    ours = "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
    if ours:
        os.environ["GOMP_SPINCOUNT"] = OMP_SPIN_COUNT
    try:
        return _import_level(level)
    finally:
        if ours:
            os.environ.pop("GOMP_SPINCOUNT", None)


def _compiled_levels():
    """The level modules present in the package (found, not imported: a module
    built for a level the CPU lacks may execute its instructions while loading)."""
    found = []
    for lv in SIMD_LEVELS:
        try:
            found += [lv] if importlib.util.find_spec(f"{__package__}._kernels_{lv}") else []
        except (ImportError, ValueError):  # blocked in sys.modules (None)
            pass
    return tuple(found)


def _check_level(name, source):
    if name not in SIMD_LEVELS:
        raise ValueError(f"{source} must be one of {SIMD_LEVELS}, got {name!r}")
    return name


def _usable_levels():
    return tuple(lv for lv in _compiled if lv in _cpu)


def load_level(level: str):
    """The kernel module of one level (for tools that time levels against each other).
    Raises ValueError for an unknown name, RuntimeError for a level not built or
    not supported by this CPU."""
    _check_level(level, "level")
    if level not in _usable_levels():
        raise RuntimeError(f"the {level!r} kernels cannot run here: built {_compiled}, "
                           f"this CPU runs {_cpu}")
    return _import_level(level)


def _choose_level(requested):
    """The best usable level not above ``requested`` (None: the best usable); warns
    when the requested level itself is not usable."""
    usable = _usable_levels()
    if requested is None:
        return usable[-1]
    below = [lv for lv in usable if SIMD_LEVELS.index(lv) <= SIMD_LEVELS.index(requested)]
    if requested not in usable:
        why = "was not built" if requested not in _compiled else "is not supported by this CPU"
        warnings.warn(f"fastloss: FASTLOSS_SIMD={requested}: that level {why} (built "
                      f"{_compiled}, this CPU runs {_cpu}); using {below[-1]}",
                      FastlossWarning, stacklevel=3)
    return below[-1]


kernels = None
native_error = None
simd_level = None       # the level of ``kernels``
_cpu = ()               # levels the CPU runs (asked from the baseline module)
_compiled = ()          # level modules present
_simd_env = os.environ.get("FASTLOSS_SIMD", "").strip().lower() or None
if _simd_env == "auto":
    _simd_env = None
if _simd_env is not None:
    _check_level(_simd_env, "FASTLOSS_SIMD")
try:  # the compiled extension is optional: fall back to NumPy, warn once
    _baseline = _import_first_level("baseline")
    _cpu, _compiled = tuple(_baseline.cpu_levels()), _compiled_levels()
    simd_level = _choose_level(_simd_env)
    try:
        kernels = _baseline if simd_level == "baseline" else _import_level(simd_level)
    except Exception as exc:  # a broken level module: the baseline still works
        warnings.warn(f"fastloss: the {simd_level} kernels failed to load "
                      f"({type(exc).__name__}: {exc}); using the baseline level",
                      FastlossWarning, stacklevel=2)
        kernels, simd_level = _baseline, "baseline"
except Exception as exc:  # ImportError, or a broken build
    kernels = None
    native_error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "fastloss: the compiled extension fastloss._kernels_baseline is not available "
        f"({native_error}); using the NumPy backend. Reinstall with a C compiler "
        "to get the native kernels.",
        FastlossWarning,
        stacklevel=2,
    )


def simd_info() -> dict:
    """The instruction-set levels: built, run by this CPU, asked for, in use."""
    return {"simd_compiled": list(_compiled), "simd_cpu": list(_cpu),
            "simd_usable": list(_usable_levels()), "simd_requested": _simd_env or "auto",
            "simd_level": simd_level}


def set_simd_level(level: str | None) -> None:
    """Use the kernels of ``level`` from now on (None: the best usable one). Raises
    like :func:`load_level`; the NumPy-only build raises RuntimeError."""
    global kernels, simd_level
    if kernels is None:
        raise RuntimeError(f"the native backend is not available: {native_error}")
    level = _usable_levels()[-1] if level is None else level
    kernels, simd_level = load_level(level), level


def native_available() -> bool:
    """True when the compiled Cython extension imported."""
    return kernels is not None


def _check_name(name, source):
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {BACKENDS}, got {name!r}")
    return name


_global = None
_env = os.environ.get("FASTLOSS_BACKEND")
if _env:
    _env = _check_name(_env.strip().lower(), "FASTLOSS_BACKEND")


def set_backend(name: str | None) -> None:
    """Set the default backend (``'numpy'``, ``'native'``, or None for automatic)."""
    global _global
    if name is not None:
        name = _check_name(name, "backend")
        if name == "native" and kernels is None:
            raise RuntimeError(f"the native backend is not available: {native_error}")
    _global = name


def get_backend() -> str:
    """The backend a call without ``backend=`` uses."""
    name = _global or _env
    if name is None:
        return "native" if kernels is not None else "numpy"
    if name == "native" and kernels is None:
        return "numpy"  # FASTLOSS_BACKEND=native on a build without the extension
    return name


def resolve(backend: str | None, native_ok: bool | None = None) -> str:
    """Resolve a ``backend=`` argument to ``'numpy'`` or ``'native'``.

    ``native_ok`` says whether the native piece for this call is present
    (default: the compiled extension). An explicit ``backend='native'`` that
    cannot run raises; the automatic choice falls back to NumPy.
    """
    ok = kernels is not None if native_ok is None else native_ok
    if backend is None:
        # the automatic choice is per piece: e.g. Numba optimizers stay native on a
        # build whose Cython extension is missing
        name = _global or _env or "native"
        return name if (name == "numpy" or ok) else "numpy"
    name = _check_name(backend, "backend")
    if name == "native" and not ok:
        raise RuntimeError(f"backend='native' requested but not available: {native_error}")
    return name

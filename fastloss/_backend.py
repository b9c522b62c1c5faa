"""Backend selection: ``numpy`` (the reference) or ``native`` (compiled kernels).

Order of precedence: the ``backend=`` argument of a call, then
:func:`set_backend`, then the ``FASTLOSS_BACKEND`` environment variable, then
``native`` when the compiled extension imported, else ``numpy``.
"""
from __future__ import annotations

import os
import warnings

__all__ = ["BACKENDS", "get_backend", "set_backend", "native_available", "resolve"]

BACKENDS = ("numpy", "native")


class FastlossWarning(UserWarning):
    """Warnings issued by fastloss (for example, a missing native extension)."""


try:  # the compiled extension is optional: fall back to NumPy, warn once
    from . import _kernels as kernels  # type: ignore[attr-defined]
    native_error = None
except Exception as exc:  # ImportError, or a broken build
    kernels = None
    native_error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "fastloss: the compiled extension fastloss._kernels is not available "
        f"({native_error}); using the NumPy backend. Reinstall with a C compiler "
        "to get the native kernels.",
        FastlossWarning,
        stacklevel=2,
    )


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

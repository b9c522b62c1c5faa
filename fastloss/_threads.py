"""Thread-count setting shared by the OpenMP kernels and Numba.

The default is ``OMP_NUM_THREADS`` when set, else the number of cores this
process may run on. Every native call reads :func:`get_num_threads`, so a
change takes effect on the next call.
"""
from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["get_num_threads", "set_num_threads", "num_threads"]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
            if n >= 1:
                return n
        except ValueError:
            pass
    return _cpu_count()


_num_threads = _default_threads()


def _check(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"num_threads must be a positive integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    return n


def get_num_threads() -> int:
    """Number of threads native kernels use (OpenMP and Numba)."""
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set the number of threads for all fastloss kernels (OpenMP and Numba)."""
    global _num_threads
    _num_threads = _check(n)


def numba_threads() -> int:
    """Apply the setting to Numba (capped by its pool size) and return it.

    Numba's count is per calling thread, so optimizers call this before each
    parallel kernel. Numba is only touched if it is already imported.
    """
    numba = sys.modules.get("numba")
    n = _num_threads
    if numba is not None:
        n = min(n, numba.config.NUMBA_NUM_THREADS)
        if numba.get_num_threads() != n:
            numba.set_num_threads(n)
    return n


@contextlib.contextmanager
def num_threads(n: int):
    """Context manager: run the enclosed kernels with ``n`` threads."""
    global _num_threads
    n = _check(n)
    old = _num_threads
    _num_threads = n
    try:
        yield n
    finally:
        _num_threads = old

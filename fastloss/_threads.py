"""Thread-count setting shared by the OpenMP kernels and Numba.

Two levels, as in threadpoolctl and ``torch.set_num_threads`` plus a context:

* :func:`set_num_threads` sets the process-wide default (initially
  ``OMP_NUM_THREADS`` when set, else the number of cores this process may run on);
* ``with num_threads(n):`` overrides it for the code running in the block, in
  this thread (or asyncio task: the override lives in a :mod:`contextvars`
  variable, so other threads and tasks keep seeing their own value). Blocks nest;
  the most recently entered block that is still open wins, also when blocks are
  left in another order than they were entered. ``set_num_threads`` inside a
  block changes the default, which applies again once the blocks are left.

Every native call reads :func:`get_num_threads`, so a change takes effect on
the next call.
"""
from __future__ import annotations

import contextvars
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
# the open num_threads() blocks of this context, innermost last: ((key, n), ...)
_blocks: contextvars.ContextVar[tuple] = contextvars.ContextVar("fastloss_num_threads",
                                                                 default=())


def _check(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"num_threads must be a positive integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    return n


def get_num_threads() -> int:
    """Number of threads native kernels use here (OpenMP and Numba): the innermost
    open :func:`num_threads` block of this thread/context, else the default."""
    blocks = _blocks.get()
    return blocks[-1][1] if blocks else _num_threads


def set_num_threads(n: int) -> None:
    """Set the process-wide default number of threads for all fastloss kernels
    (OpenMP and Numba); open :func:`num_threads` blocks keep overriding it."""
    global _num_threads
    _num_threads = _check(n)


def numba_threads() -> int:
    """Apply the setting to Numba (capped by its pool size) and return it.

    Numba's count is per calling thread, so optimizers call this before each
    parallel kernel. Numba is only touched if it is already imported.
    """
    numba = sys.modules.get("numba")
    n = get_num_threads()
    if numba is not None:
        n = min(n, numba.config.NUMBA_NUM_THREADS)
        if numba.get_num_threads() != n:
            numba.set_num_threads(n)
    return n


class num_threads:
    """Context manager: run the enclosed kernels with ``n`` threads, in this
    thread (or task) only; ``n`` is checked at once. See the module docstring."""

    def __init__(self, n: int):
        self.n = _check(n)
        self._keys = []

    def __enter__(self) -> int:
        key = object()
        self._keys.append(key)
        _blocks.set(_blocks.get() + ((key, self.n),))
        return self.n

    def __exit__(self, *exc) -> None:
        key = self._keys.pop()
        _blocks.set(tuple(b for b in _blocks.get() if b[0] is not key))

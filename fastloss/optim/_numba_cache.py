"""The Numba disk cache of the optimizer kernels, keyed by content stable across processes.

Numba's own cache (``cache=True``) keys an entry by the function's bytecode and the
pickle of its closure cells, and stamps the index with a hash of the function's own
source file. For the kernels here that fails twice:

* the multi-tensor runner (``_multi._runner``) closes over two dispatchers, and a
  pickled dispatcher holds a per-process uuid: the key differs in every process, so
  the runner never loads from disk and every process appends another entry;
* a kernel compiles in code from other files (``ld`` / ``st`` of ``_convert_numba``,
  the views of ``_half_numba``, the body of ``_kernels_numba`` inside a runner), which
  the stamp does not cover: after an edit there a stale kernel would be loaded.

``Cache`` (a ``numba.core.caching.FunctionCache``) keeps Numba's files and locator and
changes two things:

* index key = (signature, target (Numba's ``magic_tuple``), ``fingerprint``): the
  sha256 of ``describe(dispatcher)`` -- its options and function: module, qualified
  name, first line, bytecode, and each closure cell by value; a dispatcher in a cell
  is described the same way, recursively (never pickled);
* stamp = sha256 of the bytes of ``SOURCES`` (this package's files whose code the
  kernels compile) and of the function's own file: any edit empties the index, so a
  stale kernel is never loaded and the data files are reused (the count stays bounded).

``install(dispatcher)`` puts it in place of Numba's cache on a ``cache=True``
dispatcher and returns False, changing nothing, when Numba's internals are not the
expected ones (another Numba version) or a cell holds a value ``describe`` does not
know: the caller then compiles in memory.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import types

import numpy as np

__all__ = ["SOURCES", "describe", "install"]

SOURCES = ("_numba_cache.py", "_kernels_numba.py", "_convert_numba.py", "_half_numba.py",
           "_multi.py", "_reference.py")
_HERE = os.path.dirname(os.path.abspath(__file__))
_VALUES = (bool, int, float, str, bytes, type(None), np.generic, np.dtype)
_digests: dict = {}
_sources = None  # sha256 of SOURCES, computed once (a test overrides it)

try:
    from numba.core.caching import FunctionCache
    from numba.core.dispatcher import Dispatcher

    _SUPPORTED = (list(inspect.signature(FunctionCache._index_key).parameters)
                  == ["self", "sig", "codegen"])
except Exception:  # another Numba: no disk cache
    FunctionCache, _SUPPORTED = object, False


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path):
    d = _digests.get(path)
    if d is None:
        with open(path, "rb") as f:
            d = _digests[path] = _sha(f.read())
    return d


def _stamp(py_file):
    global _sources
    if _sources is None:
        _sources = _sha("".join(_file_digest(os.path.join(_HERE, s)) for s in SOURCES).encode())
    return _sha((_sources + _file_digest(py_file)).encode())


def describe(obj):
    """A description of ``obj`` (a value, tuple, function or dispatcher) made of strings
    and ints, equal in every process for equal content; TypeError for other objects."""
    if isinstance(obj, _VALUES):
        return (type(obj).__name__, repr(obj))
    if isinstance(obj, tuple):
        return tuple(describe(o) for o in obj)
    if _SUPPORTED and isinstance(obj, Dispatcher):
        opts = tuple(sorted((k, describe(v)) for k, v in obj.targetoptions.items()))
        return ("jit", opts, describe(obj.py_func))
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        cells = tuple(describe(c.cell_contents) for c in obj.__closure__ or ())
        return ("fn", obj.__module__, obj.__qualname__, code.co_firstlineno,
                _sha(code.co_code), cells)
    raise TypeError(f"no stable cache key for a {type(obj).__name__}")


class Cache(FunctionCache):
    """Numba's function cache with the index key and stamp described in the module
    docstring."""

    def __init__(self, dispatcher):
        self._fingerprint = _sha(repr(describe(dispatcher)).encode())
        super().__init__(dispatcher.py_func)
        stamp = _stamp(inspect.getfile(dispatcher.py_func))
        if not hasattr(self._cache_file, "_source_stamp"):
            raise TypeError("unexpected Numba cache internals")
        self._cache_file._source_stamp = stamp

    def _index_key(self, sig, codegen):
        return (sig, codegen.magic_tuple(), self._fingerprint)


def install(dispatcher) -> bool:
    """Replace the Numba cache of the ``cache=True`` ``dispatcher`` by ``Cache``; False
    (dispatcher unchanged) if that cannot be done safely."""
    if not _SUPPORTED or not isinstance(getattr(dispatcher, "_cache", None), FunctionCache):
        return False
    try:
        cache = Cache(dispatcher)
    except (TypeError, ValueError, AttributeError, OSError, RuntimeError):
        return False
    dispatcher._cache = cache
    return True

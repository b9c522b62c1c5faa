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

Symbol names. Numba names a compiled function ``module.qualname`` + an ABI tag
``v<uid>`` + its argument types, ``uid`` drawn from a per-process counter
(``FunctionIdentity._unique_ids``); a library loaded from disk keeps the names of the
process that compiled it. All libraries of a process share one MCJIT symbol table: a
strong definition loaded later replaces an earlier one, and a weak one (``linkonce_odr``
/ ``weak_odr``: a kernel linked into its caller, a parfor gufunc, named ``hash(parfor)``
+ uid) is dropped when the name is already there, its callers bound to the existing
one. The kernels are factory closures: every flag combination has the same qualname and
argument types, so two variants cached by two processes at the same counter value share
their names in a third process that loads both. A serial kernel called from Python
still runs its own code (its entry is looked up as its library loads), but a call bound
through a weak name ran the other variant's: a multi-tensor runner compiled afterwards
calling the body, a parallel kernel calling its gufunc (test_numba_cache.py
``test_kernels_cached_by_two_processes_*``: 10 of 44 calls wrong without the next
point). Hence:

* while a dispatcher with ``Cache`` compiles (Numba's ``numba:compile`` event), the
  counter runs from ``first_uid``: 2**24 times a number >= 1 made from the stamp, the
  fingerprint and the argument types. Every function created by that compile (kernel,
  wrappers, gufunc, helpers first compiled there) gets a uid only that content uses, so
  a name two processes share means the same content compiled from the same sources: the
  same code. A helper compiled before and reused keeps its name, which its qualname and
  argument types pin to one code (Numba's overloads). The process's counter is put back
  after; it stays below 2**24, so compiles in memory never meet these names.

``install(dispatcher)`` puts it in place of Numba's cache on a ``cache=True``
dispatcher and returns False, changing nothing, when Numba's internals are not the
expected ones (another Numba version) or a cell holds a value ``describe`` does not
know: the caller then compiles in memory.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
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
    from numba.core import event
    from numba.core.bytecode import FunctionIdentity
    from numba.core.caching import FunctionCache
    from numba.core.dispatcher import Dispatcher

    _SUPPORTED = (list(inspect.signature(FunctionCache._index_key).parameters)
                  == ["self", "sig", "codegen"]
                  and isinstance(vars(FunctionIdentity).get("_unique_ids"), itertools.count))
except Exception:  # another Numba: no disk cache
    FunctionCache, _SUPPORTED = object, False
    event = None


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

    def first_uid(self, args) -> int:
        """The first uid of the functions compiled for argument types ``args`` (see
        the module docstring)."""
        key = self._cache_file._source_stamp + self._fingerprint + repr(tuple(args))
        return (int(_sha(key.encode())[:12], 16) + 1) << 24


class _Uids(event.Listener if event else object):
    """On ``numba:compile`` of a dispatcher with ``Cache``: Numba's uid counter from
    ``Cache.first_uid`` until the compile ends (nested compiles: a stack)."""

    def __init__(self):
        self._saved = []

    def on_start(self, ev):
        cache = getattr(ev.data["dispatcher"], "_cache", None)
        saved = None
        if isinstance(cache, Cache):
            saved = FunctionIdentity._unique_ids
            FunctionIdentity._unique_ids = itertools.count(cache.first_uid(ev.data["args"]))
        self._saved.append(saved)

    def on_end(self, ev):
        saved = self._saved.pop()
        if saved is not None:
            FunctionIdentity._unique_ids = saved


_UIDS = _Uids()
if _SUPPORTED:
    event.register("numba:compile", _UIDS)


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

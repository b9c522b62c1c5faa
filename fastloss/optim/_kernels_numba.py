"""Numba kernels for the optimizer updates (the ``native`` backend).

Every kernel updates flat 1-D C-contiguous arrays in place: it reads param,
grad and each state buffer once and writes each once, with no temporaries.
All scalars arrive already cast to the param dtype (``np.float32(lr)``...)
and the bodies hold no Python float literals, so a float32 kernel computes in
float32 end to end (checked by the tests: native == NumPy reference bit for
bit). No fastmath: NaN and Inf propagate as in IEEE arithmetic.

Each kernel is a factory of its option flags (``adam(w_small, wd_on,
amsgrad)`` returns the loop): the flags are closure constants, so each
compiled variant has a branch-free loop body that LLVM vectorises (runtime
flags in the loop kept Adam scalar). ``kernel(name, flags, n)`` compiles a
variant on first use, ``parallel`` (``prange``, Numba's thread pool) for
``n >= PARALLEL_THRESHOLD`` else a ``serial`` twin (same source compiled
without ``parallel``: a thread-pool launch costs more than small work).

These per-array kernels are also the bodies of the multi-tensor launch
(``_multi``): its serial twin runs on ``numba.carray`` views of each tensor's
share of a part.

Storage: the bodies read ``ld(a, i)`` and write ``st(a, i, x)`` (``_convert_numba``),
so one body compiles for arrays stored in the compute dtype and for 16-bit storage
(bfloat16 / float16 bits widened to float32 and rounded back in registers), float32
state of float64 params, and float32 master weights with a 16-bit param (``_half_numba``
builds those views). Loops run over ``g`` (always a plain array).

Shared pieces of the element update:

* ``d = g * gscale``: ``gscale`` folds ``maximize`` (-1) and a fused
  gradient-clipping coefficient into one exact multiply;
* ``lerp(a, b, w, omw)``: ``a + w (b - a)`` for ``|w| < 0.5`` else
  ``b - (b - a)(1 - w)``, the two-branch form PyTorch uses for ``lerp_``.

Cache: every kernel is compiled by ``_njit``, Numba's ``cache=True`` with the key and
stamp of ``_numba_cache`` (stable across processes, invalidated by an edit of any kernel
source); the files go to ``__pycache__`` next to this file (or under ``NUMBA_CACHE_DIR``);
see ``fastloss.optim`` for details.
"""
from __future__ import annotations

import math
import types

import numba
from numba import prange

from . import _numba_cache
from ._convert_numba import ld, st

__all__ = ["kernel", "FACTORIES", "PARALLEL_THRESHOLD"]

_OPTS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)

# Arrays with fewer elements than this run the serial twin. Measured on the
# 2-core dev machine (float32 Adam, us per call, serial / parallel): 1000: 3.7 / 6.0,
# 4000: 6.7 / 7.4, 16000: 14.7 / 12.5, 32768: 30 / 18 -- the crossover is near
# 10k elements; bench/bench_optim.py (group "threshold") re-measures it.
PARALLEL_THRESHOLD = 1 << 14


@numba.njit(inline="always")
def _lerp(a, b, w, omw, w_small):
    if w_small:
        return a + w * (b - a)
    return b - (b - a) * omw


def sgd(wd_on, use_momentum, first, nesterov):
    def sgd(p, g, buf, lr, momentum, omdamp, wd, gscale):
        """d = g*gscale (+ wd p); buf = d on the first step else momentum buf + (1-dampening) d;
        d = d + momentum buf (nesterov) or buf; p -= lr d."""
        for i in prange(g.shape[0]):
            pi = ld(p, i)
            d = ld(g, i) * gscale
            if wd_on:
                d = d + wd * pi
            if use_momentum:
                if first:
                    b = d
                else:
                    b = ld(buf, i) * momentum + omdamp * d
                st(buf, i, b)
                if nesterov:
                    d = d + momentum * b
                else:
                    d = b
            st(p, i, pi - lr * d)
    return sgd


def adagrad(wd_on, keras):
    def adagrad(p, g, acc, clr, wd, eps, gscale):
        """d = g*gscale (+ wd p); acc += d^2; p -= clr d / (sqrt(acc) + eps)
        (keras: p -= clr d / sqrt(acc + eps))."""
        for i in prange(g.shape[0]):
            pi = ld(p, i)
            d = ld(g, i) * gscale
            if wd_on:
                d = d + wd * pi
            a = ld(acc, i) + d * d
            st(acc, i, a)
            if keras:
                den = math.sqrt(a + eps)
            else:
                den = math.sqrt(a) + eps
            st(p, i, pi - clr * (d / den))
    return adagrad


def rmsprop(w_small, wd_on, centered, use_momentum, keras):
    def rmsprop(p, g, sq, gavg, buf, lr, alpha, omalpha, eps, wd, momentum, gscale):
        """d = g*gscale (+ wd p); sq = alpha sq + (1-alpha) d^2;
        centered: gavg = lerp(gavg, d, 1-alpha), var = sq - gavg^2, else var = sq;
        den = sqrt(var) + eps (torch) or sqrt(var + eps) (keras);
        momentum: buf = momentum buf + d/den, p -= lr buf
        (keras: buf = momentum buf + lr d/den, p -= buf); else p -= lr d/den."""
        for i in prange(g.shape[0]):
            pi = ld(p, i)
            d = ld(g, i) * gscale
            if wd_on:
                d = d + wd * pi
            s = ld(sq, i) * alpha + omalpha * (d * d)
            st(sq, i, s)
            if centered:
                ga = _lerp(ld(gavg, i), d, omalpha, alpha, w_small)
                st(gavg, i, ga)
                s = s - ga * ga
            if keras:
                den = math.sqrt(s + eps)
            else:
                den = math.sqrt(s) + eps
            if use_momentum:
                if keras:
                    b = ld(buf, i) * momentum + lr * (d / den)
                    st(buf, i, b)
                    st(p, i, pi - b)
                else:
                    b = ld(buf, i) * momentum + d / den
                    st(buf, i, b)
                    st(p, i, pi - lr * b)
            else:
                st(p, i, pi - lr * (d / den))
    return rmsprop


def adam(w_small, wd_on, amsgrad):
    def adam(p, g, m, v, vmax, step_size, w1, omw1, beta2, ombeta2, eps_t, wd, decay_mul,
             gscale):
        """d = g*gscale (+ wd p, coupled); p *= decay_mul (decoupled: 1 - lr wd);
        m = lerp(m, d, 1-b1); v = b2 v + (1-b2) d^2; amsgrad: vmax = max(vmax, v), v -> vmax;
        p -= step_size m / (sqrt(v) + eps_t)  (one sqrt, one division per element)."""
        for i in prange(g.shape[0]):
            pi = ld(p, i)
            d = ld(g, i) * gscale
            if wd_on:
                d = d + wd * pi
            pi = pi * decay_mul
            mi = _lerp(ld(m, i), d, w1, omw1, w_small)
            vi = ld(v, i) * beta2 + ombeta2 * (d * d)
            st(m, i, mi)
            st(v, i, vi)
            if amsgrad:
                mx = ld(vmax, i)
                if vi > mx or vi != vi:  # NaN-propagating max, like torch.maximum
                    mx = vi
                st(vmax, i, mx)
                vi = mx
            st(p, i, pi - step_size * (mi / (math.sqrt(vi) + eps_t)))
    return adam


def adamax(w_small, wd_on, keras):
    def adamax(p, g, m, u, clr, w1, omw1, beta2, eps, wd, gscale):
        """d = g*gscale (+ wd p); m = lerp(m, d, 1-b1); u = max(b2 u, |d| + eps);
        p -= clr m/u (keras: u = max(b2 u, |d|); p -= clr m/(u + eps))."""
        for i in prange(g.shape[0]):
            pi = ld(p, i)
            d = ld(g, i) * gscale
            if wd_on:
                d = d + wd * pi
            mi = _lerp(ld(m, i), d, w1, omw1, w_small)
            st(m, i, mi)
            a = ld(u, i) * beta2
            if keras:
                b = abs(d)
            else:
                b = abs(d) + eps
            if b > a or b != b:
                a = b
            st(u, i, a)
            if keras:
                a = a + eps
            st(p, i, pi - clr * (mi / a))
    return adamax


def nadam(w_small, wd_on):
    def nadam(p, g, m, v, c_grad, c_avg, w1, omw1, beta2, ombeta2, bc2, eps, wd, decay_mul,
              gscale):
        """d = g*gscale (+ wd p); p *= decay_mul; m = lerp(m, d, 1-b1); v = b2 v + (1-b2) d^2;
        den = sqrt(v / bc2) + eps; p -= c_grad d/den; p -= c_avg m/den (as torch)."""
        for i in prange(g.shape[0]):
            pi = ld(p, i)
            d = ld(g, i) * gscale
            if wd_on:
                d = d + wd * pi
            pi = pi * decay_mul
            mi = _lerp(ld(m, i), d, w1, omw1, w_small)
            vi = ld(v, i) * beta2 + ombeta2 * (d * d)
            st(m, i, mi)
            st(v, i, vi)
            den = math.sqrt(vi / bc2) + eps
            pi = pi - c_grad * (d / den)
            st(p, i, pi - c_avg * (mi / den))
    return nadam


def lion(w1_small, w2_small):
    def lion(p, g, m, lr, w1, omw1, w2, omw2, decay_mul, gscale):
        """d = g*gscale; c = lerp(m, d, 1-b1); p = p*(1 - lr wd) - lr sign(c);
        m = lerp(m, d, 1-b2)."""
        for i in prange(g.shape[0]):
            d = ld(g, i) * gscale
            mi = ld(m, i)
            c = _lerp(mi, d, w1, omw1, w1_small)
            if c > 0:
                s = lr
            elif c < 0:
                s = -lr
            elif c == 0:
                s = lr - lr  # zero of the param dtype
            else:
                s = c  # NaN
            st(p, i, ld(p, i) * decay_mul - s)
            st(m, i, _lerp(mi, d, w2, omw2, w2_small))
    return lion


def scale():
    def scale(g, c):
        """g *= c (gradient clipping)."""
        for i in prange(g.shape[0]):
            g[i] = g[i] * c
    return scale


from ._reference import CHUNK  # fixed reduction chunk: results independent of thread count


def _sumsq_chunks(g, out):
    """out[k] = sum of g[i]^2 (in float64) over chunk k of CHUNK elements, in index order
    (``g`` in any storage ``ld`` reads: 16-bit grads are widened exactly first)."""
    n = g.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    for k in prange(nchunks):
        lo = k * CHUNK
        hi = min(lo + CHUNK, n)
        s = 0.0
        for i in range(lo, hi):
            x = numba.float64(ld(g, i))
            s += x * x
        out[k] = s


def _nonfinite_chunks(g, out):
    """out[k] = 1 if chunk k of g (any storage ``ld`` reads) holds a NaN or Inf, else 0."""
    n = g.shape[0]
    nchunks = (n + CHUNK - 1) // CHUNK
    for k in prange(nchunks):
        lo = k * CHUNK
        hi = min(lo + CHUNK, n)
        z = ld(g, lo) - ld(g, lo)
        for i in range(lo, hi):
            x = ld(g, i)
            z = z + (x - x)  # 0 for finite values, NaN once one is Inf/NaN
        out[k] = 0 if z == z else 1


def sumsq_chunks():
    return _sumsq_chunks


def nonfinite_chunks():
    return _nonfinite_chunks


FACTORIES = {f.__name__: f for f in (sgd, adagrad, rmsprop, adam, adamax, nadam, lion, scale,
                                      sumsq_chunks, nonfinite_chunks)}
_compiled: dict = {}


_no_cache_warned = False
_numba_njit = numba.njit  # (patched in a test)


def _njit_in_memory(fn, **opts):
    """``numba.njit`` without any disk cache: compiled in every process."""
    return _numba_njit(**dict(_OPTS, cache=False), **opts)(fn)


def _njit(fn, **opts):
    """``numba.njit(cache=True)`` with the disk cache of ``_numba_cache`` (a key stable
    across processes, invalidated by an edit of any kernel source). Compiled in memory
    instead, with one warning, when Numba finds no writable cache location (read-only
    install, no writable ``~/.cache`` and no ``NUMBA_CACHE_DIR``: Numba raises at
    decoration time) or its cache internals are not the expected ones."""
    global _no_cache_warned
    try:
        disp = _numba_njit(**_OPTS, **opts)(fn)
        if _numba_cache.install(disp):
            return disp
        why = f"Numba {numba.__version__}'s cache internals are not the expected ones"
    except RuntimeError as exc:
        if "no locator available" not in str(exc):
            raise
        why = ("no writable Numba cache directory (set NUMBA_CACHE_DIR to a writable "
               "directory to cache them)")
    if not _no_cache_warned:
        _no_cache_warned = True
        import warnings

        from .._backend import FastlossWarning
        warnings.warn(f"fastloss.optim: kernels are compiled in memory in every process: {why}.",
                      FastlossWarning, stacklevel=4)
    return _njit_in_memory(fn, **opts)


def _jit(fn, parallel, cache=True):
    """Compile ``fn``; the serial twin is a copy with its own qualified name so the two
    keep separate cache files (the key of ``_numba_cache`` holds the options and the
    closure's flag values, so each variant has its own entry). ``cache=False``: in
    memory only (the multi-tensor runners, see ``_multi.multi_kernel``)."""
    if not cache:
        return _njit_in_memory(fn, parallel=parallel)
    if parallel:
        return _njit(fn, parallel=True)
    clone = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                               fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__ + "_serial"
    clone.__doc__ = fn.__doc__
    return _njit(clone)


def kernel(name: str, flags: tuple, n: int):
    """The compiled kernel ``name`` specialised for ``flags`` (compile-time constants, so
    the loop body has no branches and vectorises), parallel for ``n`` >=
    PARALLEL_THRESHOLD elements, else the serial twin."""
    parallel = n >= PARALLEL_THRESHOLD
    key = (name, flags, parallel)
    k = _compiled.get(key)
    if k is None:
        k = _compiled[key] = _jit(FACTORIES[name](*flags), parallel)
    return k

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastloss native kernels (Cython + OpenMP).

One extension; each family of kernels lives in its own include file so the
pieces stay small:

* ``native/_vmath.pxi`` -- exp/log/log1p for float and double (C in
                          native/_vmath.h), written so GCC vectorises them
                          (AVX2/AVX-512), NaN/Inf preserved.
* ``native/elementwise.pxi`` -- the regression / binary losses, one fused pass;
                          their formulas come from ``_elementwise_spec.py``
                          through the generated ``native/elementwise_losses.h``.
* ``native/_softmax_rows.pxi``, ``_ce_steps.pxi``, ``_ce_schedule.pxi``,
  ``_cross_entropy.pxi``, ``_softmax.pxi`` -- softmax, log-softmax and the
  cross-entropy family: row primitives (C in native/_rowmax.h, _expsum.h),
  the cross-entropy steps, their schedule over threads, the public kernels.

All kernels take C-contiguous memoryviews that the Python layer has already
validated (shapes, dtypes, label ranges): bounds checks are off here.
"""
cimport cython
from cython.parallel cimport prange, parallel
from libc.math cimport fabs, sqrt, INFINITY, NAN
from libc.stdlib cimport malloc, free

import numpy as np
cimport numpy as cnp

cnp.import_array()

ctypedef fused floating:
    float
    double

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FL_HAVE_OPENMP 1
    #else
    #define FL_HAVE_OPENMP 0
    #endif
    #if defined(__AVX512F__)
    #define FL_SIMD "avx512"
    #elif defined(__AVX2__) && defined(__FMA__)
    #define FL_SIMD "avx2+fma"
    #elif defined(__AVX2__)
    #define FL_SIMD "avx2"
    #elif defined(__AVX__)
    #define FL_SIMD "avx"
    #elif defined(__SSE4_2__)
    #define FL_SIMD "sse4.2"
    #elif defined(__SSE2__)
    #define FL_SIMD "sse2"
    #elif defined(__ARM_NEON)
    #define FL_SIMD "neon"
    #else
    #define FL_SIMD "none"
    #endif
    """
    int FL_HAVE_OPENMP
    const char* FL_SIMD


def build_info():
    """What this build of the extension was compiled with."""
    return {
        "openmp": bool(FL_HAVE_OPENMP),
        "simd": FL_SIMD.decode("ascii"),
    }


include "native/_vmath.pxi"
include "native/elementwise.pxi"
include "native/_softmax_rows.pxi"
include "native/_ce_steps.pxi"
include "native/_ce_schedule.pxi"
include "native/_cross_entropy.pxi"
include "native/_softmax.pxi"

# fastloss native kernels (Cython + OpenMP): the source every level module
# includes. It is not compiled on its own: setup.py compiles it once per
# instruction-set level, through the stubs _kernels_baseline.pyx,
# _kernels_avx2.pyx and _kernels_avx512.pyx (same code, different -march);
# fastloss/_backend.py imports the best one the CPU runs.
#
# Each family of kernels lives in its own include file so the pieces stay small:
#
# * native/_vmath.pxi  -- exp/log/log1p for float and double (C in
#                         native/_vmath.h), written so GCC vectorises them
#                         (AVX2/AVX-512), NaN/Inf preserved.
# * native/elementwise.pxi -- the regression / binary losses, one fused pass;
#                         their formulas come from _elementwise_spec.py through
#                         the generated native/elementwise_losses.h;
#                         native/elementwise_half.pxi: the same on bfloat16 /
#                         float16 arrays, widened a sub-block at a time.
# * native/_softmax_rows.pxi, _ce_steps.pxi, _ce_schedule.pxi,
#   _ce_half.pxi, _cross_entropy.pxi, _softmax.pxi, _softmax_half.pxi --
#   softmax, log-softmax and the cross-entropy family: row primitives (C in
#   native/_rowmax.h, _expsum.h), the cross-entropy steps, their schedule over
#   threads (16-bit logits: in float32 tiles), the public kernels.
# * native/_half.pxi   -- bfloat16 / float16 <-> float32 (C in native/_half.h):
#                         16-bit inputs are widened a tile at a time.
# * native/_cpu.pxi    -- build_info() and what the running CPU supports.
# * native/_pyobjects.pxi -- identity checks over lists of Python objects (the
#                         optimizer step's replay of a param group).
#
# All kernels take C-contiguous memoryviews that the Python layer has already
# validated (shapes, dtypes, label ranges): bounds checks are off here.

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

include "native/_cpu.pxi"
include "native/_vmath.pxi"
include "native/_half.pxi"
include "native/elementwise.pxi"
include "native/elementwise_half.pxi"
include "native/_softmax_rows.pxi"
include "native/_ce_steps.pxi"
include "native/_ce_schedule.pxi"
include "native/_ce_half.pxi"
include "native/_cross_entropy.pxi"
include "native/_softmax.pxi"
include "native/_softmax_half.pxi"
include "native/_pyobjects.pxi"

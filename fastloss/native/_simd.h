/* fastloss row kernels: the instruction-set layer shared by _rowmax.h and _expsum.h.
 *
 * Which vector code a build gets is decided here, once, from the compiler's
 * target macros (-march=native, or the baseline ISA with FASTLOSS_PORTABLE=1):
 *
 *   __AVX512F__        intrinsics on __m512 / __m512d (16 floats, 8 doubles);
 *   __GNUC__           GCC vector extensions of 64 bytes (one zmm register, or
 *                      two ymm halves on AVX2: GCC splits them), written once for
 *                      every x86 level and for NEON;
 *   anything else      plain C loops.
 *
 * A later AVX2 variant adds its intrinsics beside the AVX-512 ones in each header
 * (an `#elif defined(__AVX2__)` branch) and reuses what is here: the 16-lane
 * layout of the sums (element i in lane i % 16) and their fixed-order fold, which
 * every variant must keep so results stay bitwise the same on every ISA path.
 *
 * These headers are included by the Cython extension after Python.h (they use
 * Py_ssize_t) and after _vmath.h (FL_INLINE, the exp pieces).
 */
#ifndef FASTLOSS_SIMD_H
#define FASTLOSS_SIMD_H
#include <math.h>
#include <string.h>
#include "_vmath.h"       /* FL_INLINE */

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__GNUC__)
/* 64-byte GCC vectors: 16 floats / 8 doubles, with same-width integer masks */
typedef float fl_sm_v16f __attribute__((vector_size(64)));
typedef int fl_sm_v16i __attribute__((vector_size(64)));
typedef double fl_sm_v8d __attribute__((vector_size(64)));
typedef long long fl_sm_v8l __attribute__((vector_size(64)));

/* lane-wise "x > a ? x : a" as integer bit selects (T: vector type, I: its
 * integer mask type); a NaN x keeps a */
#define FL_SM_SEL(T, I, x, a) ({ I m_ = (x) > (a); (T)(((I)(x) & m_) | ((I)(a) & ~m_)); })
#endif

/* The fixed-order pairwise fold of 16 partial sums (lane l + 8 into l, then
 * l + 4 into l, then (0 + 2) + (1 + 3)); _softmax_rows.pxi folds its
 * accumulators in the same order. a is overwritten. */
FL_INLINE double fl_sm_fold16(double *a)
{
    int l;
    for (l = 0; l < 8; l++) a[l] = a[l] + a[l + 8];
    for (l = 0; l < 4; l++) a[l] = a[l] + a[l + 4];
    return (a[0] + a[2]) + (a[1] + a[3]);
}

#endif

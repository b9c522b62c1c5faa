/* fastloss row kernels: the maximum of a row of logits (float and double).
 *
 *   fl_sm_maxf(z, n), fl_sm_max(z, n) = max_i z[i], -inf for n == 0.
 *
 * NaN is skipped (x > a is false for a NaN x); the exp sum that follows carries
 * it. The maximum does not depend on the order, so the result is the same for
 * any split of the row. Every variant keeps 4 independent accumulators of one
 * 64-byte vector each, so the compare-select chains overlap instead of waiting
 * on each other's latency (GCC's SLP does not pack scalar max chains itself).
 */
#ifndef FASTLOSS_ROWMAX_H
#define FASTLOSS_ROWMAX_H
#include "_simd.h"

#if defined(__GNUC__)
/* The GCC-vector body, for one vector type T (integer mask type I, scalar type
 * S, W lanes): 4 accumulators over blocks of 4 W, then single vectors, then the
 * last n - i < W values padded with -inf. */
#define FL_SM_MAX_BODY(T, I, S, W)                                              \
    T a0, a1, a2, a3, x0, x1, x2, x3; Py_ssize_t i = 0; int l; S r = -INFINITY;   \
    for (l = 0; l < W; l++) a0[l] = -INFINITY;                                  \
    a1 = a0; a2 = a0; a3 = a0;                                                  \
    for (; i + 4 * W <= n; i += 4 * W) {                                        \
        memcpy(&x0, z + i, 64); memcpy(&x1, z + i + W, 64);                     \
        memcpy(&x2, z + i + 2 * W, 64); memcpy(&x3, z + i + 3 * W, 64);         \
        a0 = FL_SM_SEL(T, I, x0, a0); a1 = FL_SM_SEL(T, I, x1, a1);             \
        a2 = FL_SM_SEL(T, I, x2, a2); a3 = FL_SM_SEL(T, I, x3, a3);             \
    }                                                                           \
    for (; i + W <= n; i += W) {                                                \
        memcpy(&x0, z + i, 64); a0 = FL_SM_SEL(T, I, x0, a0);                   \
    }                                                                           \
    a0 = FL_SM_SEL(T, I, a1, a0); a2 = FL_SM_SEL(T, I, a3, a2);                 \
    a0 = FL_SM_SEL(T, I, a2, a0);                                               \
    if (i < n) {  /* the last n - i < W values, padded with -inf */           \
        for (l = 0; l < W; l++) x0[l] = i + l < n ? z[i + l] : -INFINITY;        \
        a0 = FL_SM_SEL(T, I, x0, a0);                                           \
    }                                                                           \
    for (l = 0; l < W; l++) r = a0[l] > r ? a0[l] : r;                          \
    return r;
#endif

/* The plain C body (no GCC vectors), scalar type S. */
#define FL_SM_MAX_PLAIN(S)                                                      \
    S r = -INFINITY; Py_ssize_t i;                                              \
    for (i = 0; i < n; i++) r = z[i] > r ? z[i] : r;                            \
    return r;

/* ---- float ------------------------------------------------------------- */
#if defined(FL_SM_VEC)
/* AVX2 / AVX-512 (the fl_vf layer of _simd.h): vmaxps(x, a) is "x > a ? x : a"
 * in one instruction (a NaN x keeps a); the last n - i < 16 values through a
 * masked load padded with -inf */
static inline float fl_sm_maxf(const float *z, Py_ssize_t n) {
    fl_vf a0 = fl_vf_set1(-INFINITY), a1 = a0, a2 = a0, a3 = a0;
    Py_ssize_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = fl_vf_max(fl_vf_load(z + i), a0);
        a1 = fl_vf_max(fl_vf_load(z + i + 16), a1);
        a2 = fl_vf_max(fl_vf_load(z + i + 32), a2);
        a3 = fl_vf_max(fl_vf_load(z + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = fl_vf_max(fl_vf_load(z + i), a0);
    if (i < n) a0 = fl_vf_max(fl_vf_load_pad(z + i, fl_vmask_first(n - i), a1), a0);
    a0 = fl_vf_max(a1, a0);
    a2 = fl_vf_max(a3, a2);
    return fl_vf_reduce_max(fl_vf_max(a2, a0));
}
#elif defined(__GNUC__)
/* GCC vectors (SSE, NEON): 16 floats per accumulator */
static inline float fl_sm_maxf(const float *z, Py_ssize_t n) {
    FL_SM_MAX_BODY(fl_sm_v16f, fl_sm_v16i, float, 16)
}
#else
/* plain C */
static inline float fl_sm_maxf(const float *z, Py_ssize_t n) {
    FL_SM_MAX_PLAIN(float)
}
#endif

/* ---- double ------------------------------------------------------------ */
#if defined(__GNUC__)
/* GCC vectors on every level (AVX2 and AVX-512 included): 8 doubles per accumulator */
static inline double fl_sm_max(const double *z, Py_ssize_t n) {
    FL_SM_MAX_BODY(fl_sm_v8d, fl_sm_v8l, double, 8)
}
#else
/* plain C */
static inline double fl_sm_max(const double *z, Py_ssize_t n) {
    FL_SM_MAX_PLAIN(double)
}
#endif

#endif

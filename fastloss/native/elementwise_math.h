/* Helpers the element-wise loss bodies call (fastloss/_elementwise_spec.py).
 *
 * A body written for type T calls fl_<name>_T(...); the generated
 * elementwise_losses.h instantiates it with T = float (fl_<name>_f) and
 * T = double (fl_<name>_d). All are always inlined so the element loops
 * vectorise. Needs _vmath.h (FL_INLINE and the fl__* kernels) included first.
 */
#ifndef FASTLOSS_ELEMENTWISE_MATH_H
#define FASTLOSS_ELEMENTWISE_MATH_H

#include <float.h>
#include <math.h>
#include "_prefetch.h"

/* The loops of the exp/log losses stay functions of their own (inlined into the
 * block driver, bce-with-logits ran 4-5% slower in cache at avx2, measured) */
#if defined(__GNUC__) || defined(__clang__)
#define FL_EW_OUTLINE static __attribute__((noinline))
#else
#define FL_EW_OUTLINE static
#endif

/* |x| in x's own type (fabs is double: it would promote float bodies) */
FL_INLINE float fl_abs_f(float x) { return fabsf(x); }
FL_INLINE double fl_abs_d(double x) { return fabs(x); }

/* sign(d) with sign(0) = 0 and sign(NaN) = NaN */
FL_INLINE float fl_sgn_f(float d) { return d > 0 ? 1.0f : (d < 0 ? -1.0f : d * 0.0f); }
FL_INLINE double fl_sgn_d(double d) { return d > 0 ? 1.0 : (d < 0 ? -1.0 : d * 0.0); }

/* v, or x where x is NaN: a constant (e.g. a hessian) that still propagates NaN */
FL_INLINE float fl_nan_or_f(float x, float v) { return x != x ? x : v; }
FL_INLINE double fl_nan_or_d(double x, double v) { return x != x ? x : v; }

FL_INLINE float fl_sqrt_f(float x) { return sqrtf(x); }
FL_INLINE double fl_sqrt_d(double x) { return sqrt(x); }

/* _vmath.h kernels under one name per function */
FL_INLINE float fl_log_f(float x) { return fl__logf(x); }
FL_INLINE double fl_log_d(double x) { return fl__log(x); }
FL_INLINE float fl_log1p_f(float x) { return fl__log1pf(x); }
FL_INLINE double fl_log1p_d(double x) { return fl__log1p(x); }
FL_INLINE float fl_expm1_f(float x) { return fl__expm1f(x); }
FL_INLINE double fl_expm1_d(double x) { return fl__expm1(x); }

/* e^x for x <= 0 (float: a shorter kernel for that range) */
FL_INLINE float fl_exp_nonpos_f(float x) { return fl__expnonpos_f(x); }
FL_INLINE double fl_exp_nonpos_d(double x) { return fl__exp(x); }

/* e^x for x in [-86, 0] (no NaN): the same value as fl_exp_nonpos_T, fewer
 * operations (float: no clamp, 2^k added to the exponent; double: the same kernel).
 * Only inside a chunk that fl_ew_tame_T accepted. */
FL_INLINE float fl_exp_tame_f(float x) { return fl__exp_tame_f(x); }
FL_INLINE double fl_exp_tame_d(double x) { return fl__exp(x); }

/* The tame scan (Loss.tame in _elementwise_spec.py): a chunk may run the loss's tame
 * body when the max of the magnitude bits of its p (a NaN's exceed every number's)
 * is at most the bound's. double has no cheaper kernel to switch to:
 * FL_EW_TAME_PASS_d is 0, its chunks are never tame. */
enum { FL_EW_TAME_PASS_f = 1, FL_EW_TAME_PASS_d = 0 };
FL_INLINE uint32_t fl_ew_mag_f(float x) { return fl_f2u(x) & 0x7fffffffu; }
FL_INLINE uint32_t fl_ew_mag_d(double x) { (void)x; return 0; }
FL_INLINE uint32_t fl_ew_mag_bound_f(float b) { return fl_f2u(b); }
FL_INLINE uint32_t fl_ew_mag_bound_d(double b) { (void)b; return 0; }

/* 1 when every |p[i]| <= bound (so no NaN, no Inf) for i < n */
FL_INLINE int fl_ew_tame_f(const float *p, Py_ssize_t n, float bound)
{
    uint32_t m = 0;
    Py_ssize_t i;
    for (i = 0; i < n; i++)
        m = fl_ew_mag_f(p[i]) > m ? fl_ew_mag_f(p[i]) : m;
    return m <= fl_ew_mag_bound_f(bound);
}
FL_INLINE int fl_ew_tame_d(const double *p, Py_ssize_t n, double bound)
{
    (void)p; (void)n; (void)bound;
    return FL_EW_TAME_PASS_d;
}

/* With a prepass too (Loss.prepass), the scan runs inside the tame prepass's loop:
 * each element's tame prepass value and the max of the magnitude bits at once (the
 * chunk's first touch of p then overlaps the arithmetic); a chunk found not tame
 * runs the guarded prepass after, which overwrites every value, so the bits are
 * those of the separate scan. The tame kernels must not trap on any input (they
 * give garbage there, never read or write beyond the element); double's loops
 * (FL_EW_TAME_PASS_d) take the guarded pass at once. */

/* Before a chunk [i0, i1) of a loss marked prefetch: prefetch p, t and aux (when
 * not NULL) over [i0, i1) moved FL_EW_AHEAD_BYTES on, the part below `ahead` (the
 * elements the caller says its inputs hold; 0: nothing). A prefetch changes no
 * value. On a host whose memory is shared with other work the hardware prefetcher
 * (which also stops at each 4 KiB page) leaves these compute-bound loops waiting
 * for their inputs; distance and gain measured in native/elementwise.pxi
 * (EW_AHEAD_MIN). */
#define FL_EW_AHEAD_BYTES 2048
FL_INLINE void fl_ew_ahead(const char *p, const char *t, const char *aux, Py_ssize_t size,
                           Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t ahead)
{
    const Py_ssize_t d = FL_EW_AHEAD_BYTES / size;
    Py_ssize_t a = i0 + d, b = i1 + d < ahead ? i1 + d : ahead;
    if (a >= b)
        return;
    fl_prefetch_span(p + a * size, (b - a) * size);
    fl_prefetch_span(t + a * size, (b - a) * size);
    if (aux != NULL)
        fl_prefetch_span(aux + a * size, (b - a) * size);
}
FL_INLINE void fl_ew_ahead_f(const float *p, const float *t, const float *aux,
                             Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t ahead)
{
    fl_ew_ahead((const char *)p, (const char *)t, (const char *)aux, sizeof(float), i0, i1, ahead);
}
FL_INLINE void fl_ew_ahead_d(const double *p, const double *t, const double *aux,
                             Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t ahead)
{
    fl_ew_ahead((const char *)p, (const char *)t, (const char *)aux, sizeof(double), i0, i1, ahead);
}

/* a b + c with one rounding where the CPU has FMA (a body's explicit contraction:
 * GCC may otherwise fuse either product of a b + d e) */
FL_INLINE float fl_fma_f(float a, float b, float c) { return FL_FMAF(a, b, c); }
FL_INLINE double fl_fma_d(double a, double b, double c) { return FL_FMA(a, b, c); }

/* log1p(e) for e = exp(-|x|) in [0, 1], r = 1 / (1 + e) (the softplus term of the
 * logistic losses). float: fl__log1p01_f (no reduction); double: reusing r. */
FL_INLINE float fl_log1p_e_f(float e, float r) { (void)r; return fl__log1p01_f(e); }
FL_INLINE double fl_log1p_e_d(double e, double r) { return fl__log1p_unit(e, r); }

/* x where p's sign bit is set (p < 0, but also -0 and a NaN with the sign), else y.
 * The sign bit itself is the mask: an arithmetic shift and three logic operations,
 * which every vector port runs, instead of a compare and a blend, which need the
 * ports the FMAs keep busy (bce-with-logits at avx2: 2-3% per element in cache).
 * Bodies use it where -0 takes either side to the same value. */
FL_INLINE float fl_if_neg_f(float p, float x, float y)
{
    uint32_t m = (uint32_t)((int32_t)fl_f2u(p) >> 31);
    return fl_u2f((m & fl_f2u(x)) | (~m & fl_f2u(y)));
}
FL_INLINE double fl_if_neg_d(double p, double x, double y)
{
    uint64_t m = (uint64_t)((int64_t)fl_d2u(p) >> 63);
    return fl_u2d((m & fl_d2u(x)) | (~m & fl_d2u(y)));
}

/* s / (1 + e) for r = 1 / (1 + e) (a gradient's scale s folded into the logistic
 * losses' quotient). float: its own division (one rounding; the divider is idle
 * there, and r is dead when only the gradient is stored); double: s r (r is live
 * for log1p there; a second division would cost more than the product). */
FL_INLINE float fl_scaled_quot_e_f(float s, float e, float r) { (void)r; return s / (1.0f + e); }
FL_INLINE double fl_scaled_quot_e_d(double s, double e, double r) { (void)e; return s * r; }

/* [eps, 1 - eps] in the dtype, kept strictly inside (0, 1) (clip_bounds() in NumPy) */
FL_INLINE float fl_clip_lo_f(float eps) { return eps < FLT_MIN ? FLT_MIN : eps; }
FL_INLINE double fl_clip_lo_d(double eps) { return eps < DBL_MIN ? DBL_MIN : eps; }
FL_INLINE float fl_clip_hi_f(float eps)
{
    float hi = 1.0f - eps, top = 1.0f - FLT_EPSILON / 2;
    return hi < top ? hi : top;
}
FL_INLINE double fl_clip_hi_d(double eps)
{
    double hi = 1.0 - eps, top = 1.0 - DBL_EPSILON / 2;
    return hi < top ? hi : top;
}

#endif

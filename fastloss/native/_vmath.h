/* fastloss vector math: exp, expm1, log, log1p, tanh, sigmoid in float and double.
 *
 * Branch-free, table-free, plain C written so that GCC -O3 auto-vectorises a loop
 * that calls these functions (8 float / 4 double lanes with AVX2, 16 / 8 with
 * AVX-512) WITHOUT -ffast-math: -fno-math-errno -fno-trapping-math suffice.
 * Special values follow C99 Annex F: NaN in -> NaN out, +-Inf, overflow -> +Inf,
 * gradual underflow (subnormal results and inputs are exact to the last bit we
 * can give), log(0) = -Inf, log(x < 0) = NaN, log1p(-1) = -Inf, log1p(x < -1) = NaN,
 * expm1/log1p/tanh(-0) = -0.
 *
 * Techniques (our own code; coefficients from tools/vmath_coeffs.py):
 *  - exp/expm1: k = round(x / ln2) with the magic-number trick (x*log2e + S) - S,
 *    S = 1.5 * 2^(mantissa bits): the addition rounds to an integer and k is read
 *    from the low bits of the sum. r = x - k ln2 (Cody-Waite hi/lo split), e^r - 1 =
 *    r + r^2 P(r) (Chebyshev fit), scale 2^k in two exact steps 2^k1 * 2^k2 so that
 *    overflow gives Inf and underflow rounds once into the subnormals.
 *  - log/log1p: x = m 2^k with m in [sqrt(1/2), sqrt(2)) by integer ops on the bits,
 *    f = m - 1 (exact), s = f / (2 + f), log1p(f) = f - f^2/2 + s (f^2/2 + z H(z)),
 *    z = s^2. log1p adds the exact rounding error of u = 1 + x as (err / u).
 *  - tanh x = sign(x) m / (m + 2), m = expm1(2|x|); sigmoid = 1/(1+e) or e/(1+e),
 *    e = exp(-|x|) (no overflow, tiny results kept).
 *  - Special cases are selects (ternaries) after the main path: every lane runs the
 *    same instructions.
 *  - Accuracy (dense sweeps + random bit patterns, tests/test_vmath.py): float32
 *    <= 2.6 ulp (exp 1.1, expm1 1.6, log 0.8, log1p 0.8, tanh 2.3, sigmoid 2.6),
 *    float64 <= 2.7 ulp; relative error <= 3e-7 / 1e-15 for normal results.
 *  - Integer parts use only ops AVX2 has (no 64-bit arithmetic shift, no
 *    int64 <-> double conversion: those are done with magic-number bit tricks).
 *
 * WARNING: these functions rely on IEEE rounding of each operation. -ffast-math or
 * -fassociative-math rewrites (a + S) - S into a and (x - (u - 1)) into 0 and
 * silently destroys the results (tests/test_vmath.py checks this).
 */
#ifndef FASTLOSS_VMATH_H
#define FASTLOSS_VMATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Refuse the flags that break these functions (define FL_VMATH_ALLOW_UNSAFE_MATH
 * only to demonstrate the breakage in a test build). */
#if !defined(FL_VMATH_ALLOW_UNSAFE_MATH) && (defined(__FAST_MATH__) || \
    defined(__ASSOCIATIVE_MATH__) || (defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__))
#error "fastloss/_vmath.h must not be compiled with -ffast-math, -fassociative-math or -ffinite-math-only"
#endif

/* Internal pieces are force-inlined: a call left in a loop stops GCC from vectorising
 * it. The public one-argument functions (fl_expf, ... at the end of this file) are
 * plain `static inline` and also declared `omp declare simd` (with -fopenmp): where
 * GCC's inliner gives up on a big caller, the vectoriser calls their SIMD clones
 * (_ZGVdN8v_fl_expf: AVX2, 8 lanes) instead of leaving the loop scalar. */
#if defined(__GNUC__) || defined(__clang__)
#define FL_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define FL_INLINE static __forceinline
#else
#define FL_INLINE static inline
#endif

#if defined(_OPENMP) && !defined(_MSC_VER)
#define FL_VECFN _Pragma("omp declare simd notinbranch") static inline
#else
#define FL_VECFN static inline
#endif

#if defined(__FMA__) || defined(__FP_FAST_FMA) || defined(__aarch64__)
#define FL_FMAF(a, b, c) fmaf((a), (b), (c))
#define FL_FMA(a, b, c) fma((a), (b), (c))
#else
#define FL_FMAF(a, b, c) ((a) * (b) + (c))
#define FL_FMA(a, b, c) ((a) * (b) + (c))
#endif

/* ---- bit casts (memcpy: no aliasing UB; compiles to a register move) ---- */
FL_INLINE uint32_t fl_f2u(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
FL_INLINE float fl_u2f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
FL_INLINE uint64_t fl_d2u(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
FL_INLINE double fl_u2d(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }

/* ======================================================================== */
/* float                                                                    */
/* ======================================================================== */
#define FL_SHIFTF 12582912.0f            /* 1.5 * 2^23: x + S rounds x to an integer */
#define FL_LOG2EF 1.44269504088896341f
#define FL_LN2HIF 0.693145751953125f     /* ln 2 to 16 bits: k * hi exact for |k| < 2^8 */
#define FL_LN2LOF 1.42860682030941723212e-6f

/* e^r - 1 = r + r^2 P(r) for |r| <= ln2/2, rel. error 2.6e-8 */
FL_INLINE float fl__expm1_core_f(float r)
{
    float p = FL_FMAF(0.0013926184037700295f, r, 0.008363178931176662f);
    p = FL_FMAF(p, r, 0.041666556149721146f);
    p = FL_FMAF(p, r, 0.16666576266288757f);
    p = FL_FMAF(p, r, 0.5f);
    return FL_FMAF(r * r, p, r);
}

/* k = round(x / ln2) (float, integral) and the reduced argument r = x - k ln2.
 * Returns x*log2e + S; its bit pattern minus that of S is k. */
FL_INLINE float fl__reduce_f(float x, float *k, float *r)
{
    float kf = FL_FMAF(x, FL_LOG2EF, FL_SHIFTF);
    float kk = kf - FL_SHIFTF;           /* exact: the rounding trick */
    float rr = FL_FMAF(-kk, FL_LN2HIF, x);
    *r = FL_FMAF(-kk, FL_LN2LOF, rr);
    *k = kk;
    return kf;
}

FL_INLINE float fl__expf(float x)
{
    /* clamp so k fits [-150, 128]; NaN passes through (comparisons are false) */
    float xc = x > 89.0f ? 89.0f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    float k, r;
    float kf = fl__reduce_f(xc, &k, &r);
    float p = 1.0f + fl__expm1_core_f(r);
    /* 2^k = 2^k1 * 2^k2, k1 = floor(k/2), k2 = k - k1, both normal: e = k + 256 */
    uint32_t e = fl_f2u(kf) - fl_f2u(FL_SHIFTF) + 256u;
    uint32_t h = e >> 1;                 /* k1 + 128 */
    float s1 = fl_u2f((h - 1u) << 23);   /* 2^k1 */
    float s2 = fl_u2f((e - h - 1u) << 23); /* 2^k2 */
    return (p * s1) * s2;
}

FL_INLINE float fl__expm1f(float x)
{
    float xc = x > 89.0f ? 89.0f : x;
    xc = xc < -25.0f ? -25.0f : xc;      /* expm1(-25) rounds to -1 */
    float k, r;
    fl__reduce_f(xc, &k, &r);
    float q = fl__expm1_core_f(r);
    /* expm1 = 2^k q + (2^k - 1); 2^128 does not fit: t = 2^min(k,127), v = 2^(k-min) */
    float kc = k > 127.0f ? 127.0f : k;
    float t = fl_u2f((fl_f2u(kc + FL_SHIFTF) - fl_f2u(FL_SHIFTF) + 127u) << 23);
    float v = 1.0f + (k - kc);
    float res = FL_FMAF(t, q, t - 1.0f) * v;
    return x == 0.0f ? x : res;          /* keeps -0 */
}

/* log(u) + c for a positive normal float u = m 2^k, m in [sqrt(1/2), sqrt(2));
 * c is a small correction (log1p passes err / u, err the rounding error of 1 + x) */
FL_INLINE float fl__log_core_f(float u, float kadj, float c)
{
    /* t = bits(u) + (1 - sqrt(1/2)) in exponent units: t >> 23 = k + 127 */
    uint32_t t = fl_f2u(u) + (0x3f800000u - 0x3f3504f3u);
    float m = fl_u2f((t & 0x007fffffu) + 0x3f3504f3u);           /* [sqrt.5, sqrt2) */
    float k = fl_u2f(0x4b000000u | (t >> 23)) - (8388608.0f + 127.0f) + kadj;
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float R = z * FL_FMAF(FL_FMAF(0.2958005368709564f, z, 0.3998877704143524f), z,
                          0.6666668653488159f);
    float hfsq = 0.5f * f * f;
    float lo = FL_FMAF(s, hfsq + R, FL_FMAF(k, FL_LN2LOF, c));
    return FL_FMAF(k, FL_LN2HIF, f - (hfsq - lo));
}

FL_INLINE float fl__logf(float x)
{
    float u = x < 1.17549435e-38f ? x * 8388608.0f : x;   /* subnormal: * 2^23 */
    float res = fl__log_core_f(u, x < 1.17549435e-38f ? -23.0f : 0.0f, 0.0f);
    /* x < 0 -> NaN, x == 0 -> -Inf, +Inf and NaN -> x */
    float special = x < 0.0f ? NAN : (x == 0.0f ? -INFINITY : x);
    return (x > 0.0f && x < INFINITY) ? res : special;
}

FL_INLINE float fl__log1pf(float x)
{
    float u = 1.0f + x;
    /* exact rounding error of u = 1 + x (Fast2Sum: larger operand first) */
    float c = (x < 1.0f) ? x - (u - 1.0f) : 1.0f - (u - x);
    float res = fl__log_core_f(u, 0.0f, c / u);
    float special = x < -1.0f ? NAN : (x == -1.0f ? -INFINITY : x);
    res = (x > -1.0f && x < INFINITY) ? res : special;
    return x == 0.0f ? x : res;          /* keeps -0 */
}

/* e^x for x <= 0, -inf or NaN (the exp(-|x|) of the logistic losses): fl__expf
 * without the overflow side. Below -104 the result rounds to 0; gradual underflow
 * is kept by scaling p by 2^(k + 24) (normal for k >= -150) and then by 2^-24,
 * which rounds once into the subnormals. NaN passes through p. */
FL_INLINE float fl__expnonpos_f(float x)
{
    float xc = -104.0f > x ? -104.0f : x;   /* maxps(-104, x) keeps a NaN x */
    float k, r;
    float kf = fl__reduce_f(xc, &k, &r);
    float p = 1.0f + fl__expm1_core_f(r);
    float s = fl_u2f((fl_f2u(kf) - fl_f2u(FL_SHIFTF) + (127u + 24u)) << 23);
    return (p * s) * 5.9604644775390625e-8f;     /* 2^-24 */
}

/* e^x for x in [-86, 0] only (no NaN, no -inf): fl__expnonpos_f without its guards.
 * The same k and p = e^r; here 2^k p is a normal float (k >= -124, p >= 0.7), so
 * fl__expnonpos_f's two exact products give p 2^k exactly, and adding k to p's
 * exponent bits gives the same bits without the clamp and the two multiplies.
 * bits(kf) = bits(FL_SHIFTF) + k, and bits(FL_SHIFTF) << 23 vanishes mod 2^32:
 * bits(kf) << 23 is k << 23. Callers check the range first (fl_ew_tame_f). */
FL_INLINE float fl__exp_tame_f(float x)
{
    float k, r;
    float kf = fl__reduce_f(x, &k, &r);
    float p = 1.0f + fl__expm1_core_f(r);
    return fl_u2f(fl_f2u(p) + (fl_f2u(kf) << 23));
}

/* log1p(e) for e in [0, 1] (or NaN), the softplus term of bce-with-logits:
 * 2 atanh(s), s = e / (2 + e), z = s^2 in [0, 1/9]; 2 atanh(s) = 2 s + s z H(z)
 * and 2 s = e - e s, so log1p(e) = e + s (z H(z) - e): e itself plus a correction
 * of at most a third of it, whose rounding errors count a third. H of degree 3
 * (Chebyshev fit on [0, 1/9], tools/vmath_coeffs.py: 1.6e-8 relative). Five FMAs,
 * a product and a division: three FMA-port operations fewer than the degree-9
 * polynomial e Q(e) it replaces, and more accurate (tests/test_vmath.py); the
 * loss is bound by the FMA ports, not the divider (-11% per element at AVX2). */
FL_INLINE float fl__log1p01_f(float e)
{
    float s = e / (2.0f + e);
    float z = s * s;
    float h = FL_FMAF(0.2685202658176422f, z, 0.28236547112464905f);
    h = FL_FMAF(h, z, 0.40007564425468445f);
    h = FL_FMAF(h, z, 0.6666663885116577f);
    return FL_FMAF(s, FL_FMAF(z, h, -e), e);
}

/* tanh x = sign(x) m / (m + 2), m = expm1(2|x|); |x| >= 9.1 rounds to +-1 */
FL_INLINE float fl__tanhf(float x)
{
    float a = fabsf(x);
    a = a > 9.1f ? 9.1f : a;
    float m = fl__expm1f(a + a);
    return copysignf(m / (m + 2.0f), x);
}

/* 1 / (1 + e^-x), as e / (1 + e) with e = e^x for x < 0 (no overflow, keeps
 * tiny results) */
FL_INLINE float fl__sigmoidf(float x)
{
    float e = fl__expf(-fabsf(x));
    float r = 1.0f / (1.0f + e);
    return x < 0.0f ? e * r : r;
}

/* ======================================================================== */
/* double                                                                   */
/* ======================================================================== */
#define FL_SHIFT 6755399441055744.0      /* 1.5 * 2^52 */
#define FL_LOG2E 1.4426950408889634074
#define FL_LN2HI 6.93147180369123816490e-01   /* ln 2 to 32 bits */
#define FL_LN2LO 1.90821492927058770002e-10

FL_INLINE double fl__expm1_core(double r)
{
    double p = FL_FMA(2.0914686968086876e-09, r, 2.5105217004720745e-08);
    p = FL_FMA(p, r, 2.75572736431103e-07);
    p = FL_FMA(p, r, 2.7557255400206422e-06);
    p = FL_FMA(p, r, 2.4801587325547743e-05);
    p = FL_FMA(p, r, 0.00019841269874820627);
    p = FL_FMA(p, r, 0.0013888888888883748);
    p = FL_FMA(p, r, 0.008333333333326136);
    p = FL_FMA(p, r, 0.04166666666666667);
    p = FL_FMA(p, r, 0.1666666666666667);
    p = FL_FMA(p, r, 0.5);
    return FL_FMA(r * r, p, r);
}

FL_INLINE double fl__reduce(double x, double *k, double *r)
{
    double kf = FL_FMA(x, FL_LOG2E, FL_SHIFT);
    double kk = kf - FL_SHIFT;           /* exact: the rounding trick */
    double rr = FL_FMA(-kk, FL_LN2HI, x);
    *r = FL_FMA(-kk, FL_LN2LO, rr);
    *k = kk;
    return kf;
}

FL_INLINE double fl__exp(double x)
{
    double xc = x > 710.0 ? 710.0 : x;
    xc = xc < -746.0 ? -746.0 : xc;
    double k, r;
    double kf = fl__reduce(xc, &k, &r);
    double p = 1.0 + fl__expm1_core(r);
    uint64_t e = fl_d2u(kf) - fl_d2u(FL_SHIFT) + 2048u;   /* k + 2048 > 0 */
    uint64_t h = e >> 1;                                  /* k1 + 1024 */
    double s1 = fl_u2d((h - 1u) << 52);
    double s2 = fl_u2d((e - h - 1u) << 52);
    return (p * s1) * s2;
}

FL_INLINE double fl__expm1(double x)
{
    double xc = x > 710.0 ? 710.0 : x;
    xc = xc < -45.0 ? -45.0 : xc;        /* expm1(-45) rounds to -1 */
    double k, r;
    fl__reduce(xc, &k, &r);
    double q = fl__expm1_core(r);
    double kc = k > 1023.0 ? 1023.0 : k;
    double t = fl_u2d((fl_d2u(kc + FL_SHIFT) - fl_d2u(FL_SHIFT) + 1023u) << 52);
    double v = 1.0 + (k - kc);
    double res = FL_FMA(t, q, t - 1.0) * v;
    return x == 0.0 ? x : res;
}

FL_INLINE double fl__log_core(double u, double kadj, double c)
{
    uint64_t t = fl_d2u(u) + (0x3ff0000000000000ull - 0x3fe6a09e667f3bcdull);
    double m = fl_u2d((t & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull);
    /* k + 1023 = t >> 52, converted to double without cvtqq2pd (absent on AVX2) */
    double k = fl_u2d(0x4330000000000000ull | (t >> 52)) - (4503599627370496.0 + 1023.0) + kadj;
    double f = m - 1.0;
    double s = f / (2.0 + f);
    double z = s * s;
    double R = FL_FMA(0.14616585424888623, z, 0.15331710618210773);
    R = FL_FMA(R, z, 0.18182889455674947);
    R = FL_FMA(R, z, 0.22222211130259878);
    R = FL_FMA(R, z, 0.2857142862600327);
    R = FL_FMA(R, z, 0.39999999999899444);
    R = FL_FMA(R, z, 0.666666666666667);
    R = R * z;
    double hfsq = 0.5 * f * f;
    double lo = FL_FMA(s, hfsq + R, FL_FMA(k, FL_LN2LO, c));
    return FL_FMA(k, FL_LN2HI, f - (hfsq - lo));
}

FL_INLINE double fl__log(double x)
{
    double u = x < 2.2250738585072014e-308 ? x * 4503599627370496.0 : x;   /* * 2^52 */
    double res = fl__log_core(u, x < 2.2250738585072014e-308 ? -52.0 : 0.0, 0.0);
    double special = x < 0.0 ? (double)NAN : (x == 0.0 ? -(double)INFINITY : x);
    return (x > 0.0 && x < (double)INFINITY) ? res : special;
}

FL_INLINE double fl__log1p(double x)
{
    double u = 1.0 + x;
    double c = (x < 1.0) ? x - (u - 1.0) : 1.0 - (u - x);
    double res = fl__log_core(u, 0.0, c / u);
    double special = x < -1.0 ? (double)NAN : (x == -1.0 ? -(double)INFINITY : x);
    res = (x > -1.0 && x < (double)INFINITY) ? res : special;
    return x == 0.0 ? x : res;
}

/* log1p(e) for e in [0, 1] (or NaN) given r = 1 / (1 + e), as the logistic losses
 * have it: the softplus term log1p(exp(-|x|)) of bce-with-logits. u = 1 + e is in
 * [1, 2] (normal), its rounding error c = e - (u - 1) is exact (Fast2Sum, 1 >= e)
 * and c / u = c r: one division fewer than fl__log1pf and no special-value
 * selects. NaN in -> NaN out (through u, and the callers' other terms). The float32
 * loss uses fl__log1p01_f instead (no reduction). */
FL_INLINE double fl__log1p_unit(double e, double r)
{
    double u = 1.0 + e;
    double c = e - (u - 1.0);
    return fl__log_core(u, 0.0, c * r);
}

FL_INLINE double fl__tanh(double x)
{
    double a = fabs(x);
    a = a > 19.5 ? 19.5 : a;
    double m = fl__expm1(a + a);
    return copysign(m / (m + 2.0), x);
}

FL_INLINE double fl__sigmoid(double x)
{
    double e = fl__exp(-fabs(x));
    double r = 1.0 / (1.0 + e);
    return x < 0.0 ? e * r : r;
}

/* ======================================================================== */
/* public entry points                                                      */
/* ======================================================================== */
FL_VECFN float fl_expf(float x) { return fl__expf(x); }
FL_VECFN float fl_expm1f(float x) { return fl__expm1f(x); }
FL_VECFN float fl_logf(float x) { return fl__logf(x); }
FL_VECFN float fl_log1pf(float x) { return fl__log1pf(x); }
FL_VECFN float fl_tanhf(float x) { return fl__tanhf(x); }
FL_VECFN float fl_sigmoidf(float x) { return fl__sigmoidf(x); }
FL_VECFN double fl_exp(double x) { return fl__exp(x); }
FL_VECFN double fl_expm1(double x) { return fl__expm1(x); }
FL_VECFN double fl_log(double x) { return fl__log(x); }
FL_VECFN double fl_log1p(double x) { return fl__log1p(x); }
FL_VECFN double fl_tanh(double x) { return fl__tanh(x); }
FL_VECFN double fl_sigmoid(double x) { return fl__sigmoid(x); }

#endif

/* fastloss row kernels: the instruction-set layer shared by _rowmax.h and _expsum.h.
 *
 * Which vector code a level module gets is decided here, once, from the
 * compiler's target macros (setup.py builds one module per level):
 *
 *   __AVX512F__        (avx512 level) FL_SM_VEC: the fl_vf layer below on one
 *                      __m512 (16 floats);
 *   __AVX2__, __FMA__  (avx2 level) FL_SM_VEC: the same fl_vf layer on two
 *                      __m256 halves;
 *   __GNUC__           (baseline: SSE2, NEON) GCC vector extensions of 64 bytes;
 *   anything else      plain C loops.
 *
 * fl_vf is a vector of 16 floats whatever the level, with the few operations the
 * row kernels need (load / store, masked tail, arithmetic with FMA, max, the
 * exp's integer step, widening block sums into 16 doubles): _rowmax.h and
 * _expsum.h write their AVX2 and AVX-512 kernels once on top of it, and the
 * two levels run the same operations in the same order, so they give the same
 * bits. Every variant keeps the 16-lane layout of the sums (element i in lane
 * i % 16) and their fixed-order fold (fl_sm_fold16).
 *
 * These headers are included by the Cython extension after Python.h (they use
 * Py_ssize_t) and after _vmath.h (FL_INLINE, the exp pieces).
 */
#ifndef FASTLOSS_SIMD_H
#define FASTLOSS_SIMD_H
#include <math.h>
#include <string.h>
#include "_vmath.h"       /* FL_INLINE */

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define FL_SM_VEC 1
#endif

#if defined(__AVX512F__)
/* ---- fl_vf on AVX-512: one zmm ---- */
typedef __m512 fl_vf;                            /* 16 floats */
typedef __mmask16 fl_vmask;                      /* lanes of a partial vector */
typedef struct { __m512d a, b; } fl_vd16;        /* 16 doubles (lanes 0-7, 8-15) */
FL_INLINE fl_vf fl_vf_set1(float x) { return _mm512_set1_ps(x); }
FL_INLINE fl_vf fl_vf_load(const float *p) { return _mm512_loadu_ps(p); }
FL_INLINE void fl_vf_store(float *p, fl_vf v) { _mm512_storeu_ps(p, v); }
FL_INLINE fl_vf fl_vf_add(fl_vf a, fl_vf b) { return _mm512_add_ps(a, b); }
FL_INLINE fl_vf fl_vf_sub(fl_vf a, fl_vf b) { return _mm512_sub_ps(a, b); }
FL_INLINE fl_vf fl_vf_mul(fl_vf a, fl_vf b) { return _mm512_mul_ps(a, b); }
FL_INLINE fl_vf fl_vf_fmadd(fl_vf a, fl_vf b, fl_vf c) { return _mm512_fmadd_ps(a, b, c); }
FL_INLINE fl_vf fl_vf_fnmadd(fl_vf a, fl_vf b, fl_vf c) { return _mm512_fnmadd_ps(a, b, c); }
/* x > a ? x : a (vmaxps: a NaN x keeps a) */
FL_INLINE fl_vf fl_vf_max(fl_vf x, fl_vf a) { return _mm512_max_ps(x, a); }
/* a * b, or 0 where x < lim (ordered: a NaN x keeps the product) */
FL_INLINE fl_vf fl_vf_mul_or0(fl_vf a, fl_vf b, fl_vf x, float lim)
{
    return _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(lim), _CMP_NLT_UQ), a, b);
}
/* the float whose bits are (bits(kf) + add) << 23: 2^k from the rounding trick */
FL_INLINE fl_vf fl_vf_pow2_bits(fl_vf kf, int add)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_add_epi32(_mm512_castps_si512(kf), _mm512_set1_epi32(add)), 23));
}
FL_INLINE fl_vmask fl_vmask_first(Py_ssize_t r) { return (__mmask16)((1u << (unsigned)r) - 1u); }
/* the lanes of k loaded from p, the others pad */
FL_INLINE fl_vf fl_vf_load_pad(const float *p, fl_vmask k, fl_vf pad) { return _mm512_mask_loadu_ps(pad, k, p); }
FL_INLINE void fl_vf_store_mask(float *p, fl_vmask k, fl_vf v) { _mm512_mask_storeu_ps(p, k, v); }
FL_INLINE float fl_vf_reduce_max(fl_vf v) { return _mm512_reduce_max_ps(v); }
FL_INLINE fl_vd16 fl_vd16_zero(void) { fl_vd16 a = {_mm512_setzero_pd(), _mm512_setzero_pd()}; return a; }
/* a + f lane by lane, f widened to double */
FL_INLINE fl_vd16 fl_vd16_add_f(fl_vd16 a, fl_vf f)
{
    a.a = _mm512_add_pd(a.a, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
    a.b = _mm512_add_pd(a.b, _mm512_cvtps_pd(_mm256_castpd_ps(
        _mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
    return a;
}
FL_INLINE void fl_vd16_store(double *p, fl_vd16 a) { _mm512_storeu_pd(p, a.a); _mm512_storeu_pd(p + 8, a.b); }

#elif defined(FL_SM_VEC)
/* ---- fl_vf on AVX2 + FMA: two ymm halves (lanes 0-7, 8-15) ---- */
typedef struct { __m256 lo, hi; } fl_vf;
/* the lanes of a partial vector: all-ones lanes are in, n of them (the first n) */
typedef struct { __m256i lo, hi; Py_ssize_t n; } fl_vmask;
typedef struct { __m256d a, b, c, d; } fl_vd16;  /* lanes 0-3, 4-7, 8-11, 12-15 */
#define FL_VF_2(expr_lo, expr_hi) do { r.lo = (expr_lo); r.hi = (expr_hi); } while (0)
FL_INLINE fl_vf fl_vf_set1(float x) { fl_vf r; r.lo = r.hi = _mm256_set1_ps(x); return r; }
FL_INLINE fl_vf fl_vf_load(const float *p) { fl_vf r; FL_VF_2(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)); return r; }
FL_INLINE void fl_vf_store(float *p, fl_vf v) { _mm256_storeu_ps(p, v.lo); _mm256_storeu_ps(p + 8, v.hi); }
FL_INLINE fl_vf fl_vf_add(fl_vf a, fl_vf b) { fl_vf r; FL_VF_2(_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)); return r; }
FL_INLINE fl_vf fl_vf_sub(fl_vf a, fl_vf b) { fl_vf r; FL_VF_2(_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)); return r; }
FL_INLINE fl_vf fl_vf_mul(fl_vf a, fl_vf b) { fl_vf r; FL_VF_2(_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)); return r; }
FL_INLINE fl_vf fl_vf_fmadd(fl_vf a, fl_vf b, fl_vf c)
{
    fl_vf r; FL_VF_2(_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)); return r;
}
FL_INLINE fl_vf fl_vf_fnmadd(fl_vf a, fl_vf b, fl_vf c)
{
    fl_vf r; FL_VF_2(_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi)); return r;
}
FL_INLINE fl_vf fl_vf_max(fl_vf x, fl_vf a) { fl_vf r; FL_VF_2(_mm256_max_ps(x.lo, a.lo), _mm256_max_ps(x.hi, a.hi)); return r; }
FL_INLINE fl_vf fl_vf_mul_or0(fl_vf a, fl_vf b, fl_vf x, float lim)
{
    __m256 l = _mm256_set1_ps(lim); fl_vf r;
    FL_VF_2(_mm256_and_ps(_mm256_cmp_ps(x.lo, l, _CMP_NLT_UQ), _mm256_mul_ps(a.lo, b.lo)),
            _mm256_and_ps(_mm256_cmp_ps(x.hi, l, _CMP_NLT_UQ), _mm256_mul_ps(a.hi, b.hi)));
    return r;
}
FL_INLINE fl_vf fl_vf_pow2_bits(fl_vf kf, int add)
{
    __m256i d = _mm256_set1_epi32(add); fl_vf r;
    FL_VF_2(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(kf.lo), d), 23)),
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(kf.hi), d), 23)));
    return r;
}
FL_INLINE fl_vmask fl_vmask_first(Py_ssize_t r)
{
    __m256i n = _mm256_set1_epi32((int)r); fl_vmask k;
    k.lo = _mm256_cmpgt_epi32(n, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    k.hi = _mm256_cmpgt_epi32(n, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15));
    k.n = r;
    return k;
}
/* vmaskmovps (lanes outside k neither read nor fault) only on a half that is
 * partly in: a full half takes a plain load / store, an empty one nothing
 * (AMD cores run a masked store as a long microcoded sequence, even with an
 * all-ones or all-zero mask) */
FL_INLINE fl_vf fl_vf_load_pad(const float *p, fl_vmask k, fl_vf pad)
{
    fl_vf r = pad;
    if (k.n >= 8) {
        r.lo = _mm256_loadu_ps(p);
        if (k.n > 8)
            r.hi = _mm256_blendv_ps(pad.hi, _mm256_maskload_ps(p + 8, k.hi), _mm256_castsi256_ps(k.hi));
    } else {
        r.lo = _mm256_blendv_ps(pad.lo, _mm256_maskload_ps(p, k.lo), _mm256_castsi256_ps(k.lo));
    }
    return r;
}
FL_INLINE void fl_vf_store_mask(float *p, fl_vmask k, fl_vf v)
{
    if (k.n >= 8) {
        _mm256_storeu_ps(p, v.lo);
        if (k.n > 8) _mm256_maskstore_ps(p + 8, k.hi, v.hi);
    } else {
        _mm256_maskstore_ps(p, k.lo, v.lo);
    }
}
FL_INLINE float fl_vf_reduce_max(fl_vf v)
{
    __m256 m = _mm256_max_ps(v.lo, v.hi);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}
FL_INLINE fl_vd16 fl_vd16_zero(void)
{
    fl_vd16 a; a.a = a.b = a.c = a.d = _mm256_setzero_pd(); return a;
}
FL_INLINE fl_vd16 fl_vd16_add_f(fl_vd16 a, fl_vf f)
{
    a.a = _mm256_add_pd(a.a, _mm256_cvtps_pd(_mm256_castps256_ps128(f.lo)));
    a.b = _mm256_add_pd(a.b, _mm256_cvtps_pd(_mm256_extractf128_ps(f.lo, 1)));
    a.c = _mm256_add_pd(a.c, _mm256_cvtps_pd(_mm256_castps256_ps128(f.hi)));
    a.d = _mm256_add_pd(a.d, _mm256_cvtps_pd(_mm256_extractf128_ps(f.hi, 1)));
    return a;
}
FL_INLINE void fl_vd16_store(double *p, fl_vd16 a)
{
    _mm256_storeu_pd(p, a.a); _mm256_storeu_pd(p + 4, a.b);
    _mm256_storeu_pd(p + 8, a.c); _mm256_storeu_pd(p + 12, a.d);
}
#undef FL_VF_2
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

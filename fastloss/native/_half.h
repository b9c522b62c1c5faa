/* fastloss: 16-bit storage types (bfloat16, IEEE float16) <-> float32.
 *
 * Every fastloss kernel computes in float32 (or float64); 16-bit inputs are
 * widened to float32 on load and results are rounded back on store, a tile at
 * a time in cache, so no kernel needs a 16-bit variant of its arithmetic.
 *
 *   bfloat16 -> float32   exact: the 16 bits become the high half of the float.
 *   float16  -> float32   exact (subnormals, Inf and NaN included).
 *   float32  -> bfloat16  round to nearest, ties to even; NaN stays NaN (made
 *                         quiet, sign kept); overflow rounds to +-Inf.
 *   float32  -> float16   round to nearest, ties to even; |x| >= 65520 -> Inf;
 *                         results below 2^-14 become subnormals (or zero),
 *                         correctly rounded; NaN stays NaN (quiet, sign kept).
 *
 * These match ml_dtypes' and NumPy's astype bit for bit (tests/test_half.py).
 * Array versions use the widest instructions the level module was compiled for
 * (F16C's vcvtph2ps / vcvtps2ph on the avx2 and avx512 levels, integer vector
 * code for bfloat16); the scalar versions are the portable reference.
 *
 * The kind codes (FL_HALF_*) are the ones fastloss/_dtypes.py hands the kernels.
 */
#ifndef FASTLOSS_HALF_H
#define FASTLOSS_HALF_H
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__) || defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#ifndef FL_INLINE
#define FL_INLINE static inline __attribute__((always_inline))
#endif

enum { FL_HALF_NONE = 0, FL_HALF_BF16 = 1, FL_HALF_F16 = 2 };

FL_INLINE uint32_t fl_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
FL_INLINE float fl_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ---- scalar conversions (the portable reference) ---- */
FL_INLINE float fl_bf16_to_f32(uint16_t h) { return fl_bits_f32((uint32_t)h << 16); }

FL_INLINE uint16_t fl_f32_to_bf16(float f)
{
    uint32_t u = fl_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)            /* NaN: keep sign and top payload, set quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);                 /* ties to even */
    return (uint16_t)(u >> 16);
}

FL_INLINE float fl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f)                                   /* Inf / NaN */
        return fl_bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) {                                    /* zero / subnormal: m * 2^-24, exact */
        float f = (float)m * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    return fl_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

FL_INLINE uint16_t fl_f32_to_f16(float f)
{
    uint32_t u = fl_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u)                             /* NaN: quiet, top payload kept */
        return (uint16_t)(sign | 0x7e00u | ((u >> 13) & 0x3ffu));
    if (u >= 0x477ff000u)                            /* >= 65520 (and Inf): Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (u < 0x38800000u) {                           /* below 2^-14: subnormal or zero.  */
        /* 0.5f has ulp 2^-24, the float16 subnormal step: the add rounds to it
         * (nearest, ties to even), and the low bits are then the float16 bits */
        float r = fl_bits_f32(u) + 0.5f;
        return (uint16_t)(sign | (fl_f32_bits(r) - 0x3f000000u));
    }
    /* normal: rebias the exponent (-112 << 23) and round the 13 dropped bits */
    u += 0xc8000fffu + ((u >> 13) & 1u);
    return (uint16_t)(sign | (u >> 13));
}

/* ---- array conversions: n elements, src and dst must not overlap ---- */

/* bfloat16 -> float32 */
static void fl_bf16_load(const uint16_t *src, float *dst, Py_ssize_t n)
{
    Py_ssize_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
#elif defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
#endif
    for (; i < n; i++) dst[i] = fl_bf16_to_f32(src[i]);
}

/* float32 -> bfloat16, nearest-even */
static void fl_bf16_store(const float *src, uint16_t *dst, Py_ssize_t n)
{
    Py_ssize_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i qnan = _mm512_set1_epi32(0x00400000);
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_castps_si512(_mm512_loadu_ps(src + i));
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absm), inf);
        __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(bias,
                        _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
        r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, qnan));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
    }
#elif defined(__AVX2__)
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    const __m256i qnan = _mm256_set1_epi32(0x00400000);
    for (; i + 16 <= n; i += 16) {
        __m256i r2[2];
        for (int h = 0; h < 2; h++) {
            __m256i u = _mm256_castps_si256(_mm256_loadu_ps(src + i + 8 * h));
            __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absm), inf);
            __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(bias,
                            _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
            r = _mm256_blendv_epi8(r, _mm256_or_si256(u, qnan), nan);
            r2[h] = _mm256_srli_epi32(r, 16);
        }
        /* packus works per 128-bit lane: fix the order with a permute */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r2[0], r2[1]), 0xd8);
        _mm256_storeu_si256((__m256i *)(dst + i), p);
    }
#endif
    for (; i < n; i++) dst[i] = fl_f32_to_bf16(src[i]);
}

/* float16 -> float32 */
static void fl_f16_load(const uint16_t *src, float *dst, Py_ssize_t n)
{
    Py_ssize_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++) dst[i] = fl_f16_to_f32(src[i]);
}

/* float32 -> float16, nearest-even (F16C's rounding mode 0 is nearest-even, NaN kept quiet) */
static void fl_f16_store(const float *src, uint16_t *dst, Py_ssize_t n)
{
    Py_ssize_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) dst[i] = fl_f32_to_f16(src[i]);
}

/* the two above by kind code (FL_HALF_BF16 / FL_HALF_F16) */
FL_INLINE void fl_half_load(int kind, const uint16_t *src, float *dst, Py_ssize_t n)
{
    if (kind == FL_HALF_BF16) fl_bf16_load(src, dst, n); else fl_f16_load(src, dst, n);
}

FL_INLINE void fl_half_store(int kind, const float *src, uint16_t *dst, Py_ssize_t n)
{
    if (kind == FL_HALF_BF16) fl_bf16_store(src, dst, n); else fl_f16_store(src, dst, n);
}

#endif /* FASTLOSS_HALF_H */

/* fastloss: the first and last passes over a 16-bit cross-entropy tile.
 *
 *   fl_half_load_ahead: fl_half_load, prefetching the next tile (below).
 *
 *   fl_half_store_scaled(kind, src, dst, n, K, stream):
 *       dst[i] = round16(src[i] * K)     (the float32 product, as step 3 of the
 *       float32 cross-entropy computes it, then nearest-even as fl_half_store);
 *       stream: non-temporal stores where it can (a gradient larger than the
 *       caches is not read back from them: no read-for-ownership of its lines)
 *
 * One pass over the float32 tile instead of a scaling pass and a store pass.
 * bfloat16 on a CPU with AVX512-BF16 (Zen 4/5, Sapphire Rapids; the avx512
 * level only, checked at run time): VCVTNE2PS2BF16 rounds 32 floats to nearest
 * even in one instruction and quiets NaN as fl_f32_to_bf16 does, but reads
 * subnormal floats as zero, so a vector holding one (never in practice: a
 * gradient below 2^-126) takes the exact path of _half.h. Elsewhere (float16,
 * whose F16C / AVX-512 conversion is one instruction; the baseline level): the
 * products go through a small L1 buffer into fl_half_store. (bfloat16 on the
 * avx2 level takes fl_bf16_store_il of _bf16_rows.h instead.)
 */
#ifndef FASTLOSS_HALF_SCALED_H
#define FASTLOSS_HALF_SCALED_H
#include "_half.h"

#define FL_SCALED_BLOCK 512

/* bfloat16 of src[i] K for the values before dst's first ``align``-byte boundary
 * (streamed stores need it aligned), one by one; returns how many */
FL_INLINE Py_ssize_t fl_bf16_scaled_head(const float *src, uint16_t *dst, Py_ssize_t n, float K,
                                         uintptr_t align)
{
    Py_ssize_t i = 0;
    for (; i < n && ((uintptr_t)(dst + i) & (align - 1)) != 0; i++)
        dst[i] = fl_f32_to_bf16(src[i] * K);
    return i;
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__GNUC__) && !defined(__clang__)
#define FL_HAVE_BF16_INSN 1
__attribute__((target("avx512bf16"))) static void
fl_bf16_store_scaled_insn(const float *src, uint16_t *dst, Py_ssize_t n, float K, int stream)
{
    const __m512 kv = _mm512_set1_ps(K);
    const __m512i expm = _mm512_set1_epi32(0x7f800000), absm = _mm512_set1_epi32(0x7fffffff);
    Py_ssize_t i = stream ? fl_bf16_scaled_head(src, dst, n, K, 64) : 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a = _mm512_mul_ps(_mm512_loadu_ps(src + i), kv);
        __m512 b = _mm512_mul_ps(_mm512_loadu_ps(src + i + 16), kv);
        __m512i ai = _mm512_castps_si512(a), bi = _mm512_castps_si512(b);
        __mmask16 sub = (_mm512_testn_epi32_mask(ai, expm) & _mm512_test_epi32_mask(ai, absm))
                      | (_mm512_testn_epi32_mask(bi, expm) & _mm512_test_epi32_mask(bi, absm));
        if (__builtin_expect(sub != 0, 0)) {          /* a subnormal product: exact path */
            float t[32];
            _mm512_storeu_ps(t, a);
            _mm512_storeu_ps(t + 16, b);
            fl_bf16_store(t, dst + i, 32);
            continue;
        }
        /* cvtne2ps: the second operand gives the low 16 results */
        if (stream)
            _mm512_stream_si512((void *)(dst + i), (__m512i)_mm512_cvtne2ps_pbh(b, a));
        else
            _mm512_storeu_si512((void *)(dst + i), (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
    for (; i < n; i++) dst[i] = fl_f32_to_bf16(src[i] * K);
    if (stream)
        _mm_sfence();   /* the streamed lines ordered before anything this thread does next */
}

static int fl_bf16_insn_ok(void)
{
    static int ok = -1;
    if (ok < 0)
        ok = __builtin_cpu_supports("avx512bf16") ? 1 : 0;
    return ok;
}
#endif

static void fl_half_store_scaled(int kind, const float *src, uint16_t *dst, Py_ssize_t n, float K,
                                 int stream)
{
    float t[FL_SCALED_BLOCK];
    Py_ssize_t i, j, m;
#if defined(FL_HAVE_BF16_INSN)
    if (kind == FL_HALF_BF16 && fl_bf16_insn_ok()) {
        fl_bf16_store_scaled_insn(src, dst, n, K, stream);
        return;
    }
#endif
    (void)stream;
    for (i = 0; i < n; i += m) {
        m = n - i < FL_SCALED_BLOCK ? n - i : FL_SCALED_BLOCK;
        for (j = 0; j < m; j++)
            t[j] = src[i + j] * K;
        fl_half_store(kind, t, dst + i, m);
    }
}

/* fl_half_load(kind, src, dst, n), prefetching into L2 (one line per 64 bytes)
 * the first nnext values at next -- the next tile -- while it runs: the hardware
 * prefetcher stops at every 4 KiB page, a software prefetch a tile ahead does not */
static void fl_half_load_ahead(int kind, const uint16_t *src, float *dst, Py_ssize_t n,
                               const uint16_t *next, Py_ssize_t nnext)
{
    Py_ssize_t i, j, m;
    for (i = 0; i < n; i += FL_SCALED_BLOCK) {
        m = n - i < FL_SCALED_BLOCK ? n - i : FL_SCALED_BLOCK;
        for (j = i; j < i + m && j < nnext; j += 32)
            __builtin_prefetch(next + j, 0, 2);
        fl_half_load(kind, src + i, dst + i, m);
    }
}

#endif /* FASTLOSS_HALF_SCALED_H */

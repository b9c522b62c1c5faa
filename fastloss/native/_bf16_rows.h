/* fastloss: cross-entropy row passes read straight from bfloat16 (avx2 and avx512).
 *
 * The 16-bit tiles of _ce_half.pxi widen a row into float32 scratch and run the
 * float32 passes over it. On the vector levels these three do that arithmetic
 * from the bfloat16 bits instead, with fewer instructions and no widened copy,
 * and with an exp of 16-bit precision (fl_bf16_exp16: relative error 3.2e-6, not
 * the float32 kernels' 1 ulp; what that means for the results: at its definition):
 *
 *   fl_bf16_maxf(z, n, &amax)     = fl_sm_maxf(widen(z), n), the same value, by
 *                                   integer max / min of the bits; amax = max |z|
 *   fl_bf16_expsumf(z, e, n, m, amax, pz, ge, gdst, gK, ...)
 *                                 = fl_sm_expsumf(widen(z), e, n, m, ...) with
 *                                   fl_bf16_exp16: the same blocks, lanes and order
 *                                   of the sum, e stored interleaved (below);
 *                                   where m + amax <= 86 the exp skips the multiply
 *                                   by 2^k (fl_bf16_exp16_tame); with ge, also
 *                                   fl_bf16_store_il(ge, gdst, n, gK, ...) in the
 *                                   same loop (the previous row's gradient)
 *   fl_bf16_store_il(e, dst, n, K, stream, clean):
 *                                   dst[i] = round_bf16(e[il(i)] K) (no NaN scan
 *                                   when clean)
 *
 * The kernels are written once on the fl_vf layer of _simd.h (16 floats, value i
 * of a group in lane i % 16, the float32 kernels' lanes, blocks and order, so
 * maxima and block sums are bit-identical) and a few per-level pieces:
 *
 *   fl_bf16_widen_il(w)    16 bfloat16 bits (one 256-bit load) as 16 floats, in
 *                          the level's "il" order
 *   fl_vf_from_il(v)       those lanes put back in natural order
 *   fl_bf16_sum_il(acc, f) acc + f widened to double, lane by lane in natural order
 *   fl_bf16_scale_pow2(p, kf)  p 2^k for a normal result, exactly: an integer add of
 *                          k << 23 to p's bits (kf = FL_SHIFTF + k has the bits of
 *                          FL_SHIFTF plus k, whose bits shifted left by 23 vanish)
 *   fl_bf16_has_nan(p)     any lane of p NaN
 *   fl_bf16_round16(p)     round_bf16 of 16 non-NaN floats in il order, natural
 *                          order out (16-bit lanes of a 256-bit vector)
 *
 * and fl_vw, the integer vectors of the max pass (FL_VW_N 16-bit lanes).
 *
 * AVX-512 (one zmm): widening is one vpermw (word i to the high half of lane i,
 * the low halves zeroed), in natural order, so il is the identity; rounding is
 * nearest-even on the 32-bit lanes (bits + 0x7fff + lsb of the result, as
 * fl_f32_to_bf16), the high halves picked by vpermw. (Not vcvtneps2bf16: it
 * flushes subnormals.)
 *
 * AVX2 (two ymm halves): 16 bfloat16 read as 8 32-bit words become two float
 * vectors in one instruction each, A = the even values (the words shifted left
 * by 16) and B = the odd ones (the words' high halves kept): exact, in place, no
 * shuffle; A holds the even lanes and B the odd ones, put back in order (unpack)
 * for the cross-lane steps. The exps of each full group of 16 values are stored
 * as A then B, i.e. value c at position il(c) = (c odd ? 8 : 0) + c / 2 within its
 * group; a partial last group stays in order. The gradient store rounds A and B
 * products to bfloat16 in 16-bit lanes whose order, after two word blends, is
 * the natural one.
 *
 * Other levels: FL_BF16_ROWS is 0 and these are never called (stubs).
 */
#ifndef FASTLOSS_BF16_ROWS_H
#define FASTLOSS_BF16_ROWS_H
#include "_half.h"
#include "_expsum.h"

/* fl_vw: the word vectors of the max pass (T: the integer vector type, P: the
 * intrinsics' prefix, SI: their load / store suffix) */
#define FL_VW_LAYER(T, P, SI)                                                            \
    typedef T fl_vw;                                                                     \
    FL_INLINE fl_vw fl_vw_load(const uint16_t *p) { return P##_loadu_##SI((const void *)p); } \
    FL_INLINE fl_vw fl_vw_set1(int x) { return P##_set1_epi16((short)x); }               \
    FL_INLINE fl_vw fl_vw_maxs(fl_vw a, fl_vw b) { return P##_max_epi16(a, b); }         \
    FL_INLINE fl_vw fl_vw_maxu(fl_vw a, fl_vw b) { return P##_max_epu16(a, b); }         \
    FL_INLINE fl_vw fl_vw_minu(fl_vw a, fl_vw b) { return P##_min_epu16(a, b); }         \
    FL_INLINE void fl_vw_store(uint16_t *p, fl_vw v) { P##_storeu_##SI((void *)p, v); }

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#define FL_BF16_ROWS 1
#define FL_BF16_IL 0        /* il(c) = c */

/* word i to the high half of lane i, the low halves zeroed: one vpermw */
FL_INLINE fl_vf fl_bf16_widen_il(__m256i w)
{
    const __m512i up = _mm512_set_epi16(15, 0, 14, 0, 13, 0, 12, 0, 11, 0, 10, 0, 9, 0, 8, 0,
                                        7, 0, 6, 0, 5, 0, 4, 0, 3, 0, 2, 0, 1, 0, 0, 0);
    return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(
        (__mmask32)0xaaaaaaaau, up, _mm512_castsi256_si512(w)));
}

FL_INLINE fl_vf fl_vf_from_il(fl_vf v) { return v; }

FL_INLINE fl_vd16 fl_bf16_sum_il(fl_vd16 acc, fl_vf f) { return fl_vd16_add_f(acc, f); }

/* (an integer add, not vscalefps: that one takes an FMA port, which the exp fills) */
FL_INLINE fl_vf fl_bf16_scale_pow2(fl_vf p, fl_vf kf)
{
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p),
                                                _mm512_slli_epi32(_mm512_castps_si512(kf), 23)));
}

FL_INLINE int fl_bf16_has_nan(fl_vf p) { return _mm512_cmp_ps_mask(p, p, _CMP_UNORD_Q) != 0; }

/* nearest-even: bits + 0x7fff, + 1 more where the kept lsb (bit 16) is set (minus
 * the all-ones lanes of vpmovm2d: no constant 1 to rematerialise in the loop); the
 * high halves of the 16 sums picked into 16-bit lanes by one vpermw */
FL_INLINE __m256i fl_bf16_round16(fl_vf p)
{
    const __m512i hi16 = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          31, 29, 27, 25, 23, 21, 19, 17,
                                          15, 13, 11, 9, 7, 5, 3, 1);
    __m512i u = _mm512_castps_si512(p);
    __m512i t = _mm512_add_epi32(u, _mm512_set1_epi32(0x7fff));
    __mmask16 odd = _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x10000));
    t = _mm512_sub_epi32(t, _mm512_movm_epi32(odd));
    return _mm512_castsi512_si256(_mm512_permutexvar_epi16(hi16, t));
}

/* word vectors for the max pass: 32 bfloat16 bits */
#define FL_VW_N 32
FL_VW_LAYER(__m512i, _mm512, si512)

#elif defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define FL_BF16_ROWS 1
#define FL_BF16_IL 1        /* il(c) = (c odd ? 8 : 0) + c / 2 in a full group */

FL_INLINE fl_vf fl_bf16_widen_il(__m256i w)
{
    fl_vf r;
    r.lo = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    r.hi = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32((int)0xffff0000u)));
    return r;
}

/* the unpacks give lanes 0-3 | 8-11 and 4-7 | 12-15 */
FL_INLINE fl_vf fl_vf_from_il(fl_vf v)
{
    __m256 ul = _mm256_unpacklo_ps(v.lo, v.hi), uh = _mm256_unpackhi_ps(v.lo, v.hi);
    fl_vf r;
    r.lo = _mm256_permute2f128_ps(ul, uh, 0x20);
    r.hi = _mm256_permute2f128_ps(ul, uh, 0x31);
    return r;
}

/* f.lo: the even lanes, f.hi: the odd ones; unpacked: 0-3 | 8-11, 4-7 | 12-15 (no
 * cross-lane permute: the halves go to their accumulators directly) */
FL_INLINE fl_vd16 fl_bf16_sum_il(fl_vd16 acc, fl_vf f)
{
    __m256 ul = _mm256_unpacklo_ps(f.lo, f.hi), uh = _mm256_unpackhi_ps(f.lo, f.hi);
    acc.a = _mm256_add_pd(acc.a, _mm256_cvtps_pd(_mm256_castps256_ps128(ul)));
    acc.b = _mm256_add_pd(acc.b, _mm256_cvtps_pd(_mm256_castps256_ps128(uh)));
    acc.c = _mm256_add_pd(acc.c, _mm256_cvtps_pd(_mm256_extractf128_ps(ul, 1)));
    acc.d = _mm256_add_pd(acc.d, _mm256_cvtps_pd(_mm256_extractf128_ps(uh, 1)));
    return acc;
}

FL_INLINE fl_vf fl_bf16_scale_pow2(fl_vf p, fl_vf kf)
{
    fl_vf r;
    r.lo = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p.lo),
                                                _mm256_slli_epi32(_mm256_castps_si256(kf.lo), 23)));
    r.hi = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p.hi),
                                                _mm256_slli_epi32(_mm256_castps_si256(kf.hi), 23)));
    return r;
}

FL_INLINE int fl_bf16_has_nan(fl_vf p)
{
    return _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(p.lo, p.lo, _CMP_UNORD_Q),
                                           _mm256_cmp_ps(p.hi, p.hi, _CMP_UNORD_Q))) != 0;
}

/* the high halves h and low halves l of the float bits in 16-bit lanes (two
 * blends each), then nearest-even as fl_f32_to_bf16: h + 1 where l + (h & 1) >
 * 0x8000, i.e. where l - (1 - (h & 1)) >= 0x8000: bit 15 of that difference
 * (saturating: l = 0 with h even stays 0) */
FL_INLINE __m256i fl_bf16_round16(fl_vf p)
{
    __m256i ua = _mm256_castps_si256(p.lo), ub = _mm256_castps_si256(p.hi);
    __m256i h = _mm256_blend_epi16(_mm256_srli_epi32(ua, 16), ub, 0xaa);
    __m256i l = _mm256_blend_epi16(ua, _mm256_slli_epi32(ub, 16), 0xaa);
    __m256i d = _mm256_subs_epu16(l, _mm256_andnot_si256(h, _mm256_set1_epi16(1)));
    return _mm256_add_epi16(h, _mm256_srli_epi16(d, 15));
}

/* word vectors for the max pass: 16 bfloat16 bits */
#define FL_VW_N 16
FL_VW_LAYER(__m256i, _mm256, si256)

#else
#define FL_BF16_ROWS 0
#define FL_BF16_IL 0
#endif

/* il(c): the position of value c of a row of n values in the interleaved layout */
FL_INLINE Py_ssize_t fl_il_pos(Py_ssize_t c, Py_ssize_t n)
{
    if (!FL_BF16_IL || c >= (n & ~(Py_ssize_t)15))
        return c;
    return (c & ~(Py_ssize_t)15) | ((c & 1) << 3) | ((c >> 1) & 7);
}

/* natural order -> interleaved, in place, over the full groups of 16 of e[0, n) */
static void fl_il_from_natural(float *e, Py_ssize_t n)
{
    Py_ssize_t g;
    int c;
    float t[16];
    if (!FL_BF16_IL)
        return;
    for (g = 0; g + 16 <= n; g += 16) {
        memcpy(t, e + g, sizeof t);
        for (c = 0; c < 16; c++) e[g + fl_il_pos(c, 16)] = t[c];
    }
}

#if FL_BF16_ROWS

FL_INLINE __m256i fl_bf16_load16(const uint16_t *z)
{
    return _mm256_loadu_si256((const __m256i *)z);
}

/* the last r < 16 values widened into t[0, r) (r > 0) */
FL_INLINE void fl_bf16_tail(const uint16_t *z, Py_ssize_t r, float *t)
{
    Py_ssize_t l;
    for (l = 0; l < r; l++) t[l] = fl_bf16_to_f32(z[l]);
}

/* fl_sm_maxf's accumulators, blocks and tail, on the widened values; *amax =
 * max |z| (NaN if z holds a NaN), from the bits: 16 values per integer max
 * (fl_bf16_maxf's path for a span holding a NaN) */
static float fl_bf16_maxf_widened(const uint16_t *z, Py_ssize_t n, float *amax)
{
    const __m256i absm = _mm256_set1_epi16(0x7fff);
    fl_vf a0 = fl_vf_set1(-INFINITY), a1 = a0, a2 = a0, a3 = a0;
    __m256i w0, w1, w2, w3, m01 = _mm256_setzero_si256(), m23 = m01;
    uint16_t mb[16], am = 0;
    float t[16];
    Py_ssize_t i = 0, l;
    for (; i + 64 <= n; i += 64) {
        w0 = fl_bf16_load16(z + i);
        w1 = fl_bf16_load16(z + i + 16);
        w2 = fl_bf16_load16(z + i + 32);
        w3 = fl_bf16_load16(z + i + 48);
        a0 = fl_vf_max(fl_bf16_widen_il(w0), a0);
        a1 = fl_vf_max(fl_bf16_widen_il(w1), a1);
        a2 = fl_vf_max(fl_bf16_widen_il(w2), a2);
        a3 = fl_vf_max(fl_bf16_widen_il(w3), a3);
        m01 = _mm256_max_epu16(m01, _mm256_max_epu16(_mm256_and_si256(w0, absm),
                                                     _mm256_and_si256(w1, absm)));
        m23 = _mm256_max_epu16(m23, _mm256_max_epu16(_mm256_and_si256(w2, absm),
                                                     _mm256_and_si256(w3, absm)));
    }
    for (; i + 16 <= n; i += 16) {
        w0 = fl_bf16_load16(z + i);
        a0 = fl_vf_max(fl_bf16_widen_il(w0), a0);
        m01 = _mm256_max_epu16(m01, _mm256_and_si256(w0, absm));
    }
    a0 = fl_vf_from_il(a0); a1 = fl_vf_from_il(a1);
    a2 = fl_vf_from_il(a2); a3 = fl_vf_from_il(a3);
    if (i < n) {
        fl_bf16_tail(z + i, n - i, t);
        a0 = fl_vf_max(fl_vf_load_pad(t, fl_vmask_first(n - i), a1), a0);
        for (l = i; l < n; l++) am = (z[l] & 0x7fff) > am ? (z[l] & 0x7fff) : am;
    }
    _mm256_storeu_si256((__m256i *)mb, _mm256_max_epu16(m01, m23));
    for (l = 0; l < 16; l++) am = mb[l] > am ? mb[l] : am;
    *amax = fl_bf16_to_f32(am);
    a0 = fl_vf_max(a1, a0);
    a2 = fl_vf_max(a3, a2);
    return fl_vf_reduce_max(fl_vf_max(a2, a0));
}

/* fl_sm_maxf(widen(z), n) and *amax = max |z| (NaN if z holds a NaN) from the bits
 * with integer max / min only (n > 0). As signed 16-bit, the bits of the values
 * with the sign clear (+0 to +inf, then +NaN) are ordered as the values and lie
 * above those with the sign set: their signed max s is the row max when s >= 0.
 * Otherwise every value is negative, and the one of least magnitude (the least
 * bits as unsigned: -0 to -inf, then -NaN) is the max. The unsigned max U is the
 * negative value of greatest magnitude (or s, if none is negative): amax's bits
 * are max(s, U & 0x7fff). A NaN shows as s > +inf or U > -inf; such a span (and
 * n = 0) takes fl_bf16_maxf_widened, which skips NaN as vmaxps does. A row whose
 * max is zero takes +0 where the float max may give -0: z - m and the loss are
 * the same either way. */
static inline float fl_bf16_maxf(const uint16_t *z, Py_ssize_t n, float *amax)
{
    fl_vw s0 = fl_vw_set1(0x8000), s1 = s0, u0 = fl_vw_set1(0), u1 = u0;
    fl_vw l0 = fl_vw_set1(0xffff), l1 = l0, w0, w1;
    uint16_t sb[2 * FL_VW_N], ub[2 * FL_VW_N], lb[2 * FL_VW_N];
    int16_t smax = INT16_MIN;
    uint16_t umax = 0, umin = 0xffff, ab;
    Py_ssize_t i = 0, l;
    for (; i + 2 * FL_VW_N <= n; i += 2 * FL_VW_N) {
        w0 = fl_vw_load(z + i);
        w1 = fl_vw_load(z + i + FL_VW_N);
        s0 = fl_vw_maxs(s0, w0); s1 = fl_vw_maxs(s1, w1);
        u0 = fl_vw_maxu(u0, w0); u1 = fl_vw_maxu(u1, w1);
        l0 = fl_vw_minu(l0, w0); l1 = fl_vw_minu(l1, w1);
    }
    fl_vw_store(sb, s0); fl_vw_store(sb + FL_VW_N, s1);
    fl_vw_store(ub, u0); fl_vw_store(ub + FL_VW_N, u1);
    fl_vw_store(lb, l0); fl_vw_store(lb + FL_VW_N, l1);
    for (l = 0; l < 2 * FL_VW_N; l++) {
        smax = (int16_t)sb[l] > smax ? (int16_t)sb[l] : smax;
        umax = ub[l] > umax ? ub[l] : umax;
        umin = lb[l] < umin ? lb[l] : umin;
    }
    for (; i < n; i++) {
        smax = (int16_t)z[i] > smax ? (int16_t)z[i] : smax;
        umax = z[i] > umax ? z[i] : umax;
        umin = z[i] < umin ? z[i] : umin;
    }
    if (n == 0 || smax > 0x7f80 || umax > 0xff80)
        return fl_bf16_maxf_widened(z, n, amax);
    ab = (uint16_t)(umax & 0x7fff);
    if (smax >= 0 && (uint16_t)smax > ab)
        ab = (uint16_t)smax;
    *amax = fl_bf16_to_f32(ab);
    return fl_bf16_to_f32(smax >= 0 ? (uint16_t)smax : umin);
}

/* The exp of these rows: k and r = x - k ln2 by fl_sm_exp16_reduce, e^r by
 * 1 + r Q(r) with Q of degree 3 (tools/vmath_coeffs.py: report_exp16) instead of
 * the float32 kernels' degree 6: relative error <= 2.9e-6 on [-ln2/2, ln2/2], e^0 = 1
 * exactly; <= 3.2e-6 for x in [-87.3, 0] (the one-float ln2 of the reduction adds
 * up to 2.4e-7; tests/test_cross_entropy_bf16_rows.py). What that costs a 16-bit
 * result: the gradient p = e K is rounded to bfloat16, whose half ulp (2^-9 = 2e-3
 * relative) is 600 times the exp's error: a value whose product lies within ~6e-6 of
 * a rounding midpoint may round the other way, still within one ulp of the correctly
 * rounded value. The loss log sum e - (z_y - m) moves by at most 3.2e-6 relative (each
 * term's error is relative to the term, and log S >= 1 - 1/S bounds the sum's part).
 * Three FMAs fewer per 8 lanes: on the avx2 level, where these loops are bound by the
 * FMA ports, cross-entropy 4096 x 32000 bf16 ran in 18.3 ms instead of 21.8 (`python
 * tools/ab_builds.py NEW:avx2 OLD:avx2 bf16:4096x32000`, 2 threads; degree 5, error
 * 1.5e-7, gave 1.08x). */
FL_INLINE fl_vf fl_bf16_exp16_core(fl_vf x, fl_vf *kf_out)
{
    fl_vf r = fl_sm_exp16_reduce(x, kf_out);
    fl_vf q = fl_vf_fmadd(fl_vf_set1(0.041513681411743164f), r,
                          fl_vf_set1(0.16787591576576233f));
    q = fl_vf_fmadd(q, r, fl_vf_set1(0.5000302195549011f));
    q = fl_vf_fmadd(q, r, fl_vf_set1(0.9999668002128601f));
    return fl_vf_fmadd(q, r, fl_vf_set1(1.0f));
}

/* e^x for x <= 0 or NaN, scaled as fl_sm_exp16 does: x < -87.3 (and -inf) give 0,
 * NaN stays NaN */
FL_INLINE fl_vf fl_bf16_exp16(fl_vf x)
{
    fl_vf kf, p = fl_bf16_exp16_core(x, &kf);
    return fl_sm_exp16_scale(p, kf, x);
}

/* fl_bf16_exp16(x) for x in [-86, 0] (no NaN, no -inf): the same e^r and k; e^r is
 * in [0.7, 1.42] and k >= -125, so e^r 2^k is a normal float and exact:
 * fl_bf16_scale_pow2 (an integer add of k to e^r's exponent) gives the same bits as
 * the multiply, without the multiply (an FMA-port instruction) and the underflow
 * mask. */
FL_INLINE fl_vf fl_bf16_exp16_tame(fl_vf x)
{
    fl_vf kf, p = fl_bf16_exp16_core(x, &kf);
    return fl_bf16_scale_pow2(p, kf);
}

/* out[i] = the exp of these rows at x[i] for i < n, n a multiple of 16 (tame: every
 * x in [-86, 0], by fl_bf16_exp16_tame); for the tests */
static void fl_bf16_exp_apply(const float *x, float *out, Py_ssize_t n, int tame)
{
    Py_ssize_t i;
    for (i = 0; i + 16 <= n; i += 16)
        fl_vf_store(out + i, tame ? fl_bf16_exp16_tame(fl_vf_load(x + i))
                                  : fl_bf16_exp16(fl_vf_load(x + i)));
}

/* one group of 16 of fl_bf16_store_il (kv: K in every lane; nt: streamed stores,
 * 2: in one 32-byte store, dst 32-byte aligned) */
FL_INLINE void fl_bf16_store_il16(const float *e, uint16_t *dst, fl_vf kv, int nt, int clean)
{
    fl_vf p = fl_vf_mul(fl_vf_load(e), kv);
    __m256i q;
    if (!clean && __builtin_expect(fl_bf16_has_nan(p), 0)) {
        float t[16];
        fl_vf_store(t, fl_vf_from_il(p));
        fl_bf16_store(t, dst, 16);
        return;
    }
    q = fl_bf16_round16(p);
    if (nt == 2) {
        _mm256_stream_si256((__m256i *)dst, q);
    } else if (nt) {
        _mm_stream_si128((__m128i *)dst, _mm256_castsi256_si128(q));
        _mm_stream_si128((__m128i *)(dst + 8), _mm256_extracti128_si256(q, 1));
    } else {
        _mm256_storeu_si256((__m256i *)dst, q);
    }
}

/* the nt of fl_bf16_store_il16 for groups from dst on (dst + 16 i keeps its alignment) */
FL_INLINE int fl_bf16_nt(const uint16_t *dst, int stream)
{
    if (!stream || ((uintptr_t)dst & 15) != 0)
        return 0;
    return ((uintptr_t)dst & 31) == 0 ? 2 : 1;
}

/* fl_bf16_store_il after its full groups: values i to n (in order) */
FL_INLINE void fl_bf16_store_rest(const float *e, uint16_t *dst, Py_ssize_t i, Py_ssize_t n,
                                  float K, int nt)
{
    for (; i < n; i++) dst[i] = fl_f32_to_bf16(e[i] * K);
    if (nt)
        _mm_sfence();   /* the streamed lines ordered before anything this thread does next */
}

/* dst[c] = round_bf16(e[il(c)] K) for c < n. clean: the caller knows no product is
 * NaN (e and K finite); otherwise a group holding a NaN product takes the exact
 * path of _half.h. stream: non-temporal 32- or 16-byte stores where dst allows */
static void fl_bf16_store_il(const float *e, uint16_t *dst, Py_ssize_t n, float K, int stream,
                             int clean)
{
    const fl_vf kv = fl_vf_set1(K);
    int nt = fl_bf16_nt(dst, stream);
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16)
        fl_bf16_store_il16(e + i, dst + i, kv, nt, clean);
    fl_bf16_store_rest(e, dst, i, n, K, nt);
}

/* the full groups of fl_bf16_expsumf, exp by fl_bf16_exp16_tame when tame; ge !=
 * NULL: also fl_bf16_store_il's groups of ge into gdst (both constants where
 * fl_bf16_expsumf calls it: four specialised loops, the rounding's constants
 * kept in registers) */
FL_INLINE Py_ssize_t fl_bf16_expsum_groups(const uint16_t *z, float *e, Py_ssize_t n, fl_vf mv,
                                           const uint16_t *pz, fl_vd16 *acc, int tame,
                                           const float *ge, uint16_t *gdst, fl_vf gkv,
                                           int gnt, int gclean)
{
    Py_ssize_t i = 0, j;
    fl_vf v, f;
    for (; i + 16 <= n; i = j) {
        Py_ssize_t end = i + 128 <= n ? i + 128 : i + ((n - i) & ~(Py_ssize_t)15);
        f = fl_vf_set1(0.0f);
        for (j = i; j < end; j += 16) {
            v = fl_vf_sub(fl_bf16_widen_il(fl_bf16_load16(z + j)), mv);
            v = tame ? fl_bf16_exp16_tame(v) : fl_bf16_exp16(v);
            fl_vf_store(e + j, v);
            if ((j & 31) == 0)
                __builtin_prefetch(pz + j, 0, 3);
            if (ge != NULL)
                fl_bf16_store_il16(ge + j, gdst + j, gkv, gnt, gclean);
            f = fl_vf_add(f, v);
        }
        *acc = fl_bf16_sum_il(*acc, f);
    }
    return i;
}

/* fl_sm_expsumf (m finite) on the widened values, exps by fl_bf16_exp16: the same
 * blocks of 8 vectors per float partial sum, the same lanes, the same fold; e
 * interleaved. amax:
 * max |z| from fl_bf16_maxf (m + amax <= 86: every z - m >= -86, the tame exp).
 * pz: n values (the same span of the next row) prefetched, a line per 32 values.
 * ge != NULL: fl_bf16_store_il(ge, gdst, n, gK, gstream, gclean) in the same loop
 * (the previous row's gradient: its integer rounding runs beside the exp's FMAs) */
static inline double fl_bf16_expsumf(const uint16_t *z, float *e, Py_ssize_t n, float m,
                                     float amax, const uint16_t *pz, const float *ge,
                                     uint16_t *gdst, float gK, int gstream, int gclean)
{
    fl_vf mv = fl_vf_set1(m), gkv = fl_vf_set1(gK), v;
    fl_vd16 acc = fl_vd16_zero();
    int gnt = ge != NULL ? fl_bf16_nt(gdst, gstream) : 0;
    double a[16];
    float t[16];
    Py_ssize_t i, r;
#define FL_BF16_GROUPS(tame, g) \
    fl_bf16_expsum_groups(z, e, n, mv, pz, &acc, tame, g, gdst, gkv, gnt, gclean)
    if (m + amax <= 86.0f)
        i = ge != NULL ? FL_BF16_GROUPS(1, ge) : FL_BF16_GROUPS(1, NULL);
    else
        i = ge != NULL ? FL_BF16_GROUPS(0, ge) : FL_BF16_GROUPS(0, NULL);
#undef FL_BF16_GROUPS
    r = n - i;
    if (r > 0) {        /* in order, padded with -inf (exp 0), as fl_sm_expsum_vec */
        fl_vmask k = fl_vmask_first(r);
        fl_bf16_tail(z + i, r, t);
        v = fl_bf16_exp16(fl_vf_sub(fl_vf_load_pad(t, k, fl_vf_set1(-INFINITY)), mv));
        fl_vf_store(t, v);
        memcpy(e + i, t, (size_t)r * sizeof(float));
        acc = fl_vd16_add_f(acc, v);
    }
    if (ge != NULL)
        fl_bf16_store_rest(ge, gdst, i, n, gK, gnt);
    fl_vd16_store(a, acc);
    return fl_sm_fold16(a);
}

#else
static inline float fl_bf16_maxf(const uint16_t *z, Py_ssize_t n, float *amax)
{ (void)z; (void)n; (void)amax; return 0; }
static inline double fl_bf16_expsumf(const uint16_t *z, float *e, Py_ssize_t n, float m,
                                     float amax, const uint16_t *pz, const float *ge,
                                     uint16_t *gdst, float gK, int gstream, int gclean)
{
    (void)z; (void)e; (void)n; (void)m; (void)amax; (void)pz; (void)ge; (void)gdst; (void)gK;
    (void)gstream; (void)gclean;
    return 0;
}
static inline void fl_bf16_store_il(const float *e, uint16_t *dst, Py_ssize_t n, float K,
                                    int stream, int clean)
{ (void)e; (void)dst; (void)n; (void)K; (void)stream; (void)clean; }
static inline void fl_bf16_exp_apply(const float *x, float *out, Py_ssize_t n, int tame)
{ (void)x; (void)out; (void)n; (void)tame; }
#endif

#endif /* FASTLOSS_BF16_ROWS_H */

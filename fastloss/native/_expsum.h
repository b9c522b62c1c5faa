/* fastloss row kernels: the exp pass of softmax / cross-entropy over a float32 row.
 *
 *   fl_sm_expsumf(z, e, n, m, pz, pe, sg, sK):
 *       e[i] = exp(z[i] - m) for i < n  (z - m <= 0 or NaN: m is the row max),
 *       returns sum_i e[i] in double;
 *       sg != NULL: also sg[i] *= sK for i < n (the previous row's gradient,
 *       scaled while this row's exps run: the same multiply, so the same bits).
 *
 * The sum runs over 16 lanes (element i in lane i % 16): each lane adds blocks of
 * 8 of its values in float, then the block sums in double (the float part rounds
 * at most 8 times, each error relative to a sum of 8 values <= 1: well inside
 * 1e-6 of the row sum; converting every vector to double instead costs more than
 * the exp). The lanes are folded by fl_sm_fold16. Every variant below keeps these
 * blocks, lanes and order, so all ISA paths give the same bits.
 *
 * pz / pe: the same span of the next row, prefetched (for reading, and for
 * writing the gradient) one cache line per vector while this row's exp work
 * runs; the hardware prefetcher stops at every 4 KiB page, which a row of 1000
 * float32 crosses once per row. Pass z / e when there is none.
 *
 * Layout: the scalar exp (shared), then one `fl_sm_expsum_vec` per kind of
 * vector code (the full 16-value vectors; AVX2 / AVX-512, written once on the
 * fl_vf layer of _simd.h, also the masked tail and the sg scaling), then the
 * shared driver (scalar tail, sg scaling, fold).
 */
#ifndef FASTLOSS_EXPSUM_H
#define FASTLOSS_EXPSUM_H
#include "_simd.h"
#include "_vmath.h"

/* ---- shared: exp(x) of one float x <= 0 (or NaN) -------------------------
 * The exp reduction and core of _vmath.h without the overflow / subnormal
 * handling a non-positive argument does not need: x < -87.3 gives 0. */
FL_INLINE float fl_sm_expnegf(float x)
{
    float k, r;
    float kf = fl__reduce_f(x, &k, &r);
    float p = 1.0f + fl__expm1_core_f(r);
    float e = p * fl_u2f((fl_f2u(kf) - fl_f2u(FL_SHIFTF) + 127u) << 23);
    return x < -87.3f ? 0.0f : e;
}

/* ---- per ISA: fl_sm_expsum_vec -------------------------------------------
 * Runs the exp pass over the leading values it can do as vectors, leaves the
 * 16 lane sums in a[16] and returns how many values it did (the driver does
 * the rest one by one, into the same lanes). FL_SM_EXPSUM_SCALES_SG: the
 * variant did the sg scaling itself. */
#if defined(FL_SM_VEC)
#define FL_SM_EXPSUM_SCALES_SG 1

/* exp(x) of 16 values x <= 0 (or NaN), AVX2 and AVX-512 alike (the fl_vf layer
 * of _simd.h: the same operations, so the same bits): k = round(x log2 e) as in
 * fl__reduce_f, but r = x - k ln2 in ONE FMA with ln2 rounded to float (not the
 * hi/lo pair: the AVX2 level runs at the limit of the FMA ports, and one FMA less
 * is 10% on cross-entropy 4096 x 1000); e^r as one degree-6 polynomial (6 FMAs
 * instead of the expm1 core's 7 operations and the + 1); 2^k from the exponent
 * bits; x < -87.3 (and -inf) gives 0, NaN stays NaN. Error (tools/expsum_accuracy.py,
 * 6M points on [-87.3, 0] against float64 exp): at most 1.2 ulp for x > -10; below,
 * where |k| ln2's rounding error grows, at most 4.5 ulp on values under 5e-5 of the
 * row maximum. About 15% fewer instructions per vector than what GCC makes of
 * fl_sm_expnegf: two threads on this kind of 2-core VM share one core's vector
 * ports. */
/* (fl_sm_exp16_core: e^r, with kf = k + FL_SHIFTF into *kf_out; the bf16 rows of
 * _bf16_rows.h scale it by 2^k their own way) */
/* k = round(x log2 e) (kf = k + FL_SHIFTF into *kf_out) and r = x - k ln2 in one FMA */
FL_INLINE fl_vf fl_sm_exp16_reduce(fl_vf x, fl_vf *kf_out)
{
    fl_vf kf = fl_vf_fmadd(x, fl_vf_set1(FL_LOG2EF), fl_vf_set1(FL_SHIFTF));
    fl_vf kk = fl_vf_sub(kf, fl_vf_set1(FL_SHIFTF));
    *kf_out = kf;
    return fl_vf_fnmadd(kk, fl_vf_set1(0.693147182464599609375f), x);
}

FL_INLINE fl_vf fl_sm_exp16_core(fl_vf x, fl_vf *kf_out)
{
    fl_vf r = fl_sm_exp16_reduce(x, kf_out);
    fl_vf p = fl_vf_fmadd(fl_vf_set1(0.0013941118959337473f), r,
                          fl_vf_set1(0.008375134319067001f));
    p = fl_vf_fmadd(p, r, fl_vf_set1(0.04166635125875473f));
    p = fl_vf_fmadd(p, r, fl_vf_set1(0.16666415333747864f));
    p = fl_vf_fmadd(p, r, fl_vf_set1(0.5f));
    p = fl_vf_fmadd(p, r, fl_vf_set1(1.0f));
    return fl_vf_fmadd(p, r, fl_vf_set1(1.0f));
}

/* e^r p scaled by 2^k (kf = k + FL_SHIFTF from fl_sm_exp16_reduce): e^x; x < -87.3
 * (and -inf) give 0, NaN stays NaN. Shared by the exps of these rows and of the
 * bfloat16 rows (_bf16_rows.h), which differ only in their e^r. */
FL_INLINE fl_vf fl_sm_exp16_scale(fl_vf p, fl_vf kf, fl_vf x)
{
    return fl_vf_mul_or0(p, fl_vf_pow2_bits(kf, (int)(127u - fl_f2u(FL_SHIFTF))), x, -87.3f);
}

FL_INLINE fl_vf fl_sm_exp16(fl_vf x)
{
    fl_vf kf, p = fl_sm_exp16_core(x, &kf);
    return fl_sm_exp16_scale(p, kf, x);
}

/* AVX2 / AVX-512: all n values (the last n % 16 by masked loads and stores);
 * sg scaled in the same loop, its loads and stores overlapping the exp arithmetic */
FL_INLINE Py_ssize_t fl_sm_expsum_vec(const float *z, float *e, Py_ssize_t n, float m,
                                      const float *pz, float *pe, float *sg, float sK,
                                      double *a)
{
    Py_ssize_t i = 0, j;
    fl_vf mv = fl_vf_set1(m), kv = fl_vf_set1(sK), v, f;
    fl_vd16 acc = fl_vd16_zero();
    for (; i + 16 <= n; i = j) {
        Py_ssize_t end = i + 128 <= n ? i + 128 : i + ((n - i) & ~(Py_ssize_t)15);
        f = fl_vf_set1(0.0f);
        for (j = i; j < end; j += 16) {
            v = fl_sm_exp16(fl_vf_sub(fl_vf_load(z + j), mv));
            fl_vf_store(e + j, v);
            if (sg != NULL)
                fl_vf_store(sg + j, fl_vf_mul(fl_vf_load(sg + j), kv));
            __builtin_prefetch(pz + j, 0, 3);
            __builtin_prefetch(pe + j, 1, 3);
            f = fl_vf_add(f, v);
        }
        acc = fl_vd16_add_f(acc, f);
    }
    if (i < n) {
        fl_vmask k = fl_vmask_first(n - i);
        __builtin_prefetch(pz + i, 0, 3);
        __builtin_prefetch(pe + i, 1, 3);
        v = fl_sm_exp16(fl_vf_sub(fl_vf_load_pad(z + i, k, fl_vf_set1(-INFINITY)), mv));
        fl_vf_store_mask(e + i, k, v);
        if (sg != NULL)
            fl_vf_store_mask(sg + i, k, fl_vf_mul(fl_vf_load_pad(sg + i, k, fl_vf_set1(0.0f)), kv));
        acc = fl_vd16_add_f(acc, v);
        i = n;
    }
    fl_vd16_store(a, acc);
    return i;
}

#elif defined(__GNUC__) && !defined(__clang__)
#define FL_SM_EXPSUM_SCALES_SG 0

/* GCC vectors (SSE, NEON): all n values (the last n % 16 as one vector
 * padded with -inf, exp = 0); accumulators kept in vector registers (an array
 * would be spilled: a store-to-load chain per iteration) */
FL_INLINE Py_ssize_t fl_sm_expsum_vec(const float *z, float *e, Py_ssize_t n, float m,
                                      const float *pz, float *pe, float *sg, float sK,
                                      double *a)
{
    Py_ssize_t i = 0, j; int l;
    fl_sm_v8d a0 = {0, 0, 0, 0, 0, 0, 0, 0}, a1 = {0, 0, 0, 0, 0, 0, 0, 0};
    fl_sm_v16f v, f;
    (void)sg; (void)sK;
    for (; i + 16 <= n; i = j) {
        Py_ssize_t end = i + 128 <= n ? i + 128 : i + ((n - i) & ~(Py_ssize_t)15);
        f = (fl_sm_v16f){0};
        for (j = i; j < end; j += 16) {
            for (l = 0; l < 16; l++) v[l] = fl_sm_expnegf(z[j + l] - m);
            memcpy(e + j, &v, 64);
            __builtin_prefetch(pz + j, 0, 3);
            __builtin_prefetch(pe + j, 1, 3);
            f += v;
        }
        a0 += __builtin_convertvector(__builtin_shufflevector(f, f, 0, 1, 2, 3, 4, 5, 6, 7), fl_sm_v8d);
        a1 += __builtin_convertvector(__builtin_shufflevector(f, f, 8, 9, 10, 11, 12, 13, 14, 15), fl_sm_v8d);
    }
    if (i < n) {
        __builtin_prefetch(pz + i, 0, 3);
        __builtin_prefetch(pe + i, 1, 3);
        for (l = 0; l < 16; l++) f[l] = i + l < n ? z[i + l] : -INFINITY;
        for (l = 0; l < 16; l++) v[l] = fl_sm_expnegf(f[l] - m);
        memcpy(e + i, &v, (size_t)(n - i) * 4);
        a0 += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), fl_sm_v8d);
        a1 += __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), fl_sm_v8d);
        i = n;
    }
    for (l = 0; l < 8; l++) { a[l] = a0[l]; a[l + 8] = a1[l]; }
    return i;
}

#else
#define FL_SM_EXPSUM_SCALES_SG 0

/* plain C: whole blocks of 128 values (the driver does the rest) */
FL_INLINE Py_ssize_t fl_sm_expsum_vec(const float *z, float *e, Py_ssize_t n, float m,
                                      const float *pz, float *pe, float *sg, float sK,
                                      double *a)
{
    Py_ssize_t i = 0, j; int l;
    float f[16];
    (void)pz; (void)pe; (void)sg; (void)sK;
    for (l = 0; l < 16; l++) a[l] = 0.0;
    for (; i + 128 <= n; i += 128) {
        for (l = 0; l < 16; l++) f[l] = 0.0f;
        for (j = i; j < i + 128; j += 16)
            for (l = 0; l < 16; l++) {
                float v = fl_sm_expnegf(z[j + l] - m);
                e[j + l] = v;
                f[l] += v;
            }
        for (l = 0; l < 16; l++) a[l] += (double)f[l];
    }
    return i;
}
#endif

/* ---- shared driver ------------------------------------------------------- */
static inline double fl_sm_expsumf(const float *z, float *e, Py_ssize_t n, float m,
                                   const float *pz, float *pe, float *sg, float sK)
{
    double a[16];
    Py_ssize_t i = fl_sm_expsum_vec(z, e, n, m, pz, pe, sg, sK, a);
    for (; i < n; i++) {
        float v = fl_sm_expnegf(z[i] - m);
        e[i] = v;
        a[i & 15] += (double)v;
    }
#if !FL_SM_EXPSUM_SCALES_SG
    if (sg != NULL)
        for (i = 0; i < n; i++) sg[i] = sg[i] * sK;
#endif
    return fl_sm_fold16(a);
}

#endif

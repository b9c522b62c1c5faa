# Softmax, log-softmax and the cross-entropy family (included by _kernels.pyx).
#
# Rows of C classes are cut into fixed chunks of SM_CHUNK classes. Every
# kernel works in the same three steps, whatever the thread count:
#
#   A. per (row, chunk): chunk max m_k, s_k = sum exp(z - m_k) (stored as
#      e = exp(z - m_k) in the output row when a gradient is wanted), plus the
#      sums the loss needs (sum z, sum w z, sum of target weights...);
#   C. per row: m = max_k m_k, s = sum_k s_k exp(m_k - m), lse = m + log s,
#      the row loss and the gradient coefficients (all in double);
#   B. per (row, chunk): the gradient  g = e * K exp(m_k - m) - a_c.
#
# Rows are spread over threads (static schedule); when there are few rows and
# many chunks the (row, chunk) items of A and B are spread instead (two
# parallel phases). The chunking depends only on C, and every sum runs in a
# fixed order over SM_LANES independent partial accumulators, so results are
# bitwise identical for any thread count and either schedule.
#
# Sums over a row accumulate in double (float32 exps: blocks of 8 per lane in
# float first, then double): the float32 loss stays within 1e-6 relative of a
# float64 reference. AVX-512 builds run the float32 max and exp-sum through
# intrinsics (fewer instructions than GCC's code); other builds use GCC vector
# extensions or plain C. The next row's data is prefetched during the exp pass.

from libc.math cimport log as _c_log, exp as _c_exp

ctypedef fused label_t:
    cnp.int32_t
    cnp.int64_t

cdef enum:
    SM_CHUNK = 8192         # classes per chunk (fixed: results never depend on threads)
    SM_PAR_MIN = 16384      # serial below this much work, N (C + SM_ROW_COST) (measured, 2 cores)
    SM_ROW_COST = 64        # per-row overhead in element-equivalents
    SM_SPLIT_ROWS = 4       # split rows into chunks across threads when N < this x threads
    SM_ST = 5               # doubles of statistics per (row, chunk)
    SM_CF = 6               # doubles of coefficients per row
    SM_SMALL_C = 32         # below this many classes, step A works on blocks of rows
    SM_ROWBLOCK = 64        # rows per block in that case


# --- row primitives: simple counted loops, SM_LANES=16 partial accumulators --

cdef extern from *:
    """
    /* Row maximum with 16 running maxima held in two GCC vector registers:
     * a compare-and-select that compiles to vmaxps/blend (GCC's SLP does not
     * pack scalar float max chains). NaN is skipped (x > a is false); the
     * exp sum carries it. Max does not depend on the order, so the result is
     * the same for any split of the row. Plain C fallback without GCC vectors. */
    #include <string.h>
    #include <math.h>
    #if defined(__GNUC__)
    typedef float fl_sm_v16f __attribute__((vector_size(64)));
    typedef int fl_sm_v16i __attribute__((vector_size(64)));
    typedef double fl_sm_v8d __attribute__((vector_size(64)));
    typedef long long fl_sm_v8l __attribute__((vector_size(64)));
    #define FL_SM_SEL(T, I, x, a) ({ I m_ = (x) > (a); (T)(((I)(x) & m_) | ((I)(a) & ~m_)); })
    /* 4 independent accumulators of one 512-bit vector each (two ymm halves
     * on AVX2): the compare-select chains overlap instead of waiting on each
     * other's latency. */
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
    #if defined(__AVX512F__)
    /* AVX-512: vmaxps(x, a) is "x > a ? x : a" in one instruction (a NaN x
     * keeps a); the last n - i < 16 values through a masked load padded with -inf */
    #include <immintrin.h>
    static inline float fl_sm_maxf(const float *z, Py_ssize_t n) {
        __m512 a0 = _mm512_set1_ps(-INFINITY), a1 = a0, a2 = a0, a3 = a0;
        Py_ssize_t i = 0;
        for (; i + 64 <= n; i += 64) {
            a0 = _mm512_max_ps(_mm512_loadu_ps(z + i), a0);
            a1 = _mm512_max_ps(_mm512_loadu_ps(z + i + 16), a1);
            a2 = _mm512_max_ps(_mm512_loadu_ps(z + i + 32), a2);
            a3 = _mm512_max_ps(_mm512_loadu_ps(z + i + 48), a3);
        }
        for (; i + 16 <= n; i += 16) a0 = _mm512_max_ps(_mm512_loadu_ps(z + i), a0);
        if (i < n) {
            __mmask16 k = (__mmask16)((1u << (unsigned)(n - i)) - 1u);
            a0 = _mm512_max_ps(_mm512_mask_loadu_ps(a1, k, z + i), a0);
        }
        a0 = _mm512_max_ps(a1, a0);
        a2 = _mm512_max_ps(a3, a2);
        return _mm512_reduce_max_ps(_mm512_max_ps(a2, a0));
    }
    #else
    static inline float fl_sm_maxf(const float *z, Py_ssize_t n) {
        FL_SM_MAX_BODY(fl_sm_v16f, fl_sm_v16i, float, 16)
    }
    #endif
    static inline double fl_sm_max(const double *z, Py_ssize_t n) {
        FL_SM_MAX_BODY(fl_sm_v8d, fl_sm_v8l, double, 8)
    }
    #else
    static inline float fl_sm_maxf(const float *z, Py_ssize_t n) {
        float r = -INFINITY; Py_ssize_t i;
        for (i = 0; i < n; i++) r = z[i] > r ? z[i] : r;
        return r;
    }
    static inline double fl_sm_max(const double *z, Py_ssize_t n) {
        double r = -INFINITY; Py_ssize_t i;
        for (i = 0; i < n; i++) r = z[i] > r ? z[i] : r;
        return r;
    }
    #endif
    """
    float fl_sm_maxf(const float* z, Py_ssize_t n) nogil
    double fl_sm_max(const double* z, Py_ssize_t n) nogil


cdef inline floating _sm_max(const floating* z, Py_ssize_t n) noexcept nogil:
    """max over z (NaN skipped; the exp sum carries it)."""
    if floating is float:
        return fl_sm_maxf(z, n)
    else:
        return fl_sm_max(z, n)


cdef inline double _sm_fold(double* acc) noexcept nogil:
    """Fixed-order pairwise combination of 16 partial sums."""
    cdef Py_ssize_t l
    for l in range(8):
        acc[l] = acc[l] + acc[l + 8]
    for l in range(4):
        acc[l] = acc[l] + acc[l + 4]
    return (acc[0] + acc[2]) + (acc[1] + acc[3])


cdef inline double _sm_lanesum(const floating* e, Py_ssize_t n) noexcept nogil:
    """sum e in double over 16 lanes (element i in lane i % 16), folded in a
    fixed order: deterministic, and SLP-vectorised (no -ffast-math needed)."""
    cdef double d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14, d15
    cdef Py_ssize_t i = 0
    d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, d14, d15 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    while i + 16 <= n:
        d0 += e[i + 0]
        d1 += e[i + 1]
        d2 += e[i + 2]
        d3 += e[i + 3]
        d4 += e[i + 4]
        d5 += e[i + 5]
        d6 += e[i + 6]
        d7 += e[i + 7]
        d8 += e[i + 8]
        d9 += e[i + 9]
        d10 += e[i + 10]
        d11 += e[i + 11]
        d12 += e[i + 12]
        d13 += e[i + 13]
        d14 += e[i + 14]
        d15 += e[i + 15]
        i += 16
    if i < n:
        if i + 0 < n:
            d0 += e[i + 0]
        if i + 1 < n:
            d1 += e[i + 1]
        if i + 2 < n:
            d2 += e[i + 2]
        if i + 3 < n:
            d3 += e[i + 3]
        if i + 4 < n:
            d4 += e[i + 4]
        if i + 5 < n:
            d5 += e[i + 5]
        if i + 6 < n:
            d6 += e[i + 6]
        if i + 7 < n:
            d7 += e[i + 7]
        if i + 8 < n:
            d8 += e[i + 8]
        if i + 9 < n:
            d9 += e[i + 9]
        if i + 10 < n:
            d10 += e[i + 10]
        if i + 11 < n:
            d11 += e[i + 11]
        if i + 12 < n:
            d12 += e[i + 12]
        if i + 13 < n:
            d13 += e[i + 13]
        if i + 14 < n:
            d14 += e[i + 14]
        if i + 15 < n:
            d15 += e[i + 15]
    d0 = d0 + d8
    d1 = d1 + d9
    d2 = d2 + d10
    d3 = d3 + d11
    d4 = d4 + d12
    d5 = d5 + d13
    d6 = d6 + d14
    d7 = d7 + d15
    d0 = d0 + d4
    d1 = d1 + d5
    d2 = d2 + d6
    d3 = d3 + d7
    return (d0 + d2) + (d1 + d3)


cdef extern from *:
    """
    #include <string.h>
    FL_INLINE float fl_sm_expnegf(float x)
    {
        float k, r;
        float kf = fl__reduce_f(x, &k, &r);
        float p = 1.0f + fl__expm1_core_f(r);
        float e = p * fl_u2f((fl_f2u(kf) - fl_f2u(FL_SHIFTF) + 127u) << 23);
        return x < -87.3f ? 0.0f : e;
    }
    /* e = exp(z - m) stored, and sum e over 16 lanes (element i in lane
     * i % 16): each lane adds blocks of 8 of its values in float, then the
     * block sums in double (the float part rounds at most 8 times, each error
     * relative to a sum of 8 values <= 1: well inside 1e-6 of the row sum;
     * converting every vector to double instead costs more than the exp).
     * The lanes are folded in the fixed order of _sm_lanesum.
     * pz / pe: the same span of the next row, prefetched (for reading, and for
     * writing the gradient) one cache line per vector while this row's exp
     * work runs; the hardware prefetcher stops at every 4 KiB page, which a
     * row of 1000 float32 crosses once per row. Pass z / e when there is none. */
    #if defined(__AVX512F__)
    /* AVX-512 exp(x) of 16 values x <= 0 (or NaN): the reduction of
     * fl__reduce_f, e^r as one degree-6 polynomial (0.89 ulp on |r| <= ln2/2;
     * 6 FMAs instead of the expm1 core's 7 operations and the + 1), 2^k from
     * the exponent bits; x < -87.3 (and -inf) gives 0, NaN stays NaN. About
     * 15% fewer instructions per vector than what GCC makes of fl_sm_expnegf:
     * two threads on this kind of 2-core VM share one core's vector ports. */
    static inline __m512 fl_sm_exp16(__m512 x)
    {
        __mmask16 ok = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_NLT_UQ);
        __m512 kf = _mm512_fmadd_ps(x, _mm512_set1_ps(FL_LOG2EF), _mm512_set1_ps(FL_SHIFTF));
        __m512 kk = _mm512_sub_ps(kf, _mm512_set1_ps(FL_SHIFTF));
        __m512 r = _mm512_fnmadd_ps(kk, _mm512_set1_ps(FL_LN2HIF), x);
        r = _mm512_fnmadd_ps(kk, _mm512_set1_ps(FL_LN2LOF), r);
        __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0.0013941118959337473f), r,
                                   _mm512_set1_ps(0.008375134319067001f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.04166635125875473f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.16666415333747864f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
        __m512i b = _mm512_slli_epi32(_mm512_add_epi32(_mm512_castps_si512(kf),
            _mm512_set1_epi32((int)(127u - fl_f2u(FL_SHIFTF)))), 23);
        return _mm512_maskz_mul_ps(ok, p, _mm512_castsi512_ps(b));
    }
    static inline __m512d fl_sm_lo8(__m512 f) { return _mm512_cvtps_pd(_mm512_castps512_ps256(f)); }
    static inline __m512d fl_sm_hi8(__m512 f)
    {
        return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
    }
    #endif
    static inline double fl_sm_expsumf(const float *z, float *e, Py_ssize_t n, float m,
                                       const float *pz, float *pe, float *sg, float sK)
    {
        double a[16]; Py_ssize_t i = 0, j; int l;
    #if defined(__AVX512F__)
        /* the same blocks, lanes and order as the generic code below; sg != NULL:
         * the previous row's gradient (n values) is scaled by sK in the same loop,
         * its loads and stores overlapping this row's exp arithmetic */
        __m512 mv = _mm512_set1_ps(m), kv = _mm512_set1_ps(sK), v, f;
        __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
        for (; i + 16 <= n; i = j) {
            Py_ssize_t end = i + 128 <= n ? i + 128 : i + ((n - i) & ~(Py_ssize_t)15);
            f = _mm512_setzero_ps();
            for (j = i; j < end; j += 16) {
                v = fl_sm_exp16(_mm512_sub_ps(_mm512_loadu_ps(z + j), mv));
                _mm512_storeu_ps(e + j, v);
                if (sg != NULL)
                    _mm512_storeu_ps(sg + j, _mm512_mul_ps(_mm512_loadu_ps(sg + j), kv));
                __builtin_prefetch(pz + j, 0, 3);
                __builtin_prefetch(pe + j, 1, 3);
                f = _mm512_add_ps(f, v);
            }
            a0 = _mm512_add_pd(a0, fl_sm_lo8(f));
            a1 = _mm512_add_pd(a1, fl_sm_hi8(f));
        }
        if (i < n) {
            __mmask16 k = (__mmask16)((1u << (unsigned)(n - i)) - 1u);
            __builtin_prefetch(pz + i, 0, 3);
            __builtin_prefetch(pe + i, 1, 3);
            v = fl_sm_exp16(_mm512_sub_ps(
                _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, z + i), mv));
            _mm512_mask_storeu_ps(e + i, k, v);
            if (sg != NULL)
                _mm512_mask_storeu_ps(sg + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, sg + i), kv));
            a0 = _mm512_add_pd(a0, fl_sm_lo8(v));
            a1 = _mm512_add_pd(a1, fl_sm_hi8(v));
            i = n;
        }
        sg = NULL;      /* done */
        _mm512_storeu_pd(a, a0);
        _mm512_storeu_pd(a + 8, a1);
    #elif defined(__GNUC__) && !defined(__clang__)
        /* accumulators kept in vector registers (an array would be spilled:
         * a store-to-load chain per iteration) */
        typedef float fl_sm_v16f_ __attribute__((vector_size(64)));
        typedef double fl_sm_v8d_ __attribute__((vector_size(64)));
        fl_sm_v8d_ a0 = {0, 0, 0, 0, 0, 0, 0, 0}, a1 = {0, 0, 0, 0, 0, 0, 0, 0};
        fl_sm_v16f_ v, f;
        for (; i + 16 <= n; i = j) {
            Py_ssize_t end = i + 128 <= n ? i + 128 : i + ((n - i) & ~(Py_ssize_t)15);
            f = (fl_sm_v16f_){0};
            for (j = i; j < end; j += 16) {
                for (l = 0; l < 16; l++) v[l] = fl_sm_expnegf(z[j + l] - m);
                memcpy(e + j, &v, 64);
                __builtin_prefetch(pz + j, 0, 3);
                __builtin_prefetch(pe + j, 1, 3);
                f += v;
            }
            a0 += __builtin_convertvector(__builtin_shufflevector(f, f, 0, 1, 2, 3, 4, 5, 6, 7), fl_sm_v8d_);
            a1 += __builtin_convertvector(__builtin_shufflevector(f, f, 8, 9, 10, 11, 12, 13, 14, 15), fl_sm_v8d_);
        }
        if (i < n) {
            /* the last n - i < 16 values as one vector padded with -inf (exp = 0) */
            __builtin_prefetch(pz + i, 0, 3);
            __builtin_prefetch(pe + i, 1, 3);
            for (l = 0; l < 16; l++) f[l] = i + l < n ? z[i + l] : -INFINITY;
            for (l = 0; l < 16; l++) v[l] = fl_sm_expnegf(f[l] - m);
            memcpy(e + i, &v, (size_t)(n - i) * 4);
            a0 += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), fl_sm_v8d_);
            a1 += __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), fl_sm_v8d_);
            i = n;
        }
        for (l = 0; l < 8; l++) { a[l] = a0[l]; a[l + 8] = a1[l]; }
    #else
        float f[16];
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
    #endif
        for (; i < n; i++) {
            float v = fl_sm_expnegf(z[i] - m);
            e[i] = v;
            a[i & 15] += (double)v;
        }
        if (sg != NULL)
            for (i = 0; i < n; i++) sg[i] = sg[i] * sK;
        for (l = 0; l < 8; l++) a[l] = a[l] + a[l + 8];
        for (l = 0; l < 4; l++) a[l] = a[l] + a[l + 4];
        return (a[0] + a[2]) + (a[1] + a[3]);
    }
    """
    double fl_sm_expsumf(const float* z, float* e, Py_ssize_t n, float m,
                         const float* pz, float* pe, float* sg, float sK) nogil


cdef inline double _sm_sumexp(const floating* z, floating* store, Py_ssize_t n,
                              floating m, const floating* pz,
                              floating* pe, floating* sg,
                              floating sK) noexcept nogil:
    """sum exp(z - m) in double; e = exp(z - m) goes to store when store != NULL
    (store may alias z), else to a scratch chunk (n <= SM_CHUNK). One flat exp
    loop (vectorised once vexp is), then the 16-lane sum. pz / pe (float32):
    n values of the next row to prefetch for reading / writing. sg != NULL:
    also sg[c] *= sK for its n values (the previous row's gradient)."""
    cdef floating buf[SM_CHUNK]
    cdef floating* e = &buf[0]
    cdef Py_ssize_t i
    if store != NULL:
        e = store
    if floating is float:
        if m > -INFINITY:       # z - m <= 0 (or NaN): the one-pass float kernel
            return fl_sm_expsumf(z, e, n, m, z if pz == NULL else pz,
                                 e if (pe == NULL or store == NULL) else pe, sg, sK)
    if sg != NULL:
        for i in range(n):
            sg[i] = sg[i] * sK
    for i in range(n):
        e[i] = vexp(z[i] - m)
    return _sm_lanesum(e, n)


cdef inline double _sm_masked(const floating* z, floating* store, Py_ssize_t n) noexcept nogil:
    """A chunk whose max is -inf holds only -inf and NaN: e = 0 or NaN."""
    cdef double s = 0.0
    cdef floating e
    cdef Py_ssize_t i
    for i in range(n):
        e = <floating>0 if z[i] == -INFINITY else z[i]
        if store != NULL:
            store[i] = e
        s += e
    return s


cdef inline double _sm_sum(const floating* z, const floating* w, Py_ssize_t n) noexcept nogil:
    """sum z (w == NULL) or sum w z, in double."""
    cdef double acc[16]
    cdef Py_ssize_t i = 0, l
    for l in range(16):
        acc[l] = 0.0
    if w == NULL:
        while i + 16 <= n:
            for l in range(16):
                acc[l] += z[i + l]
            i += 16
        if i < n:
            for l in range(16):
                acc[l] += z[i + l] if i + l < n else <floating>0
    else:
        while i + 16 <= n:
            for l in range(16):
                acc[l] += <double>w[i + l] * <double>z[i + l]
            i += 16
        if i < n:
            for l in range(16):
                acc[l] += <double>w[i + l] * <double>z[i + l] if i + l < n else 0.0
    for l in range(8):
        acc[l] = acc[l] + acc[l + 8]
    for l in range(4):
        acc[l] = acc[l] + acc[l + 4]
    return (acc[0] + acc[2]) + (acc[1] + acc[3])


cdef inline void _sm_soft_sums(const floating* z, const floating* t, const floating* w,
                               Py_ssize_t n, double keep, double spread,
                               double* a_sum, double* az_sum) noexcept nogil:
    """a_c = w_c (t_c keep + spread): a_sum += sum a, az_sum += sum a z (double)."""
    cdef double acc[16]
    cdef double acz[16]
    cdef double a
    cdef Py_ssize_t i, l
    for l in range(16):
        acc[l] = 0.0
        acz[l] = 0.0
    for i in range(n):
        l = i & 15
        a = <double>t[i] * keep + spread
        if w != NULL:
            a = a * <double>w[i]
        acc[l] += a
        acz[l] += a * <double>z[i]
    a_sum[0] = _sm_fold(acc)
    az_sum[0] = _sm_fold(acz)


cdef inline void _sm_cap(const floating* z, floating* out, Py_ssize_t n, floating cap) noexcept nogil:
    """Soft-capping: out = cap tanh(z / cap)."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = cap * vtanh(z[i] / cap)


# --- cross-entropy: the three steps ------------------------------------------

cdef struct SmConf:
    Py_ssize_t N
    Py_ssize_t C
    Py_ssize_t nchunks
    long long ignore
    double eps          # label smoothing
    double zl           # z-loss coefficient
    double cap          # soft-cap (0: none)
    double sce          # gradient scale of the cross-entropy part
    double sz           # gradient scale of the z-loss part
    double W            # sum of class weights (C without weights)
    bint soft           # class-probability targets
    bint want_grad
    bint prelog         # step A stored log(s) in slot 4 (few-class path)


cdef inline bint _ce_ignored(const SmConf* cf, const label_t* lab, Py_ssize_t i) noexcept nogil:
    return (not cf.soft) and lab[i] == cf.ignore


cdef void _ce_A(const SmConf* cf, Py_ssize_t i, Py_ssize_t k, const floating* z,
                const label_t* lab, const floating* t, const floating* w, floating* g,
                floating* scratch, double* st, double* zy, floating* sg=NULL,
                floating sK=0) noexcept nogil:
    """Step A for (row i, chunk k): statistics, and e (or capped logits) into g.
    sg != NULL (row i not ignored, one chunk, gradient wanted): also scale the
    C values at sg by sK -- the previous row's step B, fused into this row's exp
    loop by _ce_rows."""
    cdef Py_ssize_t C = cf.C
    cdef Py_ssize_t off = k * SM_CHUNK
    cdef Py_ssize_t n = C - off if C - off < SM_CHUNK else SM_CHUNK
    cdef const floating* src = z + i * C + off
    cdef floating* work = NULL
    cdef double* s4 = st + (i * cf.nchunks + k) * SM_ST
    cdef floating mk
    cdef double sk, az = 0.0, asum = 0.0
    cdef Py_ssize_t y, c
    cdef bint store_e
    if _ce_ignored(cf, lab, i):
        return
    if g != NULL:
        work = g + i * C + off
    elif cf.cap > 0:
        work = scratch
    if cf.cap > 0:
        _sm_cap(src, work, n, <floating>cf.cap)
        src = work
    store_e = g != NULL and not (cf.cap > 0)
    mk = _sm_max(src, n)
    if cf.soft:
        _sm_soft_sums(src, t + i * C + off, NULL if w == NULL else w + off, n,
                      1.0 - cf.eps, cf.eps / C, &asum, &az)
    else:
        y = <Py_ssize_t>lab[i]
        if off <= y < off + n:
            zy[i] = src[y - off]
        if cf.eps > 0:
            az = _sm_sum(src, NULL if w == NULL else w + off, n)
    if mk == -INFINITY:
        sk = _sm_masked(src, work if store_e else NULL, n)
        if sg != NULL:
            for c in range(n):
                sg[c] = sg[c] * sK
    else:
        # prefetch the same chunk of the next row (its logits, its gradient)
        sk = _sm_sumexp(src, work if store_e else NULL, n, mk,
                        z + (i + 1) * C + off if i + 1 < cf.N else NULL,
                        work + C if store_e and i + 1 < cf.N else NULL, sg, sK)
    s4[0] = mk
    s4[1] = sk
    s4[2] = az
    s4[3] = asum


cdef void _ce_A_block(const SmConf* cf, Py_ssize_t i0, Py_ssize_t i1, const floating* z,
                      const label_t* lab, const floating* t, const floating* w, floating* g,
                      double* st, double* zy) noexcept nogil:
    """Step A for rows [i0, i1) of few classes (C < SM_SMALL_C, no soft-cap, at most
    SM_ROWBLOCK rows): per-row max and sums, then ONE flat exp loop over the block's
    C (i1 - i0) contiguous values (vectorised across rows), then per-row sums.
    Ignored rows are computed too and zeroed by step B."""
    cdef Py_ssize_t C = cf.C, i, c, j
    cdef const floating* zr
    cdef floating* gr
    cdef floating mk, x
    cdef double* s4
    cdef double az, asum, s0, s1
    cdef floating buf[SM_ROWBLOCK * SM_SMALL_C]
    cdef floating* wk = &buf[0]      # row i at wk + (i - i0) C
    if g != NULL:
        wk = g + i0 * C
    for i in range(i0, i1):
        zr = z + i * C
        gr = wk + (i - i0) * C
        s4 = st + i * SM_ST
        mk = -INFINITY
        for c in range(C):
            x = zr[c]
            mk = x if x > mk else mk      # NaN is skipped; the exp sum carries it
        az = 0.0
        asum = 0.0
        if cf.soft:
            _sm_soft_sums(zr, t + i * C, w, C, 1.0 - cf.eps, cf.eps / C, &asum, &az)
        elif not _ce_ignored(cf, lab, i):
            zy[i] = zr[<Py_ssize_t>lab[i]]
            if cf.eps > 0:
                az = _sm_sum(zr, w, C)
        s4[0] = mk
        s4[2] = az
        s4[3] = asum
        for c in range(C):
            gr[c] = zr[c] - mk
    for j in range((i1 - i0) * C):
        wk[j] = vexp(wk[j])
    for i in range(i0, i1):
        gr = wk + (i - i0) * C
        s4 = st + i * SM_ST
        if s4[0] == -INFINITY:
            # only -inf and NaN: e = 0 or NaN (the shifted values are NaN here)
            for c in range(C):
                gr[c] = <floating>0 if z[i * C + c] == -INFINITY else z[i * C + c]
        s0 = 0.0
        s1 = 0.0
        c = 0
        while c + 2 <= C:
            s0 += gr[c]
            s1 += gr[c + 1]
            c += 2
        if c < C:
            s0 += gr[c]
        s4[1] = s0 + s1
    # log of the row sums, vectorised across the block's rows
    for i in range(i0, i1):
        st[i * SM_ST + 4] = vlog(st[i * SM_ST + 1])


cdef void _ce_C(const SmConf* cf, Py_ssize_t i, const label_t* lab, const floating* w,
                const floating* go, const double* st, const double* zy, double* cfs,
                double* rl) noexcept nogil:
    """Step C for row i: combine the chunks, row loss, gradient coefficients."""
    cdef const double* s4 = st + i * cf.nchunks * SM_ST
    cdef double* cr = cfs + i * SM_CF
    cdef double m = -INFINITY, s = 0.0, az = 0.0, A = 0.0, ls, lse, loss, wy = 1.0, r, sce
    cdef Py_ssize_t k
    cdef double C = <double>cf.C
    if _ce_ignored(cf, lab, i):
        rl[i] = 0.0
        cr[5] = 0.0
        return
    for k in range(cf.nchunks):
        m = s4[k * SM_ST] if s4[k * SM_ST] > m else m
    if cf.nchunks == 1:
        s, az, A = s4[1], s4[2], s4[3]
    else:
        for k in range(cf.nchunks):
            s = s + s4[k * SM_ST + 1] * vexp(s4[k * SM_ST] - m)
            az = az + s4[k * SM_ST + 2]
            A = A + s4[k * SM_ST + 3]
    ls = s4[4] if cf.prelog else _c_log(s)     # libc: one scalar log per row
    lse = m + ls
    if cf.soft:
        loss = A * lse - az
    else:
        if w != NULL:
            wy = <double>w[<Py_ssize_t>lab[i]]
        loss = (1.0 - cf.eps) * wy * ((m - zy[i]) + ls)
        if cf.eps > 0:
            loss = loss + cf.eps / C * (cf.W * lse - az)
        A = (1.0 - cf.eps) * wy + cf.eps / C * cf.W
    cr[5] = 0.0
    if cf.zl != 0:
        cr[5] = cf.zl * lse * lse
        loss = loss + cr[5]
    rl[i] = loss
    if cf.want_grad:
        r = 1.0 if go == NULL else <double>go[i]
        sce = r * cf.sce
        cr[0] = m
        cr[1] = (sce * A + r * cf.sz * 2.0 * cf.zl * lse) / s    # K: multiplies exp(z - m)
        cr[2] = sce * cf.eps / C                                # B0: spread part of a_c / w_c
        cr[3] = sce * (1.0 - cf.eps)                            # B1: soft targets, x t_c w_c
        cr[4] = sce * (1.0 - cf.eps) * wy                       # target correction (index)


cdef void _ce_B(const SmConf* cf, Py_ssize_t i, Py_ssize_t k, const label_t* lab,
                const floating* t, const floating* w, floating* g, const double* st,
                const double* cfs) noexcept nogil:
    """Step B for (row i, chunk k): g = e K exp(m_k - m) - w_c (t_c B1 + B0)."""
    cdef Py_ssize_t C = cf.C
    cdef Py_ssize_t off = k * SM_CHUNK
    cdef Py_ssize_t n = C - off if C - off < SM_CHUNK else SM_CHUNK
    cdef floating* gr = g + i * C + off
    cdef const double* cr = cfs + i * SM_CF
    cdef double mk = st[(i * cf.nchunks + k) * SM_ST]
    cdef floating Kk, B0, B1, cap, e, zc, d, mkf
    cdef const floating* tr
    cdef const floating* wr
    cdef Py_ssize_t c
    if _ce_ignored(cf, lab, i):
        for c in range(n):
            gr[c] = 0
        return
    Kk = <floating>(cr[1] if cf.nchunks == 1 else cr[1] * vexp(mk - cr[0]))
    B0 = <floating>cr[2]
    B1 = <floating>cr[3]
    wr = NULL if w == NULL else w + off
    tr = NULL if t == NULL else t + i * C + off
    if cf.cap > 0:
        # gr holds the capped logits; d(cap tanh(z/cap))/dz = 1 - (zc/cap)^2
        cap = <floating>cf.cap
        mkf = <floating>mk
        for c in range(n):
            zc = gr[c]
            e = vexp(zc - mkf) * Kk
            if tr != NULL:
                e = e - (tr[c] * B1 + B0) * (<floating>1 if wr == NULL else wr[c])
            elif wr != NULL:
                e = e - wr[c] * B0
            else:
                e = e - B0
            d = zc / cap
            gr[c] = e * (<floating>1 - d * d)
        return
    if tr != NULL:
        if wr == NULL:
            for c in range(n):
                gr[c] = gr[c] * Kk - (tr[c] * B1 + B0)
        else:
            for c in range(n):
                gr[c] = gr[c] * Kk - wr[c] * (tr[c] * B1 + B0)
    elif cf.eps == 0:
        for c in range(n):
            gr[c] = gr[c] * Kk
    elif wr == NULL:
        for c in range(n):
            gr[c] = gr[c] * Kk - B0
    else:
        for c in range(n):
            gr[c] = gr[c] * Kk - wr[c] * B0


cdef inline void _ce_target(const SmConf* cf, Py_ssize_t i, const label_t* lab, floating* g,
                            const double* zy, const double* cfs) noexcept nogil:
    """Index targets: subtract the target class's coefficient from its gradient."""
    cdef Py_ssize_t y
    cdef double f = 1.0, d
    if cf.soft or _ce_ignored(cf, lab, i):
        return
    y = <Py_ssize_t>lab[i]
    if cf.cap > 0:
        d = zy[i] / cf.cap
        f = 1.0 - d * d
    g[i * cf.C + y] = g[i * cf.C + y] - <floating>(cfs[i * SM_CF + 4] * f)


cdef void _ce_rows(const SmConf* cf, Py_ssize_t lo, Py_ssize_t hi, const floating* z,
                   const label_t* lab, const floating* t, const floating* w,
                   const floating* go, floating* g, floating* scratch, double* st,
                   double* zy, double* cfs, double* rl) noexcept nogil:
    """Rows [lo, hi) in order: steps A, C, B and the target correction. When
    step B is a plain scaling (float32, one chunk, index targets, no label
    smoothing or soft-cap) row i-1's step B runs inside row i's exp loop, its
    loads and stores overlapping the exp arithmetic (the same multiply, so the
    same bits)."""
    cdef Py_ssize_t i, k, pend = -1     # pend: the row whose step B waits
    cdef bint fuse = False
    if floating is float:
        fuse = g != NULL and cf.nchunks == 1 and not cf.soft and cf.eps == 0 and not (cf.cap > 0)
    for i in range(lo, hi):
        if fuse and not _ce_ignored(cf, lab, i):
            _ce_A(cf, i, 0, z, lab, t, w, g, scratch, st, zy,
                  g + pend * cf.C if pend >= 0 else NULL,
                  <floating>cfs[pend * SM_CF + 1] if pend >= 0 else 0)
            if pend >= 0:
                _ce_target(cf, pend, lab, g, zy, cfs)
            _ce_C(cf, i, lab, w, go, st, zy, cfs, rl)
            pend = i
            continue
        if pend >= 0:
            _ce_B(cf, pend, 0, lab, t, w, g, st, cfs)
            _ce_target(cf, pend, lab, g, zy, cfs)
            pend = -1
        for k in range(cf.nchunks):
            _ce_A(cf, i, k, z, lab, t, w, g, scratch, st, zy)
        _ce_C(cf, i, lab, w, go, st, zy, cfs, rl)
        if g != NULL:
            for k in range(cf.nchunks):
                _ce_B(cf, i, k, lab, t, w, g, st, cfs)
            _ce_target(cf, i, lab, g, zy, cfs)
    if pend >= 0:
        _ce_B(cf, pend, 0, lab, t, w, g, st, cfs)
        _ce_target(cf, pend, lab, g, zy, cfs)


def ce_check_labels(const label_t[::1] labels, Py_ssize_t C, long long ignore_index,
                    const double[::1] weight):
    """Scan class-index targets before any logit is read.

    Returns (position of the first label outside [0, C) that is not
    ignore_index or -1, number of non-ignored labels, sum of weight[label]
    over them in double, or the count without weight).
    """
    cdef Py_ssize_t n = labels.shape[0], i, bad = -1, count = 0
    cdef long long y
    cdef double wsum = 0.0
    cdef bint has_w = weight is not None
    with nogil:
        for i in range(n):
            y = labels[i]
            if y == ignore_index:
                continue
            if y < 0 or y >= C:
                bad = i
                break
            count += 1
            if has_w:
                wsum += weight[y]
    if not has_w:
        wsum = <double>count
    return bad, count, wsum


def cross_entropy(const floating[:, ::1] logits, const label_t[::1] labels,
                  const floating[:, ::1] target_prob, const floating[::1] weight,
                  const floating[::1] grad_output, floating[:, ::1] grad, double[::1] row_loss,
                  long long ignore_index, double label_smoothing, double z_loss, double softcap,
                  double grad_scale, double z_grad_scale, double weight_sum, int num_threads):
    """Fused cross-entropy over validated rows; returns (sum of row losses, sum of
    their z-loss parts), in double, summed in row order.

    logits (N, C); labels (N,) class indices (index mode) or target_prob
    (N, C) class probabilities (soft mode: labels is then an empty array);
    weight (C,) or None; grad_output (N,) per-row upstream gradient or None;
    grad (N, C) output or None (loss only) -- it may be ``logits`` itself.
    Row loss (index mode, a_c = (1 - eps) w_y [c = y] + eps/C w_c; soft mode,
    a_c = w_c ((1 - eps) t_c + eps/C)):
        l = sum_c a_c (lse - z_c) + z_loss lse^2,    lse = logsumexp(z)
    gradient (per row, r = grad_output):
        g_c = r (grad_scale (A p_c - a_c) + z_grad_scale 2 z_loss lse p_c),  A = sum_c a_c
    With softcap > 0, z is first replaced by softcap tanh(z / softcap) and
    g is multiplied by its derivative.
    """
    cdef SmConf cf
    cdef Py_ssize_t N = logits.shape[0], C = logits.shape[1]
    cdef Py_ssize_t nch, items, it, i, k, nblk, i0, i1
    cdef double* st
    cdef double* cfs
    cdef double* zy
    cdef floating* scratch
    cdef double total = 0.0, ztotal = 0.0
    cdef int nt
    cdef bint split
    cdef const floating* zp
    cdef const label_t* lp = NULL
    cdef const floating* tp = NULL
    cdef const floating* wp = NULL
    cdef const floating* gop = NULL
    cdef floating* gp = NULL
    cdef double* rl = &row_loss[0] if N > 0 else NULL
    if N == 0 or C == 0:
        return 0.0, 0.0
    zp = &logits[0, 0]
    nch = (C + SM_CHUNK - 1) // SM_CHUNK
    cf.N = N
    cf.C = C
    cf.nchunks = nch
    cf.ignore = ignore_index
    cf.eps = label_smoothing
    cf.zl = z_loss
    cf.cap = softcap
    cf.sce = grad_scale
    cf.sz = z_grad_scale
    cf.W = weight_sum
    cf.soft = target_prob is not None
    cf.want_grad = grad is not None
    cf.prelog = False
    if cf.soft:
        tp = &target_prob[0, 0]
    else:
        lp = &labels[0]
    if weight is not None:
        wp = &weight[0]
    if grad_output is not None:
        gop = &grad_output[0]
    if grad is not None:
        gp = &grad[0, 0]
    items = N * nch
    st = <double*>malloc(items * SM_ST * sizeof(double))
    cfs = <double*>malloc(N * SM_CF * sizeof(double))
    zy = <double*>malloc(N * sizeof(double))
    if st == NULL or cfs == NULL or zy == NULL:
        free(st)
        free(cfs)
        free(zy)
        raise MemoryError()
    nt = num_threads if N * (C + SM_ROW_COST) >= SM_PAR_MIN else 1
    split = nt > 1 and nch > 1 and N < SM_SPLIT_ROWS * nt
    with nogil:
        if C < SM_SMALL_C and not (cf.cap > 0):
            # few classes: blocks of rows, the exp vectorised across rows
            cf.prelog = True
            nblk = (N + SM_ROWBLOCK - 1) // SM_ROWBLOCK
            if nt > 1:
                for it in prange(nblk, schedule="static", num_threads=nt):
                    i0 = it * SM_ROWBLOCK
                    i1 = N if N - i0 < SM_ROWBLOCK else i0 + SM_ROWBLOCK
                    _ce_A_block(&cf, i0, i1, zp, lp, tp, wp, gp, st, zy)
                    for i in range(i0, i1):
                        _ce_C(&cf, i, lp, wp, gop, st, zy, cfs, rl)
                        if gp != NULL:
                            _ce_B(&cf, i, 0, lp, tp, wp, gp, st, cfs)
                            _ce_target(&cf, i, lp, gp, zy, cfs)
            else:
                for it in range(nblk):
                    i0 = it * SM_ROWBLOCK
                    i1 = N if N - i0 < SM_ROWBLOCK else i0 + SM_ROWBLOCK
                    _ce_A_block(&cf, i0, i1, zp, lp, tp, wp, gp, st, zy)
                    for i in range(i0, i1):
                        _ce_C(&cf, i, lp, wp, gop, st, zy, cfs, rl)
                        if gp != NULL:
                            _ce_B(&cf, i, 0, lp, tp, wp, gp, st, cfs)
                            _ce_target(&cf, i, lp, gp, zy, cfs)
        elif split:
            # few long rows: (row, chunk) items across threads, in two phases
            with parallel(num_threads=nt):
                scratch = <floating*>malloc(SM_CHUNK * sizeof(floating)) if cf.cap > 0 else NULL
                for it in prange(items, schedule="static"):
                    _ce_A(&cf, it // nch, it % nch, zp, lp, tp, wp, gp, scratch, st, zy)
                free(scratch)
            for i in range(N):
                _ce_C(&cf, i, lp, wp, gop, st, zy, cfs, rl)
            if gp != NULL:
                for it in prange(items, schedule="static", num_threads=nt):
                    _ce_B(&cf, it // nch, it % nch, lp, tp, wp, gp, st, cfs)
                for i in range(N):
                    _ce_target(&cf, i, lp, gp, zy, cfs)
        elif nt > 1:
            # nt contiguous row ranges (a range per thread, as a static schedule;
            # ranges stay right if the team is smaller than asked)
            with parallel(num_threads=nt):
                scratch = <floating*>malloc(SM_CHUNK * sizeof(floating)) if cf.cap > 0 else NULL
                for it in prange(nt, schedule="static", chunksize=1):
                    _ce_rows(&cf, N * it // nt, N * (it + 1) // nt, zp, lp, tp, wp, gop, gp,
                             scratch, st, zy, cfs, rl)
                free(scratch)
        else:
            scratch = <floating*>malloc(SM_CHUNK * sizeof(floating)) if cf.cap > 0 else NULL
            _ce_rows(&cf, 0, N, zp, lp, tp, wp, gop, gp, scratch, st, zy, cfs, rl)
            free(scratch)
        for i in range(N):
            total += rl[i]
            ztotal += cfs[i * SM_CF + 5]
    free(st)
    free(cfs)
    free(zy)
    return total, ztotal


# --- softmax / log-softmax and their backward ---------------------------------

cdef void _sm_row(const floating* x, floating* out, Py_ssize_t C, bint log_out) noexcept nogil:
    """One row: out = softmax(x) or log_softmax(x), chunked exactly like the CE."""
    cdef Py_ssize_t nch = (C + SM_CHUNK - 1) // SM_CHUNK, k, off, n, c
    cdef floating mk
    cdef double m = -INFINITY, s = 0.0, sk, ls
    cdef floating f, mf, lsf
    # pass 1: per-chunk max and sum of exp (kept in out for softmax)
    for k in range(nch):
        off = k * SM_CHUNK
        n = C - off if C - off < SM_CHUNK else SM_CHUNK
        mk = _sm_max(x + off, n)
        m = mk if mk > m else m
    # all chunk maxima are below m: a second, stable pass over the row
    mf = <floating>m
    for k in range(nch):
        off = k * SM_CHUNK
        n = C - off if C - off < SM_CHUNK else SM_CHUNK
        if mf == -INFINITY:
            sk = _sm_masked(x + off, NULL if log_out else out + off, n)
            sk = sk * _c_exp(m - m)     # NaN: a row of -inf has no softmax
        else:
            sk = _sm_sumexp(x + off, NULL if log_out else out + off, n, mf, NULL, NULL, NULL, 0)
        s = s + sk
    if log_out:
        ls = _c_log(s)
        lsf = <floating>ls
        for c in range(C):
            out[c] = (x[c] - mf) - lsf
    else:
        f = <floating>(1.0 / s)
        for c in range(C):
            out[c] = out[c] * f


def softmax_rows(const floating[:, ::1] x, floating[:, ::1] out, bint log_out, int num_threads):
    """out[i] = softmax(x[i]) (or log_softmax) for every row, max-shifted:
    softmax_c = exp(x_c - m) / sum exp(x - m); log_softmax_c = (x_c - m) - log sum exp(x - m).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], i
    cdef int nt = num_threads if N * (C + SM_ROW_COST) >= SM_PAR_MIN else 1
    if N == 0 or C == 0:
        return
    cdef const floating* xp = &x[0, 0]
    cdef floating* op = &out[0, 0]
    with nogil:
        if nt > 1:
            for i in prange(N, schedule="static", num_threads=nt):
                _sm_row(xp + i * C, op + i * C, C, log_out)
        else:
            for i in range(N):
                _sm_row(xp + i * C, op + i * C, C, log_out)


cdef void _sm_back_row(const floating* y, const floating* gy, floating* gx, Py_ssize_t C,
                       bint log_in) noexcept nogil:
    cdef double acc[16]
    cdef Py_ssize_t i = 0, l
    cdef floating d
    for l in range(16):
        acc[l] = 0.0
    if log_in:
        # y = log_softmax: gx = gy - exp(y) sum(gy)
        while i + 16 <= C:
            for l in range(16):
                acc[l] += gy[i + l]
            i += 16
        if i < C:
            for l in range(16):
                acc[l] += gy[i + l] if i + l < C else <floating>0
        d = <floating>_sm_fold(acc)
        for i in range(C):
            gx[i] = gy[i] - vexp(y[i]) * d
    else:
        # y = softmax: gx = y (gy - sum(gy y))
        while i + 16 <= C:
            for l in range(16):
                acc[l] += <double>gy[i + l] * <double>y[i + l]
            i += 16
        if i < C:
            for l in range(16):
                acc[l] += <double>gy[i + l] * <double>y[i + l] if i + l < C else 0.0
        d = <floating>_sm_fold(acc)
        for i in range(C):
            gx[i] = y[i] * (gy[i] - d)


def softmax_backward_rows(const floating[:, ::1] y, const floating[:, ::1] gy,
                          floating[:, ::1] gx, bint log_in, int num_threads):
    """Row-wise vector-Jacobian product of softmax (log_in=False, y = softmax)
    or log_softmax (log_in=True, y = log_softmax); gx may alias gy."""
    cdef Py_ssize_t N = y.shape[0], C = y.shape[1], i
    cdef int nt = num_threads if N * (C + SM_ROW_COST) >= SM_PAR_MIN else 1
    if N == 0 or C == 0:
        return
    cdef const floating* yp = &y[0, 0]
    cdef const floating* gp = &gy[0, 0]
    cdef floating* op = &gx[0, 0]
    with nogil:
        if nt > 1:
            for i in prange(N, schedule="static", num_threads=nt):
                _sm_back_row(yp + i * C, gp + i * C, op + i * C, C, log_in)
        else:
            for i in range(N):
                _sm_back_row(yp + i * C, gp + i * C, op + i * C, C, log_in)

# Row primitives of softmax and the cross-entropy family (included by _kernels.pyx).
#
# One row, or one chunk of a row, at a time and without threads: the max, the
# sum of exp (storing the exps when asked), the plain and weighted sums the
# losses need, soft-capping. Every sum accumulates in double over 16 partial
# sums (element i in lane i % 16) folded in one fixed order, so no result
# depends on how rows or chunks are spread over threads. The float32 max and
# exp pass are C: _rowmax.h and _expsum.h (AVX2 / AVX-512 intrinsics, GCC vector
# extensions or plain C, chosen at compile time in those headers).

from libc.math cimport log as _c_log, exp as _c_exp

cdef enum:
    SM_CHUNK = 8192         # classes per chunk (fixed: results never depend on threads)
    SM_PAR_MIN = 16384      # serial below this much work, N (C + SM_ROW_COST) (measured, 2 cores)
    SM_ROW_COST = 64        # per-row overhead in element-equivalents


cdef extern from "_rowmax.h" nogil:
    float fl_sm_maxf(const float* z, Py_ssize_t n)
    double fl_sm_max(const double* z, Py_ssize_t n)


cdef extern from "_expsum.h" nogil:
    double fl_sm_expsumf(const float* z, float* e, Py_ssize_t n, float m,
                         const float* pz, float* pe, float* sg, float sK)


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


cdef inline double _sm_sumexp(const floating* z, floating* store, Py_ssize_t n,
                              floating m, const floating* pz,
                              floating* pe, floating* sg,
                              floating sK) noexcept nogil:
    """sum exp(z - m) in double; e = exp(z - m) goes to store when store != NULL
    (store may alias z), else to a scratch chunk (n <= SM_CHUNK). One flat exp
    loop (vectorised once vexp is), then the 16-lane sum; float32 rows with a
    finite max run fl_sm_expsumf (_expsum.h) instead. pz / pe (float32):
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

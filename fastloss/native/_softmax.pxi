# Softmax and log-softmax, forward and backward: the public kernels (included
# by _kernels.pxi). Rows are chunked exactly like the cross-entropy (the row
# primitives of _softmax_rows.pxi), rows spread over threads (static schedule).


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

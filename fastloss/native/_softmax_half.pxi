# Softmax and log-softmax, forward and backward, on bfloat16 / float16 rows
# (included by _kernels.pyx): each thread widens a tile of rows (about
# SM_HALF_TILE values, at least one row) into its float32 scratch with
# fl_half_load (prefetching the next tile: _half_scaled.h), runs the float32
# row code of _softmax.pxi on it in place, and rounds the result back with
# fl_half_store. A row's result does not depend on the tiles, so the bits do
# not depend on the thread count.

cdef enum:
    SM_OP_SOFTMAX = 0
    SM_OP_LOG_SOFTMAX = 1
    SM_OP_SOFTMAX_BACK = 2
    SM_OP_LOG_SOFTMAX_BACK = 3


cdef void _sm_half_rows(int kind, int op, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t C,
                        Py_ssize_t rows, const uint16_t* x, const uint16_t* gy, uint16_t* out,
                        float* buf) noexcept nogil:
    """Rows [lo, hi) of x (and gy, backward ops) in tiles of ``rows`` rows into out.
    buf: rows C floats (forward), twice that (backward: the output in the second)."""
    cdef float* b2 = buf + rows * C
    cdef float* res = buf if gy == NULL else b2
    cdef Py_ssize_t i0 = lo, n, r
    while i0 < hi:
        n = hi - i0 if hi - i0 < rows else rows
        fl_half_load_ahead(kind, x + i0 * C, buf, n * C, x + (i0 + n) * C,
                           (n if hi - i0 - n > n else hi - i0 - n) * C)
        if gy != NULL:
            fl_half_load(kind, gy + i0 * C, b2, n * C)
        for r in range(n):
            if op == SM_OP_SOFTMAX or op == SM_OP_LOG_SOFTMAX:
                _sm_row(<const float*>(buf + r * C), buf + r * C, C, op == SM_OP_LOG_SOFTMAX)
            else:
                _sm_back_row(<const float*>(buf + r * C), <const float*>(b2 + r * C),
                             b2 + r * C, C, op == SM_OP_LOG_SOFTMAX_BACK)
        fl_half_store(kind, res, out + i0 * C, n * C)
        i0 = i0 + n


def softmax_half(int kind, int op, const uint16_t[:, ::1] x, const uint16_t[:, ::1] gy,
                 uint16_t[:, ::1] out, int num_threads):
    """softmax_rows / softmax_backward_rows on bfloat16 (kind 1) or float16 (kind 2)
    bits: op 0 softmax(x), 1 log_softmax(x), 2 softmax backward (x = y, gy the
    upstream gradient), 3 log_softmax backward; the result rounded to nearest-even
    into out (which may be x or gy itself)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], rows, per, it
    cdef int nt = num_threads if N * (C + SM_ROW_COST) >= SM_PAR_MIN else 1
    cdef bint back = op == SM_OP_SOFTMAX_BACK or op == SM_OP_LOG_SOFTMAX_BACK
    cdef float* bufs
    cdef const uint16_t* gp = NULL
    if kind != FL_HALF_BF16 and kind != FL_HALF_F16:
        raise ValueError(f"kind must be {FL_HALF_BF16} or {FL_HALF_F16}, got {kind}")
    if op < SM_OP_SOFTMAX or op > SM_OP_LOG_SOFTMAX_BACK:
        raise ValueError(f"op must be 0..3, got {op}")
    if back and gy is None:
        raise ValueError("the backward ops need gy")
    if N == 0 or C == 0:
        return
    if back:
        gp = &gy[0, 0]
    if nt > N:
        nt = <int>N
    rows = _half_tile_rows(C)
    per = rows * C * (2 if back else 1)
    bufs = <float*>malloc(nt * per * sizeof(float))
    if bufs == NULL:
        raise MemoryError()
    cdef const uint16_t* xp = &x[0, 0]
    cdef uint16_t* op_ = &out[0, 0]
    with nogil:
        if nt > 1:
            for it in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                _sm_half_rows(kind, op, N * it // nt, N * (it + 1) // nt, C, rows, xp, gp, op_,
                              bufs + it * per)
        else:
            _sm_half_rows(kind, op, 0, N, C, rows, xp, gp, op_, bufs)
    free(bufs)

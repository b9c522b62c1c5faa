# Cross-entropy on bfloat16 / float16 logits (included by _kernels.pyx).
#
# The float32 steps of _ce_steps.pxi run unchanged on float32 tiles: each
# thread widens a block of rows (about SM_HALF_TILE values, at least one row)
# into its own scratch with fl_half_load, runs the float32 schedule's row code
# on it (the gradient computed in place over the tile), and rounds the
# gradient back with fl_half_store. The block is in cache while the float32
# code reads it twice and writes it: the 16-bit logits are read from memory
# once and the 16-bit gradient written once. Every row's result is the float32
# kernel's result on the widened row (the row code does not depend on which
# rows share a tile), so the bits do not depend on the thread count.
#
# Few long rows (the float32 split schedule) are spread as (row, chunk) items:
# step 1 widens one chunk and keeps only its statistics; step 3 widens the
# chunk again, recomputes its exps (the same bits) and writes its gradient.

from libc.string cimport memset
from libc.math cimport isfinite

cdef extern from "native/_half_scaled.h" nogil:
    void fl_half_store_scaled(int kind, const float* src, uint16_t* dst, Py_ssize_t n, float K,
                              int stream)
    void fl_half_load_ahead(int kind, const uint16_t* src, float* dst, Py_ssize_t n,
                            const uint16_t* next, Py_ssize_t nnext)


cdef extern from "native/_bf16_rows.h" nogil:
    enum: FL_BF16_ROWS
    Py_ssize_t fl_il_pos(Py_ssize_t c, Py_ssize_t n)
    void fl_il_swap(float* e, Py_ssize_t n)
    float fl_bf16_maxf(const uint16_t* z, Py_ssize_t n, float* amax)
    double fl_bf16_expsumf(const uint16_t* z, float* e, Py_ssize_t n, float m, float amax,
                           const uint16_t* pz)
    void fl_bf16_store_il(const float* e, uint16_t* dst, Py_ssize_t n, float K, int stream,
                          int clean)


cdef enum:
    SM_HALF_STREAM = 4194304    # gradients of at least this many values: streamed (8 MiB)
    SM_HALF_TILE = 8192     # float32 values per thread tile (32 KiB: L1; one row at least)


cdef void _ce_half_grad_store(const CeConf* cf, int kind, Py_ssize_t n, float* buf,
                             const label_t* lab, uint16_t* out, const double* st,
                             const double* zy, const double* cfs, bint stream,
                             bint il) noexcept nogil:
    """Step 3 fused with the rounding, for index targets without smoothing or soft-cap
    (cf.defer_grad): out = round16(e K_k) per chunk from the exps in buf (the float
    product step 3 computes), then the target class as step 3 does it, in buf, rounded
    alone. Ignored rows: zeros. Pointers start at the tile's first row. stream:
    non-temporal stores (see fl_half_store_scaled). il: the exps are bfloat16 rows'
    interleaved ones (_ce_bf16_row_stats)."""
    cdef Py_ssize_t C = cf.C, r, k, off, m, y
    cdef float Ky
    cdef double K
    for r in range(n):
        if _ce_ignored(cf, lab, r):
            memset(out + r * C, 0, C * sizeof(uint16_t))
            continue
        y = <Py_ssize_t>lab[r]
        for k in range(cf.nchunks):
            off = k * SM_CHUNK
            m = C - off if C - off < SM_CHUNK else SM_CHUNK
            K = _ce_chunk_scale(cf, r, k, st, cfs)
            if il:
                # a finite chunk sum: no exp is NaN, so no product is
                fl_bf16_store_il(buf + r * C + off, out + r * C + off, m, <float>K, stream,
                                 isfinite(K) and isfinite(st[(r * cf.nchunks + k) * SM_ST
                                                             + ST_EXP_SUM]))
            else:
                fl_half_store_scaled(kind, buf + r * C + off, out + r * C + off, m, <float>K,
                                     stream)
        Ky = <float>_ce_chunk_scale(cf, r, y // SM_CHUNK, st, cfs)
        # (the row's exps are spent: the target's goes to its natural place)
        buf[r * C + y] = buf[r * C + (fl_il_pos(y, C) if il else y)] * Ky
        _ce_grad_target(cf, r, lab, buf, zy, cfs)
        fl_half_store(kind, buf + r * C + y, out + r * C + y, 1)


cdef void _ce_bf16_row_stats(const CeConf* cf, Py_ssize_t i, const uint16_t* z,
                             const label_t* lab, float* e, double* st, double* zy,
                             const uint16_t* pz) noexcept nogil:
    """Step 1 of _ce_chunk_stats for row i of bfloat16 logits z (index targets, no
    smoothing or soft-cap: FL_BF16_ROWS levels), every chunk read straight from the
    16-bit row (_bf16_rows.h): the same statistics, the exps into e's row
    interleaved. pz: the next row's logits (prefetched), or NULL."""
    cdef Py_ssize_t C = cf.C, k, off, n, y = <Py_ssize_t>lab[i]
    cdef const uint16_t* src
    cdef float* work
    cdef double* cs
    cdef float mk, amax
    cdef double sk
    if _ce_ignored(cf, lab, i):
        return
    for k in range(cf.nchunks):
        off = k * SM_CHUNK
        n = C - off if C - off < SM_CHUNK else SM_CHUNK
        src = z + i * C + off
        work = e + i * C + off
        cs = st + (i * cf.nchunks + k) * SM_ST
        mk = fl_bf16_maxf(src, n, &amax)
        if off <= y < off + n:
            zy[i] = fl_bf16_to_f32(src[y - off])
        if mk == -INFINITY:
            fl_half_load(FL_HALF_BF16, src, work, n)
            sk = _sm_masked(<const float*>work, work, n)
            fl_il_swap(work, n)
        else:
            sk = fl_bf16_expsumf(src, work, n, mk, amax,
                                 src if pz == NULL else pz + i * C + off)
        cs[ST_CHUNK_MAX] = mk
        cs[ST_EXP_SUM] = sk
        cs[ST_AZ_SUM] = 0.0
        cs[ST_A_SUM] = 0.0


cdef void _ce_half_rows(const CeConf* cf, int kind, Py_ssize_t lo, Py_ssize_t hi,
                        Py_ssize_t rows, const uint16_t* zh, const label_t* lp,
                        const float* tp, const float* wp, const float* gop, uint16_t* gh,
                        float* buf, double* st, double* zy, double* cfs,
                        double* rl) noexcept nogil:
    """Rows [lo, hi) in tiles of ``rows`` rows: widen, the float32 row code on the
    tile (a CeConf copy whose N is the tile's), round the gradient back. buf:
    rows C floats, then SM_CHUNK floats of soft-cap scratch."""
    cdef CeConf lc = cf[0]
    cdef Py_ssize_t C = cf.C, i0 = lo, n, b, r
    cdef bint stream = cf.defer_grad and cf.N * C >= SM_HALF_STREAM   # (the whole gradient)
    cdef bint il = FL_BF16_ROWS and kind == FL_HALF_BF16 and cf.defer_grad
    cdef const label_t* lab
    cdef const float* t
    cdef const float* go
    cdef float* g
    while i0 < hi:
        n = hi - i0 if hi - i0 < rows else rows
        lc.N = n
        lab = NULL if lp == NULL else lp + i0
        t = NULL if tp == NULL else tp + i0 * C
        go = NULL if gop == NULL else gop + i0
        g = NULL if gh == NULL else buf
        if il:
            # step 1 straight from the 16-bit rows, step 2, step 3 with the rounding
            for r in range(n):
                _ce_bf16_row_stats(&lc, r, zh + i0 * C, lab, buf, st + i0 * cf.nchunks * SM_ST,
                                   zy + i0, zh + (i0 + 1) * C if i0 + r + 1 < hi else NULL)
                _ce_row_loss(&lc, r, lab, wp, go, st + i0 * cf.nchunks * SM_ST, zy + i0,
                             cfs + i0 * SM_CF, rl + i0)
            _ce_half_grad_store(&lc, kind, n, buf, lab, gh + i0 * C,
                                st + i0 * cf.nchunks * SM_ST, zy + i0, cfs + i0 * SM_CF,
                                stream, True)
            i0 = i0 + n
            continue
        # the next tile (n values at most) prefetched into L2 while this one loads
        fl_half_load_ahead(kind, zh + i0 * C, buf, n * C, zh + (i0 + 2 * n) * C,
                           (n if hi - i0 - 2 * n > n else hi - i0 - 2 * n) * C)
        lc.pf_z = zh + (i0 + n) * C if i0 + n < hi else NULL
        lc.pf_g = NULL if gh == NULL or stream else gh + i0 * C
        if lc.prelog:
            b = 0
            while b < n:
                _ce_small_rows(&lc, b, n if n - b < SM_ROWBLOCK else b + SM_ROWBLOCK,
                               <const float*>buf, lab, t, wp, go, g, st + i0 * SM_ST, zy + i0,
                               cfs + i0 * SM_CF, rl + i0)
                b = b + SM_ROWBLOCK
        else:
            _ce_row_range(&lc, 0, n, <const float*>buf, lab, t, wp, go, g, buf + rows * C,
                          st + i0 * cf.nchunks * SM_ST, zy + i0, cfs + i0 * SM_CF, rl + i0)
        if gh != NULL and lc.defer_grad:
            _ce_half_grad_store(&lc, kind, n, buf, lab, gh + i0 * C,
                                st + i0 * cf.nchunks * SM_ST, zy + i0, cfs + i0 * SM_CF,
                                stream, False)
        elif gh != NULL:
            fl_half_store(kind, buf, gh + i0 * C, n * C)
        i0 = i0 + n


cdef void _ce_half_item(const CeConf* cf, int kind, Py_ssize_t i, Py_ssize_t k, bint grad,
                        const uint16_t* zh, const label_t* lp, const float* tp,
                        const float* wp, uint16_t* gh, float* buf, double* st, double* zy,
                        const double* cfs) noexcept nogil:
    """Split schedule, item (row i, chunk k): widen the chunk into its place in the
    row-sized buf; step 1 (statistics only), or with ``grad`` step 1 again (its
    exps into buf) and step 3 (with the target class when it is in this chunk),
    rounded back. buf: C floats, then SM_CHUNK floats of soft-cap scratch."""
    cdef CeConf lc = cf[0]
    cdef Py_ssize_t C = cf.C, off = k * SM_CHUNK, y
    cdef Py_ssize_t n = C - off if C - off < SM_CHUNK else SM_CHUNK
    cdef const label_t* lab = NULL if lp == NULL else lp + i
    cdef const float* t = NULL if tp == NULL else tp + i * C
    lc.N = 1        # the row alone: its pointers below start at row i
    fl_half_load(kind, zh + i * C + off, buf + off, n)
    _ce_chunk_stats(&lc, 0, k, <const float*>buf, lab, t, wp, buf if grad else NULL,
                    buf + C, st + i * cf.nchunks * SM_ST, zy + i)
    if not grad:
        return
    _ce_chunk_grad(&lc, 0, k, lab, t, wp, buf, st + i * cf.nchunks * SM_ST, cfs + i * SM_CF)
    if lab != NULL:
        y = <Py_ssize_t>lab[0]
        if off <= y < off + n:
            _ce_grad_target(&lc, 0, lab, buf, zy + i, cfs + i * SM_CF)
    fl_half_store(kind, buf + off, gh + i * C + off, n)


cdef void _ce_half_items(const CeConf* cf, int kind, Py_ssize_t lo, Py_ssize_t hi, bint grad,
                         const uint16_t* zh, const label_t* lp, const float* tp,
                         const float* wp, uint16_t* gh, float* buf, double* st, double* zy,
                         const double* cfs) noexcept nogil:
    """Items [lo, hi) (item = i nchunks + k) by _ce_half_item."""
    cdef Py_ssize_t it
    for it in range(lo, hi):
        _ce_half_item(cf, kind, it // cf.nchunks, it % cf.nchunks, grad, zh, lp, tp, wp, gh,
                      buf, st, zy, cfs)


cdef void _ce_half_schedule(CeConf* cf, int kind, int nt, Py_ssize_t per_thread,
                            const uint16_t* zh, const label_t* lp, const float* tp,
                            const float* wp, const float* gop, uint16_t* gh, float* bufs,
                            double* st, double* zy, double* cfs, double* rl) noexcept nogil:
    """All N rows with nt threads, thread ``it`` using bufs + it per_thread: the
    split schedule for few long rows, else nt contiguous row ranges in tiles."""
    cdef Py_ssize_t N = cf.N, C = cf.C, nch = cf.nchunks, items = N * nch, it, i
    cdef Py_ssize_t rows = SM_HALF_TILE // C if SM_HALF_TILE // C > 0 else 1
    cf.prelog = cf.C < SM_SMALL_C and not (cf.cap > 0)
    cf.defer_grad = gh != NULL and not cf.prelog and not cf.soft and cf.eps == 0 \
        and not (cf.cap > 0)
    if cf.prelog:
        rows = rows - rows % SM_ROWBLOCK
    if nt > 1 and nch > 1 and N < SM_SPLIT_ROWS * nt:
        # (row, chunk) items in nt contiguous ranges, step 2 serially between
        for it in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            _ce_half_items(cf, kind, items * it // nt, items * (it + 1) // nt, False, zh, lp,
                           tp, wp, gh, bufs + it * per_thread, st, zy, cfs)
        for i in range(N):
            _ce_row_loss(cf, i, lp, wp, gop, st, zy, cfs, rl)
        if gh != NULL:
            for it in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                _ce_half_items(cf, kind, items * it // nt, items * (it + 1) // nt, True, zh,
                               lp, tp, wp, gh, bufs + it * per_thread, st, zy, cfs)
    elif nt > 1:
        for it in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            _ce_half_rows(cf, kind, N * it // nt, N * (it + 1) // nt, rows, zh, lp, tp, wp,
                          gop, gh, bufs + it * per_thread, st, zy, cfs, rl)
    else:
        _ce_half_rows(cf, kind, 0, N, rows, zh, lp, tp, wp, gop, gh, bufs, st, zy, cfs, rl)


cdef Py_ssize_t _ce_half_buffer(const CeConf* cf, int nt) noexcept nogil:
    """Floats of scratch one thread needs (see _ce_half_schedule)."""
    cdef Py_ssize_t C = cf.C, rows = SM_HALF_TILE // C if SM_HALF_TILE // C > 0 else 1
    if nt > 1 and cf.nchunks > 1 and cf.N < SM_SPLIT_ROWS * nt:
        return C + SM_CHUNK
    if C < SM_SMALL_C and not (cf.cap > 0):
        rows = rows - rows % SM_ROWBLOCK
    return rows * C + SM_CHUNK

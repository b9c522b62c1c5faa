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
#
# bfloat16 with index targets, no smoothing or soft-cap, on the avx2 and avx512
# levels (FL_BF16_ROWS): no tiles; _ce_bf16_rows reads each row straight from its 16
# bits (_bf16_rows.h), the split schedule's items too (_ce_bf16_item), with an exp of
# 16-bit precision (relative error 3.2e-6: fl_bf16_exp16), the same on both levels
# and for any thread count.

from libc.string cimport memset
from libc.math cimport isfinite

cdef extern from "native/_half_scaled.h" nogil:
    void fl_half_store_scaled(int kind, const float* src, uint16_t* dst, Py_ssize_t n, float K)
    void fl_half_load_ahead(int kind, const uint16_t* src, float* dst, Py_ssize_t n,
                            const uint16_t* next, Py_ssize_t nnext)


cdef extern from "native/_bf16_rows.h" nogil:
    enum: FL_BF16_ROWS
    Py_ssize_t fl_il_pos(Py_ssize_t c, Py_ssize_t n)
    void fl_il_from_natural(float* e, Py_ssize_t n)
    float fl_bf16_maxf(const uint16_t* z, Py_ssize_t n, float* amax)
    double fl_bf16_expsumf(const uint16_t* z, float* e, Py_ssize_t n, float m, float amax,
                           const uint16_t* pz, const float* ge, uint16_t* gdst, float gK,
                           int gstream, int gclean)
    void fl_bf16_store_il(const float* e, uint16_t* dst, Py_ssize_t n, float K, int stream,
                          int clean)
    void fl_bf16_exp_apply(const float* x, float* out, Py_ssize_t n, int tame)


# this level reads bfloat16 cross-entropy rows straight from their bits (tests check it)
CE_BF16_ROWS = bool(FL_BF16_ROWS)


def bf16_row_exp(const float[::1] x, float[::1] out, bint tame):
    """out = the exp the bfloat16 cross-entropy rows use (_bf16_rows.h: fl_bf16_exp16,
    or with ``tame`` fl_bf16_exp16_tame, defined for x in [-86, 0] only) at x <= 0, for
    the tests. len(x) == len(out), a multiple of 16. False (out untouched) on a level
    without the rows (CE_BF16_ROWS)."""
    cdef Py_ssize_t n = x.shape[0]
    if out.shape[0] != n or n % 16 != 0:
        raise ValueError(f"x and out must have the same length, a multiple of 16; got "
                         f"{n} and {out.shape[0]}")
    if not FL_BF16_ROWS:
        return False
    if n > 0:
        with nogil:
            fl_bf16_exp_apply(&x[0], &out[0], n, tame)
    return True


cdef enum:
    SM_HALF_STREAM = 4194304    # gradients of at least this many values: streamed (8 MiB)
    SM_HALF_TILE = 8192     # float32 values per thread tile (32 KiB: L1; one row at least)


cdef inline Py_ssize_t _half_tile_rows(Py_ssize_t C) noexcept nogil:
    """Rows of C values per 16-bit tile: SM_HALF_TILE values, one row at least (the
    softmax tiles too)."""
    return SM_HALF_TILE // C if SM_HALF_TILE // C > 0 else 1


cdef inline Py_ssize_t _ce_half_tile_rows(const CeConf* cf) noexcept nogil:
    """Rows per cross-entropy tile: _half_tile_rows, whole SM_ROWBLOCK blocks on the
    few-class path (C < SM_SMALL_C, no soft-cap)."""
    cdef Py_ssize_t rows = _half_tile_rows(cf.C)
    if cf.C < SM_SMALL_C and not (cf.cap > 0):
        rows = rows - rows % SM_ROWBLOCK
    return rows


cdef inline bint _ce_half_split(const CeConf* cf, int nt) noexcept nogil:
    """Few long rows: the (row, chunk) items of the split schedule."""
    return nt > 1 and cf.nchunks > 1 and cf.N < SM_SPLIT_ROWS * nt


cdef void _ce_half_grad_store(const CeConf* cf, int kind, Py_ssize_t n, float* buf,
                             const label_t* lab, uint16_t* out, const double* st,
                             const double* zy, const double* cfs) noexcept nogil:
    """Step 3 fused with the rounding, for index targets without smoothing or soft-cap
    (cf.defer_grad): out = round16(e K_k) per chunk from the exps in buf (the float
    product step 3 computes), then the target class as step 3 does it, in buf, rounded
    alone. Ignored rows: zeros. Pointers start at the tile's first row. (float16, and
    bfloat16 on the baseline level: the other levels take _ce_bf16_rows.)"""
    cdef Py_ssize_t C = cf.C, r, k, off, m, y
    cdef float Ky
    for r in range(n):
        if _ce_ignored(cf, lab, r):
            memset(out + r * C, 0, C * sizeof(uint16_t))
            continue
        y = <Py_ssize_t>lab[r]
        for k in range(cf.nchunks):
            off = k * SM_CHUNK
            m = C - off if C - off < SM_CHUNK else SM_CHUNK
            fl_half_store_scaled(kind, buf + r * C + off, out + r * C + off, m,
                                 <float>_ce_chunk_scale(cf, r, k, st, cfs))
        Ky = <float>_ce_chunk_scale(cf, r, y // SM_CHUNK, st, cfs)
        buf[r * C + y] = buf[r * C + y] * Ky
        _ce_grad_target(cf, r, lab, buf, zy, cfs)
        fl_half_store(kind, buf + r * C + y, out + r * C + y, 1)


# --- bfloat16 rows read straight from 16 bits (FL_BF16_ROWS: avx2, avx512) -------
#
# Index targets without smoothing or soft-cap (_ce_half_plain): row by row, step 1
# from the bfloat16 row itself (_bf16_rows.h: no widened copy, the exps stored
# interleaved), step 2, and row i-1's step 3 with the rounding inside row i's exp
# loops, chunk k with chunk k (its integer work beside the exp's FMAs); the exps
# of rows i-1 and i alternate between two row buffers. Every pointer argument
# below starts at its row.

cdef inline bint _ce_bf16_clean(double K, const double* st, Py_ssize_t k) noexcept nogil:
    """No product e K of chunk k can be NaN: K finite and the chunk's exp sum finite
    (a NaN exp would make it NaN)."""
    return isfinite(K) and isfinite(st[k * SM_ST + ST_EXP_SUM])


cdef void _ce_bf16_chunk(const uint16_t* z, float* e, Py_ssize_t n, double* cs,
                         const uint16_t* pz, const float* ge, uint16_t* gdst, float gK,
                         bint stream, bint clean) noexcept nogil:
    """Step 1 of _ce_chunk_stats for one chunk of n values z (index targets, plain)
    from their bits: exps into e (interleaved), the statistics record cs; pz: n values
    prefetched. ge != NULL: fl_bf16_store_il(ge, gdst, n, gK, stream, clean) beside it
    (a previous row's step 3 for the same chunk)."""
    cdef float amax
    cdef float mk = fl_bf16_maxf(z, n, &amax)
    cdef double sk
    if mk == -INFINITY:
        # only -inf and NaN: e = 0 or NaN, as _sm_masked gives them
        fl_half_load(FL_HALF_BF16, z, e, n)
        sk = _sm_masked(<const float*>e, e, n)
        fl_il_from_natural(e, n)
        if ge != NULL:
            fl_bf16_store_il(ge, gdst, n, gK, stream, clean)
    else:
        sk = fl_bf16_expsumf(z, e, n, mk, amax, pz, ge, gdst, gK, stream, clean)
    cs[ST_CHUNK_MAX] = mk
    cs[ST_EXP_SUM] = sk
    cs[ST_AZ_SUM] = 0.0
    cs[ST_A_SUM] = 0.0


cdef inline float _ce_bf16_grad_chunk(const CeConf* cf, Py_ssize_t k, const float* e,
                                      uint16_t* out, const double* st, const double* cfs,
                                      bint stream) noexcept nogil:
    """Step 3 of chunk k with the rounding, from its exps (e, out at the row's start);
    returns the chunk's K as the float the products used."""
    cdef Py_ssize_t off = k * SM_CHUNK
    cdef double K = _ce_chunk_scale(cf, 0, k, st, cfs)
    fl_bf16_store_il(e + off, out + off, cf.C - off if cf.C - off < SM_CHUNK else SM_CHUNK,
                     <float>K, stream, _ce_bf16_clean(K, st, k))
    return <float>K


cdef inline void _ce_bf16_target(const CeConf* cf, const label_t* lab, float* e, uint16_t* out,
                                 const double* zy, const double* cfs, float Ky) noexcept nogil:
    """The target class after its chunk's step 3: its exp (spent, interleaved in e) times
    Ky moved to its natural place for _ce_grad_target, rounded alone into out."""
    cdef Py_ssize_t y = <Py_ssize_t>lab[0]
    e[y] = e[fl_il_pos(y, cf.C)] * Ky
    _ce_grad_target(cf, 0, lab, e, zy, cfs)
    out[y] = fl_f32_to_bf16(e[y])


cdef void _ce_bf16_grad_rest(const CeConf* cf, Py_ssize_t k0, const label_t* lab,
                             float* e, uint16_t* out, const double* st, const double* zy,
                             const double* cfs, bint stream) noexcept nogil:
    """Step 3 of a row with the rounding: chunks k0.. (the others were fused into
    the next row's exp loops), then the target class."""
    cdef Py_ssize_t k
    for k in range(k0, cf.nchunks):
        _ce_bf16_grad_chunk(cf, k, e, out, st, cfs, stream)
    _ce_bf16_target(cf, lab, e, out, zy, cfs,
                    <float>_ce_chunk_scale(cf, 0, <Py_ssize_t>lab[0] // SM_CHUNK, st, cfs))


cdef void _ce_bf16_row(const CeConf* cf, const uint16_t* z, const label_t* lab, float* e,
                       double* st, double* zy, const uint16_t* pz, float* pe, uint16_t* pout,
                       const double* pst, const double* pcfs, bint stream) noexcept nogil:
    """Step 1 of _ce_chunk_stats for a row z (not ignored), exps into e; pz: the next
    row, prefetched. pe != NULL: the previous row's exps, whose step 3 (with the
    rounding, into pout; its statistics pst, coefficients pcfs) runs chunk by chunk
    inside this row's exp loops; its target class is left to the caller."""
    cdef Py_ssize_t C = cf.C, k, off, n, y = <Py_ssize_t>lab[0]
    cdef double K = 0.0
    cdef bint clean = False
    for k in range(cf.nchunks):
        off = k * SM_CHUNK
        n = C - off if C - off < SM_CHUNK else SM_CHUNK
        if off <= y < off + n:
            zy[0] = fl_bf16_to_f32(z[y])
        if pe != NULL:
            K = _ce_chunk_scale(cf, 0, k, pst, pcfs)
            clean = _ce_bf16_clean(K, pst, k)
        _ce_bf16_chunk(z + off, e + off, n, st + k * SM_ST, pz + off,
                       NULL if pe == NULL else pe + off, NULL if pe == NULL else pout + off,
                       <float>K, stream, clean)


cdef void _ce_bf16_rows(const CeConf* cf, Py_ssize_t lo, Py_ssize_t hi, const uint16_t* zh,
                        const label_t* lp, const float* wp, const float* gop, uint16_t* gh,
                        float* buf, double* st, double* zy, double* cfs,
                        double* rl) noexcept nogil:
    """Rows [lo, hi) as above (buf: two rows of C floats); gh NULL: the loss only."""
    cdef Py_ssize_t C = cf.C, nch = cf.nchunks, i, p = -1     # p: the row whose step 3 waits
    cdef bint stream = cf.N * C >= SM_HALF_STREAM             # (the whole gradient)
    for i in range(lo, hi):
        if _ce_ignored(cf, lp, i):
            _ce_row_loss(cf, i, lp, wp, gop, st, zy, cfs, rl)
            if gh != NULL:
                memset(gh + i * C, 0, C * sizeof(uint16_t))
            if p >= 0:
                _ce_bf16_grad_rest(cf, 0, lp + p, buf + (p & 1) * C, gh + p * C,
                                   st + p * nch * SM_ST, zy + p, cfs + p * SM_CF, stream)
            p = -1
            continue
        _ce_bf16_row(cf, zh + i * C, lp + i, buf + (i & 1) * C, st + i * nch * SM_ST, zy + i,
                     zh + (i + 1 if i + 1 < hi else i) * C,
                     NULL if p < 0 else buf + (p & 1) * C, NULL if p < 0 else gh + p * C,
                     NULL if p < 0 else st + p * nch * SM_ST,
                     NULL if p < 0 else cfs + p * SM_CF, stream)
        if p >= 0:
            _ce_bf16_grad_rest(cf, nch, lp + p, buf + (p & 1) * C, gh + p * C,
                               st + p * nch * SM_ST, zy + p, cfs + p * SM_CF, stream)
        _ce_row_loss(cf, i, lp, wp, gop, st, zy, cfs, rl)
        p = i if gh != NULL else -1
    if p >= 0:
        _ce_bf16_grad_rest(cf, 0, lp + p, buf + (p & 1) * C, gh + p * C,
                           st + p * nch * SM_ST, zy + p, cfs + p * SM_CF, stream)


cdef inline bint _ce_half_plain(const CeConf* cf) noexcept nogil:
    """Index targets without smoothing or soft-cap, not the few-class path: step 3
    is e K_k but at the target class (what defer_grad and _ce_bf16_rows need)."""
    return not cf.prelog and not cf.soft and cf.eps == 0 and not (cf.cap > 0)


cdef void _ce_half_rows(const CeConf* cf, int kind, Py_ssize_t lo, Py_ssize_t hi,
                        Py_ssize_t rows, const uint16_t* zh, const label_t* lp,
                        const float* tp, const float* wp, const float* gop, uint16_t* gh,
                        float* buf, double* st, double* zy, double* cfs,
                        double* rl) noexcept nogil:
    """Rows [lo, hi) in tiles of ``rows`` rows: widen, the float32 row code on the
    tile (a CeConf copy whose N is the tile's), round the gradient back. buf:
    rows C floats, then SM_CHUNK floats of soft-cap scratch."""
    cdef CeConf lc = cf[0]
    cdef Py_ssize_t C = cf.C, i0 = lo, n, b
    cdef const label_t* lab
    cdef const float* t
    cdef const float* go
    cdef float* g
    if FL_BF16_ROWS and kind == FL_HALF_BF16 and (cf.defer_grad or
                                                  (gh == NULL and _ce_half_plain(cf))):
        _ce_bf16_rows(cf, lo, hi, zh, lp, wp, gop, gh, buf, st, zy, cfs, rl)
        return
    while i0 < hi:
        n = hi - i0 if hi - i0 < rows else rows
        lc.N = n
        lab = NULL if lp == NULL else lp + i0
        t = NULL if tp == NULL else tp + i0 * C
        go = NULL if gop == NULL else gop + i0
        g = NULL if gh == NULL else buf
        # the next tile (n values at most) prefetched into L2 while this one loads
        fl_half_load_ahead(kind, zh + i0 * C, buf, n * C, zh + (i0 + 2 * n) * C,
                           (n if hi - i0 - 2 * n > n else hi - i0 - 2 * n) * C)
        lc.pf_z = zh + (i0 + n) * C if i0 + n < hi else NULL
        lc.pf_g = NULL if gh == NULL else gh + i0 * C
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
                                st + i0 * cf.nchunks * SM_ST, zy + i0, cfs + i0 * SM_CF)
        elif gh != NULL:
            fl_half_store(kind, buf, gh + i0 * C, n * C)
        i0 = i0 + n


cdef void _ce_bf16_item(const CeConf* cf, Py_ssize_t i, Py_ssize_t k, bint grad,
                        const uint16_t* zh, const label_t* lp, uint16_t* gh, float* buf,
                        double* st, double* zy, const double* cfs) noexcept nogil:
    """_ce_half_item for bfloat16 rows on the FL_BF16_ROWS levels (index targets, plain):
    step 1 of (row i, chunk k) from the 16 bits by _ce_bf16_chunk, as _ce_bf16_row does
    it (the same exps, so the bits of the row schedule); with ``grad`` (step 1 again,
    its statistics the same values), step 3 rounded, then the target class when it is
    in this chunk. buf: C floats, the chunk at its place in the row."""
    cdef Py_ssize_t C = cf.C, off = k * SM_CHUNK, y
    cdef Py_ssize_t n = C - off if C - off < SM_CHUNK else SM_CHUNK
    cdef const uint16_t* z = zh + i * C + off
    cdef const label_t* lab = lp + i
    cdef double* rst = st + i * cf.nchunks * SM_ST       # the row's records
    cdef float Ky
    if _ce_ignored(cf, lab, 0):
        if grad:
            memset(gh + i * C + off, 0, n * sizeof(uint16_t))
        return
    y = <Py_ssize_t>lab[0]
    if off <= y < off + n:
        zy[i] = fl_bf16_to_f32(z[y - off])
    _ce_bf16_chunk(z, buf + off, n, rst + k * SM_ST, z, NULL, NULL, 0, False, False)
    if not grad:
        return
    Ky = _ce_bf16_grad_chunk(cf, k, buf, gh + i * C, rst, cfs + i * SM_CF, False)
    if off <= y < off + n:
        _ce_bf16_target(cf, lab, buf, gh + i * C, zy + i, cfs + i * SM_CF, Ky)


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
    if FL_BF16_ROWS and kind == FL_HALF_BF16 and _ce_half_plain(cf):
        _ce_bf16_item(cf, i, k, grad, zh, lp, gh, buf, st, zy, cfs)
        return
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
    cdef Py_ssize_t N = cf.N, nch = cf.nchunks, items = N * nch, it, i
    cdef Py_ssize_t rows = _ce_half_tile_rows(cf)
    cf.prelog = cf.C < SM_SMALL_C and not (cf.cap > 0)
    cf.defer_grad = gh != NULL and _ce_half_plain(cf)
    if _ce_half_split(cf, nt):
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
    cdef Py_ssize_t rows = _ce_half_tile_rows(cf)
    if _ce_half_split(cf, nt):
        return cf.C + SM_CHUNK
    return (rows if rows > 2 else 2) * cf.C + SM_CHUNK    # (two rows: _ce_bf16_rows)

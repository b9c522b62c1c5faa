# Cross-entropy: spreading the steps of _ce_steps.pxi over rows and threads
# (included by _kernels.pyx).
#
# Four schedules, chosen by _ce_schedule from N, C and the thread count; all
# give the same bits (the steps' sums never depend on the split):
#
# * few classes (C < SM_SMALL_C, no soft-cap): blocks of SM_ROWBLOCK rows,
#   step 1 for the whole block (its exp vectorised across rows), then steps 2
#   and 3 row by row (the plain case: all three steps on the block transposed,
#   _ce_plain_block); blocks spread over threads (static);
# * few long rows (several chunks, N < SM_SPLIT_ROWS x threads): the
#   (row, chunk) items of step 1 across threads, step 2 serially, the items of
#   step 3 across threads (two parallel phases);
# * otherwise contiguous row ranges, one per thread (or one range serially),
#   each run by _ce_row_range: steps 1, 2, 3 row after row.

cdef enum:
    SM_SPLIT_ROWS = 4       # split rows into chunks across threads when N < this x threads


cdef void _ce_row_range(const CeConf* cf, Py_ssize_t lo, Py_ssize_t hi, const floating* z,
                        const label_t* lab, const floating* t, const floating* w,
                        const floating* go, floating* g, floating* scratch, double* st,
                        double* zy, double* cfs, double* rl) noexcept nogil:
    """Rows [lo, hi) in order: steps 1, 2, 3 and the target correction. When
    step 3 is a plain scaling (float32, one chunk, index targets, no label
    smoothing or soft-cap) row i-1's step 3 runs inside row i's exp loop, its
    loads and stores overlapping the exp arithmetic (the same multiply, so the
    same bits). cf.defer_grad: step 3 is left to the caller (the exps stay in g)."""
    cdef Py_ssize_t i, k, pend = -1     # pend: the row whose step 3 waits
    cdef bint fuse = False
    if floating is float:
        fuse = (g != NULL and cf.nchunks == 1 and not cf.soft and cf.eps == 0
                and not (cf.cap > 0) and not cf.defer_grad)
    for i in range(lo, hi):
        if fuse and not _ce_ignored(cf, lab, i):
            _ce_chunk_stats(cf, i, 0, z, lab, t, w, g, scratch, st, zy,
                            g + pend * cf.C if pend >= 0 else NULL,
                            <floating>cfs[pend * SM_CF + CF_EXP_COEF] if pend >= 0 else 0)
            if pend >= 0:
                _ce_grad_target(cf, pend, lab, g, zy, cfs)
            _ce_row_loss(cf, i, lab, w, go, st, zy, cfs, rl)
            pend = i
            continue
        if pend >= 0:
            _ce_chunk_grad(cf, pend, 0, lab, t, w, g, st, cfs)
            _ce_grad_target(cf, pend, lab, g, zy, cfs)
            pend = -1
        for k in range(cf.nchunks):
            _ce_chunk_stats(cf, i, k, z, lab, t, w, g, scratch, st, zy)
        _ce_row_loss(cf, i, lab, w, go, st, zy, cfs, rl)
        if g != NULL and not cf.defer_grad:
            for k in range(cf.nchunks):
                _ce_chunk_grad(cf, i, k, lab, t, w, g, st, cfs)
            _ce_grad_target(cf, i, lab, g, zy, cfs)
    if pend >= 0:
        _ce_chunk_grad(cf, pend, 0, lab, t, w, g, st, cfs)
        _ce_grad_target(cf, pend, lab, g, zy, cfs)


cdef void _ce_small_rows(const CeConf* cf, Py_ssize_t i0, Py_ssize_t i1, const floating* z,
                         const label_t* lab, const floating* t, const floating* w,
                         const floating* go, floating* g, double* st, double* zy, double* cfs,
                         double* rl) noexcept nogil:
    """Few classes (cf.prelog set): step 1 for the block of rows [i0, i1) (at most
    SM_ROWBLOCK), then steps 2 and 3 row by row; the plain case in one transposed
    pass (_ce_plain_block: the same bits)."""
    cdef Py_ssize_t i
    if _ce_plain(cf, w):
        _ce_plain_block(cf, i0, i1, z, lab, go, g, cfs, rl)
        return
    _ce_block_stats(cf, i0, i1, z, lab, t, w, g, st, zy)
    for i in range(i0, i1):
        _ce_row_loss(cf, i, lab, w, go, st, zy, cfs, rl)
        if g != NULL:
            _ce_chunk_grad(cf, i, 0, lab, t, w, g, st, cfs)
            _ce_grad_target(cf, i, lab, g, zy, cfs)


cdef void _ce_schedule(CeConf* cf, int nt, const floating* zp, const label_t* lp,
                       const floating* tp, const floating* wp, const floating* gop,
                       floating* gp, double* st, double* zy, double* cfs,
                       double* rl) noexcept nogil:
    """All N rows with nt threads (nt == 1: serially): fills rl (row losses),
    cfs (coefficients, z-loss parts) and, when gp != NULL, the gradient."""
    cdef Py_ssize_t N = cf.N, nch = cf.nchunks
    cdef Py_ssize_t items = N * nch, it, i, nblk, i0
    cdef bint split = nt > 1 and nch > 1 and N < SM_SPLIT_ROWS * nt
    cdef floating* scratch
    if cf.C < SM_SMALL_C and not (cf.cap > 0):
        # few classes: blocks of rows, the exp vectorised across rows
        cf.prelog = True
        nblk = (N + SM_ROWBLOCK - 1) // SM_ROWBLOCK
        if nt > 1:
            for it in prange(nblk, schedule="static", num_threads=nt):
                i0 = it * SM_ROWBLOCK
                _ce_small_rows(cf, i0, N if N - i0 < SM_ROWBLOCK else i0 + SM_ROWBLOCK,
                               zp, lp, tp, wp, gop, gp, st, zy, cfs, rl)
        else:
            for it in range(nblk):
                i0 = it * SM_ROWBLOCK
                _ce_small_rows(cf, i0, N if N - i0 < SM_ROWBLOCK else i0 + SM_ROWBLOCK,
                               zp, lp, tp, wp, gop, gp, st, zy, cfs, rl)
    elif split:
        # few long rows: (row, chunk) items across threads, in two phases
        with parallel(num_threads=nt):
            scratch = <floating*>malloc(SM_CHUNK * sizeof(floating)) if cf.cap > 0 else NULL
            for it in prange(items, schedule="static"):
                _ce_chunk_stats(cf, it // nch, it % nch, zp, lp, tp, wp, gp, scratch, st, zy)
            free(scratch)
        for i in range(N):
            _ce_row_loss(cf, i, lp, wp, gop, st, zy, cfs, rl)
        if gp != NULL:
            for it in prange(items, schedule="static", num_threads=nt):
                _ce_chunk_grad(cf, it // nch, it % nch, lp, tp, wp, gp, st, cfs)
            for i in range(N):
                _ce_grad_target(cf, i, lp, gp, zy, cfs)
    elif nt > 1:
        # nt contiguous row ranges (a range per thread, as a static schedule;
        # ranges stay right if the team is smaller than asked)
        with parallel(num_threads=nt):
            scratch = <floating*>malloc(SM_CHUNK * sizeof(floating)) if cf.cap > 0 else NULL
            for it in prange(nt, schedule="static", chunksize=1):
                _ce_row_range(cf, N * it // nt, N * (it + 1) // nt, zp, lp, tp, wp, gop, gp,
                              scratch, st, zy, cfs, rl)
            free(scratch)
    else:
        scratch = <floating*>malloc(SM_CHUNK * sizeof(floating)) if cf.cap > 0 else NULL
        _ce_row_range(cf, 0, N, zp, lp, tp, wp, gop, gp, scratch, st, zy, cfs, rl)
        free(scratch)

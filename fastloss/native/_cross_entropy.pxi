# Cross-entropy: the public kernels (included by _kernels.pyx).
#
# ce_check_labels scans the targets before any logit is read; cross_entropy
# packs its arguments into a CeConf, allocates the per-(row, chunk) statistics
# (ST_* slots) and the per-row coefficients (CF_* slots), and runs
# _ce_schedule (_ce_schedule.pxi) over the rows (_ce_run); cross_entropy_plain is
# the same for the common call, taking the arrays as objects and checking them in
# C (no memoryviews: small calls are dominated by argument handling otherwise);
# cross_entropy_half does the same for 16-bit logits through _ce_half_schedule
# (_ce_half.pxi).


cdef Py_ssize_t _ce_scan_labels(const label_t* labels, Py_ssize_t n, Py_ssize_t C,
                                long long ignore_index, const double* weight,
                                Py_ssize_t* count, double* wsum) noexcept nogil:
    """The label scan of ce_check_labels: returns the first bad position (-1: none)
    and sets *count, *wsum (the count when weight is NULL)."""
    cdef Py_ssize_t i, bad = -1, cnt = 0
    cdef long long y
    cdef double ws = 0.0
    for i in range(n):
        y = labels[i]
        if y == ignore_index:
            continue
        if y < 0 or y >= C:
            bad = i
            break
        cnt += 1
        if weight != NULL:
            ws += weight[y]
    count[0] = cnt
    wsum[0] = ws if weight != NULL else <double>cnt
    return bad


def ce_check_labels(const label_t[::1] labels, Py_ssize_t C, long long ignore_index,
                    const double[::1] weight):
    """Scan class-index targets before any logit is read.

    Returns (position of the first label outside [0, C) that is not
    ignore_index or -1, number of non-ignored labels, sum of weight[label]
    over them in double, or the count without weight).
    """
    cdef Py_ssize_t bad, count
    cdef double wsum
    with nogil:
        bad = _ce_scan_labels(&labels[0] if labels.shape[0] else NULL, labels.shape[0], C,
                              ignore_index, &weight[0] if weight is not None else NULL,
                              &count, &wsum)
    return bad, count, wsum


cdef void _ce_conf(CeConf* cf, Py_ssize_t N, Py_ssize_t C, long long ignore_index,
                   double label_smoothing, double z_loss, double softcap, double grad_scale,
                   double z_grad_scale, double weight_sum, bint soft, bint want_grad) noexcept:
    cf.N = N
    cf.C = C
    cf.nchunks = (C + SM_CHUNK - 1) // SM_CHUNK
    cf.ignore = ignore_index
    cf.eps = label_smoothing
    cf.zl = z_loss
    cf.cap = softcap
    cf.sce = grad_scale
    cf.sz = z_grad_scale
    cf.W = weight_sum
    cf.soft = soft
    cf.want_grad = want_grad
    cf.prelog = False
    cf.pf_z = NULL
    cf.pf_g = NULL
    cf.defer_grad = False


cdef double* _ce_records(const CeConf* cf) except NULL:
    """One allocation for the statistics (N nchunks SM_ST doubles), the coefficients
    (N SM_CF) and the target logits (N), in that order."""
    cdef double* st = <double*>malloc(cf.N * (cf.nchunks * SM_ST + SM_CF + 1) * sizeof(double))
    if st == NULL:
        raise MemoryError()
    return st


cdef inline double* _ce_cfs(const CeConf* cf, double* st) noexcept nogil:
    """The coefficients (CF_* slots) in the records of _ce_records."""
    return st + cf.N * cf.nchunks * SM_ST


cdef inline double* _ce_zy(const CeConf* cf, double* st) noexcept nogil:
    """The target logits in the records of _ce_records."""
    return st + cf.N * (cf.nchunks * SM_ST + SM_CF)


cdef tuple _ce_totals(const CeConf* cf, double* st, const double* rl):
    """(sum of the row losses, sum of their z-loss parts) in row order; frees st."""
    cdef const double* cfs = _ce_cfs(cf, st)
    cdef double total = 0.0, ztotal = 0.0
    cdef Py_ssize_t i
    for i in range(cf.N):
        total += rl[i]
        ztotal += cfs[i * SM_CF + CF_ZLOSS]
    free(st)
    return total, ztotal


cdef tuple _ce_run(CeConf* cf, int num_threads, const floating* z, const label_t* lp,
                   const floating* tp, const floating* wp, const floating* gop, floating* gp,
                   double* rl):
    """The records allocated, _ce_schedule over the cf.N rows (serially below
    SM_PAR_MIN), and _ce_totals."""
    cdef Py_ssize_t N = cf.N
    cdef double* st = _ce_records(cf)
    cdef int nt = num_threads if N * (cf.C + SM_ROW_COST) >= SM_PAR_MIN else 1
    with nogil:
        _ce_schedule(cf, nt, z, lp, tp, wp, gop, gp, st, _ce_zy(cf, st), _ce_cfs(cf, st), rl)
    return _ce_totals(cf, st, rl)


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
    cdef CeConf cf
    cdef Py_ssize_t N = logits.shape[0], C = logits.shape[1]
    cdef const label_t* lp = NULL
    cdef const floating* tp = NULL
    cdef const floating* wp = NULL
    cdef const floating* gop = NULL
    cdef floating* gp = NULL
    if N == 0 or C == 0:
        return 0.0, 0.0
    _ce_conf(&cf, N, C, ignore_index, label_smoothing, z_loss, softcap, grad_scale,
             z_grad_scale, weight_sum, target_prob is not None, grad is not None)
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
    return _ce_run(&cf, num_threads, &logits[0, 0], lp, tp, wp, gop, gp, &row_loss[0])


cdef inline bint _plain_array(cnp.ndarray a, int nd) noexcept:
    """``a`` (an exact ndarray) has nd dimensions, is C-contiguous, aligned and native."""
    return (cnp.PyArray_NDIM(a) == nd and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a))


cdef inline bint _overlaps(cnp.ndarray a, cnp.ndarray b) noexcept:
    """The byte ranges of two C-contiguous arrays intersect."""
    cdef char* pa = <char*>cnp.PyArray_DATA(a)
    cdef char* pb = <char*>cnp.PyArray_DATA(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


def cross_entropy_plain(object logits, object labels, object out, bint want_grad,
                        long long ignore_index, bint mean, int num_threads):
    """:func:`cross_entropy` for the common call, recognised here in a few C tests
    rather than by the Python layer's general validation: logits a float32/float64
    (N, C) ndarray (N, C >= 1), labels an int32/int64 (N,) ndarray, both C-contiguous,
    aligned, native byte order; no weights, smoothing, z-loss, soft-cap or per-row
    grad_output; 'mean' (``mean``) or 'sum'.

    The gradient (``want_grad``) goes into ``out`` (None: a new array): an ndarray of
    the logits' dtype and shape, C-contiguous, writable, either the logits exactly or
    not overlapping them or the labels. Returns (sum of the row losses, number of
    non-ignored labels, gradient or None); or None -- having read no logit and
    written nothing -- when the call is not that case or a label is outside [0, C)
    (the caller's general path then validates and raises).
    """
    cdef cnp.ndarray x, lab, g = None
    cdef int tx, tl
    cdef Py_ssize_t N, C, count, bad
    cdef double wsum, scale, total
    cdef cnp.npy_intp* dims
    cdef CeConf cf
    cdef double* rl
    cdef void* gp = NULL
    cdef const void* lp
    if not (cnp.PyArray_CheckExact(logits) and cnp.PyArray_CheckExact(labels)):
        return None
    x = <cnp.ndarray>logits
    lab = <cnp.ndarray>labels
    tx = cnp.PyArray_TYPE(x)
    tl = cnp.PyArray_TYPE(lab)
    if not ((tx == cnp.NPY_FLOAT32 or tx == cnp.NPY_FLOAT64) and _plain_array(x, 2)
            and cnp.PyTypeNum_ISINTEGER(tl) and cnp.PyTypeNum_ISSIGNED(tl)
            and (cnp.PyArray_ITEMSIZE(lab) == 4 or cnp.PyArray_ITEMSIZE(lab) == 8)
            and _plain_array(lab, 1)):
        return None
    dims = cnp.PyArray_DIMS(x)
    N, C = dims[0], dims[1]
    if N == 0 or C == 0 or cnp.PyArray_DIMS(lab)[0] != N:
        return None
    if out is not None:
        if not (want_grad and cnp.PyArray_CheckExact(out)):
            return None
        g = <cnp.ndarray>out
        if not (cnp.PyArray_TYPE(g) == tx and _plain_array(g, 2) and cnp.PyArray_ISWRITEABLE(g)
                and cnp.PyArray_DIMS(g)[0] == N and cnp.PyArray_DIMS(g)[1] == C):
            return None
        if _overlaps(g, lab):
            return None
        if _overlaps(g, x) and not (cnp.PyArray_DATA(g) == cnp.PyArray_DATA(x)
                                    and cnp.PyArray_STRIDES(g)[0] == cnp.PyArray_STRIDES(x)[0]
                                    and cnp.PyArray_STRIDES(g)[1] == cnp.PyArray_STRIDES(x)[1]):
            return None
    lp = cnp.PyArray_DATA(lab)
    with nogil:
        if cnp.PyArray_ITEMSIZE(lab) == 4:
            bad = _ce_scan_labels(<const cnp.int32_t*>lp, N, C, ignore_index, NULL, &count, &wsum)
        else:
            bad = _ce_scan_labels(<const cnp.int64_t*>lp, N, C, ignore_index, NULL, &count, &wsum)
    if bad >= 0:
        return None
    if want_grad:
        if g is None:
            g = cnp.PyArray_EMPTY(2, dims, tx, 0)
        gp = cnp.PyArray_DATA(g)
    # the gradient factor of the reduced loss (R.grad_factor): 1 / count for 'mean'
    scale = (1.0 / wsum if wsum != 0 else INFINITY) if mean else 1.0
    _ce_conf(&cf, N, C, ignore_index, 0.0, 0.0, 0.0, scale, scale, <double>C, False, want_grad)
    rl = <double*>malloc(N * sizeof(double))
    if rl == NULL:
        raise MemoryError()
    try:
        if tx == cnp.NPY_FLOAT32 and cnp.PyArray_ITEMSIZE(lab) == 4:
            total = _ce_run(&cf, num_threads, <const float*>cnp.PyArray_DATA(x),
                            <const cnp.int32_t*>lp, NULL, NULL, NULL, <float*>gp, rl)[0]
        elif tx == cnp.NPY_FLOAT32:
            total = _ce_run(&cf, num_threads, <const float*>cnp.PyArray_DATA(x),
                            <const cnp.int64_t*>lp, NULL, NULL, NULL, <float*>gp, rl)[0]
        elif cnp.PyArray_ITEMSIZE(lab) == 4:
            total = _ce_run(&cf, num_threads, <const double*>cnp.PyArray_DATA(x),
                            <const cnp.int32_t*>lp, NULL, NULL, NULL, <double*>gp, rl)[0]
        else:
            total = _ce_run(&cf, num_threads, <const double*>cnp.PyArray_DATA(x),
                            <const cnp.int64_t*>lp, NULL, NULL, NULL, <double*>gp, rl)[0]
    finally:
        free(rl)
    return total, count, g


def cross_entropy_half(int kind, const uint16_t[:, ::1] logits, const label_t[::1] labels,
                       const float[:, ::1] target_prob, const float[::1] weight,
                       const float[::1] grad_output, uint16_t[:, ::1] grad,
                       double[::1] row_loss, long long ignore_index, double label_smoothing,
                       double z_loss, double softcap, double grad_scale, double z_grad_scale,
                       double weight_sum, int num_threads):
    """:func:`cross_entropy` on bfloat16 (kind 1) or float16 (kind 2) logits, given
    as their uint16 bits; float32 target probabilities, weights and grad_output;
    the gradient rounded to the logits' type (nearest-even) into ``grad`` (may be
    ``logits`` itself). Computed as the float32 kernel on the widened logits, a
    tile of rows at a time (_ce_half.pxi): the same row losses, sums and bits."""
    cdef CeConf cf
    cdef Py_ssize_t N = logits.shape[0], C = logits.shape[1], per
    cdef double* st
    cdef float* bufs
    cdef int nt
    cdef const label_t* lp = NULL
    cdef const float* tp = NULL
    cdef const float* wp = NULL
    cdef const float* gop = NULL
    cdef uint16_t* gp = NULL
    if kind != FL_HALF_BF16 and kind != FL_HALF_F16:
        raise ValueError(f"kind must be {FL_HALF_BF16} or {FL_HALF_F16}, got {kind}")
    if N == 0 or C == 0:
        return 0.0, 0.0
    _ce_conf(&cf, N, C, ignore_index, label_smoothing, z_loss, softcap, grad_scale,
             z_grad_scale, weight_sum, target_prob is not None, grad is not None)
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
    nt = num_threads if N * (C + SM_ROW_COST) >= SM_PAR_MIN else 1
    per = _ce_half_buffer(&cf, nt)
    bufs = <float*>malloc(nt * per * sizeof(float))
    if bufs == NULL:
        raise MemoryError()
    try:
        st = _ce_records(&cf)
    except MemoryError:
        free(bufs)
        raise
    with nogil:
        _ce_half_schedule(&cf, kind, nt, per, &logits[0, 0], lp, tp, wp, gop, gp, bufs, st,
                          _ce_zy(&cf, st), _ce_cfs(&cf, st), &row_loss[0])
    free(bufs)
    return _ce_totals(&cf, st, &row_loss[0])

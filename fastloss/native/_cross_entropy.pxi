# Cross-entropy: the public kernels (included by _kernels.pxi).
#
# ce_check_labels scans the targets before any logit is read; cross_entropy
# packs its arguments into a CeConf, allocates the per-(row, chunk) statistics
# (ST_* slots) and the per-row coefficients (CF_* slots), and runs
# _ce_schedule (_ce_schedule.pxi) over the rows.


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
    cdef CeConf cf
    cdef Py_ssize_t N = logits.shape[0], C = logits.shape[1]
    cdef Py_ssize_t nch, i
    cdef double* st
    cdef double* cfs
    cdef double* zy
    cdef double total = 0.0, ztotal = 0.0
    cdef int nt
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
    st = <double*>malloc(N * nch * SM_ST * sizeof(double))
    cfs = <double*>malloc(N * SM_CF * sizeof(double))
    zy = <double*>malloc(N * sizeof(double))
    if st == NULL or cfs == NULL or zy == NULL:
        free(st)
        free(cfs)
        free(zy)
        raise MemoryError()
    nt = num_threads if N * (C + SM_ROW_COST) >= SM_PAR_MIN else 1
    with nogil:
        _ce_schedule(&cf, nt, zp, lp, tp, wp, gop, gp, st, zy, cfs, rl)
        for i in range(N):
            total += rl[i]
            ztotal += cfs[i * SM_CF + CF_ZLOSS]
    free(st)
    free(cfs)
    free(zy)
    return total, ztotal

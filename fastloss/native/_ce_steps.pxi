# Cross-entropy: the three steps of one row (included by _kernels.pyx).
#
# Rows of C classes are cut into fixed chunks of SM_CHUNK classes. Every
# cross-entropy call runs the same three steps, in this order, whatever the
# thread count (_ce_schedule.pxi spreads them over threads):
#
#   1. _ce_chunk_stats, per (row, chunk): chunk max m_k, s_k = sum exp(z - m_k)
#      (stored as e = exp(z - m_k) in the gradient row when a gradient is
#      wanted), plus the sums the loss needs (sum z, sum w z, sum of target
#      weights...) -> the chunk's statistics record (ST_* slots).
#      _ce_block_stats does the same for a block of rows of few classes (one
#      chunk each); _ce_plain_block runs steps 1-3 for such a block in the
#      plain case (index targets, no weights/smoothing/z-loss/cap).
#   2. _ce_row_loss, per row: m = max_k m_k, s = sum_k s_k exp(m_k - m),
#      lse = m + log s, the row loss and the gradient coefficients (all in
#      double) -> the row's coefficient record (CF_* slots).
#   3. _ce_chunk_grad, per (row, chunk): the gradient g = e K exp(m_k - m) - a_c;
#      then _ce_grad_target, per row: the target class's term of a_c (index
#      targets).
#
# The chunking depends only on C, and every sum runs in a fixed order over
# 16 independent partial accumulators, so results are bitwise identical for any
# thread count and any schedule.
#
# Sums over a row accumulate in double (float32 exps: blocks of 8 per lane in
# float first, then double): the float32 loss stays within 1e-6 relative of a
# float64 reference.

ctypedef fused label_t:
    cnp.int32_t
    cnp.int64_t

cdef enum:
    SM_SMALL_C = 32         # below this many classes, step 1 works on blocks of rows
    SM_ROWBLOCK = 64        # rows per block in that case


cdef enum:
    # the statistics record: step 1's results for one (row, chunk), SM_ST
    # doubles at st + (i nchunks + k) SM_ST
    ST_CHUNK_MAX = 0        # m_k = max z over the chunk (NaN skipped)
    ST_EXP_SUM = 1          # s_k = sum exp(z - m_k)
    ST_AZ_SUM = 2           # sum a_c z_c (soft targets), sum w_c z_c or sum z_c (smoothing)
    ST_A_SUM = 3            # sum a_c (soft targets)
    ST_LOG_EXP_SUM = 4      # log s_k (only _ce_block_stats: CeConf.prelog)
    SM_ST = 5


cdef enum:
    # the coefficient record: step 2's results for one row, SM_CF doubles at
    # cfs + i SM_CF: what step 3 needs, and the z-loss part
    CF_ROW_MAX = 0          # m = max_k m_k
    CF_EXP_COEF = 1         # K: multiplies exp(z - m)
    CF_SPREAD_COEF = 2      # B0: spread part of a_c / w_c (label smoothing)
    CF_SOFT_COEF = 3        # B1: soft targets, times t_c w_c
    CF_TARGET_COEF = 4      # subtracted at the target class (index targets)
    CF_ZLOSS = 5            # z-loss part of the row loss (0 for ignored rows)
    SM_CF = 6


cdef struct CeConf:
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
    bint prelog         # step 1 stored ST_LOG_EXP_SUM (few-class path)
    # 16-bit tiles (_ce_half.pxi), NULL otherwise: while step 1 runs row i of a
    # tile, prefetch row i of the next tile's logits and of this tile's gradient
    const uint16_t* pf_z
    uint16_t* pf_g
    bint defer_grad     # _ce_row_range leaves step 3 to the caller (16-bit tiles)


cdef inline bint _ce_ignored(const CeConf* cf, const label_t* lab, Py_ssize_t i) noexcept nogil:
    return (not cf.soft) and lab[i] == cf.ignore


# --- step 1: chunk statistics ------------------------------------------------

cdef void _ce_chunk_stats(const CeConf* cf, Py_ssize_t i, Py_ssize_t k, const floating* z,
                          const label_t* lab, const floating* t, const floating* w,
                          floating* g, floating* scratch, double* st, double* zy,
                          floating* sg=NULL, floating sK=0) noexcept nogil:
    """Step 1 for (row i, chunk k): statistics, and e (or capped logits) into g.
    sg != NULL (row i not ignored, one chunk, gradient wanted): also scale the
    C values at sg by sK -- the previous row's step 3, fused into this row's exp
    loop by _ce_row_range."""
    cdef Py_ssize_t C = cf.C
    cdef Py_ssize_t off = k * SM_CHUNK
    cdef Py_ssize_t n = C - off if C - off < SM_CHUNK else SM_CHUNK
    cdef const floating* src = z + i * C + off
    cdef floating* work = NULL
    cdef double* cs = st + (i * cf.nchunks + k) * SM_ST
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
    elif cf.pf_z != NULL:
        # 16-bit tile: the 16-bit memory behind the float32 tile (the prefetch
        # runs over 4 n bytes from there: this chunk of the row and the next)
        sk = _sm_sumexp(src, work if store_e else NULL, n, mk,
                        <const floating*>(cf.pf_z + i * C + off),
                        <floating*>(cf.pf_g + i * C + off) if store_e and cf.pf_g != NULL
                        else NULL, sg, sK)
    else:
        # prefetch the same chunk of the next row (its logits, its gradient)
        sk = _sm_sumexp(src, work if store_e else NULL, n, mk,
                        z + (i + 1) * C + off if i + 1 < cf.N else NULL,
                        work + C if store_e and i + 1 < cf.N else NULL, sg, sK)
    cs[ST_CHUNK_MAX] = mk
    cs[ST_EXP_SUM] = sk
    cs[ST_AZ_SUM] = az
    cs[ST_A_SUM] = asum


cdef void _ce_block_stats(const CeConf* cf, Py_ssize_t i0, Py_ssize_t i1, const floating* z,
                          const label_t* lab, const floating* t, const floating* w,
                          floating* g, double* st, double* zy) noexcept nogil:
    """Step 1 for rows [i0, i1) of few classes (C < SM_SMALL_C, no soft-cap, at most
    SM_ROWBLOCK rows): per-row max and sums, then ONE flat exp loop over the block's
    C (i1 - i0) contiguous values (vectorised across rows), then per-row sums and
    their logs. Ignored rows are computed too and zeroed by step 3."""
    cdef Py_ssize_t C = cf.C, i, c, j
    cdef const floating* zr
    cdef floating* gr
    cdef floating mk, x
    cdef double* cs
    cdef double az, asum, s0, s1
    cdef floating buf[SM_ROWBLOCK * SM_SMALL_C]
    cdef floating* wk = &buf[0]      # row i at wk + (i - i0) C
    if g != NULL:
        wk = g + i0 * C
    for i in range(i0, i1):
        zr = z + i * C
        gr = wk + (i - i0) * C
        cs = st + i * SM_ST
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
        cs[ST_CHUNK_MAX] = mk
        cs[ST_AZ_SUM] = az
        cs[ST_A_SUM] = asum
        for c in range(C):
            gr[c] = zr[c] - mk
    for j in range((i1 - i0) * C):
        wk[j] = vexp(wk[j])
    for i in range(i0, i1):
        gr = wk + (i - i0) * C
        cs = st + i * SM_ST
        if cs[ST_CHUNK_MAX] == -INFINITY:
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
        cs[ST_EXP_SUM] = s0 + s1
    # log of the row sums, vectorised across the block's rows
    for i in range(i0, i1):
        st[i * SM_ST + ST_LOG_EXP_SUM] = vlog(st[i * SM_ST + ST_EXP_SUM])


cdef inline bint _ce_plain(const CeConf* cf, const void* w) noexcept nogil:
    """The plain case of the few-class path: class-index targets without weights,
    label smoothing, z-loss or soft-cap (and step 3 not left to the caller). Every
    mult-add of step 2 then multiplies by exactly 1 or adds an exact 0, so the
    compiler's FMA contraction cannot change a bit wherever it applies."""
    return (not cf.soft and w == NULL and cf.eps == 0 and cf.zl == 0 and not (cf.cap > 0)
            and not cf.defer_grad)


cdef void _ce_plain_block(const CeConf* cf, Py_ssize_t i0, Py_ssize_t i1, const floating* z,
                          const label_t* lab, const floating* go, floating* g, double* cfs,
                          double* rl) noexcept nogil:
    """Steps 1-3 for the rows [i0, i1) (at most SM_ROWBLOCK) of few classes in the plain
    case (_ce_plain): per row the same operations in the same order as _ce_block_stats,
    _ce_row_loss, _ce_chunk_grad and _ce_grad_target, hence the same bits, but on the
    block transposed to class-major order (T[c B + r] = z[i0 + r, c]): each step is a
    loop over the rows, which the compiler vectorises (a row per lane), so the per-row
    chains (max, sums, log, division) run side by side instead of one after another.
    Writes rl, cfs[CF_ZLOSS] (0; the other CF slots are not needed) and the gradient."""
    cdef Py_ssize_t C = cf.C, B = i1 - i0, r, c, i, y
    cdef floating T[SM_ROWBLOCK * SM_SMALL_C]
    cdef floating mk[SM_ROWBLOCK]
    cdef floating Kf[SM_ROWBLOCK]
    cdef floating tc[SM_ROWBLOCK]
    cdef double zy[SM_ROWBLOCK]
    cdef double s0[SM_ROWBLOCK]
    cdef double s1[SM_ROWBLOCK]
    cdef double ls[SM_ROWBLOCK]
    cdef const floating* zr
    cdef floating* gr
    cdef floating x
    cdef double m, lse, rr, sce, A = 1.0, wy = 1.0
    zr = z + i0 * C
    for c in range(C):
        for r in range(B):
            T[c * B + r] = zr[r * C + c]
    # step 1: max (NaN skipped), shift, exp, the two interleaved double sums, log
    for r in range(B):
        mk[r] = -INFINITY
    for c in range(C):
        for r in range(B):
            x = T[c * B + r]
            mk[r] = x if x > mk[r] else mk[r]
    for c in range(C):
        for r in range(B):
            T[c * B + r] = T[c * B + r] - mk[r]
    for r in range(B * C):
        T[r] = vexp(T[r])
    for r in range(B):
        if mk[r] == -INFINITY:
            # only -inf and NaN: e = 0 or NaN
            zr = z + (i0 + r) * C
            for c in range(C):
                T[c * B + r] = <floating>0 if zr[c] == -INFINITY else zr[c]
        s0[r] = 0.0
        s1[r] = 0.0
    c = 0
    while c + 2 <= C:
        for r in range(B):
            s0[r] += T[c * B + r]
            s1[r] += T[(c + 1) * B + r]
        c += 2
    if c < C:
        for r in range(B):
            s0[r] += T[c * B + r]
    for r in range(B):
        s0[r] = s0[r] + s1[r]
        ls[r] = vlog(s0[r])
    # step 2 (ignored rows: loss 0, gradient 0)
    for r in range(B):
        i = i0 + r
        cfs[i * SM_CF + CF_ZLOSS] = 0.0
        if _ce_ignored(cf, lab, i):
            rl[i] = 0.0
            continue
        zy[r] = z[i * C + <Py_ssize_t>lab[i]]
        m = mk[r]
        lse = m + ls[r]
        rl[i] = (1.0 - cf.eps) * wy * ((m - zy[r]) + ls[r])
        rr = 1.0 if go == NULL else <double>go[i]
        sce = rr * cf.sce
        Kf[r] = <floating>((sce * A + rr * cf.sz * 2.0 * cf.zl * lse) / s0[r])
        tc[r] = <floating>(sce * (1.0 - cf.eps) * wy * 1.0)
    if g == NULL:
        return
    # step 3, writing the rows back in row-major order
    for r in range(B):
        i = i0 + r
        gr = g + i * C
        if _ce_ignored(cf, lab, i):
            for c in range(C):
                gr[c] = 0
            continue
        for c in range(C):
            gr[c] = T[c * B + r] * Kf[r]
        y = <Py_ssize_t>lab[i]
        gr[y] = gr[y] - tc[r]


# --- step 2: row loss and gradient coefficients --------------------------------

cdef void _ce_row_loss(const CeConf* cf, Py_ssize_t i, const label_t* lab, const floating* w,
                       const floating* go, const double* st, const double* zy,
                       double* cfs, double* rl) noexcept nogil:
    """Step 2 for row i: combine the chunks, row loss, gradient coefficients."""
    cdef const double* cs = st + i * cf.nchunks * SM_ST
    cdef double* cr = cfs + i * SM_CF
    cdef double m = -INFINITY, s = 0.0, az = 0.0, A = 0.0, ls, lse, loss, wy = 1.0, r, sce
    cdef Py_ssize_t k
    cdef double C = <double>cf.C
    if _ce_ignored(cf, lab, i):
        rl[i] = 0.0
        cr[CF_ZLOSS] = 0.0
        return
    for k in range(cf.nchunks):
        m = cs[k * SM_ST + ST_CHUNK_MAX] if cs[k * SM_ST + ST_CHUNK_MAX] > m else m
    if cf.nchunks == 1:
        s, az, A = cs[ST_EXP_SUM], cs[ST_AZ_SUM], cs[ST_A_SUM]
    else:
        for k in range(cf.nchunks):
            s = s + cs[k * SM_ST + ST_EXP_SUM] * vexp(cs[k * SM_ST + ST_CHUNK_MAX] - m)
            az = az + cs[k * SM_ST + ST_AZ_SUM]
            A = A + cs[k * SM_ST + ST_A_SUM]
    ls = cs[ST_LOG_EXP_SUM] if cf.prelog else _c_log(s)     # libc: one scalar log per row
    lse = m + ls
    if cf.soft:
        loss = A * lse - az
    else:
        if w != NULL:
            wy = <double>w[<Py_ssize_t>lab[i]]
        loss = (1.0 - cf.eps) * wy * ((m - zy[i]) + ls)
        if cf.eps > 0:
            loss = loss + cf.eps / C * (cf.W * lse - az)
        # (no eps/C W term without smoothing: W may be inf from a class no row uses)
        A = (1.0 - cf.eps) * wy + (cf.eps / C * cf.W if cf.eps > 0 else 0.0)
    cr[CF_ZLOSS] = 0.0
    if cf.zl != 0:
        cr[CF_ZLOSS] = cf.zl * lse * lse
        loss = loss + cr[CF_ZLOSS]
    rl[i] = loss
    if cf.want_grad:
        r = 1.0 if go == NULL else <double>go[i]
        sce = r * cf.sce
        cr[CF_ROW_MAX] = m
        cr[CF_EXP_COEF] = (sce * A + r * cf.sz * 2.0 * cf.zl * lse) / s
        cr[CF_SPREAD_COEF] = sce * cf.eps / C
        cr[CF_SOFT_COEF] = sce * (1.0 - cf.eps)
        cr[CF_TARGET_COEF] = sce * (1.0 - cf.eps) * wy


# --- step 3: chunk gradient, then the target class ------------------------------

cdef inline double _ce_chunk_scale(const CeConf* cf, Py_ssize_t i, Py_ssize_t k,
                                   const double* st, const double* cfs) noexcept nogil:
    """K exp(m_k - m): what step 3 multiplies the exps of (row i, chunk k) by."""
    cdef const double* cr = cfs + i * SM_CF
    if cf.nchunks == 1:
        return cr[CF_EXP_COEF]
    return cr[CF_EXP_COEF] * vexp(st[(i * cf.nchunks + k) * SM_ST + ST_CHUNK_MAX] - cr[CF_ROW_MAX])


cdef void _ce_chunk_grad(const CeConf* cf, Py_ssize_t i, Py_ssize_t k, const label_t* lab,
                         const floating* t, const floating* w, floating* g,
                         const double* st, const double* cfs) noexcept nogil:
    """Step 3 for (row i, chunk k): g = e K exp(m_k - m) - w_c (t_c B1 + B0)."""
    cdef Py_ssize_t C = cf.C
    cdef Py_ssize_t off = k * SM_CHUNK
    cdef Py_ssize_t n = C - off if C - off < SM_CHUNK else SM_CHUNK
    cdef floating* gr = g + i * C + off
    cdef const double* cr = cfs + i * SM_CF
    cdef double mk = st[(i * cf.nchunks + k) * SM_ST + ST_CHUNK_MAX]
    cdef floating Kk, B0, B1, cap, e, zc, d, mkf
    cdef const floating* tr
    cdef const floating* wr
    cdef Py_ssize_t c
    if _ce_ignored(cf, lab, i):
        for c in range(n):
            gr[c] = 0
        return
    Kk = <floating>_ce_chunk_scale(cf, i, k, st, cfs)
    B0 = <floating>cr[CF_SPREAD_COEF]
    B1 = <floating>cr[CF_SOFT_COEF]
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


cdef inline void _ce_grad_target(const CeConf* cf, Py_ssize_t i, const label_t* lab,
                                 floating* g, const double* zy,
                                 const double* cfs) noexcept nogil:
    """Index targets: subtract the target class's coefficient from its gradient."""
    cdef Py_ssize_t y
    cdef double f = 1.0, d
    if cf.soft or _ce_ignored(cf, lab, i):
        return
    y = <Py_ssize_t>lab[i]
    if cf.cap > 0:
        d = zy[i] / cf.cap
        f = 1.0 - d * d
    g[i * cf.C + y] = g[i * cf.C + y] - <floating>(cfs[i * SM_CF + CF_TARGET_COEF] * f)

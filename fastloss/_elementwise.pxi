# Element-wise losses: one fused pass per call (included by _kernels.pyx).
#
# For every element i the kernel computes the loss l_i and its derivative
# g_i = dl_i/dpred_i, then
#     l_i *= w_i                      (sample_weight, optional)
#     g_i *= w_i * go_i * gscale      (go: upstream gradient, optional)
# and either writes l_i (reduction='none') or adds it to the sum.
# The work is cut into fixed blocks of EW_BLOCK elements; each block's sum is
# kept in double (float32 losses: runs of EW_SUB per lane first added in float32)
# and the block sums are added in order afterwards, so the
# result does not depend on the thread count at all.

# Below these many elements a call runs on one thread. Measured with
# bench/par_threshold.py (2 cores, float32, loss + grad, best of batches; see
# its docstring): for mse 2 threads break even at 16K-32K elements when called
# back to back and pay (1.7x) from 128K when the OpenMP workers were asleep, as
# in a training loop; bce-with-logits (vectorised exp/log1p) pays from 8K
# either way. Losses with exp/log (log_cosh, bce, bce-with-logits) cost several
# times more per element, hence the lower threshold.
cdef enum:
    EW_BLOCK = 2048
    EW_ACC = 16                 # double accumulators per block sum (a power of 2)
    EW_SUB = 8                  # float32 losses summed per lane before the double add
    EW_SUBBLOCK = 128           # elements computed, then stored, at a time (a multiple of EW_ACC * EW_SUB)
    EW_PAR_MIN = 65536          # cheap losses: mse, sse, mae, huber, smooth_l1, quantile, hinges
    EW_PAR_MIN_TRANSC = 8192    # log_cosh, binary_cross_entropy(_with_logits)

cdef enum:
    K_MSE = 0
    K_SSE = 1
    K_MAE = 2
    K_HUBER = 3
    K_SMOOTH_L1 = 4
    K_QUANTILE = 5
    K_LOG_COSH = 6
    K_BCE = 7
    K_BCE_LOGITS = 8
    K_HINGE = 9
    K_SQUARED_HINGE = 10

ELEMENTWISE_PAR_MIN = EW_PAR_MIN
ELEMENTWISE_PAR_MIN_TRANSCENDENTAL = EW_PAR_MIN_TRANSC

ELEMENTWISE_KINDS = {
    "mse": K_MSE, "sse": K_SSE, "mae": K_MAE, "huber": K_HUBER,
    "smooth_l1": K_SMOOTH_L1, "quantile": K_QUANTILE, "log_cosh": K_LOG_COSH,
    "binary_cross_entropy": K_BCE,
    "binary_cross_entropy_with_logits": K_BCE_LOGITS,
    "hinge": K_HINGE, "squared_hinge": K_SQUARED_HINGE,
}


# --- per-element formulas: return l, store dl/dp in g[0] -------------------
# Constants are cast to `floating` so float32 kernels never promote to double.
# Selects are written so that a NaN input falls through to a NaN result.

from libc.math cimport fabsf


cdef inline floating _fabs(floating x) noexcept nogil:
    """|x| in x's own type (libc fabs is double: it would promote float kernels)."""
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating _sgn(floating d) noexcept nogil:
    """sign(d) with sign(0) = 0 and sign(NaN) = NaN."""
    return <floating>1 if d > 0 else (<floating>-1 if d < 0 else d * <floating>0)


cdef inline floating _mse(floating p, floating t, floating a, floating b, floating* g) noexcept nogil:
    # l = (p - t)^2 ; g = 2 (p - t)
    cdef floating d = p - t
    g[0] = d + d
    return d * d


cdef inline floating _sse(floating p, floating t, floating a, floating b, floating* g) noexcept nogil:
    # l = 0.5 (p - t)^2 ; g = p - t
    cdef floating d = p - t
    g[0] = d
    return <floating>0.5 * d * d


cdef inline floating _mae(floating p, floating t, floating a, floating b, floating* g) noexcept nogil:
    # l = |p - t| ; g = sign(p - t)
    cdef floating d = p - t
    g[0] = _sgn(d)
    return _fabs(d)


cdef inline floating _huber(floating p, floating t, floating delta, floating b, floating* g) noexcept nogil:
    # l = 0.5 d^2 if |d| <= delta else delta (|d| - delta/2)
    cdef floating d = p - t
    cdef floating ad = _fabs(d)
    cdef bint quad = ad <= delta
    g[0] = d if quad else delta * _sgn(d)
    return <floating>0.5 * d * d if quad else delta * (ad - <floating>0.5 * delta)


cdef inline floating _smooth_l1(floating p, floating t, floating beta, floating b, floating* g) noexcept nogil:
    # l = 0.5 d^2 / beta if |d| < beta else |d| - beta/2   (beta > 0)
    cdef floating d = p - t
    cdef floating ad = _fabs(d)
    cdef bint quad = ad < beta
    g[0] = d / beta if quad else _sgn(d)
    return <floating>0.5 * d * d / beta if quad else ad - <floating>0.5 * beta


cdef inline floating _quantile(floating p, floating t, floating q, floating b, floating* g) noexcept nogil:
    # r = t - p ; l = q r if r >= 0 else (q - 1) r ; g = -q if r > 0, 1 - q if r < 0, 0 at r = 0
    cdef floating r = t - p
    g[0] = -q if r > 0 else ((<floating>1 - q) if r < 0 else r * <floating>0)
    return q * r if r >= 0 else (q - <floating>1) * r


cdef inline floating _bce(floating p, floating t, floating lo, floating hi, floating* g) noexcept nogil:
    # pc = clip(p, lo, hi) ; l = -(t log pc + (1 - t) log(1 - pc))
    # g = (pc - t) / (pc (1 - pc))   (evaluated at the clipped value)
    # lo = eps, hi = 1 - eps, both as represented in the dtype (the caller
    # keeps 0 < lo and hi < 1 so both logs stay finite)
    cdef floating pc = lo if p < lo else (hi if p > hi else p)
    cdef floating qc = <floating>1 - pc
    g[0] = (pc - t) / (pc * qc)
    return -(t * vlog(pc) + (<floating>1 - t) * vlog(qc))


cdef extern from *:
    """
    /* bce with logits for one element, always inlined (as a Cython inline
     * function GCC's inliner may leave it a call inside _ew_block, and the loop
     * goes scalar):
     *   l = -(pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))
     *     = c log1p(exp(-|x|)) + ((1 - t) x if x >= 0 else -pw t x),  c = 1 - t + pw t
     * (both terms >= 0 for t in [0, 1]: no cancellation, unlike the
     * (1 - t) x + c (log1p(e) + max(-x, 0)) form)
     *   g = sigmoid(x) c - pw t = (1 - t) sigmoid(x) - pw t sigmoid(-x): no
     * cancellation for t in {0, 1} (g = -pw e / (1 + e), not 0, for large x, t = 1).
     * float: exp of x <= 0 only and log1p on [0, 1] (fewer operations). */
    #define FL_BCE_LOGITS_BODY(T, e, LOG1P_E)                          \
        T r = (T)1 / ((T)1 + e);                                       \
        T er = e * r;                                                  \
        int neg = x < 0;          /* one mask for the three selects */ \
        T sig = neg ? er : r;                                          \
        T sigc = neg ? r : er;                                         \
        T pt = pw * t;                                                 \
        T omt = (T)1 - t;                                              \
        T c = omt + pt;                                                \
        T lin = (neg ? -pt : omt) * x;                                 \
        *g = omt * sig - pt * sigc;                                    \
        return c * (LOG1P_E) + lin;
    FL_INLINE float fl_bce_logits_f(float x, float t, float pw, float *g)
    {
        float e = fl__expnonpos_f(-fabsf(x));
        FL_BCE_LOGITS_BODY(float, e, fl__log1p01_f(e))
    }
    FL_INLINE double fl_bce_logits_d(double x, double t, double pw, double *g)
    {
        double e = fl__exp(-fabs(x));
        FL_BCE_LOGITS_BODY(double, e, fl__log1p_unit(e, r))
    }
    """
    float fl_bce_logits_f(float x, float t, float pw, float* g) nogil
    double fl_bce_logits_d(double x, double t, double pw, double* g) nogil


cdef inline floating _hinge(floating p, floating t, floating zero_one, floating b, floating* g) noexcept nogil:
    # y = t (targets in {-1, 1}) or 2t - 1 (targets in {0, 1}); m = 1 - y p
    # l = max(m, 0) ; g = -y where m > 0
    cdef floating y = t + t - <floating>1 if zero_one != 0 else t
    cdef floating m = <floating>1 - y * p
    g[0] = -y if m > 0 else (<floating>0 if m <= 0 else m)
    return <floating>0 if m <= 0 else m


cdef inline floating _squared_hinge(floating p, floating t, floating zero_one, floating b, floating* g) noexcept nogil:
    # l = max(m, 0)^2 ; g = -2 y max(m, 0)
    cdef floating y = t + t - <floating>1 if zero_one != 0 else t
    cdef floating m = <floating>1 - y * p
    cdef floating h = <floating>0 if m <= 0 else m
    g[0] = <floating>-2 * y * h
    return h * h


# --- one block ---------------------------------------------------------------

# The transcendental losses get a function of their own: inside the large
# dispatch function below GCC's inlining budget runs out and their float64
# loops would call vexp/vlog1p out of line, which keeps them scalar.

cdef extern from *:
    """
    /* log-cosh for one element, always inlined (through a Cython inline
     * function GCC left the float64 loop scalar: ~30 ns per element):
     *   l = log(cosh d) = 0.5 log1p(sinh^2 d) for |d| < 20, |d| - log 2 beyond
     *   g = tanh d; with m = expm1(|d|): sinh|d| = m (m + 2) / (2 (m + 1)),
     *   tanh|d| = m (m + 2) / (m (m + 2) + 2). No cancellation for small d.
     * sign(d) is 0 at d = 0 and NaN for NaN. */
    #define FL_LOG_COSH_BODY(T, EXPM1, LOG1P)                                  \
        T d = p - t;                                                           \
        T ad = d < 0 ? -d : d;                                                 \
        int small = ad < 20;                                                   \
        T m = EXPM1(small ? ad : (T)0);                                        \
        T mm = m * (m + (T)2);                                                 \
        T s = mm / ((T)2 * (m + (T)1));                                        \
        T sg = d > 0 ? (T)1 : (d < 0 ? (T)-1 : d * (T)0);                      \
        *g = sg * (small ? mm / (mm + (T)2) : (T)1);                           \
        return small ? (T)0.5 * LOG1P(s * s) : ad - (T)0.69314718055994530942;
    FL_INLINE float fl_log_cosh_f(float p, float t, float *g)
    {
        FL_LOG_COSH_BODY(float, fl__expm1f, fl__log1pf)
    }
    FL_INLINE double fl_log_cosh_d(double p, double t, double *g)
    {
        FL_LOG_COSH_BODY(double, fl__expm1, fl__log1p)
    }
    """
    float fl_log_cosh_f(float p, float t, float* g) nogil
    double fl_log_cosh_d(double p, double t, double* g) nogil


cdef void _log_cosh_loop(const floating* p, const floating* t, floating a, floating b,
                         floating* lb, floating* gb, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if floating is float:
        for i in range(n):
            lb[i] = fl_log_cosh_f(p[i], t[i], &gb[i])
    else:
        for i in range(n):
            lb[i] = fl_log_cosh_d(p[i], t[i], &gb[i])


cdef void _bce_loop(const floating* p, const floating* t, floating a, floating b,
                    floating* lb, floating* gb, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        lb[i] = _bce(p[i], t[i], a, b, &gb[i])


cdef void _bce_logits_loop(const floating* p, const floating* t, const floating* aux,
                           floating a, floating b, floating* lb, floating* gb,
                           Py_ssize_t n) noexcept nogil:
    # fl_bce_logits_* called directly (always inlined): a Cython inline wrapper
    # around them may stay a call once this loop is inlined into _ew_block
    cdef Py_ssize_t i
    if floating is float:
        if aux != NULL:
            for i in range(n):
                lb[i] = fl_bce_logits_f(p[i], t[i], aux[i], &gb[i])
        else:
            for i in range(n):
                lb[i] = fl_bce_logits_f(p[i], t[i], a, &gb[i])
    else:
        if aux != NULL:
            for i in range(n):
                lb[i] = fl_bce_logits_d(p[i], t[i], aux[i], &gb[i])
        else:
            for i in range(n):
                lb[i] = fl_bce_logits_d(p[i], t[i], a, &gb[i])


cdef void _bce_logits_loop_grad(const floating* p, const floating* t, const floating* aux,
                                floating a, floating b, floating* lb, floating* grad,
                                floating gscale, Py_ssize_t n) noexcept nogil:
    # the same, writing gscale * g straight to the output gradient (no weights,
    # no upstream gradient): the stores to memory overlap the arithmetic instead
    # of forming a separate bandwidth-bound copy loop over the block
    cdef Py_ssize_t i
    cdef floating gi
    if floating is float:
        if aux != NULL:
            for i in range(n):
                lb[i] = fl_bce_logits_f(p[i], t[i], aux[i], &gi)
                grad[i] = gi * gscale
        else:
            for i in range(n):
                lb[i] = fl_bce_logits_f(p[i], t[i], a, &gi)
                grad[i] = gi * gscale
    else:
        if aux != NULL:
            for i in range(n):
                lb[i] = fl_bce_logits_d(p[i], t[i], aux[i], &gi)
                grad[i] = gi * gscale
        else:
            for i in range(n):
                lb[i] = fl_bce_logits_d(p[i], t[i], a, &gi)
                grad[i] = gi * gscale


cdef void _ew_sub(int kind, const floating* p, const floating* t, const floating* aux,
                  const floating* w, const floating* go, floating* grad, floating* lout,
                  Py_ssize_t n, floating a, floating b, floating gscale, double* acc) noexcept nogil:
    """n <= EW_BLOCK elements: losses and gradients, gradient (and 'none'
    losses) written out, the losses added into the EW_ACC lanes of acc."""
    cdef floating lb[EW_BLOCK]
    cdef floating gb[EW_BLOCK]
    cdef Py_ssize_t i
    cdef floating facc[EW_ACC]
    cdef double lacc[EW_ACC]
    cdef int j, k

    if kind == K_MSE:
        for i in range(n):
            lb[i] = _mse(p[i], t[i], a, b, &gb[i])
    elif kind == K_SSE:
        for i in range(n):
            lb[i] = _sse(p[i], t[i], a, b, &gb[i])
    elif kind == K_MAE:
        for i in range(n):
            lb[i] = _mae(p[i], t[i], a, b, &gb[i])
    elif kind == K_HUBER:
        for i in range(n):
            lb[i] = _huber(p[i], t[i], a, b, &gb[i])
    elif kind == K_SMOOTH_L1:
        for i in range(n):
            lb[i] = _smooth_l1(p[i], t[i], a, b, &gb[i])
    elif kind == K_QUANTILE:
        for i in range(n):
            lb[i] = _quantile(p[i], t[i], a, b, &gb[i])
    elif kind == K_LOG_COSH:
        _log_cosh_loop(p, t, a, b, lb, gb, n)
    elif kind == K_BCE:
        _bce_loop(p, t, a, b, lb, gb, n)
    elif kind == K_BCE_LOGITS:
        if grad != NULL and w == NULL and go == NULL:
            _bce_logits_loop_grad(p, t, aux, a, b, lb, grad, gscale, n)
            grad = NULL  # written
        else:
            _bce_logits_loop(p, t, aux, a, b, lb, gb, n)
    elif kind == K_HINGE:
        for i in range(n):
            lb[i] = _hinge(p[i], t[i], a, b, &gb[i])
    elif kind == K_SQUARED_HINGE:
        for i in range(n):
            lb[i] = _squared_hinge(p[i], t[i], a, b, &gb[i])

    if w != NULL:
        for i in range(n):
            lb[i] = lb[i] * w[i]
            gb[i] = gb[i] * w[i]
    if grad != NULL:
        if go != NULL:
            for i in range(n):
                grad[i] = gb[i] * go[i] * gscale
        else:
            for i in range(n):
                grad[i] = gb[i] * gscale
    if lout != NULL:
        for i in range(n):
            lout[i] = lb[i]
        return
    # EW_ACC independent double accumulators (several SIMD registers, so the
    # adds are not one latency-bound chain), fixed order: deterministic.
    # Worked on in a local copy (acc itself may alias anything for the compiler).
    for j in range(EW_ACC):
        lacc[j] = acc[j]
    i = 0
    if floating is float:
        # float losses: EW_SUB consecutive adds per lane in float32 (a positive sum
        # of 8 loses at most 7 ulp, 4e-7 relative), then into the double lanes: one
        # vector add per 16 losses instead of two float -> double conversions and adds
        while i + EW_ACC * EW_SUB <= n:
            for j in range(EW_ACC):
                facc[j] = lb[i + j]
            for k in range(1, EW_SUB):
                for j in range(EW_ACC):
                    facc[j] += lb[i + k * EW_ACC + j]
            for j in range(EW_ACC):
                lacc[j] += facc[j]
            i += EW_ACC * EW_SUB
    while i + EW_ACC <= n:
        for j in range(EW_ACC):
            lacc[j] += lb[i + j]
        i += EW_ACC
    while i < n:
        lacc[0] += lb[i]
        i += 1
    for j in range(EW_ACC):
        acc[j] = lacc[j]


cdef double _ew_block(int kind, const floating* p, const floating* t, const floating* aux,
                      const floating* w, const floating* go, floating* grad, floating* lout,
                      Py_ssize_t n, floating a, floating b, floating gscale) noexcept nogil:
    """One block of n <= EW_BLOCK elements, in sub-blocks of EW_SUBBLOCK (cheap
    losses; the transcendental ones in one piece): each
    sub-block's gradient is written before the next one's inputs are read, so
    loads and stores stay interleaved (one long compute loop followed by one
    long store loop left the memory system idle on one side at a time). Only
    the last sub-block can be partial, so the sum runs in exactly the order of
    a single pass over the block. Returns the block's loss sum (0 for 'none')."""
    cdef double acc[EW_ACC]
    cdef Py_ssize_t j0, m, sub = EW_SUBBLOCK
    cdef int j, k
    if kind == K_LOG_COSH or kind == K_BCE or kind == K_BCE_LOGITS:
        sub = EW_BLOCK      # compute-bound enough to keep the stores flowing (measured)
    for j in range(EW_ACC):
        acc[j] = 0
    j0 = 0
    while j0 < n:
        m = n - j0 if n - j0 < sub else sub
        _ew_sub(kind, p + j0, t + j0, NULL if aux == NULL else aux + j0,
                NULL if w == NULL else w + j0, NULL if go == NULL else go + j0,
                NULL if grad == NULL else grad + j0, NULL if lout == NULL else lout + j0,
                m, a, b, gscale, acc)
        j0 += m
    if lout != NULL:
        return 0.0
    j = EW_ACC
    while j > 1:  # pairwise fold, fixed order
        j //= 2
        for k in range(j):
            acc[k] += acc[k + j]
    return acc[0]


cdef inline const floating* _ptr_or_null(const floating[::1] a) noexcept:
    return NULL if a is None else &a[0]


def elementwise(int kind, const floating[::1] pred, const floating[::1] target,
                const floating[::1] aux, const floating[::1] weight,
                const floating[::1] grad_output, floating[::1] grad,
                floating[::1] loss_out, double a, double b, double gscale, int num_threads,
                Py_ssize_t par_min=-1):
    """Fused element-wise loss and gradient over flat, validated arrays.

    Returns the sum of the (weighted) losses in double, or 0.0 when the
    per-element losses were written to ``loss_out``. Optional arrays may be
    None: ``aux`` (per-element parameter, e.g. pos_weight), ``weight``,
    ``grad_output``, ``grad`` (skip the gradient), ``loss_out``. Inputs with
    fewer than ``par_min`` elements run on one thread; the default (-1) is
    ELEMENTWISE_PAR_MIN, or ELEMENTWISE_PAR_MIN_TRANSCENDENTAL for the losses
    with exp/log.
    """
    cdef Py_ssize_t n = pred.shape[0]
    if n == 0:
        return 0.0
    cdef Py_ssize_t nblocks = (n + EW_BLOCK - 1) // EW_BLOCK
    cdef const floating* pp = &pred[0]
    cdef const floating* tp = &target[0]
    cdef const floating* xp = _ptr_or_null(aux)
    cdef const floating* wp = _ptr_or_null(weight)
    cdef const floating* gop = _ptr_or_null(grad_output)
    cdef floating* gp = NULL if grad is None else &grad[0]
    cdef floating* lp = NULL if loss_out is None else &loss_out[0]
    cdef floating fa = <floating>a, fb = <floating>b, fs = <floating>gscale
    cdef double* partial = <double*>malloc(nblocks * sizeof(double))
    cdef Py_ssize_t blk, off, m
    cdef double total = 0.0
    if par_min < 0:
        par_min = (EW_PAR_MIN_TRANSC if kind == K_LOG_COSH or kind == K_BCE or kind == K_BCE_LOGITS
                   else EW_PAR_MIN)
    cdef int nt = num_threads if n >= par_min else 1
    if partial == NULL:
        raise MemoryError()
    with nogil:
        if nt > 1:
            for blk in prange(nblocks, schedule="static", num_threads=nt):
                off = blk * EW_BLOCK
                m = n - off if n - off < EW_BLOCK else EW_BLOCK
                partial[blk] = _ew_block(
                    kind, pp + off, tp + off, NULL if xp == NULL else xp + off,
                    NULL if wp == NULL else wp + off, NULL if gop == NULL else gop + off,
                    NULL if gp == NULL else gp + off, NULL if lp == NULL else lp + off,
                    m, fa, fb, fs)
        else:
            for blk in range(nblocks):
                off = blk * EW_BLOCK
                m = n - off if n - off < EW_BLOCK else EW_BLOCK
                partial[blk] = _ew_block(
                    kind, pp + off, tp + off, NULL if xp == NULL else xp + off,
                    NULL if wp == NULL else wp + off, NULL if gop == NULL else gop + off,
                    NULL if gp == NULL else gp + off, NULL if lp == NULL else lp + off,
                    m, fa, fb, fs)
        for blk in range(nblocks):
            total += partial[blk]
    free(partial)
    return total


# --- value checks the Python layer runs before a loss (one pass, no temporaries) ---

def label_set(const floating[::1] t):
    """0 if every t is -1 or +1, 1 if every t is 0 or 1, -1 otherwise (hinge targets)."""
    cdef Py_ssize_t n = t.shape[0], i, j = 0, m
    cdef Py_ssize_t not_pm = 0, not_zo = 0
    cdef floating v
    with nogil:
        while j < n and not (not_pm and not_zo):  # blocks, stop early once both fail
            m = n - j if n - j < EW_BLOCK else EW_BLOCK
            for i in range(j, j + m):
                v = t[i]
                not_pm += (v != 1) & (v != -1)
                not_zo += (v != 1) & (v != 0)
            j += m
    return 0 if not_pm == 0 else (1 if not_zo == 0 else -1)


def count_outside_unit(const floating[::1] p):
    """How many p are < 0 or > 1 (NaN is not counted: it propagates instead)."""
    cdef Py_ssize_t n = p.shape[0], i
    cdef Py_ssize_t bad = 0
    cdef floating v
    with nogil:
        for i in range(n):
            v = p[i]
            bad += (v < 0) | (v > 1)
    return bad

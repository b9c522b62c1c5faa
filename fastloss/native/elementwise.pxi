# Element-wise losses: the fused pass over blocks and threads (included by _kernels.pyx).
#
# The losses themselves are not here: each is one entry of the table in
# fastloss/_elementwise_spec.py, from which native/elementwise_codegen.py writes
# native/elementwise_losses.h at build time (per loss: its element body, its
# loops, one switch on the kind number). This file cuts the work into blocks,
# runs the generated loops and applies weights, the upstream gradient and the sum.
#
# For every element i the kernel computes the loss l_i and its derivative
# g_i = dl_i/dpred_i, then
#     l_i *= w_i                      (sample_weight, optional)
#     g_i *= w_i * go_i * gscale      (go: upstream gradient, optional)
#     h_i *= w_i * go_i * gscale      (hessian d2l/dpred2: only when asked for)
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
    EW_PAR_MIN = 65536          # the cheap losses: mse, sse, mae, huber, smooth_l1, ...
    EW_PAR_MIN_TRANSC = 8192    # the transcendental ones: log_cosh, binary_cross_entropy(_with_logits)
    EW_MAX_PARAMS = 8           # options per loss the kernel can pass

cdef extern from "native/elementwise_losses.h" nogil:
    enum:
        FL_EW_COUNT
        FL_EW_MAX_PARAMS
    const char* fl_ew_names[]
    const char* fl_ew_params[]
    const int fl_ew_transcendental[]
    int fl_ew_losses_f(int kind, const float* p, const float* t, const float* aux,
                       const double* par, float* lb, float* gb, float* hb, float* grad,
                       float gscale, Py_ssize_t n)
    int fl_ew_losses_d(int kind, const double* p, const double* t, const double* aux,
                       const double* par, double* lb, double* gb, double* hb, double* grad,
                       double gscale, Py_ssize_t n)

if FL_EW_MAX_PARAMS > EW_MAX_PARAMS:
    raise ImportError("a loss of the table has more options than EW_MAX_PARAMS")

ELEMENTWISE_PAR_MIN = EW_PAR_MIN
ELEMENTWISE_PAR_MIN_TRANSCENDENTAL = EW_PAR_MIN_TRANSC

# name -> kind number, and the options (in the order of `params`) each loss takes
ELEMENTWISE_KINDS = {fl_ew_names[k].decode(): k for k in range(FL_EW_COUNT)}
ELEMENTWISE_PARAMS = {fl_ew_names[k].decode(): tuple(fl_ew_params[k].decode().split())
                      for k in range(FL_EW_COUNT)}


cdef void _ew_sub(int kind, const floating* p, const floating* t, const floating* aux,
                  const floating* w, const floating* go, floating* grad, floating* hess,
                  floating* lout, Py_ssize_t n, const double* par, floating gscale,
                  double* acc) noexcept nogil:
    """n <= EW_BLOCK elements: losses and gradients (and hessians when hess is
    not NULL), gradient, hessian (and 'none' losses) written out, the losses
    added into the EW_ACC lanes of acc."""
    cdef floating lb[EW_BLOCK]
    cdef floating gb[EW_BLOCK]
    cdef floating hb[EW_BLOCK]
    cdef Py_ssize_t i
    cdef floating facc[EW_ACC]
    cdef double lacc[EW_ACC]
    cdef int j, k
    # gradients may go straight to `grad` when nothing multiplies them but gscale
    cdef floating* direct = grad if (w == NULL and go == NULL and hess == NULL) else NULL
    cdef floating* hbp = NULL if hess == NULL else hb
    cdef int wrote
    if floating is float:
        wrote = fl_ew_losses_f(kind, p, t, aux, par, lb, gb, hbp, direct, gscale, n)
    else:
        wrote = fl_ew_losses_d(kind, p, t, aux, par, lb, gb, hbp, direct, gscale, n)
    if wrote:
        grad = NULL  # written

    if w != NULL:
        for i in range(n):
            lb[i] = lb[i] * w[i]
            gb[i] = gb[i] * w[i]
        if hess != NULL:
            for i in range(n):
                hb[i] = hb[i] * w[i]
    if grad != NULL:
        if go != NULL:
            for i in range(n):
                grad[i] = gb[i] * go[i] * gscale
        else:
            for i in range(n):
                grad[i] = gb[i] * gscale
    if hess != NULL:
        if go != NULL:
            for i in range(n):
                hess[i] = hb[i] * go[i] * gscale
        else:
            for i in range(n):
                hess[i] = hb[i] * gscale
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
                      const floating* w, const floating* go, floating* grad, floating* hess,
                      floating* lout, Py_ssize_t n, const double* par,
                      floating gscale) noexcept nogil:
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
    if fl_ew_transcendental[kind]:
        sub = EW_BLOCK      # compute-bound enough to keep the stores flowing (measured)
    for j in range(EW_ACC):
        acc[j] = 0
    j0 = 0
    while j0 < n:
        m = n - j0 if n - j0 < sub else sub
        _ew_sub(kind, p + j0, t + j0, NULL if aux == NULL else aux + j0,
                NULL if w == NULL else w + j0, NULL if go == NULL else go + j0,
                NULL if grad == NULL else grad + j0, NULL if hess == NULL else hess + j0,
                NULL if lout == NULL else lout + j0, m, par, gscale, acc)
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
                floating[::1] loss_out, params, double gscale, int num_threads,
                Py_ssize_t par_min=-1, floating[::1] hessian=None):
    """Fused element-wise loss and gradient over flat, validated arrays.

    ``kind`` is ELEMENTWISE_KINDS[name]; ``params`` the loss's options, in the
    order ELEMENTWISE_PARAMS[name] names them. Returns the sum of the (weighted)
    losses in double, or 0.0 when the per-element losses were written to
    ``loss_out``. Optional arrays may be None: ``aux`` (the per-element option,
    e.g. pos_weight), ``weight``, ``grad_output``, ``grad`` (skip the gradient),
    ``loss_out``, ``hessian`` (d2l/dpred2, scaled as the gradient). Inputs with
    fewer than ``par_min`` elements run on one thread; the default (-1) is
    ELEMENTWISE_PAR_MIN, or ELEMENTWISE_PAR_MIN_TRANSCENDENTAL for the losses
    with exp/log.
    """
    if not 0 <= kind < FL_EW_COUNT:
        raise ValueError(f"kind must be in [0, {FL_EW_COUNT}), got {kind}")
    cdef double par[EW_MAX_PARAMS]
    cdef Py_ssize_t q, npar = len(params)
    if npar != len(ELEMENTWISE_PARAMS[fl_ew_names[kind].decode()]):
        raise ValueError(f"{fl_ew_names[kind].decode()} takes "
                         f"{ELEMENTWISE_PARAMS[fl_ew_names[kind].decode()]}, got {len(params)} params")
    for q in range(npar):
        par[q] = params[q]
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
    cdef floating* hp = NULL if hessian is None else &hessian[0]
    cdef floating* lp = NULL if loss_out is None else &loss_out[0]
    cdef floating fs = <floating>gscale
    cdef double* partial = <double*>malloc(nblocks * sizeof(double))
    cdef Py_ssize_t blk, off, m
    cdef double total = 0.0
    if par_min < 0:
        par_min = EW_PAR_MIN_TRANSC if fl_ew_transcendental[kind] else EW_PAR_MIN
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
                    NULL if gp == NULL else gp + off, NULL if hp == NULL else hp + off,
                    NULL if lp == NULL else lp + off, m, par, fs)
        else:
            for blk in range(nblocks):
                off = blk * EW_BLOCK
                m = n - off if n - off < EW_BLOCK else EW_BLOCK
                partial[blk] = _ew_block(
                    kind, pp + off, tp + off, NULL if xp == NULL else xp + off,
                    NULL if wp == NULL else wp + off, NULL if gop == NULL else gop + off,
                    NULL if gp == NULL else gp + off, NULL if hp == NULL else hp + off,
                    NULL if lp == NULL else lp + off, m, par, fs)
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

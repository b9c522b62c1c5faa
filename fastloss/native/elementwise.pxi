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

# The losses marked ``prefetch`` in the table (bce-with-logits, log_cosh) prefetch
# their inputs (fl_ew_ahead_*, 2 KiB ahead of each 256-element chunk) in calls
# whose arrays have EW_AHEAD_MIN bytes or more. Measured
# in one process (prefetching forced on and off in one module, and against the
# build before it with tools/ab_builds.py), bce-with-logits, float32, 2 threads,
# on a host whose memory other work kept busy (AMD EPYC, 32 MB L3): medians
# 1.21-1.33x faster from 2M elements (8 MiB per array) up to 10M at avx2,
# 1.13-1.51x at avx512 (fastest calls within +-15%); log_cosh 1.05-1.17x; float64
# 1.20x at 3M; the baseline level 1.02x (binary_cross_entropy 1.02x, and 0.96x in
# cache from the chunked loops: not marked). Below, the three
# arrays of back-to-back calls stay in the L3 cache and the prefetches only cost
# (0.85-0.94x at 65K-1.5M). The distance: 1 and 2 KiB alike, 4 KiB and prefetches
# into L2 slower. The cheap losses are not prefetched: bound by the memory itself,
# mse and huber prefetched in 256-element sub-blocks measured 0.90x and 0.97x.

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
    EW_AHEAD_MIN = 8388608      # losses marked prefetch: inputs prefetched in calls of this many bytes per array on
    EW_PAR_MIN = 65536          # the cheap losses: mse, sse, mae, huber, smooth_l1, ...
    EW_PAR_MIN_TRANSC = 8192    # the transcendental ones: log_cosh, binary_cross_entropy(_with_logits)
    EW_MAX_PARAMS = 8           # options per loss the kernel can pass

cdef extern from "native/elementwise_losses.h" nogil:
    enum:
        FL_EW_COUNT
        FL_EW_MAX_PARAMS
        FL_EW_CHUNK
    const char* fl_ew_names[]
    const char* fl_ew_params[]
    const int fl_ew_transcendental[]
    int fl_ew_losses_f(int kind, const float* p, const float* t, const float* aux,
                       const double* par, float* lb, float* gb, float* hb, float* grad,
                       float gscale, Py_ssize_t n, Py_ssize_t ahead, int fuse)
    int fl_ew_losses_d(int kind, const double* p, const double* t, const double* aux,
                       const double* par, double* lb, double* gb, double* hb, double* grad,
                       double gscale, Py_ssize_t n, Py_ssize_t ahead, int fuse)

if FL_EW_MAX_PARAMS > EW_MAX_PARAMS:
    raise ImportError("a loss of the table has more options than EW_MAX_PARAMS")

ELEMENTWISE_BLOCK = EW_BLOCK     # elements per block (its own sum)
ELEMENTWISE_CHUNK = FL_EW_CHUNK  # elements per chunk of a Loss.tame / prepass / prefetch loop
ELEMENTWISE_PAR_MIN = EW_PAR_MIN
ELEMENTWISE_PAR_MIN_TRANSCENDENTAL = EW_PAR_MIN_TRANSC
ELEMENTWISE_AHEAD_MIN = EW_AHEAD_MIN

# name -> kind number, and the options (in the order of `params`) each loss takes
ELEMENTWISE_KINDS = {fl_ew_names[k].decode(): k for k in range(FL_EW_COUNT)}
ELEMENTWISE_PARAMS = {fl_ew_names[k].decode(): tuple(fl_ew_params[k].decode().split())
                      for k in range(FL_EW_COUNT)}


cdef void _ew_sub(int kind, const floating* p, const floating* t, const floating* aux,
                  const floating* w, const floating* go, floating* grad, floating* hess,
                  floating* lout, Py_ssize_t n, const double* par, floating gscale,
                  double* acc, Py_ssize_t ahead, int fuse) noexcept nogil:
    """n <= EW_BLOCK elements: losses and gradients (and hessians when hess is
    not NULL), gradient, hessian (and 'none' losses) written out, the losses
    added into the EW_ACC lanes of acc. ``fuse``: every loss writes an unweighted
    gradient straight to ``grad`` (fl_ew_losses_*; the 16-bit kernels ask).
    ``ahead``: the losses marked prefetch prefetch p, t and aux up to that element (0: no)."""
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
        wrote = fl_ew_losses_f(kind, p, t, aux, par, lb, gb, hbp, direct, gscale, n, ahead, fuse)
    else:
        wrote = fl_ew_losses_d(kind, p, t, aux, par, lb, gb, hbp, direct, gscale, n, ahead, fuse)
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


cdef inline double _ew_fold(double* acc) noexcept nogil:
    """The block sum of the EW_ACC lanes: pairwise, fixed order."""
    cdef int j = EW_ACC, k
    while j > 1:
        j //= 2
        for k in range(j):
            acc[k] += acc[k + j]
    return acc[0]


cdef inline Py_ssize_t _ew_sub_size(int kind) noexcept nogil:
    # the transcendental losses are compute-bound enough to keep the stores
    # flowing in one piece (measured)
    return EW_BLOCK if fl_ew_transcendental[kind] else EW_SUBBLOCK


cdef double _ew_block(int kind, const floating* p, const floating* t, const floating* aux,
                      const floating* w, const floating* go, floating* grad, floating* hess,
                      floating* lout, Py_ssize_t n, Py_ssize_t avail, const double* par,
                      floating gscale) noexcept nogil:
    """One block of n <= EW_BLOCK elements, in sub-blocks of EW_SUBBLOCK (cheap
    losses; the transcendental ones in one piece): each
    sub-block's gradient is written before the next one's inputs are read, so
    loads and stores stay interleaved (one long compute loop followed by one
    long store loop left the memory system idle on one side at a time). Only
    the last sub-block can be partial, so the sum runs in exactly the order of
    a single pass over the block. ``avail`` > 0: the elements p, t and aux hold
    from p on, which the losses marked prefetch may prefetch (0: none). Returns the
    block's loss sum (0 for 'none')."""
    cdef double acc[EW_ACC]
    cdef Py_ssize_t j0, m, sub = _ew_sub_size(kind)
    cdef int j
    for j in range(EW_ACC):
        acc[j] = 0
    j0 = 0
    while j0 < n:
        m = n - j0 if n - j0 < sub else sub
        _ew_sub(kind, p + j0, t + j0, NULL if aux == NULL else aux + j0,
                NULL if w == NULL else w + j0, NULL if go == NULL else go + j0,
                NULL if grad == NULL else grad + j0, NULL if hess == NULL else hess + j0,
                NULL if lout == NULL else lout + j0, m, par, gscale, acc,
                avail - j0 if avail > 0 else 0, 0)
        j0 += m
    if lout != NULL:
        return 0.0
    return _ew_fold(acc)


# --- the driver: one call's arrays, cut into blocks over threads --------------

cdef enum:
    EW_F32 = 0          # every array float32
    EW_F64 = 1          # every array float64
    EW_MIXED = 2        # each array float32, bfloat16 or float16 (ak[]): elementwise_half.pxi

cdef struct EwCall:
    int kind, dt
    int ak[8]           # EW_MIXED: storage kind of p, t, aux, w, go, grad, hess, lout
                        # (0 float32, FL_HALF_BF16, FL_HALF_F16)
    int bf16_pairs      # EW_MIXED: p, t and grad bfloat16, nothing else: fl_ew_bf16_f
    void* p
    void* t
    void* aux
    void* w
    void* go
    void* grad
    void* hess
    void* lout
    const double* par
    double gscale
    bint ahead          # prefetch the inputs (_ew_block; float32 / float64 calls)


cdef inline void* _at(void* a, Py_ssize_t byte_offset) noexcept nogil:
    return NULL if a == NULL else <char*>a + byte_offset


cdef double _ew_range(const EwCall* c, Py_ssize_t blk, Py_ssize_t n) noexcept nogil:
    """Block ``blk`` of a call over n elements: its loss sum."""
    cdef Py_ssize_t off = blk * EW_BLOCK
    cdef Py_ssize_t m = n - off if n - off < EW_BLOCK else EW_BLOCK
    cdef Py_ssize_t b = off * (8 if c.dt == EW_F64 else 4)
    if c.dt == EW_MIXED:
        return _ew_block_mixed(c, off, m)
    if c.dt == EW_F32:
        return _ew_block(c.kind, <const float*>_at(c.p, b), <const float*>_at(c.t, b),
                         <const float*>_at(c.aux, b), <const float*>_at(c.w, b),
                         <const float*>_at(c.go, b), <float*>_at(c.grad, b),
                         <float*>_at(c.hess, b), <float*>_at(c.lout, b), m,
                         n - off if c.ahead else 0, c.par, <float>c.gscale)
    return _ew_block(c.kind, <const double*>_at(c.p, b), <const double*>_at(c.t, b),
                     <const double*>_at(c.aux, b), <const double*>_at(c.w, b),
                     <const double*>_at(c.go, b), <double*>_at(c.grad, b),
                     <double*>_at(c.hess, b), <double*>_at(c.lout, b), m,
                     n - off if c.ahead else 0, c.par, c.gscale)


cdef double _ew_run(EwCall* c, params, Py_ssize_t n, int num_threads,
                    Py_ssize_t par_min) except? -1.0:
    """Checks ``params`` against the loss, then runs the call over n elements in
    fixed blocks (threads when n >= par_min; -1: the loss's default) and adds the
    block sums in order. Returns the loss sum (0.0 for 'none')."""
    cdef int kind = c.kind
    if not 0 <= kind < FL_EW_COUNT:
        raise ValueError(f"kind must be in [0, {FL_EW_COUNT}), got {kind}")
    cdef double par[EW_MAX_PARAMS]
    cdef Py_ssize_t q, npar = len(params)
    name = fl_ew_names[kind].decode()
    if npar != len(ELEMENTWISE_PARAMS[name]):
        raise ValueError(f"{name} takes {ELEMENTWISE_PARAMS[name]}, got {npar} params")
    for q in range(npar):
        par[q] = params[q]
    c.par = par
    if n == 0:
        return 0.0
    cdef Py_ssize_t nblocks = (n + EW_BLOCK - 1) // EW_BLOCK, blk
    cdef double total = 0.0
    if par_min < 0:
        par_min = EW_PAR_MIN_TRANSC if fl_ew_transcendental[kind] else EW_PAR_MIN
    cdef int nt = num_threads if n >= par_min else 1
    cdef double* partial = <double*>malloc(nblocks * sizeof(double))
    if partial == NULL:
        raise MemoryError()
    with nogil:
        if nt > 1:
            for blk in prange(nblocks, schedule="static", num_threads=nt):
                partial[blk] = _ew_range(c, blk, n)
        else:
            for blk in range(nblocks):
                partial[blk] = _ew_range(c, blk, n)
        for blk in range(nblocks):
            total += partial[blk]
    free(partial)
    return total


cdef inline void* _ptr_or_null(const floating[::1] a) noexcept:
    return NULL if a is None else <void*>&a[0]


def elementwise(int kind, const floating[::1] pred, const floating[::1] target,
                const floating[::1] aux, const floating[::1] weight,
                const floating[::1] grad_output, floating[::1] grad,
                floating[::1] loss_out, params, double gscale, int num_threads,
                Py_ssize_t par_min=-1, floating[::1] hessian=None,
                Py_ssize_t ahead_min=-1):
    """Fused element-wise loss and gradient over flat, validated arrays.

    ``kind`` is ELEMENTWISE_KINDS[name]; ``params`` the loss's options, in the
    order ELEMENTWISE_PARAMS[name] names them. Returns the sum of the (weighted)
    losses in double, or 0.0 when the per-element losses were written to
    ``loss_out``. Optional arrays may be None: ``aux`` (the per-element option,
    e.g. pos_weight), ``weight``, ``grad_output``, ``grad`` (skip the gradient),
    ``loss_out``, ``hessian`` (d2l/dpred2, scaled as the gradient). Inputs with
    fewer than ``par_min`` elements run on one thread; the default (-1) is
    ELEMENTWISE_PAR_MIN, or ELEMENTWISE_PAR_MIN_TRANSCENDENTAL for the losses
    with exp/log. The losses marked ``prefetch`` prefetch their inputs in calls
    of at least ``ahead_min`` bytes per array (-1: ELEMENTWISE_AHEAD_MIN; the same
    values either way). (16-bit arrays: :func:`elementwise_half`.)
    """
    cdef EwCall c
    c.kind = kind
    c.dt = EW_F32 if floating is float else EW_F64
    c.p, c.t, c.aux = _ptr_or_null(pred), _ptr_or_null(target), _ptr_or_null(aux)
    c.w, c.go = _ptr_or_null(weight), _ptr_or_null(grad_output)
    c.grad, c.hess, c.lout = _ptr_or_null(grad), _ptr_or_null(hessian), _ptr_or_null(loss_out)
    c.gscale = gscale
    if ahead_min < 0:
        ahead_min = EW_AHEAD_MIN
    c.ahead = pred.shape[0] * <Py_ssize_t>sizeof(floating) >= ahead_min
    return _ew_run(&c, params, pred.shape[0], num_threads, par_min)


# --- value checks the Python layer runs before a loss (one pass, no temporaries) ---

cdef inline void _label_counts(const floating* t, Py_ssize_t m, Py_ssize_t* not_pm,
                               Py_ssize_t* not_zo) noexcept nogil:
    cdef Py_ssize_t i, a = 0, b = 0
    cdef floating v
    for i in range(m):
        v = t[i]
        a += (v != 1) & (v != -1)
        b += (v != 1) & (v != 0)
    not_pm[0] += a
    not_zo[0] += b


cdef inline Py_ssize_t _outside_unit(const floating* p, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i, bad = 0
    cdef floating v
    for i in range(m):
        v = p[i]
        bad += (v < 0) | (v > 1)
    return bad


def label_set(const floating[::1] t):
    """0 if every t is -1 or +1, 1 if every t is 0 or 1, -1 otherwise (hinge targets)."""
    cdef Py_ssize_t n = t.shape[0], j = 0, m
    cdef Py_ssize_t not_pm = 0, not_zo = 0
    with nogil:
        while j < n and not (not_pm and not_zo):  # blocks, stop early once both fail
            m = n - j if n - j < EW_BLOCK else EW_BLOCK
            _label_counts(&t[j], m, &not_pm, &not_zo)
            j += m
    return 0 if not_pm == 0 else (1 if not_zo == 0 else -1)


def count_outside_unit(const floating[::1] p):
    """How many p are < 0 or > 1 (NaN is not counted: it propagates instead)."""
    cdef Py_ssize_t n = p.shape[0], bad = 0
    with nogil:
        if n:
            bad = _outside_unit(&p[0], n)
    return bad

# Element-wise losses on 16-bit storage (bfloat16, float16), included by _kernels.pyx
# after elementwise.pxi.
#
# Tiles, as every 16-bit kernel: each sub-block (EW_HSUB elements) of every
# 16-bit input is widened into a float32
# stack buffer with fl_half_load (exact), the float32 code of elementwise.pxi
# (_ew_sub) runs on it unchanged, and the 16-bit outputs (gradient, hessian,
# 'none' losses) are rounded back with fl_half_store (nearest-even, NaN kept,
# overflow -> Inf). Sub-blocks are multiples of EW_ACC * EW_SUB, so the loss sum
# runs in exactly the float32 kernel's order: a 16-bit result is the float32
# kernel's result on the widened values, rounded once; thread-count independent.
# Each array has its own storage kind (float32, bfloat16 or float16): under
# torch.autocast a 16-bit input meets float32 targets or weights, which are
# read as they are, and the loss may be written in float32.
#
# One pass instead of tiles: where prediction, target and gradient are all
# bfloat16 and nothing else is given (the plain fwd+bwd call), the losses without
# exp/log run the generated fl_ew_bf16_<name>_f loops on the levels that have
# them (native/elementwise_bf16.h: every x86-64 level): two elements per 32-bit word, widened and rounded in registers, the
# loss sum in the same lanes and order. Whole 128-element chunks only; the tiles
# finish the block. Same bits as the tiles (tests/test_losses_half.py).

cdef extern from "native/elementwise_losses.h" nogil:
    enum:
        FL_EW_BF16_CHUNK
    Py_ssize_t fl_ew_bf16_f(int kind, const uint16_t* p, const uint16_t* t, const double* par,
                            uint16_t* grad, float gscale, Py_ssize_t n, double* acc)

if FL_EW_BF16_CHUNK != EW_ACC * EW_SUB:
    raise ImportError("FL_EW_BF16_CHUNK must be EW_ACC * EW_SUB (the loss sum's chunk)")

cdef enum:
    # sub-block (a multiple of EW_ACC * EW_SUB). Measured (64K bfloat16 in cache,
    # 1 thread, ns/element, avx512 | avx2): mse 0.187 | 0.279 with 256 elements,
    # 0.164 | 0.264 with 512, 0.157 | 0.252 with 1024, 0.154 | 0.272 with 2048;
    # bce-with-logits 0.608 | 1.08, 0.553 | 1.04, 0.541 | 1.03, 0.538 | 1.04.
    # 1024: 8 float32 buffers, 32 KB of stack (float32 kernel: mse 0.20 | 0.22)
    EW_HSUB = 1024


cdef inline const float* _ew_in(int k, void* a, Py_ssize_t i0, float* buf,
                                Py_ssize_t m) noexcept nogil:
    """Input ``a`` at elements [i0, i0 + m) as float32: in place, or widened into buf."""
    if a == NULL:
        return NULL
    if k == 0:
        return <const float*>a + i0
    fl_half_load(k, <const uint16_t*>a + i0, buf, m)
    return buf


cdef inline float* _ew_out(int k, void* a, Py_ssize_t i0, float* buf) noexcept nogil:
    """Where the float32 code writes output ``a``'s elements from i0: in place or buf."""
    if a == NULL:
        return NULL
    return <float*>a + i0 if k == 0 else buf


cdef inline void _ew_round(int k, void* a, Py_ssize_t i0, const float* buf,
                           Py_ssize_t m) noexcept nogil:
    """buf rounded into 16-bit output ``a`` (nothing for float32 or absent outputs)."""
    if a != NULL and k != 0:
        fl_half_store(k, buf, <uint16_t*>a + i0, m)


cdef double _ew_block_mixed(const EwCall* c, Py_ssize_t off, Py_ssize_t n) noexcept nogil:
    """_ew_block for arrays of mixed storage kinds: elements [off, off + n), n <= EW_BLOCK."""
    cdef float pb[EW_HSUB]
    cdef float tb[EW_HSUB]
    cdef float xb[EW_HSUB]
    cdef float wb[EW_HSUB]
    cdef float ob[EW_HSUB]
    cdef float gb[EW_HSUB]
    cdef float hb[EW_HSUB]
    cdef float lb[EW_HSUB]
    cdef double acc[EW_ACC]
    cdef Py_ssize_t j0 = 0, i0, m
    cdef int j
    for j in range(EW_ACC):
        acc[j] = 0
    if c.bf16_pairs:  # one pass over whole chunks (levels that have it), tiles for the rest
        j0 = fl_ew_bf16_f(c.kind, <const uint16_t*>c.p + off, <const uint16_t*>c.t + off,
                          c.par, <uint16_t*>c.grad + off, <float>c.gscale, n, acc)
    while j0 < n:
        m = n - j0 if n - j0 < EW_HSUB else EW_HSUB
        i0 = off + j0
        _ew_sub(c.kind, _ew_in(c.ak[0], c.p, i0, pb, m), _ew_in(c.ak[1], c.t, i0, tb, m),
                _ew_in(c.ak[2], c.aux, i0, xb, m), _ew_in(c.ak[3], c.w, i0, wb, m),
                _ew_in(c.ak[4], c.go, i0, ob, m), _ew_out(c.ak[5], c.grad, i0, gb),
                _ew_out(c.ak[6], c.hess, i0, hb), _ew_out(c.ak[7], c.lout, i0, lb),
                m, c.par, <float>c.gscale, acc, 0, 1)
        _ew_round(c.ak[5], c.grad, i0, gb, m)
        _ew_round(c.ak[6], c.hess, i0, hb, m)
        _ew_round(c.ak[7], c.lout, i0, lb, m)
        j0 += m
    if c.lout != NULL:
        return 0.0
    return _ew_fold(acc)


cdef int _storage_kind(object a, str name, Py_ssize_t n, bint write) except -1:
    """0 (float32), FL_HALF_BF16 or FL_HALF_F16 for a 1-D C-contiguous native-order
    array of n elements (writable when ``write``); ValueError/TypeError otherwise."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    d = a.dtype
    if a.ndim != 1 or a.shape[0] != n or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be 1-D, C-contiguous, of length {n}")
    if write and not a.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if not d.isnative:
        raise ValueError(f"{name} must be in native byte order")
    if d.char == "f":
        return 0
    if d.char == "e":
        return FL_HALF_F16
    if d.char == "E" and d.type.__name__ == "bfloat16":      # ml_dtypes.bfloat16
        return FL_HALF_BF16
    raise TypeError(f"{name} must be float32, bfloat16 or float16, got {d}")


cdef inline bint _apart(void* a, void* b, Py_ssize_t nbytes) noexcept:
    """The nbytes from a and those from b do not overlap."""
    return <char*>a + nbytes <= <char*>b or <char*>b + nbytes <= <char*>a


cdef void* _storage(EwCall* c, int slot, object a, str name, Py_ssize_t n,
                    bint write) except? NULL:
    """Array ``a`` (or None) checked into slot ``slot`` of c.ak; its data pointer."""
    if a is None:
        c.ak[slot] = 0
        return NULL
    c.ak[slot] = _storage_kind(a, name, n, write)
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def elementwise_half(int kind, pred, target, aux, weight, grad_output, grad, loss_out,
                     params, double gscale, int num_threads, Py_ssize_t par_min=-1,
                     hessian=None):
    """:func:`elementwise` computed in float32 over 1-D C-contiguous arrays that may
    each be float32, bfloat16 (``ml_dtypes``) or float16 (inputs widened a
    sub-block at a time, 16-bit outputs rounded to nearest-even from the float32
    result). Same arguments and return value (the loss sum in double, of the
    float32 losses as the float32 kernel sums them)."""
    cdef EwCall c
    cdef Py_ssize_t n = len(pred)
    c.kind = kind
    c.dt = EW_MIXED
    c.p = _storage(&c, 0, pred, "pred", n, False)
    c.t = _storage(&c, 1, target, "target", n, False)
    c.aux = _storage(&c, 2, aux, "aux", n, False)
    c.w = _storage(&c, 3, weight, "weight", n, False)
    c.go = _storage(&c, 4, grad_output, "grad_output", n, False)
    c.grad = _storage(&c, 5, grad, "grad", n, True)
    c.hess = _storage(&c, 6, hessian, "hessian", n, True)
    c.lout = _storage(&c, 7, loss_out, "loss_out", n, True)
    c.gscale = gscale
    c.ahead = 0
    c.bf16_pairs = (c.ak[0] == FL_HALF_BF16 and c.ak[1] == FL_HALF_BF16
                    and c.ak[5] == FL_HALF_BF16 and c.aux == NULL and c.w == NULL
                    and c.go == NULL and c.hess == NULL and c.lout == NULL
                    and _apart(c.grad, c.p, 2 * n) and _apart(c.grad, c.t, 2 * n))
    return _ew_run(&c, params, n, num_threads, par_min)


def label_set_half(int half_kind, const uint16_t[::1] t):
    """:func:`label_set` of 16-bit values (their bits; ``half_kind`` 1 bfloat16, 2 float16)."""
    cdef Py_ssize_t n = t.shape[0], j = 0, m
    cdef Py_ssize_t not_pm = 0, not_zo = 0
    cdef float buf[EW_BLOCK]
    with nogil:
        while j < n and not (not_pm and not_zo):
            m = n - j if n - j < EW_BLOCK else EW_BLOCK
            fl_half_load(half_kind, &t[j], buf, m)
            _label_counts(buf, m, &not_pm, &not_zo)
            j += m
    return 0 if not_pm == 0 else (1 if not_zo == 0 else -1)


def count_outside_unit_half(int half_kind, const uint16_t[::1] p):
    """:func:`count_outside_unit` of 16-bit values (their bits)."""
    cdef Py_ssize_t n = p.shape[0], j = 0, m, bad = 0
    cdef float buf[EW_BLOCK]
    with nogil:
        while j < n:
            m = n - j if n - j < EW_BLOCK else EW_BLOCK
            fl_half_load(half_kind, &p[j], buf, m)
            bad += _outside_unit(buf, m)
            j += m
    return bad

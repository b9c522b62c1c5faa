# Fused-type wrappers over fastloss/_vmath.h (included by _kernels.pxi).
#
# _vmath.h holds branch-free exp/expm1/log/log1p/tanh/sigmoid that GCC
# auto-vectorises inside element loops (no -ffast-math: NaN/Inf preserved,
# subnormals handled). Call these from `nogil` loops over contiguous data;
# keep the loop body free of calls that GCC cannot inline or vectorise.
#
# Inlining caveat for kernel authors: these bodies are 40-80 instructions. GCC
# stops inlining into a function that is already huge (--param
# large-function-growth), so a per-element helper called from one giant function
# holding many loops may stay a call, and the loop goes scalar. Keep each hot
# loop in its own small cdef function. The fl_* entry points are also declared
# `omp declare simd`, so with -fopenmp a loop that calls vexp/vlog1p... directly
# (not through another non-inlined cdef helper) still vectorises via SIMD clones.
# Check with -fopt-info-vec-optimized (see tests/test_vmath.py's module docstring).

cdef extern from "_vmath.h" nogil:
    float fl_expf(float x)
    double fl_exp(double x)
    float fl_expm1f(float x)
    double fl_expm1(double x)
    float fl_logf(float x)
    double fl_log(double x)
    float fl_log1pf(float x)
    double fl_log1p(double x)
    float fl_tanhf(float x)
    double fl_tanh(double x)
    float fl_sigmoidf(float x)
    double fl_sigmoid(double x)
    float fl__expnonpos_f(float x)
    float fl__log1p01_f(float e)


cdef inline floating vexp(floating x) noexcept nogil:
    """e^x"""
    if floating is float:
        return fl_expf(x)
    else:
        return fl_exp(x)


cdef inline floating vlog(floating x) noexcept nogil:
    """log x (natural)"""
    if floating is float:
        return fl_logf(x)
    else:
        return fl_log(x)


cdef inline floating vlog1p(floating x) noexcept nogil:
    """log(1 + x), accurate near 0"""
    if floating is float:
        return fl_log1pf(x)
    else:
        return fl_log1p(x)


cdef inline floating vexpm1(floating x) noexcept nogil:
    """e^x - 1, accurate near 0"""
    if floating is float:
        return fl_expm1f(x)
    else:
        return fl_expm1(x)


cdef inline floating vtanh(floating x) noexcept nogil:
    """tanh x"""
    if floating is float:
        return fl_tanhf(x)
    else:
        return fl_tanh(x)


cdef inline floating vsigmoid(floating x) noexcept nogil:
    """1 / (1 + e^-x)"""
    if floating is float:
        return fl_sigmoidf(x)
    else:
        return fl_sigmoid(x)


# --- test / benchmark hook ---------------------------------------------------

VMATH_FUNCTIONS = ("exp", "expm1", "log", "log1p", "tanh", "sigmoid",
                   # restricted-domain helpers of bce-with-logits (float32; the
                   # float64 entries run the general exp / log1p)
                   "exp_nonpos", "log1p_01")


cdef void _vmath_loop(int f, const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    # one plain loop per function so that each one is vectorised on its own
    cdef Py_ssize_t i
    if f == 0:
        for i in range(n):
            y[i] = vexp(x[i])
    elif f == 1:
        for i in range(n):
            y[i] = vexpm1(x[i])
    elif f == 2:
        for i in range(n):
            y[i] = vlog(x[i])
    elif f == 3:
        for i in range(n):
            y[i] = vlog1p(x[i])
    elif f == 4:
        for i in range(n):
            y[i] = vtanh(x[i])
    elif f == 5:
        for i in range(n):
            y[i] = vsigmoid(x[i])
    elif f == 6:
        for i in range(n):
            if floating is float:
                y[i] = fl__expnonpos_f(x[i])
            else:
                y[i] = vexp(x[i])
    elif f == 7:
        for i in range(n):
            if floating is float:
                y[i] = fl__log1p01_f(x[i])
            else:
                y[i] = vlog1p(x[i])


def vmath_apply(str name, floating[::1] x, floating[::1] out):
    """out[i] = name(x[i]) with the vectorised kernels of _vmath.h, single thread.

    ``name`` is one of VMATH_FUNCTIONS. Test and benchmark hook: ``x`` and
    ``out`` must be contiguous, of the same dtype and length (``out`` may be
    ``x``).
    """
    if name not in VMATH_FUNCTIONS:
        raise ValueError(f"name must be one of {VMATH_FUNCTIONS}, got {name!r}")
    if x.shape[0] != out.shape[0]:
        raise ValueError(f"x has {x.shape[0]} elements but out has {out.shape[0]}")
    cdef int f = VMATH_FUNCTIONS.index(name)
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _vmath_loop(f, &x[0], &out[0], n)

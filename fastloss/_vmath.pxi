# Fused-type wrappers over fastloss/_vmath.h (included by _kernels.pyx).

cdef extern from "_vmath.h" nogil:
    float fl_expf(float x)
    double fl_exp(double x)
    float fl_expm1f(float x)
    double fl_expm1(double x)
    float fl_logf(float x)
    double fl_log(double x)
    float fl_log1pf(float x)
    double fl_log1p(double x)


cdef inline floating vexp(floating x) noexcept nogil:
    if floating is float:
        return fl_expf(x)
    else:
        return fl_exp(x)


cdef inline floating vlog(floating x) noexcept nogil:
    if floating is float:
        return fl_logf(x)
    else:
        return fl_log(x)


cdef inline floating vlog1p(floating x) noexcept nogil:
    if floating is float:
        return fl_log1pf(x)
    else:
        return fl_log1p(x)


cdef inline floating vexpm1(floating x) noexcept nogil:
    if floating is float:
        return fl_expm1f(x)
    else:
        return fl_expm1(x)

# 16-bit storage (bfloat16, float16) <-> float32: declarations of native/_half.h
# (included by _kernels.pyx) and two array entry points for the Python layer and
# the tests. Kernels that take 16-bit inputs widen a tile at a time into a
# float32 buffer with fl_half_load, run their float32 code on it, and round the
# results back with fl_half_store (nearest-even, NaN kept, overflow -> Inf).

from libc.stdint cimport uint16_t

cdef extern from "native/_half.h" nogil:
    enum:
        FL_HALF_NONE
        FL_HALF_BF16
        FL_HALF_F16
    float fl_bf16_to_f32(uint16_t h)
    uint16_t fl_f32_to_bf16(float f)
    float fl_f16_to_f32(uint16_t h)
    uint16_t fl_f32_to_f16(float f)
    void fl_half_load(int kind, const uint16_t* src, float* dst, Py_ssize_t n)
    void fl_half_store(int kind, const float* src, uint16_t* dst, Py_ssize_t n)

HALF_BF16 = FL_HALF_BF16
HALF_F16 = FL_HALF_F16


def half_to_float32(int kind, const uint16_t[::1] src, float[::1] dst):
    """dst[i] = float32(src[i]), src holding bfloat16 (kind 1) or float16 (kind 2) bits."""
    if kind != FL_HALF_BF16 and kind != FL_HALF_F16:
        raise ValueError(f"kind must be {FL_HALF_BF16} (bfloat16) or {FL_HALF_F16} (float16), got {kind}")
    if dst.shape[0] != src.shape[0]:
        raise ValueError("src and dst must have the same length")
    with nogil:
        fl_half_load(kind, &src[0] if src.shape[0] else NULL,
                     &dst[0] if dst.shape[0] else NULL, src.shape[0])


def float32_to_half(int kind, const float[::1] src, uint16_t[::1] dst):
    """dst[i] = the bfloat16 (kind 1) or float16 (kind 2) bits of src[i], nearest-even."""
    if kind != FL_HALF_BF16 and kind != FL_HALF_F16:
        raise ValueError(f"kind must be {FL_HALF_BF16} (bfloat16) or {FL_HALF_F16} (float16), got {kind}")
    if dst.shape[0] != src.shape[0]:
        raise ValueError("src and dst must have the same length")
    with nogil:
        fl_half_store(kind, &src[0] if src.shape[0] else NULL,
                      &dst[0] if dst.shape[0] else NULL, src.shape[0])

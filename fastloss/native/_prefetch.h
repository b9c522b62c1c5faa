/* Software prefetch of a span ahead of an element loop.
 *
 * The element-wise losses stream p and t (and the per-element option) once,
 * front to back, one contiguous range per thread. The hardware prefetcher follows
 * such a stream only within a 4 KiB page and, on a host whose memory is busy with
 * other work, backs off; a request a chunk or two ahead keeps the lines coming
 * either way (fl_ew_ahead_T in elementwise_math.h; the measurement at EW_AHEAD_MIN
 * in elementwise.pxi).
 *
 *   fl_prefetch_span(p, nbytes): a read prefetch into L1 of each 64-byte line
 *       that [p, p + nbytes) touches. A hint: it changes no value and never
 *       faults, but callers still pass spans inside their arrays only.
 *
 * Included after _vmath.h (FL_INLINE); without GCC-style builtins it does nothing.
 */
#ifndef FASTLOSS_PREFETCH_H
#define FASTLOSS_PREFETCH_H
#include <stdint.h>

FL_INLINE void fl_prefetch_span(const void *p, Py_ssize_t nbytes)
{
#if defined(__GNUC__)
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + (uintptr_t)nbytes;
    for (; a < end; a += 64)
        __builtin_prefetch((const void *)a, 0, 3);
#else
    (void)p; (void)nbytes;
#endif
}

#endif

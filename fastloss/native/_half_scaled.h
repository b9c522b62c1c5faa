/* fastloss: the first and last passes over a 16-bit cross-entropy tile.
 *
 *   fl_half_load_ahead: fl_half_load, prefetching the next tile (below).
 *
 *   fl_half_store_scaled(kind, src, dst, n, K):
 *       dst[i] = round16(src[i] * K)     (the float32 product, as step 3 of the
 *       float32 cross-entropy computes it, then nearest-even as fl_half_store)
 *
 * One pass over the float32 tile instead of a scaling pass and a store pass:
 * the products go through a small L1 buffer into fl_half_store (float16: an
 * F16C / AVX-512 conversion; bfloat16 on the baseline level). bfloat16 on the
 * avx2 and avx512 levels takes the row kernels of _bf16_rows.h instead.
 */
#ifndef FASTLOSS_HALF_SCALED_H
#define FASTLOSS_HALF_SCALED_H
#include "_half.h"

#define FL_SCALED_BLOCK 512

static void fl_half_store_scaled(int kind, const float *src, uint16_t *dst, Py_ssize_t n, float K)
{
    float t[FL_SCALED_BLOCK];
    Py_ssize_t i, j, m;
    for (i = 0; i < n; i += m) {
        m = n - i < FL_SCALED_BLOCK ? n - i : FL_SCALED_BLOCK;
        for (j = 0; j < m; j++)
            t[j] = src[i + j] * K;
        fl_half_store(kind, t, dst + i, m);
    }
}

/* fl_half_load(kind, src, dst, n), prefetching into L2 (one line per 64 bytes)
 * the first nnext values at next -- the next tile -- while it runs: the hardware
 * prefetcher stops at every 4 KiB page, a software prefetch a tile ahead does not */
static void fl_half_load_ahead(int kind, const uint16_t *src, float *dst, Py_ssize_t n,
                               const uint16_t *next, Py_ssize_t nnext)
{
    Py_ssize_t i, j, m;
    for (i = 0; i < n; i += FL_SCALED_BLOCK) {
        m = n - i < FL_SCALED_BLOCK ? n - i : FL_SCALED_BLOCK;
        for (j = i; j < i + m && j < nnext; j += 32)
            __builtin_prefetch(next + j, 0, 2);
        fl_half_load(kind, src + i, dst + i, m);
    }
}

#endif /* FASTLOSS_HALF_SCALED_H */

/* bfloat16 read and written two at a time, for the one-pass bfloat16 loops of the
 * element-wise losses (fl_ew_bf16_<name>_f in the generated elementwise_losses.h).
 *
 * Two neighbouring bfloat16 values are one 32-bit word w (little-endian: element
 * 2j in the low half, 2j + 1 in the high half). Widening is one shift or one mask
 * per word and no shuffle:
 *     even = float(w << 16),  odd = float(w & 0xffff0000)
 * and rounding back (nearest-even, NaN kept quiet: fl_f32_to_bf16 of _half.h) puts
 * the two halves together with a shift, a mask and an or, again without the
 * pack-and-permute of a lane-order-preserving store. A loop over words gives the
 * vectoriser whole registers of even and of odd elements; the loss sums keep the
 * float32 kernel's lanes (element i in lane i % 16: even words feed the even
 * lanes). Used on every x86-64 level (FL_EW_BF16_PAIRS). At avx512 the tiles'
 * 16-lane widen / round loops cost less in cache (mse, 64K values, one thread:
 * 0.18 ns per value against 0.22; huber 0.46 against 0.41), but on arrays beyond
 * the caches, what the bar and a training step run, this one pass is
 * faster: mse 10M bf16, 2 threads, 1.4-3.0x by median over six runs, 1.14x with one
 * thread; huber 1.6x (`python tools/ab_builds.py avx512 OLD:avx512 half:mse`).
 */
#ifndef FASTLOSS_ELEMENTWISE_BF16_H
#define FASTLOSS_ELEMENTWISE_BF16_H
#include <stdint.h>

/* elements per chunk of the loss sum: EW_ACC * EW_SUB of elementwise.pxi */
#define FL_EW_BF16_CHUNK 128

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define FL_EW_BF16_PAIRS 1
/* the one-pass loops' arrays do not overlap (the caller checks): no alias
 * checks, the lane sums stay in registers */
#define FL_RESTRICT __restrict
/* a word of two bfloat16 at any even address (2-byte alignment, may alias) */
typedef uint32_t fl_bf16x2 __attribute__((aligned(2), may_alias));
#endif

/* A zero the compiler cannot see (read once per call): x as it is, but through an
 * integer or that no optimisation removes. A loss passed through it before it is
 * added to a lane cannot be fused with the add into an FMA (the float32 kernel
 * stores the loss and adds it later: an FMA would change the sum's bits). */
static volatile uint32_t fl_ew_opaque_zero = 0;
FL_INLINE float fl_ew_unfused(float x, uint32_t zero) { return fl_u2f(fl_f2u(x) | zero); }

/* the even (low) and odd (high) element of a word, widened (exact) */
FL_INLINE float fl_bf16x2_lo(uint32_t w) { return fl_u2f(w << 16); }
FL_INLINE float fl_bf16x2_hi(uint32_t w) { return fl_u2f(w & 0xffff0000u); }

/* f rounded to bfloat16 in the HIGH half of the result (the low half is junk):
 * ties to even; NaN: the top bits with the quiet bit set */
FL_INLINE uint32_t fl_bf16_round_hi(float f)
{
    uint32_t u = fl_f2u(f);
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    return f != f ? (u | 0x00400000u) : r;
}

/* the word holding bfloat16(lo) and bfloat16(hi) */
FL_INLINE uint32_t fl_bf16x2_round(float lo, float hi)
{
    return (fl_bf16_round_hi(lo) >> 16) | (fl_bf16_round_hi(hi) & 0xffff0000u);
}

#endif

/* Do fastloss's two threads get two whole cores? A probe for shared, noisy hosts.
 *
 *     gcc -O2 -mavx2 -mfma -fopenmp tools/core_probe.c -o /tmp/core_probe && /tmp/core_probe
 *
 * Runs 12 independent chains of 8-lane FMAs (throughput-bound: two FMA pipes kept
 * busy) for a few milliseconds on one thread, then on two threads at once, and
 * prints the FMA rate of each (ops per ns). On two whole cores the two-thread rates
 * equal the one-thread rate; when another thread (another tenant's, or our other
 * vCPU) runs on the same physical core, a rate drops to about half. Compute-bound
 * kernels (the exp/log losses at the avx2 level) slow down by as much then, while a
 * streaming triad hardly moves: read bench figures taken in such minutes with that
 * in mind (issue 16's closing note, 2026-12-02, has what this host showed).
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
#include <omp.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double fma_rate(long iters)
{
    __m256 x0 = _mm256_set1_ps(1), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0,
           x7 = x0, x8 = x0, x9 = x0, x10 = x0, x11 = x0;
    const __m256 d = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    double t0 = now();
    for (long i = 0; i < iters; i++) {
#define F(x) x = _mm256_fmadd_ps(x, d, c);
        F(x0) F(x1) F(x2) F(x3) F(x4) F(x5) F(x6) F(x7) F(x8) F(x9) F(x10) F(x11)
#undef F
        __asm__ volatile("" : : "x"(x0), "x"(x1), "x"(x2), "x"(x3), "x"(x4), "x"(x5),
                         "x"(x6), "x"(x7), "x"(x8), "x"(x9), "x"(x10), "x"(x11));
    }
    return 12.0 * iters / ((now() - t0) * 1e9);
}

int main(void)
{
    const long iters = 2000000;
    double one = fma_rate(iters), two[2];
#pragma omp parallel num_threads(2)
    two[omp_get_thread_num()] = fma_rate(iters);
    printf("FMA ops/ns: one thread %.2f | two threads %.2f and %.2f | two / one %.2f\n",
           one, two[0], two[1], (two[0] + two[1]) / 2 / one);
    return 0;
}

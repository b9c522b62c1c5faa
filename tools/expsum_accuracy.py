"""Accuracy of the vector exp of the softmax / cross-entropy row kernels (fl_sm_exp16 in
fastloss/native/_expsum.h), by emulating its float32 operation sequence in NumPy (an FMA
is one float64 multiply-add rounded to float32: exact products of two floats, one
rounding of the sum that matters) against float64 exp, in ulp of the float32 result.

    python tools/expsum_accuracy.py

Prints the largest error on [-87.3, 0] and on [-10, 0] (the values that carry a row's
sums), for the shipped one-FMA reduction r = x - k ln2 and for the hi/lo reduction.
"""
import numpy as np

F = np.float32
LOG2E, SHIFT = F(1.44269504088896341), F(12582912.0)
LN2, LN2HI, LN2LO = F(np.log(2)), F(0.693145751953125), F(1.42860682030941723212e-6)
POLY = [0.0013941118959337473, 0.008375134319067001, 0.04166635125875473,
        0.16666415333747864, 0.5, 1.0, 1.0]            # highest degree first


def fma(a, b, c):
    return (np.float64(a) * np.float64(b) + np.float64(c)).astype(F)


def exp16(x, hilo):
    kf = fma(x, LOG2E, SHIFT)
    kk = (kf - SHIFT).astype(F)
    r = fma(-kk, LN2HI, x) if hilo else fma(-kk, LN2, x)
    if hilo:
        r = fma(-kk, LN2LO, r)
    p = np.full_like(x, F(POLY[0]))
    for c in POLY[1:]:
        p = fma(p, r, F(c))
    bits = ((kf.view(np.uint32).astype(np.int64) + 127 - int(SHIFT.view(np.uint32))) << 23)
    return (p * (bits & 0xFFFFFFFF).astype(np.uint32).view(F)).astype(F)


def main():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-87.3, 0, 3_000_001), -87.3 * rng.random(2_000_000),
                        -2 * rng.random(1_000_000)]).astype(F)
    ref = np.exp(x.astype(np.float64))
    ulp = np.spacing(ref.astype(F)).astype(np.float64)
    for name, hilo in (("one-FMA reduction (shipped)", False), ("hi/lo reduction", True)):
        err = np.abs(exp16(x, hilo) - ref) / ulp
        print(f"{name}: max {err.max():.2f} ulp on [-87.3, 0], {err[x > -10].max():.2f} ulp "
              f"on [-10, 0]")


if __name__ == "__main__":
    main()

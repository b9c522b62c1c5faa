"""Fit the polynomial coefficients used in fastloss/native/_vmath.h (dev tool, needs mpmath).

    python tools/vmath_coeffs.py

* expm1 core on r in [-ln2/2, ln2/2]:  expm1(r) = r + r^2 P(r)
* log1p on [0, 1] (bce-with-logits, float32): log1p(e) = e + s (z H(z) - e),
  s = e / (2 + e), z = s^2 (H as for the log core, on [0, 1/9])
* exp of the bfloat16 cross-entropy rows (_bf16_rows.h), r in [-ln2/2, ln2/2]:
  e^r = 1 + r Q(r), Q of degree 3, minimax in relative error (Lawson's iteration)
* log core on z = s^2, s = f/(2+f), f in [sqrt(1/2)-1, sqrt(2)-1]:
  log1p(f) = 2 atanh(s) = 2 s + s R(z),  R(z) = z H(z)
Chebyshev fits (near-minimax) in 60-digit arithmetic, then rounded to the
target precision; the printed error is the max error of the rounded
polynomial on a dense grid relative to the quantity that matters.
"""
import mpmath as mp

mp.mp.dps = 60
LN2 = mp.log(2)


def fit(f, a, b, deg):
    coeffs, _ = mp.chebyfit(f, [a, b], deg + 1, error=True)
    return coeffs[::-1]  # lowest degree first


def rnd(c, bits):
    import numpy as np
    t = np.float32 if bits == 32 else np.float64
    return [mp.mpf(float(t(float(x)))) for x in c]


def horner(c, x):
    s = mp.mpf(0)
    for k in reversed(c):
        s = s * x + k
    return s


def P_exact(r):
    return (mp.expm1(r) - r) / r**2 if r != 0 else mp.mpf(0.5)


def H_exact(z):
    if z == 0:
        return mp.mpf(2) / 3
    s = mp.sqrt(z)
    return (2 * mp.atanh(s) / s - 2) / z


def report(name, bits, degs):
    a, b = -LN2 / 2 * mp.mpf("1.0001"), LN2 / 2 * mp.mpf("1.0001")
    smin, smax = mp.sqrt(mp.mpf(0.5)) - 1, mp.sqrt(2) - 1
    zmax = (smax / (2 + smax)) ** 2 * mp.mpf("1.0001")
    for d in degs:
        if name == "expm1":
            c = rnd(fit(P_exact, a, b, d), bits)
            grid = [a + (b - a) * i / 2000 for i in range(2001)]
            err = max(abs((r + r * r * horner(c, r)) / mp.expm1(r) - 1) for r in grid if r != 0)
        else:
            c = rnd(fit(H_exact, mp.mpf(0), zmax, d), bits)
            grid = [smin + (smax - smin) * i / 2000 for i in range(2001)]
            err = 0
            for f in grid:
                if f == 0:
                    continue
                s = f / (2 + f)
                z = s * s
                approx = 2 * s + s * z * horner(c, z)
                err = max(err, abs(approx / mp.log1p(f) - 1))
        print(f"{name} float{bits} deg {d}: max rel err {mp.nstr(err, 3)}")
        print("   ", ", ".join(repr(float(x)) for x in c))


def report_log1p01(degs):
    """log1p(e) on [0, 1] as e + s (z H(z) - e), s = e / (2 + e), z = s^2 in [0, 1/9]
    (2 atanh(s) = 2 s + s z H(z) and 2 s = e - e s): fl__log1p01_f (degree 3)."""
    zmax = mp.mpf(1) / 9 * mp.mpf("1.0001")
    for d in degs:
        c = rnd(fit(H_exact, mp.mpf(0), zmax, d), 32)
        grid = [mp.mpf(i) / 4000 for i in range(1, 4001)]
        err = 0
        for e in grid:
            s = e / (2 + e)
            err = max(err, abs((e + s * (s * s * horner(c, s * s) - e)) / mp.log1p(e) - 1))
        print(f"log1p01 float32 deg {d}: max rel err {mp.nstr(err, 3)}")
        print("   ", ", ".join(repr(float(x)) for x in c))


def report_exp16(deg=4):
    """e^r = 1 + r Q(r) (e^0 = 1 exactly), Q of degree deg - 1, minimax relative error
    by Lawson's reweighted least squares in float64; the error printed is that of the
    float32 coefficients in float32 Horner with FMA (the kernel's arithmetic)."""
    import numpy as np
    h = float(LN2 / 2) * 1.0005
    r = np.cos(np.linspace(0, np.pi, 4001)) * h
    E = np.exp(r)
    A = np.stack([r ** (k + 1) for k in range(deg)], 1) / E[:, None]
    b = (E - 1) / E
    w = np.full(r.size, 1.0 / r.size)
    for _ in range(3000):
        c, *_ = np.linalg.lstsq(A * np.sqrt(w)[:, None], b * np.sqrt(w), rcond=None)
        w = w * np.abs(A @ c - b)
        w /= w.sum()
    c32 = [np.float32(x) for x in c]
    rr = np.linspace(-h, h, 2000001).astype(np.float32)
    p = np.full_like(rr, c32[-1])
    for k in reversed(c32[:-1]):     # fma: the product is exact in float64
        p = (p.astype(np.float64) * rr + np.float64(k)).astype(np.float32)
    p = (p.astype(np.float64) * rr + 1.0).astype(np.float32)
    err = np.abs(p / np.exp(rr.astype(np.float64)) - 1).max()
    print(f"exp16 float32 deg {deg}: max rel err {err:.3g}")
    print("   ", ", ".join(repr(float(x)) for x in reversed(c32)))


if __name__ == "__main__":
    report_exp16(4)
    report_log1p01([2, 3, 4])
    report("expm1", 32, [3, 4, 5])
    report("expm1", 64, [8, 9, 10, 11])
    report("log", 32, [1, 2, 3])
    report("log", 64, [4, 5, 6, 7])

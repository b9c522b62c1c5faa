"""NumPy backend: the optimizer updates in plain NumPy.

Same arguments as the Numba kernels in ``_kernels_numba`` (flat 1-D arrays,
updated in place; scalars already in the param dtype), followed by the option
flags that the kernels take as compile-time constants; same order of
floating-point operations, so the two backends agree bit for bit. These are
the readable versions of the formulas (g = gradient, p = parameter):

* SGD + momentum (the seeds: v = gamma v + eta g, W -= v; PyTorch keeps lr out
  of the buffer): b = mu b + (1 - dampening) g; p -= lr (g + mu b | b)
* AdaGrad: G += g^2; p -= lr g / (sqrt(G) + eps)
* RMSProp: E = alpha E + (1 - alpha) g^2; p -= lr g / (sqrt(E) + eps)
* Adam: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
  p -= lr/(1 - b1^t) m / (sqrt(v)/sqrt(1 - b2^t) + eps), evaluated as
  p -= lr sqrt(1 - b2^t)/(1 - b1^t) m / (sqrt(v) + eps sqrt(1 - b2^t))
  (the same number up to rounding, one division fewer per element)

16-bit storage (bfloat16/float16 params, grads or state; float32 state of float64
params): ``_engine.Launch`` widens those arrays to the compute dtype (whole-array
copies), runs these functions on them and rounds the written ones back (nearest
even), as the native kernels do element by element: the same results bit for bit.
"""
from __future__ import annotations

import numpy as np


def _lerp(a, b, w, omw, w_small):
    return a + w * (b - a) if w_small else b - (b - a) * omw


def _grad(p, g, wd, gscale, wd_on):
    d = g * gscale
    if wd_on:
        d = d + wd * p
    return d


def sgd(p, g, buf, lr, momentum, omdamp, wd, gscale, wd_on, use_momentum, first, nesterov):
    d = _grad(p, g, wd, gscale, wd_on)
    if use_momentum:
        b = d.copy() if first else buf * momentum + omdamp * d
        buf[...] = b
        d = d + momentum * b if nesterov else b
    p -= lr * d


def adagrad(p, g, acc, clr, wd, eps, gscale, wd_on, keras):
    d = _grad(p, g, wd, gscale, wd_on)
    acc += d * d
    p -= clr * (d / (np.sqrt(acc + eps) if keras else np.sqrt(acc) + eps))


def rmsprop(p, g, sq, gavg, buf, lr, alpha, omalpha, eps, wd, momentum, gscale,
            w_small, wd_on, centered, use_momentum, keras):
    d = _grad(p, g, wd, gscale, wd_on)
    sq[...] = sq * alpha + omalpha * (d * d)
    var = sq
    if centered:
        gavg[...] = _lerp(gavg, d, omalpha, alpha, w_small)
        var = sq - gavg * gavg
    den = np.sqrt(var + eps) if keras else np.sqrt(var) + eps
    if use_momentum:
        if keras:
            buf[...] = buf * momentum + lr * (d / den)
            p -= buf
        else:
            buf[...] = buf * momentum + d / den
            p -= lr * buf
    else:
        p -= lr * (d / den)


def adam(p, g, m, v, vmax, step_size, w1, omw1, beta2, ombeta2, eps_t, wd, decay_mul, gscale,
         w_small, wd_on, amsgrad):
    d = _grad(p, g, wd, gscale, wd_on)
    p *= decay_mul
    m[...] = _lerp(m, d, w1, omw1, w_small)
    v[...] = v * beta2 + ombeta2 * (d * d)
    if amsgrad:
        np.maximum(vmax, v, out=vmax)  # propagates NaN, like torch.maximum
        v = vmax
    p -= step_size * (m / (np.sqrt(v) + eps_t))


def adamax(p, g, m, u, clr, w1, omw1, beta2, eps, wd, gscale, w_small, wd_on, keras):
    d = _grad(p, g, wd, gscale, wd_on)
    m[...] = _lerp(m, d, w1, omw1, w_small)
    np.maximum(u * beta2, np.abs(d) if keras else np.abs(d) + eps, out=u)
    p -= clr * (m / (u + eps if keras else u))


def nadam(p, g, m, v, c_grad, c_avg, w1, omw1, beta2, ombeta2, bc2, eps, wd, decay_mul,
          gscale, w_small, wd_on):
    d = _grad(p, g, wd, gscale, wd_on)
    p *= decay_mul
    m[...] = _lerp(m, d, w1, omw1, w_small)
    v[...] = v * beta2 + ombeta2 * (d * d)
    den = np.sqrt(v / bc2) + eps
    p -= c_grad * (d / den)
    p -= c_avg * (m / den)


def lion(p, g, m, lr, w1, omw1, w2, omw2, decay_mul, gscale, w1_small, w2_small):
    d = g * gscale
    c = _lerp(m, d, w1, omw1, w1_small)
    p *= decay_mul
    p -= lr * np.sign(c)
    m[...] = _lerp(m, d, w2, omw2, w2_small)


def scale(g, c):
    g *= c


CHUNK = 4096  # the native reduction's chunk (``_kernels_numba`` imports it)


def sumsq(g):
    """Sum of squares of ``g`` in float64, in the native kernel's order: each chunk of
    CHUNK elements summed in index order (``cumsum`` is sequential; the zero padding adds
    nothing), then the chunks' sums in order. Bit for bit the native result."""
    n = g.shape[0]
    if n == 0:
        return 0.0
    sq = np.zeros(-(-n // CHUNK) * CHUNK, np.float64)
    x = g.astype(np.float64)
    np.multiply(x, x, out=sq[:n])
    s = 0.0
    for part in np.cumsum(sq.reshape(-1, CHUNK), axis=1)[:, -1].tolist():
        s += part
    return s


def nonfinite(g):
    """True when ``g`` holds a NaN or Inf."""
    return not bool(np.isfinite(g).all())

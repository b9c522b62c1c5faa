"""NumPy reference for the element-wise losses: the formulas, written plainly.

Each function returns ``(l, g)``: the per-element loss and its derivative
with respect to the prediction, in the prediction's dtype. The native
kernels in ``_elementwise.pxi`` compute exactly these.
"""
from __future__ import annotations

import numpy as np

LOG2 = 0.69314718055994530942


def mse(p, t, **_):
    d = p - t
    return d * d, 2 * d


def sse(p, t, **_):
    d = p - t
    return 0.5 * d * d, d


def mae(p, t, **_):
    d = p - t
    return np.abs(d), np.sign(d)


def huber(p, t, *, delta, **_):
    d = p - t
    ad = np.abs(d)
    quad = ad <= delta
    loss = np.where(quad, 0.5 * d * d, delta * (ad - 0.5 * delta))
    grad = np.where(quad, d, delta * np.sign(d))
    return loss, grad


def smooth_l1(p, t, *, beta, **_):
    d = p - t
    ad = np.abs(d)
    quad = ad < beta
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.where(quad, 0.5 * d * d / beta, ad - 0.5 * beta)
        grad = np.where(quad, d / beta, np.sign(d))
    return loss, grad


def quantile(p, t, *, q, **_):
    r = t - p
    loss = np.where(r >= 0, q * r, (q - 1) * r)
    loss = np.where(np.isnan(r), r, loss)
    grad = np.where(r > 0, -q, np.where(r < 0, 1 - q, np.where(np.isnan(r), r, 0)))
    grad = grad.astype(p.dtype, copy=False)
    return loss, grad


def log_cosh(p, t, **_):
    # log cosh d = 0.5 log(1 + sinh^2 d), and |d| - log 2 once cosh overflows
    d = p - t
    ad = np.abs(d)
    small = ad < 20
    s = np.sinh(np.where(small, ad, 0))
    return np.where(small, 0.5 * np.log1p(s * s), ad - LOG2), np.tanh(d)


def clip_bounds(eps, dtype):
    """[eps, 1 - eps] as represented in ``dtype``, kept strictly inside (0, 1):
    with float32 and eps < 6e-8, 1 - eps would round to 1 and log(1 - p) to -inf."""
    dtype = np.dtype(dtype)
    one, zero = dtype.type(1), dtype.type(0)
    lo = max(dtype.type(eps), np.finfo(dtype).smallest_normal)
    hi = min(one - dtype.type(eps), np.nextafter(one, zero))
    return lo, hi


def binary_cross_entropy(p, t, *, eps, **_):
    lo, hi = clip_bounds(eps, p.dtype)
    pc = np.clip(p, lo, hi)
    loss = -(t * np.log(pc) + (1 - t) * np.log(1 - pc))
    grad = (pc - t) / (pc * (1 - pc))
    return loss, grad


def binary_cross_entropy_with_logits(x, t, *, pos_weight=1.0, **_):
    e = np.exp(-np.abs(x))
    sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    sigc = np.where(x >= 0, e / (1 + e), 1 / (1 + e))  # sigmoid(-x) = 1 - sig
    pt = pos_weight * t
    c = 1 - t + pt
    # c log1p(e) + linear part: both >= 0 for t in [0, 1], no cancellation
    loss = c * np.log1p(e) + np.where(x >= 0, (1 - t) * x, -pt * x)
    # = sig c - pt, without its cancellation for t in {0, 1}
    grad = (1 - t) * sig - pt * sigc
    return loss.astype(x.dtype, copy=False), grad.astype(x.dtype, copy=False)


def _signed(t, zero_one):
    return 2 * t - 1 if zero_one else t


def hinge(p, t, *, zero_one=False, **_):
    y = _signed(t, zero_one)
    m = 1 - y * p
    loss = np.where(m <= 0, 0, m).astype(p.dtype, copy=False)
    grad = np.where(m > 0, -y, np.where(m <= 0, 0, m)).astype(p.dtype, copy=False)
    return loss, grad


def squared_hinge(p, t, *, zero_one=False, **_):
    y = _signed(t, zero_one)
    m = 1 - y * p
    h = np.where(m <= 0, 0, m).astype(p.dtype, copy=False)
    return h * h, -2 * y * h

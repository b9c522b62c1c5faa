"""NumPy reference for softmax and the cross-entropy family, written plainly.

Every function works on rows: 2-D arrays (M, C) with classes on the last
axis (the Python layer moves the class axis there). Results are in the
input's dtype. The native kernels in ``native/_cross_entropy.pxi`` and
``native/_softmax.pxi`` compute the same formulas; tests compare both, and
this reference against PyTorch.
"""
from __future__ import annotations

import numpy as np

from . import _dtypes


def log_softmax(x):
    """log_softmax_c = (x_c - m) - log sum_k exp(x_k - m), m = max x."""
    m = np.max(x, axis=-1, keepdims=True)
    sh = x - m
    return sh - np.log(np.sum(np.exp(sh), axis=-1, keepdims=True))


def softmax(x):
    """softmax_c = exp(x_c - m) / sum_k exp(x_k - m)."""
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def softmax_backward(y, g):
    """Vector-Jacobian product of softmax: dx = y (g - sum(g y))."""
    return y * (g - np.sum(g * y, axis=-1, keepdims=True))


def log_softmax_backward(lp, g):
    """Vector-Jacobian product of log_softmax: dx = g - exp(lp) sum(g)."""
    return g - np.exp(lp) * np.sum(g, axis=-1, keepdims=True)


def cross_entropy(z, labels=None, probs=None, *, weight=None, ignore_index=-100,
                  label_smoothing=0.0, z_loss=0.0, softcap=None, grad_scale=1.0,
                  z_grad_scale=1.0, grad_output=None, want_grad=True):
    """Per-row cross-entropy of logits z (M, C) and its gradient.

    Index targets (labels, (M,)), torch's formula:
        l_i = (1 - eps) w_y (-logp_y) + eps/C sum_c w_c (-logp_c),  0 if y == ignore_index
    Probability targets (probs, (M, C)):
        l_i = -sum_c w_c ((1 - eps) t_c + eps/C) logp_c
    plus z_loss lse_i^2 (lse = logsumexp of the row); z is first replaced by
    softcap tanh(z / softcap) when softcap is set. The gradient is
        r_i (grad_scale dl_ce/dz + z_grad_scale dl_z/dz)   (r = grad_output, per row)
    Returns (row losses (M,), gradient (M, C) or None, z-loss part of the row losses).
    """
    dt = z.dtype
    M, C = z.shape
    eps = label_smoothing
    if softcap is not None:
        th = np.tanh(z / dt.type(softcap))
        zc = dt.type(softcap) * th
    else:
        zc = z
    m = np.max(zc, axis=1, keepdims=True)
    sh = zc - m
    e = np.exp(sh)
    s = np.sum(e, axis=1, keepdims=True)
    logp = sh - np.log(s)
    p = e / s
    lse = (m + np.log(s))[:, 0]
    wv = np.ones(C, dt) if weight is None else weight
    if probs is not None:
        a = probs * dt.type(1 - eps) + dt.type(eps / C)
        if weight is not None:
            a = a * weight
        row = -np.sum(a * logp, axis=1)
        valid = np.ones(M, bool)
    else:
        valid = labels != ignore_index
        y = np.where(valid, labels, 0)
        rows = np.arange(M)
        wy = np.where(valid, wv[y], 0).astype(dt)
        row = dt.type(1 - eps) * wy * -logp[rows, y]
        a = np.zeros((M, C), dt)
        a[rows, y] = dt.type(1 - eps) * wy
        if eps > 0:
            row = row + dt.type(eps / C) * -np.sum(logp * wv, axis=1)
            a += dt.type(eps / C) * wv
        row = np.where(valid, row, 0)
        a[~valid] = 0
    zrow = np.where(valid, dt.type(z_loss) * lse * lse, 0) if z_loss else np.zeros(M, dt)
    row = row + zrow
    if not want_grad:
        return row.astype(dt, copy=False), None, zrow
    r = np.ones(M, dt) if grad_output is None else grad_output.reshape(M)
    A = np.sum(a, axis=1, keepdims=True)
    g = (A * p - a) * dt.type(grad_scale)
    if z_loss:
        g = g + dt.type(2 * z_loss * z_grad_scale) * lse[:, None] * p
    g = g * r[:, None]
    if softcap is not None:
        g = g * (1 - th * th)
    g[~valid] = 0
    return row.astype(dt, copy=False), g.astype(dt, copy=False), zrow


def nll_rows(lp, labels, *, weight=None, ignore_index=-100):
    """Per-row negative log-likelihood: l_i = -w_y lp[i, y] (0 if ignored); also w_y.
    16-bit lp: the gathered values widened, the results in float32."""
    M = lp.shape[0]
    valid = labels != ignore_index
    y = np.where(valid, labels, 0)
    picked = _dtypes.widen(lp[np.arange(M), y])
    dt = picked.dtype
    wy = np.ones(M, dt) if weight is None else weight[y]
    wy = np.where(valid, wy, 0).astype(dt)
    return np.where(valid, -wy * picked, 0).astype(dt), wy


def categorical_cross_entropy(p, t, eps, normalize=False):
    """The seeds' cross_entropy_error, clipped: l_i = -sum_c t_c log(clip(q_c, eps, 1))
    with q = p (or q = p / sum_c p_c with ``normalize``, as Keras); the gradient
    G = -t / clip(q, eps, 1) (taken at the clipped value), through the
    normalisation (G - sum_c G_c q_c) / sum_c p_c. t is (M, C)."""
    s = np.sum(p, axis=1, keepdims=True) if normalize else None
    q = p / s if normalize else p
    qc = np.clip(q, q.dtype.type(eps), q.dtype.type(1))
    g = -t / qc
    if normalize:
        g = (g - np.sum(g * q, axis=1, keepdims=True)) / s
    return -np.sum(t * np.log(qc), axis=1), g


def multi_margin(x, labels, *, p=1, margin=1.0, weight=None):
    """torch's multi_margin_loss per row and its gradient:
    l_i = sum_{j != y} w_y max(0, margin - x_y + x_j)^p / C."""
    M, C = x.shape
    dt = x.dtype
    rows = np.arange(M)
    h = dt.type(margin) - x[rows, labels][:, None] + x
    h[rows, labels] = 0
    pos = h > 0
    hp = np.where(pos, h, 0)
    wy = np.ones(M, dt) if weight is None else weight[labels]
    row = wy * np.sum(hp ** p, axis=1) / dt.type(C)
    d = pos.astype(dt) if p == 1 else 2 * hp
    d = d * (wy / dt.type(C))[:, None]
    d[rows, labels] = 0
    d[rows, labels] = -np.sum(d, axis=1)
    return row.astype(dt, copy=False), d.astype(dt, copy=False)

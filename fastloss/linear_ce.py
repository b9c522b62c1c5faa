"""Fused linear + cross-entropy: the loss of ``input @ linear_weight.T + linear_bias``
and its three gradients without ever holding the N x V logits.

The rows are processed in chunks of ``chunk_size`` samples. For a chunk h_k (n, D):

    Z   = h_k W^T + b                  (n, V), BLAS through np.matmul, into one reused buffer
    G   = dL/dZ                        written over Z by the cross-entropy kernel
    grad_input[k]  = G W               (BLAS, straight into the returned array)
    grad_weight   += G^T h_k           (BLAS with beta = 1, _blas.gemm_acc, in class blocks)
    grad_bias     += sum_rows G

The matmuls of a chunk run on lanes of worker threads (see _run).

so the extra memory is one (n, V) buffer plus O(V + D) scratch, whatever N is.

A row's softmax needs its whole row of logits, and a chunk holds whole rows: no
online max/sum across class chunks is needed, each logit is computed once (three
matmuls in all, the minimum), and the existing cross-entropy kernel runs
unchanged on every chunk. The 'mean' denominators (the summed class weights of
the non-ignored targets for the cross-entropy part, the non-ignored count for
the z-loss part) are global: they come from one scan of the labels before any
work, and are passed to the kernel as its two gradient scales, so every chunk's
gradient is already the gradient of the final loss and nothing is rescaled.
"""
from __future__ import annotations

import functools
import itertools
import numbers
import os

import numpy as np

from . import _backend, _blas, _threads
from . import _reduction as R
from . import _validate as v
from ._blas import gemm_acc
from .classification import (_ce_pass, _ce_reduced, _check_label_range, _ignore_index,
                             _labels, _scalar, _weight)

__all__ = ["linear_cross_entropy"]

# default chunk: about _CHUNK_BYTES of logits, but at most a tenth of the rows (the
# memory goal: extra memory <= 1/8 of the logits) and at least _MIN_ROWS rows (each
# chunk costs a handful of BLAS calls, and the grad_weight matmul has K = rows);
# one chunk when the whole logits fit in _CHUNK_BYTES
_CHUNK_BYTES = 16 << 20
_MIN_ROWS = 192
# grad_weight is accumulated in blocks of classes of this many bytes of it
_BLOCK_BYTES = 4 << 20
# below this many multiply-adds per matmul (N D V) the matmuls are not split into lanes
_LANE_MIN_FLOPS = 1 << 24
# grad_input is split in two halves of the features from this many features each
_MIN_FEATURES = 64


def _chunk_rows(chunk_size, N, V, itemsize):
    if chunk_size is None:
        row = max(1, V * itemsize)
        if N * row <= _CHUNK_BYTES:
            return max(1, N)
        return max(min(_CHUNK_BYTES // row, N // 10), min(_MIN_ROWS, N), 1)
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return max(1, min(N, int(chunk_size)))


class _Problem:
    """Validated arguments, as 2-D rows."""

    __slots__ = ("h", "W", "b", "labels", "probs", "w", "N", "D", "V", "dtype", "loss_shape",
                 "in_shape", "red", "ignore_index", "eps", "zl", "cap", "count", "wsum",
                 "go", "go_scale", "rows", "native")


def _validate(input, linear_weight, target, linear_bias, weight, ignore_index, label_smoothing,
              z_loss, softcap, reduction, chunk_size, grad_output, backend):
    """Every check, before any work; returns a _Problem."""
    P = _Problem()
    P.red = v.reduction(reduction)
    P.ignore_index = _ignore_index(ignore_index)
    P.eps = _scalar(label_smoothing, "label_smoothing", 0.0, 1.0)
    P.zl = _scalar(z_loss, "z_loss", 0.0)
    P.cap = None if softcap is None else _scalar(softcap, "softcap", 0.0, low_open=True)
    P.native = _backend.resolve(backend) == "native"

    h = v.float_input(input, "input")
    if h.ndim not in (1, 2):
        raise ValueError(f"input must be (N, D) or (D,), got shape {h.shape}")
    W = v.float_input(linear_weight, "linear_weight")
    if W.ndim != 2:
        raise ValueError(f"linear_weight must be (V, D), got shape {W.shape}")
    if W.dtype != h.dtype:
        raise TypeError(f"linear_weight has dtype {W.dtype}, expected the input's {h.dtype}")
    if W.shape[1] != h.shape[-1]:
        raise ValueError(f"linear_weight has shape {W.shape}: its second dimension must match "
                         f"the input's feature size {h.shape[-1]}")
    V = W.shape[0]
    if V == 0:
        raise ValueError("linear_weight has no classes (V = 0 rows)")
    dtype = h.dtype
    P.in_shape = h.shape
    P.loss_shape = h.shape[:-1]
    h = h.reshape(-1, h.shape[-1])
    N, D = h.shape
    b = None
    if linear_bias is not None:
        b = v.float_input(linear_bias, "linear_bias")
        if b.dtype != dtype:
            raise TypeError(f"linear_bias has dtype {b.dtype}, expected the input's {dtype}")
        if b.shape != (V,):
            raise ValueError(f"linear_bias has shape {b.shape}, expected ({V},)")
    P.w = _weight(weight, V, dtype)

    t = target if isinstance(target, np.ndarray) else np.asarray(target)
    if t.dtype.kind == "f":
        if t.shape != P.loss_shape + (V,):
            raise ValueError(f"class-probability target has shape {t.shape}, expected "
                             f"{P.loss_shape + (V,)} (or int class indices of shape "
                             f"{P.loss_shape})")
        P.probs = v.float_like(t, "target", dtype).reshape(N, V)
        P.labels = np.empty(0, np.int64)
        P.count = P.wsum = N
    else:
        lab = _labels(t, V)
        if lab.shape != P.loss_shape:
            raise ValueError(f"target has shape {lab.shape}, expected {P.loss_shape} class "
                             f"indices for input of shape {P.in_shape}")
        P.probs = None
        P.labels = lab.reshape(-1)
        P.count, P.wsum = _check_label_range(
            lab, V, P.ignore_index, None if P.w is None else P.w.astype(np.float64))
    P.go, P.go_scale = R.split_grad_output(grad_output, P.red, dtype, P.loss_shape)
    if P.go is not None:
        P.go = P.go.reshape(N)
    P.rows = _chunk_rows(chunk_size, N, V, dtype.itemsize)
    P.h, P.W, P.b, P.N, P.D, P.V, P.dtype = h, W, b, N, D, V, dtype
    return P


def _chunk_loss(P, Z, r0, r1, row_loss, want_grad, sce, sz, Wsum):
    """Cross-entropy of the logits chunk Z (rows r0:r1), gradient written over Z;
    returns (sum of row losses, sum of their z-loss parts) in float64."""
    return _ce_pass(P.native, Z, P.labels[r0:r1] if P.probs is None else None,
                    None if P.probs is None else P.probs[r0:r1], P.w,
                    None if P.go is None else P.go[r0:r1], Z if want_grad else None, row_loss,
                    P.ignore_index, P.eps, P.zl, P.cap, sce, sz, Wsum)


def _weight_grad(gW, G, h, c_lo, c_hi, block, first, scratch):
    """gW[c] = G[:, c]^T h (``first``) or gW[c] += G[:, c]^T h for the classes c_lo:c_hi,
    ``block`` classes at a time (OpenBLAS packs the whole long operand of a call into
    its workspace: blocks keep that small); accumulation is BLAS's beta = 1."""
    for c0 in range(c_lo, c_hi, block):
        c1 = min(c0 + block, c_hi)
        if first:
            np.matmul(G[:, c0:c1].T, h, out=gW[c0:c1])
        else:
            gemm_acc(G[:, c0:c1].T, h, gW[c0:c1], scratch)


_pool = None


def _lanes_pool():
    """Worker threads whose BLAS calls run single-threaded (created on first use)."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(64, "fastloss-lce", initializer=_blas.single_threaded)
    return _pool


def _reset_pool():
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool)


def _in_lanes(tasks, T):
    """Run the callables ``tasks`` (disjoint outputs, each the same computation
    whatever runs it): in this thread when T == 0 (BLAS with its own threads), else
    on T worker threads with single-threaded BLAS, each taking the next task in
    turn; returns when all are done."""
    if T == 0:
        for t in tasks:
            t()
        return
    nxt = itertools.count()

    def lane():
        while (i := next(nxt)) < len(tasks):
            tasks[i]()
    for f in [_lanes_pool().submit(lane) for _ in range(min(T, len(tasks)))]:
        f.result()


def _lane_count(N, D, V):
    """How many lanes run each chunk's matmuls (0: none, BLAS's own threading in
    this thread, for small problems or when NumPy's BLAS cannot be single-threaded)."""
    if N * D * V < _LANE_MIN_FLOPS or not _blas.single_threaded():
        return 0
    return _threads.get_num_threads()


def _run(P, want_grad, needs=(True, True, True)):
    """The chunked forward (and backward): returns (loss, grad_input, grad_weight, grad_bias);
    ``needs`` picks which of the three gradients are computed (None for the others).

    With T > 1 threads each chunk's matmuls are split into T lanes, one worker
    thread each with single-threaded BLAS: the logits and grad_weight by ranges of
    classes, grad_input by ranges of features. Each output element is the same
    single product as with one lane (the split is by output, never along K), so
    the bits do not depend on T; the lanes meet twice per chunk (around the
    cross-entropy kernel) instead of at every K-panel of a threaded GEMM."""
    N, D, V, dtype = P.N, P.D, P.V, P.dtype
    need_i, need_w, need_b = needs if want_grad else (False, False, False)
    need_b = need_b and P.b is not None
    sce = R.grad_factor(P.red, P.go_scale, P.wsum)
    sz = R.grad_factor(P.red, P.go_scale, P.count)
    Wsum = float(V) if P.w is None else float(np.sum(P.w, dtype=np.float64))

    n = P.rows
    Z_all = np.empty((n, V), dtype)
    row_all = np.empty(N if P.red == "none" else n, np.float64)
    gi = np.empty((N, D), dtype) if need_i else None
    gW = (np.empty if N else np.zeros)((V, D), dtype) if need_w else None
    gb = np.zeros(V, dtype) if need_b else None
    colsum = np.empty(V, dtype) if need_b else None
    block = max(1, min(V, _BLOCK_BYTES // max(1, D * dtype.itemsize)))
    # the fallback of gemm_acc (NumPy's BLAS not found) needs a product scratch
    scratch = None if not need_w or N <= n or _blas.available() else np.empty((block, D), dtype)
    T = _lane_count(N, D, V)
    # the units of work, fixed whatever T (so are the bits): blocks of classes for
    # the logits, grad_weight and grad_bias, halves of the features for grad_input
    cr = [(c, min(c + block, V)) for c in range(0, V, block)]
    dr = [(0, D)] if D < 2 * _MIN_FEATURES else [(0, D // 2), (D // 2, D)]
    total = ztotal = 0.0
    W, WT = P.W, P.W.T
    for r0 in range(0, N, n):
        r1 = min(r0 + n, N)
        Z = Z_all[:r1 - r0]
        h = P.h[r0:r1]

        def logits(c0, c1):
            np.matmul(h, WT[:, c0:c1], out=Z[:, c0:c1])
            if P.b is not None:
                Z[:, c0:c1] += P.b[c0:c1]

        def input_grad(d0, d1):
            # as grad_input^T = W^T G^T: OpenBLAS is many times slower on G W itself
            # (few rows, K = V), the same product transposed is not
            np.matmul(W[:, d0:d1].T, Z.T, out=gi[r0:r1, d0:d1].T)

        def class_grads(c0, c1):
            if need_w:
                _weight_grad(gW, Z, h, c0, c1, block, r0 == 0, scratch)
            if need_b:
                np.sum(Z[:, c0:c1], axis=0, out=colsum[c0:c1])
                gb[c0:c1] += colsum[c0:c1]

        _in_lanes([functools.partial(logits, *c) for c in cr], T)
        row_loss = row_all[r0:r1] if P.red == "none" else row_all[:r1 - r0]
        t, zt = _chunk_loss(P, Z, r0, r1, row_loss, want_grad, sce, sz, Wsum)
        total += t
        ztotal += zt
        _in_lanes(([functools.partial(input_grad, *d) for d in dr] if need_i else [])
                  + ([functools.partial(class_grads, *c) for c in cr]
                     if need_w or need_b else []), T)

    loss = _ce_reduced(P.red, P.zl, row_all, total, ztotal, P.wsum, P.count, dtype,
                       P.loss_shape)
    if gi is not None:
        gi = gi.reshape(P.in_shape)
    return loss, gi, gW, gb


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None,
                         reduction="mean", return_grad=False, chunk_size=None,
                         grad_output=None, backend=None):
    """``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)`` without the
    N x V logits (torch 2.13's ``F.linear_cross_entropy`` names and order).

    ``input`` (N, D) or one sample (D,); ``linear_weight`` (V, D); ``linear_bias``
    (V,) or None, all float32 or all float64; ``target`` class indices (N,) / () or
    class probabilities (N, V) / (V,). ``weight``, ``ignore_index``,
    ``label_smoothing``, ``z_loss``, ``softcap``, ``reduction`` and ``grad_output``
    are those of :func:`fastloss.cross_entropy`. ``chunk_size``: rows per chunk (the
    only N x V-sized memory is one chunk_size x V buffer); None picks about 16 MB
    of logits or a tenth of the rows, whichever is less, but at least 192 rows.

    Returns the loss, or with ``return_grad=True`` the tuple
    ``(loss, grad_input, grad_linear_weight, grad_linear_bias)`` (the last None
    without a bias), the gradients of the reduced loss (times ``grad_output``).
    """
    return_grad = v.boolean(return_grad, "return_grad")
    P = _validate(input, linear_weight, target, linear_bias, weight, ignore_index,
                  label_smoothing, z_loss, softcap, reduction, chunk_size, grad_output, backend)
    loss, gi, gW, gb = _run(P, return_grad)
    if not return_grad:
        return loss
    return loss, gi, gW, gb

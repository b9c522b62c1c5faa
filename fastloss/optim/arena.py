"""Flat arena: a model's parameters (and gradients) in one contiguous buffer each.

The optimizers step all tensors of a group in one kernel call already; an
arena additionally keeps a model's parameters (and gradients) contiguous, which
saves the per-tensor grad checks and lets other code treat the model as one
vector::

    arena = Arena(params)              # copies the values once
    params = arena.params              # views of the original shapes: use these from now on
    opt = Adam([arena.flat_param])     # one 1-D parameter
    ...fill arena.grads[i] (views into arena.flat_grad)...
    opt.step([arena.flat_grad])

Every element-wise optimizer gives exactly the same result through the arena
as tensor by tensor (tested). Global-norm clipping too, up to summation order.
"""
from __future__ import annotations

import numpy as np

from .. import _dtypes

__all__ = ["Arena"]


class Arena:
    """Pack ``params`` (float32, float64, bfloat16 or float16 arrays, all of one dtype)
    into ``flat_param``.

    Attributes: ``flat_param``, ``flat_grad`` (1-D, zero-initialised), ``params`` and
    ``grads`` (lists of views with the original shapes), ``offsets``, ``shapes``.
    The original arrays are not modified and no longer used by the arena.
    """

    def __init__(self, params, dtype=None):
        params = [np.asarray(p) for p in params]
        if not params:
            raise ValueError("Arena needs at least one array")
        dtypes = {p.dtype.newbyteorder("=") for p in params}
        if dtype is None:
            if len(dtypes) != 1:
                raise TypeError("Arena arrays must share one dtype, got "
                                f"{sorted(map(str, dtypes))}")
            dtype = dtypes.pop()
        dtype = np.dtype(dtype)
        if not _dtypes.is_float(dtype):
            raise TypeError(f"Arena dtype must be float32, float64, bfloat16 or float16, got "
                            f"{dtype}")
        self.shapes = [p.shape for p in params]
        sizes = [p.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self.offsets[-1])
        self.flat_param = np.empty(total, dtype)
        self.flat_grad = np.zeros(total, dtype)
        self.params = self.views(self.flat_param)
        for v, p in zip(self.params, params):
            v[...] = p
        self.grads = self.views(self.flat_grad)

    def views(self, flat: np.ndarray) -> list:
        """Views of ``flat`` (a 1-D buffer of this arena's size) with the original shapes."""
        if flat.ndim != 1 or flat.shape[0] != self.offsets[-1]:
            raise ValueError(f"flat buffer must be 1-D of size {int(self.offsets[-1])}")
        o = self.offsets.tolist()
        return [flat[o[k]:o[k + 1]].reshape(s) for k, s in enumerate(self.shapes)]

    def pack_grads(self, grads) -> np.ndarray:
        """Copy ``grads`` (same shapes as the params) into ``flat_grad``; return it."""
        grads = list(grads)
        if len(grads) != len(self.shapes):
            raise ValueError(f"got {len(grads)} grads for {len(self.shapes)} arrays")
        for k, (v, g) in enumerate(zip(self.grads, grads)):
            if np.shape(g) != v.shape:
                raise ValueError(f"grads[{k}] has shape {np.shape(g)}, expected {v.shape}")
            v[...] = g
        return self.flat_grad

    def __len__(self):
        return len(self.shapes)

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

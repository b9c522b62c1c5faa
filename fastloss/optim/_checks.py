"""Input checks of the optimizer step: gradients against their params, state buffers.

Kernels run without bounds checks, so everything they will read or write is checked
here first, raising ValueError/TypeError that names the argument.
"""
from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

import numpy as np

from . import _engine

__all__ = ["plain_array", "param_addresses", "check_grads", "check_buffers", "SCALAR_KEYS"]

def plain_array(a, name):
    """``a`` as a plain ndarray view; TypeError for a non-array and for the subclasses whose
    elements the kernels would misread (``np.matrix``: 2-D reshapes; masked arrays: the
    mask would be ignored)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if isinstance(a, (np.matrix, np.ma.MaskedArray)):
        raise TypeError(f"{name} is a {type(a).__name__}; pass a plain numpy.ndarray "
                        f"(np.asarray; a mask is not supported)")
    return a.view(np.ndarray) if type(a) is not np.ndarray else a


def param_addresses(params):
    """(address, bytes) of each param, for the grads' aliasing check."""
    return [(_engine.address(p), p.nbytes) for p in params]


def check_grads(params, grads, native, paddrs, flat_needed=True):
    """Validate every grad against its param (``paddrs``: ``param_addresses(params)`` when
    ``native``); return the grads as flat views (as given when not ``flat_needed``: the
    native step only needs the addresses) and (native) their addresses."""
    if isinstance(grads, np.ndarray) or not isinstance(grads, Iterable):
        raise TypeError("grads must be a list of arrays, one per parameter")
    grads = list(grads)
    if len(grads) != len(params):
        raise ValueError(f"got {len(grads)} grads for {len(params)} parameters")
    flat, addrs = [], []
    address = _engine.address_of() if native else None
    for i, (p, g) in enumerate(zip(params, grads)):
        if type(g) is not np.ndarray:
            g = plain_array(g, f"grads[{i}]")
        pdt = p.dtype
        if g.dtype is not pdt and g.dtype != pdt:
            if g.dtype.newbyteorder("=") != pdt:
                raise TypeError(f"grads[{i}] has dtype {g.dtype}, its parameter has {pdt}")
            g = g.astype(pdt)  # non-native byte order: a native copy
        if g.shape != p.shape:
            raise ValueError(f"grads[{i}] has shape {g.shape}, its parameter has {p.shape}")
        pf = p.flags
        if not pf.writeable or not pf.c_contiguous:
            raise ValueError(f"params[{i}] became read-only or non-contiguous")
        if g.flags.c_contiguous:
            if native:
                ga = address(g) if g.dtype.itemsize != 2 else address(g.view(np.uint16))
                pa, nb = paddrs[i]
                if ga < pa + nb and pa < ga + nb:
                    raise ValueError(f"grads[{i}] shares memory with its parameter")
                addrs.append(ga)
            elif np.may_share_memory(g, p):
                raise ValueError(f"grads[{i}] shares memory with its parameter")
            if flat_needed:
                g = g.reshape(-1)
        else:
            if np.may_share_memory(g, p):
                raise ValueError(f"grads[{i}] shares memory with its parameter")
            g = np.ravel(g)  # a contiguous copy
            if native:
                addrs.append(_engine.address(g))
        flat.append(g)
    return flat, addrs



SCALAR_KEYS = ("step", "mu_product")  # per-parameter scalar state; other arrays are p-shaped


def check_buffers(i, p, st, bufs, sdt=None, master=None):
    """Raise unless every state buffer of ``params[i]`` is a plain writable C-contiguous
    array of its param's shape and of dtype ``sdt`` (default: the param's), and its
    ``master`` copy (if any) such an array in float32 (checked when a buffer is first
    seen)."""
    sdt = p.dtype if sdt is None else sdt
    for b, dt in chain(((b, sdt) for b in bufs), ((master, np.dtype(np.float32)),)):
        if b is None:
            continue
        if type(b) is not np.ndarray or b.shape != p.shape or b.dtype != dt or \
                not b.flags.c_contiguous or not b.flags.writeable:
            key = next((k for k, v in st.items() if v is b), "?")
            raise ValueError(f"state {key!r} of params[{i}] must be a writable C-contiguous "
                             f"numpy.ndarray of shape {p.shape} and dtype {dt}")

"""Multi-tensor dispatch shared by ``fastloss.optim`` and ``fastloss.torch.optim``.

A ``Launch`` gathers the tensors of one param group that one kernel variant
steps (same kernel name, option flags, dtype and per-step scalars) and runs
them in one native call (``_multi``: an address table, work split by element
count across tensor boundaries) or, on the NumPy backend, tensor by tensor
through ``_reference`` (the same arithmetic, bit for bit).

Each tensor contributes a *row*: param, grad, then the state buffers in the
kernel's argument order (``None`` for a buffer an option turns off, replaced
by a 1-element dummy the kernel never reads). Callers cache the param and
state part of a row (``Row``) and only add the grad's address each step.
"""
from __future__ import annotations

import numpy as np

from .. import _threads

__all__ = ["Launch", "Row", "address", "common_value", "store_value"]

_M = None
_dummies: dict = {}


def _multi():
    global _M
    if _M is None:
        from . import _multi
        _M = _multi
    return _M


def address(a) -> int:
    """Address of a NumPy array's first element."""
    return _multi().address(a)


def address_of():
    """The compiled ``address`` function itself (saves a call layer in loops)."""
    return _multi().address


def common_value(addrs, like):
    """The scalar at every address of ``addrs`` (an int64 array; type of ``like``) when
    all are equal, else NaN."""
    return _multi().common_value(addrs, like)


def store_value(addrs, value) -> None:
    """Write ``value`` (a NumPy scalar) at every address of ``addrs``."""
    _multi().store_value(addrs, value)


def _dummy(dt):
    """A 1-element buffer standing in for state an option turns off."""
    d = _dummies.get(dt)
    if d is None:
        d = _dummies[dt] = np.zeros(1, dt)
    return d


class Row:
    """The param and state buffers of one tensor for one kernel variant, with their
    addresses; valid while the same objects are passed again (``same``)."""

    __slots__ = ("bufs", "addrs", "size")

    def __init__(self, p, bufs):
        self.bufs = (p, *bufs)
        d = None
        addrs = []
        for b in self.bufs:
            if b is None:
                if d is None:
                    d = address(_dummy(p.dtype))
                addrs.append(d)
            else:
                addrs.append(address(b))
        self.addrs = addrs
        self.size = p.size

    def same(self, p, bufs) -> bool:
        mine = self.bufs
        if mine[0] is not p or len(mine) != len(bufs) + 1:
            return False
        for a, b in zip(mine[1:], bufs):
            if a is not b:
                return False
        return True


class Launch:
    """The tensors one kernel variant steps: ``add`` each, then ``run``."""

    __slots__ = ("name", "flags", "scalars", "rows", "gaddrs", "arrays")

    def __init__(self, name, flags, scalars):
        self.name, self.flags, self.scalars = name, flags, scalars
        self.rows, self.gaddrs, self.arrays = [], [], []

    def add_native(self, row: Row, gaddr: int) -> None:
        if row.size:
            self.rows.append(row)
            self.gaddrs.append(gaddr)

    def add_numpy(self, p, g, bufs) -> None:
        """Flat arrays for the reference functions (dummies for switched-off buffers)."""
        pf = p.reshape(-1)
        self.arrays.append((pf, g, *(_dummy(p.dtype) if b is None else b.reshape(-1)
                                     for b in bufs)))

    def run(self, cache=None) -> None:
        if self.arrays:
            from . import _reference as R
            fn = getattr(R, self.name)
            with np.errstate(all="ignore"):  # NaN/Inf propagate silently, as native
                for arrays in self.arrays:
                    fn(*arrays, *self.scalars, *self.flags)
            return
        if not self.rows:
            return
        table, offs = _table(self.rows, self.gaddrs, cache)
        M = _multi()
        K = M.K
        total = int(offs[-1])
        parallel = total >= K.PARALLEL_THRESHOLD
        nparts = _threads.numba_threads() if parallel else 1
        like = self.scalars[0]
        M.multi_kernel(self.name, self.flags, table.shape[1], parallel)(
            table, offs, nparts, like, *self.scalars)


def _table(rows, gaddrs, cache):
    """The int64 address table (one row per tensor: param, grad, state) and the prefix
    sums of the sizes; ``cache`` (a dict kept by the caller per launch site) reuses the
    previous table when the rows are the same, rewriting only the grad column."""
    if cache is not None and cache.get("rows") == rows:
        table = cache["table"]
        if cache["gaddrs"] != gaddrs:
            table[:, 1] = gaddrs
            cache["gaddrs"] = gaddrs
        return table, cache["offs"]
    n = len(rows)
    width = len(rows[0].addrs) + 1
    table = np.empty((n, width), np.int64)
    flat = []
    for r in rows:
        flat.extend(r.addrs)
    t = np.array(flat, np.int64).reshape(n, width - 1)
    table[:, 0] = t[:, 0]
    table[:, 1] = gaddrs
    table[:, 2:] = t[:, 1:]
    offs = np.zeros(n + 1, np.int64)
    np.cumsum([r.size for r in rows], out=offs[1:])
    if cache is not None:
        cache.update(rows=rows, table=table, offs=offs, gaddrs=gaddrs)
    return table, offs

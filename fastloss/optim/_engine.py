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
from ._storage import role_code

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
    if a.dtype.itemsize == 2:  # (Numba has no bfloat16 arrays)
        a = a.view(np.uint16)
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
    addresses and storage codes (``_storage.role_code``: how each role is converted to
    the compute dtype ``cdt``); ``out``: the 16-bit param of a float32 master ``p``.
    Valid while the same objects are passed again (``same``)."""

    __slots__ = ("bufs", "addrs", "size", "codes", "out")

    def __init__(self, p, bufs, cdt, out=None):
        self.bufs = (p, *bufs, out)
        d = None
        addrs = []
        gdt = (p if out is None else out).dtype
        codes = [role_code(p.dtype, cdt), role_code(gdt, cdt)]
        for b in self.bufs[1:-1]:
            if b is None:
                if d is None:
                    d = address(_dummy(cdt))
                addrs.append(d)
                codes.append(0)
            else:
                addrs.append(address(b))
                codes.append(role_code(b.dtype, cdt))
        self.addrs = [address(p), *addrs] + ([] if out is None else [address(out)])
        self.codes = tuple(codes)
        self.out = 0 if out is None else role_code(out.dtype, cdt)
        self.size = p.size

    def same(self, p, bufs, out=None) -> bool:
        mine = self.bufs
        if mine[0] is not p or len(mine) != len(bufs) + 2 or mine[-1] is not out:
            return False
        for a, b in zip(mine[1:], bufs):
            if a is not b:
                return False
        return True


class Launch:
    """The tensors one kernel variant steps: ``add`` each, then ``run``. ``scalars`` are
    in the compute dtype (the type of ``scalars[0]``); rows of one launch share their
    storage codes (the callers key launches by param, state and master dtypes)."""

    __slots__ = ("name", "flags", "scalars", "rows", "gaddrs", "arrays")

    def __init__(self, name, flags, scalars):
        self.name, self.flags, self.scalars = name, flags, scalars
        self.rows, self.gaddrs, self.arrays = [], [], []

    def add_native(self, row: Row, gaddr: int) -> None:
        if row.size:
            self.rows.append(row)
            self.gaddrs.append(gaddr)

    def add_numpy(self, p, g, bufs, out=None) -> None:
        """Flat arrays for the reference functions (dummies for switched-off buffers);
        ``out``: the 16-bit param of a float32 master ``p``."""
        cdt = type(self.scalars[0])
        self.arrays.append(((p.reshape(-1), g, *(_dummy(cdt) if b is None else b.reshape(-1)
                                                 for b in bufs)),
                            None if out is None else out.reshape(-1)))

    def run(self, cache=None) -> None:
        if self.arrays:
            self._run_numpy()
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
        row = self.rows[0]
        if any(row.codes) or row.out:
            from . import _half_numba as H
            kern = H.multi_kernel(self.name, self.flags, row.codes, row.out, parallel)
        else:
            kern = M.multi_kernel(self.name, self.flags, table.shape[1], parallel)
        kern(table, offs, nparts, like, *self.scalars)

    def _run_numpy(self):
        """The reference on whole arrays: roles stored in another dtype than the compute
        dtype are widened (copies), updated, and rounded back (grads, role 1, only read);
        a master's param is the master rounded."""
        from . import _reference as R
        fn = getattr(R, self.name)
        cdt = type(self.scalars[0])
        with np.errstate(all="ignore"):  # NaN/Inf propagate silently, as native
            for arrays, out in self.arrays:
                wide = [a if a.dtype == cdt else a.astype(cdt) for a in arrays]
                fn(*wide, *self.scalars, *self.flags)
                for j, (a, w) in enumerate(zip(arrays, wide)):
                    if w is not a and j != 1:
                        a[...] = w
                if out is not None:
                    out[...] = arrays[0]


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

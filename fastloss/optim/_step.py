"""One group's update, the core the classes, the functional API and the torch adapter
share: ``plan`` (advance step counts, check buffers, gather launches), ``run``, the
replay of a group's last native step (``_Replay``), and the global gradient norm.

Storage (``_storage``): each launch is keyed by the param's dtype, its state dtype
and whether a float32 master copy is stepped; the kernel's ``p`` is then the master
and the 16-bit param its rounded copy.
"""
from __future__ import annotations

import math
from itertools import chain
from operator import is_ as _is

import numpy as np

from .. import _dtypes
from . import _engine
from ._checks import check_buffers
from ._storage import MASTER, buffer_dtype

__all__ = ["plan", "run", "restore", "apply"]

_K = None


def _kernels():
    global _K
    if _K is None:
        from . import _kernels_numba
        _K = _kernels_numba
    return _K


def plan(rule, group, params, index, flat, gaddrs, state, gscale, rows, native, undo,
         state_dtype=None):
    """The launches that update ``params`` (their positions ``index`` in ``flat``,
    ``gaddrs`` and ``state``) with the options ``group`` by the optimizer ``rule`` (its
    ``_advance``, ``_scalars`` and ``_buffers``): one per kernel variant and storage.
    Advances the step counts (each state dict is first saved in ``undo``, see
    ``restore``) and checks every state buffer (``check_buffers``: in the param's dtype or
    ``state_dtype``; a master copy in float32) before anything is written. ``rows`` caches
    each tensor's native addresses by position (``native``); else the NumPy reference
    arrays."""
    gs = -gscale if group.get("maximize", False) else gscale
    launches = {}
    for i, p in zip(index, params):
        st = state[i]
        undo.append((st, dict(st)))
        try:
            adv = rule._advance(st, group)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"the state of params[{i}] cannot be stepped ({exc!r}): "
                             f"a state_dict of another optimizer?") from None
        pdt = p.dtype
        sdt = buffer_dtype(pdt, state_dtype)
        master = st.get(MASTER) if pdt.itemsize == 2 else None
        key = (adv, (pdt, sdt, master is not None))
        la = launches.get(key)
        if la is None:
            cdt = _dtypes.compute_dtype(pdt).type
            name, flags, scalars = rule._scalars(group, adv, cdt, gs)
            # plain bools: the flags key the compiled variants (and Numba's cache)
            la = launches[key] = _engine.Launch(name, tuple(bool(f) for f in flags), scalars)
        kp, out = (p, None) if master is None else (master, p)
        try:
            bufs = rule._buffers(kp, st, la.flags, sdt)
        except KeyError as exc:
            raise ValueError(f"the state of params[{i}] has no {exc.args[0]!r}") from None
        if native:
            row = rows.get(i)
            if row is None or not row.same(kp, bufs, out):
                check_buffers(i, p, st, bufs, sdt, master)
                row = rows[i] = _engine.Row(kp, bufs, type(la.scalars[0]), out)
            la.add_native(row, gaddrs[i])
        else:
            check_buffers(i, p, st, bufs, sdt, master)
            la.add_numpy(kp, flat[i], bufs, out)
    return launches


def run(launches, group, tables):
    """Run what ``plan`` prepared (``tables``: the native address tables' cache, None for
    the NumPy reference)."""
    for (_, sto), la in launches.items():
        la.run(tables.setdefault((id(group), la.name, la.flags, sto), {})
               if tables is not None else None)


def restore(undo):
    """Put back the state dicts ``plan`` saved (a step that raised changes nothing)."""
    for st, saved in reversed(undo):
        st.clear()
        st.update(saved)


def apply(rule, group, params, index, flat, gaddrs, state, gscale, rows, tables,
          state_dtype=None):
    """``plan`` then ``run`` for one group (native when ``tables`` is a dict)."""
    undo = []
    try:
        launches = plan(rule, group, params, index, flat, gaddrs, state, gscale, rows,
                        tables is not None, undo, state_dtype)
    except BaseException:
        restore(undo)
        raise
    run(launches, group, tables)
    return launches


class _Replay:
    """A group's last native step, replayed while its state holds the same buffer objects
    and every step count is equal: what is left per tensor is its grad's check and
    address (``check_grads``). Kept for optimizers whose per-step key is the step count
    or constant (SGD) when the group used one kernel variant."""

    __slots__ = ("index", "live", "states", "n", "bufpos", "bufs", "steppos", "rows", "cdt",
                 "flags", "table")

    @classmethod
    def record(cls, opt, group, launches, tables):
        from ._base import Optimizer
        const = opt._constant_key
        if len(launches) != 1 or not (const or type(opt)._advance is Optimizer._advance):
            return None
        (_, sto), la = next(iter(launches.items()))
        r = cls()
        r.index = list(group["_index"])
        r.states = [opt.state[i] for i in r.index]
        vals = [(k, v) for st in r.states for k, v in st.items()]
        r.n = len(vals)
        r.steppos = [j for j, (k, _) in enumerate(vals) if k == "step"]
        if len(r.steppos) != (0 if const else len(r.states)):
            return None
        r.bufpos = [j for j, (k, _) in enumerate(vals) if k != "step"]
        r.bufs = [vals[j][1] for j in r.bufpos]
        r.live = [i for i, p in zip(r.index, group["params"]) if p.size]
        r.rows, r.cdt, r.flags = la.rows, type(la.scalars[0]), la.flags
        r.table = tables[(id(group), la.name, la.flags, sto)]
        return r

    def plan(self, opt, group, gaddrs, gscale):
        """The group's launch if nothing changed, else None; changes nothing."""
        states = list(map(opt.state.__getitem__, self.index))
        if not all(map(_is, states, self.states)):
            return None
        vals = list(chain.from_iterable(map(dict.values, states)))
        if len(vals) != self.n or not all(map(_is, [vals[j] for j in self.bufpos], self.bufs)):
            return None
        if self.steppos:
            steps = [vals[j] for j in self.steppos]
            key = steps[0] + 1
            if steps.count(steps[0]) != len(steps):
                return None
        else:
            key = False  # SGD after its first momentum step
        gs = -gscale if group.get("maximize", False) else gscale
        name, flags, scalars = opt._scalars(group, key, self.cdt, gs)
        flags = tuple(bool(f) for f in flags)
        if flags != self.flags:  # another kernel variant (its buffers may differ)
            return None
        la = _engine.Launch(name, flags, scalars)
        la.rows = self.rows
        la.gaddrs = [gaddrs[i] for i in self.live]
        return la, key, states

    def run(self, planned) -> None:
        la, key, states = planned
        la.run(self.table)
        if self.steppos:
            for st in states:
                st["step"] = key


# ---------------------------------------------------------------------------
# global norm and non-finite check (deterministic: fixed chunks, ordered sums)

def _sumsq(g, native):
    if not native:
        from . import _reference
        return _reference.sumsq(g)
    if g.shape[0] == 0:
        return 0.0
    s = 0.0
    for x in _chunks(g, "sumsq_chunks", np.float64).tolist():  # ordered combination
        s += x
    return s


def _chunks(g, name, out_dtype):
    """The per-chunk results of the reduction kernel ``name`` over the flat grad ``g``
    (16-bit grads passed as the integer views the kernels' ``ld`` widens: uint16 holds
    bfloat16 bits, int16 float16 bits)."""
    K = _kernels()
    n = g.shape[0]
    out = np.empty((n + K.CHUNK - 1) // K.CHUNK, out_dtype)
    kind = _dtypes.half_kind(g.dtype)
    if kind:
        g = g.view(np.uint16 if kind == _dtypes.HALF_BF16 else np.int16)
    K.kernel(name, (), n)(g, out)
    return out


def _global_norm(flat, native) -> float:
    return math.sqrt(sum(_sumsq(g, native) for g in flat))


def _clip_scale(norm, max_norm) -> float:
    """The gradient scale of ``max_grad_norm`` clipping, ``min(1, max_norm / (norm + 1e-6))``;
    NaN when the norm is not finite (the step then propagates NaN, as PyTorch)."""
    return min(1.0, max_norm / (norm + 1e-6)) if math.isfinite(norm) else float("nan")


def _any_nonfinite(flat, native) -> bool:
    if not native:
        from . import _reference
        return any(_reference.nonfinite(g) for g in flat)
    return any(g.shape[0] and _chunks(g, "nonfinite_chunks", np.int8).any() for g in flat)

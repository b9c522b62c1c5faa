"""Optimizer base: param groups, validation, state_dict, step dispatch.

A concrete optimizer only says what PyTorch's does: its defaults, how to
check a group's hyper-parameters, which state buffers a parameter gets, and
which kernel to call with which scalars (``_scalars``, ``_buffers``). Everything else
lives here, once:

* ``step(grads)`` validates *everything* (grads' count, shapes and dtypes;
  params still writable; every group's hyper-parameters, which may have been
  changed since the last step) before any array is touched, so a step that
  raises leaves params and state exactly as they were;
* optional fused global-norm clipping (``max_grad_norm``) and
  ``skip_nonfinite`` (a step whose grads hold NaN/Inf changes nothing and
  returns False);
* the backend: ``'native'`` (Numba kernels, ``_kernels_numba``) or
  ``'numpy'`` (``_reference``), same signatures, same results bit for bit.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable, Mapping

from itertools import chain
from operator import is_ as _is

import numpy as np

from .. import _backend, _threads, _validate
from . import _engine
from ._checks import (SCALAR_KEYS, check_buffers, check_grads, param_addresses,  # noqa: F401
                      plain_array)

__all__ = ["Optimizer", "numba_available"]

_numba_ok = None


def numba_available() -> bool:
    """True when Numba imports (checked once, lazily: importing it costs ~0.4 s)."""
    global _numba_ok
    if _numba_ok is None:
        try:
            import numba  # noqa: F401
            _numba_ok = True
        except Exception:  # pragma: no cover - numba is a hard dependency
            _numba_ok = False
    return _numba_ok


_K = None


def _kernels():
    global _K
    if _K is None:
        from . import _kernels_numba
        _K = _kernels_numba
    return _K


def _frozen(v):
    """A snapshot of an option value for change detection (lists copied as tuples)."""
    return tuple(v) if isinstance(v, list) else v


# ---------------------------------------------------------------------------
# hyper-parameter checks shared by the optimizers (PyTorch's ranges)

def check_nonneg(group, *names):
    for name in names:
        _validate.real_scalar(group[name], name, low=0.0)


def check_betas(group, n=2):
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != n:
        raise ValueError(f"betas must be a tuple of {n} numbers, got {betas!r}")
    for k, b in enumerate(betas):
        _validate.real_scalar(b, f"betas[{k}]", low=0.0, high=1.0, high_open=True)


def check_flags(group, *names):
    for name in names:
        _validate.boolean(group[name], name)


def lerp_weights(beta, dt):
    """``(w, 1 - w, |w| < 0.5)`` for ``lerp_(x, w = 1 - beta)`` in dtype ``dt``."""
    w = dt(1.0 - beta)
    return w, dt(1) - w, bool(abs(w) < 0.5)


# ---------------------------------------------------------------------------

# group keys of a torch.optim state_dict that mean nothing here (dropped on load)
_TORCH_ONLY = frozenset({"foreach", "fused", "capturable", "differentiable",
                         "decoupled_weight_decay"})


class Optimizer:
    """Base class: ``Name(params, lr=..., **options)``; ``opt.step(grads)``.

    ``params``: a list of float32/float64 C-contiguous writable NumPy arrays
    (updated in place) or a list of dicts ``{'params': [...], **options}``
    (param groups, as in PyTorch). Keyword-only extras, common to all:

    * ``backend``: ``'native'`` (Numba) or ``'numpy'``; default: the global
      setting (``fastloss.set_backend``), native when Numba imports.
    * ``max_grad_norm``: clip the global gradient norm to this value inside
      the step (``clip_grad_norm`` semantics, fused: grads are not modified).
    * ``skip_nonfinite``: if any grad holds NaN/Inf, change nothing, count
      it in ``skipped_steps`` and return False from ``step``. Without it,
      NaN/Inf in grads propagate into params and state, as in PyTorch.

    A param may be replaced in ``param_groups`` (loading weights) by a writable
    C-contiguous array of the same shape and dtype: the next step updates the new array
    with the state of the old one. Anything else (another shape, groups removed or
    reordered, a group not made by ``add_param_group``) raises at the next step, before
    anything is written.
    """

    _defaults: dict = {}
    _keras_modes = ("torch",)
    _constant_key = False  # True: _advance is constant after the first step (SGD)

    def __init__(self, params, defaults: dict, *, backend=None, max_grad_norm=None,
                 skip_nonfinite=False):
        self.backend = _backend.resolve(backend, native_ok=numba_available()
                                        if backend != "numpy" else None)
        if max_grad_norm is not None:
            max_grad_norm = _validate.real_scalar(max_grad_norm, "max_grad_norm", low=0.0,
                                                  low_open=True)
        self.max_grad_norm = max_grad_norm
        self.skip_nonfinite = _validate.boolean(skip_nonfinite, "skip_nonfinite")
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}
        self._params: list[np.ndarray] = []
        self.skipped_steps = 0
        self.last_grad_norm = None

        if isinstance(params, np.ndarray) or not isinstance(params, Iterable):
            raise TypeError("params must be a list of arrays or a list of param-group dicts, "
                            f"got {type(params).__name__}")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], Mapping):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    # -- groups --------------------------------------------------------------
    def add_param_group(self, group: Mapping) -> None:
        """Add a group ``{'params': [...], **options}``; missing options take the defaults."""
        if not isinstance(group, Mapping):
            raise TypeError(f"a param group must be a dict, got {type(group).__name__}")
        group = dict(group)
        ps = group.get("params")
        if isinstance(ps, np.ndarray):
            ps = [ps]
        if ps is None or not isinstance(ps, Iterable):
            raise TypeError("a param group needs 'params': a list of arrays")
        ps = list(ps)
        if not ps:
            raise ValueError("a param group has an empty 'params' list")
        seen = {id(p) for p in self._params}
        for k, p in enumerate(ps):
            self._check_param(p, f"params[{len(self._params) + k}]")
            if id(p) in seen:
                raise ValueError("a parameter appears more than once in the param groups")
            seen.add(id(p))
        unknown = set(group) - set(self._defaults) - {"params"}
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown options {sorted(unknown)}")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        first = len(self._params)
        group["params"] = ps
        group["_index"] = list(range(first, first + len(ps)))
        self._params.extend(ps)
        self.param_groups.append(group)
        for i, p in zip(group["_index"], ps):
            self.state[i] = self._new_state(p, group)

    @staticmethod
    def _check_param(p, name):
        plain_array(p, name)
        _validate.writable_array(p, name, " (it is updated in place)")
        if p.dtype not in _validate.FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got dtype {p.dtype}")

    # -- hooks for subclasses ------------------------------------------------
    def _check_group(self, group) -> None:
        """Raise ValueError/TypeError for a bad hyper-parameter."""
        _validate.real_scalar(group["lr"], "lr", low=0.0)
        mode = group.get("epsilon_mode", "torch")
        if mode not in self._keras_modes:
            raise ValueError(f"epsilon_mode must be one of {self._keras_modes}, got {mode!r}")

    def _new_state(self, p, group) -> dict:
        return {}

    def _advance(self, st, group):
        """Advance the per-param step count; return the key the per-step scalars
        depend on (the step; SGD: whether this is the first momentum step)."""
        t = st["step"] = st["step"] + 1
        return t

    def _scalars(self, group, key, dt, gscale):
        """``(kernel name, flags, scalars)`` for the step ``key``: scalars computed in
        float64 and cast to ``dt``; flags are compile-time constants of the kernel.
        Computed once per group, step and dtype, not per parameter."""
        raise NotImplementedError

    def _buffers(self, p, st, flags):
        """The kernel's state buffers, after param and grad, in its argument order
        (``None`` for one the flags switch off), allocating those an option needs on
        first use."""
        raise NotImplementedError

    # -- the step --------------------------------------------------------------
    def _current_params(self):
        """The params the step will update: ``param_groups`` as they are now. A param
        replaced there (as when loading weights) is checked like a new one and must have
        the shape and dtype of the array it replaces (its state is kept); the caches of
        addresses and replays are then dropped. Groups must be the ones ``add_param_group``
        made, in order (each param's position indexes the grads and the state). Raises
        before anything is changed."""
        groups, known = self.param_groups, self._params
        try:
            pos = 0
            for g in groups:  # (a few operations per group)
                gi = g["_index"]
                if len(g["params"]) != len(gi) or (gi and gi[0] != pos):
                    break
                pos += len(gi)
            else:
                ps = groups[0]["params"] if len(groups) == 1 else \
                    list(chain.from_iterable(g["params"] for g in groups))
                if pos == len(known) and len(ps) == pos and all(map(_is, ps, known)):
                    return known
        except (LookupError, TypeError):
            pass
        new, pos = [], 0
        for k, g in enumerate(groups):
            if not isinstance(g, dict) or "_index" not in g or "params" not in g:
                raise ValueError(f"param_groups[{k}] was not made by add_param_group (add "
                                 f"groups with opt.add_param_group)")
            gp, gi = g["params"], g["_index"]
            if isinstance(gp, np.ndarray) or not isinstance(gp, (list, tuple)):
                raise TypeError(f"param_groups[{k}]['params'] must be a list of arrays, got "
                                f"{type(gp).__name__}")
            if len(gp) != len(gi) or list(gi) != list(range(pos, pos + len(gi))):
                raise ValueError(f"param_groups[{k}] holds {len(gp)} params at positions "
                                 f"{gi[:1]}...: groups were removed, reordered or resized "
                                 f"(build a new optimizer, or use add_param_group)")
            pos += len(gi)
            for i, p in zip(gi, gp):
                old = known[i]
                if p is not old:
                    self._check_param(p, f"params[{i}]")
                    if p.dtype != old.dtype:
                        raise TypeError(f"params[{i}] was replaced by an array of dtype "
                                        f"{p.dtype}; its optimizer state is {old.dtype}")
                    if p.shape != old.shape:
                        raise ValueError(f"params[{i}] was replaced by an array of shape "
                                         f"{p.shape}; its optimizer state is for {old.shape}")
                new.append(p)
        if pos != len(known):
            raise ValueError(f"param_groups hold {pos} params, the optimizer was built with "
                             f"{len(known)}: groups were removed (build a new optimizer)")
        if len({id(p) for p in new}) != len(new):
            raise ValueError("a parameter appears more than once in the param groups")
        known[:] = new
        for key in ("_paddrs", "_replays", "_rows", "_tables"):
            self.__dict__.pop(key, None)
        return known

    def _check_grads(self, grads, native):
        params = self._current_params()
        paddrs = self.__dict__.get("_paddrs")
        if native and paddrs is None:  # refreshed when a param is replaced
            paddrs = self._paddrs = param_addresses(params)
        return check_grads(params, grads, native, paddrs,
                           not native or self.max_grad_norm is not None or self.skip_nonfinite)

    def step(self, grads) -> bool:
        """One update of every parameter with ``grads`` (same order as the params).

        Returns True, or False when ``skip_nonfinite`` skipped the step. Everything is
        checked (grads, params, state buffers, options) before anything is written: a
        step that raises changes nothing.
        """
        native = self.backend == "native"
        flat, gaddrs = self._check_grads(grads, native)
        for group in self.param_groups:
            # re-validate a group only when one of its options changed since last time
            sig = tuple(_frozen(group.get(k)) for k in self._defaults)
            if sig != group.get("_checked"):
                self._check_group(group)
                group["_checked"] = sig
        if native and (self.max_grad_norm is not None or self.skip_nonfinite):
            _threads.numba_threads()
        gscale = 1.0
        if self.max_grad_norm is not None:
            norm = _global_norm(flat, native)
            self.last_grad_norm = norm
            if self.skip_nonfinite and not math.isfinite(norm):
                self.skipped_steps += 1
                return False
            gscale = _clip_scale(norm, self.max_grad_norm)
        elif self.skip_nonfinite and _any_nonfinite(flat, native):
            self.skipped_steps += 1
            return False

        rows = self.__dict__.setdefault("_rows", {})
        tables = self.__dict__.setdefault("_tables", {}) if native else None
        replays = self.__dict__.setdefault("_replays", {})
        # phase 1, every group: the launches (replayed, or planned with the step counts
        # advanced and the buffers checked); undone if anything raises
        todo, undo = [], []
        try:
            for group in self.param_groups:
                entry = replays.get(id(group)) if native else None
                if entry is not None and entry[0] is group:
                    la = entry[1].plan(self, group, gaddrs, gscale)
                    if la is not None:
                        todo.append((group, entry[1], la))
                        continue
                todo.append((group, None, plan(self, group, group["params"], group["_index"],
                                               flat, gaddrs, self.state, gscale, rows,
                                               native, undo)))
        except BaseException:
            restore(undo)
            raise
        # phase 2: run them
        for group, rep, la in todo:
            if rep is not None:
                rep.run(la)
                continue
            run(la, group, tables)
            rec = _Replay.record(self, group, la, tables) if native else None
            if rec is None:
                replays.pop(id(group), None)
            else:
                replays[id(group)] = (group, rec)
        return True

    def zero_state(self) -> None:
        """Forget all state (step counts and buffers), as a fresh optimizer."""
        for group in self.param_groups:
            for i, p in zip(group["_index"], group["params"]):
                self.state[i] = self._new_state(p, group)

    # -- state_dict ------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{'state': {index: {name: value}}, 'param_groups': [...]}`` as in PyTorch.

        Buffers are copies (the dict can be pickled or kept while training goes on).
        """
        groups = []
        for g in self.param_groups:
            d = {k: copy.deepcopy(v) for k, v in g.items()
                 if k not in ("params", "_index", "_checked")}
            d["params"] = list(g["_index"])
            groups.append(d)
        state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
                 for i, st in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore a ``state_dict()``: same groups and sizes; buffers are copied and cast
        to their parameter's dtype. Everything is checked before anything changes.

        A ``torch.optim`` state_dict of the same optimizer loads too (tensors are
        converted; PyTorch-only group keys such as ``foreach`` are dropped)."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"state_dict has no {key!r}")
        groups = state_dict["param_groups"]
        if not isinstance(state_dict["state"], Mapping):
            raise TypeError("state_dict['state'] must be a dict")
        if isinstance(groups, (str, bytes, Mapping)) or not isinstance(groups, Iterable) or \
                not all(isinstance(g, Mapping) and "params" in g for g in groups):
            raise ValueError("state_dict['param_groups'] must be a list of dicts with 'params'")
        groups = list(groups)
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, "
                             f"the optimizer has {len(self.param_groups)}")
        new_groups = []
        for k, (saved, cur) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(cur["params"]):
                raise ValueError(f"param group {k} has {len(saved['params'])} params in the "
                                 f"state_dict, {len(cur['params'])} in the optimizer")
            g = {key: copy.deepcopy(v) for key, v in saved.items()
                 if key not in ("params", "_checked")
                 and (key in self._defaults or key not in _TORCH_ONLY)}
            if isinstance(g.get("betas"), list):
                g["betas"] = tuple(g["betas"])
            for key in self._defaults:  # options this state_dict does not know (torch's)
                g.setdefault(key, cur[key])
            g["params"], g["_index"] = cur["params"], cur["_index"]
            self._check_group(g)
            new_groups.append((g, dict(zip(saved["params"], cur["_index"]))))
        saved_state = state_dict["state"]
        new_state = {}
        for g, mapping in new_groups:
            for old, i in mapping.items():
                p = self._params[i]
                st = saved_state.get(old, saved_state.get(str(old)))
                if st is None:
                    new_state[i] = self._new_state(p, g)
                    continue
                if not isinstance(st, Mapping):
                    raise TypeError(f"state of param {i} in the state_dict must be a dict, "
                                    f"got {type(st).__name__}")
                fresh = self._new_state(np.zeros(0, p.dtype), g)  # (its keys)
                missing = [key for key in fresh if key not in st]
                if missing:
                    raise ValueError(f"state of param {i} in the state_dict has no "
                                     f"{missing[0]!r} (a state_dict of another optimizer?)")
                restored = {}
                for key, v in st.items():
                    if key in SCALAR_KEYS or v is None or isinstance(v, bool):
                        if v is not None and not isinstance(v, (numbers.Number, bool)):
                            a = np.asarray(v)
                            if a.size != 1:
                                raise ValueError(f"state {key!r} of param {i} must be a "
                                                 f"number, got shape {a.shape}")
                            v = a.item()
                        if v is not None and (isinstance(v, bool) or
                                              not isinstance(v, numbers.Real)):
                            raise TypeError(f"state {key!r} of param {i} must be a real "
                                            f"number, got {v!r}")
                        restored[key] = v
                        continue
                    a = np.asarray(v)
                    if a.shape != p.shape:
                        raise ValueError(f"state {key!r} of param {i} has shape {a.shape}, "
                                         f"the param has {p.shape}")
                    if a.dtype.kind not in "fiu":
                        raise TypeError(f"state {key!r} of param {i} has dtype {a.dtype}")
                    restored[key] = np.array(a, dtype=p.dtype, order="C", copy=True)
                new_state[i] = restored
        self.param_groups = [g for g, _ in new_groups]
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} (backend={self.backend!r})"]
        for k, g in enumerate(self.param_groups):
            opts = ", ".join(f"{key}={v!r}" for key, v in g.items()
                             if key not in ("params", "_index", "_checked"))
            lines.append(f"  group {k}: {len(g['params'])} params; {opts}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# the per-optimizer logic without an instance's params

_rules: dict = {}


def rule(cls):
    """A parameter-less instance of an optimizer class: its per-optimizer methods
    (``_check_group``, ``_new_state``, ``_advance``, ``_scalars``, ``_buffers``) without the
    param groups of ``__init__``. The functional API and the torch adapter use it."""
    obj = _rules.get(cls)
    if obj is None:
        obj = _rules[cls] = object.__new__(cls)
        obj.defaults = dict(cls._defaults)
    return obj


# ---------------------------------------------------------------------------
# one group's update: the core the classes, the functional API and the torch adapter share

def plan(rule, group, params, index, flat, gaddrs, state, gscale, rows, native, undo):
    """The launches that update ``params`` (their positions ``index`` in ``flat``,
    ``gaddrs`` and ``state``) with the options ``group`` by the optimizer ``rule`` (its
    ``_advance``, ``_scalars`` and ``_buffers``): one per kernel variant. Advances the step
    counts (each state dict is first saved in ``undo``, see ``restore``) and checks every
    state buffer (``check_buffers``) before anything is written. ``rows`` caches each
    tensor's native addresses by position (``native``); else the NumPy reference arrays."""
    gs = -gscale if group.get("maximize", False) else gscale
    launches = {}
    for i, p in zip(index, params):
        st = state[i]
        undo.append((st, dict(st)))
        try:
            key = (rule._advance(st, group), p.dtype)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"the state of params[{i}] cannot be stepped ({exc!r}): "
                             f"a state_dict of another optimizer?") from None
        la = launches.get(key)
        if la is None:
            name, flags, scalars = rule._scalars(group, key[0], p.dtype.type, gs)
            # plain bools: the flags key the compiled variants (and Numba's cache)
            la = launches[key] = _engine.Launch(name, tuple(bool(f) for f in flags), scalars)
        try:
            bufs = rule._buffers(p, st, la.flags)
        except KeyError as exc:
            raise ValueError(f"the state of params[{i}] has no {exc.args[0]!r}") from None
        if native:
            row = rows.get(i)
            if row is None or not row.same(p, bufs):
                check_buffers(i, p, st, bufs)
                row = rows[i] = _engine.Row(p, bufs)
            la.add_native(row, gaddrs[i])
        else:
            check_buffers(i, p, st, bufs)
            la.add_numpy(p, flat[i], bufs)
    return launches


def run(launches, group, tables):
    """Run what ``plan`` prepared (``tables``: the native address tables' cache, None for
    the NumPy reference)."""
    for (_, dt), la in launches.items():
        la.run(tables.setdefault((id(group), la.name, la.flags, dt), {})
               if tables is not None else None)


def restore(undo):
    """Put back the state dicts ``plan`` saved (a step that raised changes nothing)."""
    for st, saved in reversed(undo):
        st.clear()
        st.update(saved)


def apply(rule, group, params, index, flat, gaddrs, state, gscale, rows, tables):
    """``plan`` then ``run`` for one group (native when ``tables`` is a dict)."""
    undo = []
    try:
        launches = plan(rule, group, params, index, flat, gaddrs, state, gscale, rows,
                        tables is not None, undo)
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

    __slots__ = ("index", "live", "states", "n", "bufpos", "bufs", "steppos", "rows", "dt",
                 "flags", "table")

    @classmethod
    def record(cls, opt, group, launches, tables):
        const = opt._constant_key
        if len(launches) != 1 or not (const or type(opt)._advance is Optimizer._advance):
            return None
        (_, dt), la = next(iter(launches.items()))
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
        r.rows, r.dt, r.flags = la.rows, dt, la.flags
        r.table = tables[(id(group), la.name, la.flags, dt)]
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
        name, flags, scalars = opt._scalars(group, key, self.dt.type, gs)
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
    K = _kernels()
    n = g.shape[0]
    if n == 0:
        return 0.0
    parts = np.empty((n + K.CHUNK - 1) // K.CHUNK, np.float64)
    K.kernel("sumsq_chunks", (), n)(g, parts)
    s = 0.0
    for x in parts.tolist():  # ordered combination
        s += x
    return s


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
    K = _kernels()
    for g in flat:
        n = g.shape[0]
        if n == 0:
            continue
        out = np.empty((n + K.CHUNK - 1) // K.CHUNK, np.int8)
        K.kernel("nonfinite_chunks", (), n)(g, out)
        if out.any():
            return True
    return False

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

from .. import _backend, _dtypes, _threads, _validate
from . import _storage
from ._checks import (SCALAR_KEYS, check_buffers, check_grads, param_addresses,  # noqa: F401
                      plain_array)
from ._step import (_any_nonfinite, _clip_scale, _global_norm, _Replay, _sumsq,  # noqa: F401
                    apply, plan, restore, run)

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

    ``params``: a list of float32/float64/bfloat16 (``ml_dtypes.bfloat16``)/float16
    C-contiguous writable NumPy arrays (updated in place; grads in the same dtype) or a
    list of dicts ``{'params': [...], **options}`` (param groups, as in PyTorch).
    Keyword-only extras, common to all:

    * ``backend``: ``'native'`` (Numba) or ``'numpy'``; default: the global
      setting (``fastloss.set_backend``), native when Numba imports.
    * ``max_grad_norm``: clip the global gradient norm to this value inside
      the step (``clip_grad_norm`` semantics, fused: grads are not modified).
    * ``skip_nonfinite``: if any grad holds NaN/Inf, change nothing, count
      it in ``skipped_steps`` and return False from ``step``. Without it,
      NaN/Inf in grads propagate into params and state, as in PyTorch.
    * ``state_dtype``: the dtype of the state buffers (default: each param's own), e.g.
      ``"bfloat16"`` moments for float32 params (``_storage``: no wider than the update
      math, float32 for 16-bit params). ``state_dict`` keeps it.
    * ``master_weights``: keep a float32 copy of each 16-bit param in its state
      (``'master_param'``); the update runs on it and the param is its rounding, so small
      updates are not lost to 16-bit rounding. No effect on float32/float64 params.

    16-bit params and state are widened to float32 in registers as the kernel reads
    them, updated in float32 and rounded to nearest even as it stores them
    (``_convert_numba``, ``_half_numba``).

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
                 skip_nonfinite=False, state_dtype=None, master_weights=False):
        self.backend = _backend.resolve(backend, native_ok=numba_available()
                                        if backend != "numpy" else None)
        if max_grad_norm is not None:
            max_grad_norm = _validate.real_scalar(max_grad_norm, "max_grad_norm", low=0.0,
                                                  low_open=True)
        self.max_grad_norm = max_grad_norm
        self.skip_nonfinite = _validate.boolean(skip_nonfinite, "skip_nonfinite")
        self.state_dtype = _storage.state_dtype_arg(state_dtype)
        self.master_weights = _validate.boolean(master_weights, "master_weights")
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
            _storage.buffer_dtype(p.dtype, self.state_dtype)
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
            self.state[i] = self._fresh_state(p, group)

    @staticmethod
    def _check_param(p, name):
        plain_array(p, name)
        _validate.writable_array(p, name, " (it is updated in place)")
        if not _dtypes.is_float(p.dtype):
            raise TypeError(f"{name} must be float32, float64, bfloat16 or float16, got dtype "
                            f"{p.dtype}")

    def _fresh_state(self, p, group) -> dict:
        """A param's state before its first step: the optimizer's buffers in the state
        dtype, and a float32 master copy of a 16-bit param under ``master_weights``."""
        return _storage.fresh_state(self, p, group, self.state_dtype, self.master_weights)

    # -- hooks for subclasses ------------------------------------------------
    def _check_group(self, group) -> None:
        """Raise ValueError/TypeError for a bad hyper-parameter."""
        _validate.real_scalar(group["lr"], "lr", low=0.0)
        mode = group.get("epsilon_mode", "torch")
        if mode not in self._keras_modes:
            raise ValueError(f"epsilon_mode must be one of {self._keras_modes}, got {mode!r}")

    def _new_state(self, p, group, sdt=None) -> dict:
        """The optimizer's state of a param before its first step, buffers in ``sdt``
        (None: the param's dtype)."""
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

    def _buffers(self, p, st, flags, sdt=None):
        """The kernel's state buffers, after param and grad, in its argument order
        (``None`` for one the flags switch off), allocating those an option needs on
        first use (in ``sdt``, None: ``p``'s dtype)."""
        raise NotImplementedError

    # -- the step --------------------------------------------------------------
    def _current_params(self):
        """The params the step will update: ``param_groups`` as they are now. A param
        replaced there (as when loading weights) is checked like a new one and must have
        the shape and dtype of the array it replaces (its state is kept; a float32 master
        copy is made again from it); the caches of
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
        for i, (p, old) in enumerate(zip(new, known)):
            st = self.state.get(i)
            if p is not old and st is not None and _storage.MASTER in st:
                st[_storage.MASTER] = _storage.master_of(p)  # the new weights' master
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
                                               native, undo, self.state_dtype)))
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
                self.state[i] = self._fresh_state(p, group)

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
        to the state dtype (their parameter's unless ``state_dtype``), a master copy to
        float32 (made from the param when the dict has none; dropped without
        ``master_weights``). Everything is checked before anything changes.

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
                    new_state[i] = self._fresh_state(p, g)
                    continue
                if not isinstance(st, Mapping):
                    raise TypeError(f"state of param {i} in the state_dict must be a dict, "
                                    f"got {type(st).__name__}")
                fresh = self._new_state(np.zeros(0, p.dtype), g)  # (its keys)
                sdt = _storage.buffer_dtype(p.dtype, self.state_dtype)
                master = self.master_weights and p.dtype.itemsize == 2
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
                    if str(getattr(v, "dtype", "")) == "torch.bfloat16":
                        v = v.float()  # (torch has no NumPy bfloat16; exact)
                    a = np.asarray(v)
                    if a.shape != p.shape:
                        raise ValueError(f"state {key!r} of param {i} has shape {a.shape}, "
                                         f"the param has {p.shape}")
                    if a.dtype.kind not in "fiu" and not _dtypes.is_half(a.dtype):
                        raise TypeError(f"state {key!r} of param {i} has dtype {a.dtype}")
                    if key == _storage.MASTER:
                        if not master:
                            continue  # (saved with master weights, loaded without)
                        dt = np.float32
                    else:
                        dt = sdt
                    restored[key] = np.array(a, dtype=dt, order="C", copy=True)
                if master and _storage.MASTER not in restored:
                    restored[_storage.MASTER] = _storage.master_of(p)
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

"""``torch.optim`` optimizers whose step runs fastloss's fused Numba kernels.

``fastloss.torch.optim.Adam`` *is a* ``torch.optim.Adam`` (a subclass): same
constructor, defaults, param groups, hooks, ``zero_grad``, ``state_dict`` and
``load_state_dict`` (torch's own code), so it works with
``torch.optim.lr_scheduler`` and exchanges state with ``torch.optim.Adam``
both ways. Only ``step`` differs: every parameter with a gradient is updated
in place, all tensors of a param group that share a dtype in one multi-tensor
kernel call (``fastloss.optim._engine``) on the memory of ``p``, ``p.grad`` and
the state tensors (torch's keys: ``step`` as a float scalar
tensor, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``,
``sum``, ``square_avg``, ``grad_avg``, ``exp_inf``, ``mu_product``).

The update math is :mod:`fastloss.optim`'s (``_check_group``, ``_new_state``,
``_advance``, ``_scalars``, ``_arrays`` of the class of the same name); this
module only maps torch's param groups and state onto it.

Each step first validates every group and every parameter with a gradient
(CPU, float32/float64, dense gradient of the parameter's dtype and shape,
state of the right shapes) and raises before anything is changed. What was
checked is cached per parameter (``_Slot``: keyed on the tensor and its data
pointer, the state dict and its tensors) and per group (``_Fast``: the last
step replayed while the same parameters, state objects and options hold; new
gradient tensors cost a few attribute reads each), so a step's Python work per
tensor is reading ``p.grad`` and checking it.

Sharded tensors: ``_local`` (unwrap a parameter or gradient to the tensor whose
memory is updated) and ``_sumsq`` (the sum of squares for a global gradient
norm) are the single places to adapt.
``foreach`` and ``fused`` are accepted and ignored (there is one
implementation); ``differentiable=True`` is refused. Hyper-parameters given
as tensors are read as Python numbers at each step.
"""
from __future__ import annotations

from itertools import chain
from operator import is_ as _is

import math

import numpy as np
import torch

from ..optim import _optimizers as _core
from .. import _validate
from ..optim import _engine
from ..optim._base import rule as _rule

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam"]

_FLOAT = (torch.float32, torch.float64)
_SCALAR_KEYS = ("step", "mu_product")  # scalar state; every other tensor is shaped like p
_chain = chain.from_iterable
_data_ptr = torch.Tensor.data_ptr


def _plain(v):
    """Hyper-parameters as Python numbers (torch allows 0-dim tensors for lr, betas)."""
    if isinstance(v, torch.Tensor):
        return v.item()
    if isinstance(v, (tuple, list)):
        return tuple(_plain(x) for x in v)
    return v


def _scalar_dtype():
    """The dtype torch gives ``state['step']`` (and NAdam's ``mu_product``)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _check_param(p, name):
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    if not p.is_cpu:
        raise ValueError(f"{name} is on device {p.device}; fastloss.torch.optim updates CPU "
                         f"tensors only (use torch.optim for other devices)")
    if p.dtype not in _FLOAT:
        raise TypeError(f"{name} has dtype {p.dtype}; fastloss.torch.optim supports float32 "
                        f"and float64 parameters (cast the model with .float(), or use "
                        f"torch.optim for float16/bfloat16/complex)")
    if p.layout is not torch.strided:
        raise ValueError(f"{name} has layout {p.layout}; only dense (strided) parameters are "
                         f"supported")


def _check_grad(p, g, name, opt_name):
    if g.layout is not torch.strided:
        raise ValueError(f"{name} has a sparse gradient ({g.layout}); {opt_name} needs dense "
                         f"gradients")
    if not g.is_cpu:
        raise ValueError(f"{name}.grad is on device {g.device}, its parameter on {p.device}")
    if g.dtype is not p.dtype:
        raise TypeError(f"{name}.grad has dtype {g.dtype}, its parameter {p.dtype}")
    if g.shape != p.shape:
        raise ValueError(f"{name}.grad has shape {tuple(g.shape)}, its parameter "
                         f"{tuple(p.shape)}")


def _local(t):
    """The tensor whose memory the kernels read or update, for a parameter or a
    gradient: ``t`` itself. The one place where a wrapper tensor (a sharded DTensor)
    would be unwrapped to its local shard."""
    return t


def _sumsq(grads) -> float:
    """Sum of the squares of all ``grads`` (flat NumPy arrays), in float64 over fixed
    chunks, for ``max_grad_norm``. The one place where shards' sums would be
    all-reduced into the global one."""
    from .. import _threads
    from ..optim._base import _sumsq as sumsq
    _threads.numba_threads()
    return sum(sumsq(g, True) for g in grads)


class _Slot:
    """One parameter as the kernels see it, reused while nothing changed: its NumPy
    view, its torch state and a NumPy mirror of that state (``st``: the arrays are views
    of the state tensors, ``step`` a Python number read from the tensor each step), and
    the last gradient seen with its address.

    Valid while ``state`` is the same dict holding the same tensor objects and the
    parameter still points at the same memory (``p.data = ...`` or ``load_state_dict``
    rebuild it); the gradient's checks are redone when ``p.grad`` is another tensor or
    points elsewhere.
    """

    __slots__ = ("state", "n", "ptr", "p_np", "tensors", "st", "step", "row", "g", "gptr",
                 "gaddr", "gnp", "fresh")

    def same_state(self, state):
        if state is not self.state:
            return False
        if state is None:
            return True
        if len(state) != self.n:
            return False
        get = state.get
        for key, t in self.tensors:
            if get(key) is not t:
                return False
        return True


def _check_state(p, state, name, required):
    """Raise before anything changes if a parameter's torch state cannot be stepped."""
    for key in required:
        if key not in state:
            raise ValueError(f"the state of {name} has no {key!r} (a state_dict of another "
                             f"optimizer?)")
    for key, v in state.items():
        if isinstance(v, torch.Tensor):
            if not v.is_cpu:
                raise ValueError(f"state {key!r} of {name} is on device {v.device}")
            if key in _SCALAR_KEYS:
                if v.numel() != 1:
                    raise ValueError(f"state {key!r} of {name} has shape {tuple(v.shape)}, "
                                     f"expected a scalar")
            elif v.shape != p.shape:
                raise ValueError(f"state {key!r} of {name} has shape {tuple(v.shape)}, the "
                                 f"parameter {tuple(p.shape)}")


def _build_slot(p, lp, state):
    """A slot for a checked parameter (``lp``: its local tensor) and its checked state
    (state tensors of another dtype or layout are replaced by contiguous copies of the
    same values)."""
    e = _Slot()
    e.st, tensors = {}, []
    e.step = None
    if state is not None:
        for key in list(state):
            v = state[key]
            if isinstance(v, torch.Tensor):
                if key in _SCALAR_KEYS:
                    if v.dtype not in _FLOAT or v.dim() != 0:
                        v = state[key] = v.detach().reshape(()).to(
                            v.dtype if v.dtype in _FLOAT else _scalar_dtype())
                    a = v.detach().numpy()
                    if key == "step":
                        e.step = a
                        e.st[key] = 0
                    else:
                        e.st[key] = float(a)
                else:
                    if v.dtype is not lp.dtype or not v.is_contiguous():
                        v = state[key] = v.detach().to(lp.dtype).contiguous()
                    e.st[key] = v.detach().numpy()
                tensors.append((key, v))
            else:
                e.st[key] = v
    e.n = 0 if state is None else len(state)
    e.fresh = not state  # torch's rule: an empty state is a first step
    e.state, e.tensors = state, tuple(tensors)
    e.ptr = lp.data_ptr()
    pd = lp.detach()
    e.p_np = pd.numpy() if pd.is_contiguous() else None
    e.row = e.g = e.gnp = None
    e.gptr = e.gaddr = 0
    return e


class _Fast:
    """A param group's last step, replayed while nothing that was checked changed.

    Kept after a step of the general path that used one kernel variant for the group
    (one dtype, no copies) and whose optimizer's per-step key is the step count
    (Adam, AdamW, Adagrad, RMSprop, Adamax) or constant (SGD). Valid while the group
    holds the same parameters at the same addresses, the same ones have gradients
    (plain CPU tensors, contiguous, of the parameter's dtype and shape: new gradient
    tensors are checked here, a few attribute reads each), the state dicts are the
    same holding the same objects, the options are the same and every step count is
    equal (read in one native call). Anything else goes through the general path.
    """

    __slots__ = ("sig", "params", "grads", "mask", "stepped", "sgrads", "gptrs", "meta",
                 "ptrs", "states", "nstate", "vals", "steps", "like", "rows", "gaddrs",
                 "table", "dt", "gs")

    def check(self, opt, group, cg):
        """Return the step key (or () when nothing has a gradient), or None to fall back;
        changes nothing but this cache."""
        ps = group["params"]
        if len(ps) != len(self.params) or not all(map(_is, ps, self.params)):
            return None
        grads = [p.grad for p in ps]
        if all(map(_is, grads, self.grads)):
            if list(map(_data_ptr, self.sgrads)) != self.gptrs:  # moved: check again
                return None
        else:
            if [g is None for g in grads] != self.mask:
                return None
            sgrads = [g for g in grads if g is not None]
            gaddrs = []
            for g, (dt, shape, pa, nb) in zip(sgrads, self.meta):
                if type(g) is not torch.Tensor or g.dtype is not dt or not g.is_cpu \
                        or g.layout is not torch.strided or g.shape != shape \
                        or not g.is_contiguous():
                    return None
                if nb:  # (empty tensors are not in the launch)
                    ga = g.data_ptr()
                    if ga < pa + nb and pa < ga + nb:
                        return None
                    gaddrs.append(ga)
            self.grads, self.sgrads, self.gaddrs = grads, sgrads, gaddrs
            self.gptrs = list(map(_data_ptr, sgrads))
        if not self.stepped:
            return ()
        if list(map(_data_ptr, self.stepped)) != self.ptrs:
            return None
        states = self.states  # the same dicts (checked once for all groups by the caller)
        if sum(map(len, states)) != self.nstate or \
                not all(map(_is, _chain(map(dict.values, states)), self.vals)):
            return None
        if self.steps is None:
            return False
        t = _engine.common_value(self.steps, self.like)
        return None if t != t else int(t) + 1

    def run(self, core, cg, key):
        if key == ():
            return
        name, flags, scalars = core._scalars(cg, key, self.dt.type, self.gs)
        la = _engine.Launch(name, tuple(bool(f) for f in flags), scalars)
        la.rows, la.gaddrs = self.rows, self.gaddrs
        la.run(self.table)
        if self.steps is not None:
            _engine.store_value(self.steps, self.like.dtype.type(key))


def _record(opt, group, sig, core, gs, items, launches, tables):
    """A ``_Fast`` for ``group`` after a general step, or None when it does not qualify."""
    if type(opt)._advance is not _FastlossStep._advance or len(launches) > 1:
        return None
    c = _Fast()
    c.sig, c.gs = sig, gs
    c.params = list(group["params"])
    c.grads = [p.grad for p in c.params]
    c.mask = [g is None for g in c.grads]
    c.stepped = [p for p, _ in items]
    c.sgrads = [g for g in c.grads if g is not None]
    c.gptrs = list(map(_data_ptr, c.sgrads))
    slots = [e for _, e in items]
    if any(e.p_np is None or e.g is None or _local(p) is not p or type(e.g) is not torch.Tensor
           for p, e in items):
        return None
    c.meta = [(p.dtype, p.shape, e.ptr, e.p_np.nbytes) for p, e in items]
    c.ptrs = [e.ptr for e in slots]
    c.states = [opt.state.get(p) for p in c.stepped]
    c.nstate = sum(map(len, c.states))
    c.vals = [v for st in c.states for v in st.values()]
    steps = [st.get("step") for st in c.states]
    if not items:
        c.steps = None
    elif all(isinstance(t, torch.Tensor) for t in steps) and \
            type(core)._advance is _core.Optimizer._advance:
        if len({t.dtype for t in steps}) != 1:
            return None
        c.steps = np.array([t.data_ptr() for t in steps], np.int64)
        c.like = (np.float32 if steps[0].dtype is torch.float32 else np.float64)(0)
    elif isinstance(core, _core.SGD) and all(t is None for t in steps):
        c.steps = None
    else:
        return None
    if launches:
        (key, dt), la = next(iter(launches.items()))
        c.rows, c.gaddrs, c.dt = la.rows, la.gaddrs, dt
        c.table = tables[(la.name, la.flags, dt, id(group))]
    return c



class _FastlossStep:
    """Mixin replacing ``torch.optim.<Name>.step`` by fastloss kernels."""

    _core_cls = None  # the fastloss.optim class with the same math
    max_grad_norm = None
    skip_nonfinite = False
    skipped_steps = 0
    last_grad_norm = None

    def __init__(self, params, *args, max_grad_norm=None, skip_nonfinite=False, **kwargs):
        """torch's constructor, plus fastloss.optim's ``max_grad_norm`` (clip the global
        gradient norm inside the step, grads unchanged) and ``skip_nonfinite`` (a step
        whose gradients hold NaN/Inf changes nothing; counted in ``skipped_steps``)."""
        if max_grad_norm is not None:
            max_grad_norm = _validate.real_scalar(max_grad_norm, "max_grad_norm", low=0.0,
                                                  low_open=True)
        self.max_grad_norm = max_grad_norm
        self.skip_nonfinite = _validate.boolean(skip_nonfinite, "skip_nonfinite")
        super().__init__(params, *args, **kwargs)

    def add_param_group(self, param_group):
        """torch's ``add_param_group``, then fastloss's checks (the group is not added if
        they fail)."""
        super().add_param_group(param_group)
        try:
            self._check_torch_group(self.param_groups[-1], len(self.param_groups) - 1)
        except Exception:
            self.param_groups.pop()
            raise

    def load_state_dict(self, state_dict):
        """torch's ``load_state_dict`` (tensors cast to each parameter's dtype)."""
        self.__dict__.pop("_fl_views", None)
        self.__dict__.pop("_fl_checked", None)
        self.__dict__.pop("_fl_fast", None)
        self.__dict__.pop("_fl_tables", None)
        super().load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True):
        """torch's ``zero_grad``; also drops the references to the gradients kept to
        skip re-checking an unchanged ``p.grad``."""
        super().zero_grad(set_to_none)
        if set_to_none:
            self.__dict__.pop("_fl_fast", None)
        for e in self.__dict__.get("_fl_views", {}).values():
            e.g = e.gnp = None

    def _check_torch_group(self, group, k):
        if group.get("differentiable", False):
            raise ValueError("differentiable=True is not supported by fastloss.torch.optim "
                             "(the update runs outside autograd); use torch.optim")
        core, cg = self._core_group(group)
        core._check_group(cg)
        n0 = sum(len(g["params"]) for g in self.param_groups[:k])
        for j, p in enumerate(group["params"]):
            _check_param(_local(p), f"params[{n0 + j}]")

    # -- mapping torch's groups and state onto fastloss.optim's logic ----------
    def _core_class(self, group):
        return self._core_cls

    def _core_group(self, group):
        """(logic instance, group dict with the fastloss.optim keys) for a torch group."""
        core = _rule(self._core_class(group))
        cg = {k: _plain(group.get(k, default)) for k, default in core._defaults.items()}
        if "epsilon_mode" in cg:
            cg["epsilon_mode"] = "torch"
        return core, cg

    def _plan(self):
        """Validate every group and every parameter that will be stepped; nothing is
        changed (beyond the caches of slots and gradient checks)."""
        views = self.__dict__.setdefault("_fl_views", {})
        checked = self.__dict__.setdefault("_fl_checked", {})
        opt_name = type(self).__name__
        state_get = self.state.get
        plan = []
        index = 0
        for group in self.param_groups:
            core, cg = self._core_group(group)
            sig = (group.get("differentiable", False), type(core), tuple(cg.values()))
            memo = checked.get(id(group))
            if memo is None or memo[0] is not group or memo[1] != sig:
                if sig[0]:
                    raise ValueError("differentiable=True is not supported by "
                                     "fastloss.torch.optim")
                core._check_group(cg)
                memo = checked[id(group)] = (group, sig, {})
            required = memo[2]
            items = []
            for p in group["params"]:
                g = p.grad
                if g is None:
                    index += 1
                    continue
                e = views.get(p)
                state = state_get(p)
                if e is None or _local(p).data_ptr() != e.ptr or not e.same_state(state):
                    name = f"params[{index}]"
                    lp = _local(p)
                    _check_param(lp, name)
                    if state:
                        dt = lp.dtype
                        if dt not in required:
                            tiny = np.zeros(1, np.float32 if dt is torch.float32 else np.float64)
                            required[dt] = [k for k, v in core._new_state(tiny, cg).items()
                                            if v is not None]
                        _check_state(lp, state, name, required[dt])
                    e = views[p] = _build_slot(p, lp, state)
                if g is not e.g or g.data_ptr() != e.gptr:
                    self._check_new_grad(p, g, e, f"params[{index}]", opt_name)
                index += 1
                items.append((p, e))
            gs = -1.0 if cg.get("maximize", False) else 1.0
            plan.append((group, sig, core, cg, gs, items))
        return plan

    @staticmethod
    def _check_new_grad(p, g, e, name, opt_name):
        """Check a gradient not seen before and remember it with its address."""
        lg = _local(g)
        lp = _local(p)
        _check_grad(lp, lg, name, opt_name)
        gd = lg.detach()
        keep = g  # a gradient used in place is not checked again while p.grad is it
        if not gd.is_contiguous():
            gd = gd.contiguous()
            keep = None  # a copy: made again each step
        gnp = gd.numpy().reshape(-1)
        ga = gd.data_ptr()
        nb = gnp.nbytes
        if nb and ga < e.ptr + nb and e.ptr < ga + nb:
            raise ValueError(f"{name}.grad shares memory with its parameter")
        e.g, e.gptr, e.gnp, e.gaddr = keep, g.data_ptr(), gnp, ga

    def _advance(self, core, cg, st, p):
        return core._advance(st, cg)

    def _new_slot(self, p, core, cg, views):
        """Create torch's state for a parameter's first step (zeros, as torch) and its
        slot; keeps the gradient already checked."""
        old = views[p]
        lp = _local(p)
        pd = lp.detach()
        tmp = np.empty(pd.shape, np.float32 if lp.dtype is torch.float32 else np.float64)
        state = self.state[p]
        new = core._new_state(tmp, cg)
        for key, v in new.items():
            if isinstance(v, np.ndarray):
                state[key] = torch.from_numpy(v)
            elif key in _SCALAR_KEYS:
                state[key] = torch.tensor(float(v), dtype=_scalar_dtype())
            elif v is not None:
                state[key] = v
        e = views[p] = _build_slot(p, lp, state)
        e.fresh = False
        for key, v in new.items():
            if v is None:
                e.st[key] = None
        e.g, e.gptr, e.gnp, e.gaddr = old.g, old.gptr, old.gnp, old.gaddr
        return e

    def _adopt(self, p, e, st):
        """Put buffers the kernel arguments created (first momentum step, amsgrad switched
        on) into torch's state and refresh the slot."""
        state = self.state[p]
        tensors = dict(e.tensors)
        for key, v in st.items():
            if isinstance(v, np.ndarray) and key not in tensors:
                state[key] = tensors[key] = torch.from_numpy(v)
            elif key not in state and v is not None:
                state[key] = v
        e.tensors, e.n = tuple(tensors.items()), len(state)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient (others are skipped, as
        torch); ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        fast = self.__dict__.setdefault("_fl_fast", {})
        clip = self.max_grad_norm is not None or self.skip_nonfinite
        if fast and not clip and self._step_fast(fast):
            return loss
        plan = self._plan()
        gscale = 1.0
        if clip:
            total = _sumsq([e.gnp for *_, items in plan for _, e in items])
            norm = self.last_grad_norm = math.sqrt(total)
            if self.skip_nonfinite and not math.isfinite(norm):
                self.skipped_steps += 1
                return loss
            if self.max_grad_norm is not None:
                gscale = min(1.0, self.max_grad_norm / (norm + 1e-6)) \
                    if math.isfinite(norm) else float("nan")
        views = self._fl_views
        tables = self.__dict__.setdefault("_fl_tables", {})
        copies = []
        fast.clear()
        for group, sig, core, cg, gs, items in plan:
            launches = {}
            for p, e in items:
                if e.fresh:
                    e = self._new_slot(p, core, cg, views)
                st = e.st
                sv = e.step
                if sv is not None:
                    st["step"] = int(sv)
                p_np = e.p_np
                if p_np is None:  # a non-contiguous parameter: step a contiguous copy
                    pw = _local(p).detach().contiguous()
                    copies.append((p, pw))
                    p_np = pw.numpy()
                key = (self._advance(core, cg, st, p), p_np.dtype)
                la = launches.get(key)
                if la is None:
                    name, flags, scalars = core._scalars(cg, key[0], p_np.dtype.type,
                                                         gs * gscale)
                    la = launches[key] = _engine.Launch(name, tuple(bool(f) for f in flags),
                                                        scalars)
                bufs = core._buffers(p_np, st, la.flags)
                row = e.row
                if row is None or not row.same(p_np, bufs):
                    self._adopt(p, e, st)
                    row = e.row = _engine.Row(p_np, bufs)
                la.add_native(row, e.gaddr)
                if sv is not None:
                    sv[()] = st["step"]
            for (_, dt), la in launches.items():
                la.run(tables.setdefault((la.name, la.flags, dt, id(group)), {}))
            c = None if copies else _record(self, group, sig, core, gs, items, launches, tables)
            if c is not None:
                fast[id(group)] = (group, c)
        for p, pw in copies:
            _local(p).detach().copy_(pw)
        if len(fast) != len(self.param_groups):
            fast.clear()
        self._fl_states = list(self.state.values())
        return loss

    def _step_fast(self, fast) -> bool:
        """Replay every group's last step if all qualify (``_Fast``); else False, having
        changed nothing."""
        states = self.__dict__.get("_fl_states")
        if states is None or len(self.state) != len(states) or \
                not all(map(_is, self.state.values(), states)):
            return False  # a parameter's state dict was replaced
        keys = []
        for group in self.param_groups:
            entry = fast.get(id(group))
            if entry is None or entry[0] is not group:
                return False
            c = entry[1]
            core, cg = self._core_group(group)
            if (group.get("differentiable", False), type(core), tuple(cg.values())) != c.sig:
                return False
            key = c.check(self, group, cg)
            if key is None:
                return False
            keys.append((c, core, cg, key))
        for c, core, cg, key in keys:
            c.run(core, cg, key)
        return True


class SGD(_FastlossStep, torch.optim.SGD):
    """``torch.optim.SGD`` stepped by fastloss (state: ``momentum_buffer`` when momentum != 0)."""

    _core_cls = _core.SGD


class Adagrad(_FastlossStep, torch.optim.Adagrad):
    """``torch.optim.Adagrad`` stepped by fastloss (state: ``step``, ``sum``)."""

    _core_cls = _core.Adagrad


class RMSprop(_FastlossStep, torch.optim.RMSprop):
    """``torch.optim.RMSprop`` stepped by fastloss (state: ``step``, ``square_avg``,
    ``momentum_buffer``, ``grad_avg``)."""

    _core_cls = _core.RMSprop


class Adam(_FastlossStep, torch.optim.Adam):
    """``torch.optim.Adam`` stepped by fastloss (state: ``step``, ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``); ``decoupled_weight_decay=True`` is AdamW, as in torch."""

    _core_cls = _core.Adam

    def _core_class(self, group):
        return _core.AdamW if group.get("decoupled_weight_decay", False) else _core.Adam


class AdamW(Adam, torch.optim.AdamW):
    """``torch.optim.AdamW`` stepped by fastloss (decoupled weight decay, default 1e-2)."""

    _core_cls = _core.AdamW

    def _core_class(self, group):
        return _core.AdamW if group.get("decoupled_weight_decay", True) else _core.Adam


class Adamax(_FastlossStep, torch.optim.Adamax):
    """``torch.optim.Adamax`` stepped by fastloss (state: ``step``, ``exp_avg``, ``exp_inf``)."""

    _core_cls = _core.Adamax


class NAdam(_FastlossStep, torch.optim.NAdam):
    """``torch.optim.NAdam`` stepped by fastloss (state: ``step``, ``mu_product``,
    ``exp_avg``, ``exp_avg_sq``). ``mu_product`` is torch's float scalar tensor, updated
    as torch does (``mu_product *= mu``), so both round it alike."""

    _core_cls = _core.NAdam

    def _advance(self, core, cg, st, p):
        t = st["step"] = st["step"] + 1
        mu = cg["betas"][0] * (1.0 - 0.5 * 0.96 ** (t * cg["momentum_decay"]))
        state = self.state[p]
        mp = state.get("mu_product")
        if not isinstance(mp, torch.Tensor):
            mp = state["mu_product"] = torch.tensor(
                1.0 if mp is None else float(mp), dtype=_scalar_dtype())
            e = self._fl_views[p]
            e.tensors, e.n = (*e.tensors, ("mu_product", mp)), len(state)
        mp *= mu  # as torch: in the tensor's dtype
        prod = st["mu_product"] = mp.item()
        return t, prod

"""``torch.optim`` optimizers whose step runs fastloss's fused Numba kernels.

``fastloss.torch.optim.Adam`` *is a* ``torch.optim.Adam`` (a subclass): same
constructor, defaults, param groups, hooks, ``zero_grad``, ``state_dict`` and
``load_state_dict`` (torch's own code), so it works with
``torch.optim.lr_scheduler`` and exchanges state with ``torch.optim.Adam``
both ways. Only ``step`` differs: every parameter with a gradient is updated
in place by one fused kernel call on zero-copy NumPy views of ``p``,
``p.grad`` and the state tensors (torch's keys: ``step`` as a float scalar
tensor, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``,
``sum``, ``square_avg``, ``grad_avg``, ``exp_inf``, ``mu_product``).

The update math is :mod:`fastloss.optim`'s (``_check_group``, ``_new_state``,
``_advance``, ``_scalars``, ``_arrays`` of the class of the same name); this
module only maps torch's param groups and state onto it.

Each step first validates every group and every parameter with a gradient
(CPU, float32/float64, dense gradient of the parameter's dtype and shape,
state of the right shapes) and raises before anything is changed.
``foreach`` and ``fused`` are accepted and ignored (there is one
implementation); ``differentiable=True`` is refused. Hyper-parameters given
as tensors are read as Python numbers at each step.

One keyword beyond torch's: ``max_grad_norm=`` clips inside the step by the global
gradient norm (``clip_grad_norm_``'s rule; the grads are not written; the norm is
in ``last_grad_norm``). DTensor parameters (FSDP2's ``fully_shard``) are stepped
on each rank's local shard, their state kept as DTensors placed like them (as
``torch.optim`` does), and the norm summed across shards (``_distributed``).
Under ``torch.distributed.optim.ZeroRedundancyOptimizer(params,
optimizer_class=Adam, ...)`` each rank's instance steps its partition of the
parameters, and ``max_grad_norm`` sums the norm over the partitions of ZeRO's
process group.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import _threads, _validate
from ..optim import _optimizers as _core
from ..optim._base import _clip_scale, _kernels, _sumsq
from . import _distributed

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam"]

_FLOAT = (torch.float32, torch.float64)
_SCALAR_KEYS = ("step", "mu_product")  # scalar state; every other tensor is shaped like p
_logic_cache: dict = {}


def _logic(cls):
    """A parameter-less instance of a ``fastloss.optim`` class: its per-optimizer
    methods (checks, state layout, per-step scalars, kernel arguments) without the
    NumPy param-group machinery of ``__init__``."""
    obj = _logic_cache.get(cls)
    if obj is None:
        obj = object.__new__(cls)
        obj._dummies = {}
        obj.defaults = dict(cls._defaults)
        _logic_cache[cls] = obj
    return obj


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


def _grad_sumsq(g):
    """Sum of squares of a (local) gradient tensor: fastloss's float64 chunked sum."""
    g = g.detach()
    return _sumsq((g if g.is_contiguous() else g.contiguous()).numpy().reshape(-1), True)


class _Views:
    """NumPy views of one parameter and its torch state, reused while neither changes.

    Valid while ``state`` is the same dict holding the same tensor objects and ``p``
    still points at the same memory (``p.data = ...`` or ``load_state_dict`` rebuild it).
    """

    __slots__ = ("state", "n", "ptr", "p_np", "tensors", "arrays", "scalars", "others")

    def valid(self, p, state):
        if self.state is not state or len(state) != self.n or p.data_ptr() != self.ptr:
            return False
        get = state.get
        for key, t in self.tensors.items():
            if get(key) is not t:
                return False
        return True

    def numpy_state(self):
        """The state as fastloss.optim holds it: arrays, Python scalars (read each step)."""
        st = dict(self.arrays)
        if self.others:
            st.update(self.others)
        for key, v in self.scalars.items():
            st[key] = int(v) if key == "step" else float(v)
        return st


def _build_views(p, lp, state, name, required):
    """Check a parameter's existing torch state and make its views (state tensors of
    another dtype or layout are replaced by contiguous copies of the same values).
    ``lp``: the tensor stepped, ``p`` itself or its local shard when ``p`` is a DTensor."""
    for key in required:
        if key not in state:
            raise ValueError(f"the state of {name} has no {key!r} (a state_dict of another "
                             f"optimizer?)")
    for key, v in state.items():
        if isinstance(v, torch.Tensor):
            v = _distributed.local_state(p, key, v, name)  # [distributed] DTensor state: local
            if not v.is_cpu:
                raise ValueError(f"state {key!r} of {name} is on device {v.device}")
            if key in _SCALAR_KEYS:
                if v.numel() != 1:
                    raise ValueError(f"state {key!r} of {name} has shape {tuple(v.shape)}, "
                                     f"expected a scalar")
            elif v.shape != lp.shape:
                raise ValueError(f"state {key!r} of {name} has shape {tuple(v.shape)}, the "
                                 f"parameter {tuple(lp.shape)}")
    e = _Views()
    e.tensors, e.arrays, e.scalars, e.others = {}, {}, {}, {}
    for key in list(state):
        v = state[key]
        if isinstance(v, torch.Tensor):
            lv = _distributed.local_state(p, key, v, name)  # [distributed] DTensor state: local
            if key in _SCALAR_KEYS:
                if lv.dtype not in _FLOAT or lv.dim() != 0:
                    v = state[key] = lv = lv.detach().reshape(()).to(
                        lv.dtype if lv.dtype in _FLOAT else _scalar_dtype())
                e.scalars[key] = lv.detach().numpy()
            else:
                if lv.dtype is not p.dtype or not lv.is_contiguous():
                    lv = lv.detach().to(p.dtype).contiguous()
                    v = state[key] = _distributed.wrap_like(p, lv)  # [distributed] re-wrap
                e.arrays[key] = lv.detach().numpy()
            e.tensors[key] = v
        else:
            e.others[key] = v
    e.state, e.n, e.ptr = state, len(state), lp.data_ptr()
    pd = lp.detach()
    e.p_np = pd.numpy() if pd.is_contiguous() else None
    return e


class _FastlossStep:
    """Mixin replacing ``torch.optim.<Name>.step`` by fastloss kernels."""

    _core_cls = None  # the fastloss.optim class with the same math

    def __init__(self, params, *args, max_grad_norm=None, **kwargs):
        # fused clipping by the global gradient norm (across shards for DTensor parameters)
        if max_grad_norm is not None:
            max_grad_norm = _validate.real_scalar(max_grad_norm, "max_grad_norm", low=0.0,
                                                  low_open=True)
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm = None
        # [distributed] built by ZeroRedundancyOptimizer: the norm sums over its partitions
        self._fl_norm_group = (_distributed.zero_partition_group()
                               if max_grad_norm is not None else None)
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
        super().load_state_dict(state_dict)

    def _check_torch_group(self, group, k):
        if group.get("differentiable", False):
            raise ValueError("differentiable=True is not supported by fastloss.torch.optim "
                             "(the update runs outside autograd); use torch.optim")
        core, cg = self._core_group(group)
        core._check_group(cg)
        n0 = sum(len(g["params"]) for g in self.param_groups[:k])
        for j, p in enumerate(group["params"]):
            _check_param(p, f"params[{n0 + j}]")

    # -- mapping torch's groups and state onto fastloss.optim's logic ----------
    def _core_class(self, group):
        return self._core_cls

    def _core_group(self, group):
        """(logic instance, group dict with the fastloss.optim keys) for a torch group."""
        core = _logic(self._core_class(group))
        cg = {k: _plain(group.get(k, default)) for k, default in core._defaults.items()}
        if "epsilon_mode" in cg:
            cg["epsilon_mode"] = "torch"
        return core, cg

    def _plan(self):
        """Validate every group and every parameter that will be stepped; nothing is
        changed (beyond the view cache)."""
        views = self.__dict__.setdefault("_fl_views", {})
        checked = self.__dict__.setdefault("_fl_checked", {})
        opt_name = type(self).__name__
        plan = []
        index = 0
        for group in self.param_groups:
            core, cg = self._core_group(group)
            sig = (group.get("differentiable", False), type(core),
                   tuple(cg.values()))
            memo = checked.get(id(group))
            if memo is None or memo[0] is not group or memo[1] != sig:
                if sig[0]:
                    raise ValueError("differentiable=True is not supported by "
                                     "fastloss.torch.optim")
                core._check_group(cg)
                memo = checked[id(group)] = (group, sig, {})
            required = memo[2]
            sharded = _distributed.group_has_dtensors(group["params"])  # [distributed]
            items = []
            for p in group["params"]:
                g = p.grad
                if g is None:
                    index += 1
                    continue
                name = f"params[{index}]"
                index += 1
                # [distributed] a DTensor and its grad: step this rank's shards
                lp, lg = _distributed.local_param_grad(p, g, name) if sharded else (p, g)
                _check_param(lp, name)
                _check_grad(lp, lg, name, opt_name)
                state = self.state.get(p)
                e = None
                if state:
                    e = views.get(p)
                    if e is None or not e.valid(lp, state):
                        dt = p.dtype
                        if dt not in required:
                            tiny = np.zeros(1, np.float32 if dt is torch.float32 else np.float64)
                            required[dt] = [k for k, v in core._new_state(tiny, cg).items()
                                            if v is not None]
                        e = views[p] = _build_views(p, lp, state, name, required[dt])
                items.append((p, lp, lg, e))
            if items:
                gs = -1.0 if cg.get("maximize", False) else 1.0
                plan.append((core, cg, gs, items))
        return plan

    def _advance(self, core, cg, st, p):
        return core._advance(st, cg)

    def _store(self, p, st, e):
        """Write the step count back and adopt state the kernel arguments created;
        returns True when the torch state gained or replaced an entry."""
        state = self.state[p]
        changed = False
        for key, v in st.items():
            if key == "step":
                sv = None if e is None else e.scalars.get("step")
                if sv is not None:
                    sv[()] = v
                else:
                    state["step"] = torch.tensor(float(v), dtype=_scalar_dtype())
                    changed = True
            elif isinstance(v, np.ndarray):
                if e is None or e.arrays.get(key) is not v:
                    # [distributed] state of a DTensor is a DTensor placed like it
                    state[key] = _distributed.wrap_like(p, torch.from_numpy(v))
                    changed = True
            elif key not in state and v is not None:
                state[key] = v
                changed = True
        return changed

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient (others are skipped, as
        torch); ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plan = self._plan()
        threads_set = False
        gscale = 1.0
        if self.max_grad_norm is not None:  # before the return below: ranks all take part
            _threads.numba_threads()
            threads_set = True
            # [distributed] the norm over all ranks' shards (or ZeRO's partitions)
            norm = _distributed.global_grad_norm(
                [(p, g) for _, _, _, items in plan for p, _, g, _ in items], _grad_sumsq,
                self._fl_norm_group)
            self.last_grad_norm = norm
            gscale = _clip_scale(norm, self.max_grad_norm)
        if not plan:
            return loss
        K = _kernels()
        views = self._fl_views
        for core, cg, gs, items in plan:
            gs *= gscale
            memo = {}
            for p, lp, g, e in items:
                pw = None
                if e is not None and e.p_np is not None:
                    p_np = e.p_np
                else:
                    pd = lp.detach()
                    if pd.is_contiguous():
                        p_np = pd.numpy()
                    else:
                        pw = pd.contiguous()
                        p_np = pw.numpy()
                if g.is_contiguous() and not g.requires_grad:
                    g_np = g.numpy().reshape(-1)
                else:
                    g_np = g.detach().contiguous().numpy().reshape(-1)
                st = e.numpy_state() if e is not None else core._new_state(p_np, cg)
                key = (self._advance(core, cg, st, p), p_np.dtype)
                sc = memo.get(key)
                if sc is None:
                    name, flags, scalars = core._scalars(cg, key[0], p_np.dtype.type, gs)
                    sc = memo[key] = (name, tuple(bool(f) for f in flags), scalars)
                name, flags, scalars = sc
                arrays = core._arrays(p_np, g_np, st, flags)
                n = p_np.size
                if n >= K.PARALLEL_THRESHOLD and not threads_set:
                    _threads.numba_threads()
                    threads_set = True
                K.kernel(name, flags, n)(*arrays, *scalars)
                if self._store(p, st, e):
                    views.pop(p, None)
                if pw is not None:
                    lp.detach().copy_(pw)
        return loss


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
            self._fl_views.pop(p, None)
        mp *= mu  # as torch: in the tensor's dtype
        prod = st["mu_product"] = mp.item()
        return t, prod

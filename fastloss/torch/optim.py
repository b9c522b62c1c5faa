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
(CPU, float32/float64/bfloat16/float16, dense gradient of the parameter's dtype and
shape, state of the right shapes) and raises before anything is changed.

16-bit parameters (``_storage``, ``_half_numba``): the update runs in float32 on tiles
widened from the bf16/fp16 tensors and rounds back to nearest even; the state is kept
in the parameter's dtype (as torch does) unless ``state_dtype=`` (e.g.
``torch.bfloat16`` moments for float32 parameters); ``master_weights=True`` keeps a
float32 ``'master_param'`` per 16-bit parameter, stepped in its place.
``state_dict()`` keeps every dtype and ``load_state_dict`` restores them (torch's own
load would cast the state to each parameter's dtype). What was
checked is cached per parameter (``_slots.Slot``: keyed on the tensor and its data
pointer, the state dict and its tensors) and per group (``_slots.Fast``: the last
step replayed while the same parameters, state objects and options hold; new
gradient tensors cost a few attribute reads each); the replay's checks of unchanged
tensors (identities, ``p.grad``, data pointers) are C loops (``native/_pyobjects.pxi``),
about 0.15 us a tensor.

Two keywords beyond torch's, as in ``fastloss.optim``: ``max_grad_norm=`` clips
inside the step by the global gradient norm (``clip_grad_norm_``'s rule; the grads
are not written; the norm is in ``last_grad_norm``) and ``skip_nonfinite=True``
skips a step whose gradients hold NaN/Inf (counted in ``skipped_steps``).

Sharded tensors (``_distributed``): DTensor parameters (FSDP2's ``fully_shard``) are
stepped on each rank's local shard (``_local``; such groups are not replayed), their
state kept as DTensors placed like them (as ``torch.optim`` does), and the norm
(``_grad_norm``) summed across shards. Under
``torch.distributed.optim.ZeroRedundancyOptimizer(params, optimizer_class=Adam, ...)``
each rank's instance steps its partition of the parameters, and the norm sums over
the partitions of ZeRO's process group; a non-finite norm is then seen by every rank,
so ``skip_nonfinite`` skips on all or none.

``foreach`` and ``fused`` are accepted and ignored (there is one
implementation); ``differentiable=True`` is refused. Hyper-parameters given
as tensors are read as Python numbers at each step.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch

from .. import _dtypes, _threads, _validate
from ..optim import _engine
from ..optim import _optimizers as _core
from ..optim._base import _clip_scale, _sumsq
from ..optim._base import rule as _rule
from . import _distributed, _slots
from ..optim import _storage
from ._bridge import from_numpy as _from_numpy
from ._slots import PARAM_DTYPES as _FLOAT, SCALAR_KEYS as _SCALAR_KEYS, \
    scalar_dtype as _scalar_dtype

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam"]

_Tensor, _Parameter = torch.Tensor, torch.nn.Parameter  # plain tensors' exact types


def _plain(v):
    """Hyper-parameters as Python numbers (torch allows 0-dim tensors for lr, betas)."""
    if isinstance(v, torch.Tensor):
        return v.item()
    if isinstance(v, (tuple, list)):
        return tuple(_plain(x) for x in v)
    return v


def _check_param(p, name):
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    if not p.is_cpu:
        raise ValueError(f"{name} is on device {p.device}; fastloss.torch.optim updates CPU "
                         f"tensors only (use torch.optim for other devices)")
    if p.dtype not in _FLOAT:
        raise TypeError(f"{name} has dtype {p.dtype}; fastloss.torch.optim supports float32, "
                        f"float64, bfloat16 and float16 parameters (use torch.optim for "
                        f"complex ones)")
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
    gradient: ``t`` itself, or this rank's local shard of a DTensor (same storage)."""
    if type(t) is _Parameter or type(t) is _Tensor:
        return t
    return _distributed.local(t)


def _local_pair(p, g, name):
    """``(local param, local grad)``; raises unless both are plain tensors or both
    DTensors placed alike."""
    if type(g) is _Tensor and (type(p) is _Parameter or type(p) is _Tensor):
        return p, g
    return _distributed.local_param_grad(p, g, name)


def _grad_norm(pairs, partition_group) -> float:
    """L2 norm of all gradients, ``pairs``: (parameter, flat local grad as NumPy), in
    float64 over fixed chunks, summed across DTensor shards and over ZeRO's partitions
    (``partition_group``); the same order on every rank."""
    _threads.numba_threads()
    return _distributed.global_grad_norm(pairs, partial(_sumsq, native=True),
                                         partition_group)


class _FastlossStep:
    """Mixin replacing ``torch.optim.<Name>.step`` by fastloss kernels."""

    _core_cls = None  # the fastloss.optim class with the same math
    max_grad_norm = None
    skip_nonfinite = False
    skipped_steps = 0
    last_grad_norm = None
    _fl_norm_group = None

    def __init__(self, params, *args, max_grad_norm=None, skip_nonfinite=False,
                 state_dtype=None, master_weights=False, **kwargs):
        """torch's constructor, plus fastloss.optim's ``max_grad_norm`` (clip the global
        gradient norm inside the step, grads unchanged), ``skip_nonfinite`` (a step
        whose gradients hold NaN/Inf changes nothing; counted in ``skipped_steps``),
        ``state_dtype`` (a torch or NumPy floating dtype, or ``"bfloat16"``: the state
        tensors' dtype; default each parameter's) and ``master_weights`` (a float32 copy
        of each 16-bit parameter in its state, ``'master_param'``, stepped in its
        place)."""
        if isinstance(state_dtype, torch.dtype):
            if state_dtype not in _FLOAT:
                raise TypeError(f"state_dtype must be a floating dtype (float32, float64, "
                                f"float16 or bfloat16), got {state_dtype}")
            state_dtype = _slots.np_dtype(state_dtype)
        self._fl_sdt = _storage.state_dtype_arg(state_dtype)
        self.master_weights = _validate.boolean(master_weights, "master_weights")
        if max_grad_norm is not None:
            max_grad_norm = _validate.real_scalar(max_grad_norm, "max_grad_norm", low=0.0,
                                                  low_open=True)
        self.max_grad_norm = max_grad_norm
        self.skip_nonfinite = _validate.boolean(skip_nonfinite, "skip_nonfinite")
        # built by ZeroRedundancyOptimizer: the norm sums over its partitions (found here,
        # called directly from __init__: it looks a fixed number of frames up)
        self._fl_norm_group = (_distributed.zero_partition_group()
                               if max_grad_norm is not None or self.skip_nonfinite else None)
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
        """torch's ``load_state_dict``; state tensors then take the state dtype (each
        parameter's unless ``state_dtype``), a master copy float32 from the saved values
        (torch's own cast to the parameter's dtype would round them); under
        ``master_weights`` a 16-bit parameter without one gets it from its values."""
        self.__dict__.pop("_fl_views", None)
        self.__dict__.pop("_fl_checked", None)
        self.__dict__.pop("_fl_fast", None)
        self.__dict__.pop("_fl_tables", None)
        saved = state_dict.get("state", {}) if isinstance(state_dict, dict) else {}
        ids = [i for g in state_dict.get("param_groups", ()) for i in g.get("params", ())] \
            if isinstance(state_dict, dict) else []
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            st = self.state.get(p)
            if not st:
                continue
            lp = _local(p)
            tsdt = self._sdt(lp.dtype)
            master = self.master_weights and lp.dtype.itemsize == 2
            for key in list(st):
                v = st[key]
                if key in _SCALAR_KEYS or not isinstance(v, torch.Tensor):
                    continue
                if key == _storage.MASTER and not master:
                    del st[key]
                    continue
                src = saved[i][key]  # (torch rounded it to the param's dtype)
                want = torch.float32 if key == _storage.MASTER else tsdt
                if v.dtype is not want or src.dtype is not want:
                    st[key] = _distributed.wrap_like(p, _distributed.local(src).detach().to(
                        dtype=want, device=lp.device, copy=True))
            if master and _storage.MASTER not in st:
                st[_storage.MASTER] = _distributed.wrap_like(p, lp.detach().float().clone())

    def zero_grad(self, set_to_none: bool = True):
        """torch's ``zero_grad``; also drops the references to the gradients kept to
        skip re-checking an unchanged ``p.grad``."""
        super().zero_grad(set_to_none)
        if set_to_none:  # the replays stay; their next check reads every gradient anew
            for _, c in self.__dict__.get("_fl_fast", {}).values():
                c.forget_grads()
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
            _storage.buffer_dtype(_slots.np_dtype(p.dtype), self._fl_sdt)

    @property
    def state_dtype(self):
        """The state tensors' dtype (torch), or None: each parameter's own."""
        return None if self._fl_sdt is None else _slots.torch_dtype(self._fl_sdt)

    def _sdt(self, dt):
        """The torch dtype of the state tensors of a parameter of torch dtype ``dt``."""
        return _slots.torch_dtype(_storage.buffer_dtype(_slots.np_dtype(dt), self._fl_sdt))

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
                lp = _local(p)
                if e is None or lp.data_ptr() != e.ptr or not e.same_state(state) or \
                        (lp.numel(), lp.is_contiguous()) != e.layout:
                    name = f"params[{index}]"
                    _check_param(lp, name)
                    if e is not None and lp.data_ptr() != e.ptr and state and \
                            _storage.MASTER in state and lp.shape == state[_storage.MASTER].shape:
                        # new weights (``p.data = ...``): their own float32 master
                        state[_storage.MASTER] = _distributed.wrap_like(
                            p, lp.detach().float().contiguous())
                    if state:
                        dt = lp.dtype
                        if dt not in required:
                            tiny = np.zeros(1, _slots.np_dtype(dt))
                            required[dt] = [k for k, v in core._new_state(tiny, cg).items()
                                            if v is not None]
                        _slots.check_state(p, lp, state, name, required[dt])
                    e = views[p] = _slots.build_slot(p, lp, state, self._sdt(lp.dtype))
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
        lp, lg = _local_pair(p, g, name)
        _check_grad(lp, lg, name, opt_name)
        gd = lg.detach()
        # a plain gradient used in place is not checked again while p.grad is it
        keep = g if lg is g else None
        if not gd.is_contiguous():
            gd = gd.contiguous()
            keep = None  # a copy: made again each step
        gnp = _slots.np_view(gd).reshape(-1)
        ga = gd.data_ptr()
        nb = gnp.nbytes
        if nb and ga < e.ptr + nb and e.ptr < ga + nb:
            raise ValueError(f"{name}.grad shares memory with its parameter")
        e.g, e.gptr, e.gnp, e.gaddr = keep, lg.data_ptr(), gnp, ga

    def _advance(self, core, cg, st, p):
        return core._advance(st, cg)

    def _new_slot(self, p, core, cg, views):
        """Create torch's state for a parameter's first step (zeros, as torch) and its
        slot; keeps the gradient already checked."""
        old = views[p]
        lp = _local(p)
        pd = lp.detach()
        state = self.state[p]
        tsdt = self._sdt(lp.dtype)
        new = _storage.fresh_state(core, _slots.np_view(pd.contiguous()), cg, self._fl_sdt,
                                   self.master_weights)
        for key, v in new.items():
            if isinstance(v, np.ndarray):
                state[key] = _distributed.wrap_like(p, _from_numpy(v))
            elif key in _SCALAR_KEYS:
                state[key] = torch.tensor(float(v), dtype=_scalar_dtype())
            elif v is not None:
                state[key] = v
        e = views[p] = _slots.build_slot(p, lp, state, tsdt)
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
                state[key] = tensors[key] = _distributed.wrap_like(p, _from_numpy(v))
            elif key not in state and v is not None:
                state[key] = v
        e.tensors, e.n, e.tptrs = tuple(tensors.items()), len(state), None

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
            # every rank of a sharded or ZeRO run gets here each step (the all-reduces)
            norm = self.last_grad_norm = _grad_norm(
                [(p, e.gnp) for *_, items in plan for p, e in items], self._fl_norm_group)
            if self.skip_nonfinite and not math.isfinite(norm):
                self.skipped_steps += 1
                return loss
            if self.max_grad_norm is not None:
                gscale = _clip_scale(norm, self.max_grad_norm)
        views = self._fl_views
        tables = self.__dict__.setdefault("_fl_tables", {})
        copies = []
        fast.clear()
        replayable = type(self)._advance is _FastlossStep._advance
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
                    p_np = _slots.np_view(pw)
                pdt = p_np.dtype
                sdt = _storage.buffer_dtype(pdt, self._fl_sdt)
                master = st.get(_storage.MASTER) if pdt.itemsize == 2 else None
                key = (self._advance(core, cg, st, p), (pdt, sdt, master is not None))
                la = launches.get(key)
                if la is None:
                    name, flags, scalars = core._scalars(cg, key[0], _dtypes.compute_dtype(
                        pdt).type, gs * gscale)
                    la = launches[key] = _engine.Launch(name, tuple(bool(f) for f in flags),
                                                        scalars)
                kp, out = (p_np, None) if master is None else (master, p_np)
                bufs = core._buffers(kp, st, la.flags, sdt)
                row = e.row
                if row is None or not row.same(kp, bufs, out):
                    self._adopt(p, e, st)
                    row = e.row = _engine.Row(kp, bufs, type(la.scalars[0]), out)
                la.add_native(row, e.gaddr)
                if sv is not None:
                    sv[()] = st["step"]
            for (_, sto), la in launches.items():
                la.run(tables.setdefault((la.name, la.flags, sto, id(group)), {}))
            c = None if copies or not replayable else _slots.record(
                self.state, group, sig, core, gs, items, launches, tables)
            if c is not None:
                fast[id(group)] = (group, c)
        for p, pw in copies:
            _local(p).detach().copy_(pw)
        if len(fast) != len(self.param_groups):
            fast.clear()
        self._fl_states = list(self.state.values())
        return loss

    def _step_fast(self, fast) -> bool:
        """Replay every group's last step if all qualify (``_slots.Fast``); else False, having
        changed nothing."""
        states = self.__dict__.get("_fl_states")
        if states is None or not _slots._objs().same_objects(list(self.state.values()), states):
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
            e.tensors, e.n, e.tptrs = (*e.tensors, ("mu_product", mp)), len(state), None
        mp *= mu  # as torch: in the tensor's dtype
        prod = st["mu_product"] = mp.item()
        return t, prod

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
"""
from __future__ import annotations

import numpy as np
import torch

from .. import _threads
from ..optim import _optimizers as _core
from ..optim._base import _kernels

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam"]

_FLOAT = (torch.float32, torch.float64)
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
    if p.device.type != "cpu":
        raise ValueError(f"{name} is on device {p.device}; fastloss.torch.optim updates CPU "
                         f"tensors only (use torch.optim for other devices)")
    if p.dtype not in _FLOAT:
        raise TypeError(f"{name} has dtype {p.dtype}; fastloss.torch.optim supports float32 "
                        f"and float64 parameters (cast the model with .float(), or use "
                        f"torch.optim for float16/bfloat16/complex)")
    if p.layout != torch.strided:
        raise ValueError(f"{name} has layout {p.layout}; only dense (strided) parameters are "
                         f"supported")


class _FastlossStep:
    """Mixin replacing ``torch.optim.<Name>.step`` by fastloss kernels."""

    _core_cls = None  # the fastloss.optim class with the same math

    def __init__(self, params, *args, **kwargs):
        super().__init__(params, *args, **kwargs)
        for k, group in enumerate(self.param_groups):
            self._check_torch_group(group, k)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if hasattr(self, "_fl_ready"):  # after __init__: check the new group now
            try:
                self._check_torch_group(self.param_groups[-1], len(self.param_groups) - 1)
            except Exception:
                self.param_groups.pop()
                raise
        # (during __init__ torch adds the groups before defaults are final; checked there)

    def _check_torch_group(self, group, k):
        self._fl_ready = True
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
        """Validate every group and every parameter that will be stepped; nothing changes."""
        plan = []
        index = 0
        for group in self.param_groups:
            if group.get("differentiable", False):
                raise ValueError("differentiable=True is not supported by fastloss.torch.optim")
            core, cg = self._core_group(group)
            core._check_group(cg)
            required = {}
            items = []
            for p in group["params"]:
                name = f"params[{index}]"
                index += 1
                g = p.grad
                if g is None:
                    continue
                _check_param(p, name)
                if g.layout != torch.strided:
                    raise ValueError(f"{name} has a sparse gradient ({g.layout}); "
                                     f"{type(self).__name__} needs dense gradients")
                if g.device != p.device:
                    raise ValueError(f"{name}.grad is on device {g.device}, its parameter on "
                                     f"{p.device}")
                if g.dtype != p.dtype:
                    raise TypeError(f"{name}.grad has dtype {g.dtype}, its parameter {p.dtype}")
                if g.shape != p.shape:
                    raise ValueError(f"{name}.grad has shape {tuple(g.shape)}, its parameter "
                                     f"{tuple(p.shape)}")
                state = self.state.get(p)
                if state:
                    dt = p.dtype
                    if dt not in required:
                        tiny = np.zeros(1, np.float32 if dt == torch.float32 else np.float64)
                        required[dt] = [k for k, v in core._new_state(tiny, cg).items()
                                        if v is not None]
                    for key in required[dt]:
                        if key not in state:
                            raise ValueError(f"the state of {name} has no {key!r} (a state_dict "
                                             f"of another optimizer?)")
                    for key, v in state.items():
                        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                            raise ValueError(f"state {key!r} of {name} has shape "
                                             f"{tuple(v.shape)}, the parameter {tuple(p.shape)}")
                        if isinstance(v, torch.Tensor) and v.device.type != "cpu":
                            raise ValueError(f"state {key!r} of {name} is on device {v.device}")
                items.append((p, g))
            if items:
                gs = -1.0 if cg.get("maximize", False) else 1.0
                plan.append((core, cg, gs, items))
        return plan

    def _numpy_state(self, core, cg, p, p_np):
        """The parameter's state as fastloss.optim holds it (NumPy views of torch's
        tensors; Python numbers for scalars), and the views made."""
        state = self.state[p]
        if not state:
            return core._new_state(p_np, cg), {}
        st, views = {}, {}
        for key, v in state.items():
            if isinstance(v, torch.Tensor):
                if v.dim() == 0:
                    st[key] = int(v.item()) if key == "step" else v.item()
                    continue
                if v.dtype != p.dtype or not v.is_contiguous():
                    v = state[key] = v.to(p.dtype).contiguous()  # same values, kernel layout
                st[key] = views[key] = v.numpy()
            else:
                st[key] = v
        return st, views

    def _advance(self, core, cg, st, p):
        return core._advance(st, cg)

    def _store(self, p, st, views):
        """Write step counts back and adopt buffers the kernel arguments created."""
        state = self.state[p]
        for key, v in st.items():
            if key == "step":
                old = state.get("step")
                if isinstance(old, torch.Tensor):
                    old.fill_(float(v))
                else:
                    state["step"] = torch.tensor(float(v), dtype=_scalar_dtype())
            elif isinstance(v, np.ndarray):
                if views.get(key) is not v:
                    state[key] = torch.from_numpy(v)
            elif key not in state and v is not None:
                state[key] = v

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient (others are skipped, as
        torch); ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plan = self._plan()
        if not plan:
            return loss
        K = _kernels()
        threads_set = False
        for core, cg, gs, items in plan:
            memo = {}
            for p, g in items:
                pd = p.detach()
                contiguous = pd.is_contiguous()
                pw = pd if contiguous else pd.contiguous()
                p_np = pw.numpy()
                g_np = g.detach()
                if not g_np.is_contiguous():
                    g_np = g_np.contiguous()
                g_np = g_np.numpy().reshape(-1)
                st, views = self._numpy_state(core, cg, p, p_np)
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
                self._store(p, st, views)
                if not contiguous:
                    pd.copy_(pw)
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
        mp *= mu
        prod = st["mu_product"] = mp.item()
        return t, prod

"""The caches behind ``fastloss.torch.optim``'s step: per parameter (``Slot``) and per group
(``Fast``).

A ``Slot`` holds what was checked about one parameter (its local tensor's NumPy view and
address, its torch state and a NumPy mirror of it, the last gradient seen) so a step
re-checks only what changed. A ``Fast`` replays a param group's last native launch
while the same parameters, state objects, options and step counts hold (plain CPU
tensors only: groups holding DTensors always take the general path).

For a DTensor parameter (FSDP2) the slot views its local shard, and its state tensors
are DTensors placed like it (``_distributed.local_state`` / ``wrap_like``), except the
scalar ``step`` and ``mu_product``, plain tensors as torch keeps them.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import _dtypes
from ..optim import _engine
from ..optim._storage import MASTER
from ..optim import _optimizers as _core
from . import _distributed

FLOAT = (torch.float32, torch.float64)
PARAM_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_NP = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
       torch.float16: np.dtype(np.float16)}
SCALAR_KEYS = ("step", "mu_product")  # scalar state; every other tensor is shaped like p
_data_ptr = torch.Tensor.data_ptr
_FORGOTTEN = object()  # a dropped gradient: never ``is`` a current one
_T = torch.Tensor


def np_dtype(dt):
    """The NumPy dtype of a torch floating dtype (``ml_dtypes.bfloat16`` for bfloat16)."""
    return _NP[dt] if dt is not torch.bfloat16 else _dtypes.bfloat16()


def torch_dtype(dt):
    """The torch dtype of a NumPy floating dtype."""
    return torch.bfloat16 if _dtypes.is_bfloat16(dt) else next(
        k for k, v in _NP.items() if v == dt)


def np_view(t):
    """A NumPy view of a contiguous CPU tensor (bfloat16 through its bits)."""
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(_dtypes.bfloat16())
    return t.numpy()


def scalar_dtype():
    """The dtype torch gives ``state['step']`` (and NAdam's ``mu_product``)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Slot:
    """One parameter as the kernels see it, reused while nothing changed: its NumPy
    view, its torch state and a NumPy mirror of that state (``st``: the arrays are views
    of the (local) state tensors, ``step`` a Python number read from the tensor each
    step), and the last gradient seen with its address.

    Valid while ``state`` is the same dict holding the same tensor objects and the
    parameter still points at the same memory with the same size and contiguity
    (``layout``; ``p.data = ...`` or ``load_state_dict`` rebuild it); the gradient's checks are redone when ``p.grad`` is another tensor or
    points elsewhere (always for a DTensor gradient: ``g`` is then None).
    """

    __slots__ = ("state", "n", "ptr", "layout", "p_np", "tensors", "tptrs", "st", "step", "row", "g", "gptr",
                 "gaddr", "gnp", "fresh")

    def same_state(self, state):
        if state is not self.state:
            return False
        if state is None:
            return True
        if len(state) != self.n:
            return False
        get = state.get
        ptrs = self.tptrs
        if ptrs is None:  # (tensors just added by the step)
            ptrs = self.tptrs = tensor_ptrs(self.tensors)
        for (key, t), ptr in zip(self.tensors, ptrs):
            if get(key) is not t:
                return False
            # (`t.data = ...` moves the memory)
            if (_data_ptr(t) if type(t) is _T else _data_ptr(_distributed.local(t))) != ptr:
                return False
        return True


def tensor_ptrs(tensors):
    """The data pointers of a slot's state tensors (their local shards)."""
    return [_data_ptr(_distributed.local(t)) for _, t in tensors]


def check_state(p, lp, state, name, required):
    """Raise before anything changes if the torch state of parameter ``p`` (``lp``: its
    local tensor) cannot be stepped."""
    for key in required:
        if key not in state:
            raise ValueError(f"the state of {name} has no {key!r} (a state_dict of another "
                             f"optimizer?)")
    for key, v in state.items():
        if isinstance(v, torch.Tensor):
            v = _distributed.local_state(p, key, v, name)
            if not v.is_cpu:
                raise ValueError(f"state {key!r} of {name} is on device {v.device}")
            if key in SCALAR_KEYS:
                if v.numel() != 1:
                    raise ValueError(f"state {key!r} of {name} has shape {tuple(v.shape)}, "
                                     f"expected a scalar")
            elif v.shape != lp.shape:
                raise ValueError(f"state {key!r} of {name} has shape {tuple(v.shape)}, the "
                                 f"parameter {tuple(lp.shape)}")


def build_slot(p, lp, state, sdt=None):
    """A slot for a checked parameter ``p`` (``lp``: its local tensor) and its checked
    state (state tensors of another dtype than ``sdt`` (torch dtype; None: ``p``'s; a
    master copy: float32) or another layout are replaced by contiguous copies of the
    same values, placed like ``p``)."""
    e = Slot()
    e.st, tensors = {}, []
    e.step = None
    if state is not None:
        for key in list(state):
            v = state[key]
            if isinstance(v, torch.Tensor):
                lv = _distributed.local(v)  # checked: placed like p, or a plain scalar
                if key in SCALAR_KEYS:
                    if lv.dtype not in FLOAT or lv.dim() != 0:
                        v = state[key] = lv = lv.detach().reshape(()).to(
                            lv.dtype if lv.dtype in FLOAT else scalar_dtype())
                    a = lv.detach().numpy()
                    if key == "step":
                        e.step = a
                        e.st[key] = 0
                    else:
                        e.st[key] = float(a)
                else:
                    want = torch.float32 if key == MASTER else (sdt or lp.dtype)
                    if lv.dtype is not want or not lv.is_contiguous():
                        lv = lv.detach().to(want).contiguous()
                        v = state[key] = _distributed.wrap_like(p, lv)
                    e.st[key] = np_view(lv.detach())
                tensors.append((key, v))
            else:
                e.st[key] = v
    e.n = 0 if state is None else len(state)
    e.fresh = not state  # torch's rule: an empty state is a first step
    e.state, e.tensors = state, tuple(tensors)
    e.tptrs = tensor_ptrs(e.tensors)
    e.ptr = lp.data_ptr()
    e.layout = (lp.numel(), lp.is_contiguous())
    pd = lp.detach()
    e.p_np = np_view(pd) if pd.is_contiguous() else None
    e.row = e.g = e.gnp = None
    e.gptr = e.gaddr = 0
    return e


class Fast:
    """A param group's last step, replayed while nothing that was checked changed.

    Kept after a step of the general path that used one kernel variant for the group
    (one dtype, no copies, no DTensors) and whose optimizer's per-step key is the step
    count (Adam, AdamW, Adagrad, RMSprop, Adamax) or constant (SGD). Valid while the group
    holds the same parameters at the same addresses (and, when the gradients are new
    tensors, still contiguous), the same ones have gradients
    (plain CPU tensors, contiguous, of the parameter's dtype and shape: new gradient
    tensors are checked here, a few attribute reads each), the state dicts are the
    same holding the same objects, the options are the same and every step count is
    equal (read in one native call). Anything else goes through the general path.
    """

    __slots__ = ("sig", "objs", "params", "grads", "mask", "stepped", "sgrads", "gptrs",
                 "meta", "ptrs", "states", "vals", "steps", "like", "rows", "gaddrs", "table",
                 "cdt", "gs")

    def check(self, opt, group, cg):
        """Return the step key (or () when nothing has a gradient), or None to fall back;
        changes nothing but this cache. The per-tensor passes are C loops (``_objs()``:
        identities, data pointers)."""
        X = self.objs
        ps = group["params"]
        if type(ps) is not list or not X.same_objects(ps, self.params):
            return None
        grads = X.grads_if_new(ps, self.grads)
        if grads is None:
            if not X.same_addresses(self.sgrads, self.gptrs, _data_ptr):  # moved: check again
                return None
        else:
            if [g is None for g in grads] != self.mask:
                return None
            sgrads = [g for g in grads if g is not None]
            # (p contiguous: `p.data = p.data.t()` keeps the address)
            found = X.new_grad_addresses(sgrads, self.stepped, self.meta, torch.Tensor,
                                         torch.strided)
            if found is None:
                return None
            gptrs, gaddrs = found
            self.grads, self.sgrads, self.gaddrs = grads, sgrads, gaddrs
            self.gptrs = np.array(gptrs, np.int64)
        if not self.stepped:
            return ()
        if not X.same_addresses(self.stepped, self.ptrs, _data_ptr) or \
                not X.same_dict_values(self.states, self.vals):
            return None  # (the same dicts: checked once for all groups by the caller)
        if self.steps is None:
            return False
        t = _engine.common_value(self.steps, self.like)
        return None if t != t else int(t) + 1

    def forget_grads(self):
        """Drop the gradients kept (``zero_grad``): the next ``check`` reads and checks
        every ``p.grad`` as new (a sentinel no gradient is)."""
        self.grads = [_FORGOTTEN] * len(self.params)
        self.sgrads = []
        self.gaddrs = []

    def run(self, core, cg, key):
        if key == ():
            return
        name, flags, scalars = core._scalars(cg, key, self.cdt, self.gs)
        la = _engine.Launch(name, tuple(bool(f) for f in flags), scalars)
        la.rows, la.gaddrs = self.rows, self.gaddrs
        la.run(self.table)
        if self.steps is not None:
            _engine.store_value(self.steps, self.like.dtype.type(key))


def _objs():
    """The compiled identity checks (``native/_pyobjects.pxi``), or None without the
    extension (then no group is replayed)."""
    from .. import _backend
    return _backend.kernels


def record(state, group, sig, core, gs, items, launches, tables):
    """A ``Fast`` for ``group`` after a general step (``state``: the optimizer's), or None
    when it does not qualify (the caller has checked the optimizer's ``_advance`` is the
    plain one)."""
    objs = _objs()
    if objs is None or len(launches) > 1 or type(group["params"]) is not list or \
            _distributed.group_has_dtensors(group["params"]):
        return None
    c = Fast()
    c.sig, c.gs, c.objs = sig, gs, objs
    c.params = list(group["params"])
    c.grads = [p.grad for p in c.params]
    c.mask = [g is None for g in c.grads]
    c.stepped = [p for p, _ in items]
    c.sgrads = [g for g in c.grads if g is not None]
    c.gptrs = np.array(list(map(_data_ptr, c.sgrads)), np.int64)
    slots = [e for _, e in items]
    if any(e.p_np is None or e.g is None or type(e.g) is not torch.Tensor for e in slots):
        return None
    c.meta = [(p.dtype, p.shape, e.ptr, e.p_np.nbytes) for p, e in items]
    c.ptrs = np.array([e.ptr for e in slots], np.int64)
    c.states = [state.get(p) for p in c.stepped]
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
        (key, sto), la = next(iter(launches.items()))
        c.rows, c.gaddrs, c.cdt = la.rows, la.gaddrs, type(la.scalars[0])
        c.table = tables[(la.name, la.flags, sto, id(group))]
    return c

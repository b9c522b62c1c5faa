"""Functional core: every optimizer as a pair ``init`` / ``update`` (as in Optax).

::

    from fastloss.optim import functional as F
    state = F.init("adam", params)                        # one dict per param
    for grads in batches:
        F.update("adam", params, grads, state, {"lr": 1e-3})

``opt`` names an optimizer (``"adam"``, ``"adamw"``, ``"sgd"``, ... or the class
``fastloss.optim.Adam``); ``hyperparams`` are its options (missing ones take the
class defaults). The pair holds no hidden state: everything a step needs is in
its arguments. Arrays are updated in place (params and state buffers; no copies,
as the rest of fastloss), so ``update`` returns the same ``state`` list.

The optimizer classes (``fastloss.optim.Adam``...), their torch subclasses
(``fastloss.torch.optim``) and the ``Arena`` are shells over the same two pieces:
each optimizer's logic (its class's ``_new_state``, ``_advance``, ``_scalars``,
``_buffers``) and ``_base.apply``, which steps all tensors that share a kernel
variant in one native call. ``state`` is the ``'state'`` of the class's
``state_dict()`` as a list, so the two convert freely.

Validation is the classes': params, grads, state buffers and hyper-parameters are
all checked before anything is written.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping

import numpy as np

from .. import _backend, _dtypes, _validate
from . import _optimizers, _storage
from ._base import Optimizer, apply, check_grads, numba_available, param_addresses, rule

__all__ = ["init", "update", "OPTIMIZERS"]

_DEFAULTS: dict = {}
OPTIMIZERS = {name.lower(): getattr(_optimizers, name) for name in _optimizers.__all__}


def _cls(opt):
    if isinstance(opt, str):
        cls = OPTIMIZERS.get(opt.lower())
        if cls is None:
            raise ValueError(f"unknown optimizer {opt!r}; choose from {sorted(OPTIMIZERS)}")
        return cls
    if isinstance(opt, type) and issubclass(opt, Optimizer) and opt is not Optimizer:
        return opt
    raise TypeError(f"opt must be an optimizer name or class, got {opt!r}")


def _defaults(cls):
    """The class's option defaults as its constructor states them (AdamW's weight decay)."""
    d = _DEFAULTS.get(cls)
    if d is None:
        sig = inspect.signature(cls.__init__).parameters
        d = _DEFAULTS[cls] = {k: sig[k].default if k in sig else v
                              for k, v in cls._defaults.items()}
    return d


def _hyper(cls, hyperparams):
    hp = dict(_defaults(cls))
    if hyperparams is None:
        hyperparams = {}
    if not isinstance(hyperparams, Mapping):
        raise TypeError(f"hyperparams must be a dict, got {type(hyperparams).__name__}")
    unknown = set(hyperparams) - set(hp)
    if unknown:
        raise TypeError(f"{cls.__name__} got unknown options {sorted(unknown)}")
    hp.update(hyperparams)
    if isinstance(hp.get("betas"), list):
        hp["betas"] = tuple(hp["betas"])
    rule(cls)._check_group(hp)
    return hp


def _params(params):
    if isinstance(params, np.ndarray) or not isinstance(params, Iterable):
        raise TypeError("params must be a list of arrays")
    params = list(params)
    for k, p in enumerate(params):
        Optimizer._check_param(p, f"params[{k}]")
    return params


def init(opt, params, *, state_dtype=None, master_weights=False, **hyperparams) -> list:
    """The initial state of ``opt`` for ``params``: a list of dicts, one per param
    (zeros, ``step`` 0, as the class's fresh state; buffers in ``state_dtype``, default
    each param's dtype; ``master_weights``: a float32 copy of each 16-bit param, stepped
    in its place, as the classes' options)."""
    cls = _cls(opt)
    hp = _hyper(cls, hyperparams)
    core = rule(cls)
    sdt = _storage.state_dtype_arg(state_dtype)
    master = _validate.boolean(master_weights, "master_weights")
    params = _params(params)
    for p in params:
        _storage.buffer_dtype(p.dtype, sdt)
    return [_storage.fresh_state(core, p, hp, sdt, master) for p in params]


def _check_state(params, state):
    if not isinstance(state, list) or len(state) != len(params):
        raise ValueError(f"state must be a list of {len(params)} dicts (one per param)")
    for k, (p, st) in enumerate(zip(params, state)):
        if not isinstance(st, dict):
            raise TypeError(f"state[{k}] must be a dict, got {type(st).__name__}")
        for key, v in st.items():
            if isinstance(v, np.ndarray) and (v.shape != p.shape or
                                              not _dtypes.is_float(v.dtype) or
                                              not v.flags.c_contiguous or
                                              not v.flags.writeable):
                raise ValueError(f"state[{k}][{key!r}] must be a writable C-contiguous "
                                 f"floating array of the param's shape {p.shape}")


def update(opt, params, grads, state, hyperparams=None, step=None, *, backend=None,
           state_dtype=None) -> list:
    """One step of ``opt`` on ``params`` with ``grads``; returns ``state`` (updated in
    place, like ``params``).

    ``step``: the step number of this update (1 for the first) for every param, or None
    to advance each param's own count (``state[k]['step']``). ``state_dtype``: the
    dtype of the state buffers (checked, and given to those made on first use); default
    the one ``init`` used, read from the state. A float32 ``'master_param'`` in a 16-bit
    param's state is stepped in its place (``init(master_weights=True)``). Everything
    is validated before anything is written.
    """
    cls = _cls(opt)
    hp = _hyper(cls, hyperparams)
    params = _params(params)
    _check_state(params, state)
    sdt = _storage.state_dtype_arg(state_dtype)
    if sdt is None:
        sdt = _storage.infer_state_dtype(params, state)
    for p in params:
        _storage.buffer_dtype(p.dtype, sdt)
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
            raise ValueError(f"step must be a positive integer or None, got {step!r}")
        if not all("step" in st for st in state):
            raise ValueError(f"{cls.__name__} keeps no step count; pass step=None")
    name = _backend.resolve(backend, native_ok=numba_available() if backend != "numpy"
                            else None)
    native = name == "native"
    flat, gaddrs = check_grads(params, grads, native,
                               param_addresses(params) if native else None)
    saved = [st["step"] for st in state] if step is not None else None
    if step is not None:
        for st in state:
            st["step"] = int(step) - 1
    try:
        apply(rule(cls), hp, params, range(len(params)), flat, gaddrs, state, 1.0, {},
              {} if native else None, sdt)
    except BaseException:
        if saved is not None:  # (apply restored the rest)
            for st, t in zip(state, saved):
                st["step"] = t
        raise
    return state

"""The optimizers: PyTorch's names, defaults and semantics.

Each class states its defaults, its hyper-parameter checks, its state
buffers and the scalars its kernel needs; ``_base.Optimizer`` does the rest.
Per-step scalars (bias corrections, decayed learning rates) are computed in
Python float64 and cast once to the parameter dtype; the kernels then stay in
that dtype.
"""
from __future__ import annotations

import math

from .. import _validate
from ._base import Optimizer, check_betas, check_flags, check_nonneg, lerp_weights
from ._storage import empty, full, zeros

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "Lion"]

_EXTRA = ("backend", "max_grad_norm", "skip_nonfinite", "state_dtype", "master_weights")


def _split(kwargs):
    return {k: kwargs.pop(k) for k in _EXTRA if k in kwargs}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``d = g + wd p``; with momentum ``buf = d`` (first step) else
    ``buf = momentum buf + (1 - dampening) d``; ``d = d + momentum buf``
    (nesterov) or ``buf``; ``p -= lr d``. (The seeds write momentum as
    ``v = gamma v + eta g; W -= v``: the same update for a constant lr,
    PyTorch keeps lr outside the buffer.)
    """

    _defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                     maximize=False)
    _constant_key = True

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, **kw):
        extra = _split(kw)
        if kw:
            raise TypeError(f"SGD got unexpected arguments {sorted(kw)}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize), **extra)

    def _check_group(self, group):
        super()._check_group(group)
        check_nonneg(group, "momentum", "weight_decay")
        _validate.real_scalar(group["dampening"], "dampening")
        check_flags(group, "nesterov", "maximize")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _new_state(self, p, group, sdt=None):
        return {"momentum_buffer": None}

    def _advance(self, st, group):
        return group["momentum"] != 0 and st["momentum_buffer"] is None  # first momentum step

    def _scalars(self, group, first, dt, gscale):
        mom, wd = group["momentum"], group["weight_decay"]
        flags = (wd != 0, mom != 0, first, bool(group["nesterov"]))
        return "sgd", flags, (dt(group["lr"]), dt(mom), dt(1 - group["dampening"]), dt(wd),
                              dt(gscale))

    def _buffers(self, p, st, flags, sdt=None):
        if not flags[1]:
            return (None,)
        if flags[2]:
            st["momentum_buffer"] = empty(p, sdt)
        return (st["momentum_buffer"],)


class Adagrad(Optimizer):
    """AdaGrad: ``d = g + wd p; G += d^2; p -= lr_t d / (sqrt(G) + eps)`` with
    ``lr_t = lr / (1 + (t - 1) lr_decay)``.

    ``epsilon_mode='keras'`` reproduces Keras 3: ``p -= lr_t d / sqrt(G + eps)`` (Keras'
    defaults: ``initial_accumulator_value=0.1``, ``eps=1e-7``, lr 1e-3)."""

    _defaults = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                     eps=1e-10, maximize=False, epsilon_mode="torch")
    _keras_modes = ("torch", "keras")

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, maximize=False,
                 epsilon_mode="torch", **kw):
        extra = _split(kw)
        if kw:
            raise TypeError(f"Adagrad got unexpected arguments {sorted(kw)}")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize, epsilon_mode=epsilon_mode),
                         **extra)

    def _check_group(self, group):
        super()._check_group(group)
        check_nonneg(group, "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
        check_flags(group, "maximize")

    def _new_state(self, p, group, sdt=None):
        return {"step": 0, "sum": full(p, group["initial_accumulator_value"], sdt)}

    def _scalars(self, group, t, dt, gscale):
        clr = group["lr"] / (1 + (t - 1) * group["lr_decay"])
        wd = group["weight_decay"]
        return "adagrad", (wd != 0, group["epsilon_mode"] == "keras"), (
            dt(clr), dt(wd), dt(group["eps"]), dt(gscale))

    def _buffers(self, p, st, flags, sdt=None):
        return (st["sum"],)


class RMSprop(Optimizer):
    """RMSProp: ``E = alpha E + (1 - alpha) d^2``; centered: ``a = lerp(a, d, 1 - alpha)``,
    ``var = E - a^2``; ``den = sqrt(var) + eps``; momentum: ``buf = momentum buf + d/den``,
    ``p -= lr buf``; else ``p -= lr d/den``.

    ``epsilon_mode='keras'`` reproduces tf.keras (TF2) / Keras 3: ``den = sqrt(var + eps)``
    and lr inside the momentum buffer (``buf = momentum buf + lr d/den; p -= buf``).
    Standalone Keras <= 2.3 (``keras.optimizers.RMSprop(lr, rho, epsilon)``, the seeds)
    placed eps like PyTorch: use the default ``'torch'`` mode with ``eps=1e-7``.
    """

    _defaults = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                     centered=False, maximize=False, epsilon_mode="torch")
    _keras_modes = ("torch", "keras")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False, epsilon_mode="torch", **kw):
        extra = _split(kw)
        if kw:
            raise TypeError(f"RMSprop got unexpected arguments {sorted(kw)}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize,
                                      epsilon_mode=epsilon_mode), **extra)

    def _check_group(self, group):
        super()._check_group(group)
        check_nonneg(group, "alpha", "eps", "weight_decay", "momentum")
        check_flags(group, "centered", "maximize")

    def _new_state(self, p, group, sdt=None):
        return {"step": 0, "square_avg": zeros(p, sdt)}

    def _scalars(self, group, t, dt, gscale):
        w, omw, small = lerp_weights(group["alpha"], dt)  # lerp weight 1 - alpha
        wd = group["weight_decay"]
        flags = (small, wd != 0, bool(group["centered"]), group["momentum"] > 0,
                 group["epsilon_mode"] == "keras")
        return "rmsprop", flags, (dt(group["lr"]), omw, w, dt(group["eps"]), dt(wd),
                                  dt(group["momentum"]), dt(gscale))

    def _buffers(self, p, st, flags, sdt=None):
        centered, use_m = flags[2], flags[3]
        if use_m and "momentum_buffer" not in st:
            st["momentum_buffer"] = zeros(p, sdt)
        if centered and "grad_avg" not in st:
            st["grad_avg"] = zeros(p, sdt)
        return (st["square_avg"], st["grad_avg"] if centered else None,
                st["momentum_buffer"] if use_m else None)


class Adam(Optimizer):
    """Adam (``amsgrad=True``: AMSGrad), weight decay coupled (added to the gradient).

    ``m = lerp(m, d, 1 - b1); v = b2 v + (1 - b2) d^2``; AMSGrad: ``vmax = max(vmax, v)``
    and ``vmax`` replaces ``v`` below (PyTorch's ``max_exp_avg_sq``);
    ``p -= lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps)``, evaluated as
    ``lr sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps sqrt(1-b2^t))`` (equal up to rounding;
    one division per element fewer: the single-thread kernel is partly compute-bound).

    ``epsilon_mode='keras'`` reproduces Keras (standalone Keras 2, tf.keras and Keras 3
    all use this "epsilon hat" form): ``lr_t = lr sqrt(1 - b2^t)/(1 - b1^t)``,
    ``p -= lr_t m / (sqrt(v) + eps)``; Keras' default eps is 1e-7.
    """

    _defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                     maximize=False, epsilon_mode="torch")
    _keras_modes = ("torch", "keras")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, epsilon_mode="torch", **kw):
        extra = _split(kw)
        if kw:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kw)}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas) if isinstance(betas, list)
                                      else betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      epsilon_mode=epsilon_mode), **extra)

    def _check_group(self, group):
        super()._check_group(group)
        check_nonneg(group, "eps", "weight_decay")
        check_betas(group)
        check_flags(group, "amsgrad", "maximize")

    def _new_state(self, p, group, sdt=None):
        st = {"step": 0, "exp_avg": zeros(p, sdt), "exp_avg_sq": zeros(p, sdt)}
        if group["amsgrad"]:
            st["max_exp_avg_sq"] = zeros(p, sdt)
        return st

    def _scalars(self, group, t, dt, gscale):
        lr, wd = group["lr"], group["weight_decay"]
        b1, b2 = group["betas"]
        bc1 = 1 - b1 ** t
        bc2_sqrt = math.sqrt(1 - b2 ** t)
        # torch: p -= lr/bc1 * m / (sqrt(v)/bc2_sqrt + eps), evaluated (multiplying through
        # by bc2_sqrt) as p -= lr bc2_sqrt/bc1 * m / (sqrt(v) + eps bc2_sqrt): equal up to
        # rounding, one division per element fewer. Keras adds eps to sqrt(v) itself.
        step_size = lr * bc2_sqrt / bc1
        eps_t = group["eps"] if group["epsilon_mode"] == "keras" else group["eps"] * bc2_sqrt
        coupled = wd != 0 and not self._decoupled
        decay_mul = 1 - lr * wd if (wd != 0 and self._decoupled) else 1.0
        w, omw, small = lerp_weights(b1, dt)
        flags = (small, coupled, bool(group["amsgrad"]))
        return "adam", flags, (dt(step_size), w, omw, dt(b2), dt(1 - b2), dt(eps_t), dt(wd),
                               dt(decay_mul), dt(gscale))

    def _buffers(self, p, st, flags, sdt=None):
        if flags[2] and "max_exp_avg_sq" not in st:
            st["max_exp_avg_sq"] = zeros(p, sdt)
        return st["exp_avg"], st["exp_avg_sq"], st["max_exp_avg_sq"] if flags[2] else None


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr wd`` before the Adam update
    (default ``weight_decay=1e-2``)."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, epsilon_mode="torch", **kw):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         epsilon_mode=epsilon_mode, **kw)


class Adamax(Optimizer):
    """Adamax: ``m = lerp(m, d, 1 - b1); u = max(b2 u, |d| + eps); p -= lr/(1 - b1^t) m/u``.

    ``epsilon_mode='keras'`` reproduces Keras 3: ``u = max(b2 u, |d|)`` (no eps in the
    state) and ``p -= lr/(1 - b1^t) m/(u + eps)`` (Keras' defaults: eps 1e-7, lr 1e-3)."""

    _defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                     epsilon_mode="torch")
    _keras_modes = ("torch", "keras")

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 maximize=False, epsilon_mode="torch", **kw):
        extra = _split(kw)
        if kw:
            raise TypeError(f"Adamax got unexpected arguments {sorted(kw)}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, maximize=maximize,
                                      epsilon_mode=epsilon_mode), **extra)

    def _check_group(self, group):
        super()._check_group(group)
        check_nonneg(group, "eps", "weight_decay")
        check_betas(group)
        check_flags(group, "maximize")

    def _new_state(self, p, group, sdt=None):
        return {"step": 0, "exp_avg": zeros(p, sdt), "exp_inf": zeros(p, sdt)}

    def _scalars(self, group, t, dt, gscale):
        b1, b2 = group["betas"]
        clr = group["lr"] / (1 - b1 ** t)
        w, omw, small = lerp_weights(b1, dt)
        wd = group["weight_decay"]
        return "adamax", (small, wd != 0, group["epsilon_mode"] == "keras"), (
            dt(clr), w, omw, dt(b2), dt(group["eps"]), dt(wd), dt(gscale))

    def _buffers(self, p, st, flags, sdt=None):
        return st["exp_avg"], st["exp_inf"]


class NAdam(Optimizer):
    """NAdam (Dozat), PyTorch's variant with momentum decay:
    ``mu_t = b1 (1 - 0.5 * 0.96^(t psi))``, ``den = sqrt(v/(1 - b2^t)) + eps``,
    ``p -= lr (1 - mu_t)/(1 - prod mu) d/den + lr mu_{t+1}/(1 - prod mu * mu_{t+1}) m/den``.
    ``mu_product`` is kept in float64 (PyTorch: a float32 scalar tensor)."""

    _defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                     momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False)

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, maximize=False, **kw):
        extra = _split(kw)
        if kw:
            raise TypeError(f"NAdam got unexpected arguments {sorted(kw)}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize), **extra)

    def _check_group(self, group):
        super()._check_group(group)
        check_nonneg(group, "eps", "weight_decay", "momentum_decay")
        check_betas(group)
        check_flags(group, "decoupled_weight_decay", "maximize")

    def _new_state(self, p, group, sdt=None):
        return {"step": 0, "mu_product": 1.0, "exp_avg": zeros(p, sdt),
                "exp_avg_sq": zeros(p, sdt)}

    def _advance(self, st, group):
        t = st["step"] = st["step"] + 1
        mu = group["betas"][0] * (1.0 - 0.5 * 0.96 ** (t * group["momentum_decay"]))
        st["mu_product"] = prod = st["mu_product"] * mu
        return t, prod

    def _scalars(self, group, key, dt, gscale):
        t, prod = key
        lr, psi = group["lr"], group["momentum_decay"]
        b1, b2 = group["betas"]
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        c_grad = lr * (1.0 - mu) / (1.0 - prod)
        c_avg = lr * mu_next / (1.0 - prod * mu_next)
        wd = group["weight_decay"]
        dec = bool(group["decoupled_weight_decay"])
        decay_mul = 1 - lr * wd if (wd != 0 and dec) else 1.0
        w, omw, small = lerp_weights(b1, dt)
        return "nadam", (small, wd != 0 and not dec), (
            dt(c_grad), dt(c_avg), w, omw, dt(b2), dt(1 - b2), dt(1 - b2 ** t), dt(group["eps"]),
            dt(wd), dt(decay_mul), dt(gscale))

    def _buffers(self, p, st, flags, sdt=None):
        return st["exp_avg"], st["exp_avg_sq"]


class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"):
    ``c = lerp(m, g, 1 - b1); p = p (1 - lr wd) - lr sign(c); m = lerp(m, g, 1 - b2)``.
    Not in torch.optim; defaults of the paper's reference code (lr=1e-4, betas=(0.9, 0.99),
    weight_decay=0)."""

    _defaults = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *,
                 maximize=False, **kw):
        extra = _split(kw)
        if kw:
            raise TypeError(f"Lion got unexpected arguments {sorted(kw)}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay,
                                      maximize=maximize), **extra)

    def _check_group(self, group):
        super()._check_group(group)
        check_nonneg(group, "weight_decay")
        check_betas(group)
        check_flags(group, "maximize")

    def _new_state(self, p, group, sdt=None):
        return {"step": 0, "exp_avg": zeros(p, sdt)}

    def _scalars(self, group, t, dt, gscale):
        lr, wd = group["lr"], group["weight_decay"]
        b1, b2 = group["betas"]
        w1, omw1, s1 = lerp_weights(b1, dt)
        w2, omw2, s2 = lerp_weights(b2, dt)
        return "lion", (s1, s2), (dt(lr), w1, omw1, w2, omw2, dt(1 - lr * wd), dt(gscale))

    def _buffers(self, p, st, flags, sdt=None):
        return (st["exp_avg"],)

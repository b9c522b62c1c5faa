"""Learning-rate schedules: pure functions and scheduler objects.

Pure schedules (Optax style): ``fn = cosine_warmup(0.1, total_steps=1000, warmup_steps=50)``
then ``fn(t)`` is the learning rate after ``t`` scheduler steps (``t = 0``: the start).

Scheduler objects (PyTorch style) own an optimizer and set each param group's
``lr`` from that group's initial lr: construction sets the ``t = 0`` value, every
``step()`` advances ``t`` by one (call it once per epoch or once per optimizer step,
as you decide the unit). ``get_last_lr()``, ``state_dict()`` / ``load_state_dict()``.
Values agree with ``torch.optim.lr_scheduler`` (tested value by value):

==========================  ===================================  =========================
fastloss                    schedule                             PyTorch / Keras
==========================  ===================================  =========================
``ConstantLR``              lr * factor for t < total_iters      ``ConstantLR``
``StepLR``                  lr gamma^floor(t/step_size)          ``StepLR``
``MultiStepLR``             lr gamma^(#milestones <= t)          ``MultiStepLR``
``ExponentialLR``           lr gamma^t                           ``ExponentialLR``
``InverseTimeLR``           lr / (1 + decay t / decay_steps)     Keras ``decay=`` argument,
                                                                 ``InverseTimeDecay``
``LinearLR``                lr (s + (e - s) min(t, T)/T)         ``LinearLR`` (warmup)
``CosineAnnealingLR``       linear warmup, then                  ``CosineAnnealingLR``
                            eta_min + (lr - eta_min)(1+cos)/2    (+ ``LinearLR`` warmup)
``OneCycleLR``              warm up to max_lr, anneal to         ``OneCycleLR``
                            max_lr/div/final_div (+ momentum)
``ReduceLROnPlateau``       lr * factor after ``patience`` bad   ``ReduceLROnPlateau``
                            epochs (``step(metric)``)
==========================  ===================================  =========================

Keras' ``decay`` (``SGD(lr, decay=d)``) is ``lr / (1 + d * iterations)`` with
``iterations`` the number of updates already applied: ``InverseTimeLR(opt, d)``
stepped once after every ``opt.step``.
Decided where PyTorch is silent or odd: after ``T_max`` the cosine schedule stays
at ``eta_min`` (PyTorch's recursive form climbs back up).
"""
from __future__ import annotations

import bisect
import math

from . import _validate

__all__ = [
    "constant", "constant_factor", "step_decay", "multi_step", "exponential", "inverse_time", "linear",
    "cosine_warmup", "one_cycle",
    "LRScheduler", "ConstantLR", "StepLR", "MultiStepLR", "ExponentialLR", "InverseTimeLR",
    "LinearLR", "CosineAnnealingLR", "OneCycleLR", "ReduceLROnPlateau",
]


def _pos_int(v, name, low=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    return v


def _lr(v, name="lr"):
    return _validate.real_scalar(v, name, low=0.0)


# ---------------------------------------------------------------------------
# pure schedules: factories returning t -> lr

def constant(lr):
    lr = _lr(lr)
    return lambda t: lr


def step_decay(lr, step_size, gamma=0.1):
    lr, step_size = _lr(lr), _pos_int(step_size, "step_size")
    gamma = _validate.real_scalar(gamma, "gamma", low=0.0)
    return lambda t: lr * gamma ** (t // step_size)


def multi_step(lr, milestones, gamma=0.1):
    lr = _lr(lr)
    ms = sorted(_pos_int(m, "milestones", 0) for m in milestones)
    gamma = _validate.real_scalar(gamma, "gamma", low=0.0)
    return lambda t: lr * gamma ** bisect.bisect_right(ms, t)


def exponential(lr, gamma):
    lr = _lr(lr)
    gamma = _validate.real_scalar(gamma, "gamma", low=0.0)
    return lambda t: lr * gamma ** t


def inverse_time(lr, decay, decay_steps=1, staircase=False):
    """Keras' time-based decay: ``lr / (1 + decay * t / decay_steps)`` (floor with staircase)."""
    lr = _lr(lr)
    decay = _validate.real_scalar(decay, "decay", low=0.0)
    decay_steps = _pos_int(decay_steps, "decay_steps")
    _validate.boolean(staircase, "staircase")

    def fn(t):
        x = t // decay_steps if staircase else t / decay_steps
        return lr / (1 + decay * x)
    return fn


def linear(lr, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
    """``lr * (s + (e - s) * min(t, T) / T)``: linear warmup (or decay)."""
    lr = _lr(lr)
    s = _validate.real_scalar(start_factor, "start_factor", low=0.0, low_open=True, high=1.0)
    e = _validate.real_scalar(end_factor, "end_factor", low=0.0, high=1.0)
    T = _pos_int(total_iters, "total_iters", 0)
    return lambda t: lr * (s + (e - s) * min(t, T) / T) if T else lr * e


def cosine_warmup(lr, total_steps, warmup_steps=0, eta_min=0.0, warmup_start_factor=0.0):
    """Linear warmup from ``lr * warmup_start_factor`` over ``warmup_steps``, then cosine
    from ``lr`` to ``eta_min`` over the remaining ``total_steps - warmup_steps``; then
    ``eta_min``."""
    lr, eta_min = _lr(lr), _lr(eta_min, "eta_min")
    total_steps = _pos_int(total_steps, "total_steps")
    warmup_steps = _pos_int(warmup_steps, "warmup_steps", 0)
    if warmup_steps >= total_steps:
        raise ValueError("warmup_steps must be < total_steps")
    s = _validate.real_scalar(warmup_start_factor, "warmup_start_factor", low=0.0, high=1.0)
    span = total_steps - warmup_steps

    def fn(t):
        if t < warmup_steps:
            return lr * (s + (1 - s) * t / warmup_steps)
        x = min(t - warmup_steps, span) / span
        return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * x)) / 2
    return fn


def _anneal(strategy, start, end, pct):
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _one_cycle_phases(total_steps, pct_start, three_phase):
    if three_phase:
        return [(float(pct_start * total_steps) - 1, "initial", "max"),
                (float(2 * pct_start * total_steps) - 2, "max", "initial"),
                (total_steps - 1, "initial", "min")]
    return [(float(pct_start * total_steps) - 1, "initial", "max"),
            (total_steps - 1, "max", "min")]


def one_cycle(max_lr, total_steps, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
              final_div_factor=1e4, three_phase=False):
    """PyTorch's 1cycle: from ``max_lr/div_factor`` up to ``max_lr`` (``pct_start`` of the
    steps), then down to ``max_lr/div_factor/final_div_factor``; returns lr for t <= total."""
    max_lr = _lr(max_lr, "max_lr")
    total_steps = _pos_int(total_steps, "total_steps")
    pct_start = _validate.real_scalar(pct_start, "pct_start", low=0.0, high=1.0)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    lrs = {"initial": max_lr / div_factor, "max": max_lr}
    lrs["min"] = lrs["initial"] / final_div_factor
    phases = _one_cycle_phases(total_steps, pct_start, three_phase)

    def fn(t):
        if t > total_steps:
            raise ValueError(f"one_cycle: step {t} beyond total_steps={total_steps}")
        start = 0.0
        for i, (end, a, b) in enumerate(phases):
            if t <= end or i == len(phases) - 1:
                return _anneal(anneal_strategy, lrs[a], lrs[b], (t - start) / (end - start))
            start = end
    return fn


# ---------------------------------------------------------------------------
# scheduler objects

class LRScheduler:
    """Sets ``optimizer.param_groups[i]['lr'] = fns[i](t)``; ``step()`` advances ``t``.

    ``make(base_lr)`` builds the pure schedule of one group from its initial lr
    (recorded in the group as ``'initial_lr'``, as PyTorch does).
    """

    def __init__(self, optimizer, make):
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self._fns = [make(b) for b in self.base_lrs]
        self.last_epoch = 0
        self._apply()

    def _apply(self):
        self._last_lr = [fn(self.last_epoch) for fn in self._fns]
        for g, lr in zip(self.optimizer.param_groups, self._last_lr):
            g["lr"] = lr

    def step(self):
        """Advance one step and set the new lrs."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        self.last_epoch = int(state["last_epoch"])
        self._apply()


def constant_factor(lr, factor=1.0 / 3, total_iters=5):
    """``lr * factor`` for ``t < total_iters``, then ``lr`` (PyTorch's ConstantLR)."""
    lr = _lr(lr)
    factor = _validate.real_scalar(factor, "factor", low=0.0, high=1.0)
    total_iters = _pos_int(total_iters, "total_iters", 0)
    return lambda t: lr * factor if t < total_iters else lr


class ConstantLR(LRScheduler):
    """PyTorch's ConstantLR: ``lr * factor`` for the first ``total_iters`` steps, then
    ``lr``. ``ConstantLR(opt, factor=1.0)`` keeps the lr constant."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5):
        super().__init__(optimizer, lambda b: constant_factor(b, factor, total_iters))


class StepLR(LRScheduler):
    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer, lambda b: step_decay(b, step_size, gamma))


class MultiStepLR(LRScheduler):
    def __init__(self, optimizer, milestones, gamma=0.1):
        super().__init__(optimizer, lambda b: multi_step(b, milestones, gamma))


class ExponentialLR(LRScheduler):
    def __init__(self, optimizer, gamma):
        super().__init__(optimizer, lambda b: exponential(b, gamma))


class InverseTimeLR(LRScheduler):
    """Keras time-based decay: ``lr / (1 + decay * t / decay_steps)``."""

    def __init__(self, optimizer, decay, decay_steps=1, staircase=False):
        super().__init__(optimizer, lambda b: inverse_time(b, decay, decay_steps, staircase))


class LinearLR(LRScheduler):
    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        super().__init__(optimizer, lambda b: linear(b, start_factor, end_factor, total_iters))


class CosineAnnealingLR(LRScheduler):
    """Cosine from each group's lr to ``eta_min`` over ``T_max`` steps, after an optional
    linear warmup of ``warmup_steps`` (then ``T_max`` counts from the end of warmup)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, warmup_steps=0, warmup_start_factor=0.0):
        super().__init__(optimizer, lambda b: cosine_warmup(
            b, T_max + warmup_steps, warmup_steps, eta_min, warmup_start_factor))


class OneCycleLR(LRScheduler):
    """PyTorch's ``OneCycleLR`` (``max_lr`` a float or one per group; ``total_steps`` or
    ``epochs * steps_per_epoch``). With ``cycle_momentum`` the group's ``momentum`` (or
    ``betas[0]``) cycles inversely between ``max_momentum`` and ``base_momentum``."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True,
                 base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("give total_steps, or epochs and steps_per_epoch")
            total_steps = epochs * steps_per_epoch
        self.total_steps = _pos_int(total_steps, "total_steps")
        groups = optimizer.param_groups
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * len(groups)
        if len(max_lrs) != len(groups):
            raise ValueError(f"max_lr has {len(max_lrs)} values for {len(groups)} groups")
        for g, m in zip(groups, max_lrs):  # PyTorch: initial_lr = max_lr / div_factor
            g["initial_lr"] = g["lr"] = m / div_factor
        it = iter(max_lrs)
        self._cycle = cycle_momentum
        if cycle_momentum:
            g0 = groups[0]
            if "momentum" not in g0 and "betas" not in g0:
                raise ValueError("optimizer must have momentum or betas to cycle momentum")
            self._mom = [(base_momentum, max_momentum)] * len(groups)
            self._phases = _one_cycle_phases(self.total_steps, pct_start, three_phase)
            self._anneal = anneal_strategy
        super().__init__(optimizer, lambda b: one_cycle(next(it), self.total_steps, pct_start,
                                                        anneal_strategy, div_factor,
                                                        final_div_factor, three_phase))

    def _momentum(self, t, base, top):
        vals = {"initial": top, "max": base, "min": top}
        start = 0.0
        for i, (end, a, b) in enumerate(self._phases):
            if t <= end or i == len(self._phases) - 1:
                return _anneal(self._anneal, vals[a], vals[b], (t - start) / (end - start))
            start = end

    def _apply(self):
        super()._apply()
        if self._cycle:
            for g, (base, top) in zip(self.optimizer.param_groups, self._mom):
                m = self._momentum(self.last_epoch, base, top)
                if "betas" in g:
                    g["betas"] = (m, *tuple(g["betas"])[1:])
                else:
                    g["momentum"] = m


class ReduceLROnPlateau:
    """PyTorch's ``ReduceLROnPlateau``: ``step(metric)``; after more than ``patience``
    epochs without improvement (``threshold`` rel/abs, ``mode`` min/max), multiply each
    group's lr by ``factor`` (not below ``min_lr``; changes smaller than ``eps`` ignored),
    then wait ``cooldown`` epochs."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        if factor >= 1.0:
            raise ValueError("factor should be < 1.0")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.optimizer = optimizer
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.mode, self.threshold_mode = mode, threshold_mode
        self.cooldown, self.eps = cooldown, eps
        n = len(optimizer.param_groups)
        self.min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * n
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def _better(self, a, best):
        if self.mode == "min":
            rel = self.threshold_mode == "rel"
            return a < (best * (1 - self.threshold) if rel else best - self.threshold)
        rel = self.threshold_mode == "rel"
        return a > (best * (1 + self.threshold) if rel else best + self.threshold)

    def step(self, metric):
        current = float(metric)
        self.last_epoch += 1
        if self._better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for g, lo in zip(self.optimizer.param_groups, self.min_lrs):
                new = max(g["lr"] * self.factor, lo)
                if g["lr"] - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state):
        self.__dict__.update(state)

"""``torch.nn`` loss modules backed by :mod:`fastloss.torch.functional`."""
from __future__ import annotations

import torch

from . import functional as F

__all__ = ["MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss",
           "CrossEntropyLoss", "NLLLoss"]


class _Loss(torch.nn.Module):
    """A module holding a functional loss and its keyword options."""

    _fn = None
    _tensor_options = ()  # options that are tensors, registered as buffers as torch does

    def __init__(self, reduction="mean", **options):
        super().__init__()
        self.reduction = reduction
        self._options = {}
        for key, value in options.items():
            if key in self._tensor_options and value is not None:
                self.register_buffer(key, value)
                self._options[key] = None  # read from the buffer at call time
            else:
                self._options[key] = value

    def forward(self, input, target):
        opts = {k: (getattr(self, k) if k in self._tensor_options and v is None
                    and hasattr(self, k) else v) for k, v in self._options.items()}
        return type(self)._fn(input, target, reduction=self.reduction, **opts)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    _fn = staticmethod(F.mse_loss)


class L1Loss(_Loss):
    _fn = staticmethod(F.l1_loss)


class HuberLoss(_Loss):
    _fn = staticmethod(F.huber_loss)

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction, delta=delta)


class SmoothL1Loss(_Loss):
    _fn = staticmethod(F.smooth_l1_loss)

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction, beta=beta)


class BCELoss(_Loss):
    _fn = staticmethod(F.binary_cross_entropy)
    _tensor_options = ("weight",)

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction, weight=weight)


class BCEWithLogitsLoss(_Loss):
    _fn = staticmethod(F.binary_cross_entropy_with_logits)
    _tensor_options = ("weight", "pos_weight")

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction, weight=weight, pos_weight=pos_weight)


class _ClassLoss(torch.nn.Module):
    """Base of the classification losses: ``weight`` is always a buffer (possibly None),
    as in ``torch.nn``'s weighted losses, so it follows ``.to()`` and the state_dict."""

    def __init__(self, weight, size_average, reduce, reduction, ignore_index):
        super().__init__()
        self.register_buffer("weight", weight)
        self.reduction = F._reduction(size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def extra_repr(self):
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"


class CrossEntropyLoss(_ClassLoss):
    """``torch.nn.CrossEntropyLoss`` backed by :func:`fastloss.torch.functional.cross_entropy`."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction, ignore_index)
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_ClassLoss):
    """``torch.nn.NLLLoss`` backed by :func:`fastloss.torch.functional.nll_loss`."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction, ignore_index)

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)

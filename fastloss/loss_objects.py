"""Loss objects: each wraps one element-wise loss function of :mod:`fastloss.losses`.

::

    crit = fastloss.MSELoss()                 # options fixed here: reduction, backend, delta...
    loss = crit.forward(pred, target)         # loss; the gradient is computed in the same pass
    grad = crit.backward()                    # d loss / d pred, kept from forward

``loss``, ``gradient`` and ``loss_gradient`` are the stateless forms (as in
scikit-learn's ``sklearn._loss``); all take ``(pred, target)`` in PyTorch's
order and an optional ``sample_weight``.
"""
from __future__ import annotations

import numpy as np

from . import losses

__all__ = [
    "ElementwiseLoss", "MSELoss", "SSELoss", "L1Loss", "MAELoss", "HuberLoss", "SmoothL1Loss",
    "QuantileLoss", "LogCoshLoss", "BCELoss", "BCEWithLogitsLoss", "HingeLoss",
    "SquaredHingeLoss",
]


class ElementwiseLoss:
    """Base class: ``function`` is the wrapped loss, e.g. :func:`fastloss.mse`.

    ``reduction``, ``backend`` and the loss options (``delta=``, ``pos_weight=``...)
    are fixed at construction and checked at once.
    """

    function = None  # set by each subclass (a staticmethod)

    def __init__(self, reduction="mean", *, backend=None, **options):
        if self.function is None:
            raise TypeError("ElementwiseLoss is a base class: use MSELoss, HuberLoss, ...")
        self.reduction = reduction
        self.backend = backend
        self.options = options
        self._grad = None
        # validate reduction, backend and options now, not at the first training step
        probe = np.empty((0,) + np.shape(options.get("pos_weight")))
        self.function(probe, probe, reduction=reduction, backend=backend, **options)

    def _call(self, pred, target, sample_weight, return_grad, out=None, grad_output=None):
        return self.function(pred, target, reduction=self.reduction, sample_weight=sample_weight,
                             return_grad=return_grad, out=out, grad_output=grad_output,
                             backend=self.backend, **self.options)

    def loss(self, pred, target, sample_weight=None):
        """The loss (reduced as ``reduction`` says)."""
        return self._call(pred, target, sample_weight, False)

    def gradient(self, pred, target, sample_weight=None, out=None, grad_output=None):
        """d loss / d pred (into ``out`` when given)."""
        return self._call(pred, target, sample_weight, True, out, grad_output)[1]

    def loss_gradient(self, pred, target, sample_weight=None, out=None, grad_output=None):
        """``(loss, gradient)`` in one fused pass."""
        return self._call(pred, target, sample_weight, True, out, grad_output)

    def forward(self, pred, target, sample_weight=None, out=None):
        """The loss; the gradient is computed in the same pass and kept for :meth:`backward`."""
        loss, self._grad = self._call(pred, target, sample_weight, True, out)
        return loss

    __call__ = forward

    def backward(self, grad_output=None):
        """The gradient of the last :meth:`forward` w.r.t. ``pred``.

        ``grad_output`` (the upstream gradient: a scalar, or for
        ``reduction='none'`` an array of ``pred``'s shape) multiplies it.
        """
        if self._grad is None:
            raise RuntimeError("backward() called before forward()")
        if grad_output is None:
            return self._grad
        go = np.asarray(grad_output)
        if go.ndim and go.shape != self._grad.shape:
            raise ValueError(f"grad_output has shape {go.shape}, expected {self._grad.shape}")
        return (self._grad * go).astype(self._grad.dtype, copy=False)

    def __repr__(self):
        args = [f"reduction={self.reduction!r}"] + [f"{k}={v!r}" for k, v in self.options.items()]
        if self.backend is not None:
            args.append(f"backend={self.backend!r}")
        return f"{type(self).__name__}({', '.join(args)})"


class MSELoss(ElementwiseLoss):
    """Mean squared error, :func:`fastloss.mse` (PyTorch ``MSELoss``)."""
    function = staticmethod(losses.mse)


class SSELoss(ElementwiseLoss):
    """Half sum of squared errors, :func:`fastloss.sse`."""
    function = staticmethod(losses.sse)

    def __init__(self, reduction="sum", **kw):
        super().__init__(reduction, **kw)


class L1Loss(ElementwiseLoss):
    """Mean absolute error, :func:`fastloss.mae` (PyTorch ``L1Loss``)."""
    function = staticmethod(losses.mae)


MAELoss = L1Loss


class HuberLoss(ElementwiseLoss):
    """Huber loss, :func:`fastloss.huber` (``delta=``; PyTorch ``HuberLoss``)."""
    function = staticmethod(losses.huber)


class SmoothL1Loss(ElementwiseLoss):
    """Smooth L1, :func:`fastloss.smooth_l1` (``beta=``; PyTorch ``SmoothL1Loss``)."""
    function = staticmethod(losses.smooth_l1)


class QuantileLoss(ElementwiseLoss):
    """Pinball loss, :func:`fastloss.quantile` (``q=``)."""
    function = staticmethod(losses.quantile)


class LogCoshLoss(ElementwiseLoss):
    """Log-cosh, :func:`fastloss.log_cosh`."""
    function = staticmethod(losses.log_cosh)


class BCELoss(ElementwiseLoss):
    """Binary cross-entropy on probabilities, :func:`fastloss.binary_cross_entropy` (``eps=``)."""
    function = staticmethod(losses.binary_cross_entropy)


class BCEWithLogitsLoss(ElementwiseLoss):
    """Binary cross-entropy on logits, :func:`fastloss.binary_cross_entropy_with_logits`
    (``pos_weight=``; PyTorch ``BCEWithLogitsLoss``)."""
    function = staticmethod(losses.binary_cross_entropy_with_logits)


class HingeLoss(ElementwiseLoss):
    """Hinge, :func:`fastloss.hinge`."""
    function = staticmethod(losses.hinge)


class SquaredHingeLoss(ElementwiseLoss):
    """Squared hinge, :func:`fastloss.squared_hinge`."""
    function = staticmethod(losses.squared_hinge)

"""Loss objects: one class per element-wise loss of the table, each wrapping its function.

::

    crit = fastloss.MSELoss()                 # options fixed here: reduction, backend, delta...
    loss = crit.forward(pred, target)         # loss; the gradient is computed in the same pass
    grad = crit.backward()                    # d loss / d pred, kept from forward

``loss``, ``gradient``, ``loss_gradient`` and ``gradient_hessian`` are the
stateless forms (as in scikit-learn's ``sklearn._loss``); all take
``(pred, target)`` in PyTorch's order and an optional ``sample_weight``.
The classes (``HuberLoss``...) are made from :mod:`fastloss._elementwise_spec`.
"""
from __future__ import annotations

import numpy as np

from . import losses
from ._elementwise_spec import LOSSES


class ElementwiseLoss:
    """Base class: ``function`` is the wrapped loss, e.g. :func:`fastloss.mse`.

    ``reduction`` (default: the function's), ``backend`` and the loss options
    (``delta=``, ``pos_weight=``, PyTorch's ``weight=`` for the binary
    cross-entropies...) are fixed at construction and checked at once.
    """

    function = None  # set by each subclass (a staticmethod)
    spec = None      # its entry of the loss table

    def __init__(self, reduction=None, *, backend=None, **options):
        if self.function is None:
            raise TypeError("ElementwiseLoss is a base class: use MSELoss, HuberLoss, ...")
        self.reduction = self.spec.reduction if reduction is None else reduction
        self.backend = backend
        self.options = options
        self._grad = None
        # validate reduction, backend and options now, not at the first training step
        # (an array option, e.g. pos_weight, must broadcast along the probe's last axis)
        arrays = [np.shape(options.get(o.name)) for o in self.spec.options if o.per_element]
        if self.spec.torch_weight:
            arrays.append(np.shape(options.get("weight")))
        probe = np.empty((0,) + max(arrays, key=len, default=()))
        self.function(probe, probe, reduction=self.reduction, backend=backend, **options)

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

    def gradient_hessian(self, pred, target, sample_weight=None, out=None):
        """``(gradient, hessian)`` in one fused pass: the hessian of the loss w.r.t.
        ``pred`` is diagonal, returned as one d2 loss / d pred_i^2 per element and
        scaled as the gradient ('mean': 1/n; ``sample_weight`` multiplies). For Newton
        steps and gradient boosting; the gradient goes into ``out`` when given."""
        options = dict(self.options)
        weight = options.pop("weight", None)
        _, grad, hess = losses._evaluate(
            self.spec, pred, target, options, self.reduction, sample_weight, True, out,
            None, self.backend, hessian=True, weight=weight)
        return grad, hess

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


def _loss_class(loss):
    """The class of ``loss``: ElementwiseLoss around its public function."""
    title = loss.doc.split(":")[0].split(",")[0]
    options = "".join(f" (``{o.name}=``)" for o in loss.options[:1])
    return type(loss.cls, (ElementwiseLoss,), {
        "__doc__": f"{title}, :func:`fastloss.{loss.name}`{options}.",
        "__module__": __name__,
        "function": staticmethod(losses.FUNCTIONS[loss.name]),
        "spec": loss,
    })


CLASSES = {loss.cls: _loss_class(loss) for loss in LOSSES}
"""class name -> loss class, one per loss of the table."""

globals().update(CLASSES)
for _loss in LOSSES:
    for _alias in _loss.cls_aliases:
        globals()[_alias] = CLASSES[_loss.cls]

__all__ = ["ElementwiseLoss"] + [name for loss in LOSSES for name in (loss.cls, *loss.cls_aliases)]

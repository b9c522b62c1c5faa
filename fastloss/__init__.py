"""fastloss: fast, correct CPU losses and optimizer steps.

Losses and their gradients run as fused native kernels (Cython + OpenMP);
optimizer updates as Numba kernels; NumPy is the reference and the fallback.
"""
from ._backend import FastlossWarning, get_backend, native_available, set_backend
from ._threads import get_num_threads, num_threads, set_num_threads
from .linear_ce import linear_cross_entropy
from .classification import (
    categorical_cross_entropy,
    cross_entropy,
    log_softmax,
    log_softmax_backward,
    multi_margin,
    nll_loss,
    softmax,
    softmax_backward,
)
# one function and one class per loss of the table in _elementwise_spec.py
from . import loss_objects as _loss_objects
from . import losses as _losses
from .loss_objects import *  # noqa: F401,F403  ElementwiseLoss, MSELoss, HuberLoss, ...
from .losses import *  # noqa: F401,F403  mse, sse, mae, l1, huber, ...

__version__ = "0.1.0"


def __getattr__(name):
    # fastloss.optim / fastloss.schedules load on first use: `import fastloss` stays
    # cheap (Numba itself is imported only when a native optimizer is first built).
    if name in ("optim", "schedules"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastloss' has no attribute {name!r}")


__all__ = [
    "__version__", "FastlossWarning", "get_backend", "set_backend", "native_available",
    "get_num_threads", "set_num_threads", "num_threads", "optim", "schedules",
    *_losses.__all__, *_loss_objects.__all__,
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "cross_entropy",
    "nll_loss", "categorical_cross_entropy", "multi_margin", "linear_cross_entropy",
]

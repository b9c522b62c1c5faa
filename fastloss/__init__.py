"""fastloss: fast, correct CPU losses and optimizer steps.

Losses and their gradients run as fused native kernels (Cython + OpenMP);
optimizer updates as Numba kernels; NumPy is the reference and the fallback.
"""
from ._backend import FastlossWarning, get_backend, native_available, set_backend
from ._threads import get_num_threads, num_threads, set_num_threads
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
from .loss_objects import (
    BCELoss,
    BCEWithLogitsLoss,
    ElementwiseLoss,
    HingeLoss,
    HuberLoss,
    L1Loss,
    LogCoshLoss,
    MAELoss,
    MSELoss,
    QuantileLoss,
    SmoothL1Loss,
    SquaredHingeLoss,
    SSELoss,
)
from .losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    hinge,
    huber,
    l1,
    log_cosh,
    mae,
    mse,
    quantile,
    smooth_l1,
    squared_hinge,
    sse,
)

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
    "mse", "sse", "mae", "l1", "huber", "smooth_l1", "quantile", "log_cosh",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "hinge", "squared_hinge",
    "ElementwiseLoss", "MSELoss", "SSELoss", "L1Loss", "MAELoss", "HuberLoss", "SmoothL1Loss",
    "QuantileLoss", "LogCoshLoss", "BCELoss", "BCEWithLogitsLoss", "HingeLoss",
    "SquaredHingeLoss",
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "cross_entropy",
    "nll_loss", "categorical_cross_entropy", "multi_margin",
]

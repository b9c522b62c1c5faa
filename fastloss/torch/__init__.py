"""PyTorch adapters: fastloss losses as autograd functions and ``nn`` modules.

Needs the optional extra ``torch`` (``pip install "fastloss[torch]"``);
``import fastloss`` never imports torch.
"""
try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without torch
    raise ImportError(
        "fastloss.torch needs PyTorch: pip install torch (or pip install 'fastloss[torch]')"
    ) from exc

from . import functional, nn, optim
from .functional import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    l1_loss,
    mse_loss,
    nll_loss,
    smooth_l1_loss,
)
from ._linear_ce import LinearCrossEntropyLoss, linear_cross_entropy
from .nn import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss,
                 NLLLoss, SmoothL1Loss)

__all__ = [
    "functional", "nn", "optim", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "nll_loss",
    "MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss",
    "CrossEntropyLoss", "NLLLoss", "linear_cross_entropy", "LinearCrossEntropyLoss",
]

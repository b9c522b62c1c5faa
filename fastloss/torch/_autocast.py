"""CPU autocast as the fastloss.torch losses follow it.

Inside ``torch.autocast("cpu", dtype=torch.bfloat16 or torch.float16)`` torch runs
every loss (mse, l1, huber, smooth_l1, bce, bce_with_logits, cross_entropy,
nll_loss, kl_div) in float32: a 16-bit input is read as float32, the loss is a
float32 tensor, and the gradient flowing back to the 16-bit input is rounded to
its dtype. Outside autocast a 16-bit input gives a loss and a gradient in its own
dtype. fastloss computes 16-bit inputs in float32 either way (kernels widen tiles,
no float32 copy of the input); these helpers only say what the loss is returned in
and whether companion arrays (targets, weights) are read in their own float dtype
(autocast: as torch computes in float32 with them) or cast to the input's.
"""
from __future__ import annotations

import torch

from ._bridge import HALF_DTYPES


def enabled() -> bool:
    """True inside ``torch.autocast("cpu", ...)``."""
    return torch.is_autocast_enabled("cpu")


def computes_in_float32(input: torch.Tensor) -> bool:
    """True when torch would run a loss on ``input`` in float32 where it is 16-bit:
    CPU autocast is on and ``input`` is bfloat16 or float16."""
    return input.dtype in HALF_DTYPES and enabled()


def loss_dtype(input: torch.Tensor) -> torch.dtype:
    """The dtype torch returns a loss of ``input`` in: float32 for a 16-bit input
    under CPU autocast, the input's dtype otherwise."""
    return torch.float32 if computes_in_float32(input) else input.dtype

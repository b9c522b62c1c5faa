"""Tensor <-> NumPy bridge for the torch adapters (zero-copy where possible)."""
from __future__ import annotations

import numpy as np
import torch

_OK_DTYPES = (torch.float32, torch.float64)


def as_numpy(t: torch.Tensor, name: str, *, floating: bool = True) -> np.ndarray:
    """A NumPy view of a CPU tensor (a copy only if it is not contiguous).

    Refuses CUDA/meta tensors and half precision with a clear error rather than
    moving or casting behind the caller's back.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on device {t.device}; fastloss.torch runs on CPU tensors "
                         f"only (use torch's own op, or .cpu() it)")
    if floating and t.dtype not in _OK_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; fastloss supports float32 and float64 "
                        f"(cast with .float() for float16/bfloat16)")
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    return t.resolve_conj().resolve_neg().numpy()


def from_numpy(a) -> torch.Tensor:
    """A tensor sharing memory with a NumPy array or scalar."""
    return torch.from_numpy(np.asarray(a))

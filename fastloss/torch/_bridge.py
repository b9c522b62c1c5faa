"""Tensor <-> NumPy bridge for the torch adapters (zero-copy where possible)."""
from __future__ import annotations

import numpy as np
import torch

from .. import _dtypes

_OK_DTYPES = (torch.float32, torch.float64)
HALF_DTYPES = (torch.bfloat16, torch.float16)


def as_numpy(t: torch.Tensor, name: str, *, floating: bool = True, half: bool = False) -> np.ndarray:
    """A NumPy view of a CPU tensor (a copy only if it is not contiguous).

    Refuses CUDA/meta tensors and (unless ``half``) 16-bit floats with a clear
    error rather than moving or casting behind the caller's back. With ``half``,
    a bfloat16 tensor comes back as an ``ml_dtypes.bfloat16`` array and a
    float16 one as ``np.float16``, sharing memory.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on device {t.device}; fastloss.torch runs on CPU tensors "
                         f"only (use torch's own op, or .cpu() it)")
    if floating and t.dtype not in _OK_DTYPES and not (half and t.dtype in HALF_DTYPES):
        what = "float32, float64, bfloat16 and float16" if half else "float32 and float64"
        raise TypeError(f"{name} has dtype {t.dtype}; fastloss supports {what} here"
                        + ("" if half else " (cast with .float() for float16/bfloat16)"))
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    t = t.resolve_conj().resolve_neg()
    if t.dtype == torch.bfloat16:   # torch has no NumPy bfloat16: go through the bits
        return t.view(torch.int16).numpy().view(_dtypes.bfloat16())
    return t.numpy()


def from_numpy(a) -> torch.Tensor:
    """A tensor sharing memory with a NumPy array or scalar (bfloat16 arrays included)."""
    a = np.asarray(a)
    if _dtypes.is_bfloat16(a.dtype):
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)

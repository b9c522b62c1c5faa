"""fastloss.optim: PyTorch's optimizers as fused Numba kernels on NumPy arrays.

``Name(params, lr=..., **options)`` with ``params`` a list of arrays (updated in
place) or of param-group dicts; ``opt.step(grads)`` with grads in the same order.
Names, defaults and semantics of ``torch.optim``; see each class.

Keras -> fastloss
-----------------
=======================  =======================================================
Keras                    fastloss
=======================  =======================================================
``learning_rate``/``lr`` ``lr``
``beta_1, beta_2``       ``betas=(beta_1, beta_2)``
``epsilon`` (1e-7)       ``eps`` (PyTorch defaults differ: 1e-8, Adagrad 1e-10)
``rho`` (RMSprop)        ``alpha``
``momentum`` (SGD)       ``momentum`` (lr outside the buffer; same for constant lr)
``nesterov``             ``nesterov``
``amsgrad``              ``amsgrad``
``decay``                ``schedules.InverseTimeDecay``: lr / (1 + decay * iterations)
Adam epsilon placement   ``epsilon_mode='keras'`` (eps added to sqrt(v), bias correction
                         folded in lr_t); default ``'torch'``
RMSprop (tf.keras/K3)    ``epsilon_mode='keras'`` (sqrt(v + eps), lr in momentum buffer)
=======================  =======================================================

NaN/Inf in grads propagate to params and state (as PyTorch) unless the optimizer
was built with ``skip_nonfinite=True``; then the step changes nothing and
returns False.

Numba cache
-----------
Kernels are compiled on first use per dtype and cached on disk (``cache=True``):
in ``fastloss/optim/__pycache__`` when that is writable, else under
``NUMBA_CACHE_DIR`` if set, else in a per-user directory Numba picks
(``~/.cache/numba`` style, via its user-wide fallback locator). On a read-only
install without ``NUMBA_CACHE_DIR`` Numba uses that fallback silently; if no
location is writable it compiles in memory at every process start (no error).
"""
from ._clip import clip_grad_norm
from ._base import Optimizer
from ._optimizers import SGD, Adagrad, Adam, Adamax, AdamW, Lion, NAdam, RMSprop
from .arena import Arena

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam",
           "Lion", "Arena", "clip_grad_norm"]

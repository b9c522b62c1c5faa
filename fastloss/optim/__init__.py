"""fastloss.optim: PyTorch's optimizers as fused Numba kernels on NumPy arrays.

``Name(params, lr=..., **options)`` with ``params`` a list of arrays (updated in
place) or of param-group dicts; ``opt.step(grads)`` with grads in the same order.
Names, defaults and semantics of ``torch.optim``; see each class.

Keras -> fastloss
-----------------
=======================  =======================================================
Keras 3                  fastloss
=======================  =======================================================
``learning_rate``/``lr`` ``lr``
``beta_1, beta_2``       ``betas=(beta_1, beta_2)``
``epsilon`` (1e-7)       ``eps`` (PyTorch defaults differ: 1e-8, Adagrad 1e-10)
``rho`` (RMSprop, 0.9)   ``alpha`` (PyTorch's default 0.99: pass ``alpha=0.9``)
``momentum`` (SGD)       ``momentum`` (lr outside the buffer; same for constant lr)
``nesterov``             ``nesterov``
``amsgrad``              ``amsgrad``
``decay`` (Keras 2)      ``schedules.InverseTimeLR(opt, decay)`` stepped after each
                         ``opt.step``: lr / (1 + decay * iterations) (Keras 3:
                         ``schedules.InverseTimeDecay``)
``weight_decay``         decoupled on every Keras 3 optimizer (``p -= lr wd p`` before
                         the update). Keras ``Adam(weight_decay=wd)`` and ``AdamW``:
                         ``AdamW(..., weight_decay=wd, epsilon_mode='keras')`` (Keras'
                         AdamW default wd 0.004, PyTorch's 0.01); Nadam:
                         ``NAdam(decoupled_weight_decay=True)``; ``Lion`` decays alike.
                         fastloss's ``weight_decay`` on SGD, Adagrad, RMSprop, Adam,
                         Adamax is PyTorch's (coupled: added to the gradient)
``Adam``                 ``Adam(..., epsilon_mode='keras', eps=1e-7)`` (eps added to
                         sqrt(v), bias correction folded in lr_t); default ``'torch'``
``RMSprop`` (tf.keras,   ``RMSprop(..., alpha=0.9, eps=1e-7, epsilon_mode='keras')``
K3)                      (sqrt(v + eps), lr in the momentum buffer)
``Adagrad``              ``Adagrad(..., initial_accumulator_value=0.1, eps=1e-7,
                         epsilon_mode='keras')`` (lr d / sqrt(acc + eps))
``Adamax``               ``Adamax(..., eps=1e-7, epsilon_mode='keras')``
                         (u = max(b2 u, |d|), lr_t m / (u + eps))
``Nadam``                ``NAdam(..., eps=1e-7, momentum_decay=1.0)``: the same
                         formula (mu_t = b1 (1 - 0.5 * 0.96^t)); equal up to
                         rounding (Keras writes its moment updates as
                         ``m + (g - m)(1 - b1)``)
=======================  =======================================================

16-bit params and state
-----------------------
Params may be bfloat16 (``ml_dtypes.bfloat16`` arrays) or float16, with grads of the
same dtype: the update runs in float32 on values widened in registers as they are read
and is rounded back to nearest even as it is stored (no copies, no tile buffers); the
state is kept in the param's dtype (as torch does) unless
``state_dtype=`` says otherwise (e.g. ``state_dtype="bfloat16"`` for float32 params:
Adam moves 20 bytes per element instead of 28). ``master_weights=True`` keeps a float32
copy of each 16-bit param in its state (``'master_param'``), stepped in its place. The
``state_dict`` keeps every dtype; loading it resumes bit for bit.

NaN/Inf in grads propagate to params and state (as PyTorch) unless the optimizer
was built with ``skip_nonfinite=True``; then the step changes nothing and
returns False.

Performance notes
-----------------
One ``step`` makes one native call per param group and kernel variant (dtype,
option flags, per-step scalars): all tensors of the group in one Numba kernel
over a table of buffer addresses, the work cut by element count across tensor
boundaries into one part per thread (``fastloss.get_num_threads()``) when the
group holds at least ``_kernels_numba.PARALLEL_THRESHOLD`` (16384) elements,
else one serial part. What remains per tensor is checking its grad and reading
its address (well under a microsecond), so a model of many small tensors no
longer needs the ``Arena``. Results do not depend on the split: each element's
update reads only that element. On an oversubscribed machine (more runnable
threads than cores) a parallel kernel can stall for a scheduler time slice;
``fastloss.set_num_threads(1)`` avoids that.

Functional core
---------------
``fastloss.optim.functional``: ``init(opt, params)`` and
``update(opt, params, grads, state, hyperparams, step)`` for every optimizer, the
same logic and kernels as the classes (see that module).

Numba cache
-----------
Kernels are compiled on first use, per dtype, option-flag combination and
serial/parallel twin (a few seconds each, once), and cached on disk
(``cache=True``). Where the cache lives (Numba's rules, checked here):

* ``NUMBA_CACHE_DIR`` when set;
* else ``fastloss/optim/__pycache__`` next to the source, when writable;
* else (read-only install) Numba silently uses its per-user directory,
  ``~/.cache/numba/...`` (checked with a read-only bind mount);
* if nothing is writable Numba refuses ``cache=True`` with a RuntimeError: we
  catch it, warn once (``FastlossWarning``) and compile in memory in every
  process.

The cache key and stamp are fastloss's own (``_numba_cache``): the same in every
process, symbol names unique by content (two flag variants cached by two processes
never bind to each other's code), and any edit of a file whose code the kernels
compile (``_numba_cache.SOURCES``) invalidates every entry -- no manual cache delete.
The multi-tensor runners (closures over the per-array kernels) are compiled in memory
in every process. Start-up, measured on the 2-core dev machine: ``import numba``
~0.35 s (paid at the first native optimizer's construction; ``import fastloss`` and
``import fastloss.optim`` do not import Numba), then the first step ~1-1.5 s (the
runner's compile, Numba's first-load set-up, ``scipy.linalg`` for its BLAS check when
SciPy is installed); later steps cost microseconds (``bench/numba_cache_startup.py``).
"""
from ._clip import clip_grad_norm
from ._base import Optimizer
from ._optimizers import SGD, Adagrad, Adam, Adamax, AdamW, Lion, NAdam, RMSprop
from .arena import Arena
from . import functional

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam",
           "Lion", "Arena", "clip_grad_norm", "functional"]

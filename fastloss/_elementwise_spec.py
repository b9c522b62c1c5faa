"""The element-wise losses, one entry each: THE place to read or add a loss.

Each :class:`Loss` holds, side by side,

* its name, docstring and named options (default and allowed range);
* ``native``: the C body computing one element. It sees ``p`` (prediction),
  ``t`` (target) and each option by its name, all of type ``T`` (float or
  double); it stores dl/dp in ``*g`` and d2l/dp2 in ``*h`` and returns l.
  ``fl_<f>_T(...)`` calls the float/double helper of ``native/elementwise_math.h``;
* ``reference``: the same formula in NumPy, ``(p, t, **options) -> (l, g)``,
  and ``hessian``, ``(p, t, **options) -> h``;
* ``coefficients``: constants the body needs that are derived from the options
  (e.g. ``qm1 = q - 1``): computed in double from the options as given and
  rounded once to ``T``, as the NumPy reference gets them when it combines a
  Python float option with an array (``(q - 1) * r``). The body receives them by
  name after the options. So both backends use the same float32 coefficients,
  also for an option float32 cannot hold (q = 1 - 1e-8: 1 - q is 1e-8, not 0);
* whether it is transcendental (exp/log: the kernel runs it on more threads sooner);
* ``tame``: a bound B on |p| under which the body may drop guards it needs only for
  huge or non-finite p. The body then takes an ``int tame`` after its options; the
  loops scan each chunk of FL_EW_CHUNK (256) elements and run it with ``tame = 1``
  when every |p| <= B (no NaN, no Inf), else with ``tame = 0``. Both must give the
  same bits (tests compare). With a prepass too, the scan runs inside the tame
  prepass's loop, and a chunk that is not tame runs the guarded prepass after: the
  tame prepass must not trap on any p (it may give garbage there);
* ``prepass``: ``(name, C expression of p [and tame])``: a value the loops compute
  for a chunk of elements in a loop of its own first, then pass to the body as
  ``T name`` (after ``tame``). Same arithmetic, same bits; it splits one long
  dependency chain per element in two loops, each of which the CPU overlaps
  across more elements (the out-of-order window, not the arithmetic, bounded
  bce-with-logits: measured there);
* ``scaled_grad``: the body takes ``T gscale`` (last, after the prepass value) and
  stores gscale * dl/dp in ``*g`` itself, where it can fold the scale into a
  quotient it computes anyway (bce-with-logits: gscale / (1 + e)). The loop that
  writes the gradient straight out (``fl_ew_store_*``) passes the call's scale,
  every other loop ``(T)1``, so there the body's arithmetic is what it was;
* ``prefetch``: the loops run in chunks of FL_EW_CHUNK elements (as with tame or a
  prepass) and, in calls over large arrays (``EW_AHEAD_MIN`` in
  ``native/elementwise.pxi``, with the measurement), prefetch p, t and the
  per-element option a little ahead of each chunk (``fl_ew_ahead_T``). Same
  bits; set where measured to pay (compute-bound bodies whose input stream the
  hardware prefetcher alone lets stall);
* ``torch_weight``: the function also takes PyTorch's ``weight=``, broadcast
  against the input (beside the Keras-style ``sample_weight``).

Everything else is derived from this table: the native kernel's dispatch and
kind numbers (``native/elementwise_codegen.py`` writes
``native/elementwise_losses.h`` from it at build time), the public functions
(:mod:`fastloss.losses`), the loss classes (:mod:`fastloss.loss_objects`) and the
parametrised tests. Adding a loss is adding an entry here and rebuilding.

Rules the bodies follow: constants are cast to ``T`` (no float -> double
promotion); selects are written so that NaN falls through to NaN; no -ffast-math.
This module imports only NumPy: ``setup.py`` loads it by file path.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

LOG2 = 0.69314718055994530942


@dataclasses.dataclass(frozen=True)
class Option:
    """A named scalar option: ``default`` and the allowed range (open ends when asked).

    ``per_element``: may also be an array broadcast along the last axis (the
    kernel reads it per element); its signature default is then None (= ``default``).
    ``examples``: further values the tests run the loss with.
    ``fold_default``: when the scalar option equals ``default`` the loops run the
    body with the default as a literal, which the compiler folds (pos_weight = 1:
    pw t is t, one product fewer per element; the same bits).
    """
    name: str
    default: float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    per_element: bool = False
    examples: tuple = ()
    fold_default: bool = False


@dataclasses.dataclass(frozen=True)
class Loss:
    name: str
    cls: str                        # loss class name in fastloss.loss_objects
    doc: str                        # docstring of the public function
    native: str                     # C body, see the module docstring
    reference: Callable             # NumPy: (p, t, **options) -> (l, g)
    hessian: Callable               # NumPy: (p, t, **options) -> d2l/dp2
    options: tuple = ()
    transcendental: bool = False
    pred: str = "real"              # "real", "logit" or "probability" (checked in [0, 1])
    target: str = "real"            # "real", "probability", or "labels": {-1, 1} or {0, 1},
                                    # which gives the body the flag ``zero_one``
    pred_name: str = "pred"
    reduction: str = "mean"         # default reduction
    kink: str | None = None         # option giving |p - t| where l'' jumps (besides 0); tests
    fused_grad_store: bool = False  # compute-bound: write gscale * g inside the loop (measured)
    aliases: tuple = ()             # other public names of the function
    cls_aliases: tuple = ()         # ... and of the class
    coefficients: tuple = ()        # (name, options -> float): derived constants, see above
    torch_weight: bool = False      # takes PyTorch's weight= (broadcast against the input)
    tame: float | None = None       # |p| bound for the body's guard-free variant, see above
    prepass: tuple | None = None    # (name, C expression of p [, tame]): a first loop, see above
    scaled_grad: bool = False       # the body takes gscale and stores gscale * g, see above
    prefetch: bool = False          # chunked loops prefetching ahead in large calls, see above

    @property
    def params(self):
        """Names the native body receives, in order."""
        return (tuple(o.name for o in self.options) + tuple(c[0] for c in self.coefficients)
                + (("zero_one",) if self.target == "labels" else ()))


def _nan_or(x, v):
    """v where x is a number, x (NaN) where x is NaN: constant hessians still propagate NaN."""
    return np.where(np.isnan(x), x, v).astype(x.dtype, copy=False)


# --- mse --------------------------------------------------------------------

def _mse(p, t, **_):
    d = p - t
    return d * d, 2 * d


MSE = Loss(
    "mse", "MSELoss",
    """Mean squared error: l = (pred - target)^2; dl/dpred = 2 (pred - target).

    PyTorch ``mse_loss``; Keras ``MeanSquaredError``. With ``sample_weight``,
    'mean' divides by the element count (Keras; PyTorch's BCE and huber); PyTorch's
    ``mse_loss(weight=)`` divides by sum(weight) instead.
    """,
    native="""
        T d = p - t;
        *g = d + d;
        *h = fl_nan_or_T(d, 2);
        return d * d;
    """,
    reference=_mse, hessian=lambda p, t, **_: _nan_or(p - t, 2),
)


# --- sse --------------------------------------------------------------------

def _sse(p, t, **_):
    d = p - t
    return 0.5 * d * d, d


SSE = Loss(
    "sse", "SSELoss",
    """Half sum of squared errors: l = 0.5 (pred - target)^2; dl/dpred = pred - target.

    The seeds' ``sum_squares_error``; the default reduction is ``'sum'``.
    """,
    native="""
        T d = p - t;
        *g = d;
        *h = fl_nan_or_T(d, 1);
        return (T)0.5 * d * d;
    """,
    reference=_sse, hessian=lambda p, t, **_: _nan_or(p - t, 1), reduction="sum",
)


# --- mae --------------------------------------------------------------------

def _mae(p, t, **_):
    d = p - t
    return np.abs(d), np.sign(d)


MAE = Loss(
    "mae", "L1Loss",
    """Mean absolute error (L1): l = |pred - target|; dl/dpred = sign(pred - target), 0 at 0.

    PyTorch ``l1_loss``; Keras ``MeanAbsoluteError``. With ``sample_weight``,
    'mean' divides by the element count; PyTorch's ``l1_loss(weight=)`` divides by
    sum(weight).
    """,
    native="""
        T d = p - t;
        *g = fl_sgn_T(d);
        *h = fl_nan_or_T(d, 0);
        return fl_abs_T(d);
    """,
    reference=_mae, hessian=lambda p, t, **_: _nan_or(p - t, 0),
    aliases=("l1",), cls_aliases=("MAELoss",),
)


# --- huber ------------------------------------------------------------------

def _huber(p, t, *, delta, **_):
    d = p - t
    ad = np.abs(d)
    quad = ad <= delta
    loss = np.where(quad, 0.5 * d * d, delta * (ad - 0.5 * delta))
    grad = np.where(quad, d, delta * np.sign(d))
    return loss, grad


def _huber_h(p, t, *, delta, **_):
    d = p - t
    return np.where(np.abs(d) <= delta, 1, _nan_or(d, 0)).astype(d.dtype, copy=False)


HUBER = Loss(
    "huber", "HuberLoss",
    """Huber loss, d = pred - target:
    l = 0.5 d^2 if |d| <= delta else delta (|d| - 0.5 delta);
    dl/dpred = d if |d| <= delta else delta sign(d).

    PyTorch ``huber_loss(delta=)``; Keras ``Huber(delta=)``.
    """,
    options=(Option("delta", 1.0, low=0.0, low_open=True, examples=(0.5, 2.0)),),
    native="""
        T d = p - t;
        T ad = fl_abs_T(d);
        int quad = ad <= delta;
        *g = quad ? d : delta * fl_sgn_T(d);
        *h = quad ? (T)1 : fl_nan_or_T(d, 0);
        return quad ? (T)0.5 * d * d : delta * (ad - (T)0.5 * delta);
    """,
    reference=_huber, hessian=_huber_h, kink="delta",
)


# --- smooth_l1 --------------------------------------------------------------

def _smooth_l1(p, t, *, beta, **_):
    d = p - t
    ad = np.abs(d)
    quad = ad < beta
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = np.where(quad, 0.5 * d * d / beta, ad - 0.5 * beta)
        grad = np.where(quad, d / beta, np.sign(d))
    return loss, grad


def _smooth_l1_h(p, t, *, beta, **_):
    d = p - t
    with np.errstate(divide="ignore"):
        inv = 1 / d.dtype.type(beta)
    return np.where(np.abs(d) < beta, inv, _nan_or(d, 0)).astype(d.dtype, copy=False)


SMOOTH_L1 = Loss(
    "smooth_l1", "SmoothL1Loss",
    """Smooth L1, d = pred - target:
    l = 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta; beta = 0 is L1.

    PyTorch ``smooth_l1_loss(beta=)``; equals ``huber(delta=beta) / beta``.
    """,
    options=(Option("beta", 1.0, low=0.0, examples=(0.5, 0.0)),),
    # beta = 0: never quadratic, l = |d| - 0 and g = sign(d): L1 exactly
    native="""
        T d = p - t;
        T ad = fl_abs_T(d);
        int quad = ad < beta;
        *g = quad ? d / beta : fl_sgn_T(d);
        *h = quad ? (T)1 / beta : fl_nan_or_T(d, 0);
        return quad ? (T)0.5 * d * d / beta : ad - (T)0.5 * beta;
    """,
    reference=_smooth_l1, hessian=_smooth_l1_h, kink="beta",
)


# --- pseudo_huber -----------------------------------------------------------

def _pseudo_huber_parts(p, t, delta):
    # r = d / delta; s = sqrt(1 + r^2) = q (|r| <= 1) or |r| q with q = sqrt(1 + 1/r^2)
    # (|r| > 1: r^2 cannot overflow)
    d = p - t
    r = d / delta
    a = np.abs(r)
    big = a > 1
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        q = np.sqrt(1 + np.where(big, 1 / a, r) ** 2)
    return d, r, big, q, np.where(big, a * q, q)


def _pseudo_huber(p, t, *, delta, **_):
    d, r, big, q, s = _pseudo_huber_parts(p, t, delta)
    with np.errstate(invalid="ignore"):
        loss = np.where(big, delta * delta * (s - 1), d * d / (s + 1))
        grad = np.where(big, delta * np.sign(r) / q, d / s)
    return loss, grad


def _pseudo_huber_h(p, t, *, delta, **_):
    s = _pseudo_huber_parts(p, t, delta)[4]
    with np.errstate(over="ignore"):
        return 1 / (s * s * s)


PSEUDO_HUBER = Loss(
    "pseudo_huber", "PseudoHuberLoss",
    """Pseudo-Huber loss, d = pred - target, a smooth Huber:
    l = delta^2 (sqrt(1 + (d/delta)^2) - 1); dl/dpred = d / sqrt(1 + (d/delta)^2);
    d2l/dpred2 = (1 + (d/delta)^2)^(-3/2).

    Quadratic (0.5 d^2) near 0, linear (delta |d|) far out. Computed as
    d^2 / (s + 1) for |d| <= delta (no cancellation near 0) and without
    overflowing (d/delta)^2 beyond.
    """,
    options=(Option("delta", 1.0, low=0.0, low_open=True, examples=(0.5, 2.0)),),
    native="""
        T d = p - t;
        T r = d / delta;
        T a = fl_abs_T(r);
        int big = a > 1;
        T ia = (T)1 / a;
        T q = fl_sqrt_T((T)1 + (big ? ia * ia : r * r));
        T s = big ? a * q : q;
        *g = big ? delta * fl_sgn_T(r) / q : d / s;
        *h = (T)1 / (s * s * s);
        return big ? delta2 * (s - (T)1) : d * d / (s + (T)1);
    """,
    coefficients=(("delta2", lambda o: o["delta"] * o["delta"]),),
    reference=_pseudo_huber, hessian=_pseudo_huber_h,
)


# --- quantile ---------------------------------------------------------------

def _quantile(p, t, *, q, **_):
    r = t - p
    loss = np.where(r >= 0, q * r, (q - 1) * r)
    loss = np.where(np.isnan(r), r, loss)
    grad = np.where(r > 0, -q, np.where(r < 0, 1 - q, np.where(np.isnan(r), r, 0)))
    grad = grad.astype(p.dtype, copy=False)
    return loss, grad


QUANTILE = Loss(
    "quantile", "QuantileLoss",
    """Quantile (pinball) loss, r = target - pred:
    l = q r if r >= 0 else (q - 1) r; dl/dpred = -q (r > 0), 1 - q (r < 0), 0 (r = 0).

    scikit-learn ``mean_pinball_loss(alpha=q)``; q = 0.5 is half the MAE.
    """,
    options=(Option("q", 0.5, low=0.0, high=1.0, low_open=True, high_open=True,
                    examples=(0.1, 0.9)),),
    coefficients=(("qm1", lambda o: o["q"] - 1.0),),
    # q - 1 rounded once from the exact q (float32: q = 1 - 1e-8 is held as 1)
    native="""
        T r = t - p;
        *g = r > 0 ? -q : (r < 0 ? -qm1 : r * (T)0);
        *h = fl_nan_or_T(r, 0);
        return r >= 0 ? q * r : qm1 * r;
    """,
    reference=_quantile, hessian=lambda p, t, **_: _nan_or(t - p, 0),
)


# --- log_cosh ---------------------------------------------------------------

def _log_cosh(p, t, **_):
    # log cosh d = 0.5 log(1 + sinh^2 d), and |d| - log 2 once cosh overflows
    d = p - t
    ad = np.abs(d)
    small = ad < 20
    s = np.sinh(np.where(small, ad, 0))
    return np.where(small, 0.5 * np.log1p(s * s), ad - LOG2), np.tanh(d)


def _log_cosh_h(p, t, **_):
    with np.errstate(over="ignore"):
        c = np.cosh(p - t)
    return 1 / (c * c)


LOG_COSH = Loss(
    "log_cosh", "LogCoshLoss",
    """Log-cosh: l = log(cosh(pred - target)); dl/dpred = tanh(pred - target).

    Computed as 0.5 log1p(sinh^2 d) (|d| - log 2 for |d| >= 20): accurate near 0,
    finite for any finite d. Keras ``LogCosh``.
    """,
    # with m = expm1(|d|): sinh|d| = m (m + 2) / (2 (m + 1)), tanh|d| = m (m + 2) /
    # (m (m + 2) + 2): no cancellation for small d; sign(d) is 0 at 0, NaN for NaN.
    # h = 1 / cosh^2 d = 4 / (u + 2 + 1/u), u = e^(2|d|) (0 once u overflows)
    native="""
        T d = p - t;
        T ad = d < 0 ? -d : d;
        int small = ad < 20;
        T m = fl_expm1_T(small ? ad : (T)0);
        T mm = m * (m + (T)2);
        T s = mm / ((T)2 * (m + (T)1));
        T ea = fl_expm1_T(ad) + (T)1;
        T u = ea * ea;
        *g = fl_sgn_T(d) * (small ? mm / (mm + (T)2) : (T)1);
        *h = (T)4 / (u + (T)2 + (T)1 / u);
        return small ? (T)0.5 * fl_log1p_T(s * s) : ad - (T)0.69314718055994530942;
    """,
    reference=_log_cosh, hessian=_log_cosh_h, transcendental=True, prefetch=True,
)


# --- binary_cross_entropy ---------------------------------------------------

def clip_bounds(eps, dtype):
    """[eps, 1 - eps] as represented in ``dtype``, kept strictly inside (0, 1):
    with float32 and eps < 6e-8, 1 - eps would round to 1 and log(1 - p) to -inf."""
    dtype = np.dtype(dtype)
    one, zero = dtype.type(1), dtype.type(0)
    lo = max(dtype.type(eps), np.finfo(dtype).smallest_normal)
    hi = min(one - dtype.type(eps), np.nextafter(one, zero))
    return lo, hi


def _bce(p, t, *, eps, **_):
    lo, hi = clip_bounds(eps, p.dtype)
    pc = np.clip(p, lo, hi)
    loss = -(t * np.log(pc) + (1 - t) * np.log(1 - pc))
    grad = (pc - t) / (pc * (1 - pc))
    return loss, grad


def _bce_h(p, t, *, eps, **_):
    pc = np.clip(p, *clip_bounds(eps, p.dtype))
    return t / (pc * pc) + (1 - t) / ((1 - pc) * (1 - pc))


BCE = Loss(
    "binary_cross_entropy", "BCELoss",
    """Binary cross-entropy on probabilities, p clipped to [eps, 1 - eps]:
    l = -(t log p + (1 - t) log(1 - p)); dl/dp = (p - t) / (p (1 - p)) at the clipped p.

    PyTorch ``binary_cross_entropy``; Keras ``BinaryCrossentropy`` (``epsilon``).
    WEIGHTS (both multiply l; 'mean' divides by the element count either way):
    ``weight`` is PyTorch's, any shape broadcasting to the input from the last
    axis ((1,), (C,), (1, C), (N, C)...); ``sample_weight`` is Keras', the
    input's shape or (N,) for a 2-D input: one weight per ROW, where a (C,)
    ``weight`` is one per column. Given both, the loss is multiplied by both.
    Clipping as the seeds do keeps
    the loss finite; the gradient (and hessian, t/p^2 + (1 - t)/(1 - p)^2) is
    taken at the clipped value. ``eps`` must be
    in (0, 0.5); the bounds are taken in the input's dtype and kept strictly
    inside (0, 1) (float32: 1 - eps is at most 1 - 6e-8 however small eps is).
    ``input`` outside [0, 1] is an error; NaN propagates.
    """,
    options=(Option("eps", 1e-7, low=0.0, high=0.5, low_open=True, high_open=True,
                    examples=(1e-3,)),),
    # the clip bounds as clip_bounds() gives them (loop-invariant: computed once)
    native="""
        T lo = fl_clip_lo_T(eps), hi = fl_clip_hi_T(eps);
        T pc = p < lo ? lo : (p > hi ? hi : p);
        T qc = (T)1 - pc;
        *g = (pc - t) / (pc * qc);
        *h = t / (pc * pc) + ((T)1 - t) / (qc * qc);
        return -(t * fl_log_T(pc) + ((T)1 - t) * fl_log_T(qc));
    """,
    reference=_bce, hessian=_bce_h, transcendental=True,
    pred="probability", target="probability", pred_name="input", torch_weight=True,
)


# --- binary_cross_entropy_with_logits ---------------------------------------

def _bce_logits(x, t, *, pos_weight=1.0, **_):
    e = np.exp(-np.abs(x))
    sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    sigc = np.where(x >= 0, e / (1 + e), 1 / (1 + e))  # sigmoid(-x) = 1 - sig
    pt = pos_weight * t
    c = 1 - t + pt
    # c log1p(e) + linear part: both >= 0 for t in [0, 1], no cancellation
    loss = c * np.log1p(e) + np.where(x >= 0, (1 - t) * x, -pt * x)
    # = sig c - pt, without its cancellation for t in {0, 1}
    grad = (1 - t) * sig - pt * sigc
    return loss.astype(x.dtype, copy=False), grad.astype(x.dtype, copy=False)


def _bce_logits_h(x, t, *, pos_weight=1.0, **_):
    e = np.exp(-np.abs(x))
    sig_sigc = e / ((1 + e) * (1 + e))
    return ((1 - t + pos_weight * t) * sig_sigc).astype(x.dtype, copy=False)


BCE_LOGITS = Loss(
    "binary_cross_entropy_with_logits", "BCEWithLogitsLoss",
    """Binary cross-entropy on logits x, stable for any x:
    l = -(pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))
      = c log1p(exp(-|x|)) + ((1 - t) x if x >= 0 else -pw t x),  c = 1 - t + pw t;
    dl/dx = c sigmoid(x) - pw t.

    PyTorch ``binary_cross_entropy_with_logits`` (``pos_weight`` broadcasts
    along the last axis); Keras ``BinaryCrossentropy(from_logits=True)``.
    ``weight`` (PyTorch's, broadcast against the input from the last axis) and
    ``sample_weight`` (Keras', per element or per row of a 2-D input) multiply
    l, as for :func:`binary_cross_entropy`.
    """,
    options=(Option("pos_weight", 1.0, low=0.0, per_element=True, examples=(2.5,),
                    fold_default=True),),
    # both terms of l >= 0 for t in [0, 1]: no cancellation; g = (1 - t) sigmoid(x) -
    # pw t sigmoid(-x): none either for t in {0, 1}; h = c sigmoid(x) sigmoid(-x).
    # float: exp of x <= 0 only and log1p on [0, 1] (fewer operations). g is written
    # r ((1 - t) e - pw t) (x < 0) or r ((1 - t) - pw t e), r = 1 / (1 + e): one
    # product fewer than via sigmoid(+-x), same value (same bits for t in {0, 1}).
    # The selects come before the arithmetic: g's b e + a is one FMA, and a is also
    # lin's factor (the old `neg ? omt e - pt : omt - pt e` computed both sides).
    # tame (|x| <= 86, the usual blocks): the exp without clamp and scaling
    # multiplies, the same bits (-22% per element at AVX2, measured).
    # prepass: e = exp(-|x|) in a loop of its own (the exp's chain, then r's and
    # log1p's: one chain of ~80 cycles per element did not fit the out-of-order
    # window at the rate the FMA ports allow): in cache, one thread, 2048-element
    # blocks, 0.64-0.70 -> 0.55-0.57 ns per element at avx2, 0.32-0.33 -> 0.26 at
    # avx512; the same bits. The tame scan per 256-element chunk instead of per
    # 2048-element block (each chunk's p read just before its exps): 10M, 2
    # threads, avx2, 3.70 -> 3.32 ms (fastest; C harness of the generated loops).
    # The scan inside the exps' loop (one pass over p; see Loss.tame): 32K in
    # cache, 1 thread: baseline 1.21x, avx512 1.02x, avx2 1.01x (ab_builds).
    prepass=("e", "tame ? fl_exp_tame_T(-fl_abs_T(p)) : fl_exp_nonpos_T(-fl_abs_T(p))"),
    # scaled_grad: g = (gscale / (1 + e)) (b e + a), the mean's 1/n folded into the
    # quotient (one product and one rounding fewer); r (hessian only) is the same
    # quotient where gscale is 1. fold_default: pos_weight = 1 gives pt = t.
    # Together, 10M, 2 threads, avx2: 3.31 -> 3.10 ms fastest (C harness).
    # The selects by p's sign bit (fl_if_neg_T): p = -0 gives both sides the same
    # g, l and h (e = 1: b e + a is omt - pt either way; a p is +-0 beside c log 2).
    native="""
        T r = (T)1 / ((T)1 + e);
        T rg = fl_scaled_quot_e_T(gscale, e, r);
        T er = e * r;
        T sig = fl_if_neg_T(p, er, r);
        T sigc = fl_if_neg_T(p, r, er);
        T pt = pos_weight * t;
        T omt = (T)1 - t;
        T c = omt + pt;
        T a = fl_if_neg_T(p, -pt, omt);
        T b = fl_if_neg_T(p, omt, -pt);
        *g = rg * (b * e + a);
        *h = c * sig * sigc;
        return fl_fma_T(c, fl_log1p_e_T(e, r), a * p);
    """,
    reference=_bce_logits, hessian=_bce_logits_h, transcendental=True,
    pred="logit", target="probability", pred_name="input", fused_grad_store=True,
    torch_weight=True, tame=86.0, scaled_grad=True, prefetch=True,
)


# --- hinge, squared_hinge ---------------------------------------------------

def _signed(t, zero_one):
    return 2 * t - 1 if zero_one else t


def _hinge(p, t, *, zero_one=False, **_):
    y = _signed(t, zero_one)
    m = 1 - y * p
    loss = np.where(m <= 0, 0, m).astype(p.dtype, copy=False)
    grad = np.where(m > 0, -y, np.where(m <= 0, 0, m)).astype(p.dtype, copy=False)
    return loss, grad


def _squared_hinge(p, t, *, zero_one=False, **_):
    y = _signed(t, zero_one)
    m = 1 - y * p
    h = np.where(m <= 0, 0, m).astype(p.dtype, copy=False)
    return h * h, -2 * y * h


def _squared_hinge_h(p, t, *, zero_one=False, **_):
    y = _signed(t, zero_one)
    m = 1 - y * p
    return np.where(m > 0, 2 * y * y, _nan_or(m, 0)).astype(p.dtype, copy=False)


HINGE = Loss(
    "hinge", "HingeLoss",
    """Hinge: y in {-1, +1} (targets in {0, 1} map to 2t - 1), m = 1 - y pred:
    l = max(m, 0); dl/dpred = -y where m > 0, else 0.

    Keras ``Hinge``; with 'mean' it is the mean over all elements.
    """,
    native="""
        T y = zero_one != 0 ? t + t - (T)1 : t;
        T m = (T)1 - y * p;
        *g = m > 0 ? -y : (m <= 0 ? (T)0 : m);
        *h = fl_nan_or_T(m, 0);
        return m <= 0 ? (T)0 : m;
    """,
    reference=_hinge, target="labels",
    hessian=lambda p, t, *, zero_one=False, **_: _nan_or(1 - _signed(t, zero_one) * p, 0),
)

SQUARED_HINGE = Loss(
    "squared_hinge", "SquaredHingeLoss",
    """Squared hinge: l = max(1 - y pred, 0)^2; dl/dpred = -2 y max(1 - y pred, 0).

    Keras ``SquaredHinge``; targets as for :func:`hinge`.
    """,
    native="""
        T y = zero_one != 0 ? t + t - (T)1 : t;
        T m = (T)1 - y * p;
        T mp = m <= 0 ? (T)0 : m;
        *g = (T)-2 * y * mp;
        *h = m > 0 ? (T)2 * y * y : (m <= 0 ? (T)0 : m);
        return mp * mp;
    """,
    reference=_squared_hinge, hessian=_squared_hinge_h, target="labels",
)


LOSSES = (MSE, SSE, MAE, HUBER, SMOOTH_L1, QUANTILE, LOG_COSH, BCE, BCE_LOGITS,
          HINGE, SQUARED_HINGE, PSEUDO_HUBER)
"""All element-wise losses; a loss's position is its kind number in the native kernel."""

BY_NAME = {loss.name: loss for loss in LOSSES}

"""``fastloss demo``: train small models on data sets that ship inside scikit-learn.

* digits (8x8 images, 10 classes): a softmax MLP, cross-entropy, Adam;
* breast cancer (30 features, 2 classes): logistic regression, BCE with logits
  and hinge, SGD with momentum;
* diabetes (10 features, regression): an MLP, MSE, Huber and quantile (median)
  loss, Adam.

Layers' forward and backward are plain NumPy (:mod:`fastloss.tools.demo.nn`); loss and
optimizer go through fastloss. Each model is trained twice from the same seed
(same initial weights, same minibatch order), once with ``backend='numpy'`` and
once with ``backend='native'``; the demo checks that the loss curves agree and
times the layers, the loss and the optimizer separately. Then the seeds'
comparison of optimizers: the digits MLP trained with SGD, momentum, Nesterov,
AdaGrad, RMSProp, Adam and AMSGrad, drawn as loss curves in one PNG.

Threads: the models are small (at most 64 x 128 weights, batches of 32-64
rows), far below the sizes where a second thread pays, and a parallel region
on a busy machine can stall for a scheduler time slice. So the demo runs with
one thread for fastloss and for NumPy's BLAS (``threads=``/``--threads`` to
change it). ``fastloss bench`` measures the kernels at sizes where threads matter.

Needs the optional extra ``demo`` (scikit-learn, tqdm, matplotlib).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from dataclasses import dataclass, field

import numpy as np

# import name -> pip name of the demo's optional packages
DEMO_EXTRAS = {"sklearn": "scikit-learn", "tqdm": "tqdm", "matplotlib": "matplotlib"}


def missing_extras():
    """pip names of the demo's optional packages that are not installed."""
    return [pip for mod, pip in DEMO_EXTRAS.items() if importlib.util.find_spec(mod) is None]


def install_hint(missing):
    """What to run to get ``missing`` (pip names)."""
    return (f"  pip install {' '.join(missing)}\n"
            "or install fastloss with its demo extra (from a fastloss checkout):\n"
            '  pip install ".[demo]"')


@dataclass(frozen=True)
class Task:
    """A model and how it is trained."""

    hidden: tuple       # hidden layer widths; () is a linear model
    losses: tuple       # ((label, fastloss function name, options), ...)
    optimizer: str      # a fastloss.optim class
    opt_kwargs: dict
    batch: int
    epochs: int
    quick_epochs: int


TASKS = {
    "digits": Task((128,), (("cross_entropy", "cross_entropy", {}),),
                   "Adam", {"lr": 2e-3}, 32, 20, 3),
    "breast_cancer": Task((), (("bce_logits", "binary_cross_entropy_with_logits", {}),
                               ("hinge", "hinge", {})),
                          "SGD", {"lr": 0.01, "momentum": 0.9}, 32, 30, 3),
    "diabetes": Task((64,), (("mse", "mse", {}), ("huber", "huber", {"delta": 1.0}),
                             ("quantile", "quantile", {"q": 0.5})),
                     "Adam", {"lr": 3e-3}, 32, 60, 5),
}

# the seeds' comparison on the digits MLP: label -> (fastloss.optim class, options)
OPTIMIZERS = {
    "SGD": ("SGD", {"lr": 0.1}),
    "Momentum": ("SGD", {"lr": 0.02, "momentum": 0.9}),
    "Nesterov": ("SGD", {"lr": 0.02, "momentum": 0.9, "nesterov": True}),
    "AdaGrad": ("Adagrad", {"lr": 0.05}),
    "RMSProp": ("RMSprop", {"lr": 1e-3}),
    "Adam": ("Adam", {"lr": 2e-3}),
    "AMSGrad": ("Adam", {"lr": 2e-3, "amsgrad": True}),
}

# the curves of the two backends agree to this relative tolerance: float32 training with
# different (equally exact) summation orders, so not bit for bit
CURVE_RTOL = 1e-3


@dataclass
class Run:
    """One training run: the loss per epoch, the test score, and where the time went.

    ``t_layers``, ``t_loss``, ``t_opt``: totals over all steps, in seconds;
    ``step_times``: per step (layers, loss, optimizer), for medians that one stalled
    step on a busy machine cannot move. Run :func:`warm_up` first, so that they do not
    include Numba compiling its kernels (or loading them from its cache)."""

    task: str
    loss: str
    backend: str
    optimizer: str
    curve: list = field(default_factory=list)
    score: float = float("nan")
    score_name: str = ""
    t_layers: float = 0.0
    t_loss: float = 0.0
    t_opt: float = 0.0
    steps: int = 0
    step_times: list = field(default_factory=list)

    def median_us(self, part):
        """Median microseconds per step of 'layers', 'loss', 'optim' or 'loss+optim'."""
        t = np.asarray(self.step_times).reshape(-1, 3)
        col = {"layers": t[:, 0], "loss": t[:, 1], "optim": t[:, 2],
               "loss+optim": t[:, 1] + t[:, 2]}[part]
        return 1e6 * float(np.median(col)) if len(col) else float("nan")


@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_scale: float = 1.0  # regression targets are standardised; MAE is reported in raw units


def load(name, seed=0, test=0.2):
    """A float32 train/test split (80/20) of scikit-learn's ``load_<name>``, features
    standardised with the training statistics. digits: int64 labels (N,); breast
    cancer: float32 0/1 targets (N, 1); diabetes: standardised float32 targets (N, 1)."""
    from sklearn import datasets

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    idx = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test)
    te, tr = idx[:n_test], idx[n_test:]
    mu, sd = x[tr].mean(0), x[tr].std(0)
    x = ((x - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
    y_scale = 1.0
    if name == "digits":
        y = y.astype(np.int64)
    elif name == "breast_cancer":
        y = y.astype(np.float32)[:, None]
    else:
        y_mu, y_scale = float(y[tr].mean()), float(y[tr].std())
        y = ((y - y_mu) / y_scale).astype(np.float32)[:, None]
    return Data(x[tr], y[tr], x[te], y[te], y_scale)


def _score(task, out, data):
    y = data.y_test
    if task == "digits":
        return "accuracy", float(np.mean(out.argmax(1) == y))
    if task == "breast_cancer":
        return "accuracy", float(np.mean((out[:, 0] > 0) == (y[:, 0] > 0.5)))
    return "MAE", float(np.mean(np.abs(out - y))) * data.y_scale


def train(task, loss, backend, data, epochs, optimizer, opt_kwargs, *, seed=0, progress=None,
          max_steps=None):
    """Train one model of ``TASKS[task]`` with minibatch steps; returns a :class:`Run`.

    ``loss`` is a label of ``TASKS[task].losses``. The seed fixes the initial
    weights and the minibatch order, so runs differ only by backend/optimizer.
    ``max_steps`` stops early (for :func:`warm_up`)."""
    import fastloss
    import fastloss.optim as optim

    from .nn import MLP

    spec = TASKS[task]
    fn_name, loss_opts = {lab: (fn, kw) for lab, fn, kw in spec.losses}[loss]
    loss_fn = getattr(fastloss, fn_name)
    # without the compiled extension the losses run on NumPy (the optimizers' native
    # kernels are Numba's, there either way)
    loss_backend = backend if fastloss.native_available() else "numpy"
    n_out = int(data.y_train.max()) + 1 if task == "digits" else data.y_train.shape[1]
    rng = np.random.default_rng(seed)
    model = MLP((data.x_train.shape[1], *spec.hidden, n_out), rng)
    opt = getattr(optim, optimizer)(model.params, backend=backend, **opt_kwargs)
    run = Run(task, loss, backend, optimizer)
    clock = time.perf_counter
    n, batch = len(data.x_train), spec.batch
    for _ in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch):
            if run.steps == max_steps:
                return run
            idx = order[start:start + batch]
            xb, yb = data.x_train[idx], data.y_train[idx]
            t0 = clock()
            out = model.forward(xb)
            t1 = clock()
            value, grad = loss_fn(out, yb, return_grad=True, backend=loss_backend,
                                  **loss_opts)
            t2 = clock()
            model.backward(grad)
            t3 = clock()
            opt.step(model.grads)
            t4 = clock()
            run.t_layers += (t1 - t0) + (t3 - t2)
            run.t_loss += t2 - t1
            run.t_opt += t4 - t3
            run.step_times.append(((t1 - t0) + (t3 - t2), t2 - t1, t4 - t3))
            run.steps += 1
            total += float(value) * len(idx)
            if progress is not None:
                progress.update(1)
        run.curve.append(total / n)
    run.score_name, run.score = _score(task, model.forward(data.x_test), data)
    return run


def warm_up(configs, datasets, steps=3):
    """A few untimed steps of each ``(task, loss, backend, optimizer, opt_kwargs)``: Numba
    compiles (or loads from its cache) every kernel variant the runs will use; some
    variants are only reached at the second step (SGD's momentum buffer is created at
    the first). Returns the seconds it took."""
    t0 = time.perf_counter()
    for task, loss, backend, optimizer, kw in configs:
        train(task, loss, backend, datasets[task], 1, optimizer, kw, max_steps=steps)
    return time.perf_counter() - t0


def _steps(data, epochs, batch):
    return epochs * -(-len(data.x_train) // batch)


def _table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(headers, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(f"{c:>{w}}" for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def _fmt_score(run):
    return f"acc {run.score:.3f}" if run.score_name == "accuracy" else f"MAE {run.score:.1f}"


def _rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@contextlib.contextmanager
def _thread_limits(n):
    """fastloss (OpenMP, Numba) and NumPy's BLAS limited to ``n`` threads."""
    import fastloss

    with contextlib.ExitStack() as stack:
        stack.enter_context(fastloss.num_threads(n))
        try:  # a dependency of scikit-learn, so present with the demo extra
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=n, user_api="blas"))
        except ImportError:  # pragma: no cover
            pass
        yield n


def run(quick=False, out_dir=".", echo=print, threads=1):
    """The whole demo; returns ``{'runs', 'agree', 'max_rel_diff', 'optimizers', 'png'}``."""
    missing = missing_extras()
    if missing:
        raise ImportError("fastloss demo needs " + ", ".join(missing) + ":\n"
                          + install_hint(missing))
    with _thread_limits(threads):
        return _run(quick, out_dir, echo, threads)


def _bar(total, desc):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", mininterval=0.5)


def _run(quick, out_dir, echo, threads):
    import fastloss

    backends = ["numpy", "native"]
    native_note = "" if fastloss.native_available() else \
        " (the compiled extension is not built: losses run on NumPy in both)"
    plural = "s" if threads > 1 else ""
    echo(f"fastloss demo{' --quick' if quick else ''}: {threads} thread{plural} for fastloss "
         f"and BLAS; backends numpy vs native{native_note}")
    datasets = {task: load(task) for task in TASKS}
    epochs = {t: (s.quick_epochs if quick else s.epochs) for t, s in TASKS.items()}
    plan = [(task, lab, be) for task, spec in TASKS.items()
            for lab, _, _ in spec.losses for be in backends]
    total = sum(_steps(datasets[t], epochs[t], TASKS[t].batch) for t, _, _ in plan)
    echo("warming up: Numba compiles the optimizer kernels on first use (cached on disk)")
    startup = warm_up([(t, lab, be, TASKS[t].optimizer, TASKS[t].opt_kwargs)
                       for t, lab, be in plan] +
                      [("digits", "cross_entropy", "native", name, kw)
                       for name, kw in OPTIMIZERS.values()], datasets)
    runs = {}
    with _bar(total, "training (numpy vs native)") as bar:
        for task, lab, be in plan:
            spec = TASKS[task]
            runs[task, lab, be] = train(task, lab, be, datasets[task], epochs[task],
                                        spec.optimizer, spec.opt_kwargs, progress=bar)

    rows, agree, worst = [], True, 0.0
    for task, spec in TASKS.items():
        for lab, _, _ in spec.losses:
            ref = runs[task, lab, "numpy"]
            for be in backends:
                r = runs[task, lab, be]
                if be == "numpy":
                    speedup = "-"
                else:
                    diff = _rel_diff(r.curve, ref.curve)
                    worst = max(worst, diff)
                    agree &= diff <= CURVE_RTOL
                    fast = r.median_us("loss+optim")
                    speedup = f"{ref.median_us('loss+optim') / fast:.1f}x" if fast else "-"
                rows.append([task, lab, spec.optimizer, r.steps, be, _fmt_score(r),
                             f"{r.curve[-1]:.4f}", f"{r.median_us('layers'):.0f}",
                             f"{r.median_us('loss'):.0f}", f"{r.median_us('optim'):.0f}",
                             speedup])
    echo(_table(["task", "loss", "optimizer", "steps", "backend", "test score", "final loss",
                 "layers us", "loss us", "optim us", "loss+optim speed-up"], rows))
    echo(f"(times: median microseconds per training step, after {startup:.2f} s of warm-up in "
         "which Numba compiled its kernels or loaded them from its cache; MAE in the "
         "diabetes target's units)")
    if agree:
        echo(f"OK: the native backend's loss curves agree with the NumPy backend's "
             f"(largest relative difference over all epochs {worst:.1e}, tolerance {CURVE_RTOL:g})")
    else:
        echo(f"MISMATCH: a native loss curve differs from the NumPy backend's by {worst:.1e} "
             f"(tolerance {CURVE_RTOL:g})")

    # the seeds' optimizer comparison on the digits MLP (native backend)
    spec, data = TASKS["digits"], datasets["digits"]
    ep = epochs["digits"]
    curves, rows = {}, []
    with _bar(len(OPTIMIZERS) * _steps(data, ep, spec.batch), "optimizers on digits") as bar:
        for label, (name, kw) in OPTIMIZERS.items():
            r = train("digits", "cross_entropy", "native", data, ep, name, kw, progress=bar)
            curves[f"{label} (lr {kw['lr']:g})"] = r.curve
            rows.append([label, f"{name}({', '.join(f'{k}={v}' for k, v in kw.items())})",
                         f"{r.score:.3f}", f"{r.curve[-1]:.4f}",
                         f"{r.median_us('optim'):.0f}"])
    echo(_table(["optimizer", "fastloss.optim", "test accuracy", "final loss",
                 "optim us per step"], rows))
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.abspath(os.path.join(out_dir, "fastloss_optimizers.png"))
    hidden = "-".join(str(h) for h in spec.hidden)
    plot_curves(curves, png, f"digits MLP 64-{hidden}-10, cross-entropy, batch {spec.batch}, "
                "same seed")
    echo(f"optimizer loss curves: {png}")
    return {"runs": runs, "agree": agree, "max_rel_diff": worst, "optimizers": curves,
            "png": png}


def plot_curves(curves, path, title):
    """One training-loss curve per optimizer (log scale), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "v", "D", "P", "X"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for k, (label, curve) in enumerate(curves.items()):
        ax.plot(np.arange(1, len(curve) + 1), curve, ls=styles[k % len(styles)],
                marker=markers[k % len(markers)], ms=3.5, lw=1.4, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss: mean cross-entropy over the epoch")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)

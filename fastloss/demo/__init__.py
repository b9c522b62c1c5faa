"""``fastloss demo``: train small models on scikit-learn's bundled data sets.

Each model is trained twice from the same seed, once on the NumPy backend and
once on the native backend; the demo checks that the loss curves agree and
times layers / loss / optimizer separately. Then the seeds' comparison of
optimizers on the digits MLP, drawn as loss curves in one PNG.

Needs the optional extra ``demo`` (scikit-learn, tqdm, matplotlib).
"""
from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

DEMO_EXTRAS = ("sklearn", "tqdm", "matplotlib")
INSTALL_HINT = 'pip install "fastloss[demo]"  (scikit-learn, tqdm, matplotlib)'


def missing_extras():
    """Names of the demo's optional packages that are not installed."""
    return [m for m in DEMO_EXTRAS if importlib.util.find_spec(m) is None]


@dataclass
class Run:
    """One training run: the loss per epoch, the metric, and where the time went."""

    task: str
    loss_name: str
    backend: str
    curve: list = field(default_factory=list)
    metric: float = float("nan")
    metric_name: str = ""
    t_layers: float = 0.0
    t_loss: float = 0.0
    t_opt: float = 0.0


def _split(x, y, rng, test=0.2):
    idx = rng.permutation(len(x))
    n_test = int(len(x) * test)
    te, tr = idx[:n_test], idx[n_test:]
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
    x = ((x - mu) / sd).astype(np.float32)
    return x[tr], y[tr], x[te], y[te]


def load(name):
    """(x_train, y_train, x_test, y_test) for 'digits', 'breast_cancer' or 'diabetes'."""
    from sklearn import datasets

    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    rng = np.random.default_rng(0)
    if name == "diabetes":
        y = ((y - y.mean()) / y.std()).astype(np.float32)[:, None]
    elif name == "breast_cancer":
        y = y.astype(np.float32)[:, None]
    return _split(x, y, rng)


# --- the losses, each as (fastloss call, prediction -> metric) ------------------

def _loss_fn(name):
    import fastloss

    table = {
        "cross_entropy": lambda out, y, be: fastloss.cross_entropy(out, y, return_grad=True,
                                                                   backend=be),
        "bce_logits": lambda out, y, be: fastloss.binary_cross_entropy_with_logits(
            out, y, return_grad=True, backend=be),
        "hinge": lambda out, y, be: fastloss.hinge(out, y, return_grad=True, backend=be),
        "mse": lambda out, y, be: fastloss.mse(out, y, return_grad=True, backend=be),
        "huber": lambda out, y, be: fastloss.huber(out, y, return_grad=True, backend=be),
        "quantile": lambda out, y, be: fastloss.quantile(out, y, q=0.5, return_grad=True,
                                                         backend=be),
    }
    return table[name]


def _metric(task, out, y):
    if task == "digits":
        return "accuracy", float(np.mean(out.argmax(1) == y))
    if task == "breast_cancer":
        return "accuracy", float(np.mean((out[:, 0] > 0) == (y[:, 0] > 0.5)))
    return "MAE (std units)", float(np.mean(np.abs(out - y)))


TASKS = {  # task: (hidden sizes, losses, optimizer factory name, options)
    "digits": ((256,), ("cross_entropy",), "Adam", {"lr": 1e-3}),
    "breast_cancer": ((), ("bce_logits", "hinge"), "SGD", {"lr": 0.05, "momentum": 0.9}),
    "diabetes": ((128,), ("mse", "huber", "quantile"), "Adam", {"lr": 3e-3}),
}

OPTIMIZERS = {  # the seeds' comparison
    "SGD": ("SGD", {"lr": 0.05}),
    "Momentum": ("SGD", {"lr": 0.05, "momentum": 0.9}),
    "Nesterov": ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "AdaGrad": ("Adagrad", {"lr": 0.02}),
    "RMSProp": ("RMSprop", {"lr": 1e-3}),
    "Adam": ("Adam", {"lr": 1e-3}),
    "AMSGrad": ("Adam", {"lr": 1e-3, "amsgrad": True}),
}


def train(task, loss_name, backend, data, epochs, opt_name, opt_kwargs, batch=64, seed=0,
          hidden=None, progress=None):
    """Train one model with minibatch steps; returns a :class:`Run`."""
    import fastloss.optim as optim

    from .nn import MLP

    xtr, ytr, xte, yte = data
    n_out = int(ytr.max()) + 1 if task == "digits" else ytr.shape[1]
    rng = np.random.default_rng(seed)
    hidden = TASKS[task][0] if hidden is None else hidden
    model = MLP((xtr.shape[1], *hidden, n_out), rng)
    opt = getattr(optim, opt_name)(model.params, backend=backend, **opt_kwargs)
    loss_fn = _loss_fn(loss_name)
    run = Run(task, loss_name, backend)
    clock = time.perf_counter
    for _ in range(epochs):
        order = rng.permutation(len(xtr))
        total, count = 0.0, 0
        for start in range(0, len(xtr), batch):
            idx = order[start:start + batch]
            xb, yb = xtr[idx], ytr[idx]
            t0 = clock()
            out = model.forward(xb)
            t1 = clock()
            loss, grad = loss_fn(out, yb, backend)
            t2 = clock()
            model.backward(grad)
            t3 = clock()
            opt.step(model.grads)
            t4 = clock()
            run.t_layers += (t1 - t0) + (t3 - t2)
            run.t_loss += t2 - t1
            run.t_opt += t4 - t3
            total += float(loss) * len(idx)
            count += len(idx)
            if progress is not None:
                progress.update(1)
        run.curve.append(total / count)
    run.metric_name, run.metric = _metric(task, model.forward(xte), yte)
    return run


def _steps(data, epochs, batch=64):
    return epochs * -(-len(data[0]) // batch)


def _table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(headers, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(f"{c:>{w}}" for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def run(quick=False, out_dir=".", echo=print):
    """The whole demo. Returns a dict with the runs and the PNG path."""
    missing = missing_extras()
    if missing:
        raise ImportError(f"fastloss demo needs {', '.join(missing)}: {INSTALL_HINT}")
    from tqdm.auto import tqdm

    import fastloss

    backends = ["numpy"] + (["native"] if fastloss.native_available() else [])
    epochs = {"digits": 2, "breast_cancer": 3, "diabetes": 3} if quick else \
             {"digits": 15, "breast_cancer": 40, "diabetes": 60}
    datasets = {task: load(task) for task in TASKS}
    plan = [(task, loss, be) for task, (_, losses, _, _) in TASKS.items()
            for loss in losses for be in backends]
    total = sum(_steps(datasets[t], epochs[t]) for t, _, _ in plan)
    runs = {}
    with tqdm(total=total, desc="training (numpy vs native)", unit="step") as bar:
        for task, loss, be in plan:
            _, _, opt_name, opt_kw = TASKS[task]
            runs[task, loss, be] = train(task, loss, be, datasets[task], epochs[task],
                                         opt_name, opt_kw, progress=bar)
    rows, agree = [], True
    for task, (_, losses, opt_name, _) in TASKS.items():
        for loss in losses:
            ref = runs[task, loss, "numpy"]
            for be in backends:
                r = runs[task, loss, be]
                ok = np.allclose(r.curve, ref.curve, rtol=1e-3, atol=1e-5)
                agree &= bool(ok)
                fast = r.t_loss + r.t_opt
                speedup = (ref.t_loss + ref.t_opt) / fast if fast else float("nan")
                rows.append([task, loss, opt_name, be, f"{r.metric:.4f}", r.metric_name,
                             f"{r.curve[-1]:.4f}", f"{1e3 * r.t_layers:.1f}",
                             f"{1e3 * r.t_loss:.1f}", f"{1e3 * r.t_opt:.1f}",
                             f"{speedup:.2f}x", "yes" if ok else "NO"])
    echo(_table(["task", "loss", "optimizer", "backend", "score", "metric", "final loss",
                 "layers ms", "loss ms", "optim ms", "loss+optim speed-up", "curve = numpy"],
                rows))
    echo("loss curves of the native backend agree with the NumPy reference"
         if agree else "WARNING: some loss curves differ from the NumPy reference")

    # the seeds' optimizer comparison on the digits MLP
    be = backends[-1]
    data = datasets["digits"]
    ep = 2 if quick else 12
    curves, rows = {}, []
    with tqdm(total=len(OPTIMIZERS) * _steps(data, ep), desc="optimizers on digits",
              unit="step") as bar:
        for label, (name, kw) in OPTIMIZERS.items():
            r = train("digits", "cross_entropy", be, data, ep, name, kw, progress=bar)
            curves[label] = r.curve
            rows.append([label, f"{r.metric:.4f}", f"{r.curve[-1]:.4f}"])
    echo(_table(["optimizer", "test accuracy", "final loss"], rows))
    png = os.path.abspath(os.path.join(out_dir, "fastloss_optimizers.png"))
    plot_curves(curves, png, f"digits MLP 64-256-10, cross-entropy, backend={be}")
    echo(f"loss curves: {png}")
    return {"runs": runs, "agree": agree, "optimizers": curves, "png": png}


def plot_curves(curves, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for label, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean cross-entropy)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

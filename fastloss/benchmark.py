"""``fastloss bench``: time each kernel x size x dtype x backend, without pytest.

Peers: the NumPy backend, the native backend and, when installed, PyTorch at
the same thread count. Each case checks every peer's result against the
NumPy reference before it is timed, so a fast wrong kernel cannot win.
Reported per case: median time, ratio of native to each peer, GB/s and the
share of the streaming bandwidth measured at start.
"""
from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass

import numpy as np

SIZES = {"quick": {"elementwise": [100_000], "ce": [(256, 10), (512, 1000)],
                   "optim": [100_000]},
         "full": {"elementwise": [100_000, 10_000_000],
                  "ce": [(256, 10), (4096, 1000), (1024, 32000)],
                  "optim": [100_000, 10_000_000]}}


@dataclass
class Case:
    """One kernel at one size: a zero-argument callable per peer."""

    kernel: str
    size: str
    dtype: str
    nbytes: int          # bytes a single-pass kernel must move (for GB/s)
    bandwidth_kind: str  # 'triad' (read 2 write 1) or 'inplace' (update in place)
    runners: dict
    check: callable = None


def _torch():
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def _fmt_size(n):
    for unit, div in (("M", 1_000_000), ("K", 1_000)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


# --- element-wise losses ---------------------------------------------------------

ELEMENTWISE = {
    # name: (fastloss function name, torch functional name, target kind)
    "mse": ("mse", "mse_loss", "real"),
    "huber": ("huber", "huber_loss", "real"),
    "bce_logits": ("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits",
                   "binary"),
}


def elementwise_cases(sizes, dtypes, with_torch=True):
    import fastloss

    torch = _torch() if with_torch else None
    for name, (fn_name, torch_name, kind) in ELEMENTWISE.items():
        fn = getattr(fastloss, fn_name)
        for n in sizes:
            for dt in dtypes:
                rng = np.random.default_rng(0)
                x = rng.standard_normal(n).astype(dt)
                t = (rng.random(n) < 0.5).astype(dt) if kind == "binary" else \
                    rng.standard_normal(n).astype(dt)
                buf = np.empty_like(x)
                runners = {
                    "numpy": lambda fn=fn, x=x, t=t, buf=buf:
                        fn(x, t, return_grad=True, out=buf, backend="numpy"),
                    "native": lambda fn=fn, x=x, t=t, buf=buf:
                        fn(x, t, return_grad=True, out=buf, backend="native"),
                }
                if torch is not None:
                    tf = getattr(torch.nn.functional, torch_name)
                    xt = torch.from_numpy(x.copy()).requires_grad_()
                    tt = torch.from_numpy(t)

                    def torch_step(tf=tf, xt=xt, tt=tt):
                        xt.grad = None
                        loss = tf(xt, tt)
                        loss.backward()
                        return loss.detach().numpy(), xt.grad.numpy()

                    runners["torch"] = torch_step
                yield Case(name, _fmt_size(n), np.dtype(dt).name, 3 * n * np.dtype(dt).itemsize,
                           "triad", runners, _check_pair)


def _check_pair(results, dtype):
    """Every peer's (loss, grad) equals the NumPy reference's."""
    ref_loss, ref_grad = (np.asarray(r, np.float64) for r in results["numpy"])
    tol = 1e-4 if dtype == "float32" else 1e-9
    for peer, (loss, grad) in results.items():
        if not np.allclose(np.asarray(loss, np.float64), ref_loss, rtol=tol, atol=tol):
            raise AssertionError(f"{peer}: loss differs from the reference")
        if not np.allclose(np.asarray(grad, np.float64), ref_grad, rtol=tol, atol=tol * 1e-2):
            raise AssertionError(f"{peer}: gradient differs from the reference")


# --- timing -------------------------------------------------------------------

def time_callable(fn, min_rounds=5, max_time=1.0):
    """Median wall time of ``fn()`` over at least ``min_rounds`` calls after a warm-up."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_rounds or (time.perf_counter() - start < max_time and
                                      len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run_cases(cases, bandwidth, min_rounds=5, max_time=1.0, progress=None):
    rows = []
    for case in cases:
        if case.check is not None:
            case.check({peer: fn() for peer, fn in case.runners.items()}, case.dtype)
        med = {peer: time_callable(fn, min_rounds, max_time) for peer, fn in case.runners.items()}
        gbs = case.nbytes / med["native"] / 1e9 if "native" in med else float("nan")
        bw = bandwidth.get(case.bandwidth_kind) if bandwidth else None
        rows.append({
            "kernel": case.kernel, "size": case.size, "dtype": case.dtype,
            "median_s": med,
            "speedup": {peer: med[peer] / med["native"] for peer in med if "native" in med},
            "native_GBps": gbs,
            "pct_bandwidth": 100 * gbs / bw if bw else None,
        })
        if progress is not None:
            progress.update(1)
    return rows


def format_rows(rows):
    peers = sorted({p for r in rows for p in r["median_s"]}, key=["native", "numpy",
                                                                 "torch"].index)
    head = ["kernel", "size", "dtype"] + [f"{p} ms" for p in peers] + \
        [f"x vs {p}" for p in peers if p != "native"] + ["GB/s", "% bw"]
    body = []
    for r in rows:
        line = [r["kernel"], r["size"], r["dtype"]]
        line += [f"{1e3 * r['median_s'][p]:.3f}" if p in r["median_s"] else "-" for p in peers]
        line += [f"{r['speedup'][p]:.2f}" if p in r["speedup"] else "-"
                 for p in peers if p != "native"]
        line += [f"{r['native_GBps']:.1f}",
                 "-" if r["pct_bandwidth"] is None else f"{r['pct_bandwidth']:.0f}%"]
        body.append(line)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    out = ["  ".join(f"{h:>{w}}" for h, w in zip(head, widths))]
    out.append("-" * len(out[0]))
    out += ["  ".join(f"{c:>{w}}" for c, w in zip(b, widths)) for b in body]
    return "\n".join(out)


def plot_rows(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['kernel']}\n{r['size']} {r['dtype'][5:]}" for r in rows]
    peers = [p for p in ("numpy", "torch") if any(p in r["speedup"] for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4.5), dpi=110)
    width = 0.8 / max(1, len(peers))
    for k, peer in enumerate(peers):
        vals = [r["speedup"].get(peer, np.nan) for r in rows]
        ax.bar(np.arange(len(rows)) + k * width, vals, width, label=f"native vs {peer}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(rows)) + width * (len(peers) - 1) / 2, labels, fontsize=7)
    ax.set_ylabel("speed-up of fastloss native (x)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def to_json(rows, bandwidth, meta, path):
    with open(path, "w") as f:
        json.dump({"meta": meta, "bandwidth_GBps": bandwidth, "results": rows}, f, indent=2)


# --- cross-entropy ----------------------------------------------------------------

def ce_cases(shapes, dtypes, with_torch=True):
    import fastloss

    torch = _torch() if with_torch else None
    for n, c in shapes:
        for dt in dtypes:
            rng = np.random.default_rng(0)
            x = (3 * rng.standard_normal((n, c))).astype(dt)
            y = rng.integers(0, c, n)
            buf = np.empty_like(x)
            runners = {
                be: (lambda be=be: fastloss.cross_entropy(x, y, return_grad=True, out=buf,
                                                          backend=be))
                for be in ("numpy", "native")
            }
            if torch is not None:
                xt = torch.from_numpy(x.copy()).requires_grad_()
                yt = torch.from_numpy(y)

                def torch_step(xt=xt, yt=yt):
                    xt.grad = None
                    loss = torch.nn.functional.cross_entropy(xt, yt)
                    loss.backward()
                    return loss.detach().numpy(), xt.grad.numpy()

                runners["torch"] = torch_step
            yield Case("cross_entropy", f"{n}x{c}", np.dtype(dt).name,
                       2 * n * c * np.dtype(dt).itemsize, "triad", runners, _check_pair)


# --- optimizers ---------------------------------------------------------------------

OPTIMIZERS = {  # name: (fastloss.optim class, torch class, kwargs, state buffers)
    "adam": ("Adam", "Adam", {"lr": 1e-3}, 2),
    "sgd_momentum": ("SGD", "SGD", {"lr": 1e-2, "momentum": 0.9}, 1),
    "rmsprop": ("RMSprop", "RMSprop", {"lr": 1e-3}, 1),
}


def optim_cases(sizes, dtypes, with_torch=True):
    import fastloss.optim as optim

    torch = _torch() if with_torch else None
    for name, (ours, theirs, kw, nstate) in OPTIMIZERS.items():
        for n in sizes:
            for dt in dtypes:
                rng = np.random.default_rng(0)
                p0 = rng.standard_normal(n).astype(dt)
                g = (0.1 * rng.standard_normal(n)).astype(dt)
                runners, params = {}, {}
                for be in ("numpy", "native"):
                    params[be] = p0.copy()
                    opt = getattr(optim, ours)([params[be]], backend=be, **kw)
                    runners[be] = (lambda opt=opt, p=params[be]: (opt.step([g]), p)[1])
                if torch is not None:
                    pt = torch.nn.Parameter(torch.from_numpy(p0.copy()))
                    pt.grad = torch.from_numpy(g)
                    for variant, extra in (("torch", {}), ("torch_fused", {"fused": True})):
                        try:
                            topt = getattr(torch.optim, theirs)([pt], **kw, **extra)
                        except (RuntimeError, TypeError, ValueError):
                            continue  # this torch has no fused variant for it
                        runners[variant] = (lambda topt=topt, pt=pt:
                                            (topt.step(), pt.detach().numpy())[1])
                # bytes: read p, g, state; write p, state
                nbytes = (2 + nstate + 1 + nstate) * n * np.dtype(dt).itemsize
                yield Case(name, _fmt_size(n), np.dtype(dt).name, nbytes, "inplace", runners,
                           _check_params)


def _check_params(results, dtype):
    """After one step from the same start, every peer's params match NumPy's.

    Peers were stepped once each by the check call, from identical state."""
    ref = np.asarray(results["numpy"], np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for peer, p in results.items():
        if not np.allclose(np.asarray(p, np.float64), ref, rtol=tol, atol=tol):
            raise AssertionError(f"{peer}: parameters differ from the reference after one step")


def all_cases(preset, dtypes, with_torch=True, kernels=None):
    """Every case of a size preset, optionally only the named kernels."""
    torch = _torch() if with_torch else None
    if torch is not None:
        from . import _threads

        torch.set_num_threads(_threads.get_num_threads())
    groups = [elementwise_cases(preset["elementwise"], dtypes, with_torch),
              ce_cases(preset["ce"], dtypes, with_torch),
              optim_cases(preset["optim"], dtypes, with_torch)]
    for group in groups:
        for case in group:
            if kernels is None or case.kernel in kernels:
                yield case


def measure_bandwidth(quick=False):
    """Streaming bandwidth in GB/s: {'triad': ..., 'inplace': ...}."""
    from .bandwidth import measure_bandwidth as measure

    return measure(n=4_000_000 if quick else 40_000_000)

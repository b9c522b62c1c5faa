"""``fastloss bench``: time each kernel x size x dtype x backend, without pytest.

Peers: the NumPy backend, the native backend and, when installed, PyTorch at
the same thread count (for optimizers: torch's default for-loop step and its
fused CPU step where one exists). Every case checks each peer's result against
the NumPy reference before anything is timed, so a fast wrong kernel cannot win:

* losses: loss and gradient, every peer from its own output buffer;
* optimizers: fresh instances of every peer, from the same parameters and empty
  state, take three steps with three different gradients and must end with the
  same parameters (one step of Adam from empty state is ``lr * sign(g)`` whatever
  the second moment, so a single step would check little). The instances that
  are then timed are separate ones.

* models (``--models``): an Adam step (lr 1e-3, float32, gradients already set) on
  whole models, fastloss (``fastloss.torch.optim.Adam`` on the module's parameters, or
  ``fastloss.optim.Adam`` on NumPy arrays) against ``torch.optim.Adam(fused=True)``
  at the same thread count; three steps of fresh instances must agree first.

Reported per case: median time per call of each peer (the peers are timed in
alternating rounds, so load on a shared machine falls on all of them alike),
the speed-up of native
over each peer (peer time / native time), native GB/s (bytes a single pass must
move / median) and that as a share of the streaming bandwidth measured at start
(``fastloss.tools.bandwidth``: the triad for losses, the in-place update for optimizers).
"""
from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

# size presets; 'tiny' (hidden --tiny) only exercises the machinery, for tests
SIZES = {
    "tiny": {"elementwise": [10_000], "ce": [(64, 10)], "optim": [10_000],
             "bandwidth_n": 1_000_000, "rounds": 1, "max_time": 0.01},
    "quick": {"elementwise": [100_000], "ce": [(256, 10), (512, 1000)], "optim": [100_000],
              "bandwidth_n": 4_000_000, "rounds": 3, "max_time": 0.2},
    "full": {"elementwise": [100_000, 10_000_000],
             "ce": [(256, 10), (4096, 1000), (1024, 32000)],
             "optim": [100_000, 10_000_000],
             "bandwidth_n": 40_000_000, "rounds": 5, "max_time": 1.0},
}

DTYPES = ("float32", "float64", "bfloat16")
# relative tolerance of a peer's loss/gradient against the NumPy reference: float32 and
# bfloat16 results differ in the rounding of sums and, for bfloat16, in one ulp of the
# stored gradient (2^-8 relative)
LOSS_RTOL = {"float32": 2e-4, "float64": 1e-9, "bfloat16": 1e-2}


def _np_dtype(name):
    """NumPy dtype of a bench dtype name (bfloat16: ml_dtypes', imported lazily)."""
    from .. import _dtypes

    return _dtypes.bfloat16() if name == "bfloat16" else np.dtype(name)


def _cast(a, name):
    """``a`` (float64) in the dtype ``name`` (bfloat16 through float32: NumPy's way)."""
    return a.astype(np.float32).astype(_np_dtype(name)) if name == "bfloat16" else a.astype(name)


def _tensor(torch, a):
    """A torch tensor with a copy of ``a`` (bfloat16 arrays included)."""
    from ..torch._bridge import from_numpy

    return from_numpy(np.array(a, copy=True))


def _to_numpy(t):
    """A torch result as a NumPy array for the checks (16-bit widened to float32)."""
    t = t.detach()
    return t.float().numpy() if t.dtype.itemsize == 2 else t.numpy()


@dataclass
class Case:
    """One kernel at one size and dtype: a zero-argument callable per peer."""

    kernel: str
    size: str
    dtype: str
    nbytes: int          # bytes a single pass must move (for GB/s)
    bandwidth_kind: str  # 'triad' (read 2 write 1) or 'inplace' (update in place)
    runners: dict
    check: Optional[Callable[[], None]] = None  # raises AssertionError on a wrong peer


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


def _peers_native():
    from .. import _backend

    return ["numpy", "native"] if _backend.native_available() else ["numpy"]


def _close(peer, what, got, ref, rtol):
    """``got`` equals ``ref`` to ``rtol`` relative to the largest |ref| (loss, gradient)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    if got.shape != ref.shape or not np.allclose(got, ref, rtol=rtol, atol=rtol * scale):
        err = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else float("nan")
        raise AssertionError(f"{peer}: {what} differs from the NumPy reference "
                             f"(max abs error {err:.3g}, scale {scale:.3g})")


def _loss_check(runners, dtype):
    """A check that calls every peer once and compares (loss, grad) with NumPy's."""
    rtol = LOSS_RTOL[dtype]

    def check():
        res = {}
        for peer, fn in runners.items():  # copy: a later call must not change them
            loss, grad = fn()
            res[peer] = (np.array(np.asarray(loss).astype(np.float64)),
                         np.array(np.asarray(grad).astype(np.float64)))
        ref_loss, ref_grad = res["numpy"]
        for peer, (loss, grad) in res.items():
            _close(peer, "loss", loss, ref_loss, rtol)
            _close(peer, "gradient", grad, ref_grad, rtol)

    return check


# --- element-wise losses ---------------------------------------------------------

ELEMENTWISE = {
    # name: (fastloss function name, torch functional name, target kind)
    "mse": ("mse", "mse_loss", "real"),
    "huber": ("huber", "huber_loss", "real"),
    "bce_logits": ("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits",
                   "binary"),
}


def _torch_loss_runner(torch, tf, x, target, **kw):
    xt = _tensor(torch, x).requires_grad_()
    tt = _tensor(torch, target)

    def step():
        xt.grad = None
        loss = tf(xt, tt, **kw)
        loss.backward()
        return _to_numpy(loss), _to_numpy(xt.grad)

    return step


def _fastloss_runner(fn, x, target, backend):
    buf = np.empty_like(x)  # one output buffer per peer, reused across calls
    return lambda: fn(x, target, return_grad=True, out=buf, backend=backend)


def elementwise_cases(sizes, dtypes, torch=None, names=None):
    import fastloss

    for name, (fn_name, torch_name, kind) in ELEMENTWISE.items():
        if names and name not in names:
            continue
        fn = getattr(fastloss, fn_name)
        for n in sizes:
            for dt in dtypes:
                rng = np.random.default_rng(0)
                x = _cast(rng.standard_normal(n), dt)
                t = _cast((rng.random(n) < 0.5).astype(np.float64), dt) if kind == "binary" \
                    else _cast(rng.standard_normal(n), dt)
                runners = {be: _fastloss_runner(fn, x, t, be) for be in _peers_native()}
                if torch is not None:
                    runners["torch"] = _torch_loss_runner(
                        torch, getattr(torch.nn.functional, torch_name), x, t)
                yield Case(name, _fmt_size(n), dt, 3 * n * x.itemsize,
                           "triad", runners, _loss_check(runners, dt))


# --- cross-entropy ----------------------------------------------------------------

def ce_cases(shapes, dtypes, torch=None):
    import fastloss

    for n, c in shapes:
        for dt in dtypes:
            rng = np.random.default_rng(0)
            x = _cast(3 * rng.standard_normal((n, c)), dt)
            y = rng.integers(0, c, n)  # int64 class indices
            runners = {be: _fastloss_runner(fastloss.cross_entropy, x, y, be)
                       for be in _peers_native()}
            if torch is not None:
                runners["torch"] = _torch_loss_runner(torch, torch.nn.functional.cross_entropy,
                                                      x, y)
            # read the logits, write the gradient (labels: n * 8 bytes, not counted)
            yield Case("cross_entropy", f"{n}x{c}", dt, 2 * n * c * x.itemsize, "triad",
                       runners, _loss_check(runners, dt))


# --- optimizers ---------------------------------------------------------------------

OPTIMIZERS = {  # name: (fastloss.optim class, torch.optim class, kwargs, state buffers)
    "adam": ("Adam", "Adam", {"lr": 1e-3}, 2),
    "adamw": ("AdamW", "AdamW", {"lr": 1e-3}, 2),
    "sgd_momentum": ("SGD", "SGD", {"lr": 1e-2, "momentum": 0.9}, 1),
    "rmsprop": ("RMSprop", "RMSprop", {"lr": 1e-3}, 1),
    "adagrad": ("Adagrad", "Adagrad", {"lr": 1e-2}, 1),
}
CHECK_STEPS = 3


def _optim_peers(ours, theirs, kw, torch):
    """{peer: factory(p0) -> (step(g) -> None, params() -> ndarray)}, fresh state each call."""
    import fastloss.optim as optim

    def fastloss_factory(backend):
        def make(p0):
            p = p0.copy()
            opt = getattr(optim, ours)([p], backend=backend, **kw)
            return (lambda g: opt.step([g])), (lambda: p)
        return make

    peers = {be: fastloss_factory(be) for be in ("numpy", "native")}
    if torch is not None:
        def torch_factory(extra):
            def make(p0):
                pt = torch.nn.Parameter(_tensor(torch, p0))
                opt = getattr(torch.optim, theirs)([pt], **kw, **extra)
                gs = {}

                def step(g):
                    gt = gs.get(id(g))
                    if gt is None:
                        gt = gs[id(g)] = _tensor(torch, g)
                    pt.grad = gt
                    opt.step()
                return step, (lambda: _to_numpy(pt))
            return make

        peers["torch"] = torch_factory({})
        try:  # torch's fused CPU step, where this torch has one for the optimizer
            getattr(torch.optim, theirs)([torch.nn.Parameter(torch.zeros(1))], **kw, fused=True)
            peers["torch_fused"] = torch_factory({"fused": True})
        except (RuntimeError, TypeError, ValueError):
            pass
    return peers


def _optim_check(peers, p0, grads, dtype):
    """Fresh instances of every peer take the same steps; their params must agree."""
    rtol = {"float32": 1e-4, "float64": 1e-9, "bfloat16": 1e-2}[dtype]
    eps = {"float32": 2.0**-23, "float64": 2.0**-52, "bfloat16": 2.0**-7}[dtype]

    def check():
        moved = {}
        for peer, make in peers.items():
            step, params = make(p0)
            for g in grads:
                step(g)
            moved[peer] = np.asarray(params()).astype(np.float64) - p0.astype(np.float64)
        ref = moved["numpy"]
        if not np.any(ref):
            raise AssertionError("the reference did not move the parameters")
        # rounding of p itself (a few ulp per step) plus rtol of the largest update
        atol = 4 * (len(grads) + 1) * eps * float(np.max(np.abs(p0))) + \
            rtol * float(np.max(np.abs(ref)))
        for peer, d in moved.items():
            if not np.allclose(d, ref, rtol=0, atol=atol):
                raise AssertionError(
                    f"{peer}: parameters after {len(grads)} steps differ from the NumPy "
                    f"reference (max error {float(np.max(np.abs(d - ref))):.3g}, "
                    f"allowed {atol:.3g})")

    return check


def optim_cases(sizes, dtypes, torch=None, names=None):
    for name, (ours, theirs, kw, nstate) in OPTIMIZERS.items():
        if names and name not in names:
            continue
        peers = _optim_peers(ours, theirs, kw, torch)
        for n in sizes:
            for dt in dtypes:
                rng = np.random.default_rng(0)
                p0 = _cast(rng.standard_normal(n), dt)
                grads = [_cast(0.1 * rng.standard_normal(n), dt) for _ in range(CHECK_STEPS)]
                runners = {}
                for peer, make in peers.items():
                    step, params = make(p0)
                    runners[peer] = (lambda step=step, g=grads[0]: step(g))
                # bytes: read p, g, state; write p, state
                nbytes = (2 + nstate + 1 + nstate) * n * p0.itemsize
                yield Case(name, _fmt_size(n), dt, nbytes, "inplace", runners,
                           _optim_check(peers, p0, grads, dt))


# --- optimizer steps on whole models (``--models``) --------------------------------------

MODELS = {  # name: what is stepped (float32, Adam lr=1e-3, gradients already set)
    "transformer": "nn.TransformerEncoder, 6 layers, d_model 128, ff 256",
    "mlp100": "100 x nn.Linear(64, 64)",
    "embedding": "nn.Embedding(1_000_000, 64)",
    "tensors1000x500": "1000 tensors x 500 (module parameters, no arena)",
    "tensors1000x10": "1000 tensors x 10",
    "numpy200x2048": "fastloss.optim.Adam on 200 NumPy arrays of 2048",
}


def _model_tensors(name, torch):
    """The model's float32 parameters as fresh tensors (seeded), and their gradients."""
    nn = torch.nn
    torch.manual_seed(0)
    if name == "transformer":
        layer = nn.TransformerEncoderLayer(128, 8, 256, batch_first=True)
        ps = list(nn.TransformerEncoder(layer, 6, enable_nested_tensor=False).parameters())
    elif name == "mlp100":
        ps = list(nn.Sequential(*[nn.Linear(64, 64) for _ in range(100)]).parameters())
    elif name == "embedding":
        ps = list(nn.Embedding(1_000_000, 64).parameters())
    else:
        count, size = {"tensors1000x500": (1000, 500), "tensors1000x10": (1000, 10),
                       "numpy200x2048": (200, 2048)}[name]
        ps = [torch.randn(size) for _ in range(count)]
    values = [p.detach().clone() for p in ps]
    grads = [torch.randn_like(v) * 0.1 for v in values]
    return values, grads


def _model_peers(name, torch):
    """{peer: factory() -> (step() -> None, params() -> [ndarray])}, fresh each call."""
    values, grads = _model_tensors(name, torch)

    def torch_side(make_opt):
        def make():
            ps = [torch.nn.Parameter(v.clone()) for v in values]
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt = make_opt(ps)
            return opt.step, (lambda: [p.detach().numpy() for p in ps])
        return make

    peers = {}
    if name.startswith("numpy"):
        def native():
            import fastloss.optim as optim

            ps = [v.numpy().copy() for v in values]
            gs = [g.numpy().copy() for g in grads]
            opt = optim.Adam(ps, lr=1e-3)
            return (lambda: opt.step(gs)), (lambda: ps)
        peers["native"] = native
    else:
        import fastloss.torch.optim as ftoptim

        peers["native"] = torch_side(lambda ps: ftoptim.Adam(ps, lr=1e-3))
    peers["torch_fused"] = torch_side(lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True))
    return peers


def _model_check(peers):
    """Fresh instances take three steps; fastloss's params must match torch fused's."""
    def check():
        out = {}
        for peer, make in peers.items():
            step, params = make()
            p0 = [np.array(p, np.float64) for p in params()]
            for _ in range(CHECK_STEPS):
                step()
            out[peer] = [np.asarray(p, np.float64) - q for p, q in zip(params(), p0)]
            scale = max(float(np.max(np.abs(q))) if q.size else 0.0 for q in p0)
        ref = out.pop("torch_fused")
        eps = float(np.finfo(np.float32).eps)
        for peer, moved in out.items():
            for k, (d, r) in enumerate(zip(moved, ref)):
                atol = 4 * (CHECK_STEPS + 1) * eps * scale + 1e-4 * float(np.max(np.abs(r)))
                if not np.allclose(d, r, rtol=0, atol=atol):
                    raise AssertionError(f"{peer}: tensor {k} after {CHECK_STEPS} steps differs "
                                         "from torch fused Adam")
    return check


def model_cases(names, torch):
    """One case per model: ``native`` (fastloss) vs ``torch_fused``, Adam, float32."""
    for name in names:
        peers = _model_peers(name, torch)
        runners = {}
        nparams = 0
        for peer, make in peers.items():
            step, params = make()
            runners[peer] = step
            nparams = sum(p.size for p in params())
        yield Case(name, _fmt_size(nparams), "float32", 28 * nparams, "inplace", runners,
                   _model_check(peers))


def _model_selection(models):
    if not models:
        return []
    names = list(MODELS) if models in (["all"], "all") else list(models)
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(MODELS)} or all")
    return names


# --- the sweep -------------------------------------------------------------------------

KERNELS = (*ELEMENTWISE, "cross_entropy", *OPTIMIZERS)


def _selection(kernels, dtypes):
    """Validate the kernel and dtype names (ValueError naming the bad ones)."""
    if kernels:
        unknown = sorted(set(kernels) - set(KERNELS))
        if unknown:
            raise ValueError(f"unknown kernel(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(KERNELS)}")
    bad = sorted(set(dtypes) - set(DTYPES))
    if bad or not dtypes:
        raise ValueError(f"dtypes must be among {', '.join(DTYPES)}, got {', '.join(dtypes)}")


def count_cases(preset, dtypes, kernels=None, models=None):
    """How many cases :func:`all_cases` will yield (without building any)."""
    _selection(kernels, dtypes)
    extra = len(_model_selection(models))

    def n(names):
        return sum(1 for k in names if not kernels or k in kernels)

    if kernels == []:  # only the models
        return extra
    return extra + len(dtypes) * (n(ELEMENTWISE) * len(preset["elementwise"]) +
                                  n(["cross_entropy"]) * len(preset["ce"]) +
                                  n(OPTIMIZERS) * len(preset["optim"]))


def all_cases(preset, dtypes, with_torch=True, kernels=None, models=None):
    """Every case of a size preset (a dict of ``SIZES``), optionally only the named kernels
    (``[]``: none), then the named ``models`` (``MODELS`` names or ``['all']``; they need
    torch).

    Lazily: a case's arrays are built when it is reached, so the full preset never holds
    more than one case in memory. With torch, torch's thread count is set to fastloss's."""
    _selection(kernels, dtypes)
    names = _model_selection(models)
    if names and (not with_torch or _torch() is None):
        raise ValueError("the model cases compare with torch.optim: they need torch")
    return _all_cases(preset, dtypes, with_torch, kernels, names)


def _all_cases(preset, dtypes, with_torch, kernels, models=()):
    torch = _torch() if with_torch else None
    if torch is not None:
        from .. import _threads

        torch.set_num_threads(_threads.get_num_threads())

    def wanted(*names):
        return not kernels or any(k in kernels for k in names)

    groups = []
    if kernels == []:
        wanted = lambda *names: False  # noqa: E731 - only the models
    if wanted(*ELEMENTWISE):
        groups.append(elementwise_cases(preset["elementwise"], dtypes, torch, kernels))
    if wanted("cross_entropy"):
        groups.append(ce_cases(preset["ce"], dtypes, torch))
    if wanted(*OPTIMIZERS):
        groups.append(optim_cases(preset["optim"], dtypes, torch, kernels))
    if models:
        groups.append(model_cases(models, torch))
    for group in groups:
        yield from group


def time_peers(runners, min_rounds=5, max_time=1.0, max_rounds=200, slice_s=0.2):
    """Median wall time per call of every peer in ``runners`` ({name: fn}).

    The peers are timed in alternating rounds (the order reversed every other
    round): in a round each peer runs back to back for ``slice_s`` seconds (at
    least one call), so a burst of load on a shared machine hits every peer
    alike instead of whichever one was being timed then. Rounds go on until
    every peer has ``min_rounds`` calls and ``max_time`` seconds per peer have
    passed, or every peer has ``max_rounds`` calls. One untimed warm-up call each.
    """
    names = list(runners)
    for name in names:
        runners[name]()
    times = {name: [] for name in names}
    budget = max_time * len(names)
    start = time.perf_counter()
    rnd = 0
    while True:
        enough = all(len(t) >= min_rounds for t in times.values())
        if enough and (time.perf_counter() - start >= budget or
                       all(len(t) >= max_rounds for t in times.values())):
            break
        for name in (names if rnd % 2 == 0 else names[::-1]):
            fn, ts = runners[name], times[name]
            t_end = time.perf_counter() + slice_s
            while True:
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                ts.append(t1 - t0)
                if t1 >= t_end or len(ts) >= max_rounds:
                    break
        rnd += 1
    return {name: float(np.median(t)) for name, t in times.items()}


def run_cases(cases, bandwidth, min_rounds=5, max_time=1.0, progress=None):
    """Check, then time, every case; one result dict per case."""
    rows = []
    for case in cases:
        if case.check is not None:
            case.check()
        med = time_peers(case.runners, min_rounds, max_time)
        base = med.get("native")
        gbs = case.nbytes / base / 1e9 if base else None
        bw = (bandwidth or {}).get(case.bandwidth_kind)
        rows.append({
            "kernel": case.kernel, "size": case.size, "dtype": case.dtype,
            "bytes": case.nbytes, "bandwidth_kind": case.bandwidth_kind,
            "checked": case.check is not None,
            "median_s": med,
            "speedup": {peer: med[peer] / base for peer in med if peer != "native"}
            if base else {},
            "native_GBps": gbs,
            "pct_bandwidth": 100 * gbs / bw if (gbs and bw) else None,
        })
        if progress is not None:
            progress.update(1)
    return rows


_PEER_ORDER = ["native", "numpy", "torch", "torch_fused"]


def format_rows(rows):
    """A fixed-width table: times in ms per peer, speed-ups, GB/s, % of bandwidth."""
    if not rows:
        return "(no cases)"
    peers = sorted({p for r in rows for p in r["median_s"]}, key=_PEER_ORDER.index)
    head = ["kernel", "size", "dtype"] + [f"{p} ms" for p in peers] + \
        [f"x vs {p}" for p in peers if p != "native"] + ["GB/s", "% bw"]
    body = []
    for r in rows:
        line = [r["kernel"], r["size"], r["dtype"]]
        line += [f"{1e3 * r['median_s'][p]:.3f}" if p in r["median_s"] else "-" for p in peers]
        line += [f"{r['speedup'][p]:.2f}" if p in r["speedup"] else "-"
                 for p in peers if p != "native"]
        line += ["-" if r["native_GBps"] is None else f"{r['native_GBps']:.1f}",
                 "-" if r["pct_bandwidth"] is None else f"{r['pct_bandwidth']:.0f}%"]
        body.append(line)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    out = ["  ".join(f"{h:>{w}}" for h, w in zip(head, widths))]
    out.append("-" * len(out[0]))
    out += ["  ".join(f"{c:>{w}}" for c, w in zip(b, widths)) for b in body]
    return "\n".join(out)


def plot_rows(rows, path, title="fastloss native speed-up (peer time / native time)"):
    """Bars of the native backend's speed-up over each peer, one group per case (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['kernel']}\n{r['size']} {r['dtype'].replace('float', 'f')}" for r in rows]
    peers = [p for p in _PEER_ORDER[1:] if any(p in r["speedup"] for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 1.5), 4.5), dpi=110)
    width = 0.8 / max(1, len(peers))
    x = np.arange(len(rows))
    for k, peer in enumerate(peers):
        vals = [r["speedup"].get(peer, np.nan) for r in rows]
        bars = ax.bar(x + k * width, vals, width, label=f"vs {peer}")
        ax.bar_label(bars, fmt="%.2g", fontsize=6, padding=1)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x + width * (len(peers) - 1) / 2, labels, fontsize=7)
    ax.set_ylabel("speed-up of fastloss native (x, log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def to_json(rows, bandwidth, meta, path):
    """Save ``{'meta', 'bandwidth', 'results'}`` (one dict per case, as :func:`run_cases`)."""
    with open(path, "w") as f:
        json.dump({"meta": meta, "bandwidth": bandwidth, "results": rows}, f, indent=2)


def measure_bandwidth(preset):
    """Streaming bandwidth of a preset (``fastloss.tools.bandwidth.measure_bandwidth``'s dict:
    'triad' and 'inplace' in GB/s, best of the repeats, and their medians)."""
    from .bandwidth import measure_bandwidth as measure

    return measure(n=preset["bandwidth_n"], repeats=5 if preset["rounds"] > 1 else 3)

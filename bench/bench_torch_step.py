"""A whole PyTorch CPU training step, float32: fastloss's loss + optimizer vs torch's own.

* ``head``: a linear head 128 features -> 32000 classes, batch 1024 (the loss and the
  4.1M-parameter update dominate). fastloss: ``fastloss.torch.cross_entropy`` +
  ``fastloss.torch.optim.Adam``; torch: ``F.cross_entropy`` + ``torch.optim.Adam(fused=True)``.
  Target: >= 1.5x.
* ``mlp``: 784-1024-1024-10 (ReLU), batch 512, cross-entropy + Adam (the matmuls dominate).
  Target: not slower.

A step is ``zero_grad(); loss = CE(model(x), y); loss.backward(); opt.step()``. Both
sides use ``torch.set_num_threads(fastloss.get_num_threads())``. Before anything is timed,
one step from the same initial weights is checked to give the same loss and parameters.

    flock /tmp/fastloss-bench.lock python -m pytest bench/bench_torch_step.py --benchmark-enable
    PYTHONPATH=. flock /tmp/fastloss-bench.lock python bench/bench_torch_step.py   # table + ratios

The script interleaves the two implementations round by round and also times the parts
(forward+backward, optimizer step) so the ratio of each is visible.
"""
from __future__ import annotations

import statistics
import sys
import time

import pytest

import fastloss

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastloss.torch as FT  # noqa: E402
import fastloss.torch.optim as FO  # noqa: E402

MODELS = {"head": dict(sizes=(128, 32000), batch=1024), "mlp": dict(sizes=(784, 1024, 1024, 10),
                                                                      batch=512)}
IMPLS = ["fastloss", "torch"]
TARGET = {"head": 1.5, "mlp": 1.0}


def _model(sizes, seed=0):
    torch.manual_seed(seed)
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if k:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(a, b))
    return torch.nn.Sequential(*layers)


def _data(sizes, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, sizes[0], generator=g)
    y = torch.randint(0, sizes[-1], (batch,), generator=g)
    return x, y


def make_step(model_name, impl):
    """(step, model): ``step()`` runs one training step and returns the loss tensor."""
    torch.set_num_threads(fastloss.get_num_threads())
    cfg = MODELS[model_name]
    model = _model(cfg["sizes"])
    x, y = _data(cfg["sizes"], cfg["batch"])
    if impl == "fastloss":
        opt, loss_fn = FO.Adam(model.parameters(), lr=1e-3), FT.cross_entropy
    else:
        opt, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True), F.cross_entropy

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def parts():
        """(forward+backward seconds, optimizer-step seconds) of one step."""
        opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss_fn(model(x), y).backward()
        t1 = time.perf_counter()
        opt.step()
        return t1 - t0, time.perf_counter() - t1

    step.parts = parts
    return step, model


def check_same_step(model_name):
    """From the same weights: the two losses and their gradients agree, and the two
    optimizers given the same gradients produce the same parameters."""
    cfg = MODELS[model_name]
    x, y = _data(cfg["sizes"], cfg["batch"])
    models = {impl: _model(cfg["sizes"]) for impl in IMPLS}
    losses = {"fastloss": FT.cross_entropy, "torch": F.cross_entropy}
    vals = {impl: losses[impl](m(x), y) for impl, m in models.items()}
    for v in vals.values():
        v.backward()
    la, lb = vals["fastloss"].item(), vals["torch"].item()
    assert abs(la - lb) <= 1e-5 * abs(lb), (la, lb)
    for a, b in zip(models["fastloss"].parameters(), models["torch"].parameters()):
        scale = float(b.grad.abs().max())
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * scale)
        a.grad.copy_(b.grad)  # same gradients into both optimizers
    FO.Adam(models["fastloss"].parameters(), lr=1e-3).step()
    torch.optim.Adam(models["torch"].parameters(), lr=1e-3, fused=True).step()
    for a, b in zip(models["fastloss"].parameters(), models["torch"].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_train_step(benchmark, model_name, impl):
    if getattr(benchmark, "disabled", False) and model_name == "head":
        pytest.skip("large model: only with --benchmark-enable (keeps the test suite fast)")
    benchmark.group = f"torch-step-{model_name} threads={fastloss.get_num_threads()}"
    if impl == "fastloss":
        check_same_step(model_name)
    step, _ = make_step(model_name, impl)
    step()  # warm-up: Numba compile / first-touch of buffers
    benchmark.pedantic(step, rounds=15 if model_name == "head" else 30, warmup_rounds=2)


def main(rounds=15):
    print(f"threads: fastloss {fastloss.get_num_threads()}, torch {torch.get_num_threads()}")
    for model_name, cfg in MODELS.items():
        check_same_step(model_name)
        steps = {impl: make_step(model_name, impl)[0] for impl in IMPLS}
        for s in steps.values():
            s()
            s()
        total = {impl: [] for impl in IMPLS}
        fb = {impl: [] for impl in IMPLS}
        st = {impl: [] for impl in IMPLS}
        for _ in range(rounds):
            for impl, s in steps.items():  # interleaved: both see the same machine load
                t0 = time.perf_counter()
                s()
                total[impl].append(time.perf_counter() - t0)
                a, b = s.parts()
                fb[impl].append(a)
                st[impl].append(b)
        med = {k: {i: statistics.median(v[i]) * 1e3 for i in IMPLS}
               for k, v in (("step", total), ("fwd+bwd", fb), ("opt.step", st))}
        print(f"\n{model_name}: sizes {cfg['sizes']}, batch {cfg['batch']}, float32, "
              f"{rounds} rounds (median ms)")
        print(f"{'':10s}{'fastloss':>10s}{'torch':>10s}{'torch/fastloss':>16s}")
        for k, m in med.items():
            print(f"{k:10s}{m['fastloss']:10.2f}{m['torch']:10.2f}"
                  f"{m['torch'] / m['fastloss']:15.2f}x")
        print(f"target: >= {TARGET[model_name]}x on the whole step")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)

"""fastloss on torch.distributed: DDP, FSDP2 (DTensor parameters) and ZeRO-1.

Two gloo ranks on loopback (examples/ddp_train.py, fsdp_train.py, zero_train.py launched
as two processes, as torchrun would) end where single-process full-batch training ends;
in-process tests on a one-rank group check DTensor handling and its bad input.
"""
import importlib.util
import math
import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import fastloss.torch.optim as FO  # noqa: E402

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"
STEPS = 20


def _load_example(name):
    sys.path.insert(0, str(EXAMPLES))  # the examples import each other
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(EXAMPLES))
    return mod


def _launch_two_ranks(name, tmp_path, steps=STEPS):
    """Run examples/<name>.py as ranks 0 and 1 (file store, gloo on loopback, bounded in
    time); returns what rank 0 saved."""
    result = tmp_path / "results.pt"
    env = {**os.environ, "WORLD_SIZE": "2", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, str(EXAMPLES / f"{name}.py"), "--steps", str(steps),
           "--init-method", f"file://{tmp_path / 'store'}", "--save", str(result)]
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=180)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"a rank of {name} did not finish within 180 s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    return torch.load(result)


def _assert_runs_match_single(runs, results):
    ref = _load_example("fsdp_train")  # the single-process references of both examples
    for name in runs:
        params, norms = results[name]
        single, single_norms, _ = ref.train_single(name, STEPS)
        for a, b in zip(params, single):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        if name == "adamw_clip":  # the norm of the whole gradient, clipping active
            assert norms == pytest.approx(single_norms, rel=1e-9)
            assert sum(n > ref.CLIP for n in norms) >= STEPS // 2


def _assert_state_matches(state, single_state):
    for key in ("step", "exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(state[key], single_state[key], rtol=0, atol=1e-6)


def test_ddp_two_ranks_equals_single_process(tmp_path):
    """DistributedDataParallel with fastloss's loss and Adam: each rank on half the batch."""
    ex = _load_example("ddp_train")
    assert isinstance(ex.make_optimizer(ex.make_model().parameters()), FO.Adam)
    ddp = _launch_two_ranks("ddp_train", tmp_path, steps=10)
    x, y = ex.make_problem()
    single = ex.train(ex.make_model(), x, y, steps=10)
    for a, b in zip(ddp, single):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_fsdp2_two_ranks_equal_single_process(tmp_path):
    """fully_shard'ed model (uneven and empty shards: the 1 x 16 layer on 2 ranks):
    Adam, AdamW with max_grad_norm, state handed to and from torch.optim.Adam."""
    ex = _load_example("fsdp_train")
    results = _launch_two_ranks("fsdp_train", tmp_path)
    _assert_runs_match_single(ex.RUNS, results)
    full = results["adam_state"]  # torch.distributed.checkpoint's full state: by name
    single = ex.train_single("adam", STEPS)[2]
    names = [n for n, _ in ex.make_model().named_parameters()]
    assert list(full["state"]) == names
    for i, n in enumerate(names):
        _assert_state_matches(full["state"][n], single["state"][i])


def test_zero_two_ranks_equal_single_process(tmp_path):
    """ZeroRedundancyOptimizer(optimizer_class=fastloss.torch.optim.Adam/AdamW) under DDP:
    each rank steps its partition; max_grad_norm sums over the partitions; the
    consolidated state_dict is the single-process one and loads into a new ZeRO."""
    ex = _load_example("zero_train")
    results = _launch_two_ranks("zero_train", tmp_path)
    _assert_runs_match_single(ex.RUNS, results)
    state = results["adam_state"]
    single = _load_example("fsdp_train").train_single("adam", STEPS)[2]
    assert len(state["state"]) == len(single["state"])
    for i in single["state"]:
        _assert_state_matches(state["state"][i], single["state"][i])


# -- single process ------------------------------------------------------------

def _problem(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    shapes = [(7, 5), (5,), (3, 7)]
    params = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(6)]
    return params, grads


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_max_grad_norm_matches_torch_clip_grad_norm(max_norm):
    """FO.AdamW(max_grad_norm=c) == clip_grad_norm_(c) then torch.optim.AdamW, without
    writing the grads; last_grad_norm is the norm clip_grad_norm_ returns."""
    params, grads = _problem()
    ours = [p.clone().requires_grad_() for p in params]
    ref = [p.clone().requires_grad_() for p in params]
    opt = FO.AdamW(ours, lr=0.1, max_grad_norm=max_norm)
    topt = torch.optim.AdamW(ref, lr=0.1)
    for gs in grads:
        for p, q, g in zip(ours, ref, gs):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
        topt.step()
        assert opt.last_grad_norm == pytest.approx(float(norm), rel=1e-12)
        for p, g in zip(ours, gs):
            assert torch.equal(p.grad, g)
        for p, q in zip(ours, ref):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "1"])
def test_max_grad_norm_bad_value(bad):
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises((ValueError, TypeError), match="max_grad_norm"):
        FO.Adam([p], max_grad_norm=bad)


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    """A one-rank gloo group and its 1-D CPU mesh in this process (torn down after)."""
    from torch.distributed.device_mesh import init_device_mesh

    if dist.is_initialized():
        pytest.skip("a process group is already initialized")
    store = tmp_path_factory.mktemp("pg") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _dtensor_params(mesh, params, placement=None):
    from torch.distributed.tensor import Shard, distribute_tensor

    return [torch.nn.Parameter(distribute_tensor(p.clone(), mesh, [placement or Shard(0)]))
            for p in params]


@pytest.mark.parametrize("cls,kw", [(FO.Adam, dict(lr=0.1, amsgrad=True)),
                                    (FO.SGD, dict(lr=0.1, momentum=0.9)),
                                    (FO.NAdam, dict(lr=0.1)),
                                    (FO.AdamW, dict(lr=0.1, max_grad_norm=0.5))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dtensor_params_step_like_plain_tensors(one_rank, cls, kw, dtype):
    """DTensor params (Shard(0) and Replicate) step as plain tensors do; state is kept as
    DTensors placed like the params, plain scalar step; a torch.optim state_dict of
    DTensors loads and resumes."""
    from torch.distributed.tensor import DTensor, Replicate

    params, grads = _problem(dtype)
    for placement in (None, Replicate()):
        dps = _dtensor_params(one_rank, params, placement)
        plain = [p.clone().requires_grad_() for p in params]
        opt, popt = cls(dps, **kw), cls(plain, **kw)
        for k, gs in enumerate(grads):
            for d, p, g in zip(dps, plain, gs):
                d.grad = DTensor.from_local(g.clone(), one_rank, d.placements)
                p.grad = g.clone()
            opt.step()
            popt.step()
            if k == 2:  # hand the (DTensor) state to new optimizers
                sd, psd = opt.state_dict(), popt.state_dict()
                opt, popt = cls(dps, **kw), cls(plain, **kw)
                opt.load_state_dict(sd)
                popt.load_state_dict(psd)
        for d, p in zip(dps, plain):
            assert torch.equal(d.to_local(), p.detach())
        if "max_grad_norm" in kw:
            assert opt.last_grad_norm == popt.last_grad_norm
        for d in dps:
            for key, v in opt.state[d].items():
                if key in ("step", "mu_product"):
                    assert type(v) is torch.Tensor and v.dim() == 0
                else:
                    assert isinstance(v, DTensor) and v.placements == d.placements, key


def test_dtensor_bad_input_names_the_parameter_and_changes_nothing(one_rank):
    from torch.distributed.tensor import DTensor, Replicate, Shard

    params, grads = _problem()
    dps = _dtensor_params(one_rank, params)
    opt = FO.Adam(dps, lr=0.1)
    for d, g in zip(dps, grads[0]):
        d.grad = DTensor.from_local(g.clone(), one_rank, [Shard(0)])
    opt.step()
    before = [d.to_local().clone() for d in dps]
    state_before = [{k: (v.to_local() if isinstance(v, DTensor) else v).clone()
                     for k, v in opt.state[d].items()} for d in dps]

    def assert_unchanged():
        for d, b in zip(dps, before):
            assert torch.equal(d.to_local(), b)
        for d, sb in zip(dps, state_before):
            for k, v in opt.state[d].items():
                assert torch.equal(v.to_local() if isinstance(v, DTensor) else v, sb[k])

    good = dps[0].grad
    dps[2].grad = DTensor.from_local(grads[1][2].clone(), one_rank, [Replicate()])
    with pytest.raises(ValueError, match=r"params\[2\]\.grad has placements"):
        opt.step()
    assert_unchanged()
    dps[2].grad = grads[1][2].clone()
    with pytest.raises(TypeError, match=r"params\[2\] is a DTensor with a plain tensor"):
        opt.step()
    assert_unchanged()
    dps[2].grad = DTensor.from_local(grads[1][2].clone(), one_rank, [Shard(0)])
    saved = opt.state[dps[1]]["exp_avg"]
    opt.state[dps[1]]["exp_avg"] = saved.to_local().clone()  # plain state for a DTensor
    with pytest.raises(ValueError, match=r"state 'exp_avg' of params\[1\] is a plain tensor"):
        opt.step()
    opt.state[dps[1]]["exp_avg"] = saved
    assert_unchanged()
    assert dps[0].grad is good
    opt.step()  # and a good step goes through


def test_global_grad_norm_plain_tensors_without_process_group():
    from fastloss.torch import _distributed

    gs = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    norm = _distributed.global_grad_norm([(g, g) for g in gs], lambda g: float((g * g).sum()))
    assert norm == 5.0
    assert _distributed.zero_partition_group() is None
    assert not _distributed.group_has_dtensors(gs)
    assert math.isnan(_distributed.global_grad_norm(
        [(torch.tensor([math.nan]),) * 2], lambda g: float((g * g).sum())))


def test_dtensor_2d_mesh_hsdp_placements(one_rank):
    """(Replicate, Shard(0)) on a 2-D mesh, as HSDP lays parameters out: stepped and
    clipped like plain tensors (the norm is all-reduced over the Shard dim only)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("replicate", "shard"))
    placements = [Replicate(), Shard(0)]
    params, grads = _problem()
    dps = [torch.nn.Parameter(distribute_tensor(p.clone(), mesh, placements)) for p in params]
    plain = [p.clone().requires_grad_() for p in params]
    opt = FO.AdamW(dps, lr=0.1, max_grad_norm=0.5)
    popt = FO.AdamW(plain, lr=0.1, max_grad_norm=0.5)
    for gs in grads:
        for d, p, g in zip(dps, plain, gs):
            d.grad = DTensor.from_local(g.clone(), mesh, placements)
            p.grad = g.clone()
        opt.step()
        popt.step()
        assert opt.last_grad_norm == popt.last_grad_norm
    for d, p in zip(dps, plain):
        assert torch.equal(d.to_local(), p.detach())


@pytest.mark.parametrize("clip", [None, 0.5])
def test_dtensor_skip_nonfinite_like_plain_tensors(one_rank, clip):
    """skip_nonfinite on DTensor params: a step with a NaN in one shard's gradient
    changes no param and no state and is counted, as for plain tensors; later steps
    match the plain run."""
    from torch.distributed.tensor import DTensor

    params, grads = _problem()
    grads[2][1][0] = math.nan
    dps = _dtensor_params(one_rank, params)
    plain = [p.clone().requires_grad_() for p in params]
    opt = FO.AdamW(dps, lr=0.1, max_grad_norm=clip, skip_nonfinite=True)
    popt = FO.AdamW(plain, lr=0.1, max_grad_norm=clip, skip_nonfinite=True)
    for k, gs in enumerate(grads):
        for d, p, g in zip(dps, plain, gs):
            d.grad = DTensor.from_local(g.clone(), one_rank, d.placements)
            p.grad = g.clone()
        before = [d.to_local().clone() for d in dps]
        opt.step()
        popt.step()
        if k == 2:
            assert opt.skipped_steps == popt.skipped_steps == 1
            assert math.isnan(opt.last_grad_norm)
            for d, b in zip(dps, before):
                assert torch.equal(d.to_local(), b)
            assert all(int(opt.state[d]["step"]) == 2 for d in dps)
    for d, p in zip(dps, plain):
        assert torch.equal(d.to_local(), p.detach())


def test_zero_finds_its_group_for_skip_nonfinite(one_rank):
    """ZeroRedundancyOptimizer(optimizer_class=FO.Adam, skip_nonfinite=True): the inner
    optimizer sums the norm over ZeRO's group and skips a non-finite step."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    params, grads = _problem()
    ps = [p.clone().requires_grad_() for p in params]
    zero = ZeroRedundancyOptimizer(ps, optimizer_class=FO.Adam, lr=0.1, skip_nonfinite=True)
    assert zero.optim._fl_norm_group is zero.process_group
    for p, g in zip(ps, grads[0]):
        p.grad = g.clone()
    zero.step()
    before = [p.detach().clone() for p in ps]
    ps[0].grad[0, 0] = math.inf
    zero.step()
    assert zero.optim.skipped_steps == 1
    assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before))

"""Two gloo ranks on loopback with DDP equal single-process training on the full batch."""
import importlib.util
import os
import pathlib

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "ddp_train.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("ddp_train", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _worker(rank, world_size, init_method, result_path):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    _load_example().run(rank, world_size, init_method, steps=10, result_path=result_path)


def test_ddp_two_ranks_equals_single_process(tmp_path):
    ex = _load_example()
    import fastloss.torch.optim as FO

    assert isinstance(ex.make_optimizer(ex.make_model().parameters()), FO.Adam)
    store = tmp_path / "store"
    result = tmp_path / "params.pt"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, 2, f"file://{store}", str(result)))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive():
            p.kill()
            pytest.fail("a DDP rank did not finish within 120 s")
        assert p.exitcode == 0
    ddp = torch.load(result)
    x, y = ex.make_problem()
    single = ex.train(ex.make_model(), x, y, steps=10)
    for a, b in zip(ddp, single):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)

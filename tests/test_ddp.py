"""Two gloo ranks on loopback with DDP equal single-process training on the full batch."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "ddp_train.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("ddp_train", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ddp_two_ranks_equals_single_process(tmp_path):
    """Launch the example as 2 separate processes (as torchrun would), rendezvous
    through a file store, gloo over loopback; bounded in time."""
    ex = _load_example()
    import fastloss.torch.optim as FO

    assert isinstance(ex.make_optimizer(ex.make_model().parameters()), FO.Adam)
    result = tmp_path / "params.pt"
    env = {**os.environ, "WORLD_SIZE": "2", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, str(EXAMPLE), "--steps", "10",
           "--init-method", f"file://{tmp_path / 'store'}", "--save", str(result)]
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=120)[0])
    except subprocess.TimeoutExpired:
        pytest.fail("a DDP rank did not finish within 120 s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    ddp = torch.load(result)
    x, y = ex.make_problem()
    single = ex.train(ex.make_model(), x, y, steps=10)
    for a, b in zip(ddp, single):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)

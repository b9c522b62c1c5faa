"""``fastloss bench --models``: whole-model optimizer steps against torch fused Adam."""
import json

import numpy as np
import pytest

from fastloss.tools import benchmark, cli

torch = pytest.importorskip("torch")


def test_models_selection_and_count():
    tiny = benchmark.SIZES["tiny"]
    assert benchmark.count_cases(tiny, ["float32"], [], ["mlp100", "tensors1000x10"]) == 2
    assert benchmark.count_cases(tiny, ["float32"], [], ["all"]) == len(benchmark.MODELS)
    with pytest.raises(ValueError, match="unknown model"):
        benchmark.count_cases(tiny, ["float32"], [], ["resnet"])
    with pytest.raises(ValueError, match="need torch"):
        benchmark.all_cases(tiny, ["float32"], with_torch=False, kernels=[], models=["mlp100"])


def test_model_check_catches_a_wrong_peer():
    peers = benchmark._model_peers("tensors1000x10", torch)
    benchmark._model_check(peers)()  # fastloss agrees with torch fused

    def sign_descent():
        step, params = peers["native"]()

        def wrong():
            step()
            for p in params():
                p += 1e-3 * np.sign(p)
        return wrong, params

    with pytest.raises(AssertionError, match="differs from torch fused"):
        benchmark._model_check({"native": sign_descent, "torch_fused": peers["torch_fused"]})()


def test_bench_models_cli(tmp_path, capsys):
    path = tmp_path / "models.json"
    assert cli.main(["bench", "--tiny", "--threads", "1", "--models", "tensors1000x10,mlp100",
                     "--json", str(path)]) == 0
    assert "against torch fused Adam" in capsys.readouterr().out
    data = json.loads(path.read_text())
    rows = {r["kernel"]: r for r in data["results"]}
    assert set(rows) == {"tensors1000x10", "mlp100"} and data["meta"]["kernels"] == []
    for r in rows.values():
        assert set(r["median_s"]) == {"native", "torch_fused"} and r["checked"]
        assert r["speedup"]["torch_fused"] > 0 and r["bytes"] == 28 * (
            10_000 if r["kernel"] == "tensors1000x10" else 100 * (64 * 64 + 64))
    assert cli.main(["bench", "--tiny", "--models", "nope"]) == 2

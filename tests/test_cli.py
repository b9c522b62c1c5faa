"""The command line: arguments, ``fastloss demo`` without its extras, ``fastloss bench``'s
JSON output and its check-before-timing, and (when the extras are there) ``demo --quick``."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastloss
from fastloss.tools import benchmark, cli, demo

_ENV = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fastloss.__file__))}
_HAS_DEMO_EXTRAS = all(importlib.util.find_spec(m) for m in demo.DEMO_EXTRAS)


# --- arguments ----------------------------------------------------------------------

@pytest.mark.parametrize("argv", [[], ["nope"], ["bench", "--threads", "0"],
                                  ["bench", "--threads", "two"], ["demo", "--threads", "-1"],
                                  ["demo", "--bogus"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage: fastloss" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_help_lists_options(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--threads" in out
    if command == "bench":
        for opt in ("--json", "--plot", "--kernels", "--dtypes", "--no-torch"):
            assert opt in out
        assert "--tiny" not in out  # hidden: for tests only


@pytest.mark.parametrize("argv, message", [
    (["--kernels", "mse,nope"], "unknown kernel(s) nope"),
    (["--dtypes", "float16"], "dtypes must be among float32, float64"),
])
def test_bench_rejects_unknown_names(argv, message, capsys):
    assert cli.main(["bench", "--tiny", "--no-torch", *argv]) == 2
    assert message in capsys.readouterr().err


def test_bench_plot_without_matplotlib(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["bench", "--tiny", "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err


# --- demo without its extras --------------------------------------------------------

def test_demo_without_extras_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setattr(demo, "missing_extras", lambda: ["scikit-learn", "tqdm"])
    assert cli.main(["demo", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "fastloss demo needs scikit-learn, tqdm" in err
    assert "pip install scikit-learn tqdm\n" in err
    assert 'pip install ".[demo]"' in err


def test_missing_extras_finds_blocked_modules(monkeypatch):
    for mod in ("sklearn", "matplotlib"):
        monkeypatch.setitem(sys.modules, mod, None)  # import of it fails, find_spec -> None
    missing = demo.missing_extras()
    assert "scikit-learn" in missing and "matplotlib" in missing
    with pytest.raises(ImportError, match="pip install"):
        demo.run(quick=True)


def test_demo_without_extras_subprocess(tmp_path):
    """The real path: a fresh interpreter in which scikit-learn and tqdm cannot be imported."""
    code = ("import sys; sys.modules['sklearn'] = None; sys.modules['tqdm'] = None\n"
            "from fastloss.tools.cli import main; sys.exit(main(['demo', '--quick']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=_ENV)
    assert res.returncode == 2
    assert "pip install scikit-learn tqdm" in res.stderr
    assert res.stdout == "" and not list(tmp_path.iterdir())  # nothing ran, nothing written


# --- bench --------------------------------------------------------------------------

_ROW_KEYS = {"kernel", "size", "dtype", "bytes", "bandwidth_kind", "checked", "median_s",
             "speedup", "native_GBps", "pct_bandwidth"}


def _bench_json(tmp_path, *argv):
    path = tmp_path / "bench.json"
    assert cli.main(["bench", "--tiny", "--json", str(path), *argv]) == 0
    return json.loads(path.read_text())


def test_bench_json_shape(tmp_path, capsys):
    data = _bench_json(tmp_path, "--no-torch", "--dtypes", "float32,float64", "--threads", "1")
    out = capsys.readouterr().out
    assert "streaming bandwidth" in out and "x vs numpy" in out
    assert set(data) == {"meta", "bandwidth", "results"}
    assert data["bandwidth"]["triad"] > 0 and data["bandwidth"]["inplace"] > 0
    meta = data["meta"]
    assert meta["preset"] == "tiny" and meta["threads"] == 1 and meta["torch"] is False
    assert meta["dtypes"] == ["float32", "float64"] and "fastloss" in meta
    rows = data["results"]
    assert {r["kernel"] for r in rows} == set(benchmark.KERNELS)
    assert len(rows) == 2 * len(benchmark.KERNELS)  # one size each in 'tiny', two dtypes
    assert benchmark.count_cases(benchmark.SIZES["tiny"], ["float32", "float64"]) == len(rows)
    peers = {"numpy", "native"} if fastloss.native_available() else {"numpy"}
    for r in rows:
        assert set(r) == _ROW_KEYS
        assert r["dtype"] in ("float32", "float64") and r["checked"] is True
        assert r["bandwidth_kind"] in ("triad", "inplace") and r["bytes"] > 0
        if r["kernel"] in benchmark.OPTIMIZERS:  # Numba: native even without the extension
            assert set(r["median_s"]) == {"numpy", "native"}
        else:
            assert set(r["median_s"]) == peers
        assert all(t > 0 for t in r["median_s"].values())
        if "native" in r["median_s"]:
            assert set(r["speedup"]) == set(r["median_s"]) - {"native"}
            assert r["native_GBps"] > 0 and r["pct_bandwidth"] > 0


def test_bench_with_torch_and_plot(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    png = tmp_path / "speedups.png"
    data = _bench_json(tmp_path, "--kernels", "mse,adam", "--plot", str(png))
    rows = {r["kernel"]: r for r in data["results"]}
    assert set(rows) == {"mse", "adam"}
    assert "torch" in rows["mse"]["median_s"] and "torch" in rows["adam"]["speedup"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_loss_check_catches_a_wrong_peer():
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    t = np.zeros_like(x)
    runners = {"numpy": lambda: fastloss.mse(x, t, return_grad=True, backend="numpy"),
               "wrong": lambda: (fastloss.mse(x, t, backend="numpy"), 2 * x)}  # grad not / N
    with pytest.raises(AssertionError, match="wrong: gradient differs"):
        benchmark._loss_check(runners, "float32")()
    del runners["wrong"]
    benchmark._loss_check(runners, "float32")()


def test_bench_optim_check_catches_sign_descent():
    """One Adam step from empty state is lr * sign(g); the check takes three different
    steps, so a kernel that only did sign descent is caught."""
    peers = benchmark._optim_peers("Adam", "Adam", {"lr": 1e-3}, torch=None)

    def sign_descent(p0):
        p = p0.copy()
        return (lambda g: p.__isub__(1e-3 * np.sign(g))), (lambda: p)

    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(5000).astype(np.float32)
    grads = [(0.1 * rng.standard_normal(5000)).astype(np.float32) for _ in range(3)]
    benchmark._optim_check(peers, p0, grads, "float32")()  # numpy vs native: fine
    peers["fake"] = sign_descent
    benchmark._optim_check({"numpy": peers["numpy"], "fake": sign_descent}, p0, grads[:1],
                           "float32")()  # one step: indistinguishable
    with pytest.raises(AssertionError, match="fake: parameters after 3 steps"):
        benchmark._optim_check(peers, p0, grads, "float32")()


def test_format_rows_with_missing_peers():
    rows = [{"kernel": "mse", "size": "1K", "dtype": "float32", "median_s": {"numpy": 1e-3},
             "speedup": {}, "native_GBps": None, "pct_bandwidth": None}]
    text = benchmark.format_rows(rows)
    assert "numpy ms" in text and "1.000" in text
    assert benchmark.format_rows([]) == "(no cases)"


# --- demo --quick (a few seconds with a warm Numba cache) ----------------------------

@pytest.mark.skipif(not _HAS_DEMO_EXTRAS, reason="needs the demo extra")
def test_demo_quick(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--out-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "OK: the native backend's loss curves agree" in out
    for word in ("layers us", "loss us", "optim us", "loss+optim speed-up", "AMSGrad"):
        assert word in out
    png = tmp_path / "out" / "fastloss_optimizers.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not _HAS_DEMO_EXTRAS, reason="needs the demo extra")
def test_demo_training_learns_and_backends_agree():
    data = demo.load("breast_cancer")
    spec = demo.TASKS["breast_cancer"]
    runs = [demo.train("breast_cancer", "bce_logits", be, data, 3, spec.optimizer,
                       spec.opt_kwargs) for be in ("numpy", "native")]
    assert runs[0].score > 0.9
    np.testing.assert_allclose(runs[1].curve, runs[0].curve, rtol=demo.CURVE_RTOL)
    assert runs[0].curve[-1] < runs[0].curve[0]


def test_bench_warns_on_a_busy_machine(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.8, 1.5, 1.0))
    assert "--threads 1" in cli._busy_warning(2)
    assert cli._busy_warning(1) == ""  # a serial kernel does not wait for other threads
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert cli._busy_warning(2) == ""

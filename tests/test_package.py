import os
import subprocess
import sys

import numpy as np
import pytest

import fastloss

# Subprocesses import the same fastloss as this process, from a neutral cwd.
_ENV = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fastloss.__file__))}


def _run(args, tmp_path):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True,
                          cwd=tmp_path, env=_ENV).stdout


def test_info_cli_runs(tmp_path):
    out = _run(["-m", "fastloss", "info"], tmp_path)
    assert "fastloss" in out and "num_threads" in out


def test_set_backend_roundtrip():
    old = fastloss.get_backend()
    try:
        fastloss.set_backend("numpy")
        assert fastloss.get_backend() == "numpy"
    finally:
        fastloss.set_backend(None)
    assert fastloss.get_backend() == old


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend"):
        fastloss.mse(np.zeros(3), np.zeros(3), backend="cuda")


def test_num_threads_context():
    n = fastloss.get_num_threads()
    with fastloss.num_threads(1):
        assert fastloss.get_num_threads() == 1
    assert fastloss.get_num_threads() == n
    with pytest.raises(ValueError, match="num_threads"):
        fastloss.set_num_threads(0)
    with pytest.raises(TypeError, match="num_threads"):
        fastloss.set_num_threads(1.5)


def test_import_without_extension_warns_once(tmp_path):
    code = (
        "import sys, warnings\n"
        "sys.modules['fastloss._kernels_baseline'] = None\n"  # makes the import fail
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import fastloss\n"
        "    import numpy as np\n"
        "    fastloss.mse(np.ones(3), np.zeros(3)); fastloss.mse(np.ones(3), np.zeros(3))\n"
        "print(len([x for x in w if 'NumPy backend' in str(x.message)]), fastloss.get_backend())\n"
    )
    out = _run(["-c", code], tmp_path).split()
    assert out == ["1", "numpy"]

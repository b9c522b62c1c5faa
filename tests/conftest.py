import os

import numpy as np
import pytest

import fastloss


def pytest_report_header(config):
    from fastloss.tools.cli import info

    i = info()
    return [f"fastloss {i['fastloss']}: backends {i['backends']}, threads {i['num_threads']}, "
            f"openmp {i.get('extension_openmp')}, simd level {i.get('simd_level')} "
            f"(built {i.get('simd_compiled')}, cpu {i.get('simd_cpu')})"]


def pytest_sessionstart(session):
    from fastloss import _backend

    if os.environ.get("FASTLOSS_REQUIRE_NATIVE") and not fastloss.native_available():
        pytest.exit(f"FASTLOSS_REQUIRE_NATIVE is set but the extension is missing: "
                    f"{_backend.native_error}", returncode=3)
    # a run per level (FASTLOSS_SIMD=avx2 pytest ...) must not test another level
    forced = _backend.simd_info()["simd_requested"]
    if fastloss.native_available() and forced != "auto" and _backend.simd_level != forced:
        pytest.exit(f"FASTLOSS_SIMD={forced} but the {_backend.simd_level} kernels loaded: "
                    f"this machine runs {_backend.simd_info()['simd_usable']}", returncode=3)


BACKENDS = ["numpy"] + (["native"] if fastloss.native_available() else [])
"""The backends this build has: every loss test runs on each."""


def pytest_generate_tests(metafunc):
    """A test with a ``backend`` argument runs once per backend (unless it
    parametrizes ``backend`` itself)."""
    if "backend" in metafunc.fixturenames and not any(
            "backend" in str(m.args[0]).replace(" ", "").split(",")
            for m in metafunc.definition.iter_markers("parametrize")):
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture
def backends():
    """The backends this build has, for tests that loop over them."""
    return list(BACKENDS)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)

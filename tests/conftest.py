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
    if os.environ.get("FASTLOSS_REQUIRE_NATIVE") and not fastloss.native_available():
        from fastloss import _backend

        pytest.exit(f"FASTLOSS_REQUIRE_NATIVE is set but the extension is missing: "
                    f"{_backend.native_error}", returncode=3)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)

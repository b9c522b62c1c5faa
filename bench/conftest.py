"""Benchmarks: every peer runs at fastloss's thread count (see tests/conftest.py
for the report header)."""
import numpy as np
import pytest

import fastloss


@pytest.fixture(autouse=True)
def same_threads_for_torch():
    """Give torch (when installed) the same thread count as fastloss."""
    try:
        import torch
    except ImportError:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(fastloss.get_num_threads())
    yield
    torch.set_num_threads(old)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)

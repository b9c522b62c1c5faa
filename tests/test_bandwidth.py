"""fastloss.tools.bandwidth: a small run returns sane figures (the measurement itself is in bench/)."""
import pytest

import fastloss
from fastloss.tools.bandwidth import measure_bandwidth


def test_measure_bandwidth_small():
    with fastloss.num_threads(1):
        r = measure_bandwidth(n=200_000, repeats=2)
    assert r["threads"] == 1 and r["n"] == 200_000 and r["bytes_per_element"] == 24
    for key in ("triad", "inplace", "triad_median", "inplace_median"):
        assert 0 < r[key] < 1e4
    assert r["triad"] >= r["triad_median"]


def test_measure_bandwidth_bad_arguments():
    with pytest.raises(ValueError, match="repeats"):
        measure_bandwidth(n=10, repeats=0)

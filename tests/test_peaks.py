"""The benchmarks' yardsticks: the FMA peak and the read bandwidth, measured natively."""

import math

import pytest

from fusedrnn import _core


def test_fma_peak_is_a_positive_rate():
    assert 0 < _core.fma_peak_gflops(1, 100000) < math.inf


@pytest.mark.parametrize("bytes_", [256, 256 * 1024 + 100, 3 << 20])
@pytest.mark.parametrize("threads", [1, 2])
def test_read_bandwidth_is_a_positive_rate(bytes_, threads):
    assert 0 < _core.read_bandwidth_gbs(bytes_, threads, passes=2) < math.inf


@pytest.mark.parametrize("call", [
    lambda: _core.read_bandwidth_gbs(255, 1),
    lambda: _core.read_bandwidth_gbs(1 << 20, 0),
    lambda: _core.read_bandwidth_gbs(1 << 20, 1, passes=0),
    lambda: _core.fma_peak_gflops(0),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


def test_a_buffer_that_cannot_be_had_raises_memory_error():
    with pytest.raises(MemoryError):
        _core.read_bandwidth_gbs(1 << 62, 1)

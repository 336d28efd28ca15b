"""The benchmarks' yardsticks: the FMA peak and the read bandwidth, measured natively."""

import math
import os
import subprocess
import sys

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


def test_cross_core_latency_is_a_positive_time():
    assert 0 < _core.cross_core_latency_ns(200) < math.inf


def test_cross_core_latency_without_a_second_thread_is_nan():
    # OMP_THREAD_LIMIT=1 leaves every team one thread: no second core to reach (and no hang).
    code = "from fusedrnn import _core; import math; assert math.isnan(_core.cross_core_latency_ns(10))"
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_cross_core_latency_rejects_no_rounds():
    with pytest.raises(ValueError):
        _core.cross_core_latency_ns(0)

import os
import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A generator seeded from the test's own name: every test gets different data, the same on
    every run, independent of test order, selection or the directory pytest was started from."""
    seed = zlib.crc32(f"{request.module.__name__}::{request.node.name}".encode())
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def functional():
    """The module under test in tier 2: fusedrnn.functional (the native kernels).

    FUSEDRNN_TEST_IMPL=reference substitutes the NumPy reference, which checks the tests
    themselves (every comparison must then pass trivially) when no native build is at hand.
    """
    if os.environ.get("FUSEDRNN_TEST_IMPL") == "reference":
        from fusedrnn import _reference
        return _reference
    from fusedrnn import functional
    return functional


def available_isas():
    """The GEMM kernel sets this build has and this CPU runs."""
    from fusedrnn import _core
    original = _core.isa_selected()
    isas = [isa for isa in _core.isa_compiled().split(",") if _core.set_isa(isa)]
    _core.set_isa(original)
    return isas


@pytest.fixture(params=available_isas())
def isa(request):
    """Runs the test with each kernel set in turn (restoring the original after)."""
    from fusedrnn import _core
    original = _core.isa_selected()
    assert _core.set_isa(request.param)
    yield request.param
    _core.set_isa(original)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Runs the test with one and with two kernel threads."""
    import fusedrnn
    original = fusedrnn.get_num_threads()
    fusedrnn.set_num_threads(request.param)
    yield request.param
    fusedrnn.set_num_threads(original)

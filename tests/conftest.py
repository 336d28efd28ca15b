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

"""Block sizes derived from the caches the CPU reports (cpu/cpu_caches.h, cpu/gemm.cc): the
derivation for other CPUs' caches (forced with ``_core._set_cache_sizes``), and the GEMM and the
recurrence correct at the edges of the blocks each choice makes, with every ISA this machine runs.
"""

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _core, _reference
from fusedrnn import functional as F

import rnn_cases
from tolerances import OUTPUT, STATE, assert_close

# (l1d, l2, l3 per core) of server cores of both vendors, and a small one that forces many blocks.
PROFILES = {
    "amd_zen3": (32 << 10, 512 << 10, 4 << 20),
    "amd_zen5": (48 << 10, 1 << 20, 4 << 20),
    "intel_icelake": (48 << 10, 1280 << 10, 1536 << 10),
    "intel_sapphire_rapids": (48 << 10, 2 << 20, 1920 << 10),
    "small": (16 << 10, 64 << 10, 0),
}


@pytest.fixture
def profile(request):
    name = request.param
    _core._set_cache_sizes(*PROFILES[name])
    yield PROFILES[name]
    _core._set_cache_sizes(0, 0, 0)


def test_detected_caches_are_reported():
    caches = _core.cache_sizes()
    assert caches["l1d"] > 0 and caches["l2"] >= caches["l1d"] and caches["l3_per_core"] >= 0
    assert caches["source"] in ("sysfs", "sysconf", "default")
    info = fusedrnn.build_info()
    assert info["cache_sizes"] == caches
    assert info["gemm_blocking"] == _core.gemm_blocking("float32")
    assert info["bf16_kernel"] in ("avx512bf16", "avx512", "avx2", "portable")
    assert isinstance(info["cpu_vendor"], str) and info["cpu_vendor"]
    with pytest.raises(ValueError):
        _core.gemm_blocking("float16")


@pytest.mark.parametrize("profile", list(PROFILES), indirect=True)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blocking_is_the_stated_fraction_of_each_cache(profile, dtype, isa):
    l2 = profile[1]
    b = _core.gemm_blocking(dtype)
    item = np.dtype(dtype).itemsize
    rows = b["tile_rows"]
    assert _core.cache_sizes()["source"] == "override"
    # KC: an eighth of L2 for KC x 2 panels of 64 bytes, a power of two in [256, 2048].
    assert b["kc"] in (256, 512, 1024, 2048)
    assert b["kc"] == min(2048, max(256, 1 << int(np.log2(l2 // 1024))))
    # MC: whole slabs of the tile's rows, the A block within three quarters of L2 (at least a slab).
    assert b["mc"] % rows == 0 and b["mc"] >= rows
    assert b["mc"] == rows or b["mc"] * b["kc"] * item <= l2 * 3 // 4 < (b["mc"] + rows) * b["kc"] * item
    assert rows * b["tile_panels"] >= 1


def test_a_1mib_l2_keeps_the_measured_constants(isa):
    _core._set_cache_sizes(*PROFILES["amd_zen5"])
    try:
        for dtype, mc in (("float32", 192), ("float64", 96)):
            b = _core.gemm_blocking(dtype)
            assert (b["kc"], b["mc"], b["nc"]) == (1024, mc, 2048)
    finally:
        _core._set_cache_sizes(0, 0, 0)


@pytest.mark.parametrize("profile", ["small", "amd_zen3", "intel_icelake"], indirect=True)
def test_gemm_is_right_at_block_edges(profile, isa, rng):
    b = _core.gemm_blocking("float32")
    kc, mc = b["kc"], b["mc"]
    for M, N, K in [(mc + 1, 33, kc + 1), (mc - 1, 17, kc), (2 * mc + 3, 70, 2 * kc + 5), (5, 16, kc - 1)]:
        for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-12)):
            a = rng.standard_normal((M, K)).astype(dtype)
            w = rng.standard_normal((N, K)).astype(dtype)
            exact = a.astype(np.float64) @ w.T.astype(np.float64)
            for got in (_core.gemm(a, w.T), _core.gemm(np.asfortranarray(a), w.T)):
                scale = np.abs(a).astype(np.float64) @ np.abs(w.T).astype(np.float64)
                assert np.all(np.abs(got - exact) <= tol * scale), (M, N, K, dtype)


@pytest.mark.parametrize("profile", ["small", "intel_icelake"], indirect=True)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrence_matches_reference_under_other_caches(profile, cell, isa, rng):
    # T*B rows around the blocked input projections' block and row sizes for a 64 KiB L2.
    for T, B, I, H in [(9, 7, 40, 24), (30, 3, 200, 20), (2, 1, 70, 48)]:
        problem = rnn_cases.make_problem(rng, cell, T, B, I, H)
        want_y, want_states, _ = rnn_cases.forward(_reference, cell, problem, training=False)
        p32 = rnn_cases.astype(problem, np.float32)
        y, states, _ = rnn_cases.forward(F, cell, p32, training=False)
        assert_close(y, want_y, np.float32, OUTPUT, "y")
        for got, want in zip(states, want_states):
            assert_close(got, want, np.float32, STATE, "state")

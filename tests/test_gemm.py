"""Our packed GEMM (csrc/cpu/gemm.*) against NumPy, on every micro-kernel family the CPU runs.

The binding: _core.gemm(a, b, c=None) returns a @ b, or adds a @ b into c in place;
_core.gemm_packed(a, b) is the same product through pack_b + gemm_packed_b (the
recurrence's path). set_isa() forces a kernel family; every test restores the original.

Accuracy: float64 must match to 1e-12, float32 to 1e-5 * sqrt(K), both relative to
|a| @ |b| (the scale of the rounding error of any summation order), computed in float64.
"""

import numpy as np
import pytest

from fusedrnn import _core

ISAS = ["avx512", "avx2", "portable"]
DTYPES = [np.float32, np.float64]
# Edges of the register tiles and panels: 16 floats / 8 doubles per panel, tiles of up to
# 12 rows, K cut in slices of 256.
SIZES = [1, 2, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257]


@pytest.fixture(params=ISAS)
def isa(request):
    original = _core.isa_selected()
    if not _core.set_isa(request.param):
        pytest.skip(f"{request.param} kernels not available on this CPU or build")
    assert _core.isa_selected() == request.param
    yield request.param
    assert _core.set_isa(original)


def random(rng, shape, dtype):
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def assert_product(got, a, b, c0=None):
    """got == c0 + a @ b within the module's tolerance; checks shape and dtype first."""
    dtype = a.dtype
    assert got.dtype == dtype
    assert got.shape == (a.shape[0], b.shape[1])
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64)
    if c0 is not None:
        want = want + c0
        scale = scale + np.abs(c0)
    k = a.shape[1]
    rtol = 1e-12 if dtype == np.float64 else 1e-5 * np.sqrt(max(k, 1))
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= rtol * scale + np.finfo(dtype).tiny), f"max err {err.max()}"


def shape_cases():
    """Every (M, N) pair of SIZES with a short, a middle and a multi-slice K, plus every K."""
    cases = {(m, n, k) for m in SIZES for n in SIZES for k in (1, 33, 300)}
    cases |= {(m, n, k) for k in SIZES for m, n in ((1, 64), (13, 17), (65, 33))}
    return sorted(cases)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_shapes(isa, dtype):
    rng = np.random.default_rng(0)
    for m, n, k in shape_cases():
        a, b = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
        assert_product(_core.gemm(a, b), a, b)
        # A column-major operand takes the packed-A path instead of reading rows in place.
        a_f = np.asfortranarray(a)
        assert_product(_core.gemm(a_f, b), a_f, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_strided_and_transposed_views(isa, dtype):
    rng = np.random.default_rng(1)
    m, n, k = 41, 45, 70  # 41 rows: a short last slab for every tile height (12, 6, 3)
    a_views = {
        "contiguous": random(rng, (m, k), dtype),
        "transposed": random(rng, (k, m), dtype).T,
        "fortran": np.asfortranarray(random(rng, (m, k), dtype)),
        "strided": random(rng, (2 * m, 3 * k), dtype)[::2, ::3],
        "negative": random(rng, (m, k), dtype)[::-1, ::-1],
    }
    b_views = {
        "contiguous": random(rng, (k, n), dtype),
        "transposed": random(rng, (n, k), dtype).T,
        "strided": random(rng, (3 * k, 2 * n), dtype)[::3, 1::2],
        "negative": random(rng, (k, n), dtype)[::-1],
    }
    for a in a_views.values():
        for b in b_views.values():
            assert_product(_core.gemm(a, b), a, b)
            assert_product(_core.gemm_packed(np.ascontiguousarray(a), b), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_accumulates_in_place(isa, dtype):
    rng = np.random.default_rng(2)
    for m, n, k in [(1, 1, 1), (7, 33, 5), (65, 17, 257), (100, 64, 300)]:
        a, b = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
        c = random(rng, (m, n), dtype)
        c0 = c.astype(np.float64)
        _core.gemm(a, b, c)
        assert_product(c, a, b, c0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_empty_dimensions(isa, dtype):
    rng = np.random.default_rng(3)
    for m, n, k in [(0, 5, 3), (5, 0, 3), (0, 0, 0)]:
        got = _core.gemm(random(rng, (m, k), dtype), random(rng, (k, n), dtype))
        assert got.shape == (m, n) and got.dtype == dtype
    # K == 0: the product is zero; accumulating leaves c unchanged
    a, b = np.zeros((4, 0), dtype), np.zeros((0, 6), dtype)
    got = _core.gemm(a, b)
    assert got.shape == (4, 6) and got.dtype == dtype and not got.any()
    c = random(rng, (4, 6), dtype)
    c0 = c.copy()
    _core.gemm(a, b, c)
    np.testing.assert_array_equal(c, c0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_packed_small_batches(isa, dtype):
    """The recurrence's path: few rows (batch), N not a multiple of the panel width."""
    rng = np.random.default_rng(4)
    for m in range(1, 18):
        for n in [1, 5, 9, 17, 40, 100]:
            for k in [1, 64, 257]:
                a, b = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
                assert_product(_core.gemm_packed(a, b), a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_packing_weight_rows(isa, dtype):
    """B's columns contiguous (rows of a weight matrix, as the recurrence packs W_hh): with
    AVX-512 full panels are transposed 16 x 16 at a time, the rest element by element. Packing
    is exact, so the product must equal the one from a contiguous copy of B bit for bit."""
    rng = np.random.default_rng(6)
    for n in [15, 16, 17, 32, 48, 50]:
        for k in [1, 15, 16, 17, 32, 40, 64]:
            a, w = random(rng, (3, k), dtype), random(rng, (n, k), dtype)
            packed_from_rows = _core.gemm_packed(a, w.T)
            assert_product(packed_from_rows, a, w.T)
            np.testing.assert_array_equal(packed_from_rows, _core.gemm_packed(a, np.ascontiguousarray(w.T)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_packing_row_major_panels(isa, dtype):
    """B row-major (adjacent columns, rows k apart, as the backward packs W_hh): full panels are
    copied a row of k at a time, a ragged last one element by element. The product must equal, bit
    for bit, the one from the same values with their columns apart (packed element by element)."""
    rng = np.random.default_rng(7)
    for n in [7, 15, 16, 17, 32, 33, 40]:
        for k in [1, 2, 17, 64]:
            a, b = random(rng, (2, k), dtype), random(rng, (k, n), dtype)
            spread = np.zeros((k, 2 * n), dtype)
            spread[:, ::2] = b
            from_rows = _core.gemm_packed(a, b)
            assert_product(from_rows, a, b)
            np.testing.assert_array_equal(from_rows, _core.gemm_packed(a, spread[:, ::2]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_4_kib_apart(isa, dtype):
    """Rows of A a multiple of 4 KiB apart fall in one L1 set: gemm_packed_b copies them, in
    blocks of about 60 rows, one cache line further apart, and gemm packs them. Neither changes a
    sum: each product must equal, bit for bit, the one computed a row at a time (gemm_packed_b,
    whose one-row calls read A in place) or from a contiguous copy (gemm)."""
    rng = np.random.default_rng(8)
    row = 4096 // np.dtype(dtype).itemsize
    for m in [2, 11, 12, 13, 59, 60, 61, 64, 121]:
        for n in [17, 40]:
            a, b = random(rng, (m, row), dtype), random(rng, (row, n), dtype)
            got = _core.gemm_packed(a, b)
            assert_product(got, a, b)
            one_by_one = np.concatenate([_core.gemm_packed(a[i:i + 1], b) for i in range(m)])
            np.testing.assert_array_equal(got, one_by_one)
            for k in [row, 300]:
                view, b = random(rng, (m, 2 * row), dtype)[:, :k], random(rng, (k, n), dtype)
                got = _core.gemm(view, b)
                assert_product(got, view, b)
                np.testing.assert_array_equal(got, _core.gemm(np.ascontiguousarray(view), b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_is_deterministic(isa, dtype):
    rng = np.random.default_rng(5)
    a, b = random(rng, (301, 517), dtype), random(rng, (517, 203), dtype)
    first, second = _core.gemm(a, b), _core.gemm(a, b)
    np.testing.assert_array_equal(first, second)
    a, b = random(rng, (9, 300), dtype), random(rng, (300, 70), dtype)
    np.testing.assert_array_equal(_core.gemm_packed(a, b), _core.gemm_packed(a, b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_k_gives_the_same_bits_with_any_thread_count(isa, dtype):
    # A deep K next to a small result (the weight gradients' shape) is summed as two halves of K
    # (gemm.cc's sums_halves_of_k), by half the threads each: one, two and three threads must give
    # the same bits, in place too, and the product itself (odd K: unequal halves; A transposed).
    import fusedrnn
    rng = np.random.default_rng(6)
    original = fusedrnn.get_num_threads()
    try:
        for m, n, k in [(16, 16, 129), (128, 160, 2001), (40, 33, 1500)]:
            a, b = random(rng, (k, m), dtype).T, random(rng, (k, n), dtype)
            c0 = random(rng, (m, n), dtype)
            results = []
            for count in (1, 2, 3):
                fusedrnn.set_num_threads(count)
                c = c0.copy()
                _core.gemm(a, b, c)
                results.append((_core.gemm(a, b), c))
            assert_product(results[0][0], a, b)
            assert_product(results[0][1], a, b, c0.astype(np.float64))
            for product, accumulated in results[1:]:
                np.testing.assert_array_equal(product, results[0][0])
                np.testing.assert_array_equal(accumulated, results[0][1])
    finally:
        fusedrnn.set_num_threads(original)


def test_isa_selection_rejects_unknown_names():
    original = _core.isa_selected()
    assert original in ISAS
    assert not _core.set_isa("not-an-isa")
    assert _core.isa_selected() == original
    assert _core.set_isa("portable")  # always compiled in, runs anywhere
    assert _core.set_isa(original)

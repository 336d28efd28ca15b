"""The bfloat16-weight product's kernels: AVX-512 and AVX2 widen the packed bfloat16 weights to
float32 in registers (a shift and a mask) on CPUs without AVX512-BF16, and must give bitwise the
portable loop's results, at every tile and block edge. Each kernel is forced by name where this
build and CPU have it (``_core._gemm_bf16_with``), whatever the selected instruction set.
"""

import numpy as np
import pytest

from fusedrnn import _core

KERNELS = ["avx2", "avx512", "avx512bf16"]


def available(kernel):
    one = np.ones((1, 1), np.float32)
    return _core._gemm_bf16_with(kernel, one, one) is not None


# Rows around the tiles' heights (1..4, AVX2's 3, AVX-512's 4) and the driver's 64-row blocks;
# columns around one 16-column panel and the 4-panel chunks; K odd (a zero-padded last pair) and even.
ROWS = [1, 2, 3, 4, 5, 7, 8, 13, 64, 70]
COLS = [1, 15, 16, 17, 48, 63, 64, 65, 130]
DEPTHS = [1, 2, 3, 31, 64, 257]


@pytest.mark.parametrize("kernel", KERNELS)
def test_widening_kernels_equal_the_portable_loop_bitwise(kernel, rng):
    if not available(kernel):
        pytest.skip(f"this build or CPU has no {kernel} bf16 kernel")
    for M in ROWS:
        for N in COLS:
            K = DEPTHS[(M + N) % len(DEPTHS)]
            a = rng.standard_normal((M, K)).astype(np.float32)
            b = (rng.standard_normal((K, N)) * 0.1).astype(np.float32)
            got = _core._gemm_bf16_with(kernel, a, b)
            want = _core._gemm_bf16_with("portable", a, b)
            assert got.shape == (M, N)
            np.testing.assert_array_equal(got, want, err_msg=f"M={M} N={N} K={K}")
    # A transposed B (packing reads columns with a stride) and every depth at one shape.
    for K in DEPTHS:
        a = rng.standard_normal((5, K)).astype(np.float32)
        b = rng.standard_normal((33, K)).astype(np.float32).T
        np.testing.assert_array_equal(_core._gemm_bf16_with(kernel, a, b), _core._gemm_bf16_with("portable", a, b))


def test_the_selected_kernel_follows_the_instruction_set():
    original = _core.isa_selected()
    try:
        for isa in _core.isa_compiled().split(","):
            if not _core.set_isa(isa):
                continue
            kernel = _core.bf16_kernel()
            if isa == "avx512" and _core.bf16_native():
                assert kernel == "avx512bf16"
            else:
                assert kernel == isa, (isa, kernel)
            a = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
            b = np.linspace(-2, 1, 20, dtype=np.float32).reshape(4, 5)
            np.testing.assert_array_equal(_core.gemm_bf16(a, b), _core._gemm_bf16_with(kernel, a, b))
    finally:
        _core.set_isa(original)


def test_unknown_kernel_gives_none():
    one = np.ones((1, 1), np.float32)
    assert _core._gemm_bf16_with("sse9", one, one) is None
    assert _core._gemm_bf16_with("portable", one, one) is not None

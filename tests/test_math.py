"""Accuracy of the kernels' float32 exp, sigmoid and tanh (csrc/cpu/math.h) against float64,
with every instruction set's build of them (the `isa` fixture of conftest.py)."""

import numpy as np
import pytest

from fusedrnn import _core

# One float32 ulp at 1 is 2**-23 ~ 1.2e-7; rounding the exact result to float32 alone costs
# 0.5 ulp. Measured worst cases on this grid: exp 0.65, sigmoid 0.74 ulp; the bound is 2 ulp
# (sigmoid near 0 is held to 2 ulp of 1, absolute: its result is below float32's resolution of 1
# there and feeds only sums with values near 1).
# tanh is a rational function, half the operations of an exp-based one (math.h says why), and
# its own bound: over every float32 in [1e-30, 9.5], worst 2.42 x 2^-23 relative with FMA (AVX2;
# AVX-512 runs the same operations) and 3.22 without (the portable build rounds each product and
# sum apart), near +-1.
ULP = 2.0 ** -23


def tanh_bound(isa):
    """tanh's bound in units of 2**-23, relative: with FMA, and without (the portable build)."""
    return 3.5 if isa == "portable" else 2.5


FUNCTIONS = {
    "exp": np.exp,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


def grid():
    """Dense where the functions bend, wide enough to reach saturation and the exp clamp."""
    dense = np.linspace(-10, 10, 200_001)
    wide = np.linspace(-90, 90, 50_001)
    tiny = np.concatenate([np.geomspace(1e-30, 1e-2, 2_000), -np.geomspace(1e-30, 1e-2, 2_000)])
    return np.concatenate([dense, wide, tiny, [0.0, -0.0]]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_accuracy(isa, name):
    x = grid()
    if name == "exp":
        # e^x overflows float32 above ~88.7; below -87 the kernel clamps (results under 1.7e-38,
        # zero for every purpose here: see test_exp_underflows_to_tiny_not_nan).
        x = x[(x >= -87.0) & (x <= 88.0)]
    got = _core._vector_math(name, x).astype(np.float64)
    want = FUNCTIONS[name](x.astype(np.float64))
    scale = np.abs(want) if name == "exp" else np.maximum(np.abs(want), 1.0 if name == "sigmoid" else 0.0)
    relative = np.abs(got - want) / np.where(scale > 0, scale, 1.0)
    if name == "tanh":
        # Relative for small |tanh|, absolute near +-1 where the result's ulp is the limit's.
        relative = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
    worst = np.argmax(relative)
    bound = tanh_bound(isa) if name == "tanh" else 2
    assert relative[worst] <= bound * ULP, f"{name}({x[worst]!r}) = {got[worst]!r}, want {want[worst]!r}"


def test_exp_underflows_to_tiny_not_nan(isa):
    got = _core._vector_math("exp", np.array([-100.0, -1e30], np.float32))
    assert np.all(np.isfinite(got)) and np.all(got >= 0) and np.all(got < 1e-37)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_nan_propagates_and_infinities_saturate(isa, name):
    got = _core._vector_math(name, np.array([np.nan, np.inf, -np.inf, 1e30, -1e30], np.float32))
    assert np.isnan(got[0])
    if name == "sigmoid":
        np.testing.assert_allclose(got[1:], [1, 0, 1, 0], atol=1e-37)
    if name == "tanh":
        np.testing.assert_array_equal(got[1:], [1, -1, 1, -1])


def test_partial_vectors_and_lengths(isa):
    """Every length mod 16: the tail of an array is a partial vector."""
    for n in range(0, 40):
        x = np.linspace(-3, 3, n).astype(np.float32)
        np.testing.assert_allclose(_core._vector_math("tanh", x), np.tanh(x), rtol=tanh_bound(isa) * ULP, atol=1e-30)

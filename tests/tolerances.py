"""The one tolerance table for comparing computed results with the reference.

An element passes when |actual - expected| <= atol + rtol * scale, where scale is |expected|
elementwise for outputs, states and input gradients, and mean(|expected|) over the whole array
for weight and bias gradients: those are sums over all T*B rows with cancellation, so single
entries can be near zero while the array's rounding error follows its typical magnitude.

Float32 results are compared with the reference evaluated in float64 on the same (float32) inputs,
so the table bounds the distance from the exact answer. The float32 numbers were calibrated by
running the float32 reference itself against the float64 reference on the tier-2 sizes (up to
T=20, B=8, I=64, H=128; every cell, both directions, variable lengths): worst errors were about
4e-7 absolute for outputs and states, 7e-7 for input gradients and 7e-6 relative to mean |g| for
weight gradients. The table leaves 15-20x headroom for a different summation order and for
vectorized exp/tanh approximations with a few ulp of error, and no more, so that a real bug
(wrong mask, dropped term) cannot hide inside it.
"""

import numpy as np

OUTPUT, STATE, INPUT_GRAD, WEIGHT_GRAD = "output", "state", "input_grad", "weight_grad"
CELL_STEP = "cell_step"

TOLERANCES = {  # dtype -> kind -> (atol, rtol)
    np.dtype(np.float32): {
        # y in (-1, 1) for tanh cells (relu can grow): float32 eps is 1.2e-7 and the GEMMs sum
        # I+H terms, then T steps compound; calibrated worst 4e-7.
        OUTPUT: (1e-5, 1e-5),
        STATE: (1e-5, 1e-5),    # h_n is an output; c_n is unbounded but grows slowly
        # dx, dh0, dc0 go through T steps of backward GEMMs with H terms each; worst 7e-7 absolute,
        # relative error larger where the reference value is tiny, hence rtol 1e-4.
        INPUT_GRAD: (1e-5, 1e-4),
        # dW, db: sums over T*B rows; worst 7e-6 of mean |g|.
        WEIGHT_GRAD: (1e-6, 1e-4),
        # One cell's pointwise step on one unit (tests/test_cells_scalar.py): no sums, a handful of
        # roundings and library exp/tanh; calibrated worst 3.3 ulp of (1 + |expected|), bound 16.
        CELL_STEP: (2e-6, 2e-6),
    },
    np.dtype(np.float64): {
        # float64 rounding is ~2^29 (5e8) times smaller than float32's, so the calibrated float32
        # errors scale to ~1e-15. Outputs must agree to 1e-10 relative (~1e5 headroom, which still
        # catches any float32 intermediate: that would show as errors ~1e-7).
        OUTPUT: (1e-12, 1e-10),
        STATE: (1e-12, 1e-10),
        # Gradients must agree to 1e-9 relative (the requirement for float64 gradients).
        INPUT_GRAD: (1e-11, 1e-9),
        WEIGHT_GRAD: (1e-12, 1e-9),
        # Calibrated worst 5.2 ulp of (1 + |expected|), ~1.2e-15: ~1000x headroom, and still
        # far below what a float32 intermediate would show.
        CELL_STEP: (1e-12, 1e-12),
    },
}


def tolerance(dtype, kind):
    """(atol, rtol) for results of this dtype and kind."""
    return TOLERANCES[np.dtype(dtype)][kind]


def assert_close(actual, expected, dtype, kind, name=""):
    """Assert |actual - expected| <= atol + rtol * scale (see the module docstring).

    Shapes must match exactly; NaN or inf anywhere in `actual` fails.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    label = f"{name} ({kind}, {np.dtype(dtype).name})"
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    if expected.size == 0:
        return
    atol, rtol = tolerance(dtype, kind)
    expected = expected.astype(np.float64)
    error = np.abs(actual.astype(np.float64) - expected)
    scale = np.mean(np.abs(expected)) if kind == WEIGHT_GRAD else np.abs(expected)
    bound = atol + rtol * scale
    passed = error <= bound            # False for NaN
    if not np.all(passed):
        worst = np.unravel_index(np.argmax(np.where(passed, -np.inf, error - bound)), error.shape)
        raise AssertionError(
            f"{label}: {np.count_nonzero(~passed)} of {error.size} elements out of tolerance "
            f"(atol={atol:g}, rtol={rtol:g}); worst at {worst}: actual {actual[worst]!r}, "
            f"expected {expected[worst]!r}, |error| {error[worst]:.3g} > bound "
            f"{np.broadcast_to(bound, error.shape)[worst]:.3g}")

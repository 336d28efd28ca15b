"""Tier 2: the native kernels (fusedrnn.functional) against the NumPy reference.

Expected values come from the reference evaluated in float64 on the very same inputs, so
float64 results are held to ~1e-10 and float32 results to the table in tolerances.py.
"""

import numpy as np
import pytest

from fusedrnn import _core
from fusedrnn import _reference as ref
from rnn_cases import (CELLS, GATES, astype, backward, forward, make_cotangents, make_lengths, make_problem,
                       make_sorted_lengths, num_states)
from tolerances import INPUT_GRAD, OUTPUT, STATE, WEIGHT_GRAD, assert_close

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]

# (T, B, I, H): T=1, B=1, H=1 and I=H=1 edges; H around a SIMD/GEMM tile boundary (31, 32, 33);
# I != H except once (I == H == 32) so swapped dimensions fail loudly; and one larger case.
# T = B = 1 is a generation step, whose products read the weights in place (cpu/layer.h).
SIZES = [
    (1, 1, 1, 1),
    (1, 1, 19, 37),
    (1, 2, 3, 4),
    (4, 1, 3, 5),
    (3, 2, 4, 1),
    (3, 4, 5, 31),
    (3, 4, 32, 32),
    (3, 4, 7, 33),
    (7, 17, 40, 65),
]


def size_id(size):
    return "T{}B{}I{}H{}".format(*size)


def check_shapes_and_dtypes(cell, problem, dtype, y, final_states, grads=None):
    T, B, I = problem["x"].shape
    H = problem["weights"][1].shape[1]
    assert y.shape == (T, B, H) and y.dtype == dtype
    assert len(final_states) == num_states(cell)
    for s in final_states:
        assert s.shape == (B, H) and s.dtype == dtype
    if grads is None:
        return
    dx, d_states, d_weights = grads
    assert dx.shape == (T, B, I) and dx.dtype == dtype
    for d in d_states:
        assert d.shape == (B, H) and d.dtype == dtype
    for w, dw in zip(problem["weights"], d_weights):
        if w is None:
            assert dw is None
        else:
            assert dw.shape == w.shape and dw.dtype == dtype


def assert_results_close(cell, dtype, actual, expected):
    """Compare ((y, final_states), (dx, d_states, d_weights)) pairs, every array."""
    (y, final_states), (dx, d_states, d_weights) = actual
    (y_ref, final_ref), (dx_ref, d_states_ref, d_weights_ref) = expected
    assert_close(y, y_ref, dtype, OUTPUT, "y")
    for name, a, b in zip(["h_n", "c_n"], final_states, final_ref):
        assert_close(a, b, dtype, STATE, name)
    assert_close(dx, dx_ref, dtype, INPUT_GRAD, "dx")
    for name, a, b in zip(["dh0", "dc0"], d_states, d_states_ref):
        assert_close(a, b, dtype, INPUT_GRAD, name)
    for name, a, b in zip(["dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh"],
                          d_weights, d_weights_ref):
        if b is None:
            assert a is None, name
        else:
            assert_close(a, b, dtype, WEIGHT_GRAD, name)


def reference_results(cell, problem, lengths, reverse, dy, d_final_states):
    """The reference in float64 on the same inputs: close to exact even for float32 inputs."""
    y, final_states, saved = forward(ref, cell, astype(problem, np.float64), lengths, reverse)
    grads = backward(ref, cell, dy.astype(np.float64),
                     [d.astype(np.float64) for d in d_final_states], saved)
    return (y, final_states), grads


@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variable", [False, True], ids=["equal", "variable"])
@pytest.mark.parametrize("random_state", [False, True], ids=["zero_state", "random_state"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_reference(functional, rng, cell, dtype, random_state, variable, reverse, bias,
                           size):
    T, B, I, H = size
    problem = make_problem(rng, cell, T, B, I, H, dtype, random_state, bias)
    lengths = make_lengths(rng, T, B) if variable else None

    y, final_states, saved = forward(functional, cell, problem, lengths, reverse)
    check_shapes_and_dtypes(cell, problem, dtype, y, final_states)

    # Inference mode: same outputs, nothing saved.
    y_infer, final_infer, saved_infer = forward(functional, cell, problem, lengths, reverse,
                                                training=False)
    assert saved_infer is None
    check_shapes_and_dtypes(cell, problem, dtype, y_infer, final_infer)
    assert_close(y_infer, y, dtype, OUTPUT, "y (training=False)")
    for a, b in zip(final_infer, final_states):
        assert_close(a, b, dtype, STATE, "final state (training=False)")

    # Cotangents are random everywhere, padded positions included: those must have no effect.
    dy, d_final_states = make_cotangents(rng, y, final_states)
    grads = backward(functional, cell, dy, d_final_states, saved)
    check_shapes_and_dtypes(cell, problem, dtype, y, final_states, grads)

    expected = reference_results(cell, problem, lengths, reverse, dy, d_final_states)
    assert_results_close(cell, dtype, ((y, final_states), grads), expected)


# ---------------------------------------------------------------------------------------------
# Memory layouts: non-contiguous inputs give the same answer as contiguous ones.
# ---------------------------------------------------------------------------------------------

def relayout(a, layout):
    """The same values as `a` in another memory layout (None stays None)."""
    if a is None:
        return None
    a = np.asarray(a)
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":   # every second element of a larger buffer, in every dimension
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        big[tuple(slice(None, None, 2) for _ in a.shape)] = a
        return big[tuple(slice(None, None, 2) for _ in a.shape)]
    if layout == "negative":  # a reversed view of a reversed copy: negative strides everywhere
        flip = tuple(slice(None, None, -1) for _ in a.shape)
        return a[flip].copy()[flip]
    raise ValueError(layout)


@pytest.mark.parametrize("layout", ["strided", "fortran", "negative"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_non_contiguous_inputs(functional, rng, cell, dtype, layout):
    T, B, I, H = 4, 3, 6, 5
    problem = make_problem(rng, cell, T, B, I, H, dtype)
    lengths = make_lengths(rng, T, B)
    y, final_states, saved = forward(functional, cell, problem, lengths, reverse=True)
    dy, d_final_states = make_cotangents(rng, y, final_states)
    grads = backward(functional, cell, dy, d_final_states, saved)

    moved = dict(x=relayout(problem["x"], layout),
                 states=[relayout(s, layout) for s in problem["states"]],
                 weights=[relayout(w, layout) for w in problem["weights"]])
    assert not moved["x"].flags.c_contiguous and not moved["weights"][0].flags.c_contiguous
    y2, final2, saved2 = forward(functional, cell, moved, relayout(lengths, layout), reverse=True)
    grads2 = backward(functional, cell, relayout(dy, layout),
                      [relayout(d, layout) for d in d_final_states], saved2)
    assert_results_close(cell, dtype, ((y2, final2), grads2), ((y, final_states), grads))


@pytest.mark.parametrize("cell", CELLS)
def test_inputs_untouched_and_outputs_fresh(functional, rng, cell):
    """Nothing writes into the caller's arrays, and no result aliases an input
    (the layer accumulates into .grad, so an aliased gradient would corrupt it)."""
    T, B, I, H = 3, 4, 5, 6
    problem = make_problem(rng, cell, T, B, I, H)
    lengths = make_lengths(rng, T, B)
    y, final_states, saved = forward(functional, cell, problem, lengths)
    dy, d_final_states = make_cotangents(rng, y, final_states)
    inputs = [problem["x"], *problem["states"], *problem["weights"], lengths, dy, *d_final_states]
    snapshot = [a.copy() for a in inputs]
    dx, d_states, d_weights = backward(functional, cell, dy, d_final_states, saved)
    for a, before in zip(inputs, snapshot):
        np.testing.assert_array_equal(a, before)
    for result in [y, *final_states, dx, *d_states, *d_weights]:
        assert not any(np.shares_memory(result, a) for a in inputs)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_none_cotangents_mean_zero(functional, rng, cell, dtype):
    T, B, I, H = 3, 2, 4, 5
    problem = make_problem(rng, cell, T, B, I, H, dtype)
    y, final_states, saved = forward(functional, cell, problem)
    dy, d_final_states = make_cotangents(rng, y, final_states)
    zeros = [np.zeros_like(d) for d in d_final_states]
    only_dy = backward(functional, cell, dy, [None] * num_states(cell), saved)
    assert_results_close(cell, dtype, ((y, final_states), only_dy),
                         ((y, final_states), backward(functional, cell, dy, zeros, saved)))
    only_final = backward(functional, cell, None, d_final_states, saved)
    assert_results_close(cell, dtype, ((y, final_states), only_final),
                         ((y, final_states), backward(functional, cell, np.zeros_like(dy),
                                                      d_final_states, saved)))


@pytest.mark.parametrize("lengths", [None, "empty_array"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch(functional, rng, cell, dtype, lengths):
    T, B, I, H = 3, 0, 4, 5
    problem = make_problem(rng, cell, T, B, I, H, dtype)
    lengths = np.zeros(0, np.int64) if lengths == "empty_array" else None
    y, final_states, saved = forward(functional, cell, problem, lengths)
    check_shapes_and_dtypes(cell, problem, dtype, y, final_states)
    dy, d_final_states = make_cotangents(rng, y, final_states)
    grads = backward(functional, cell, dy, d_final_states, saved)
    check_shapes_and_dtypes(cell, problem, dtype, y, final_states, grads)
    for dw in grads[2]:
        assert np.all(dw == 0)   # no rows: the gradient sums are empty


# ---------------------------------------------------------------------------------------------
# Bad inputs raise (validation lives in the native wrapper; the reference does not validate).
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def validating(functional):
    if functional is ref:
        pytest.skip("the reference does not validate its inputs")
    return functional


BAD_T, BAD_B, BAD_I, BAD_H = 3, 2, 4, 5


def valid_problem(rng, cell, dtype=np.float64):
    return make_problem(rng, cell, BAD_T, BAD_B, BAD_I, BAD_H, dtype)


def component(problem, key):
    """problem's array for key: 'x', 'state0'/'state1' (h0/c0) or 'weight0'..'weight3'."""
    if key == "x":
        return problem["x"]
    return problem["states" if key.startswith("state") else "weights"][int(key[-1])]


def replace(problem, **changes):
    """A copy of `problem` with the arrays named as in component() replaced."""
    new = dict(x=problem["x"], states=list(problem["states"]), weights=list(problem["weights"]))
    for key, value in changes.items():
        if key == "x":
            new["x"] = value
        else:
            new["states" if key.startswith("state") else "weights"][int(key[-1])] = value
    return new


def bad_shape_cases(cell):
    """name -> function(problem) -> bad problem; all must raise ValueError."""
    GH, T, B, I, H = GATES[cell] * BAD_H, BAD_T, BAD_B, BAD_I, BAD_H
    z = np.zeros
    cases = {
        "x_ndim_2": lambda p: replace(p, x=p["x"][0]),
        "x_ndim_4": lambda p: replace(p, x=p["x"][..., None]),
        "x_feature_size": lambda p: replace(p, x=z((T, B, I + 1))),
        "x_empty_time": lambda p: replace(p, x=z((0, B, I))),
        "h0_batch": lambda p: replace(p, state0=z((B + 1, H))),
        "h0_hidden": lambda p: replace(p, state0=z((B, H + 1))),
        "h0_ndim_1": lambda p: replace(p, state0=z(B * H)),
        "weight_ih_rows": lambda p: replace(p, weight0=z((GH + 1, I))),
        "weight_ih_cols": lambda p: replace(p, weight0=z((GH, I + 1))),
        "weight_ih_ndim_1": lambda p: replace(p, weight0=z(GH * I)),
        "weight_hh_rows": lambda p: replace(p, weight1=z((GH + GATES[cell], H))),
        "weight_hh_cols": lambda p: replace(p, weight1=z((GH, H + 1))),
        "bias_ih_size": lambda p: replace(p, weight2=z(GH + 1)),
        "bias_hh_ndim_2": lambda p: replace(p, weight3=z((1, GH))),
    }
    if cell == "lstm":
        cases["c0_hidden"] = lambda p: replace(p, state1=z((B, H + 1)))
        cases["c0_batch"] = lambda p: replace(p, state1=z((B - 1, H)))
    return cases


BAD_SHAPE_PARAMS = [(cell, name) for cell in CELLS for name in bad_shape_cases(cell)]


@pytest.mark.parametrize("cell,case", BAD_SHAPE_PARAMS, ids=[f"{c}-{n}" for c, n in BAD_SHAPE_PARAMS])
def test_bad_shapes_raise_value_error(validating, rng, cell, case):
    problem = bad_shape_cases(cell)[case](valid_problem(rng, cell))
    with pytest.raises(ValueError):
        forward(validating, cell, problem)


@pytest.mark.parametrize("bad_lengths", [
    [BAD_T + 1, 1],            # longer than T
    [-1, 1],                   # negative
    [1, 2, 3],                 # one per sequence, not B+1
    [[1, 2]],                  # not one-dimensional
], ids=["too_long", "negative", "wrong_count", "ndim_2"])
@pytest.mark.parametrize("cell", CELLS)
def test_bad_lengths_raise_value_error(validating, rng, cell, bad_lengths):
    with pytest.raises(ValueError):
        forward(validating, cell, valid_problem(rng, cell), lengths=np.array(bad_lengths))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.float16, np.complex128])
@pytest.mark.parametrize("cell", CELLS)
def test_unsupported_dtype_raises_type_error(validating, rng, cell, dtype):
    with pytest.raises(TypeError):
        forward(validating, cell, astype(valid_problem(rng, cell), dtype))


@pytest.mark.parametrize("odd_one", ["x", "state0", "weight0", "weight1", "weight2"])
@pytest.mark.parametrize("cell", CELLS)
def test_mixed_float_dtypes_raise_type_error(validating, rng, cell, odd_one):
    """Silent casting would hide a float64 gradient check running in float32 (or the reverse)."""
    problem = valid_problem(rng, cell)  # float64
    float32_one = component(problem, odd_one).astype(np.float32)
    with pytest.raises(TypeError):
        forward(validating, cell, replace(problem, **{odd_one: float32_one}))


@pytest.mark.parametrize("cell", CELLS)
def test_backward_without_saved_raises_value_error(functional, rng, cell):
    problem = valid_problem(rng, cell)
    y, final_states, saved = forward(functional, cell, problem, training=False)
    assert saved is None
    with pytest.raises(ValueError):
        backward(functional, cell, y, final_states, None)


def test_unknown_nonlinearity_raises_value_error(functional, rng):
    problem = valid_problem(rng, "rnn_tanh")
    with pytest.raises(ValueError):
        functional.rnn_forward(problem["x"], *problem["states"], *problem["weights"],
                               nonlinearity="sigmoid")


# ---------------------------------------------------------------------------------------------
# Every GEMM kernel set this CPU runs, and one and two threads (the `isa` and `threads` fixtures
# of conftest.py): the recurrence's split of hidden units among threads and of the batch into
# row blocks (64 rows) must not change the answer.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_every_kernel_set_and_thread_count(validating, rng, isa, threads, cell, dtype):
    T, B, I, H = 4, 70, 9, 40   # B > 64 crosses a row block; H spans several unit chunks
    problem = make_problem(rng, cell, T, B, I, H, dtype)
    lengths = make_lengths(rng, T, B)
    y, final_states, saved = forward(validating, cell, problem, lengths, reverse=True)
    dy, d_final_states = make_cotangents(rng, y, final_states)
    grads = backward(validating, cell, dy, d_final_states, saved)
    expected = reference_results(cell, problem, lengths, True, dy, d_final_states)
    assert_results_close(cell, dtype, ((y, final_states), grads), expected)


# H and I of 4 KiB of values: every row of the products' left operands (h, x) lies a multiple of
# 4 KiB from the next, in one L1 set, and the step's products (driver.h's rows_apart) or the GEMMs
# themselves copy or pack them further apart (cpu/gemm.cc's rows_share_l1_set); the backward's gate
# gradients are laid out a cache line further apart instead (backward.cc's gate_gradient_stride).
# B = 13 is a full tile of rows and one more. "few steps": two sequences take steps, so that the
# backward's GEMMs gather the rows that took one (in that stride), and the team splits the batch,
# so that the bias gradients are summed after the loop (from rows in that stride too).
@pytest.mark.parametrize("steps", ["every step", "few steps"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_rows_4_kib_apart(validating, rng, isa, threads, cell, dtype, steps):
    H = 4096 // np.dtype(dtype).itemsize
    T, B, I = 2, 13, H
    problem = make_problem(rng, cell, T, B, I, H, dtype)
    lengths = None if steps == "every step" else np.array([0, T, 0, 1] + [0] * (B - 4))
    if lengths is not None:
        _core._set_team_split("rows")
    try:
        y, final_states, saved = forward(validating, cell, problem, lengths, reverse=False)
        dy, d_final_states = make_cotangents(rng, y, final_states)
        grads = backward(validating, cell, dy, d_final_states, saved)
    finally:
        _core._set_team_split("rule")
    expected = reference_results(cell, problem, lengths, False, dy, d_final_states)
    assert_results_close(cell, dtype, ((y, final_states), grads), expected)


# Sorted lengths (a PackedSequence's order): each step's recurrent products, its input
# projections and the backward's GEMMs over all steps run only the rows of the sequences that
# take it (schedule.h's active_prefix_rows), in both directions, across a row block, with the
# projections from each thread's blocks or (a 4 KiB L2 and a wider input force it) from one merged GEMM.
# Shuffled, the same lengths run in that order all the same: forward and backward copy the batch
# into it and back (cpu/batch_order.h; with three quarters of the rows left out, H = 48 makes that
# pay for every cell, the RNN's single gate included).
@pytest.mark.parametrize("order", ["sorted", "shuffled"])
@pytest.mark.parametrize("projections", ["blocks", "merged"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_leave_finished_sequences_out(validating, rng, isa, threads, cell, dtype, reverse, projections,
                                              order):
    T, B, I, H = 6, 70, 9 if projections == "blocks" else 200, 48
    problem = make_problem(rng, cell, T, B, I, H, dtype, random_state=True)
    lengths = make_sorted_lengths(T, B)
    if order == "shuffled":
        lengths = rng.permutation(lengths)
    if projections == "merged":
        _core._set_cache_sizes(4096, 4096, 4096)
    try:
        y, final_states, saved = forward(validating, cell, problem, lengths, reverse=reverse)
        y_infer, final_infer, _ = forward(validating, cell, problem, lengths, reverse=reverse, training=False)
        dy, d_final_states = make_cotangents(rng, y, final_states)
        grads = backward(validating, cell, dy, d_final_states, saved)
    finally:
        _core._set_cache_sizes(0, 0, 0)
    assert_close(y_infer, y, dtype, OUTPUT, "y (training=False)")
    expected = reference_results(cell, problem, lengths, reverse, dy, d_final_states)
    assert_results_close(cell, dtype, ((y, final_states), grads), expected)


# The input projections x W_ih^T come from each thread a block of steps at a time when its
# slice of W_ih is at most 2 MB, else from one GEMM over all steps before the loop
# (InputProjections in csrc/cpu/forward.cc): several blocks, the last one short, a ragged last
# unit chunk, reversed time and lengths; and an input wide enough for the merged GEMM (float64
# only: in float32, sums over that many inputs round beyond the tolerance table's bounds).
@pytest.mark.parametrize("dtype,size", [(np.float32, (20, 64, 24, 130)), (np.float64, (20, 64, 24, 130)),
                                        (np.float64, (5, 3, 8500, 20))],
                         ids=["blocks-float32", "blocks-float64", "merged-float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_input_projection_blocks_and_merged(validating, rng, threads, cell, dtype, size):
    T, B, I, H = size
    problem = make_problem(rng, cell, T, B, I, H, dtype)
    lengths = make_lengths(rng, T, B)
    y, final_states, saved = forward(validating, cell, problem, lengths, reverse=True)
    dy, d_final_states = make_cotangents(rng, y, final_states)
    grads = backward(validating, cell, dy, d_final_states, saved)
    expected = reference_results(cell, problem, lengths, True, dy, d_final_states)
    assert_results_close(cell, dtype, ((y, final_states), grads), expected)


@pytest.mark.parametrize("cell", CELLS)
def test_repeated_runs_are_bitwise_identical(validating, rng, cell):
    T, B, I, H = 5, 9, 20, 48
    problem = make_problem(rng, cell, T, B, I, H, np.float32)
    lengths = make_lengths(rng, T, B)
    runs = []
    for _ in range(3):
        y, final_states, saved = forward(validating, cell, problem, lengths)
        dy = 0.5 + y   # the same, non-constant cotangent every run
        dx, d_states, d_weights = backward(validating, cell, dy, final_states, saved)
        runs.append([y, *final_states, dx, *d_states, *d_weights])
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            assert np.array_equal(a, b)


# Inference on sequences that all take every step keeps each step's state in its row of y and reads
# it there (state_in_y in csrc/cpu/forward.cc); training, and a call with lengths (all T here),
# keep it in a double buffer and copy it to y. The same values either way, bit for bit: across a
# row block (B = 70), a ragged unit chunk, both directions and both team splits (two threads, so
# that the splits differ).
@pytest.mark.parametrize("threads", [2], indirect=True)
@pytest.mark.parametrize("split", ["rows", "units"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("cell", CELLS)
def test_state_in_the_output_rows_gives_the_same_bits(validating, rng, threads, cell, dtype, reverse, split):
    T, B, I, H = 5, 70, 9, 40
    problem = make_problem(rng, cell, T, B, I, H, dtype)
    _core._set_team_split(split)
    try:
        y, final_states, _ = forward(validating, cell, problem, None, reverse, training=False)
        others = [forward(validating, cell, problem, None, reverse)[:2],
                  forward(validating, cell, problem, np.full(B, T), reverse, training=False)[:2]]
    finally:
        _core._set_team_split("rule")
    for other_y, other_final in others:
        assert np.array_equal(y, other_y)
        for state, other_state in zip(final_states, other_final):
            assert np.array_equal(state, other_state)

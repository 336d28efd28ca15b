"""Keras-style masks: any (t, b) pattern, a masked step carrying the state, and its output zero
or (masked_output="repeat") the last output. Tier 1 (reference against finite differences),
semantics, and tier 2 (native against reference)."""

import numpy as np
import pytest

from fusedrnn import _reference as ref
from rnn_cases import CELLS, backward, forward, loss, make_cotangents, make_problem, make_sorted_lengths, num_states
from test_kernels import assert_results_close, check_shapes_and_dtypes, reference_results
from test_reference import assert_gradient, numerical_gradient

T, B, I, H = 6, 4, 3, 5
OUTPUTS = ["zero", "repeat"]


def make_mask(rng, T, B):
    """Holes anywhere: leading, inner and trailing masked steps, a fully masked sequence and a
    fully active one."""
    mask = rng.random((T, B)) < 0.6
    if B >= 4:
        mask[:, 0] = True
        mask[:, 1] = False
        mask[:2, 2], mask[2, 2], mask[3:, 2] = False, True, False
    return mask


@pytest.mark.parametrize("masked_output", OUTPUTS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
def test_reference_matches_finite_differences(rng, cell, reverse, masked_output):
    problem = make_problem(rng, cell, T, B, I, H)
    check_finite_differences(rng, cell, problem, reverse, mask=make_mask(rng, T, B),
                             masked_output=masked_output)


def check_finite_differences(rng, cell, problem, reverse, **options):
    """The reference's gradients with these forward options against central differences."""
    y, final_states, saved = forward(ref, cell, problem, reverse=reverse, **options)
    dy, d_final = make_cotangents(rng, y, final_states)
    dx, d_states, d_weights = backward(ref, cell, dy, d_final, saved)

    def objective():
        y, final_states, _ = forward(ref, cell, problem, reverse=reverse, training=False, **options)
        return loss(y, final_states, dy, d_final)

    checks = [("x", problem["x"], dx)] + list(zip(["h0", "c0"], problem["states"], d_states))
    checks += list(zip(["weight_ih", "weight_hh", "bias_ih", "bias_hh"], problem["weights"], d_weights))
    for name, array, analytic in checks:
        assert_gradient(analytic, numerical_gradient(objective, array), name)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
def test_masked_steps_carry_state_and_output_zero_or_the_last_output(rng, cell, reverse):
    problem = make_problem(rng, cell, T, B, I, H)
    mask = make_mask(rng, T, B)
    y0, final0, _ = forward(ref, cell, problem, reverse=reverse, mask=mask)
    y1, final1, _ = forward(ref, cell, problem, reverse=reverse, mask=mask, masked_output="repeat")
    for a, b in zip(final0, final1):
        np.testing.assert_array_equal(a, b)
    order = range(T - 1, -1, -1) if reverse else range(T)
    for b in range(B):
        last = np.zeros(H)   # Keras's "last output" is zero before the first step, whatever h0 is
        for t in order:
            if mask[t, b]:
                np.testing.assert_array_equal(y0[t, b], y1[t, b])
                last = y1[t, b]
            else:
                assert np.all(y0[t, b] == 0)
                np.testing.assert_array_equal(y1[t, b], last)
    # A fully masked sequence keeps its initial state.
    for final, initial in zip(final0, problem["states"]):
        np.testing.assert_array_equal(final[1], initial[1])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
def test_a_lengths_mask_is_the_same_as_lengths(rng, cell, reverse):
    problem = make_problem(rng, cell, T, B, I, H)
    lengths = np.array([T, 0, 2, 5])
    mask = np.arange(T)[:, None] < lengths[None, :]
    by_lengths = forward(ref, cell, problem, lengths, reverse)
    by_mask = forward(ref, cell, problem, reverse=reverse, mask=mask)
    for a, b in zip([by_lengths[0], *by_lengths[1]], [by_mask[0], *by_mask[1]]):
        np.testing.assert_array_equal(a, b)


DTYPES = [np.float32, np.float64]
SIZES = [(1, 1, 2, 3), (6, 4, 3, 5), (5, 9, 7, 33)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("masked_output", OUTPUTS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_native_matches_reference(functional, rng, cell, dtype, reverse, masked_output, size):
    T, B, I, H = size
    problem = make_problem(rng, cell, T, B, I, H, dtype)
    mask = make_mask(rng, T, B)
    options = dict(mask=mask, masked_output=masked_output)
    y, final_states, saved = forward(functional, cell, problem, reverse=reverse, **options)
    check_shapes_and_dtypes(cell, problem, dtype, y, final_states)
    dy, d_final = make_cotangents(rng, y, final_states)
    grads = backward(functional, cell, dy, d_final, saved)
    expected = masked_reference(cell, problem, mask, reverse, masked_output, dy, d_final)
    assert_results_close(cell, dtype, ((y, final_states), grads), expected)


def masked_reference(cell, problem, mask, reverse, masked_output, dy, d_final):
    from rnn_cases import astype
    y, final_states, saved = forward(ref, cell, astype(problem, np.float64), reverse=reverse,
                                     mask=mask, masked_output=masked_output)
    grads = backward(ref, cell, dy.astype(np.float64), [d.astype(np.float64) for d in d_final], saved)
    return (y, final_states), grads


@pytest.mark.parametrize("cell", CELLS)
def test_native_every_kernel_set_and_thread_count(functional, rng, isa, threads, cell):
    T, B, I, H = 5, 67, 4, 40
    problem = make_problem(rng, cell, T, B, I, H, np.float32)
    mask = make_mask(rng, T, B)
    y, final_states, saved = forward(functional, cell, problem, reverse=True, mask=mask, masked_output="repeat")
    dy, d_final = make_cotangents(rng, y, final_states)
    grads = backward(functional, cell, dy, d_final, saved)
    expected = masked_reference(cell, problem, mask, True, "repeat", dy, d_final)
    assert_results_close(cell, np.float32, ((y, final_states), grads), expected)


@pytest.mark.parametrize("padding", ["end_sorted", "end_shuffled", "start_shuffled"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
def test_native_padding_masks(functional, rng, threads, cell, reverse, padding):
    """Masks of padded sequences (Keras's): each step's products run only the sequences taking
    it, sorted longest first as they are or, shuffled and padded at either end, once the kernels
    have copied them into that order (H = 48: the copies pay for every cell then); masked steps
    repeat the last output."""
    T, B, I, H = 6, 70, 4, 48
    problem = make_problem(rng, cell, T, B, I, H, np.float64)
    lengths = make_sorted_lengths(T, B)
    if padding != "end_sorted":
        lengths = rng.permutation(lengths)
    steps = np.arange(T)[:, None] if padding.startswith("end") else np.arange(T)[::-1, None]
    mask = steps < lengths[None, :]
    y, final_states, saved = forward(functional, cell, problem, reverse=reverse, mask=mask, masked_output="repeat")
    dy, d_final = make_cotangents(rng, y, final_states)
    grads = backward(functional, cell, dy, d_final, saved)
    expected = masked_reference(cell, problem, mask, reverse, "repeat", dy, d_final)
    assert_results_close(cell, np.float64, ((y, final_states), grads), expected)


def test_native_projection_with_mask(rng):
    from fusedrnn import functional
    T, B, I, H, P = 5, 6, 3, 9, 4
    x = rng.standard_normal((T, B, I))
    w = [rng.uniform(-0.3, 0.3, s) for s in [(4 * H, I), (4 * H, P), (4 * H,), (4 * H,), (P, H)]]
    h0, c0 = rng.standard_normal((B, P)), rng.standard_normal((B, H))
    mask = make_mask(rng, T, B)
    cot = [rng.standard_normal(s) for s in [(T, B, P), (B, P), (B, H)]]
    results = []
    for module in (functional, ref):
        y, h_n, c_n, saved = module.lstm_forward(x, h0, c0, *w[:4], weight_hr=w[4], mask=mask,
                                                 masked_output="repeat")
        results.append([y, h_n, c_n, *module.lstm_backward(*cot, saved)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad, error", [
    ("shape", ValueError), ("dtype", TypeError), ("with_lengths", ValueError), ("output", ValueError)])
def test_bad_masks_raise(functional, rng, bad, error):
    problem = make_problem(rng, "gru", T, B, I, H)
    options = dict(mask=np.ones((T, B), bool))
    if bad == "shape":
        options["mask"] = np.ones((B, T), bool)
    elif bad == "dtype":
        options["mask"] = np.ones((T, B), np.int64)
    elif bad == "with_lengths":
        options["lengths"] = np.full(B, T)
    else:
        options["masked_output"] = "previous"
    lengths = options.pop("lengths", None)
    with pytest.raises(error):
        forward(functional, "gru", problem, lengths, **options)


# ---------------------------------------------------------------------------------------------
# Recurrent dropout (Keras's): recurrent_scale multiplies h where it enters a recurrent product.
# ---------------------------------------------------------------------------------------------

def make_scale(rng, B, H, dtype=np.float64, p=0.3):
    """An inverted-dropout scale: 0 or 1/(1-p), one per sequence and unit."""
    return ((rng.random((B, H)) >= p) / (1 - p)).astype(dtype)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_scale_reference_matches_finite_differences(rng, cell, reverse):
    problem = make_problem(rng, cell, T, B, I, H)
    check_finite_differences(rng, cell, problem, reverse, mask=make_mask(rng, T, B), masked_output="repeat",
                             recurrent_scale=make_scale(rng, B, H))


@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_scale_of_ones_changes_nothing(rng, cell):
    problem = make_problem(rng, cell, T, B, I, H)
    plain = forward(ref, cell, problem)
    ones = forward(ref, cell, problem, recurrent_scale=np.ones((B, H)))
    for a, b in zip([plain[0], *plain[1]], [ones[0], *ones[1]]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_scale_native_matches_reference(functional, rng, isa, cell, dtype, reverse):
    from rnn_cases import astype
    T, B, I, H = 5, 7, 4, 21
    problem = make_problem(rng, cell, T, B, I, H, dtype)
    scale = make_scale(rng, B, H, dtype)
    mask = make_mask(rng, T, B)
    options = dict(mask=mask, masked_output="repeat", recurrent_scale=scale)
    y, final_states, saved = forward(functional, cell, problem, reverse=reverse, **options)
    dy, d_final = make_cotangents(rng, y, final_states)
    grads = backward(functional, cell, dy, d_final, saved)
    options["recurrent_scale"] = scale.astype(np.float64)
    y_ref, final_ref, saved_ref = forward(ref, cell, astype(problem, np.float64), reverse=reverse, **options)
    grads_ref = backward(ref, cell, dy.astype(np.float64), [d.astype(np.float64) for d in d_final], saved_ref)
    assert_results_close(cell, dtype, ((y, final_states), grads), ((y_ref, final_ref), grads_ref))


def test_recurrent_scale_with_projection_raises(rng):
    from fusedrnn import functional
    x = rng.standard_normal((3, 2, 4))
    w = [rng.standard_normal(s) for s in [(12, 4), (12, 2), (2, 3)]]
    with pytest.raises(ValueError):
        functional.lstm_forward(x, None, None, w[0], w[1], weight_hr=w[2], recurrent_scale=np.ones((2, 2)))

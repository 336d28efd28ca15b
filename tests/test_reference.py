"""Tier 1: the NumPy reference against central finite differences (float64), plus semantics.

The reference is the spec the native kernels are tested against, so it is checked here against
the one oracle that needs no second implementation: the definition of the derivative.
"""

import math

import numpy as np
import pytest

from fusedrnn import _reference as ref
from rnn_cases import (CELLS, GATES, backward, forward, loss, make_cotangents, make_problem,
                       num_states)

T, B, I, H = 5, 3, 7, 5          # tiny and odd, so no dimension can stand in for another
VARIABLE_LENGTHS = [5, 2, 4]     # one full, one short, one in between (not sorted)

# Central differences: truncation error ~ eps^2 * f''' ~ 1e-12 and rounding error
# ~ |loss| * 1e-16 / eps ~ 1e-9 for losses of order 10, so 1e-7 absolute leaves 100x headroom.
# A relu pre-activation within ~1e-6 of 0 would break the derivative; with random data in
# float64 that has probability ~1e-5 per test and the seeds are fixed.
FD_EPS = 1e-6
FD_ATOL, FD_RTOL = 1e-7, 1e-6


def numerical_gradient(objective, array):
    """d objective / d array by central differences, perturbing `array` in place."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + FD_EPS
        plus = objective()
        array[index] = original - FD_EPS
        minus = objective()
        array[index] = original
        grad[index] = (plus - minus) / (2 * FD_EPS)
    return grad


def assert_gradient(analytic, numeric, name):
    error = np.abs(analytic - numeric)
    bound = FD_ATOL + FD_RTOL * np.abs(numeric)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else ()
    assert np.all(error <= bound), (
        f"{name}: analytic {analytic[worst]} vs finite difference {numeric[worst]} at {worst}")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, VARIABLE_LENGTHS], ids=["equal", "variable"])
@pytest.mark.parametrize("random_state", [False, True], ids=["zero_state", "random_state"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(rng, cell, random_state, lengths, reverse, bias):
    problem = make_problem(rng, cell, T, B, I, H, random_state=random_state, bias=bias)
    y, final_states, saved = forward(ref, cell, problem, lengths, reverse)
    dy, d_final_states = make_cotangents(rng, y, final_states)
    dx, d_states, d_weights = backward(ref, cell, dy, d_final_states, saved)

    assert y.shape == (T, B, H) and y.dtype == np.float64
    assert [s.shape for s in final_states] == [(B, H)] * num_states(cell)
    assert dx.shape == (T, B, I) and [d.shape for d in d_states] == [(B, H)] * num_states(cell)
    for w, dw in zip(problem["weights"], d_weights):
        assert (dw is None) if w is None else (dw.shape == w.shape and dw.dtype == np.float64)

    # Finite differences need concrete arrays; zeros stand in for the None initial states,
    # which the reference treats as zeros.
    concrete = dict(x=problem["x"], weights=problem["weights"],
                    states=[np.zeros((B, H)) if s is None else s for s in problem["states"]])

    def objective():
        y, final_states, _ = forward(ref, cell, concrete, lengths, reverse, training=False)
        return loss(y, final_states, dy, d_final_states)

    checks = [("x", concrete["x"], dx)]
    checks += [(name, s, ds) for name, s, ds in zip(["h0", "c0"], concrete["states"], d_states)]
    checks += [(name, w, dw) for name, w, dw in
               zip(["weight_ih", "weight_hh", "bias_ih", "bias_hh"], problem["weights"], d_weights)
               if w is not None]
    for name, array, analytic in checks:
        assert_gradient(analytic, numerical_gradient(objective, array), name)


# ---------------------------------------------------------------------------------------------
# Semantics of lengths and direction.
# ---------------------------------------------------------------------------------------------

SEMANTIC_LENGTHS = np.array([5, 2, 4, 0, 1])   # includes an empty and a single-step sequence


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELLS)
def test_each_sequence_behaves_as_if_run_alone(rng, cell, reverse):
    """Padded outputs are zero; valid outputs and the final state equal those of running the
    sequence alone, truncated to its length (so padding never leaks into a sequence)."""
    problem = make_problem(rng, cell, T, len(SEMANTIC_LENGTHS), I, H)
    y, final_states, _ = forward(ref, cell, problem, SEMANTIC_LENGTHS, reverse)

    for b, length in enumerate(SEMANTIC_LENGTHS):
        assert np.all(y[length:, b] == 0)
        if length == 0:
            for final, initial in zip(final_states, problem["states"]):
                assert np.array_equal(final[b], initial[b])
            continue
        alone = dict(x=problem["x"][:length, b:b + 1], weights=problem["weights"],
                     states=[s[b:b + 1] for s in problem["states"]])
        y_alone, final_alone, _ = forward(ref, cell, alone, reverse=reverse)
        np.testing.assert_allclose(y[:length, b], y_alone[:, 0], rtol=0, atol=1e-14)
        for final, expected in zip(final_states, final_alone):
            np.testing.assert_allclose(final[b], expected[0], rtol=0, atol=1e-14)


def flip_each_sequence(a, lengths):
    """a[t, b] -> a[len[b]-1-t, b] for t < len[b]; padding stays where it is."""
    flipped = a.copy()
    for b, length in enumerate(lengths):
        flipped[:length, b] = a[:length, b][::-1]
    return flipped


@pytest.mark.parametrize("cell", CELLS)
def test_reverse_equals_forward_on_flipped_sequences(rng, cell):
    """reverse=True starts every sequence at its own last valid step: it is the forward pass
    over each sequence flipped in place, for outputs, final states and all gradients."""
    lengths = SEMANTIC_LENGTHS
    problem = make_problem(rng, cell, T, len(lengths), I, H)
    y_rev, final_rev, saved_rev = forward(ref, cell, problem, lengths, reverse=True)
    dy, d_final = make_cotangents(rng, y_rev, final_rev)
    grads_rev = backward(ref, cell, dy, d_final, saved_rev)

    flipped = dict(problem, x=flip_each_sequence(problem["x"], lengths))
    y_fwd, final_fwd, saved_fwd = forward(ref, cell, flipped, lengths, reverse=False)
    grads_fwd = backward(ref, cell, flip_each_sequence(dy, lengths), d_final, saved_fwd)

    close = dict(rtol=0, atol=1e-13)
    np.testing.assert_allclose(y_rev, flip_each_sequence(y_fwd, lengths), **close)
    for a, b in zip(final_rev, final_fwd):
        np.testing.assert_allclose(a, b, **close)
    np.testing.assert_allclose(grads_rev[0], flip_each_sequence(grads_fwd[0], lengths), **close)
    for a, b in zip(grads_rev[1] + grads_rev[2], grads_fwd[1] + grads_fwd[2]):
        np.testing.assert_allclose(a, b, **close)


@pytest.mark.parametrize("cell", CELLS)
def test_empty_sequence_passes_state_and_gradient_through(rng, cell):
    lengths = [3, 0]
    problem = make_problem(rng, cell, 3, 2, I, H)
    y, final_states, saved = forward(ref, cell, problem, lengths)
    dy, d_final = make_cotangents(rng, y, final_states)
    dx, d_states, _ = backward(ref, cell, dy, d_final, saved)
    assert np.all(y[:, 1] == 0) and np.all(dx[:, 1] == 0)
    for final, initial, d_initial, d_f in zip(final_states, problem["states"], d_states, d_final):
        assert np.array_equal(final[1], initial[1])
        assert np.array_equal(d_initial[1], d_f[1])


# ---------------------------------------------------------------------------------------------
# One step written out by hand with scalars (B = 1, H = 1, so every gate is one number and a
# wrong gate order or a wrong bias placement shows).
# ---------------------------------------------------------------------------------------------

X = (0.3, -0.7)
H0, C0 = 0.4, -0.2


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def run_one_step(cell, weight_ih, weight_hh, bias_ih, bias_hh):
    problem = dict(x=np.array([[X]]), states=[np.array([[H0]]), np.array([[C0]])][:num_states(cell)],
                   weights=[np.array(weight_ih), np.array(weight_hh),
                            np.array(bias_ih), np.array(bias_hh)])
    y, final_states, _ = forward(ref, cell, problem)
    assert y[0, 0, 0] == final_states[0][0, 0]
    return [s[0, 0] for s in final_states]


def test_rnn_single_step_by_hand():
    w_ih, w_hh, b_ih, b_hh = [[0.5, -0.25]], [[0.8]], [0.1], [-0.05]
    a = 0.5 * X[0] - 0.25 * X[1] + 0.1 + 0.8 * H0 - 0.05
    assert run_one_step("rnn_tanh", w_ih, w_hh, b_ih, b_hh) == pytest.approx([math.tanh(a)], abs=1e-15)
    assert run_one_step("rnn_relu", w_ih, w_hh, b_ih, b_hh) == pytest.approx([max(a, 0.0)], abs=1e-15)
    b_neg = [-1.0]  # pushes the pre-activation below zero: relu clamps to exactly 0
    assert run_one_step("rnn_relu", w_ih, w_hh, b_neg, b_hh) == [0.0]


def test_lstm_single_step_by_hand():
    #        rows: i       f       g       o
    w_ih = [[0.1, 0.2], [0.3, -0.4], [-0.5, 0.6], [0.7, 0.8]]
    w_hh = [[0.9], [-1.0], [1.1], [-1.2]]
    b_ih = [0.01, 0.02, 0.03, 0.04]
    b_hh = [-0.05, 0.06, -0.07, 0.08]

    def pre(k):
        return w_ih[k][0] * X[0] + w_ih[k][1] * X[1] + b_ih[k] + w_hh[k][0] * H0 + b_hh[k]

    i, f, g, o = sigmoid(pre(0)), sigmoid(pre(1)), math.tanh(pre(2)), sigmoid(pre(3))
    c = f * C0 + i * g
    h = o * math.tanh(c)
    assert run_one_step("lstm", w_ih, w_hh, b_ih, b_hh) == pytest.approx([h, c], abs=1e-15)


def test_gru_single_step_by_hand():
    #        rows: r       z       n
    w_ih = [[0.1, 0.2], [0.3, -0.4], [-0.5, 0.6]]
    w_hh = [[0.9], [-1.0], [1.1]]
    b_ih = [0.01, 0.02, 0.03]
    b_hh = [-0.05, 0.06, -0.07]

    def x_part(k):
        return w_ih[k][0] * X[0] + w_ih[k][1] * X[1] + b_ih[k]

    def h_part(k):
        return w_hh[k][0] * H0 + b_hh[k]

    r = sigmoid(x_part(0) + h_part(0))
    z = sigmoid(x_part(1) + h_part(1))
    n = math.tanh(x_part(2) + r * h_part(2))   # linear before reset: r scales W_hn h + b_hn
    h = (1 - z) * n + z * H0
    assert run_one_step("gru", w_ih, w_hh, b_ih, b_hh) == pytest.approx([h], abs=1e-15)
    # Reset before the product (Keras reset_after=False): r scales h inside W_hn (r h) + b_hn.
    n = math.tanh(x_part(2) + w_hh[2][0] * r * H0 + b_hh[2])
    h = (1 - z) * n + z * H0
    assert run_one_step("gru_reset_before", w_ih, w_hh, b_ih, b_hh) == pytest.approx([h], abs=1e-15)


# ---------------------------------------------------------------------------------------------
# Conventions of the API.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_inference_mode_saves_nothing_and_backward_refuses(rng, cell):
    problem = make_problem(rng, cell, T, B, I, H)
    y_train, final_train, _ = forward(ref, cell, problem, VARIABLE_LENGTHS)
    y_infer, final_infer, saved = forward(ref, cell, problem, VARIABLE_LENGTHS, training=False)
    assert saved is None
    assert np.array_equal(y_train, y_infer)
    for a, b in zip(final_train, final_infer):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        backward(ref, cell, y_infer, final_infer, None)


@pytest.mark.parametrize("cell", CELLS)
def test_none_means_zero(rng, cell):
    """Missing initial states, biases and cotangents behave as zeros; a missing bias has a None
    gradient."""
    problem = make_problem(rng, cell, T, B, I, H, random_state=False, bias=False)
    explicit = dict(x=problem["x"], states=[np.zeros((B, H))] * num_states(cell),
                    weights=problem["weights"][:2] + [np.zeros(GATES[cell] * H)] * 2)
    y, final_states, saved = forward(ref, cell, problem)
    y0, final0, saved0 = forward(ref, cell, explicit)
    assert np.array_equal(y, y0)
    dy = rng.standard_normal(y.shape)
    dx, d_states, d_weights = backward(ref, cell, dy, [None] * num_states(cell), saved)
    dx0, d_states0, d_weights0 = backward(ref, cell, dy, [np.zeros((B, H))] * num_states(cell),
                                          saved0)
    assert np.array_equal(dx, dx0)
    assert d_weights[2] is None and d_weights[3] is None
    np.testing.assert_array_equal(d_weights[0], d_weights0[0])
    dx_none, _, _ = backward(ref, cell, None, [None] * num_states(cell), saved)
    assert np.all(dx_none == 0)



@pytest.mark.parametrize("cell", CELLS)
def test_float32_in_float32_out(rng, cell):
    problem = make_problem(rng, cell, T, B, I, H, dtype=np.float32)
    y, final_states, saved = forward(ref, cell, problem, VARIABLE_LENGTHS, reverse=True)
    dy, d_final = make_cotangents(rng, y, final_states)
    dx, d_states, d_weights = backward(ref, cell, dy, d_final, saved)
    for a in [y, dx, *final_states, *d_states, *d_weights]:
        assert a.dtype == np.float32

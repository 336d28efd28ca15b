"""Property-based tests (Hypothesis): random shapes, lengths or masks, options and dtypes; the
native kernels agree with the reference and never crash."""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from fusedrnn import _reference as ref, functional  # noqa: E402
from rnn_cases import CELLS, backward, forward, make_cotangents, make_problem  # noqa: E402
from test_kernels import assert_results_close, reference_results  # noqa: E402


@st.composite
def cases(draw):
    cell = draw(st.sampled_from(CELLS))
    T, B = draw(st.integers(1, 7)), draw(st.integers(0, 6))
    I, H = draw(st.integers(1, 9)), draw(st.integers(1, 40))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    options = dict(reverse=draw(st.booleans()))
    steps = draw(st.sampled_from(["all", "lengths", "mask"]))
    rng = np.random.default_rng(seed)
    if steps == "lengths":
        options["lengths"] = rng.integers(0, T + 1, size=B)
    elif steps == "mask":
        options["mask"] = rng.random((T, B)) < 0.7
        options["masked_output"] = draw(st.sampled_from(["zero", "repeat"]))
    if draw(st.booleans()) and B > 0:
        options["recurrent_scale"] = ((rng.random((B, H)) > 0.3) / 0.7).astype(dtype)
    problem = make_problem(rng, cell, T, B, I, H, dtype, random_state=draw(st.booleans()),
                           bias=draw(st.booleans()))
    return cell, dtype, problem, options, seed


@settings(max_examples=300, deadline=None, derandomize=True)
@given(cases())
def test_native_agrees_with_reference(case):
    cell, dtype, problem, options, seed = case
    lengths = options.pop("lengths", None)
    reverse = options.pop("reverse")
    y, final_states, saved = forward(functional, cell, problem, lengths, reverse, **options)
    dy, d_final = make_cotangents(np.random.default_rng(seed + 1), y, final_states)
    grads = backward(functional, cell, dy, d_final, saved)
    if options:
        from rnn_cases import astype
        y_ref, final_ref, saved_ref = forward(ref, cell, astype(problem, np.float64), lengths, reverse,
                                              **{k: (v.astype(np.float64) if k == "recurrent_scale" else v)
                                                 for k, v in options.items()})
        grads_ref = backward(ref, cell, dy.astype(np.float64), [d.astype(np.float64) for d in d_final], saved_ref)
        expected = ((y_ref, final_ref), grads_ref)
    else:
        expected = reference_results(cell, problem, lengths, reverse, dy, d_final)
    assert_results_close(cell, dtype, ((y, final_states), grads), expected)

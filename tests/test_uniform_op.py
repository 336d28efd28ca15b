"""The uniform op: recurrent_forward / recurrent_backward, the cell table, Saved, and the check
that the inputs of a backward are those its forward saw."""

import numpy as np
import pytest

from fusedrnn import _core, _reference
from fusedrnn import functional as F
from rnn_cases import CELLS, GATES, make_cotangents, make_problem

T, B, I, H = 5, 3, 4, 6
WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def problem_of(rng, cell, dtype=np.float32, bias=True):
    p = make_problem(rng, cell, T, B, I, H, dtype=dtype, bias=bias)
    states = p["states"] + [None] * (2 - len(p["states"]))
    return p["x"], states[0], states[1], dict(zip(WEIGHTS, p["weights"]))


def test_the_cell_table_names_every_cell_once_with_its_facts():
    assert list(F.CELLS) == ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before"]
    assert [F.CELLS[c].gates for c in F.CELLS] == [1, 1, 4, 3, 3]
    assert [F.CELLS[c].has_cell_state for c in F.CELLS] == [False, False, True, False, False]
    assert [F.CELLS[c].two_phase for c in F.CELLS] == [False, False, False, False, True]
    assert _core.cell_info()["lstm"] == F.CELLS["lstm"]._asdict()


def test_the_reference_agrees_with_the_cell_table():
    """The spec keeps its own cell facts (it must not depend on the code it checks): they must
    be the table's."""
    for cell in ("rnn_tanh", "rnn_relu", "lstm", "gru"):
        spec = getattr(_reference, "_" + cell.upper())
        assert spec.gates == F.CELLS[cell].gates
        assert spec.num_states == (2 if F.CELLS[cell].has_cell_state else 1)
    assert _reference._GRU_RESET_BEFORE.gates == F.CELLS["gru_reset_before"].gates


@pytest.mark.parametrize("cell", CELLS)
def test_results_have_one_shape_for_every_cell(rng, cell):
    x, h0, c0, weights = problem_of(rng, cell)
    y, h_n, c_n, saved = F.recurrent_forward(cell, x, h0, c0, weights)
    info = F.CELLS[cell]
    assert y.shape == (T, B, H) and h_n.shape == (B, H) and y.dtype == np.float32
    assert (c_n is not None) == info.has_cell_state
    assert saved["gates"].shape == (T, B, info.saved * H) and saved["h"].shape == (T + 1, B, H)
    dy, _ = make_cotangents(rng, y, [])
    dx, dh0, dc0, dweights = F.recurrent_backward(dy, None, None, saved)
    assert dx.shape == x.shape and dh0.shape == (B, H)
    assert (dc0 is not None) == info.has_cell_state
    assert set(dweights) == set(F.WEIGHT_NAMES)
    for name in WEIGHTS:
        assert dweights[name].shape == weights[name].shape
    assert dweights["weight_hr"] is None


@pytest.mark.parametrize("cell", CELLS)
def test_the_per_cell_functions_are_the_uniform_op(rng, cell):
    x, h0, c0, weights = problem_of(rng, cell, np.float64)
    lengths = np.array([T, 0, 2])
    y, h_n, c_n, saved = F.recurrent_forward(cell, x, h0, c0, weights, lengths=lengths, reverse=True)
    dy, _ = make_cotangents(rng, y, [])
    dx, dh0, dc0, dweights = F.recurrent_backward(dy, h_n, c_n, saved)
    w = [weights[name] for name in WEIGHTS]
    options = dict(lengths=lengths, reverse=True)
    if cell == "lstm":
        y2, h2, c2, saved2 = F.lstm_forward(x, h0, c0, *w, **options)
        grads = F.lstm_backward(dy, h_n, c_n, saved2)
    elif cell.startswith("gru"):
        (y2, h2, saved2), c2 = F.gru_forward(x, h0, *w, reset_after=cell == "gru", **options), None
        grads = F.gru_backward(dy, h_n, saved2)
        grads = grads[:2] + (None,) + grads[2:]
    else:
        (y2, h2, saved2), c2 = F.rnn_forward(x, h0, *w, nonlinearity=cell[4:], **options), None
        grads = F.rnn_backward(dy, h_n, saved2)
        grads = grads[:2] + (None,) + grads[2:]
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(h_n, h2)
    for ours, theirs in zip((dx, dh0, dc0, *(dweights[n] for n in WEIGHTS)), grads):
        if ours is None:
            assert theirs is None
        else:
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("cell", CELLS)
def test_saved_rebuilt_from_its_arrays_gives_the_same_gradients(rng, cell):
    x, h0, c0, weights = problem_of(rng, cell)
    y, h_n, c_n, saved = F.recurrent_forward(cell, x, h0, c0, weights, mask=rng.random((T, B)) < 0.7,
                                             masked_output="repeat")
    dy, _ = make_cotangents(rng, y, [])
    expected = F.recurrent_backward(dy, h_n, c_n, saved)
    # As a framework carries them: fresh copies, rebuilt around the same plain metadata.
    copies = [None if a is None else a.copy() for a in saved.arrays]
    got = F.recurrent_backward(dy, h_n, c_n, F.Saved(saved.meta, copies))
    for ours, theirs in zip(got[:3], expected[:3]):
        if theirs is None:
            assert ours is None
        else:
            np.testing.assert_array_equal(ours, theirs)
    for name in F.WEIGHT_NAMES:
        if expected[3][name] is None:
            assert got[3][name] is None
        else:
            np.testing.assert_array_equal(got[3][name], expected[3][name])


def test_a_saved_of_the_wrong_form_is_refused(rng):
    x, h0, c0, weights = problem_of(rng, "gru")
    *_, saved = F.recurrent_forward("gru", x, h0, c0, weights)
    with pytest.raises(ValueError, match="arrays"):
        F.Saved(saved.meta, saved.arrays[:-1])
    with pytest.raises(TypeError, match="SavedMeta"):
        F.Saved(dict(saved.meta._asdict()), saved.arrays)
    with pytest.raises(TypeError, match="saved"):
        F.recurrent_backward(None, None, None, saved.arrays)
    with pytest.raises(ValueError, match="lstm"):
        F.lstm_backward(None, None, None, saved)


BAD_CALLS = {
    "unknown cell": (lambda p: F.recurrent_forward("lstmx", *p), ValueError, "cell"),
    "weights not a dict": (lambda p: F.recurrent_forward("gru", *p[:3], list(p[3].values())), TypeError, "dict"),
    "unknown weight name": (lambda p: F.recurrent_forward("gru", *p[:3], {**p[3], "weight_xx": p[3]["bias_ih"]}),
                            ValueError, "weight_xx"),
    "missing weight_hh": (lambda p: F.recurrent_forward("gru", *p[:3], {**p[3], "weight_hh": None}), TypeError,
                          "weight_hh"),
    "c0 for a GRU": (lambda p: F.recurrent_forward("gru", p[0], p[1], p[1], p[3]), ValueError, "cell state"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_calls_raise_clear_errors(rng, name):
    call, error, word = BAD_CALLS[name]
    with pytest.raises(error, match=word):
        call(problem_of(rng, "gru"))


def test_dc_n_for_a_cell_without_one_is_refused(rng):
    x, h0, c0, weights = problem_of(rng, "rnn_tanh")
    *_, saved = F.recurrent_forward("rnn_tanh", x, h0, c0, weights)
    with pytest.raises(ValueError, match="cell state"):
        F.recurrent_backward(None, None, np.zeros((B, H), np.float32), saved)


# -- saved state cannot go stale -------------------------------------------------------------------

def change(arrays, name):
    """Changes one element of the named input in place (x is arrays[0], weights arrays[3])."""
    target = arrays[0] if name == "x" else arrays[3][name] if name in F.WEIGHT_NAMES else arrays[4][name]
    target.flat[target.size // 2] += 0.5


@pytest.mark.parametrize("name", ["x", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr",
                                  "recurrent_scale"])
def test_an_input_changed_between_forward_and_backward_raises_naming_it(rng, name):
    cell = "lstm" if name == "weight_hr" else "gru_reset_before"
    x, h0, c0, weights = problem_of(rng, cell)
    options = {}
    if name == "weight_hr":
        P = H - 2
        weights["weight_hr"] = rng.uniform(-0.3, 0.3, (P, H)).astype(np.float32)
        weights["weight_hh"] = np.ascontiguousarray(weights["weight_hh"][:, :P])
        h0 = h0[:, :P].copy()
    else:
        options["recurrent_scale"] = rng.uniform(0.5, 2.0, (B, H)).astype(np.float32)
    y, *_, saved = F.recurrent_forward(cell, x, h0, c0, weights, **options)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    change((x, h0, c0, weights, options), name)
    with pytest.raises(RuntimeError, match=f"^{name} was modified in place"):
        F.recurrent_backward(dy, None, None, saved)


def test_unchanged_inputs_pass_and_the_check_can_be_left_to_a_framework(rng):
    x, h0, c0, weights = problem_of(rng, "lstm")
    *_, saved = F.recurrent_forward("lstm", x, h0, c0, weights)
    F.recurrent_backward(None, None, None, saved)           # nothing changed
    *_, unchecked = F.recurrent_forward("lstm", x, h0, c0, weights, check_unchanged=False)
    assert unchecked.meta.fingerprints is None
    x[0, 0, 0] += 1
    F.recurrent_backward(None, None, None, unchecked)       # its owner's business
    with pytest.raises(RuntimeError, match="^x was modified"):
        F.recurrent_backward(None, None, None, saved)


def test_lengths_and_mask_are_copied_so_changing_them_is_harmless(rng):
    x, h0, c0, weights = problem_of(rng, "gru", np.float64)
    lengths = np.array([T, 1, 3], np.int64)
    y, h_n, _, saved = F.recurrent_forward("gru", x, h0, c0, weights, lengths=lengths)
    dy, _ = make_cotangents(rng, y, [])
    expected = F.recurrent_backward(dy, h_n, None, saved)[0]
    *_, saved = F.recurrent_forward("gru", x, h0, c0, weights, lengths=lengths)
    lengths[:] = 0
    np.testing.assert_array_equal(F.recurrent_backward(dy, h_n, None, saved)[0], expected)


def test_a_changed_copy_is_caught_after_a_rebuild_too(rng):
    x, h0, c0, weights = problem_of(rng, "rnn_relu")
    *_, saved = F.recurrent_forward("rnn_relu", x, h0, c0, weights)
    arrays = [None if a is None else a.copy() for a in saved.arrays]
    arrays[F.Saved.ARRAY_NAMES.index("weight_ih")][0, 0] = 3.0
    with pytest.raises(RuntimeError, match="^weight_ih was modified"):
        F.recurrent_backward(None, None, None, F.Saved(saved.meta, arrays))


def test_the_fingerprint_sees_any_single_word_and_is_the_same_for_any_thread_count():
    import fusedrnn
    data = np.random.default_rng(0).standard_normal(300_001).astype(np.float32)  # blocks and a tail
    before = _core.fingerprint(data)
    threads = fusedrnn.get_num_threads()
    try:
        fusedrnn.set_num_threads(1)
        assert _core.fingerprint(data) == before
    finally:
        fusedrnn.set_num_threads(threads)
    for index in (0, 1, 64, 65_535, 65_536, 299_999, 300_000):
        changed = data.copy()
        changed[index] = np.nextafter(changed[index], np.float32(np.inf))
        assert _core.fingerprint(changed) != before, index
    swapped = data.copy()
    swapped[[10, 11]] = swapped[[11, 10]]
    assert _core.fingerprint(swapped) != before
    with pytest.raises(ValueError, match="contiguous"):
        _core.fingerprint(data[::2])


def test_arrays_and_layers_that_went_through_pickle_are_accepted(rng):
    """An unpickled array's dtype is an equal but distinct object from NumPy's own float32: the
    kernels compare dtypes by value, so a pickled layer (or its weights) still runs."""
    import pickle

    from fusedrnn import nn

    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    weights = {"weight_ih": rng.standard_normal((12, 4)).astype(np.float32),
               "weight_hh": rng.standard_normal((12, 4)).astype(np.float32)}
    expected = F.recurrent_forward("gru", x, None, None, weights, training=False)[0]
    x2, weights2 = pickle.loads(pickle.dumps((x, weights)))
    assert x2.dtype is not np.dtype(np.float32) or weights2["weight_hh"].dtype is not np.dtype(np.float32)
    np.testing.assert_array_equal(F.recurrent_forward("gru", x2, None, None, weights2, training=False)[0], expected)

    layer = nn.LSTM(4, 5)
    clone = pickle.loads(pickle.dumps(layer))
    out, _ = clone(x)
    np.testing.assert_array_equal(out, layer(x)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths", [None, [T, 0, 1], [1, T, 0]])
@pytest.mark.parametrize("cell", CELLS)
def test_a_backward_without_dx_gives_the_same_other_gradients(rng, cell, lengths, dtype):
    """want_dx=False (nothing needs the input's gradient): no dx, and every other gradient bit
    for bit what the full backward gives, on every path (lengths that leave most rows without a
    step gather the rows that take one; an unsorted batch runs reordered)."""
    x, h0, c0, weights = problem_of(rng, cell, dtype)
    y, h_n, c_n, saved = F.recurrent_forward(cell, x, h0, c0, weights, lengths=lengths)
    dy, _ = make_cotangents(rng, y, [])
    dx, dh0, dc0, dweights = F.recurrent_backward(dy, h_n, c_n, saved)
    no_dx, dh0_, dc0_, dweights_ = F.recurrent_backward(dy, h_n, c_n, saved, want_dx=False)
    assert dx is not None and no_dx is None
    np.testing.assert_array_equal(dh0_, dh0)
    if dc0 is not None:
        np.testing.assert_array_equal(dc0_, dc0)
    for name in WEIGHTS:
        np.testing.assert_array_equal(dweights_[name], dweights[name])

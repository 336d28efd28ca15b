"""The cells' pointwise code (csrc/cells/*.h) on plain float and double, against the reference.

The CPU kernels run the cells on vectors; a GPU backend runs the very same functions on scalars
with cells/math.h's activations. _core._cell_step_forward / _cell_step_backward instantiate every
cell that way on the host, one unit per array element, and these tests hold them to the NumPy
reference's step functions (python/fusedrnn/_reference.py), evaluated in float64 on the same
inputs. Each unit stands alone: a unit's xg and hg are its gates' pre-activations W_ih x + b_ih
and W_hh h + b_hh, given directly.
"""

import numpy as np
import pytest

from fusedrnn import _core
from fusedrnn import _reference as ref
from tolerances import CELL_STEP, assert_close

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
SIZES = [1, 7, 33]  # units; 33 = 3 sequences of 11

# The reference's step functions of the cells that have them (the reset-before-product GRU has
# a loop of its own in the reference: see test_gru_reset_before).
STEPS = {
    "rnn_tanh": (ref._rnn_tanh_step, ref._rnn_tanh_step_backward),
    "rnn_relu": (ref._rnn_relu_step, ref._rnn_relu_step_backward),
    "lstm": (ref._lstm_step, ref._lstm_step_backward),
    "gru": (ref._gru_step, ref._gru_step_backward),
}
REFERENCE_CELLS = {cell.name: cell for cell in (ref._RNN_TANH, ref._RNN_RELU, ref._LSTM, ref._GRU,
                                                ref._GRU_RESET_BEFORE)}


def test_cell_info_is_the_table():
    info = _core.cell_info()
    assert list(info) == ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before"]
    for name, facts in info.items():
        assert set(facts) == {"gates", "saved", "has_cell_state", "two_phase", "split_gradient"}
        assert facts["gates"] == REFERENCE_CELLS[name].gates
        assert facts["has_cell_state"] == (REFERENCE_CELLS[name].num_states == 2)
    assert [facts["saved"] for facts in info.values()] == [0, 0, 4, 4, 4]
    assert [name for name, facts in info.items() if facts["two_phase"]] == ["gru_reset_before"]
    assert [name for name, facts in info.items() if facts["split_gradient"]] == ["gru"]


def to_units(a, gates):
    """(B, G*H) gate blocks, as the reference lays them out, -> (B*H, G): one row per unit."""
    B = a.shape[0]
    return a.reshape(B, gates, -1).transpose(0, 2, 1).reshape(-1, gates)


def from_units(a, B):
    """(B*H, G) -> (B, G*H)."""
    return a.reshape(B, -1, a.shape[1]).transpose(0, 2, 1).reshape(B, -1)


def split_units(n):
    """n units as B sequences of H units."""
    return (3, n // 3) if n % 3 == 0 else (1, n)


def random_unit_inputs(rng, n, gates, dtype):
    # Scale 2 reaches the activations' curved and saturated parts.
    return {name: (2 * rng.standard_normal(shape)).astype(dtype)
            for name, shape in [("xg", (n, gates)), ("hg", (n, gates)), ("h", (n,)), ("c", (n,)),
                                ("dh", (n,)), ("dc", (n,))]}


def f64(a):
    return None if a is None else np.asarray(a, np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("cell", sorted(STEPS))
def test_step_forward_and_backward(rng, cell, n, dtype):
    facts = _core.cell_info()[cell]
    G, S, has_c = facts["gates"], facts["saved"], facts["has_cell_state"]
    step, step_backward = STEPS[cell]
    B, H = split_units(n)
    v = random_unit_inputs(rng, n, G, dtype)
    c = v["c"] if has_c else None

    h_new, c_new, saved = _core._cell_step_forward(cell, v["xg"], v["hg"], v["h"], c)
    assert h_new.shape == (n,) and h_new.dtype == dtype
    assert saved.shape == (n, S) and saved.dtype == dtype
    assert (c_new is None) == (not has_c)
    if has_c:
        assert c_new.shape == (n,) and c_new.dtype == dtype

    states = (f64(v["h"]).reshape(B, H),) + ((f64(c).reshape(B, H),) if has_c else ())
    new_ref, cache = step(from_units(f64(v["xg"]), B), from_units(f64(v["hg"]), B), states)
    assert_close(h_new, new_ref[0].reshape(n), dtype, CELL_STEP, "h_new")
    if has_c:
        assert_close(c_new, new_ref[1].reshape(n), dtype, CELL_STEP, "c_new")
    if S:
        # Saved: LSTM i, f, g, o; GRU r, z, n and h_n, the first four values of the cache.
        saved_ref = np.stack([a.reshape(n) for a in cache[:S]], axis=1)
        assert_close(saved, saved_ref, dtype, CELL_STEP, "saved")

    # Backward from this very forward's results, the reference's cache rebuilt from them.
    dc = v["dc"] if has_c else None
    dgx, dgh, dh, dc_prev = _core._cell_step_backward(cell, saved, v["h"], h_new, v["dh"], c, c_new, dc)
    for name, a in [("dgx", dgx), ("dgh", dgh)]:
        assert a.shape == (n, G) and a.dtype == dtype, name
    assert dh.shape == (n,) and dh.dtype == dtype
    assert (dc_prev is None) == (not has_c)

    def rows(a):
        return f64(a).reshape(B, H)

    if cell.startswith("rnn"):
        cache = rows(h_new)
    elif cell == "lstm":
        i, f, g, o = (rows(saved[:, k]) for k in range(4))
        cache = (i, f, g, o, rows(c), np.tanh(rows(c_new)))
    else:
        r, z, n_gate, h_n = (rows(saved[:, k]) for k in range(4))
        cache = (r, z, n_gate, h_n, rows(v["h"]))
    d_new = (rows(v["dh"]),) + ((rows(dc),) if has_c else ())
    dxp_ref, dhp_ref, d_states_ref = step_backward(d_new, cache)
    assert_close(dgx, to_units(dxp_ref, G), dtype, CELL_STEP, "dgx")
    assert_close(dgh, to_units(dhp_ref, G), dtype, CELL_STEP, "dgh")
    assert_close(dh, d_states_ref[0].reshape(n), dtype, CELL_STEP, "dh")
    if has_c:
        assert_close(dc_prev, d_states_ref[1].reshape(n), dtype, CELL_STEP, "dc")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n", SIZES)
def test_gru_reset_before(rng, n, dtype):
    """The two-phase cell through the reference's own loop at T=1, B=1, H=n, with weights that
    make each unit stand alone as the test binding has it: W_ih = I (so x is xg), W_hr = W_hz = 0
    and the r, z biases hg's r, z (so those are hg's), W_hn = I and b_hn = hg's n column (so
    hn = r*h + hg_n, and the gradient reaching r*h is da_n)."""
    G = 3
    v = random_unit_inputs(rng, n, G, dtype)
    h_new, c_new, saved = _core._cell_step_forward("gru_reset_before", v["xg"], v["hg"], v["h"])
    assert h_new.shape == (n,) and h_new.dtype == dtype and c_new is None
    assert saved.shape == (n, 4) and saved.dtype == dtype

    x = from_units(f64(v["xg"]), 1)[None]                       # (T=1, B=1, 3H)
    weight_ih = np.eye(G * n)
    weight_hh = np.concatenate([np.zeros((2 * n, n)), np.eye(n)])
    bias_hh = from_units(f64(v["hg"]), 1)[0]
    y, h_n, rsaved = ref._gru_reset_before_forward(
        x, f64(v["h"])[None], weight_ih, weight_hh, None, bias_hh, None, False, True, None, False, None)
    assert_close(h_new, h_n[0], dtype, CELL_STEP, "h_new")
    saved_ref = np.stack([a[0] for a in rsaved["caches"][0]], axis=1)    # r, z, n, r*h
    assert_close(saved, saved_ref, dtype, CELL_STEP, "saved")

    # Backward from this forward's saved values: the reference is given the same ones.
    dgx, dgh, dh, dc = _core._cell_step_backward("gru_reset_before", saved, v["h"], h_new, v["dh"])
    assert dgx.shape == dgh.shape == (n, G) and dgx.dtype == dgh.dtype == dtype
    assert dh.shape == (n,) and dh.dtype == dtype and dc is None
    rsaved["caches"] = [tuple(f64(saved[:, k])[None] for k in range(4))]
    dx, dh_ref, *_ = ref._gru_reset_before_backward(None, f64(v["dh"])[None], rsaved)
    assert_close(dgx, to_units(dx[0], G), dtype, CELL_STEP, "dgx")
    assert_close(dgh, to_units(dx[0], G), dtype, CELL_STEP, "dgh")
    assert_close(dh, dh_ref[0], dtype, CELL_STEP, "dh")


def test_relu_gradient_is_zero_at_zero():
    zeros = np.zeros((3, 1))
    h_new, _, _ = _core._cell_step_forward("rnn_relu", zeros, zeros, np.ones(3))
    dgx, dgh, dh, _ = _core._cell_step_backward("rnn_relu", np.zeros((3, 0)), np.ones(3), h_new, np.ones(3))
    np.testing.assert_array_equal(h_new, 0)
    np.testing.assert_array_equal(dgx, 0)
    np.testing.assert_array_equal(dgh, 0)
    np.testing.assert_array_equal(dh, 0)


@pytest.mark.parametrize("call, error, message", [
    (lambda: _core._cell_step_forward("lstm2", np.zeros((2, 4)), np.zeros((2, 4)), np.zeros(2), np.zeros(2)),
     ValueError, "unknown cell 'lstm2'"),
    (lambda: _core._cell_step_forward("gru", np.zeros((2, 4)), np.zeros((2, 3)), np.zeros(2)),
     ValueError, r"xg has shape \(2, 4\), expected \(2, 3\)"),
    (lambda: _core._cell_step_forward("gru", np.zeros((2, 3), np.float32), np.zeros((2, 3)), np.zeros(2)),
     TypeError, "xg has dtype float32, expected float64"),
    (lambda: _core._cell_step_forward("rnn_tanh", np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(2), np.zeros(2)),
     ValueError, "rnn_tanh has no cell state c"),
    (lambda: _core._cell_step_forward("lstm", np.zeros((2, 4)), np.zeros((2, 4)), np.zeros(2)),
     TypeError, "c must be an array, not None"),
    (lambda: _core._cell_step_forward("gru", np.zeros((2, 3), int), np.zeros((2, 3), int), np.zeros(2, int)),
     TypeError, "h has dtype int64, expected float32 or float64"),
])
def test_bad_arguments_raise(call, error, message):
    with pytest.raises(error, match=message):
        call()

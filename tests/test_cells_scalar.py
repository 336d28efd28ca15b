"""The cell table (csrc/recurrence.h) as _core.cell_info() exports it, against the reference's cells."""

from fusedrnn import _core
from fusedrnn import _reference as ref

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

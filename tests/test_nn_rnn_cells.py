"""fusedrnn.nn.RNNCell / LSTMCell / GRUCell against torch.nn's cells.

Tolerances: see nn_rnn_oracle (float64 to 1e-10 relative; float32 1e-5 outputs, 1e-4 gradients).
"""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusedrnn.nn as fnn  # noqa: E402
from nn_rnn_oracle import (assert_close, assert_hx_grads_match, assert_param_grads_match, leaf, nested, random_like,  # noqa: E402
                           torch_backward, twins)

CELLS = [("RNNCell", "tanh"), ("RNNCell", "relu"), ("LSTMCell", None), ("GRUCell", None)]
# Every cell with every combination of bias, batched input and hx given; the dtype alternates.
CONFIGS = [dict(cls=cls, nonlinearity=nl, bias=bias, batched=batched, hx=hx,
                dtype=np.float64 if i % 2 else np.float32)
           for i, ((cls, nl), bias, batched, hx) in
           enumerate(itertools.product(CELLS, [True, False], [True, False], [True, False]))]


def config_id(c):
    return "-".join([c["cls"] + (f"({c['nonlinearity']})" if c["nonlinearity"] else ""),
                     "bias" if c["bias"] else "nobias", "batched" if c["batched"] else "unbatched",
                     "hx" if c["hx"] else "nohx", np.dtype(c["dtype"]).name])


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_cell_matches_torch(config, rng):
    kwargs = dict(input_size=3, hidden_size=5, bias=config["bias"])
    if config["nonlinearity"]:
        kwargs["nonlinearity"] = config["nonlinearity"]
    ours, theirs = twins(config["cls"], config["dtype"], **kwargs)
    lstm = config["cls"] == "LSTMCell"
    batch = (4,) if config["batched"] else ()
    x = rng.standard_normal(batch + (3,)).astype(config["dtype"])
    hx = None
    if config["hx"]:
        hx = rng.standard_normal(batch + (5,)).astype(config["dtype"])
        hx = (hx, rng.standard_normal(batch + (5,)).astype(config["dtype"])) if lstm else hx

    result = ours(x, hx)
    x_t, hx_t = leaf(x), nested(leaf, hx)
    result_t = theirs(x_t, hx_t)
    results, results_t = (list(result), list(result_t)) if lstm else ([result], [result_t])
    for a, e, name in zip(results, results_t, ["h'", "c'"]):
        assert_close(a, e, "output", name)

    cotangents = [random_like(rng, r) for r in results]
    if lstm and config["hx"]:
        cotangents[1] = None  # grad_c may be omitted
    grad_x, grad_hx = ours.backward(*cotangents)
    torch_backward(results_t, cotangents)
    assert_close(grad_x, x_t.grad, "grad", "grad of input")
    assert_hx_grads_match(grad_hx, hx, hx_t, lstm)
    assert_param_grads_match(ours, theirs)


def test_lstm_cell_backward_takes_forwards_tuple(rng):
    cell = fnn.LSTMCell(3, 4, dtype=np.float64)
    x = rng.standard_normal((2, 3))
    grads = (rng.standard_normal((2, 4)), rng.standard_normal((2, 4)))
    cell(x)
    by_tuple = cell.backward(grads)[0]
    cell(x)
    np.testing.assert_array_equal(by_tuple, cell.backward(*grads)[0])


@pytest.mark.parametrize("cls,kwargs", [("RNNCell", dict(nonlinearity="relu", bias=False)),
                                        ("LSTMCell", dict()), ("GRUCell", dict(bias=False))])
def test_cell_structure_and_repr_equal_torch(cls, kwargs):
    ours, theirs = getattr(fnn, cls)(3, 4, **kwargs), getattr(torch.nn, cls)(3, 4, **kwargs)
    assert repr(ours) == repr(theirs)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert all(np.all(np.abs(p.data) <= 0.5) for p in ours.parameters())


def test_cell_errors():
    cell = fnn.GRUCell(3, 4, dtype=np.float64)
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D"):
        cell(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="inconsistent input_size: got 2 expected 3"):
        cell(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="Input batch size 2 doesn't match hidden0 batch size 3"):
        cell(np.zeros((2, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="hidden0 has inconsistent hidden_size: got 5, expected 4"):
        cell(np.zeros((2, 3)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="Expected hidden to be 1D"):
        cell(np.zeros(3), np.zeros((1, 4)))
    with pytest.raises(TypeError, match="input has dtype float32"):
        cell(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        fnn.RNNCell(3, 4, nonlinearity="gelu")
    lstm = fnn.LSTMCell(3, 4, dtype=np.float64)
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        lstm(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="hidden1 has inconsistent hidden_size"):
        lstm(np.zeros((2, 3)), (np.zeros((2, 4)), np.zeros((2, 5))))


def test_cell_backward_state_errors():
    cell = fnn.RNNCell(3, 4, dtype=np.float64)
    with pytest.raises(RuntimeError, match="before any forward"):
        cell.backward(np.zeros((1, 4)))
    cell(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"grad_h must have the state's shape \(1, 4\)"):
        cell.backward(np.zeros((2, 4)))
    cell.backward(np.zeros((1, 4)))  # a refused gradient does not consume the forward
    with pytest.raises(RuntimeError, match="a second time"):
        cell.backward(np.zeros((1, 4)))
    cell.eval()
    cell(np.zeros((1, 3)))
    with pytest.raises(RuntimeError, match="eval mode"):
        cell.backward(np.zeros((1, 4)))

"""A change of a layer's input or weights between its training forward and its backward raises
RuntimeError naming what changed, in fusedrnn.nn and fusedrnn.keras, as PyTorch raises; without
a change, nothing is raised."""

import numpy as np
import pytest

from fusedrnn import keras, nn, optim

T, B, I, H = 4, 3, 5, 6


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def gru_and_input(rng):
    layer = nn.GRU(I, H, num_layers=2, rng=0)
    return layer, rng.standard_normal((T, B, I)).astype(np.float32)


def test_nn_input_changed_in_place_raises(rng):
    layer, x = gru_and_input(rng)
    y, _ = layer(x)
    x[:] = 0
    with pytest.raises(RuntimeError, match="^x was modified in place"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("change", ["optimizer step", "assignment", "in place"])
def test_nn_weight_changed_between_forward_and_backward_raises_naming_it(rng, change):
    layer, x = gru_and_input(rng)
    y, _ = layer(x)
    if change == "optimizer step":
        for param in layer.parameters():
            param.grad = np.ones_like(param.data)
        optim.SGD(layer.parameters(), lr=0.1).step()
        name = "weight_ih_l0"  # the first of the parameters in their order
    elif change == "assignment":
        layer.weight_hh_l1.data = layer.weight_hh_l1.data * 2
        name = "weight_hh_l1"
    else:  # not through the Parameter: only the fingerprint sees it, and names the kernel's argument
        layer.bias_hh_l1.data[0] += 1
        name = "bias_hh"
    with pytest.raises(RuntimeError, match=f"^{name} was"):
        layer.backward(rng.standard_normal(y.shape).astype(np.float32))


def test_nn_step_after_backward_is_the_normal_order(rng):
    layer, x = gru_and_input(rng)
    opt = optim.Adam(layer.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        y, _ = layer(x)
        layer.backward(rng.standard_normal(y.shape).astype(np.float32))
        opt.step()


def test_nn_cell_weight_changed_raises(rng):
    cell = nn.LSTMCell(I, H, rng=0)
    h, c = cell(rng.standard_normal((B, I)).astype(np.float32))
    cell.weight_hh.data = cell.weight_hh.data + 1
    with pytest.raises(RuntimeError, match="^weight_hh was"):
        cell.backward(np.ones_like(h), np.ones_like(c))


def keras_model(rng):
    model = keras.Sequential([keras.layers.Input((T, I)), keras.layers.LSTM(H), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_keras_weights_set_between_forward_and_backward_raise(rng):
    model = keras_model(rng)
    lstm = model.layers[0]
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    out, _ = lstm.forward(x, training=True)
    lstm.set_weights([w * 0.5 for w in lstm.get_weights()])
    with pytest.raises(RuntimeError, match="was"):
        lstm.backward(np.ones_like(out))


def test_keras_fit_is_unaffected(rng):
    model = keras_model(rng)
    x = rng.standard_normal((16, T, I)).astype(np.float32)
    y = rng.standard_normal((16, 2)).astype(np.float32)
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()

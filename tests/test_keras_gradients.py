"""fusedrnn.keras backpropagation against central finite differences, in float64 (no Keras needed).

A model's loss gradient with respect to every weight, from one training step's backward pass,
must match (L(w + h e) - L(w - h e)) / 2h entry by entry, through masks, go_backwards,
Bidirectional, dropout masks (fixed) and every loss. Tolerance: |a - b| <= 1e-7 + 1e-6 |fd|.
"""

import numpy as np
import pytest

import fusedrnn.keras as fk
from fusedrnn.keras import layers

TOL = dict(rtol=1e-6, atol=1e-7)
F64 = dict(dtype="float64")


def loss_and_grads(model, x, y):
    """The loss and the gradients of its weights (Keras layout) from our backward pass."""
    y_pred, mask = model.forward(x, training=True)
    loss, grad = model.loss.value_and_grad(y, y_pred, mask)
    for param in model.trainable_weights:
        param.grad = None
    model.backward(grad)
    return loss, [g for layer in model.layers for g in layer._keras_weights("grad")]


def loss_at(model, x, y, weights):
    model.set_weights(weights)
    y_pred, mask = model.forward(x, training=True)
    return model.loss.value_and_grad(y, y_pred, mask)[0]


def check_gradients(model, x, y, rng, entries=6, step=1e-6):
    weights = model.get_weights()
    _, grads = loss_and_grads(model, x, y)
    for index, (weight, grad) in enumerate(zip(weights, grads)):
        assert grad.shape == weight.shape
        for flat in rng.choice(weight.size, min(entries, weight.size), replace=False):
            plus, minus = [w.copy() for w in weights], [w.copy() for w in weights]
            plus[index].flat[flat] += step
            minus[index].flat[flat] -= step
            numeric = (loss_at(model, x, y, plus) - loss_at(model, x, y, minus)) / (2 * step)
            np.testing.assert_allclose(grad.flat[flat], numeric, err_msg=f"weight {index}[{flat}]", **TOL)
    model.set_weights(weights)


def masked_tokens(rng, batch=4, steps=6, vocab=9):
    tokens = rng.integers(1, vocab, (batch, steps))
    tokens[0, 4:] = 0
    tokens[1, :2] = 0
    tokens[2, 3] = 0
    return tokens


MODELS = {
    "embedding_bidirectional_gru": (
        lambda: [layers.Embedding(9, 3, mask_zero=True, **F64),
                 layers.Bidirectional(layers.GRU(4, return_sequences=True, **F64), merge_mode="mul"),
                 layers.LSTM(3, go_backwards=True, **F64), layers.Dense(3, activation="softmax", **F64)],
        "sparse_categorical_crossentropy", "tokens_sparse"),
    "masked_sequence_outputs": (
        lambda: [layers.Embedding(9, 3, mask_zero=True, **F64),
                 layers.SimpleRNN(4, return_sequences=True, **F64),
                 layers.Bidirectional(layers.GRU(2, return_sequences=True, reset_after=False, **F64), merge_mode="ave"),
                 layers.Dense(2, activation="sigmoid", **F64)],
        "binary_crossentropy", "tokens_per_step"),
    "masking_lstm_regression": (
        lambda: [layers.Masking(0.0, **F64), layers.LSTM(4, return_sequences=True, **F64),
                 layers.Dense(3, activation="tanh", **F64), layers.GRU(3, **F64), layers.Dense(2, **F64)],
        "mse", "floats"),
    "nested_models": (
        lambda: [fk.Sequential([layers.Embedding(9, 3, mask_zero=True, **F64),
                                fk.Sequential([layers.GRU(4, return_sequences=True, **F64)])]),
                 layers.LSTM(3, **F64), layers.Dense(3, activation="softmax", **F64)],
        "sparse_categorical_crossentropy", "tokens_sparse"),
    "relu_rnn_mae": (
        lambda: [layers.SimpleRNN(5, activation="relu", go_backwards=True, return_sequences=True, **F64),
                 layers.Bidirectional(layers.LSTM(2, **F64), merge_mode="sum"), layers.Dense(2, **F64)],
        fk.losses.CategoricalCrossentropy(from_logits=True), "floats_one_hot"),
}


@pytest.mark.parametrize("name", MODELS)
def test_model_gradients_match_finite_differences(name, rng):
    make_layers, loss, data = MODELS[name]
    model = fk.Sequential(make_layers())
    model.compile(optimizer="sgd", loss=loss)
    if data.startswith("tokens"):
        x = masked_tokens(rng)
        y = rng.integers(0, 3, 4) if data == "tokens_sparse" else (rng.random((4, 6, 2)) > 0.5).astype(float)
    else:
        x = rng.standard_normal((4, 6, 3))
        x[0, 4:] = 0.0   # masked by Masking in the model that has it
        y = rng.standard_normal((4, 2)) if data == "floats" else np.eye(2)[rng.integers(0, 2, 4)]
    model(x)   # builds
    model.set_weights([rng.normal(0, 0.5, w.shape) for w in model.get_weights()])
    check_gradients(model, x, y, rng)


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_dropout_gradients_with_fixed_masks(kind, rng):
    layer = getattr(layers, kind)(4, dropout=0.3, recurrent_dropout=0.4, return_sequences=True, **F64)
    model = fk.Sequential([layer, layers.Dense(1, **F64)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = rng.standard_normal((3, 5, 2)), rng.standard_normal((3, 5, 1))
    model(x)
    input_scale = (rng.random((3, 2)) > 0.3) / 0.7
    recurrent_scale = (rng.random((3, 4)) > 0.4) / 0.6
    layer._dropout_scales = lambda batch, features: (input_scale, recurrent_scale)
    check_gradients(model, x, y, rng)


def test_frozen_layers_get_no_gradient_and_do_not_move(rng):
    model = fk.Sequential([layers.LSTM(3, **F64), layers.Dense(1, **F64)])
    model.compile(optimizer="adam", loss="mse")
    x, y = rng.standard_normal((8, 4, 2)), rng.standard_normal((8, 1))
    model(x)
    model.layers[0].trainable = False
    frozen = model.layers[0].get_weights()
    dense = model.layers[1].get_weights()
    model.fit(x, y, epochs=2, verbose=0)
    for got, want in zip(model.layers[0].get_weights(), frozen):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(model.layers[1].get_weights()[0], dense[0])
    assert model.count_params() == sum(w.size for w in frozen + dense)
    model.trainable = False
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 5


def test_float64_model_keeps_float64(rng):
    model = fk.Sequential([fk.Input((4, 2)), layers.GRU(3, **F64), layers.Dense(1, **F64)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(rng.standard_normal((6, 4, 2)), rng.standard_normal((6, 1)), verbose=0)
    assert model.predict(rng.standard_normal((2, 4, 2)), verbose=0).dtype == np.float64
    assert all(w.dtype == np.float64 for w in model.get_weights())

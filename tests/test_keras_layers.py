"""fusedrnn.keras layers against Keras 3 (KERAS_BACKEND=torch) as the oracle.

The same weights (Keras's get_weights loaded into ours) and inputs must give the same outputs,
returned states, input gradients and weight gradients (Keras's through torch autograd, in
Keras's layout) for every recurrent option, mask, go_backwards, return_state, Bidirectional
merge mode and stateful calls.

Tolerances, float32 throughout (Keras's torch backend runs its generic RNN loop in float32 even
for float64 layers, so float64 would not tighten the comparison): outputs |a - b| <= 1e-5 +
1e-5 |keras|, gradients 1e-4 + 1e-4 |keras|.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("these tests need Keras with KERAS_BACKEND=torch", allow_module_level=True)

import fusedrnn.keras as fk  # noqa: E402
from fusedrnn.keras import initializers, layers  # noqa: E402

OUT_TOL = dict(rtol=1e-5, atol=1e-5)
GRAD_TOL = dict(rtol=1e-4, atol=1e-4)

CELLS = {
    "simple_tanh": ("SimpleRNN", {}),
    "simple_relu": ("SimpleRNN", {"activation": "relu"}),
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
    "gru_reset_before": ("GRU", {"reset_after": False}),
}


def numpy(value):
    if isinstance(value, (list, tuple)):
        return [numpy(v) for v in value]
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def random_mask(rng, batch, steps):
    """Any pattern: gaps, masked first steps, a fully masked row and a fully valid one."""
    mask = rng.random((batch, steps)) > 0.35
    mask[0] = False
    mask[1] = True
    mask[2, :2] = False
    return mask


def paired(kind, options, features, rng, batch=None):
    """A Keras layer with random weights (non-zero biases too) and ours holding the same."""
    keras_layer = getattr(keras.layers, kind)(**options)
    keras_layer.build((batch, None, features) if kind != "Dense" else (batch, features))
    keras_layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in keras_layer.get_weights()])
    ours = getattr(layers, kind)(**options)
    ours._ensure_built((None, None, features) if kind != "Dense" else (None, features))
    ours.set_weights(keras_layer.get_weights())
    return keras_layer, ours


def keras_grads(keras_layer, x, outputs, cotangent):
    """d sum(outputs * cotangent) / d (x, each weight), by torch autograd through Keras."""
    loss = (outputs * torch.as_tensor(cotangent)).sum()
    variables = [w.value for w in keras_layer.trainable_weights]
    grads = torch.autograd.grad(loss, [x] + variables, allow_unused=True)
    return numpy(grads[0]), [numpy(g) if g is not None else np.zeros(v.shape) for g, v in zip(grads[1:], variables)]


def assert_grads_match(keras_layer, ours, x_torch, outputs, rng):
    """With a random cotangent of `outputs`: our input and weight gradients against Keras's."""
    cotangent = rng.standard_normal(tuple(outputs.shape)).astype("float32")
    dx_expected, dweights_expected = keras_grads(keras_layer, x_torch, outputs, cotangent)
    np.testing.assert_allclose(ours.backward(cotangent), dx_expected, **GRAD_TOL)
    for got_grad, want in zip(ours._keras_weights("grad"), dweights_expected):
        np.testing.assert_allclose(got_grad, want, **GRAD_TOL)


def check_layer(kind, options, rng, batch=5, steps=6, features=4, mask=None, training=False, call=None):
    """Runs Keras and ours on one input; compares every output, then the gradients."""
    keras_layer, ours = paired(kind, options, features, rng)
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    x_torch = torch.tensor(x, requires_grad=True)
    keras_kwargs = {} if mask is None else {"mask": torch.tensor(mask)}
    expected = keras_layer(x_torch, training=training, **keras_kwargs)
    got = ours(x, mask=mask, training=True)
    expected_list = expected if isinstance(expected, (list, tuple)) else [expected]
    got_list = got if isinstance(got, list) else [got]
    assert len(got_list) == len(expected_list)
    for g, e in zip(got_list, expected_list):
        assert g.shape == tuple(e.shape) and g.dtype == np.float32
        np.testing.assert_allclose(g, numpy(e), **OUT_TOL)
    assert_grads_match(keras_layer, ours, x_torch, expected_list[0], rng)   # of the (first) output
    return keras_layer, ours


# -- weights ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_weights_round_trip_in_keras_layout(cell, use_bias, rng):
    kind, options = CELLS[cell]
    keras_layer, ours = paired(kind, dict(options, units=3, use_bias=use_bias), 5, rng)
    keras_weights, our_weights = keras_layer.get_weights(), ours.get_weights()
    assert [w.shape for w in our_weights] == [w.shape for w in keras_weights]
    for got, want in zip(our_weights, keras_weights):
        np.testing.assert_array_equal(got, want)
    assert ours.count_params() == keras_layer.count_params()


def test_gate_order_maps_to_the_kernels_layout(rng):
    """Keras GRU gates z, r, h are the kernels' r, z, n: block 0 of weight_ih is Keras's r."""
    _, gru = paired("GRU", dict(units=2), 3, rng)
    kernel = gru.get_weights()[0]
    np.testing.assert_array_equal(gru._params["weight_ih"].data[:2], kernel[:, 2:4].T)
    np.testing.assert_array_equal(gru._params["weight_ih"].data[2:4], kernel[:, 0:2].T)
    np.testing.assert_array_equal(gru._params["bias_hh"].data[4:], gru.get_weights()[2][1, 4:])


# -- the recurrent options ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_recurrent_layer_matches_keras(cell, return_sequences, go_backwards, masked, rng):
    kind, options = CELLS[cell]
    options = dict(options, units=3, return_sequences=return_sequences, go_backwards=go_backwards,
                   return_state=True)
    mask = random_mask(rng, 5, 6) if masked else None
    check_layer(kind, options, rng, mask=mask)


@pytest.mark.parametrize("cell", CELLS)
def test_without_bias(cell, rng):
    kind, options = CELLS[cell]
    check_layer(kind, dict(options, units=4, use_bias=False, return_sequences=True), rng,
                mask=random_mask(rng, 5, 6))


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_tanh"])
def test_zero_output_for_mask(cell, rng):
    kind, options = CELLS[cell]
    check_layer(kind, dict(options, units=3, return_sequences=True, zero_output_for_mask=True), rng,
                mask=random_mask(rng, 5, 6))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_initial_state(cell, rng):
    kind, options = CELLS[cell]
    keras_layer, ours = paired(kind, dict(options, units=3, return_sequences=True, return_state=True), 4, rng)
    x = rng.standard_normal((2, 5, 4)).astype("float32")
    states = [rng.standard_normal((2, 3)).astype("float32") for _ in range(2 if kind == "LSTM" else 1)]
    expected = keras_layer(x, initial_state=[torch.tensor(s) for s in states])
    got = ours(x, initial_state=states)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, numpy(e), **OUT_TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_tanh"])
def test_stateful_carries_states_across_calls(cell, rng):
    kind, options = CELLS[cell]
    keras_layer, ours = paired(kind, dict(options, units=3, stateful=True, return_sequences=True), 4, rng, batch=2)
    chunks = [rng.standard_normal((2, 3, 4)).astype("float32") for _ in range(3)]
    for index, chunk in enumerate(chunks):
        if index == 2:
            keras_layer.reset_states()
            ours.reset_states()
        np.testing.assert_allclose(ours(chunk), numpy(keras_layer(chunk)), **OUT_TOL)
    with pytest.raises(ValueError, match="stateful"):
        ours(chunks[0][:1])


# -- masks from layers -----------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_tanh"])
def test_masking_layer_feeds_the_mask(cell, rng):
    kind, options = CELLS[cell]
    x = rng.standard_normal((4, 6, 3)).astype("float32")
    x[0, 4:] = 0.0
    x[1, :2] = 0.0
    x[2, 3] = 0.0

    def model(lib):
        return lib.Sequential([lib.Input((6, 3)), lib.layers.Masking(0.0),
                               getattr(lib.layers, kind)(4, return_sequences=True, **options),
                               lib.layers.Dense(2)])

    keras_model, ours = model(keras), model(fk)
    ours.set_weights(keras_model.get_weights())
    np.testing.assert_allclose(ours.predict(x, verbose=0), keras_model.predict(x, verbose=0), **OUT_TOL)


def test_embedding_mask_zero_feeds_the_mask(rng):
    tokens = rng.integers(1, 9, (5, 7))
    tokens[0, 5:] = 0
    tokens[1, :3] = 0
    tokens[3] = 0

    def model(lib):
        return lib.Sequential([lib.Input((7,), dtype="int32"), lib.layers.Embedding(9, 4, mask_zero=True),
                               lib.layers.GRU(3, return_sequences=True), lib.layers.LSTM(2)])

    keras_model, ours = model(keras), model(fk)
    ours.set_weights(keras_model.get_weights())
    np.testing.assert_allclose(ours.predict(tokens, verbose=0), keras_model.predict(tokens, verbose=0), **OUT_TOL)


# -- Bidirectional -----------------------------------------------------------------------------------

@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_bidirectional_matches_keras(merge_mode, return_sequences, masked, rng):
    inner = dict(units=3, return_sequences=return_sequences)
    keras_layer = keras.layers.Bidirectional(keras.layers.LSTM(**inner), merge_mode=merge_mode)
    ours = layers.Bidirectional(layers.LSTM(**inner), merge_mode=merge_mode)
    x = rng.standard_normal((5, 6, 4)).astype("float32")
    keras_layer.build((None, 6, 4))
    keras_layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in keras_layer.get_weights()])
    ours._ensure_built(x.shape)
    ours.set_weights(keras_layer.get_weights())
    mask = random_mask(rng, 5, 6) if masked else None
    x_torch = torch.tensor(x, requires_grad=True)
    expected = keras_layer(x_torch, **({} if mask is None else {"mask": torch.tensor(mask)}))
    got = ours(x, mask=mask, training=True)
    expected_list = list(expected) if merge_mode is None else [expected]
    got_list = got if merge_mode is None else [got]
    for g, e in zip(got_list, expected_list):
        np.testing.assert_allclose(g, numpy(e), **OUT_TOL)
    cotangents = [rng.standard_normal(e.shape).astype("float32") for e in expected_list]
    loss = sum((e * torch.tensor(c)).sum() for e, c in zip(expected_list, cotangents))
    variables = [w.value for w in keras_layer.trainable_weights]
    grads = torch.autograd.grad(loss, [x_torch] + variables)
    dx = ours.backward(cotangents if merge_mode is None else cotangents[0])
    np.testing.assert_allclose(dx, numpy(grads[0]), **GRAD_TOL)
    for got_grad, want in zip(ours._keras_weights("grad"), grads[1:]):
        np.testing.assert_allclose(got_grad, numpy(want), **GRAD_TOL)


@pytest.mark.parametrize("cell", ["gru", "simple_tanh", "gru_reset_before"])
def test_bidirectional_return_state(cell, rng):
    kind, options = CELLS[cell]
    inner = dict(options, units=3, return_sequences=True, return_state=True)
    keras_layer = keras.layers.Bidirectional(getattr(keras.layers, kind)(**inner))
    ours = layers.Bidirectional(getattr(layers, kind)(**inner))
    x = rng.standard_normal((3, 5, 2)).astype("float32")
    mask = random_mask(rng, 3, 5)
    keras_layer.build((None, 5, 2))
    ours._ensure_built(x.shape)
    ours.set_weights(keras_layer.get_weights())
    expected = keras_layer(x, mask=torch.tensor(mask))
    got = ours(x, mask=mask)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, numpy(e), **OUT_TOL)


def test_bidirectional_weights_are_forward_then_backward(rng):
    keras_layer = keras.layers.Bidirectional(keras.layers.GRU(2))
    keras_layer.build((None, 4, 3))
    ours = layers.Bidirectional(layers.GRU(2))
    ours._ensure_built((None, 4, 3))
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in keras_layer.get_weights()]
    assert ours.forward_layer.name.startswith("forward_") and ours.backward_layer.go_backwards


# -- dropout -----------------------------------------------------------------------------------------

def _inject_masks(keras_layer, ours, input_scale, recurrent_scale, gates):
    """Gives Keras's cell and our layer the same dropout masks (Keras caches a cell's masks;
    with recurrent dropout LSTM/GRU use one mask per gate: all the same here)."""
    cell = keras_layer.cell
    count = gates if recurrent_scale is not None and gates > 1 else None
    if input_scale is not None:
        mask = torch.tensor(input_scale)
        cell._dropout_mask = [mask] * count if count else mask
    if recurrent_scale is not None:
        mask = torch.tensor(recurrent_scale)
        cell._recurrent_dropout_mask = [mask] * count if count else mask
    ours._dropout_scales = lambda batch, features: (input_scale, recurrent_scale)


def _scale(rng, shape, rate):
    return ((rng.random(shape) >= rate) / (1 - rate)).astype("float32")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.3], ids=["input", "input+recurrent"])
def test_dropout_masks_match_keras_semantics(cell, recurrent_dropout, rng):
    kind, options = CELLS[cell]
    options = dict(options, units=3, dropout=0.4, recurrent_dropout=recurrent_dropout, return_sequences=True)
    keras_layer, ours = paired(kind, options, 4, rng)
    input_scale = _scale(rng, (5, 4), 0.4)
    recurrent_scale = _scale(rng, (5, 3), recurrent_dropout) if recurrent_dropout else None
    _inject_masks(keras_layer, ours, input_scale, recurrent_scale, {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind])
    x = rng.standard_normal((5, 6, 4)).astype("float32")
    x_torch = torch.tensor(x, requires_grad=True)
    expected = keras_layer(x_torch, training=True)
    got = ours(x, training=True)
    np.testing.assert_allclose(got, numpy(expected), **OUT_TOL)
    assert_grads_match(keras_layer, ours, x_torch, expected, rng)


def test_dropout_is_off_in_inference_and_drawn_per_sequence(rng):
    layer = layers.LSTM(3, dropout=0.5, seed=1, return_sequences=True)
    x = rng.standard_normal((4, 5, 2)).astype("float32")
    inference = layer(x)
    np.testing.assert_array_equal(layer(x), inference)
    scales, _ = layer._dropout_scales(4, 2)
    assert scales.shape == (4, 2) and set(np.unique(scales)) <= {0.0, 2.0}
    assert not np.array_equal(layer(x, training=True), inference)


# -- Dense, Embedding, Masking, Dropout ------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid", "tanh", "softmax", "softplus", "softsign",
                                        "elu", "selu", "swish", "exponential"])
def test_dense_activations_match_keras(activation, rng):
    keras_layer, ours = paired("Dense", dict(units=5, activation=activation), 4, rng)
    x = rng.standard_normal((3, 2, 4)).astype("float32")   # a sequence: Dense applies per step
    x_torch = torch.tensor(x, requires_grad=True)
    expected = keras_layer(x_torch)
    np.testing.assert_allclose(ours(x, training=True), numpy(expected), **OUT_TOL)
    assert_grads_match(keras_layer, ours, x_torch, expected, rng)


def test_embedding_matches_keras(rng):
    keras_layer = keras.layers.Embedding(7, 3)
    keras_layer.build((None, 4))
    ours = layers.Embedding(7, 3)
    ours._ensure_built((None, 4))
    ours.set_weights(keras_layer.get_weights())
    tokens = rng.integers(0, 7, (5, 4))
    expected = keras_layer(tokens)
    np.testing.assert_allclose(ours(tokens, training=True), numpy(expected), **OUT_TOL)
    cotangent = rng.standard_normal(expected.shape).astype("float32")
    (grad,) = torch.autograd.grad((expected * torch.tensor(cotangent)).sum(), [keras_layer.embeddings.value])
    assert ours.backward(cotangent) is None
    np.testing.assert_allclose(ours._keras_weights("grad")[0], numpy(grad), **GRAD_TOL)
    with pytest.raises(IndexError):
        ours(np.array([[7]]))


def test_masking_zeroes_masked_steps_and_stops_their_gradient(rng):
    x = rng.standard_normal((2, 4, 3)).astype("float32")
    x[0, 1] = 5.0
    masking = layers.Masking(mask_value=5.0)
    y, mask = masking.forward(x, training=True)
    np.testing.assert_array_equal(numpy(keras.layers.Masking(5.0)(x)), y)
    assert mask.tolist() == [[True, False, True, True], [True] * 4]
    assert np.all(masking.backward(np.ones_like(x))[0, 1] == 0)


def test_dropout_layer(rng):
    dropout = layers.Dropout(0.5, seed=3)
    x = np.ones((200, 10), np.float32)
    np.testing.assert_array_equal(dropout(x), x)
    y = dropout(x, training=True)
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.35 < (y == 0).mean() < 0.65
    np.testing.assert_array_equal(dropout.backward(np.ones_like(x)), y)
    shared = layers.Dropout(0.5, noise_shape=(None, 1), seed=3)(x, training=True)
    assert np.all(shared == shared[:, :1])


# -- arguments -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, options", [
    ("SimpleRNN", dict(activation="sigmoid")),
    ("LSTM", dict(activation="relu")),
    ("LSTM", dict(recurrent_activation="hard_sigmoid")),
    ("GRU", dict(recurrent_activation="tanh")),
])
def test_unsupported_activation_names_what_is_supported(kind, options):
    with pytest.raises(NotImplementedError, match="supported: activation='tanh'"):
        getattr(layers, kind)(3, **options)


def test_unsupported_arguments_raise():
    with pytest.raises(NotImplementedError, match="kernel_regularizer"):
        layers.LSTM(3, kernel_regularizer="l2")
    with pytest.raises(TypeError, match="unexpected"):
        layers.GRU(3, no_such_argument=1)
    with pytest.raises(ValueError, match="merge_mode"):
        layers.Bidirectional(layers.LSTM(2), merge_mode="max")


# -- initializers ------------------------------------------------------------------------------------------

def test_unit_forget_bias_sets_the_forget_bias_to_one():
    lstm = layers.LSTM(4, bias_initializer="random_normal")
    lstm._ensure_built((None, None, 3))
    bias = lstm.get_weights()[2]
    np.testing.assert_array_equal(bias[4:8], np.ones(4))
    assert np.all(bias[:4] != 0) and np.all(bias[8:] != 0)
    no_forget = layers.LSTM(4, unit_forget_bias=False)
    no_forget._ensure_built((None, None, 3))
    np.testing.assert_array_equal(no_forget.get_weights()[2], np.zeros(16))


def test_default_initializers_have_keras_distributions():
    gru = layers.GRU(8)
    gru._ensure_built((None, None, 5))
    kernel, recurrent_kernel, bias = gru.get_weights()
    limit = np.sqrt(6 / (5 + 24))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
    # orthogonal on (units, 3*units): orthonormal rows
    np.testing.assert_allclose(recurrent_kernel @ recurrent_kernel.T, np.eye(8), atol=1e-5)
    assert bias.shape == (2, 24) and not bias.any()


@pytest.mark.parametrize("identifier, check", [
    ("zeros", lambda w: not w.any()),
    ("ones", lambda w: np.all(w == 1)),
    (initializers.Constant(0.25), lambda w: np.all(w == 0.25)),
    ("random_normal", lambda w: abs(w.std() - 0.05) < 0.01),
    (initializers.RandomUniform(-0.2, 0.2), lambda w: np.abs(w).max() <= 0.2 and np.abs(w).max() > 0.15),
    ("glorot_uniform", lambda w: np.abs(w).max() <= np.sqrt(6 / 500)),
    (initializers.Orthogonal(gain=2.0), lambda w: np.allclose(w.T @ w, 4 * np.eye(200), atol=1e-4)),
    ("GlorotNormal", lambda w: abs(w.std() - np.sqrt(2 / 500)) < 0.01),
    ({"class_name": "HeUniform", "config": {"seed": 1}}, lambda w: np.abs(w).max() <= np.sqrt(6 / 300)),
])
def test_initializers_by_name_or_object(identifier, check):
    init = initializers.get(identifier)
    weights = init((300, 200), "float32")
    assert weights.shape == (300, 200) and weights.dtype == np.float32 and check(weights)


def test_seeded_initializer_is_reproducible():
    init = initializers.GlorotUniform(seed=5)
    np.testing.assert_array_equal(init((3, 4)), init((3, 4)))

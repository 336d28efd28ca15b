"""fusedrnn.keras models without Keras: the public train_step/test_step, and models used as
layers of other models (Sequential and functional), against the same layers written flat.

A nested model computes exactly what its layers do flat, so training from the same weights on
the same batches gives the same history and weights to float32 rounding (1e-6 relative).
"""

import numpy as np
import pytest

import fusedrnn.keras as fk
from fusedrnn.keras import layers

TOL = dict(rtol=1e-6, atol=1e-7)


def regression_data(rng, samples=20):
    x = rng.standard_normal((samples, 5, 3)).astype(np.float32)
    y = rng.standard_normal((samples, 2)).astype(np.float32)
    return x, y


def small_model(metrics=("mae",)):
    model = fk.Sequential([fk.Input((5, 3)), layers.GRU(4), layers.Dense(2)])
    model.compile(optimizer=fk.optimizers.Adam(0.01), loss="mse", metrics=list(metrics))
    return model


def assert_same_weights(got, want, **tol):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, **(tol or TOL))


# -- train_step and test_step ------------------------------------------------------------------------

def test_train_step_is_what_fit_runs_per_batch(rng):
    x, y = regression_data(rng)
    fitted, stepped = small_model(), small_model()
    stepped.set_weights(fitted.get_weights())
    history = fitted.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for start in range(0, len(x), 8):
        logs = stepped.train_step(x[start:start + 8], y[start:start + 8])
    assert sorted(logs) == ["loss", "mae"] and all(isinstance(v, float) for v in logs.values())
    assert logs == pytest.approx({name: values[-1] for name, values in history.history.items()}, rel=1e-6)
    assert_same_weights(stepped.get_weights(), fitted.get_weights(), rtol=0, atol=0)


def test_test_step_is_what_evaluate_runs_per_batch(rng):
    x, y = regression_data(rng)
    model = small_model()
    expected = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    model.reset_metrics()
    for start in range(0, len(x), 8):
        logs = model.test_step(x[start:start + 8], y[start:start + 8])
    assert logs == pytest.approx(expected, rel=1e-12)
    assert [metric.name for metric in model.metrics] == ["loss", "mae"]
    assert model.get_metrics_result() == logs


def test_fit_and_evaluate_call_an_overridden_step(rng):
    calls = []

    class Counting(fk.Sequential):
        def train_step(self, x, y, sample_weight=None):
            calls.append(("train", len(x)))
            return super().train_step(x, y, sample_weight)

        def test_step(self, x, y, sample_weight=None):
            calls.append(("test", len(x)))
            return super().test_step(x, y, sample_weight)

    model = Counting([fk.Input((5, 3)), layers.SimpleRNN(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = regression_data(rng)
    model.fit(x, y, batch_size=8, epochs=1, validation_split=0.2, verbose=0)
    assert calls == [("train", 8), ("train", 8), ("test", 4)]


def test_steps_refuse_what_they_do_not_support(rng):
    x, y = regression_data(rng, samples=4)
    model = fk.Sequential([fk.Input((5, 3)), layers.SimpleRNN(2)])
    with pytest.raises(RuntimeError, match="compile"):
        model.train_step(x, y)
    model.compile(optimizer="sgd", loss="mse")
    for step in (model.train_step, model.test_step, model.train_on_batch, model.test_on_batch):
        with pytest.raises(NotImplementedError, match="sample_weight"):
            step(x, y, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="samples"):
        model.train_step(x, y[:3])


# -- models as layers -------------------------------------------------------------------------------

def _sequence_layers():
    return [layers.Masking(0.0), layers.GRU(4, return_sequences=True), layers.LSTM(3, return_sequences=True)]


def _flat():
    return fk.Sequential([fk.Input((5, 3)), *_sequence_layers(), layers.TimeDistributed(layers.Dense(2))])


def _nested_sequential():
    return fk.Sequential([fk.Input((5, 3)), fk.Sequential(_sequence_layers()), layers.TimeDistributed(layers.Dense(2))])


def _nested_functional():
    inner_input = fk.Input((5, 3))
    hidden = inner_input
    for layer in _sequence_layers():
        hidden = layer(hidden)
    inner = fk.Model(inner_input, hidden)
    outer_input = fk.Input((5, 3))
    return fk.Model(outer_input, layers.TimeDistributed(layers.Dense(2))(inner(outer_input)))


def _nested_twice():
    """A functional model inside a Sequential inside a Sequential."""
    masking, gru, lstm = _sequence_layers()
    inner_input = fk.Input((5, 3))
    innermost = fk.Model(inner_input, lstm(gru(inner_input)))
    return fk.Sequential([fk.Input((5, 3)), fk.Sequential([masking, innermost]),
                          layers.TimeDistributed(layers.Dense(2))])


NESTED = {"sequential": _nested_sequential, "functional": _nested_functional, "twice": _nested_twice}


def sequence_data(rng, samples=24):
    x = rng.standard_normal((samples, 5, 3)).astype(np.float32)
    x[:6, 3:] = 0.0   # padded steps, masked
    return x, rng.standard_normal((samples, 5, 2)).astype(np.float32)


@pytest.mark.parametrize("build", NESTED.values(), ids=NESTED)
def test_a_nested_model_trains_as_its_layers_flat(build, rng):
    flat, nested = _flat(), build()
    assert len(nested.layers) == 2 and isinstance(nested.layers[0], fk.Model)
    assert nested.count_params() == flat.count_params()
    nested.set_weights(flat.get_weights())
    x, y = sequence_data(rng)
    histories = []
    for model in (flat, nested):
        model.compile(optimizer=fk.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
        histories.append(model.fit(x, y, batch_size=8, epochs=3, shuffle=False, validation_split=0.25,
                                   verbose=0).history)
    assert list(histories[1]) == list(histories[0]) == ["loss", "mae", "val_loss", "val_mae"]
    for key, values in histories[0].items():
        np.testing.assert_allclose(histories[1][key], values, err_msg=key, **TOL)
    assert_same_weights(nested.get_weights(), flat.get_weights())
    np.testing.assert_allclose(nested.predict(x, verbose=0), flat.predict(x, verbose=0), **TOL)


def test_a_nested_model_backpropagates_to_its_input(rng):
    flat, nested = _flat(), _nested_sequential()
    nested.set_weights(flat.get_weights())
    x, _ = sequence_data(rng, samples=4)
    grad = rng.standard_normal((4, 5, 2)).astype(np.float32)
    outputs = [model.forward(x, None, training=True)[0] for model in (flat, nested)]
    np.testing.assert_array_equal(outputs[1], outputs[0])
    inputs = [model.backward(grad) for model in (flat, nested)]
    np.testing.assert_allclose(inputs[1], inputs[0], **TOL)
    for got, want in zip(nested.layers[0].layers, flat.layers[:3]):
        assert_same_weights(got._keras_weights("grad"), want._keras_weights("grad"))


def test_freezing_a_nested_model(rng):
    nested = _nested_sequential()
    inner, head = nested.layers
    inner.trainable = False
    assert all(not layer.trainable for layer in inner.layers)
    assert nested.trainable_weights == head.trainable_weights
    assert len(nested.non_trainable_weights) == len(inner.weights)
    frozen, start = inner.get_weights(), [w.version for w in inner.weights]
    nested.compile(optimizer="adam", loss="mse")
    nested.fit(*sequence_data(rng), epochs=2, verbose=0)
    assert_same_weights(inner.get_weights(), frozen, rtol=0, atol=0)
    assert [w.version for w in inner.weights] == start
    inner.trainable = True
    inner.layers[1].trainable = False   # one layer frozen inside a trainable nested model
    assert len(nested.trainable_weights) == len(nested.weights) - len(inner.layers[1].weights)
    nested.trainable = False
    assert nested.trainable_weights == [] and not head.trainable
    frozen_at_birth = fk.Sequential([fk.Input((5, 3)), layers.GRU(2)], trainable=False)
    assert frozen_at_birth.trainable_weights == [] and not frozen_at_birth.layers[0].trainable


def test_weights_round_trip_through_nesting(rng, tmp_path):
    flat, nested = _flat(), _nested_twice()
    weights = [rng.standard_normal(w.shape).astype(np.float32) for w in flat.get_weights()]
    nested.set_weights(weights)
    assert_same_weights(nested.get_weights(), weights, rtol=0, atol=0)
    assert len(nested.weights) == len(flat.weights)
    path = tmp_path / "nested.npz"
    nested.save_weights(path)
    for model in (_nested_twice(), _nested_functional(), _flat()):   # the same weights in the same order
        model.load_weights(path)
        assert_same_weights(model.get_weights(), weights, rtol=0, atol=0)
    with pytest.raises(ValueError, match="weight arrays"):
        nested.set_weights(weights[:-1])
    with pytest.raises(ValueError, match="shape"):
        nested.set_weights([np.zeros((1, 1))] + weights[1:])


def test_nested_models_build_lazily_and_symbolically():
    inner = fk.Sequential([layers.GRU(4, return_sequences=True), layers.Dense(2)])
    assert not inner.built
    outer = fk.Sequential([fk.Input((6, 3)), inner, layers.LSTM(5)])   # building outer builds inner
    assert inner.built and inner.input_shape == (None, 6, 3) and outer.output_shape == (None, 5)
    tensor = fk.Input((6, 3))
    assert inner(tensor).shape == (None, 6, 2)
    wrapper = fk.Sequential([fk.Model(tensor, layers.Dense(1)(tensor)), layers.Dense(2)])
    assert wrapper.input_shape == (None, 6, 3)   # taken from the nested model's Input
    empty = fk.Sequential()
    with pytest.raises(ValueError, match="no layers"):
        fk.Sequential([fk.Input((6, 3)), empty])


def test_summary_of_nested_models(capsys):
    nested = _nested_sequential()
    inner = nested.layers[0]
    inner.layers[2].trainable = False
    nested.summary()
    text = capsys.readouterr().out
    assert f"{inner.name} (Sequential)" in text and "(None, 5, 3)" in text
    assert f"{inner.count_params():,}" in text and "(None, 5, 4)" not in text
    lstm_size = inner.layers[2].count_params()
    assert f"Total params: {nested.count_params():,}" in text
    assert f"Non-trainable params: {lstm_size:,}" in text
    nested.summary(expand_nested=True)
    text = capsys.readouterr().out
    assert "(None, 5, 4)" in text and f"  {inner.layers[1].name} (GRU)" in text


# -- fit's backward computes no gradient of the data --------------------------------------------

NO_INPUT_GRAD = {
    "lstm first": lambda: [fk.Input((6, 4)), layers.LSTM(5, return_sequences=True), layers.GRU(3), layers.Dense(2)],
    "masking, then a bidirectional lstm": lambda: [fk.Input((6, 4)), layers.Masking(0.0),
                                                   layers.Bidirectional(layers.LSTM(3)), layers.Dense(2)],
    "dense first": lambda: [fk.Input((6, 4)), layers.Dense(5), layers.SimpleRNN(3), layers.Dense(2)],
    "a frozen dense, then a gru": lambda: [fk.Input((6, 4)), layers.Dense(5, trainable=False), layers.GRU(3),
                                           layers.Dense(2)],
    "dropout, then a gru": lambda: [fk.Input((6, 4)), layers.Dropout(0.3), layers.GRU(3), layers.Dense(2)],
}


@pytest.mark.parametrize("build", NO_INPUT_GRAD.values(), ids=NO_INPUT_GRAD)
def test_a_backward_without_the_input_gradient_gives_the_same_weight_gradients(build, rng):
    x = rng.standard_normal((7, 6, 4)).astype(np.float32)
    x[2, 4:] = 0.0   # (a masked tail where a Masking layer is in front)
    grad = rng.standard_normal((7, 2)).astype(np.float32)
    model = fk.Sequential(build())
    model.build((None, 6, 4))
    gradients = {}
    for input_grad in (True, False):
        for param in model.trainable_weights:
            param.grad = None
        fk.utils.set_random_seed(3)   # (the same dropout draws)
        model.forward(x, None, training=True)
        returned = model.backward(grad, input_grad=input_grad)
        assert (returned is None) == (not input_grad)
        gradients[input_grad] = [param.grad.copy() for param in model.trainable_weights]
    assert len(gradients[False]) == len(model.trainable_weights) > 0
    for with_dx, without in zip(gradients[True], gradients[False]):
        np.testing.assert_array_equal(without, with_dx)


def test_fit_asks_the_first_recurrent_layer_for_no_input_gradient(rng, monkeypatch):
    from fusedrnn import functional as F

    asked = []
    backward = F.recurrent_backward

    def spy(*args, want_dx=True, **kwargs):
        asked.append(want_dx)
        return backward(*args, want_dx=want_dx, **kwargs)

    monkeypatch.setattr(F, "recurrent_backward", spy)
    model = fk.Sequential([fk.Input((5, 3)), layers.LSTM(4, return_sequences=True), layers.GRU(4), layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    x, y = regression_data(rng, samples=8)
    model.train_step(x, y)
    assert asked == [True, False]   # the GRU's input is the LSTM's output; the LSTM's is the data
    asked.clear()
    model.forward(x, None, training=True)
    model.backward(np.ones((8, 2), np.float32))
    assert asked == [True, True]    # a backward asked for the input's gradient computes it

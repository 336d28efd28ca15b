"""fusedrnn.keras models, training loop, losses, metrics, optimizers, callbacks and utilities
against Keras 3 (KERAS_BACKEND=torch) as the oracle.

Training runs from the same initial weights with shuffle=False, so Keras's and our loss
trajectories (History), evaluations, predictions and final weights must agree.

Tolerances (float32, as Keras trains): losses, metrics and predictions |a - b| <= 1e-5 +
1e-4 |keras|; weights after training 1e-4 + 1e-3 |keras| (a few float32 steps apart); loss
gradients 1e-6 + 1e-5 |keras|.
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

LOG_TOL = dict(rtol=1e-4, atol=1e-5)
WEIGHT_TOL = dict(rtol=1e-3, atol=1e-4)
LOSS_GRAD_TOL = dict(rtol=1e-5, atol=1e-6)


def numpy(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def twin_models(build, seed=0):
    """The same architecture in Keras and fusedrnn.keras, with Keras's initial weights in both."""
    keras.utils.set_random_seed(seed)
    keras_model, ours = build(keras), build(fk)
    ours.set_weights(keras_model.get_weights())
    return keras_model, ours


def assert_same_history(keras_history, our_history):
    assert list(our_history.history) == list(keras_history.history)
    assert our_history.epoch == keras_history.epoch
    for key, values in keras_history.history.items():
        np.testing.assert_allclose(our_history.history[key], values, err_msg=key, **LOG_TOL)


def assert_same_weights(keras_model, ours):
    for got, want in zip(ours.get_weights(), keras_model.get_weights()):
        np.testing.assert_allclose(got, want, **WEIGHT_TOL)


def fit_both(keras_model, ours, x, y, optimizer, loss, metrics=(), **fit_options):
    keras_optimizer, our_optimizer = (getattr(lib.optimizers, optimizer[0])(**optimizer[1]) for lib in (keras, fk))
    keras_model.compile(optimizer=keras_optimizer, loss=loss, metrics=list(metrics))
    ours.compile(optimizer=our_optimizer, loss=loss, metrics=list(metrics))
    fit_options = dict(dict(batch_size=8, epochs=3, shuffle=False, verbose=0), **fit_options)
    return keras_model.fit(x, y, **fit_options), ours.fit(x, y, **fit_options)


# -- SGD trajectories of tiny models --------------------------------------------------------------------

def _classification_data(rng, classes=3, samples=30, steps=5, features=3):
    x = rng.standard_normal((samples, steps, features)).astype("float32")
    y = rng.integers(0, classes, samples)
    return x, y


TASKS = {
    "lstm_mse": (lambda lib: lib.Sequential([lib.Input((5, 3)), lib.layers.LSTM(4), lib.layers.Dense(2)]),
                 "mse", ["mae"], "regression"),
    "gru_sparse_ce": (lambda lib: lib.Sequential([lib.Input((5, 3)), lib.layers.GRU(4),
                                                  lib.layers.Dense(3, activation="softmax")]),
                      "sparse_categorical_crossentropy", ["accuracy"], "sparse"),
    "gru_reset_before_ce": (lambda lib: lib.Sequential([lib.Input((5, 3)), lib.layers.GRU(4, reset_after=False),
                                                        lib.layers.Dense(3, activation="softmax")]),
                            "categorical_crossentropy", ["accuracy"], "one_hot"),
    "simple_rnn_sequences_mae": (lambda lib: lib.Sequential([lib.Input((5, 3)),
                                                             lib.layers.SimpleRNN(4, return_sequences=True),
                                                             lib.layers.Dense(1)]),
                                 "mae", ["mse"], "per_step"),
    "bidirectional_binary": (lambda lib: lib.Sequential([lib.Input((5, 3)),
                                                         lib.layers.Bidirectional(lib.layers.LSTM(3)),
                                                         lib.layers.Dropout(0.0),
                                                         lib.layers.Dense(1, activation="sigmoid")]),
                             "binary_crossentropy", ["accuracy"], "binary"),
    "time_distributed": (lambda lib: lib.Sequential([lib.Input((5, 3)), lib.layers.LSTM(4, return_sequences=True),
                                                     lib.layers.TimeDistributed(lib.layers.Dense(1))]),
                         "mse", ["mae"], "per_step"),
    "masking_stacked": (lambda lib: lib.Sequential([lib.Input((5, 3)), lib.layers.Masking(0.0),
                                                    lib.layers.GRU(4, return_sequences=True),
                                                    lib.layers.LSTM(3, go_backwards=True),
                                                    lib.layers.Dense(3)]),
                        lambda lib: lib.losses.SparseCategoricalCrossentropy(from_logits=True), ["acc"], "sparse"),
}


def _targets(kind, rng, x):
    if kind == "regression":
        return rng.standard_normal((len(x), 2)).astype("float32")
    if kind == "sparse":
        return rng.integers(0, 3, len(x))
    if kind == "one_hot":
        return fk.utils.to_categorical(rng.integers(0, 3, len(x)), 3)
    if kind == "per_step":
        return rng.standard_normal((len(x), x.shape[1], 1)).astype("float32")
    return (rng.random(len(x)) > 0.5).astype("float32")


@pytest.mark.parametrize("task", TASKS)
def test_sgd_training_follows_keras(task, rng):
    build, loss, metrics, target_kind = TASKS[task]
    keras_model, ours = twin_models(build)
    x = rng.standard_normal((30, 5, 3)).astype("float32")
    x[:5, 3:] = 0.0   # padded steps (masked where the model has Masking)
    y = _targets(target_kind, rng, x)
    keras_model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss(keras) if callable(loss) else loss,
                        metrics=list(metrics))
    ours.compile(optimizer=fk.optimizers.SGD(0.1), loss=loss(fk) if callable(loss) else loss, metrics=list(metrics))
    options = dict(batch_size=8, epochs=3, shuffle=False, verbose=0, validation_split=0.2)
    assert_same_history(keras_model.fit(x, y, **options), ours.fit(x, y, **options))
    assert_same_weights(keras_model, ours)
    np.testing.assert_allclose(ours.predict(x, verbose=0), keras_model.predict(x, verbose=0), **LOG_TOL)
    np.testing.assert_allclose(ours.evaluate(x, y, verbose=0), keras_model.evaluate(x, y, verbose=0), **LOG_TOL)


def test_masked_sequence_loss_and_metrics_skip_masked_steps(rng):
    """Embedding(mask_zero) -> per-step outputs: Keras averages loss and accuracy over unmasked steps."""
    def build(lib):
        return lib.Sequential([lib.Input((6,), dtype="int32"), lib.layers.Embedding(10, 4, mask_zero=True),
                               lib.layers.LSTM(5, return_sequences=True),
                               lib.layers.Dense(3, activation="softmax")])

    keras_model, ours = twin_models(build)
    tokens = fk.utils.pad_sequences([rng.integers(1, 10, n) for n in rng.integers(1, 7, 24)], maxlen=6)
    labels = rng.integers(0, 3, (24, 6))
    keras_history, our_history = fit_both(keras_model, ours, tokens, labels, ("SGD", dict(learning_rate=0.2)),
                                          "sparse_categorical_crossentropy", ["accuracy"], validation_split=0.25)
    assert_same_history(keras_history, our_history)
    assert_same_weights(keras_model, ours)


@pytest.mark.parametrize("optimizer", [
    ("Adam", {}),
    ("Adam", dict(learning_rate=0.01, amsgrad=True)),
    ("AdamW", dict(learning_rate=0.01)),
    ("RMSprop", {}),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True)),
    ("SGD", dict(learning_rate=0.05, momentum=0.9)),
    ("SGD", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    ("Adagrad", dict(learning_rate=0.05)),
    ("SGD", dict(learning_rate=0.5, clipnorm=0.1)),
    ("SGD", dict(learning_rate=0.5, global_clipnorm=0.1)),
    ("SGD", dict(learning_rate=0.5, clipvalue=0.01)),
], ids=lambda o: o[0] + "".join(f"-{k}" for k in o[1]) if isinstance(o, tuple) else str(o))
def test_optimizers_follow_keras(optimizer, rng):
    # A GRU with reset_after: its bias is one Keras variable but two Parameters here (clipnorm).
    build = lambda lib: lib.Sequential([lib.Input((4, 3)), lib.layers.GRU(4), lib.layers.Dense(2)])  # noqa: E731
    keras_model, ours = twin_models(build)
    x = rng.standard_normal((24, 4, 3)).astype("float32")
    y = rng.standard_normal((24, 2)).astype("float32")
    assert_same_history(*fit_both(keras_model, ours, x, y, optimizer, "mse"))
    assert_same_weights(keras_model, ours)


def test_optimizer_defaults_are_keras_defaults():
    for name in ("SGD", "Adam", "RMSprop", "Adagrad", "AdamW"):
        keras_config = getattr(keras.optimizers, name)().get_config()
        ours = getattr(fk.optimizers, name)()
        assert ours.learning_rate == pytest.approx(keras_config["learning_rate"]), name
        for option in ("epsilon", "beta_1", "beta_2", "rho", "momentum", "initial_accumulator_value",
                       "weight_decay"):
            if option in keras_config:
                assert getattr(ours, option) == pytest.approx(keras_config[option]), (name, option)
    assert type(fk.optimizers.get("adam")) is fk.optimizers.Adam
    model = fk.Sequential([fk.layers.Dense(1)])
    model.compile(loss="mse")
    assert type(model.optimizer) is fk.optimizers.RMSprop   # compile's default, as in Keras


# -- losses and metrics ------------------------------------------------------------------------------------

def _loss_case(name, rng):
    logits = rng.standard_normal((6, 4)).astype("float32")
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if name in ("mse", "mae"):
        return rng.standard_normal((6, 4)).astype("float32"), logits
    if name == "binary":
        y_pred = 1 / (1 + np.exp(-logits))
        y_pred[0, :2] = [0.0, 1.0]   # clipped entries
        return (rng.random((6, 4)) > 0.5).astype("float32"), y_pred.astype("float32")
    if name == "binary_logits":
        return (rng.random((6, 4)) > 0.5).astype("float32"), logits
    if name in ("categorical", "categorical_smoothing"):
        return np.eye(4, dtype="float32")[rng.integers(0, 4, 6)], (probabilities * 1.3).astype("float32")
    if name == "categorical_logits":
        return np.eye(4, dtype="float32")[rng.integers(0, 4, 6)], logits
    if name == "sparse":
        return rng.integers(0, 4, (6, 1)), probabilities.astype("float32")
    return rng.integers(0, 4, 6), logits


LOSSES = {
    "mse": lambda lib: lib.losses.MeanSquaredError(),
    "mae": lambda lib: lib.losses.MeanAbsoluteError(),
    "binary": lambda lib: lib.losses.BinaryCrossentropy(),
    "binary_logits": lambda lib: lib.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
    "categorical": lambda lib: lib.losses.CategoricalCrossentropy(),
    "categorical_smoothing": lambda lib: lib.losses.CategoricalCrossentropy(label_smoothing=0.2),
    "categorical_logits": lambda lib: lib.losses.CategoricalCrossentropy(from_logits=True),
    "sparse": lambda lib: lib.losses.SparseCategoricalCrossentropy(),
    "sparse_logits": lambda lib: lib.losses.SparseCategoricalCrossentropy(from_logits=True),
}


@pytest.mark.parametrize("name", LOSSES)
def test_losses_and_their_gradients_match_keras(name, rng):
    y_true, y_pred = _loss_case(name, rng)
    y_pred_torch = torch.tensor(y_pred, requires_grad=True)
    expected = LOSSES[name](keras)(torch.tensor(y_true), y_pred_torch)
    (expected_grad,) = torch.autograd.grad(expected, [y_pred_torch])
    value, grad = LOSSES[name](fk).value_and_grad(y_true, y_pred)
    np.testing.assert_allclose(value, numpy(expected), **LOG_TOL)
    np.testing.assert_allclose(grad, numpy(expected_grad), **LOSS_GRAD_TOL)


def test_loss_names_and_rank_matching(rng):
    y_true = rng.standard_normal(5).astype("float32")   # (B,) targets against (B, 1) predictions
    y_pred = rng.standard_normal((5, 1)).astype("float32")
    for name in ("mse", "mae", "mean_squared_error", "mean_absolute_error"):
        expected = numpy(keras.losses.get(name)(y_true, y_pred)).mean()
        np.testing.assert_allclose(fk.losses.get(name)(y_true, y_pred), expected, **LOG_TOL)
    with pytest.raises(ValueError, match="custom losses"):
        fk.losses.get(lambda t, p: 0)


@pytest.mark.parametrize("y_kind, classes", [("binary", 1), ("sparse", 3), ("sparse_column", 3), ("one_hot", 3)])
def test_accuracy_kind_is_chosen_as_keras_chooses(y_kind, classes, rng):
    y_pred = rng.random((20, classes)).astype("float32")
    labels = rng.integers(0, classes if classes > 1 else 2, 20)
    y_true = {"binary": labels[:, None].astype("float32"), "sparse": labels, "sparse_column": labels[:, None],
              "one_hot": np.eye(3)[labels]}[y_kind]
    from keras.src.trainers.compile_utils import get_metric
    expected = get_metric("accuracy", y_true, y_pred)
    ours = fk.metrics.get("accuracy", y_true, y_pred)
    assert type(ours).__name__ == type(expected).__name__ and ours.name == "accuracy"
    expected.update_state(y_true, y_pred)
    ours.update_state(y_true, y_pred)
    np.testing.assert_allclose(ours.result(), numpy(expected.result()), **LOG_TOL)


def test_history_keys_and_evaluate_results_as_keras(rng):
    build = lambda lib: lib.Sequential([lib.Input((4, 2)), lib.layers.LSTM(3),  # noqa: E731
                                        lib.layers.Dense(1, activation="sigmoid")])
    keras_model, ours = twin_models(build)
    x = rng.standard_normal((20, 4, 2)).astype("float32")
    y = (rng.random(20) > 0.5).astype("float32")
    metrics = ["acc", "mae", "mean_squared_error"]
    keras_history, our_history = fit_both(keras_model, ours, x, y, ("SGD", {}), "binary_crossentropy", metrics,
                                          epochs=2, validation_data=(x[:6], y[:6]))
    assert_same_history(keras_history, our_history)
    keras_result = keras_model.evaluate(x, y, verbose=0)
    our_result = ours.evaluate(x, y, verbose=0)
    assert len(our_result) == len(keras_result) == 4
    np.testing.assert_allclose(our_result, keras_result, **LOG_TOL)
    keras_dict = keras_model.evaluate(x, y, verbose=0, return_dict=True)
    our_dict = ours.evaluate(x, y, verbose=0, return_dict=True)
    assert list(our_dict) == list(keras_dict)
    assert our_history.params == {"verbose": 0, "epochs": 2, "steps": 3}


# -- callbacks -------------------------------------------------------------------------------------------

def _callback_models(rng):
    build = lambda lib: lib.Sequential([lib.Input((4, 2)), lib.layers.GRU(3), lib.layers.Dense(1)])  # noqa: E731
    keras_model, ours = twin_models(build)
    x = rng.standard_normal((16, 4, 2)).astype("float32")
    y = rng.standard_normal((16, 1)).astype("float32")
    return keras_model, ours, x, y


@pytest.mark.parametrize("make_callbacks, effect", [
    (lambda lib: [lib.callbacks.EarlyStopping(monitor="loss", min_delta=0.05, patience=1)],
     lambda history: len(history.epoch) == 4),
    (lambda lib: [lib.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)],
     lambda history: len(history.epoch) == 3),
    (lambda lib: [lib.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)],
     lambda history: history.history["learning_rate"][-1] < 0.01),
    (lambda lib: [lib.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0)],
     lambda history: history.history["learning_rate"][-1] < 0.3),
], ids=["early_stopping", "restore_best", "scheduler", "reduce_on_plateau"])
def test_callbacks_act_as_keras_callbacks(make_callbacks, effect):
    # Fixed data on which each callback acts (stops early, restores, changes the rate).
    keras_model, ours, x, y = _callback_models(np.random.default_rng(0))
    for model, lib in ((keras_model, keras), (ours, fk)):
        model.compile(optimizer=lib.optimizers.SGD(0.3), loss="mse")
    options = dict(batch_size=8, epochs=6, shuffle=False, verbose=0, validation_data=(x[::-1], y))
    keras_history = keras_model.fit(x, y, callbacks=make_callbacks(keras), **options)
    our_history = ours.fit(x, y, callbacks=make_callbacks(fk), **options)
    assert effect(keras_history)
    assert_same_history(keras_history, our_history)
    assert_same_weights(keras_model, ours)


def test_terminate_on_nan_stops_training(rng, capsys):
    model = fk.Sequential([fk.Input((3, 2)), fk.layers.SimpleRNN(4, activation="relu"), fk.layers.Dense(1)])
    model.compile(optimizer=fk.optimizers.SGD(1e6), loss="mse")
    x = rng.standard_normal((64, 3, 2)).astype("float32") * 10
    history = model.fit(x, np.full((64, 1), 1e3, "float32"), epochs=5, batch_size=4, verbose=0,
                        callbacks=[fk.callbacks.TerminateOnNaN()])
    assert len(history.epoch) == 1 and not np.isfinite(history.history["loss"][0])
    assert "Invalid loss" in capsys.readouterr().out


def test_model_checkpoint_and_weights_files(rng, tmp_path):
    keras_model, ours, x, y = _callback_models(rng)
    ours.compile(optimizer="adam", loss="mse")
    best = tmp_path / "best.weights.npz"
    every = str(tmp_path / "epoch-{epoch:02d}-{loss:.3f}.npz")
    ours.fit(x, y, epochs=3, verbose=0, validation_split=0.25,
             callbacks=[fk.callbacks.ModelCheckpoint(str(best), save_best_only=True),
                        fk.callbacks.ModelCheckpoint(every, monitor="loss")])
    assert best.exists() and len(list(tmp_path.glob("epoch-0*.npz"))) == 3
    with np.load(best, allow_pickle=False) as archive:
        assert len(archive.files) == len(ours.get_weights())
    fresh = fk.Sequential([fk.Input((4, 2)), fk.layers.GRU(3), fk.layers.Dense(1)])
    path = tmp_path / "model.keras-style-name"
    ours.save_weights(path)
    fresh.load_weights(path)
    for got, want in zip(fresh.get_weights(), ours.get_weights()):
        np.testing.assert_array_equal(got, want)
    wrong = fk.Sequential([fk.Input((4, 2)), fk.layers.GRU(5), fk.layers.Dense(1)])
    with pytest.raises(ValueError, match="shape"):
        wrong.load_weights(path)


def _interop_model(lib):
    return lib.Sequential([lib.Input((6,), dtype="int32"), lib.layers.Embedding(20, 4, mask_zero=True),
                           lib.layers.LSTM(5, return_sequences=True), lib.layers.Dropout(0.1),
                           lib.layers.Bidirectional(lib.layers.GRU(3, return_sequences=True, reset_after=False)),
                           lib.layers.SimpleRNN(2, return_sequences=True),
                           lib.layers.TimeDistributed(lib.layers.Dense(1))])


def test_keras_weights_files_load_both_ways(rng, tmp_path):
    pytest.importorskip("h5py")
    keras_model, ours = _interop_model(keras), _interop_model(fk)
    tokens = rng.integers(0, 20, (8, 6))
    keras_model.compile(optimizer="adam", loss="mse")
    keras_model.fit(tokens, np.zeros((8, 6, 1)), verbose=0)   # the file then holds optimizer state too
    keras_model.save_weights(tmp_path / "keras.weights.h5")
    ours.load_weights(tmp_path / "keras.weights.h5")
    np.testing.assert_allclose(ours.predict(tokens, verbose=0), keras_model.predict(tokens, verbose=0), **LOG_TOL)
    ours.set_weights([w * 0.5 for w in ours.get_weights()])
    ours.save_weights(tmp_path / "ours.weights.h5")
    keras_again = _interop_model(keras)
    keras_again.load_weights(tmp_path / "ours.weights.h5")
    for got, want in zip(keras_again.get_weights(), ours.get_weights()):
        np.testing.assert_array_equal(got, want)


def _nested_model(lib):
    inner_input = lib.Input((6, 5))
    functional = lib.Model(inner_input, lib.layers.GRU(4, return_sequences=True)(inner_input))
    return lib.Sequential([lib.Input((6, 3)), lib.Sequential([lib.layers.LSTM(5, return_sequences=True), functional]),
                           lib.layers.Dense(1)])


def test_nested_models_match_keras_and_share_weights_files(rng, tmp_path):
    pytest.importorskip("h5py")
    keras_model, ours = twin_models(_nested_model)
    x = rng.standard_normal((8, 6, 3)).astype("float32")
    np.testing.assert_allclose(ours.predict(x, verbose=0), keras_model.predict(x, verbose=0), **LOG_TOL)
    keras_model.save_weights(tmp_path / "keras.weights.h5")
    fresh = _nested_model(fk)
    fresh.load_weights(tmp_path / "keras.weights.h5")
    for got, want in zip(fresh.get_weights(), keras_model.get_weights()):
        np.testing.assert_array_equal(got, want)
    ours.set_weights([w * 0.5 for w in ours.get_weights()])
    ours.save_weights(tmp_path / "ours.weights.h5")
    keras_again = _nested_model(keras)
    keras_again.load_weights(tmp_path / "ours.weights.h5")
    for got, want in zip(keras_again.get_weights(), ours.get_weights()):
        np.testing.assert_array_equal(got, want)
    ours.set_weights(keras_model.get_weights())
    y = rng.standard_normal((8, 6, 1)).astype("float32")
    assert_same_history(*fit_both(keras_model, ours, x, y, ("SGD", dict(learning_rate=0.1)), "mse"))
    assert_same_weights(keras_model, ours)


def test_legacy_keras2_h5_weights_load(rng, tmp_path):
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format
    keras_model, ours = _interop_model(keras), _interop_model(fk)
    with h5py.File(tmp_path / "legacy.h5", "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, keras_model)
    ours.load_weights(tmp_path / "legacy.h5")
    for got, want in zip(ours.get_weights(), keras_model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_custom_callback_hooks_and_stop_training(rng):
    calls = []

    class Recorder(fk.callbacks.Callback):
        def on_train_begin(self, logs=None):
            calls.append("train_begin")

        def on_epoch_end(self, epoch, logs=None):
            calls.append(("epoch", epoch, sorted(logs)))
            if epoch == 1:
                self.model.stop_training = True

        def on_batch_end(self, batch, logs=None):
            calls.append(("batch", batch))

    _, ours, x, y = _callback_models(rng)
    ours.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    history = ours.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[Recorder()],
                       validation_split=0.5, initial_epoch=0)
    assert calls[0] == "train_begin" and history.epoch == [0, 1]
    assert ("epoch", 1, ["loss", "mae", "val_loss", "val_mae"]) in calls and ("batch", 0) in calls


# -- models ---------------------------------------------------------------------------------------------

def test_functional_model_sequential_and_input_shape_styles_agree(rng):
    x = rng.standard_normal((7, 5, 3)).astype("float32")
    inputs = fk.Input(shape=(5, 3))
    outputs = fk.layers.Dense(2)(fk.layers.LSTM(4, return_sequences=True)(inputs))
    functional = fk.Model(inputs, outputs)
    keras_inputs = keras.Input(shape=(5, 3))
    keras_outputs = keras.layers.Dense(2)(keras.layers.LSTM(4, return_sequences=True)(keras_inputs))
    keras_model = keras.Model(keras_inputs, keras_outputs)
    functional.set_weights(keras_model.get_weights())
    old_style = fk.Sequential()
    old_style.add(fk.layers.LSTM(4, return_sequences=True, input_shape=(5, 3)))
    old_style.add(fk.layers.Dense(2))
    assert old_style.built   # the input shape builds it at once, as Keras does
    old_style.set_weights(keras_model.get_weights())
    lazy = fk.Sequential([fk.layers.LSTM(4, return_sequences=True), fk.layers.Dense(2)])
    assert not lazy.built
    lazy(x)
    lazy.set_weights(keras_model.get_weights())
    expected = keras_model.predict(x, verbose=0)
    for model in (functional, old_style, lazy):
        np.testing.assert_allclose(model.predict(x, batch_size=3, verbose=0), expected, **LOG_TOL)
        np.testing.assert_allclose(model(x), expected, **LOG_TOL)
    assert functional.output_shape == (None, 5, 2) and old_style.input_shape == (None, 5, 3)
    with pytest.raises(NotImplementedError, match="state"):
        _, state = fk.layers.GRU(2, return_state=True)(fk.Input((3, 1)))
        fk.Model(inputs, state)


def test_stateful_model_predicts_across_batches_as_keras(rng):
    def build(lib):
        return lib.Sequential([lib.Input(batch_shape=(4, 3, 2)), lib.layers.LSTM(5, stateful=True),
                               lib.layers.Dense(1)])

    keras_model, ours = twin_models(build)
    x = rng.standard_normal((12, 3, 2)).astype("float32")
    np.testing.assert_allclose(ours.predict(x, batch_size=4, verbose=0),
                               keras_model.predict(x, batch_size=4, verbose=0), **LOG_TOL)
    keras_model.layers[0].reset_states()   # Keras 3 models have no reset_states; ours has Keras 2's too
    ours.reset_states()
    np.testing.assert_allclose(ours.predict(x[:4], batch_size=4, verbose=0),
                               keras_model.predict(x[:4], batch_size=4, verbose=0), **LOG_TOL)


def test_summary_and_parameter_counts(rng, capsys):
    def build(lib):
        return lib.Sequential([lib.Input((6,), dtype="int32"), lib.layers.Embedding(20, 8, mask_zero=True),
                               lib.layers.Bidirectional(lib.layers.GRU(5, return_sequences=True)),
                               lib.layers.SimpleRNN(4), lib.layers.Dropout(0.2), lib.layers.Dense(3)])

    keras_model, ours = twin_models(build)
    assert ours.count_params() == keras_model.count_params()
    assert [layer.count_params() for layer in ours.layers] == [layer.count_params() for layer in keras_model.layers]
    ours.summary()
    text = capsys.readouterr().out
    assert "(None, 6, 10)" in text and f"Total params: {keras_model.count_params():,}" in text
    assert "Bidirectional" in text and "Embedding" in text


def test_verbose_progress_output(rng, capsys):
    _, ours, x, y = _callback_models(rng)
    ours.compile(optimizer="adam", loss="mse", metrics=["mae"])
    ours.fit(x, y, epochs=2, batch_size=4, validation_split=0.25)
    text = capsys.readouterr().out
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "3/3 [" in text and "val_loss:" in text
    ours.fit(x, y, epochs=1, verbose=2)
    assert "s/step - loss:" in capsys.readouterr().out
    ours.evaluate(x, y)
    assert "mae:" in capsys.readouterr().out


def test_compile_and_fit_errors(rng):
    model = fk.Sequential([fk.Input((3, 2)), fk.layers.LSTM(2)])
    x = rng.standard_normal((4, 3, 2)).astype("float32")
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, np.zeros((4, 2)))
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="samples"):
        model.fit(x, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="optimizer"):
        model.compile(optimizer="lbfgs", loss="mse")
    with pytest.raises(NotImplementedError, match="several outputs"):
        fk.Sequential([fk.Input((3, 2)), fk.layers.LSTM(2, return_state=True)])


# -- utilities -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    {}, dict(maxlen=3), dict(maxlen=6, padding="post"), dict(maxlen=2, truncating="post"),
    dict(maxlen=4, padding="post", truncating="post", value=-1), dict(dtype="float32", value=0.5),
])
def test_pad_sequences_matches_keras(options):
    sequences = [[1, 2, 3, 4], [5], [], [6, 7]]
    expected = keras.utils.pad_sequences(sequences, **options)
    got = fk.utils.pad_sequences(sequences, **options)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_pad_sequences_of_vectors():
    sequences = [np.ones((2, 3)), np.full((4, 3), 2.0)]
    np.testing.assert_array_equal(fk.utils.pad_sequences(sequences, dtype="float32"),
                                  keras.utils.pad_sequences(sequences, dtype="float32"))


@pytest.mark.parametrize("labels, classes", [([0, 2, 1, 2], None), ([[1], [0], [3]], 5), ([[0, 1], [2, 2]], None)])
def test_to_categorical_matches_keras(labels, classes):
    expected = keras.utils.to_categorical(labels, classes)
    got = fk.utils.to_categorical(labels, classes)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_set_random_seed_makes_weights_and_shuffling_reproducible(rng):
    x = rng.standard_normal((10, 3, 2)).astype("float32")
    y = rng.standard_normal((10, 1)).astype("float32")
    results = []
    for _ in range(2):
        fk.utils.set_random_seed(7)
        model = fk.Sequential([fk.Input((3, 2)), fk.layers.GRU(3, dropout=0.3), fk.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        results.append(model.fit(x, y, epochs=2, batch_size=4, verbose=0).history["loss"])
    assert results[0] == results[1]

"""fusedrnn.keras3 against Keras 3's own layers, on the backend KERAS_BACKEND names.

Keras fixes its backend per process, so tests/test_keras3.py runs this module once per backend
(torch, JAX) in a subprocess; it is not collected on its own (its name has no test_ prefix).

The oracle is Keras itself: the same model built from Keras's classes and from ours (or Keras's
after enable()), the same weights and inputs; the outputs, and the weights after a training step
(train_on_batch: Keras's own gradient path, jitted on JAX), must agree. Tolerances: float32, one
layer of at most 9 steps; the fused kernels sum the products in another order than Keras's per-step
matmuls, so outputs differ by a few ulps (observed < 3e-7) and the weights after an SGD step of
rate 0.5 by a few ulps of the gradients (observed < 1e-6): 1e-5 leaves room without hiding a
wrong gate, mask or direction (those change outputs by 1e-2 or more).
"""

import json
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")
BACKEND = keras.backend.backend()
if BACKEND not in ("torch", "jax"):
    pytest.skip(f"fusedrnn.keras3 runs on the torch and JAX backends, not {BACKEND}", allow_module_level=True)

import fusedrnn.keras3 as fk  # noqa: E402
from fusedrnn.keras3 import _dispatch  # noqa: E402
from fusedrnn.keras3 import layers as fl  # noqa: E402

T, B, I, UNITS = 9, 5, 4, 6
ATOL = RTOL = 1e-5

STOCK = {"SimpleRNN": keras.layers.SimpleRNN, "LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU}
FUSED = {"SimpleRNN": fl.SimpleRNN, "LSTM": fl.LSTM, "GRU": fl.GRU}
# The generic RNN layer of one of those cells: "RNN(LSTMCell)" and so on.
_LAYER_OPTIONS = {"return_sequences", "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask"}


def _generic(rnn_class, cell_class):
    def layer(units, **options):
        cell = cell_class(units, **{k: v for k, v in options.items() if k not in _LAYER_OPTIONS})
        return rnn_class(cell, **{k: v for k, v in options.items() if k in _LAYER_OPTIONS})
    return layer


for _cell in ("SimpleRNNCell", "LSTMCell", "GRUCell"):
    STOCK[f"RNN({_cell})"] = _generic(keras.layers.RNN, getattr(keras.layers, _cell))
    FUSED[f"RNN({_cell})"] = _generic(fl.RNN, getattr(keras.layers, _cell))


def stack_of_cells(units):
    """Three cells of three kinds and widths: RNN of them runs as three layers in the kernels."""
    return [keras.layers.LSTMCell(units), keras.layers.GRUCell(units - 1, reset_after=False),
            keras.layers.SimpleRNNCell(units + 1)]


STOCK["RNN(stack)"] = lambda units, **options: keras.layers.RNN(stack_of_cells(units), **options)
FUSED["RNN(stack)"] = lambda units, **options: fl.RNN(stack_of_cells(units), **options)


@pytest.fixture(autouse=True)
def stock_keras():
    """Every test starts and ends with Keras's own layers (enable() off)."""
    fk.disable()
    yield
    fk.disable()


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls that reached the kernels' adapter."""
    calls = []
    adapter = _dispatch._adapter()
    original = adapter.recurrent
    monkeypatch.setattr(adapter, "recurrent", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    return calls


def numpy(value):
    return keras.ops.convert_to_numpy(value)


def masked_inputs(rng, pattern):
    """Inputs whose all-zero steps Masking hides: none, right padding, or any pattern (holes at
    the start, in the middle, one sequence with no step at all)."""
    x = rng.standard_normal((B, T, I)).astype("float32")
    if pattern == "right":
        lengths = np.array([T, 1, 4, T - 2, 6])
        x[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    elif pattern == "any":
        hidden = rng.random((B, T)) < 0.35
        hidden[2] = True
        x[hidden] = 0.0
    return x


def model_of(wrap, layer, pattern):
    inputs = keras.Input((T, I))
    h = keras.layers.Masking(0.0)(inputs) if pattern else inputs
    outputs = wrap(layer)(h) if wrap else layer(h)
    return keras.Model(inputs, outputs)


def stock_and_fused(kind, pattern=None, bidirectional=False, **kwargs):
    """The same model from Keras's classes and from ours, with the same weights."""
    wrap = keras.layers.Bidirectional if bidirectional else None
    stock = model_of(wrap, STOCK[kind](UNITS, **kwargs), pattern)
    fused = model_of(fl.Bidirectional if bidirectional else None, FUSED[kind](UNITS, **kwargs), pattern)
    fused.set_weights(stock.get_weights())
    return stock, fused


def as_list(outputs):
    """A model's outputs, flat (a stack of cells returns a list of states per LSTM cell)."""
    return keras.tree.flatten(outputs)


def assert_same_outputs(stock, fused, x):
    """Both models' outputs on x agree; returns them (Keras's)."""
    expected, got = as_list(stock(x)), as_list(fused(x))
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert tuple(g.shape) == tuple(e.shape)
        np.testing.assert_allclose(numpy(g), numpy(e), rtol=RTOL, atol=ATOL)
    return expected


def random_targets(rng, outputs):
    """A float32 target of each output's shape."""
    return [rng.standard_normal(tuple(o.shape)).astype("float32") for o in outputs]


def sgd_step(model, x, targets, rate):
    """One SGD step (Keras's train_on_batch: jitted on JAX), mean squared error to each target."""
    model.compile(optimizer=keras.optimizers.SGD(rate), loss=["mse"] * len(targets))
    model.train_on_batch(x, targets if len(targets) > 1 else targets[0])


def assert_same_training_step(stock, fused, x, outputs, rng):
    """One SGD step on random targets for `outputs` leaves both models with the same weights."""
    targets = random_targets(rng, outputs)
    before = stock.get_weights()
    for model in (stock, fused):
        sgd_step(model, x, targets, 0.5)
    for e, g in zip(stock.get_weights(), fused.get_weights()):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
    assert not all(np.array_equal(a, b) for a, b in zip(before, stock.get_weights())), "the step changed nothing"


CASES = {
    "rnn-tanh-any-mask-sequences": dict(kind="SimpleRNN", pattern="any", return_sequences=True),
    "rnn-relu-backwards-state": dict(kind="SimpleRNN", activation="relu", go_backwards=True, return_state=True),
    "lstm-any-mask-backwards-sequences-state": dict(kind="LSTM", pattern="any", go_backwards=True,
                                                    return_sequences=True, return_state=True),
    "lstm-right-padding-no-bias": dict(kind="LSTM", pattern="right", use_bias=False),
    "gru-reset-after-any-mask-zero-output": dict(kind="GRU", pattern="any", return_sequences=True,
                                                 zero_output_for_mask=True),
    "gru-reset-before-any-mask-backwards-state": dict(kind="GRU", pattern="any", reset_after=False,
                                                      go_backwards=True, return_state=True),
    "bidirectional-lstm-any-mask-sequences": dict(kind="LSTM", pattern="any", bidirectional=True,
                                                  return_sequences=True),
    "bidirectional-gru-reset-before-state": dict(kind="GRU", bidirectional=True, reset_after=False,
                                                 return_state=True),
    "generic-rnn-of-lstm-cell-any-mask-backwards-sequences-state": dict(
        kind="RNN(LSTMCell)", pattern="any", go_backwards=True, return_sequences=True, return_state=True),
    "generic-rnn-of-gru-cell-reset-before-right-padding": dict(kind="RNN(GRUCell)", pattern="right",
                                                               reset_after=False),
    "bidirectional-generic-rnn-of-relu-cell-sequences": dict(kind="RNN(SimpleRNNCell)", bidirectional=True,
                                                             activation="relu", return_sequences=True),
    "stacked-cells-any-mask-backwards-sequences-state": dict(kind="RNN(stack)", pattern="any", go_backwards=True,
                                                             return_sequences=True, return_state=True),
    "bidirectional-stacked-cells-right-padding-zero-output": dict(kind="RNN(stack)", pattern="right",
                                                                  bidirectional=True, return_sequences=True,
                                                                  zero_output_for_mask=True),
}


@pytest.mark.parametrize("case", CASES)
def test_same_outputs_and_training_step_as_keras(case, rng, kernel_calls):
    options = dict(CASES[case])
    stock, fused = stock_and_fused(**options)
    x = masked_inputs(rng, options.get("pattern"))
    outputs = assert_same_outputs(stock, fused, x)
    assert kernel_calls, "the fused model did not reach the kernels"
    assert_same_training_step(stock, fused, x, outputs, rng)


@pytest.mark.skipif(BACKEND != "torch", reason="float64 on JAX needs jax_enable_x64 set at start-up")
def test_float64_runs_in_the_kernels(rng, kernel_calls):
    # No mask: Keras's own masked loop on the torch backend errs by about 5e-8 in float64 (it
    # rounds to float32 somewhere), while the kernels match the float64 reference to 1e-16.
    stock, fused = stock_and_fused("GRU", return_sequences=True, dtype="float64")
    x = masked_inputs(rng, None)
    expected, got = numpy(stock(x)), numpy(fused(x))
    assert kernel_calls == ["gru"] and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


MIXED_CASES = {
    "lstm-any-mask-backwards-sequences-state": dict(kind="LSTM", pattern="any", go_backwards=True,
                                                    return_sequences=True, return_state=True),
    "gru-reset-before-right-padding-sequences": dict(kind="GRU", pattern="right", reset_after=False,
                                                     return_sequences=True),
    "gru-reset-after-state": dict(kind="GRU", return_state=True),
    "rnn-relu-sequences": dict(kind="SimpleRNN", activation="relu", return_sequences=True),
    "stacked-cells-any-mask-sequences-state": dict(kind="RNN(stack)", pattern="any", return_sequences=True,
                                                   return_state=True),
}
# One unit in the last place at 1 (the spacing of the values between 1 and 2).
NARROW_EPS = {"bfloat16": 2.0 ** -7, "float16": 2.0 ** -10}


def weight_deltas(model, x, targets):
    """What one SGD step of rate 1 moves each weight by: minus its gradient, as the model
    computes it."""
    before = model.get_weights()
    sgd_step(model, x, targets, 1.0)
    return [after - w for after, w in zip(model.get_weights(), before)]


@pytest.mark.parametrize("case, policy", [(case, policy) for case in MIXED_CASES
                                          for policy in ("mixed_bfloat16", "mixed_float16", "bfloat16")
                                          # (a stack's cells take no options: orthogonal init)
                                          if not (policy == "bfloat16" and case.startswith("stacked"))])
def test_mixed_precision_computes_in_float32_and_rounds_once(policy, case, rng, kernel_calls):
    """A mixed-precision layer (float32 variables, bfloat16/float16 computations) runs in the
    kernels in float32, from the inputs, states and weights as the compute dtype has them, and
    Keras rounds the results to that dtype. The oracle: Keras's float32 layer given the same
    rounded inputs and weights, its results rounded; the two differ by the float32 ulps of any
    float32 layer, which can move a result across a rounding boundary: one unit in the narrow
    dtype's last place (rtol = its eps). The gradients, which pass through the casts, are rounded
    to the narrow dtype once too: each weight's step agrees to 2 eps of the largest one. With
    narrow variables (the "bfloat16" policy) the step itself rounds to the weight's last place."""
    options = dict(MIXED_CASES[case])
    narrow = policy.removeprefix("mixed_")
    eps = NARROW_EPS[narrow]
    kind, pattern = options.pop("kind"), options.pop("pattern", None)
    if narrow == policy:   # (Keras's default orthogonal initializer has no bfloat16 QR)
        options["recurrent_initializer"] = "glorot_uniform"
    stock = model_of(None, STOCK[kind](UNITS, **options), pattern)
    fused = model_of(None, FUSED[kind](UNITS, dtype=policy, **options), pattern)

    def rounded(array):
        return numpy(keras.ops.cast(keras.ops.cast(array, narrow), "float32"))

    weights = [rounded(w) for w in stock.get_weights()]
    stock.set_weights(weights)
    fused.set_weights(weights)
    x = rounded(masked_inputs(rng, pattern))
    expected, got = as_list(stock(x)), as_list(fused(x))
    assert kernel_calls, "the narrow-dtype model did not reach the kernels"
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert keras.backend.standardize_dtype(g.dtype) == narrow and tuple(g.shape) == tuple(e.shape)
        np.testing.assert_allclose(numpy(keras.ops.cast(g, "float32")), rounded(e), rtol=eps, atol=1e-6)
    targets = random_targets(rng, expected)
    for want, step, w in zip(weight_deltas(stock, x, targets), weight_deltas(fused, x, targets), weights):
        assert keras.backend.standardize_dtype(step.dtype) == ("float32" if narrow != policy else narrow)
        bound = 2 * eps * np.abs(want).max() + (eps * np.abs(w) if narrow == policy else 0)
        assert np.all(np.abs(step.astype("float32") - want) <= bound), np.abs(step.astype("float32") - want).max()


@pytest.mark.parametrize("kind, options", [
    ("SimpleRNN", dict(dropout=0.3, recurrent_dropout=0.4)),   # both in the kernels
    ("LSTM", dict(dropout=0.3)),                                 # one input mask: in the kernels
])
def test_dropout_draws_keras_masks(kind, options, rng):
    """With the same seed both layers draw the same dropout masks, so a training step agrees."""
    stock, fused = stock_and_fused(kind, return_sequences=True, seed=7, **options)
    x = masked_inputs(rng, None)
    outputs = assert_same_outputs(stock, fused, x)   # inference: no dropout
    assert_same_training_step(stock, fused, x, outputs, rng)


def test_stacked_cells_take_and_give_each_cells_states(rng, kernel_calls):
    """A stack's states are a list with an entry per cell ([h, c] for an LSTM cell, h for the
    others when given as a tensor): initial_state in that form, and return_state gives it back."""
    layers = [layer_class(stack_of_cells(UNITS), return_state=True) for layer_class in (keras.layers.RNN, fl.RNN)]
    x = masked_inputs(rng, None)
    for layer in layers:
        layer(x)
    layers[1].set_weights(layers[0].get_weights())
    widths = [UNITS, UNITS - 1, UNITS + 1]   # (stack_of_cells's)
    given = [[rng.standard_normal((B, widths[0])).astype("float32") for _ in range(2)],
             rng.standard_normal((B, widths[1])).astype("float32"), [rng.standard_normal((B, widths[2])).astype("float32")]]
    kernel_calls.clear()
    expected, got = (layer(x, initial_state=given) for layer in layers)
    assert kernel_calls == ["lstm", "gru_reset_before", "rnn_tanh"]
    assert len(got) == len(expected) == 4
    for e, g in zip(expected, got):
        e, g = (list(v) if isinstance(v, (list, tuple)) else [v] for v in (e, g))
        assert len(g) == len(e)
        for ei, gi in zip(e, g):
            np.testing.assert_allclose(numpy(gi), numpy(ei), rtol=RTOL, atol=ATOL)


def test_dropout_in_a_stack_of_cells_draws_each_cells_keras_masks(rng, kernel_calls):
    """Each cell of a stack draws its own masks (the input's from its own input): with the same
    seeds both models draw the same ones, and a training step agrees."""
    def stack():
        return [keras.layers.GRUCell(UNITS, dropout=0.3, seed=7),
                keras.layers.SimpleRNNCell(UNITS + 1, dropout=0.2, recurrent_dropout=0.4, seed=8),
                keras.layers.LSTMCell(UNITS - 1, dropout=0.25, seed=9)]

    stock = model_of(None, keras.layers.RNN(stack(), return_sequences=True), "any")
    fused = model_of(None, fl.RNN(stack(), return_sequences=True), "any")
    fused.set_weights(stock.get_weights())
    x = masked_inputs(rng, "any")
    outputs = assert_same_outputs(stock, fused, x)   # inference: no dropout
    kernel_calls.clear()
    assert_same_training_step(stock, fused, x, outputs, rng)
    assert kernel_calls[:3] == ["gru", "rnn_tanh", "lstm"]   # (JAX may trace the step more than once)


def test_stateful_carries_state_across_batches(rng):
    batch_shape = (B, T, I)
    models = []
    for layer_class in (keras.layers.LSTM, fl.LSTM):
        inputs = keras.Input(batch_shape=batch_shape)
        models.append(keras.Model(inputs, layer_class(UNITS, stateful=True, return_sequences=True)(inputs)))
    models[1].set_weights(models[0].get_weights())
    x1, x2 = (rng.standard_normal(batch_shape).astype("float32") for _ in range(2))
    for x in (x1, x2):
        assert_same_outputs(*models, x)
    for model in models:
        model.layers[-1].reset_state()
    assert_same_outputs(*models, x2)
    second = numpy(models[1](x2))
    models[1].layers[-1].reset_state()
    assert not np.allclose(second, numpy(models[1](x2))), "the state was not carried"


def test_embedding_mask_zero_and_initial_state(rng, kernel_calls):
    """Embedding(mask_zero=True) masks (left and right padding), and a given initial state."""
    tokens = rng.integers(1, 20, size=(B, T))
    tokens[0, :3] = 0
    tokens[1, 5:] = 0
    h0, c0 = (rng.standard_normal((B, UNITS)).astype("float32") for _ in range(2))
    models = []
    for layer_class in (keras.layers.LSTM, fl.LSTM):
        ids, h, c = keras.Input((T,), dtype="int32"), keras.Input((UNITS,)), keras.Input((UNITS,))
        y = layer_class(UNITS, return_sequences=True)(keras.layers.Embedding(20, I, mask_zero=True)(ids),
                                                      initial_state=[h, c])
        models.append(keras.Model([ids, h, c], y))
    models[1].set_weights(models[0].get_weights())
    assert_same_outputs(*models, [tokens, h0, c0])
    assert kernel_calls


class OwnLSTMCell(keras.layers.LSTMCell):
    """A user's cell: the same math as far as anyone knows, but its code could be anything."""


@pytest.mark.parametrize("kind, options", [
    ("LSTM", dict(activation="relu")), ("GRU", dict(recurrent_activation="hard_sigmoid")),
    ("SimpleRNN", dict(unroll=True)),
    ("GRU", dict(recurrent_dropout=0.3)),   # fused at inference only (Keras draws a mask per gate)
    ("RNN(cells)", dict(cells=lambda: [keras.layers.LSTMCell(UNITS), OwnLSTMCell(UNITS)])),
    ("RNN(cells)", dict(cells=lambda: OwnLSTMCell(UNITS))),
    pytest.param("RNN(cells)", dict(cells=lambda: [keras.layers.LSTMCell(UNITS)]),   # a stack of one
                 marks=pytest.mark.skipif(BACKEND == "jax", reason="Keras's own loop fails on JAX there")),
    # Recurrent dropout of an LSTM cell in a stack (fused at inference only: a mask per gate).
    ("RNN(cells)", dict(cells=lambda: [keras.layers.GRUCell(UNITS), keras.layers.LSTMCell(UNITS, recurrent_dropout=0.3,
                                                                                        seed=5)])),
])
def test_what_the_kernels_do_not_serve_runs_keras_loop(kind, options, rng, kernel_calls):
    if kind == "RNN(cells)":
        make = options.pop("cells")
        stock = model_of(None, keras.layers.RNN(make(), return_sequences=True), None)
        fused = model_of(None, fl.RNN(make(), return_sequences=True), None)
        fused.set_weights(stock.get_weights())
    else:
        stock, fused = stock_and_fused(kind, return_sequences=True, seed=5, **options)
    x = masked_inputs(rng, None)
    got = fused(x, training=True)
    assert not kernel_calls
    expected = stock(x, training=True)   # the same seed: the same dropout masks
    np.testing.assert_allclose(numpy(got), numpy(expected), rtol=RTOL, atol=ATOL)
    assert_same_outputs(stock, fused, x)


def test_enable_switches_existing_and_new_layers(rng, kernel_calls):
    x = masked_inputs(rng, "any")
    model = model_of(None, keras.layers.GRU(UNITS, return_sequences=True), "any")
    before = numpy(model(x))
    assert not kernel_calls
    fk.enable()
    fk.enable()   # twice is once
    assert fk.is_enabled()
    np.testing.assert_allclose(numpy(model(x)), before, rtol=RTOL, atol=ATOL)
    assert kernel_calls == ["gru"]
    keras.layers.SimpleRNN(3)(x)
    generic = keras.layers.RNN(keras.layers.LSTMCell(3))
    generic(x)
    assert kernel_calls == ["gru", "rnn_tanh", "lstm"]
    fk.disable()
    assert not fk.is_enabled()
    model(x)
    generic(x)
    assert kernel_calls == ["gru", "rnn_tanh", "lstm"]
    fl.LSTM(3)(x)   # the subclasses run the kernels either way
    fl.RNN(keras.layers.GRUCell(3))(x)
    assert kernel_calls == ["gru", "rnn_tanh", "lstm", "lstm", "gru"]


def _config_json(path):
    with zipfile.ZipFile(path) as archive:
        return archive.read("config.json").decode()


def _without_object_ids(config):
    """A file's config without the ids Keras gives shared objects (memory addresses)."""
    if isinstance(config, dict):
        return {k: _without_object_ids(v) for k, v in config.items() if k != "shared_object_id"}
    if isinstance(config, list):
        return [_without_object_ids(v) for v in config]
    return config


def test_keras_files_round_trip_both_ways(tmp_path, rng):
    x = masked_inputs(rng, "any")
    fused = model_of(fl.Bidirectional, fl.GRU(UNITS, return_sequences=True, reset_after=False), "any")
    fused_file = tmp_path / "fused.keras"
    fused.save(fused_file)
    assert "fusedrnn" not in _config_json(fused_file)   # a plain Keras file
    plain = keras.models.load_model(fused_file)
    assert type(plain.layers[-1].forward_layer) is keras.layers.GRU
    np.testing.assert_allclose(numpy(plain(x)), numpy(fused(x)), rtol=RTOL, atol=ATOL)

    plain_file = tmp_path / "plain.keras"
    plain.save(plain_file)
    back = fl.convert(keras.models.load_model(plain_file))
    assert type(back.layers[-1]) is fl.Bidirectional
    assert type(back.layers[-1].backward_layer) is fl.GRU
    np.testing.assert_allclose(numpy(back(x)), numpy(fused(x)), rtol=RTOL, atol=ATOL)
    assert _without_object_ids(json.loads(_config_json(plain_file))) == \
        _without_object_ids(json.loads(_config_json(fused_file)))


def test_generic_rnn_saves_as_keras_and_converts_back(tmp_path, rng, kernel_calls):
    x = masked_inputs(rng, None)
    fused = model_of(None, fl.RNN(keras.layers.LSTMCell(UNITS), return_sequences=True), None)
    path = tmp_path / "generic.keras"
    fused.save(path)
    assert "fusedrnn" not in _config_json(path)
    plain = keras.models.load_model(path)
    assert type(plain.layers[-1]) is keras.layers.RNN
    back = fl.convert(keras.models.load_model(path))
    assert type(back.layers[-1]) is fl.RNN and type(back.layers[-1].cell) is keras.layers.LSTMCell
    kernel_calls.clear()
    np.testing.assert_allclose(numpy(back(x)), numpy(plain(x)), rtol=RTOL, atol=ATOL)
    assert kernel_calls == ["lstm"]


@pytest.mark.skipif(BACKEND != "torch", reason="Keras exports to ONNX through torch.onnx on the torch backend")
def test_onnx_export_writes_keras_loop(tmp_path, rng):
    """The kernels' operators have no ONNX form: an export runs Keras's own loop, and the file
    computes what the model does (run by ONNX's reference evaluator)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from onnx.reference import ReferenceEvaluator

    x = masked_inputs(rng, None)
    fk.enable()
    model = keras.Sequential([keras.Input((T, I)), keras.layers.GRU(UNITS), keras.layers.Dense(1)])
    expected = numpy(model(x))
    path = tmp_path / "model.onnx"
    model.export(str(path), format="onnx", verbose=False)
    evaluator = ReferenceEvaluator(onnx.load(str(path)))
    got = evaluator.run(None, {evaluator.input_names[0]: x})[0]
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def conv_lstm_dense(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((T * 2, I)), keras.layers.Conv1D(8, 3, activation="relu"),
                             keras.layers.LSTM(UNITS), keras.layers.Dense(1)])


def test_fit_evaluate_predict_match_keras(rng, kernel_calls):
    x = rng.standard_normal((64, T * 2, I)).astype("float32")
    y = x[:, :, 0].mean(axis=1, keepdims=True)
    results = []
    for fused in (False, True):
        if fused:
            fk.enable()
        model = conv_lstm_dense(seed=3)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history["loss"]
        results.append((history, model.evaluate(x, y, verbose=0), model.predict(x, verbose=0)))
    assert kernel_calls
    (h_stock, e_stock, p_stock), (h_fused, e_fused, p_fused) = results
    assert h_stock[-1] < h_stock[0]
    np.testing.assert_allclose(h_fused, h_stock, rtol=1e-4)   # 8 Adam steps compound the ulps
    np.testing.assert_allclose(e_fused, e_stock, rtol=1e-4)
    np.testing.assert_allclose(p_fused, p_stock, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX transformations")
def test_jax_grad_of_states_and_vmap(rng):
    import jax
    stock, fused = keras.layers.LSTM(UNITS, return_state=True), fl.LSTM(UNITS, return_state=True)
    x = masked_inputs(rng, None)
    stock(x), fused(x)
    fused.set_weights(stock.get_weights())
    h0, c0 = (rng.standard_normal((B, UNITS)).astype("float32") for _ in range(2))
    w = rng.standard_normal((3, B, UNITS)).astype("float32")

    def loss(layer):
        return lambda x, h0, c0: sum((o * wi).sum() for o, wi in zip(layer(x, initial_state=[h0, c0]), w))

    expected, got = (jax.grad(loss(layer), argnums=(0, 1, 2))(x, h0, c0) for layer in (stock, fused))
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)

    xs = np.stack([x, 2 * x])
    mapped = jax.vmap(lambda xi: fused(xi)[0])(xs)
    np.testing.assert_allclose(mapped, np.stack([numpy(stock(xi)[0]) for xi in xs]), rtol=RTOL, atol=ATOL)

    # Forward mode is not served (the kernels' gradient is a reverse-mode one): JAX's own error.
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda xi: fused(xi)[0], (x,), (np.ones_like(x),))


# -- the JAX adapter's host calls (keras3/_jax_backend.host_call): jax.pure_callback's results, with
# XLA's buffers handed to the callback as NumPy views instead of copies -----------------------------

jax_only = pytest.mark.skipif(BACKEND != "jax", reason="the JAX adapter's host calls")


def host_call(seen, x, w, b):
    """host_call of a host function of a pytree with None leaves (as the layers pass), which
    records the types it was given and returns two results."""
    import jax
    from fusedrnn.keras3 import _jax_backend

    def run(x, weights, scale):
        seen.append((type(x), type(weights["w"]), scale))
        return (np.tanh(x @ weights["w"]) + weights["b"]).astype(x.dtype), np.asarray(x.sum(0), x.dtype)

    shapes = (jax.ShapeDtypeStruct((x.shape[0], w.shape[1]), x.dtype), jax.ShapeDtypeStruct(x.shape[1:], x.dtype))
    return _jax_backend.host_call(run, shapes, x, {"w": w, "b": b, "unused": None}, None)


def host_expected(x, w, b):
    return np.tanh(x @ w) + b, x.sum(0)


@pytest.fixture
def host_arrays(rng):
    return (rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32),
            rng.standard_normal(4).astype(np.float32))


@jax_only
def test_under_jit_the_host_call_reads_xla_buffers_as_numpy_views(host_arrays):
    import jax
    seen = []
    results = jax.jit(lambda x, w, b: host_call(seen, x * 1, w, b))(*host_arrays)
    for got, want in zip(results, host_expected(*host_arrays)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # (pure_callback would pass jax.Arrays: copies of XLA's buffers, made by device_put.)
    assert seen == [(np.ndarray, np.ndarray, None)]


@jax_only
def test_without_emit_python_callback_the_host_call_is_pure_callback(host_arrays, monkeypatch):
    import jax
    from fusedrnn.keras3 import _jax_backend
    monkeypatch.setattr(_jax_backend, "_EMIT_DIRECTLY", False)
    seen = []
    results = jax.jit(lambda x, w, b: host_call(seen, x * 1, w, b))(*host_arrays)
    for got, want in zip(results, host_expected(*host_arrays)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert len(seen) == 1 and seen[0][0] is not np.ndarray


@jax_only
def test_host_call_eager_and_under_vmap(host_arrays):
    import jax
    x, w, b = host_arrays
    for got, want in zip(host_call([], x, w, b), host_expected(x, w, b)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    xs = np.stack([x, 2 * x, -x])
    for mapped in (jax.vmap(lambda xi: host_call([], xi, w, b)), jax.jit(jax.vmap(lambda xi: host_call([], xi, w, b)))):
        ys, sums = mapped(xs)
        for i, xi in enumerate(xs):
            want_y, want_sum = host_expected(xi, w, b)
            np.testing.assert_allclose(ys[i], want_y, rtol=1e-6)
            np.testing.assert_allclose(sums[i], want_sum, rtol=1e-6)


@jax_only
def test_host_call_over_several_devices_is_pure_callback():
    """Sharded over two CPU devices, the call is lowered as pure_callback lowers it (one call on
    the whole value), with the same results."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        from fusedrnn.keras3 import _jax_backend
        assert len(jax.devices()) == 2
        mesh = Mesh(np.array(jax.devices()), ("d",))
        value = np.arange(8, dtype=np.float32).reshape(4, 2)
        x = jax.device_put(value, NamedSharding(mesh, PartitionSpec("d")))
        seen = []
        double = lambda a: (seen.append(type(a)) or np.asarray(a) * 2,)
        shape = jax.ShapeDtypeStruct((4, 2), np.float32)
        f = jax.jit(lambda x: _jax_backend.host_call(double, (shape,), x * 1)[0])
        np.testing.assert_array_equal(np.asarray(f(x)), value * 2)
        assert len(seen) == 1 and seen[0] is not np.ndarray, seen
        print("ok")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


# -- the JAX adapter's saved gates and states, kept on the host by token (keras3/_jax_backend) ------

def _jax_layer_problem(rng, cell, masked=False):
    """A loss of one layer through the JAX adapter (random weights of the outputs) and its inputs;
    masked: with a (T, B) mask of any pattern."""
    import jax.numpy as jnp
    from fusedrnn import functional as F
    from fusedrnn.keras3 import _jax_backend
    G, cell_state = F.CELLS[cell].gates, F.CELLS[cell].has_cell_state
    weights = {"weight_ih": rng.standard_normal((G * UNITS, I)), "weight_hh": rng.standard_normal((G * UNITS, UNITS)),
               "bias_ih": rng.standard_normal(G * UNITS), "bias_hh": rng.standard_normal(G * UNITS)}
    weights = {k: (v / 3).astype(np.float32) for k, v in weights.items()}
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((B, UNITS)).astype(np.float32)
    c0 = rng.standard_normal((B, UNITS)).astype(np.float32) if cell_state else None
    dy = rng.standard_normal((T, B, UNITS)).astype(np.float32)
    mask = rng.random((T, B)) < 0.7 if masked else None

    def loss(x, h0, weights):
        y, h_n, c_n = _jax_backend.recurrent(cell, x, h0, c0, weights, mask=mask, masked_output="zero",
                                             recurrent_scale=None)
        return jnp.sum(y * dy) + jnp.sum(h_n * h_n)

    return loss, (x, h0, weights)


@pytest.fixture
def host_forwards(monkeypatch):
    """Counts the forwards the JAX adapter runs on the host, and empties its store around a test."""
    from fusedrnn.keras3 import _jax_backend
    calls = []
    original = _jax_backend._forward_on_host
    monkeypatch.setattr(_jax_backend, "_forward_on_host", lambda *a: calls.append(a[2]) or original(*a))
    saved = _jax_backend._SAVED
    monkeypatch.setattr(saved, "_entries", type(saved._entries)())
    yield calls, saved


@jax_only
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_backward_takes_the_forwards_saved_state_from_the_host(cell, rng, host_forwards):
    """A jitted gradient runs one training forward, whose gates and states its backward takes (no
    second forward), and leaves nothing behind; eager, the same."""
    import jax
    calls, saved = host_forwards
    loss, args = _jax_layer_problem(rng, cell)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    for _ in range(3):
        dx, dh0, dweights = grad(*args)
        assert calls == [True] and not saved._entries
        calls.clear()
    eager = jax.grad(loss, argnums=(0, 1, 2))(*args)  # (pure_callback's path)
    assert calls == [True] and not saved._entries
    for got, want in zip(jax.tree_util.tree_leaves((dx, dh0, dweights)), jax.tree_util.tree_leaves(eager)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@jax_only
@pytest.mark.parametrize("masked", [False, True])
def test_a_missing_saved_state_is_computed_again(rng, host_forwards, monkeypatch, masked):
    """With no room in the store (or after the first of two backwards of one forward took its
    entry) the backward runs the forward again on the same inputs: the same gradients, bit for bit."""
    import jax
    calls, saved = host_forwards
    loss, args = _jax_layer_problem(rng, "lstm", masked)
    expected = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
    calls.clear()

    with monkeypatch.context() as patch:
        patch.setattr(saved, "capacity", 0)
        got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*args)
    assert calls == [True, True] and not saved._entries

    calls.clear()
    value, vjp = jax.vjp(loss, *args)
    twice = vjp(np.float32(1.0)), vjp(np.float32(1.0))
    assert calls == [True, True]  # (the second backward found its entry taken)
    for result in (got,) + twice:
        for g, e in zip(jax.tree_util.tree_leaves(result), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


@jax_only
def test_forwards_whose_backward_never_runs_keep_at_most_capacity_entries(rng, host_forwards, monkeypatch):
    import jax
    calls, saved = host_forwards
    loss, args = _jax_layer_problem(rng, "gru")
    expected = jax.grad(loss, argnums=(0, 1, 2))(*args)
    monkeypatch.setattr(saved, "capacity", 2)
    calls.clear()
    pending = [jax.vjp(loss, *args)[1] for _ in range(5)]
    assert len(saved._entries) == 2 and len(calls) == 5
    for vjp, forwards in ((pending[-1], 5), (pending[0], 6)):  # the newest is there; the oldest, dropped
        for g, e in zip(jax.tree_util.tree_leaves(vjp(np.float32(1.0))), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
        assert len(calls) == forwards
    assert len(saved._entries) == 1


@jax_only
@pytest.mark.parametrize("x_differentiated", [True, False])
@pytest.mark.parametrize("reads_y", [True, False])
def test_backward_computes_only_what_is_differentiated(rng, monkeypatch, x_differentiated, reads_y):
    """Symbolic zeros: the kernels are asked for dx only when x is differentiated, and get no dy
    (None, not zeros) when nothing reads y; every gradient is bit for bit the one of the full
    backward, eager and jitted."""
    import jax
    import jax.numpy as jnp
    from fusedrnn import functional as F
    from fusedrnn.keras3 import _jax_backend
    loss_of_y, (x, h0, weights) = _jax_layer_problem(rng, "lstm")

    def loss(x, h0, weights):  # (h_n alone when y is not read)
        if reads_y:
            return loss_of_y(x, h0, weights)
        _, h_n, c_n = _jax_backend.recurrent("lstm", x, h0, None, weights, mask=None, masked_output="zero",
                                             recurrent_scale=None)
        return jnp.sum(h_n * h_n) + jnp.sum(c_n)

    full = jax.grad(loss, argnums=(0, 1, 2))(x, h0, weights)
    asked = []
    backward = F.recurrent_backward

    def recording(dy, dh_n, dc_n, saved, want_dx=True):
        asked.append((want_dx, dy is None))
        return backward(dy, dh_n, dc_n, saved, want_dx=want_dx)
    monkeypatch.setattr(F, "recurrent_backward", recording)
    argnums = (0, 1, 2) if x_differentiated else (1, 2)
    for grad in (jax.grad(loss, argnums=argnums), jax.jit(jax.grad(loss, argnums=argnums))):
        got = grad(x, h0, weights)
        expected = full if x_differentiated else full[1:]
        for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
    assert asked == [(x_differentiated, not reads_y)] * 2

"""fusedrnn.nn's recurrent layers on the CUDA backend (device="cuda", .to("cuda")) against the same
layers on the CPU: outputs and every gradient, each option, the device copies of the weights (uploaded
once, again after every kind of change), moving layers, and the errors.

Small sizes: without a GPU these run in a CUDA emulator. Expected values are the CPU layer's in
float64 on the same weights and inputs, at the one tolerance table (as tests/test_cuda.py). Tests
that need a device take the `device` fixture, which skips without one; the others run everywhere.
"""

import copy
import pickle

import numpy as np
import pytest

import fusedrnn.cuda as cuda
import fusedrnn.nn as nn
import fusedrnn.optim as optim
from fusedrnn.nn.utils.rnn import PackedSequence, pack_padded_sequence
from tolerances import INPUT_GRAD, OUTPUT, STATE, WEIGHT_GRAD, assert_close

T, B, I, H = 4, 3, 5, 6
LAYERS = {"rnn_tanh": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@pytest.fixture
def device():
    # (Asked when a test runs, not at collection: the backend is loaded only if needed.)
    if not cuda.is_available():
        pytest.skip("no CUDA backend in this build, or no device (GPU or emulator)")
    return "cuda"


def pair(cell, dtype, **options):
    """(cuda layer in dtype, cpu layer in float64) with the same weights."""
    layer = LAYERS[cell](I, H, dtype=dtype, device="cuda", rng=1, **options)
    reference = LAYERS[cell](I, H, dtype=np.float64, rng=1, **options)
    reference.load_state_dict(layer.state_dict())
    return layer, reference


def host(value):
    if isinstance(value, PackedSequence):
        return value._replace(data=host(value.data))
    if isinstance(value, tuple):
        return tuple(host(v) for v in value)
    return None if value is None else cuda.to_host(value)


def as_kind(value, on_device):
    if value is None or not on_device:
        return value
    if isinstance(value, PackedSequence):
        return value._replace(data=cuda.to_device(value.data))
    if isinstance(value, tuple):
        return tuple(as_kind(v, on_device) for v in value)
    return cuda.to_device(value)


def f64(value):
    if isinstance(value, PackedSequence):
        return value._replace(data=f64(value.data))
    if isinstance(value, tuple):
        return tuple(f64(v) for v in value)
    return None if value is None else np.asarray(value, np.float64)


def assert_kind(value, on_device):
    data = value.data if isinstance(value, PackedSequence) else value
    assert cuda.is_device_array(data) == on_device and (on_device or isinstance(data, np.ndarray))


def check_layer(layer, reference, x, hx, dtype, on_device, rng):
    """Forward and backward of both layers; compares outputs, states, dx, dhx and every .grad."""
    y, state = layer(as_kind(x, on_device), as_kind(hx, on_device))
    y0, state0 = reference(f64(x), f64(hx))
    assert_kind(y, on_device)
    for value in (state if isinstance(state, tuple) else (state,)):
        assert_kind(value, on_device)
    y_data = host(y).data if isinstance(y, PackedSequence) else host(y)
    y0_data = y0.data if isinstance(y0, PackedSequence) else y0
    assert y_data.dtype == dtype and y_data.shape == y0_data.shape
    assert_close(y_data, y0_data, dtype, OUTPUT, "y")
    for got, want in zip(host(state) if isinstance(state, tuple) else (host(state),),
                         state0 if isinstance(state0, tuple) else (state0,)):
        assert_close(got, want, dtype, STATE, "h_n/c_n")

    dy = rng.standard_normal(y0_data.shape).astype(dtype)
    dy = y._replace(data=dy) if isinstance(y, PackedSequence) else dy
    dstate = tuple(rng.standard_normal(s.shape).astype(dtype) for s in
                   (state0 if isinstance(state0, tuple) else (state0,)))
    dstate = dstate if isinstance(state0, tuple) else dstate[0]
    dx, dhx = layer.backward(as_kind(dy, on_device), as_kind(dstate, on_device))
    dx0, dhx0 = reference.backward(f64(dy), f64(dstate))
    assert_kind(dx, on_device)
    dx_data = host(dx).data if isinstance(dx, PackedSequence) else host(dx)
    assert_close(dx_data, dx0.data if isinstance(dx0, PackedSequence) else dx0, dtype, INPUT_GRAD, "dx")
    assert (dhx is None) == (dhx0 is None)
    if dhx is not None:
        for got, want in zip(host(dhx) if isinstance(dhx, tuple) else (host(dhx),),
                             dhx0 if isinstance(dhx0, tuple) else (dhx0,)):
            assert_close(got, want, dtype, INPUT_GRAD, "dhx")
    for (name, p), p0 in zip(layer.named_parameters(), reference.parameters()):
        assert isinstance(p.grad, np.ndarray) and p.grad.dtype == dtype, name
        assert_close(p.grad, p0.grad, dtype, WEIGHT_GRAD, name)


def initial_state(layer, rng, dtype, batch=B):
    rows = layer.num_layers * (2 if layer.bidirectional else 1)
    h0 = rng.standard_normal((rows, batch, layer.proj_size or H)).astype(dtype)
    return (h0, rng.standard_normal((rows, batch, H)).astype(dtype)) if layer.mode == "LSTM" else h0


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy_x", "device_x"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", list(LAYERS))
def test_two_layers_match_the_cpu_layer(device, cell, bidirectional, dtype, on_device):
    rng = np.random.default_rng(1)
    layer, reference = pair(cell, dtype, num_layers=2, bidirectional=bidirectional)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    check_layer(layer, reference, x, initial_state(layer, rng, dtype), dtype, on_device, rng)


OPTIONS = {
    "batch_first": dict(batch_first=True),
    "projection": dict(proj_size=3, bidirectional=True),
    "dropout": dict(num_layers=2, dropout=0.4, bidirectional=True),
    "no_bias": dict(bias=False, num_layers=2),
}


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy_x", "device_x"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_options_match_the_cpu_layer(device, option, on_device):
    rng = np.random.default_rng(2)
    layer, reference = pair("lstm", np.float64, **OPTIONS[option])
    shape = (B, T, I) if layer.batch_first else (T, B, I)
    x = rng.standard_normal(shape)
    check_layer(layer, reference, x, initial_state(layer, rng, np.float64), np.float64, on_device, rng)


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy_x", "device_x"])
def test_unbatched_input_and_no_initial_state(device, on_device):
    rng = np.random.default_rng(3)
    layer, reference = pair("gru", np.float64, bidirectional=True)
    check_layer(layer, reference, rng.standard_normal((T, I)), None, np.float64, on_device, rng)


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy_x", "device_x"])
def test_packed_sequences_with_variable_lengths(device, on_device):
    rng = np.random.default_rng(4)
    layer, reference = pair("lstm", np.float64, num_layers=2, bidirectional=True)
    x = pack_padded_sequence(rng.standard_normal((T, B, I)), [2, 4, 1], enforce_sorted=False)
    check_layer(layer, reference, x, initial_state(layer, rng, np.float64), np.float64, on_device, rng)


class DLPackOnly:
    """A device array with DLPack and no __cuda_array_interface__ (as some frameworks' GPU arrays)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, stream=None):
        return self._array.__dlpack__()

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_only_device_inputs(device):
    rng = np.random.default_rng(11)
    layer = nn.GRU(I, H, dtype=np.float64, device="cuda")
    x, dy = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    y, h_n = layer(DLPackOnly(cuda.to_device(x)))
    assert cuda.is_device_array(y) and cuda.is_device_array(h_n)
    dx, _ = layer.backward(DLPackOnly(cuda.to_device(dy)))
    layer.zero_grad()
    y0, _ = layer(cuda.to_device(x))
    dx0, _ = layer.backward(cuda.to_device(dy))
    assert np.array_equal(cuda.to_host(y), cuda.to_host(y0)) and np.array_equal(cuda.to_host(dx), cuda.to_host(dx0))


def test_eval_mode_and_numpy_chaining(device):
    """A cuda layer given NumPy inputs returns NumPy outputs, which host layers take as they are."""
    rng = np.random.default_rng(5)
    layer, reference = pair("gru", np.float32)
    head = nn.Linear(H, 2)
    model, model0 = nn.Sequential(layer, nn.Identity()), nn.Sequential(reference, nn.Identity())
    model.eval(), model0.eval()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y, _ = model[0](x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert_close(head(y), head(model0[0](np.float64(x))[0].astype(np.float32)), np.float32, OUTPUT, "head")
    with pytest.raises(RuntimeError, match="eval mode"):
        layer.backward(np.ones_like(y))


# -- the device copies of the weights ---------------------------------------------------------

def forward_matches(layer, rng, training=True):
    """One forward of `layer` (a cuda float64 GRU) against a fresh CPU layer with its current weights."""
    reference = nn.GRU(I, H, dtype=np.float64)
    reference.load_state_dict(layer.state_dict())
    layer.train(training), reference.train(training)
    x = rng.standard_normal((T, B, I))
    assert_close(layer(x)[0], reference(x)[0], np.float64, OUTPUT, "y")


def test_weights_are_uploaded_once_and_again_after_each_kind_of_change(device):
    rng = np.random.default_rng(6)
    layer = nn.GRU(I, H, dtype=np.float64, device="cuda")
    cache = layer._device_weights
    forward_matches(layer, rng)
    assert cache.uploads == 4
    forward_matches(layer, rng, training=False)
    forward_matches(layer, rng)
    assert cache.uploads == 4, "unchanged weights were uploaded again"

    layer.weight_hh_l0.data[1, 2] += 0.5          # in place, no version bump
    forward_matches(layer, rng)
    assert cache.uploads == 5
    layer.bias_ih_l0.data = layer.bias_ih_l0.data + 0.1      # a new array bound to .data
    forward_matches(layer, rng, training=False)
    assert cache.uploads == 6
    layer.weight_ih_l0 = nn.Parameter(rng.standard_normal((3 * H, I)))   # a new Parameter
    forward_matches(layer, rng)
    assert cache.uploads == 7
    state = {k: v * 0.5 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)
    forward_matches(layer, rng)
    assert cache.uploads == 11

    optimizer = optim.SGD(layer.parameters(), lr=0.1)
    y, _ = layer(rng.standard_normal((T, B, I)))
    layer.backward(rng.standard_normal(y.shape))
    optimizer.step()                               # in place into the same arrays
    forward_matches(layer, rng)
    assert cache.uploads == 15
    layer.weight_hh_l0.data[...] = layer.weight_hh_l0.data   # written, but the same values
    forward_matches(layer, rng)
    assert cache.uploads == 15


def test_a_weight_written_in_place_between_forward_and_backward_raises(device):
    rng = np.random.default_rng(7)
    layer = nn.LSTM(I, H, dtype=np.float64, device="cuda")
    y, _ = layer(rng.standard_normal((T, B, I)))
    layer.weight_hh_l0.data[0, 0] += 1.0           # no version bump: only the bytes show it
    with pytest.raises(RuntimeError, match="weight_hh_l0 was modified in place"):
        layer.backward(np.ones_like(y))
    y, _ = layer(rng.standard_normal((T, B, I)))
    layer.bias_hh_l0.data = layer.bias_hh_l0.data * 2   # a version bump
    with pytest.raises(RuntimeError, match="bias_hh_l0 was changed"):
        layer.backward(np.ones_like(y))


# -- moving layers ---------------------------------------------------------------------------

def test_to_moves_recurrent_children_and_round_trips(device):
    rng = np.random.default_rng(8)
    lstm, gru, head = nn.LSTM(I, H, dtype=np.float64), nn.GRU(H, H, dtype=np.float64), nn.Linear(H, 2)
    model = nn.Sequential(lstm, head)
    x = rng.standard_normal((T, B, I))
    expected = lstm(x)[0]
    assert model.to("cuda") is model and lstm.device == "cuda" and model[0]._device_weights is not None
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())
    assert_close(lstm(x)[0], expected, np.float64, OUTPUT, "y")
    y, _ = lstm(x)
    model.cpu()
    assert lstm.device == "cpu" and lstm._device_weights is None     # device copies dropped
    with pytest.raises(RuntimeError, match="moved to another device"):
        lstm.backward(np.ones_like(y))
    assert np.array_equal(lstm(x)[0], expected)
    assert gru.cuda() is gru and gru.device == "cuda"
    assert gru.to("cuda:0").device == "cuda" and gru.to("cpu").device == "cpu"


def test_copies_start_with_empty_device_copies(device):
    rng = np.random.default_rng(10)
    layer = nn.GRU(I, H, dtype=np.float64, device="cuda")
    x = rng.standard_normal((T, B, I))
    y, _ = layer(x)                                  # a training forward: saved state on the device
    clone = copy.deepcopy(layer)
    assert clone.device == "cuda" and clone._device_weights.uploads == 0
    with pytest.raises(RuntimeError, match="copy made after a training forward"):
        clone.backward(np.ones_like(y))
    assert np.array_equal(clone(x)[0], y)
    assert layer.backward(np.ones_like(y))[0].shape == x.shape
    assert pickle.loads(pickle.dumps(layer)).device == "cuda"


# -- errors ----------------------------------------------------------------------------------

def test_unknown_devices_raise_value_error():
    with pytest.raises(ValueError, match="device must be"):
        nn.LSTM(I, H, device="tpu")
    with pytest.raises(ValueError, match="device must be"):
        nn.LSTM(I, H).to("cuda:1")
    with pytest.raises(ValueError, match="device must be"):
        nn.GRU(I, H).to(np.float64)
    with pytest.raises(ValueError, match="CPU only"):
        nn.LSTMCell(I, H, device="cuda")


@pytest.mark.parametrize("built", [False, True])
def test_cuda_where_it_cannot_run_raises_runtime_error_saying_why(monkeypatch, built):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    monkeypatch.setattr(cuda, "build_info", lambda: {"built": built})
    why = "no CUDA device" if built else "built without the CUDA backend"
    with pytest.raises(RuntimeError, match=why):
        nn.GRU(I, H, device="cuda")
    layer = nn.GRU(I, H)
    with pytest.raises(RuntimeError, match=why):
        nn.Sequential(layer).to("cuda")
    assert layer.device == "cpu"


def test_bad_device_inputs_raise(device):
    rng = np.random.default_rng(9)
    layer = nn.GRU(I, H, device="cuda")
    with pytest.raises(TypeError, match="input has dtype float64"):
        layer(cuda.to_device(rng.standard_normal((T, B, I))))
    with pytest.raises(ValueError, match="input_size"):
        layer(cuda.to_device(rng.standard_normal((T, B, I + 1)).astype(np.float32)))
    with pytest.raises(TypeError, match="hx has dtype float64"):
        layer(rng.standard_normal((T, B, I)).astype(np.float32), cuda.to_device(np.zeros((1, B, H))))
    y, _ = layer(cuda.to_device(rng.standard_normal((T, B, I)).astype(np.float32)))
    with pytest.raises(ValueError, match="grad_output must have the output's shape"):
        layer.backward(cuda.to_device(np.ones((T, B, H + 1), np.float32)))
    layer.eval()
    layer.bf16_inference = True
    with pytest.raises(ValueError, match="bf16_weights"):
        layer(rng.standard_normal((T, B, I)).astype(np.float32))
    with pytest.raises(TypeError, match="CUDA device array"):
        nn.Linear(H, 2)(y)
    with pytest.raises(TypeError, match="CUDA device array"):
        nn.GRU(I, H)(cuda.to_device(np.ones((T, B, I), np.float32)))   # a CPU layer

"""fusedrnn.nn.RNN / LSTM / GRU against torch.nn: outputs, final states and every gradient.

Tolerances: see nn_rnn_oracle (float64 to 1e-10 relative; float32 1e-5 outputs, 1e-4 gradients).
Configurations are drawn once from a fixed seed so every run checks the same ones; each mode
meets every num_layers in 1..3, and the other arguments vary independently.
"""

import random
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

# torch's CPU LSTM says so for every projection case; it is about torch's speed, not results.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")

import fusedrnn  # noqa: E402
import fusedrnn.nn as fnn  # noqa: E402
from nn_rnn_oracle import (assert_close, assert_param_grads_match, leaf, nested, random_like,  # noqa: E402
                           torch_backward, twins)

CLASS_OF_MODE = {"RNN_TANH": "RNN", "RNN_RELU": "RNN", "LSTM": "LSTM", "GRU": "GRU"}


def make_config(index, chooser, mode, proj=False):
    """One configuration: the module's arguments plus how forward and backward are called."""
    H = chooser.randint(3, 6)
    kwargs = dict(input_size=chooser.randint(2, 5), hidden_size=H, num_layers=1 + (index // 4) % 3,
                  bias=chooser.random() < 0.75, batch_first=chooser.random() < 0.5,
                  bidirectional=chooser.random() < 0.5)
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = mode[4:].lower()
    if proj:
        kwargs["proj_size"] = chooser.randint(1, H - 1)
    return dict(
        cls=CLASS_OF_MODE[mode], kwargs=kwargs,
        dtype=np.float64 if chooser.random() < 0.5 else np.float32,
        T=chooser.randint(1, 6), B=chooser.randint(1, 4),
        batched=chooser.random() < 0.75, hx=chooser.random() < 0.6,
        # Which results get a cotangent: both, only the output, or only the final state(s).
        cotangents=chooser.choice(["both", "both", "output", "final"]),
    )


def config_id(c):
    kw = c["kwargs"]
    parts = [kw.get("nonlinearity", c["cls"]) if c["cls"] == "RNN" else c["cls"], f"L{kw['num_layers']}",
             "bi" if kw["bidirectional"] else "uni", "bf" if kw["batch_first"] else "tf",
             "bias" if kw["bias"] else "nobias", np.dtype(c["dtype"]).name,
             "batched" if c["batched"] else "unbatched", "hx" if c["hx"] else "nohx", c["cotangents"]]
    if kw.get("proj_size"):
        parts.insert(1, f"proj{kw['proj_size']}")
    return "-".join(parts)


_chooser = random.Random(2024)
CONFIGS = [make_config(i, _chooser, ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"][i % 4]) for i in range(48)]
PROJ_CONFIGS = [make_config(4 * i, _chooser, "LSTM", proj=True) for i in range(8)]


def run_against_torch(config, rng):
    """Runs forward and backward of both twins on the same data and compares everything."""
    ours, theirs = twins(config["cls"], config["dtype"], **config["kwargs"])
    kw, dtype = config["kwargs"], config["dtype"]
    T, B = config["T"], config["B"]
    D = 2 if kw["bidirectional"] else 1
    rows = kw["num_layers"] * D
    P = kw.get("proj_size") or kw["hidden_size"]
    batch = (B,) if config["batched"] else ()
    x_shape = ((B, T) if kw["batch_first"] else (T, B)) if config["batched"] else (T,)
    x = rng.standard_normal(x_shape + (kw["input_size"],)).astype(dtype)
    hx = None
    if config["hx"]:
        h0 = rng.standard_normal((rows,) + batch + (P,)).astype(dtype)
        c0 = rng.standard_normal((rows,) + batch + (kw["hidden_size"],)).astype(dtype)
        hx = (h0, c0) if config["cls"] == "LSTM" else h0

    output, final = ours(x, hx)
    x_t, hx_t = leaf(x), nested(leaf, hx)
    output_t, final_t = theirs(x_t, hx_t)
    assert_close(output, output_t, "output", "output")
    for name, a, e in zip(["h_n", "c_n"], final if isinstance(final, tuple) else [final],
                          final_t if isinstance(final_t, tuple) else [final_t]):
        assert_close(a, e, "output", name)

    d_output = random_like(rng, output) if config["cotangents"] != "final" else None
    d_final = random_like(rng, final) if config["cotangents"] != "output" else None
    grad_x, grad_hx = ours.backward(d_output, d_final)
    final_list = list(final_t) if isinstance(final_t, tuple) else [final_t]
    d_final_list = [None] * len(final_list) if d_final is None else \
        (list(d_final) if isinstance(d_final, tuple) else [d_final])
    torch_backward([output_t] + final_list, [d_output] + d_final_list)

    assert_close(grad_x, x_t.grad, "grad", "grad of input")
    if hx is None:
        assert grad_hx is None
    elif config["cls"] == "LSTM":
        assert isinstance(grad_hx, tuple) and len(grad_hx) == 2
        assert_close(grad_hx[0], hx_t[0].grad, "grad", "grad of h_0")
        assert_close(grad_hx[1], hx_t[1].grad, "grad", "grad of c_0")
    else:
        assert_close(grad_hx, hx_t.grad, "grad", "grad of h_0")
    assert_param_grads_match(ours, theirs)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_layer_matches_torch(config, rng):
    run_against_torch(config, rng)


@pytest.mark.parametrize("config", PROJ_CONFIGS, ids=config_id)
def test_lstm_projection_matches_torch(config, rng):
    # Needs functional.lstm_forward(..., weight_hr=...) from the native kernel.
    run_against_torch(config, rng)


def test_gradients_accumulate_across_backwards(rng):
    """Two forward/backward rounds add up (PyTorch's += contract); zero_grad clears."""
    ours, _ = twins("GRU", np.float64, input_size=3, hidden_size=4, num_layers=2)
    x = rng.standard_normal((3, 2, 3))
    dy = rng.standard_normal((3, 2, 4))
    ours(x)
    ours.backward(dy)
    once = {n: p.grad.copy() for n, p in ours.named_parameters()}
    ours(x)
    ours.backward(dy)
    for name, param in ours.named_parameters():
        np.testing.assert_allclose(param.grad, 2 * once[name], rtol=1e-12, err_msg=name)
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


# -- dropout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_dropout_eval_mode_equals_torch(cls, rng):
    ours, theirs = twins(cls, np.float64, input_size=3, hidden_size=5, num_layers=3, dropout=0.5,
                         bidirectional=True)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((4, 2, 3))
    output, _ = ours(x)
    assert_close(output, theirs(torch.tensor(x))[0], "output", "output")
    with pytest.raises(RuntimeError, match="eval mode"):
        ours.backward(np.zeros_like(output))


def test_dropout_masks_are_inverted_bernoulli():
    """Masks hold 0 or 1/(1-p), zero with frequency p, fresh on every forward, none after the
    last layer; fusedrnn.manual_seed replays them."""
    p = 0.3
    # No rng= here: the masks then come from the shared generator that manual_seed re-seeds.
    layer = fnn.LSTM(4, 50, num_layers=3, dropout=p, bidirectional=True, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((20, 10, 4))
    fusedrnn.manual_seed(7)
    first, _ = layer(x)
    masks = layer._context["masks"]
    assert len(masks) == 2 and masks[0].shape == (20, 10, 100)
    values = np.concatenate([m.ravel() for m in masks])
    assert set(np.unique(values)) == {0.0, 1 / (1 - p)}
    zero_fraction = np.mean(values == 0)
    assert abs(zero_fraction - p) < 4 * np.sqrt(p * (1 - p) / values.size)
    second, _ = layer(x)
    assert not np.allclose(first, second)
    fusedrnn.manual_seed(7)
    replay, _ = layer(x)
    np.testing.assert_array_equal(first, replay)


def test_dropout_one_cuts_the_lower_layers():
    """p = 1 zeroes every inter-layer signal: the top layer then sees zeros as its input."""
    layer = fnn.GRU(3, 4, num_layers=2, dropout=1.0, dtype=np.float64, rng=3)
    top = fnn.GRU(4, 4, dtype=np.float64)
    top.load_state_dict({k.replace("_l1", "_l0"): v for k, v in layer.state_dict().items() if "_l1" in k})
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    output, h_n = layer(x)
    expected, expected_h = top(np.zeros((5, 2, 4)))
    np.testing.assert_allclose(output, expected, rtol=1e-12)
    np.testing.assert_allclose(h_n[1], expected_h[0], rtol=1e-12)
    grad_x, _ = layer.backward(np.ones_like(output))
    # Only h_n of layer 0 could carry gradient to x, and it got none.
    np.testing.assert_array_equal(grad_x, 0)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_dropout_train_mode_equals_torch_layers_with_the_same_masks(cls, rng):
    """Training mode equals a chain of torch single-layer modules with our masks applied between
    them, in outputs and in every gradient: backward uses the very masks forward drew."""
    L, H, I = 3, 4, 3
    ours = getattr(fnn, cls)(I, H, num_layers=L, dropout=0.4, bidirectional=True, dtype=np.float64,
                             rng=5)
    x = rng.standard_normal((5, 2, I))
    hx = rng.standard_normal((2 * L, 2, H))
    hx = (hx, rng.standard_normal((2 * L, 2, H))) if cls == "LSTM" else hx
    output, final = ours(x, hx)
    masks = ours._context["masks"]
    d_output, d_final = random_like(rng, output), random_like(rng, final)
    grad_x, grad_hx = ours.backward(d_output, d_final)

    x_t, hx_t = leaf(x), nested(leaf, hx)
    state = ours.state_dict()
    layers_t, finals_t, signal = [], [], x_t
    for layer in range(L):
        layer_t = getattr(torch.nn, cls)(I if layer == 0 else 2 * H, H, bidirectional=True, dtype=torch.float64)
        layer_t.load_state_dict({k.replace(f"_l{layer}", "_l0"): torch.tensor(v)
                                 for k, v in state.items() if f"_l{layer}" in k})
        rows = slice(2 * layer, 2 * layer + 2)
        signal, final_t = layer_t(signal, nested(lambda h: h[rows], hx_t))
        if layer < L - 1:
            signal = signal * torch.tensor(masks[layer])
        layers_t.append(layer_t)
        finals_t.append(final_t)
    assert_close(output, signal, "output", "output")
    if cls == "LSTM":
        final_t = tuple(torch.cat([f[i] for f in finals_t]) for i in range(2))
        outputs_t, cotangents = [signal, *final_t], [d_output, *d_final]
    else:
        final_t = torch.cat(finals_t)
        outputs_t, cotangents = [signal, final_t], [d_output, d_final]
    torch_backward(outputs_t, cotangents)
    assert_close(grad_x, x_t.grad, "grad", "grad of input")
    for ours_grad, hx_leaf in zip(grad_hx if cls == "LSTM" else [grad_hx], hx_t if cls == "LSTM" else [hx_t]):
        assert_close(ours_grad, hx_leaf.grad, "grad", "grad of hx")
    for layer, layer_t in enumerate(layers_t):
        for name, param_t in layer_t.named_parameters():
            assert_close(getattr(ours, name.replace("_l0", f"_l{layer}")).grad, param_t.grad, "grad", name)


def test_dropout_gradient_matches_finite_differences():
    """Float64 central differences through a train-mode forward whose masks are replayed by
    re-seeding: checks input and weight gradients with dropout between three layers."""
    fusedrnn.manual_seed(11)
    layer = fnn.LSTM(3, 4, num_layers=3, dropout=0.5, dtype=np.float64)  # masks from manual_seed
    data = np.random.default_rng(3)
    x = data.standard_normal((4, 2, 3))
    d_output = data.standard_normal((4, 2, 4))
    d_h = data.standard_normal((3, 2, 4))

    def loss():
        fusedrnn.manual_seed(99)
        output, (h_n, _) = layer(x)
        return np.sum(output * d_output) + np.sum(h_n * d_h)

    loss()
    layer.zero_grad()
    grad_x, _ = layer.backward(d_output, (d_h, None))
    step = 1e-6
    probes = [(x, grad_x, idx) for idx in [(0, 0, 0), (1, 1, 2), (3, 0, 1), (2, 1, 0)]]
    for name in ["weight_ih_l0", "weight_hh_l1", "bias_ih_l2", "weight_ih_l1"]:
        param = getattr(layer, name)
        for flat in data.choice(param.size, 3, replace=False):
            probes.append((param.data, param.grad, np.unravel_index(flat, param.shape)))
    for array, grad, idx in probes:
        saved = array[idx]
        array[idx] = saved + step
        plus = loss()
        array[idx] = saved - step
        minus = loss()
        array[idx] = saved
        numeric = (plus - minus) / (2 * step)
        assert abs(numeric - grad[idx]) <= 1e-6 * max(1.0, abs(numeric)), (idx, numeric, grad[idx])


def test_dropout_with_one_layer_warns_and_does_nothing():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        layer = fnn.GRU(3, 4, dropout=0.5, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((3, 2, 3))
    train_output, _ = layer(x)
    layer.eval()
    np.testing.assert_array_equal(train_output, layer(x)[0])


# -- errors ---------------------------------------------------------------------------------------

CONSTRUCTOR_ERRORS = [
    ("LSTM", dict(dropout=1.5), ValueError, "dropout should be a number in range"),
    ("LSTM", dict(dropout=-0.1), ValueError, "dropout should be a number in range"),
    ("GRU", dict(dropout=True), ValueError, "dropout should be a number in range"),
    ("RNN", dict(dropout="0.5"), ValueError, "dropout should be a number in range"),
    ("LSTM", dict(num_layers=0), ValueError, "num_layers must be greater than zero"),
    ("GRU", dict(hidden_size=0), ValueError, "hidden_size must be greater than zero"),
    ("LSTM", dict(hidden_size=4.0), TypeError, "hidden_size should be of type int"),
    ("LSTM", dict(proj_size=5), ValueError, "proj_size has to be smaller than hidden_size"),
    ("LSTM", dict(proj_size=-1), ValueError, "proj_size should be a positive integer or zero"),
    ("RNN", dict(nonlinearity="sigmoid"), ValueError, "Unknown nonlinearity 'sigmoid'"),
]


@pytest.mark.parametrize("cls,kwargs,error,message", CONSTRUCTOR_ERRORS,
                         ids=[f"{c}-{'-'.join(map(str, k.items()))}" for c, k, _, _ in CONSTRUCTOR_ERRORS])
def test_constructor_validation_like_torch(cls, kwargs, error, message):
    arguments = dict(input_size=3, hidden_size=5)
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        getattr(fnn, cls)(**arguments)
    with pytest.raises(Exception):  # torch refuses the same arguments
        getattr(torch.nn, cls)(**arguments)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(input_size=0), ValueError, "input_size"),
    (dict(input_size=2.5), TypeError, "input_size"),
    (dict(num_layers=1.0), TypeError, "num_layers"),
    (dict(device="tpu"), ValueError, "device must be"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(dtype="float16"), TypeError, "dtype"),
    (dict(rng="seed"), TypeError, "rng"),
])
def test_constructor_validation_of_our_own_arguments(kwargs, error, message):
    arguments = dict(input_size=3, hidden_size=5)
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        fnn.LSTM(**arguments)


def test_projection_only_for_lstm():
    with pytest.raises(TypeError):
        fnn.GRU(3, 5, proj_size=2)
    with pytest.raises(ValueError, match="only supported for LSTM"):
        fnn.RNNBase("GRU", 3, 5, proj_size=2)


def test_dtype_and_device_spellings():
    assert fnn.GRU(3, 4).weight_ih_l0.dtype == np.float32
    assert fnn.GRU(3, 4, dtype="float64").weight_ih_l0.dtype == np.float64
    assert fnn.GRU(3, 4, dtype=np.float32, device="cpu").weight_ih_l0.dtype == np.float32


@pytest.mark.parametrize("hx,error,message", [
    ((np.zeros((2, 2, 5)),), TypeError, "tuple"),
    (np.zeros((2, 2, 5)), TypeError, "tuple"),
    ((np.zeros((2, 2, 6)), np.zeros((2, 2, 5))), ValueError, r"Expected hidden\[0\] size \(2, 2, 5\), got \(2, 2, 6\)"),
    ((np.zeros((2, 2, 5)), np.zeros((2, 3, 5))), ValueError, r"Expected hidden\[1\] size \(2, 2, 5\), got \(2, 3, 5\)"),
    ((np.zeros((2, 5)), np.zeros((2, 5))), ValueError, "For batched 3-D input, hx and cx should also be 3-D"),
    ((np.zeros((2, 2, 5), np.float32), np.zeros((2, 2, 5))), TypeError, "hx has dtype float32"),
])
def test_lstm_hx_validation(hx, error, message):
    layer = fnn.LSTM(4, 5, num_layers=2, dtype=np.float64)
    with pytest.raises(error, match=message):
        layer(np.zeros((3, 2, 4)), hx)


def test_gru_and_rnn_hx_validation():
    layer = fnn.GRU(4, 5, dtype=np.float64)
    with pytest.raises(ValueError, match=r"Expected hidden size \(1, 2, 5\), got \(2, 2, 5\)"):
        layer(np.zeros((3, 2, 4)), np.zeros((2, 2, 5)))
    with pytest.raises(ValueError, match="For batched 3-D input, hx should also be 3-D but got 2-D"):
        layer(np.zeros((3, 2, 4)), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="For unbatched 2-D input, hx should also be 2-D but got 3-D"):
        layer(np.zeros((3, 4)), np.zeros((1, 2, 5)))
    with pytest.raises(ValueError, match=r"Expected hidden size \(1, 5\), got \(1, 6\)"):
        layer(np.zeros((3, 4)), np.zeros((1, 6)))
    with pytest.raises(TypeError, match="one array"):
        fnn.RNN(4, 5, dtype=np.float64)(np.zeros((3, 2, 4)), (np.zeros((1, 2, 5)),))


def test_input_validation():
    layer = fnn.LSTM(4, 5)
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 1D"):
        layer(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        layer(np.zeros((1, 3, 2, 4), np.float32))
    with pytest.raises(ValueError, match="input.size\\(-1\\) must be equal to input_size. Expected 4, got 3"):
        layer(np.zeros((3, 2, 3), np.float32))
    with pytest.raises(TypeError, match="input has dtype float64 but the module's parameters are float32"):
        layer(np.zeros((3, 2, 4)))
    with pytest.raises(TypeError, match="dtype int64"):
        layer(np.zeros((3, 2, 4), np.int64))


def test_backward_state_errors():
    layer = fnn.GRU(3, 4, dtype=np.float64)
    x = np.zeros((2, 1, 3))
    with pytest.raises(RuntimeError, match="before any forward"):
        layer.backward(np.zeros((2, 1, 4)))
    layer(x)
    layer.backward(np.ones((2, 1, 4)))
    with pytest.raises(RuntimeError, match="a second time"):
        layer.backward(np.ones((2, 1, 4)))
    layer.eval()
    layer(x)
    with pytest.raises(RuntimeError, match="eval mode"):
        layer.backward(np.ones((2, 1, 4)))
    layer.train()
    layer(x)
    with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(2, 1, 4\)"):
        layer.backward(np.ones((2, 1, 5)))
    with pytest.raises(ValueError, match="grad_hn must have the shape"):
        layer.backward(None, np.ones((2, 1, 4)))
    with pytest.raises(TypeError, match="grad_output has dtype float32"):
        layer.backward(np.ones((2, 1, 4), np.float32))
    lstm = fnn.LSTM(3, 4, dtype=np.float64)
    lstm(x)
    with pytest.raises(TypeError, match=r"tuple \(dh_n, dc_n\)"):
        lstm.backward(None, np.ones((1, 1, 4)))


# -- module features -----------------------------------------------------------------------------

STRUCTURE_CASES = [
    ("LSTM", dict(input_size=10, hidden_size=20, num_layers=2, batch_first=True, bidirectional=True)),
    ("LSTM", dict(input_size=3, hidden_size=6, num_layers=3, proj_size=2, bias=False, dropout=0.25)),
    ("LSTM", dict(input_size=3, hidden_size=6, num_layers=2, proj_size=4, bidirectional=True)),
    ("GRU", dict(input_size=5, hidden_size=4, num_layers=3, bias=False, bidirectional=True, dropout=0.5)),
    ("GRU", dict(input_size=5, hidden_size=4)),
    ("RNN", dict(input_size=2, hidden_size=3, nonlinearity="relu", num_layers=2, batch_first=True)),
    ("RNN", dict(input_size=2, hidden_size=3, bias=False, dropout=1.0, num_layers=2)),
]


@pytest.mark.parametrize("cls,kwargs", STRUCTURE_CASES, ids=[f"{c}{i}" for i, (c, _) in enumerate(STRUCTURE_CASES)])
def test_structure_and_repr_equal_torch(cls, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = getattr(fnn, cls)(**kwargs)
        theirs = getattr(torch.nn, cls)(**kwargs)
    assert repr(ours) == repr(theirs)
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(their_state)
    for name, value in their_state.items():
        assert ours_state[name].shape == tuple(value.shape), name
        assert ours_state[name].dtype == np.float32
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [[p.shape for p in group] for group in ours.all_weights] == \
        [[tuple(p.shape) for p in group] for group in theirs.all_weights]
    for attribute in ["mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
                      "dropout", "bidirectional", "proj_size"]:
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    ours.flatten_parameters()  # PyTorch code calls it; harmless here


def test_initialisation_range_and_seeding():
    layer = fnn.LSTM(7, 16, num_layers=2, bidirectional=True, rng=4)
    bound = 1 / np.sqrt(16)
    values = np.concatenate([p.data.ravel() for p in layer.parameters()])
    assert np.all(np.abs(values) <= bound) and values.std() > 0.9 * bound / np.sqrt(3)
    again = fnn.LSTM(7, 16, num_layers=2, bidirectional=True, rng=4)
    for (name, a), b in zip(layer.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    fusedrnn.manual_seed(5)
    first = fnn.GRU(3, 4).state_dict()
    fusedrnn.manual_seed(5)
    second = fnn.GRU(3, 4).state_dict()
    for a, b in zip(first.values(), second.values()):
        np.testing.assert_array_equal(a, b)


def test_load_state_dict_errors_leave_module_unchanged():
    layer = fnn.LSTM(3, 4, num_layers=2)
    before = layer.state_dict()
    theirs = {k: v.numpy() for k, v in torch.nn.LSTM(3, 4, num_layers=2).state_dict().items()}
    bad_shape = dict(theirs, weight_hh_l1=np.zeros((16, 5)))
    missing = {k: v for k, v in theirs.items() if k != "bias_hh_l1"}
    extra = dict(theirs, weight_hr_l0=np.zeros((2, 4)))
    for state, error in [(bad_shape, ValueError), (missing, KeyError), (extra, KeyError)]:
        with pytest.raises(error):
            layer.load_state_dict(state)
        for name, value in layer.state_dict().items():
            np.testing.assert_array_equal(value, before[name], err_msg=name)
    layer.load_state_dict(theirs)
    np.testing.assert_array_equal(layer.weight_hh_l1.data, theirs["weight_hh_l1"])

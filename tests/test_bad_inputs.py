"""A table of bad inputs to the user-facing layers: each raises the listed exception with a
message naming what is wrong; odd but valid layouts work. (The functional API's own table is in
test_kernels.py; weight files in test_weight_files.py; sizes beyond memory in test_reliability.py.)
"""

import numpy as np
import pytest

from fusedrnn import nn
from fusedrnn.nn.utils.rnn import pack_padded_sequence

T, B, I, H, LAYERS = 3, 2, 4, 5, 2


def lstm():
    return nn.LSTM(I, H, num_layers=LAYERS)


def x32(shape=(T, B, I)):
    return np.zeros(shape, np.float32)


def hx(h_shape=(LAYERS, B, H), c_shape=(LAYERS, B, H)):
    return np.zeros(h_shape, np.float32), np.zeros(c_shape, np.float32)


def used_up():
    module = lstm()
    y, _ = module(x32())
    module.backward(np.ones_like(y))
    return module


def after_eval():
    module = lstm().eval()
    module(x32())
    return module


BAD_INPUTS = {
    # name: (call, exception, a word the message must contain)
    "input ndim 4": (lambda: lstm()(x32((T, B, I, 1))), ValueError, "4D"),
    "input ndim 1": (lambda: lstm()(x32((I,))), ValueError, "1D"),
    "input feature size": (lambda: lstm()(x32((T, B, I + 1))), ValueError, "input_size"),
    "hx wrong hidden size": (lambda: lstm()(x32(), hx(h_shape=(LAYERS, B, H + 1))), ValueError, "hidden"),
    "hx wrong batch": (lambda: lstm()(x32(), hx(c_shape=(LAYERS, B + 1, H))), ValueError, "hidden"),
    "hx not a tuple for LSTM": (lambda: lstm()(x32(), np.zeros((LAYERS, B, H), np.float32)), TypeError, "tuple"),
    "dtype int": (lambda: lstm()(x32().astype(np.int64)), TypeError, "dtype"),
    "dtype bool": (lambda: lstm()(x32().astype(bool)), TypeError, "dtype"),
    "dtype float16": (lambda: lstm()(x32().astype(np.float16)), TypeError, "dtype"),
    "dtype complex": (lambda: lstm()(x32().astype(np.complex64)), TypeError, "dtype"),
    "dtype object": (lambda: lstm()(x32().astype(object)), TypeError, "dtype"),
    "dtype float64 into float32 weights": (lambda: lstm()(x32().astype(np.float64)), TypeError, "dtype"),
    "T = 0": (lambda: lstm()(x32((0, B, I))), ValueError, "T = 0"),
    "lengths negative": (lambda: pack_padded_sequence(x32(), [-1, 1]), ValueError, "length"),
    "lengths zero": (lambda: pack_padded_sequence(x32(), [3, 0]), ValueError, "length"),
    "lengths longer than T": (lambda: pack_padded_sequence(x32(), [T + 1, 1]), ValueError, "length"),
    "lengths unsorted, enforce_sorted": (lambda: pack_padded_sequence(x32(), [1, 3]), ValueError, "sorted"),
    "backward before forward": (lambda: lstm().backward(x32((T, B, H))), RuntimeError, "forward"),
    "backward twice": (lambda: used_up().backward(x32((T, B, H))), RuntimeError, "second time"),
    "backward after eval forward": (lambda: after_eval().backward(x32((T, B, H))), RuntimeError, "eval"),
    "state_dict missing key": (lambda: lstm().load_state_dict({"weight_ih_l0": np.zeros((4 * H, I))}), KeyError, "missing"),
    "state_dict unexpected key": (lambda: lstm().load_state_dict({**lstm().state_dict(), "extra": np.zeros(1)}),
                                  KeyError, "unexpected"),
    "state_dict mis-shaped": (lambda: lstm().load_state_dict({**lstm().state_dict(), "bias_ih_l1": np.zeros(3)}),
                              ValueError, "bias_ih_l1"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_a_clear_error(name):
    call, error, word = BAD_INPUTS[name]
    with pytest.raises(error) as info:
        call()
    assert word.lower() in str(info.value).lower()


def test_grad_output_of_the_wrong_shape_raises_and_keeps_the_forward():
    module = lstm()
    y, _ = module(x32())
    with pytest.raises(ValueError, match="grad"):
        module.backward(np.zeros((T, B, H + 1), np.float32))
    module.backward(np.ones_like(y))   # the forward was not used up by the refused call


def test_a_refused_state_dict_leaves_the_module_unchanged():
    module = lstm()
    before = {k: v.copy() for k, v in module.state_dict().items()}
    bad = {k: np.ones_like(v) for k, v in before.items()}
    bad["weight_hh_l1"] = np.ones((3, 3))
    with pytest.raises(ValueError):
        module.load_state_dict(bad)
    for k, v in module.state_dict().items():
        assert np.array_equal(v, before[k])


@pytest.mark.parametrize("layout", ["read-only", "negative strides", "Fortran order", "strided view"])
def test_odd_layouts_work_and_agree(layout, rng):
    module = lstm()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    expected, _ = module(x)
    if layout == "read-only":
        odd = x.copy()
        odd.flags.writeable = False
    elif layout == "negative strides":
        odd = x[::-1].copy()[::-1]
    elif layout == "Fortran order":
        odd = np.asfortranarray(x)
    else:
        odd = np.repeat(x, 2, axis=2)[:, :, ::2]
    got, _ = module(odd)
    np.testing.assert_array_equal(got, expected)


def test_empty_batch_works():
    y, (h, c) = lstm()(x32((T, 0, I)))
    assert y.shape == (T, 0, H) and h.shape == (LAYERS, 0, H) and c.shape == (LAYERS, 0, H)

"""fusedrnn.torch: the custom operators and fusedrnn.torch.recurrent, through PyTorch's autograd.

Against fusedrnn.functional (the same kernels: the same numbers), against torch.nn.RNN/LSTM/GRU
(the outside oracle), gradcheck, opcheck and torch.compile.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusedrnn  # noqa: E402
import fusedrnn.torch as fr  # noqa: E402
from fusedrnn import functional as F  # noqa: E402
from rnn_cases import CELLS, GATES, make_lengths  # noqa: E402
from tolerances import INPUT_GRAD, OUTPUT, STATE, WEIGHT_GRAD, assert_close  # noqa: E402

DTYPES = (np.float32, np.float64)
NAMES = F.WEIGHT_NAMES  # weight_ih, weight_hh, bias_ih, bias_hh, weight_hr


def make_problem(rng, cell, dtype, T=5, B=4, I=3, H=6, P=None, bias=True, states=True):
    """NumPy arrays: x, h0, c0 (None for cells without c), weights (dict of the five names)."""
    G, P = GATES[cell], P or H
    k = 1.0 / np.sqrt(H)

    def uniform(*shape, scale=k):
        return rng.uniform(-scale, scale, shape).astype(dtype)

    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = uniform(B, P, scale=1.0) if states else None
    c0 = uniform(B, H, scale=1.0) if states and F.CELLS[cell].has_cell_state else None
    weights = dict(weight_ih=uniform(G * H, I), weight_hh=uniform(G * H, P),
                   bias_ih=uniform(G * H) if bias else None, bias_hh=uniform(G * H) if bias else None,
                   weight_hr=uniform(P, H) if P != H else None)
    return x, h0, c0, weights


def leaf(array):
    return None if array is None else torch.tensor(array, requires_grad=True)


def run_torch(cell, x, h0, c0, weights, cotangents, **options):
    """fusedrnn.torch.recurrent on fresh leaf tensors, and its backward with the cotangents.

    -> (y, h_n, c_n), {name: gradient} for x, h0, c0 and the weights given."""
    leaves = dict(x=leaf(x), h0=leaf(h0), c0=leaf(c0), **{name: leaf(w) for name, w in weights.items()})
    outputs = fr.recurrent(cell, leaves["x"], leaves["h0"], leaves["c0"], {n: leaves[n] for n in NAMES}, **options)
    pairs = [(o, torch.from_numpy(d)) for o, d in zip(outputs, cotangents) if o is not None]
    torch.autograd.backward([o for o, _ in pairs], [d for _, d in pairs])
    grads = {name: t.grad.numpy() for name, t in leaves.items() if t is not None}
    return [None if o is None else o.detach().numpy() for o in outputs], grads


def cotangents_of(rng, outputs):
    return [None if o is None else rng.standard_normal(o.shape).astype(o.dtype) for o in outputs]


# -- the same numbers as fusedrnn.functional ------------------------------------------------------

VARIANTS = {
    "plain": dict(),
    "no_bias_no_states": dict(),
    "lengths": dict(lengths=True),
    "lengths_reverse": dict(lengths=True, reverse=True),
    "reverse": dict(reverse=True),
    "mask_zero": dict(mask=True),
    "mask_repeat_reverse": dict(mask=True, masked_output="repeat", reverse=True),
    "recurrent_scale": dict(recurrent_scale=True),
    "projection": dict(),
}


def variant_options(rng, variant, T, B, P):
    options = dict(VARIANTS[variant])
    if options.pop("lengths", False):
        options["lengths"] = make_lengths(rng, T, B)
    if options.pop("mask", False):
        options["mask"] = rng.random((T, B)) < 0.7
    if options.pop("recurrent_scale", False):
        options["recurrent_scale"] = (rng.random((B, P)) < 0.8) / 0.8
    return options


def functional_cases():
    for cell in CELLS:
        for variant in VARIANTS:
            if variant != "projection" or cell == "lstm":
                yield cell, variant


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("cell, variant", list(functional_cases()))
def test_outputs_and_gradients_are_those_of_the_uniform_op(rng, cell, variant, dtype):
    T, B = 5, 4
    x, h0, c0, weights = make_problem(rng, cell, dtype, T=T, B=B, P=4 if variant == "projection" else None,
                                      bias=variant != "no_bias_no_states", states=variant != "no_bias_no_states")
    P = weights["weight_hh"].shape[1]
    options = variant_options(rng, variant, T, B, P)
    if "recurrent_scale" in options:
        options["recurrent_scale"] = options["recurrent_scale"].astype(dtype)
    y, h_n, c_n, saved = F.recurrent_forward(cell, x, h0, c0, weights, **options)
    cotangents = cotangents_of(rng, (y, h_n, c_n))
    dx, dh0, dc0, dweights = F.recurrent_backward(*cotangents, saved)

    scale = options.pop("recurrent_scale", None)
    if scale is not None:
        options["recurrent_scale"] = torch.from_numpy(scale)
    outputs, grads = run_torch(cell, x, h0, c0, weights, cotangents, **options)
    for name, actual, expected in zip(("y", "h_n", "c_n"), outputs, (y, h_n, c_n)):
        assert (actual is None) == (expected is None), name
        if actual is not None:
            assert actual.dtype == dtype and actual.shape == expected.shape
            np.testing.assert_array_equal(actual, expected, err_msg=name)
    expected_grads = dict(x=dx, h0=dh0, c0=dc0, **dweights)
    assert set(grads) == {name for name, value in dict(x=x, h0=h0, c0=c0, **weights).items() if value is not None}
    for name, grad in grads.items():
        np.testing.assert_array_equal(grad, expected_grads[name], err_msg=name)


# -- torch.nn as the outside oracle ---------------------------------------------------------------

TORCH_CELLS = {"rnn_tanh": ("RNN", dict(nonlinearity="tanh")), "rnn_relu": ("RNN", dict(nonlinearity="relu")),
               "lstm": ("LSTM", {}), "gru": ("GRU", {})}


def torch_oracle(cell, x, h0, c0, weights, cotangents, reverse):
    """torch.nn's single-layer module with these weights, in float64 (the table compares float32
    results with a float64 evaluation on the same inputs): outputs and gradients as arrays."""
    kind, options = TORCH_CELLS[cell]
    H = weights["weight_hh"].shape[0] // GATES[cell]
    P = weights["weight_hh"].shape[1]
    if weights["weight_hr"] is not None:
        options = dict(options, proj_size=P)
    module = getattr(torch.nn, kind)(x.shape[2], H, dtype=torch.float64, **options)
    with torch.no_grad():
        for name in NAMES:
            if weights[name] is not None:
                getattr(module, name + "_l0").copy_(torch.from_numpy(weights[name]))
    xt, h0t = leaf(x.astype(np.float64)), leaf(h0.astype(np.float64))
    state = h0t[None]
    if c0 is not None:
        c0t = leaf(c0.astype(np.float64))
        state = (state, c0t[None])
    y, final = module(xt.flip(0) if reverse else xt, state)
    if reverse:
        y = y.flip(0)
    outputs = [y, final[0][0], final[1][0]] if c0 is not None else [y, final[0], None]
    pairs = [(o, torch.from_numpy(d.astype(np.float64))) for o, d in zip(outputs, cotangents) if o is not None]
    torch.autograd.backward([o for o, _ in pairs], [d for _, d in pairs])
    grads = dict(x=xt.grad, h0=h0t.grad, **{name: getattr(module, name + "_l0").grad for name in NAMES
                                            if weights[name] is not None})
    if c0 is not None:
        grads["c0"] = c0t.grad
    return [None if o is None else o.detach().numpy() for o in outputs], {k: v.numpy() for k, v in grads.items()}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("cell, projection, reverse", [
    (cell, False, reverse) for cell in TORCH_CELLS for reverse in (False, True)] + [("lstm", True, False)])
def test_outputs_and_gradients_match_torch_nn(rng, cell, projection, reverse, dtype):
    x, h0, c0, weights = make_problem(rng, cell, dtype, T=7, B=3, I=5, H=33 if cell == "gru" else 8,
                                      P=5 if projection else None)
    P = weights["weight_hh"].shape[1]
    cotangents = cotangents_of(rng, (x[:, :, :1].repeat(P, 2), h0, c0))
    outputs, grads = run_torch(cell, x, h0, c0, weights, cotangents, reverse=reverse)
    expected_outputs, expected_grads = torch_oracle(cell, x, h0, c0, weights, cotangents, reverse)
    for name, actual, expected, kind in zip(("y", "h_n", "c_n"), outputs, expected_outputs, (OUTPUT, STATE, STATE)):
        if expected is not None:
            assert_close(actual, expected, dtype, kind, name)
    assert set(grads) == set(expected_grads)
    for name, grad in grads.items():
        kind = INPUT_GRAD if name in ("x", "h0", "c0") else WEIGHT_GRAD
        assert_close(grad, expected_grads[name], dtype, kind, name)

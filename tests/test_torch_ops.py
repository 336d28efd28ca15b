"""fusedrnn.torch: the custom operators and fusedrnn.torch.recurrent, through PyTorch's autograd.

Against fusedrnn.functional (the same kernels: the same numbers), against torch.nn.RNN/LSTM/GRU
(the outside oracle), gradcheck, opcheck and torch.compile.
"""

import contextlib
import gc
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusedrnn  # noqa: E402
import fusedrnn.torch as fr  # noqa: E402
from fusedrnn import _core  # noqa: E402
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


# -- gradcheck, opcheck, torch.compile ------------------------------------------------------------

def tensors_of(cell, x, h0, c0, weights, requires_grad=True):
    def tensor(array):
        return None if array is None else torch.tensor(array, requires_grad=requires_grad)
    return tensor(x), tensor(h0), tensor(c0), {name: tensor(w) for name, w in weights.items()}


GRADCHECK_CASES = [(cell, {}) for cell in CELLS] + [
    ("lstm", dict(projection=True)), ("gru", dict(lengths=True, reverse=True)),
    ("rnn_tanh", dict(mask=True, masked_output="repeat")), ("gru_reset_before", dict(recurrent_scale=True))]


@pytest.mark.parametrize("cell, case", GRADCHECK_CASES, ids=lambda v: v if isinstance(v, str) else
                         "-".join(v) or "plain")
def test_gradcheck_in_float64(rng, cell, case):
    T, B, I, H = 3, 3, 3, 5
    x, h0, c0, weights = make_problem(rng, cell, np.float64, T=T, B=B, I=I, H=H,
                                      P=3 if case.get("projection") else None)
    if cell == "rnn_relu":  # most pre-activations positive: gradients then flow through most units
        weights["bias_ih"] += 0.5
    options = {key: value for key, value in case.items() if key not in ("projection", "lengths", "mask")}
    if case.get("lengths"):
        options["lengths"] = torch.tensor([3, 0, 2])
    if case.get("mask"):
        options["mask"] = torch.tensor(rng.random((T, B)) < 0.6)
    if case.get("recurrent_scale"):
        options["recurrent_scale"] = torch.tensor(rng.uniform(0.5, 1.5, (B, H)))
    xt, h0t, c0t, wt = tensors_of(cell, x, h0, c0, weights)
    names = [name for name in NAMES if wt[name] is not None]

    def function(x, h0, c0, *values):
        outputs = fr.recurrent(cell, x, h0, c0, dict(zip(names, values)), **options)
        return tuple(o for o in outputs if o is not None)

    assert torch.autograd.gradcheck(function, (xt, h0t, c0t, *(wt[n] for n in names)))


def op_arguments(rng, cell, training, projection=False, lengths=False, mask=False, recurrent_scale=False):
    T, B = 4, 3
    x, h0, c0, weights = make_problem(rng, cell, np.float32, T=T, B=B, I=3, H=5, P=4 if projection else None)
    xt, h0t, c0t, wt = tensors_of(cell, x, h0, c0, weights, requires_grad=training)
    P = weights["weight_hh"].shape[1]
    return (cell, xt, h0t, c0t, *(wt[name] for name in NAMES),
            torch.tensor([4, 0, 2]) if lengths else None,
            torch.tensor(rng.random((T, B)) < 0.6) if mask else None,
            "repeat" if mask else "zero", bool(lengths), training,
            torch.tensor(rng.uniform(0.5, 1.5, (B, P)), dtype=torch.float32) if recurrent_scale else None)


@pytest.mark.parametrize("cell, training, options", [
    ("lstm", True, dict(projection=True, lengths=True)),
    ("gru_reset_before", True, dict(mask=True, recurrent_scale=True)),
    ("rnn_relu", False, {}),
], ids=["lstm-projection-lengths", "gru_reset_before-mask-scale", "rnn_relu-inference"])
def test_opcheck_forward(rng, cell, training, options):
    torch.library.opcheck(torch.ops.fusedrnn.recurrent_forward.default, op_arguments(rng, cell, training, **options))


def test_opcheck_forward_on_cuda_tensors(rng):
    import fusedrnn.cuda

    if not torch.cuda.is_available() or not fusedrnn.cuda.is_available():
        pytest.skip("needs PyTorch with CUDA and fusedrnn's CUDA backend on a GPU")
    arguments = op_arguments(rng, "lstm", True, projection=True, lengths=True)
    on_cuda = [a.detach().cuda().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) and a.is_floating_point()
               else a.cuda() if isinstance(a, torch.Tensor) else a for a in arguments]
    torch.library.opcheck(torch.ops.fusedrnn.recurrent_forward.default, tuple(on_cuda))


def test_tensors_on_different_devices_raise(rng):
    x, h0, c0, weights = make_problem(rng, "gru", np.float32, T=2, B=2, I=3, H=4)
    xt, h0t, _, wt = tensors_of("gru", x, h0, c0, weights)
    wt["weight_hh"] = torch.empty(wt["weight_hh"].shape, device="meta")
    with pytest.raises(ValueError, match="x's device"):
        fr.recurrent("gru", xt, h0t, None, wt)


@pytest.mark.parametrize("cell, options", [
    ("lstm", dict(projection=True, lengths=True)),
    ("gru", {}),
    ("gru_reset_before", dict(mask=True, recurrent_scale=True)),
], ids=["lstm-projection-lengths", "gru", "gru_reset_before-mask-scale"])
def test_eager_calls_and_the_operators_give_the_same_outputs_and_gradients(rng, cell, options):
    """fusedrnn.torch.recurrent runs the implementations through an autograd.Function in eager
    mode, the operators (and their registered autograd) under torch.compile: the same numbers."""
    arguments = op_arguments(rng, cell, True, **options)
    (_, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, mask, masked_output, reverse, _,
     recurrent_scale) = arguments
    leaves = [t for t in (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) if t is not None]
    weights = dict(zip(NAMES, (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)))
    eager = fr.recurrent(cell, x, h0, c0, weights, lengths=lengths, mask=mask, masked_output=masked_output,
                         reverse=reverse, recurrent_scale=recurrent_scale)
    operator = torch.ops.fusedrnn.recurrent_forward(*arguments)[:3]
    cotangents = [torch.from_numpy(d) for d in cotangents_of(rng, [o.detach().numpy() for o in eager if o is not None])]
    results = []
    for outputs in (eager, operator):
        outputs = [o for o in outputs if o is not None and o.numel()]
        grads = torch.autograd.grad(outputs, leaves, cotangents[:len(outputs)])
        results.append([o.detach() for o in outputs] + list(grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def strided_like_transpose(t):
    """The same values with the strides of a transposed tensor (batch-first x, a transposed weight)."""
    return t.transpose(0, 1).contiguous().transpose(0, 1)


@pytest.mark.parametrize("want_dx", (True, False), ids=["dx", "no-dx"])
@pytest.mark.parametrize("contiguous", (True, False), ids=["contiguous", "strided"])
def test_opcheck_backward(rng, contiguous, want_dx):
    arguments = op_arguments(rng, "lstm", True, lengths=True)
    (cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mask, masked_output, reverse, _, scale) = arguments
    with torch.no_grad():
        y, h_n, c_n, gates, h, c, m = torch.ops.fusedrnn.recurrent_forward(*arguments)
    grads = [torch.tensor(rng.standard_normal(t.shape), dtype=torch.float32) for t in (y, h_n, c_n)]
    inputs = [t.detach() for t in (x, w_ih, w_hh, b_ih, b_hh)]
    if not contiguous:  # the gradients are contiguous whatever the strides of x and the weights
        inputs = [strided_like_transpose(t) if t.dim() > 1 else t for t in inputs]
        assert not inputs[0].is_contiguous() and not inputs[1].is_contiguous()
    torch.library.opcheck(torch.ops.fusedrnn.recurrent_backward.default,
                          (cell, *grads, *inputs, w_hr, scale, lengths, mask, masked_output, reverse, gates, h, c, m,
                           want_dx))


def test_compiled_with_fullgraph_equals_eager(rng):
    x, h0, c0, weights = make_problem(rng, "lstm", np.float32, T=6, B=3, I=4, H=7)
    del weights["weight_hr"]
    lengths = torch.tensor([6, 2, 4])

    def step(x, h0, c0, weights):
        y, h_n, c_n = fr.recurrent("lstm", x, h0, c0, weights, lengths=lengths)
        return y.sin().sum() + (h_n * c_n).sum()

    def loss_and_grads(function):
        x_, h0_, c0_, weights_ = tensors_of("lstm", x, h0, c0, weights)
        loss = function(x_, h0_, c0_, weights_)
        loss.backward()  # the backward graph AOTAutograd compiled
        return loss, [t.grad for t in (x_, h0_, c0_, *weights_.values())]

    eager_loss, eager_grads = loss_and_grads(step)
    # aot_eager: Dynamo's whole-graph capture and AOTAutograd's forward and backward graphs (where
    # the fake kernels and the autograd registration are traced) without Inductor's code
    # generation, which costs ~15 s here and never looks inside the operators.
    loss, grads = loss_and_grads(torch.compile(step, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(loss, eager_loss)
    assert len(grads) == len(eager_grads) == 7
    for grad, expected in zip(grads, eager_grads):
        torch.testing.assert_close(grad, expected)


# -- in-place changes, dtypes, copies, threads, import ---------------------------------------------

@pytest.mark.parametrize("changed", ["x", "weight_hh", "bias_ih"])
def test_an_input_changed_in_place_before_the_backward_raises(rng, changed):
    x, h0, c0, weights = make_problem(rng, "gru", np.float32)
    xt, h0t, c0t, wt = tensors_of("gru", x, h0, c0, weights)
    y, h_n, _ = fr.recurrent("gru", xt, h0t, c0t, wt)
    with torch.no_grad():
        (xt if changed == "x" else wt[changed]).mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (y.sum() + h_n.sum()).backward()


@pytest.mark.parametrize("route", ["eager", "operator"])
def test_a_gradient_of_a_gradient_raises_instead_of_dropping_terms(rng, route, monkeypatch):
    """create_graph=True would make the gradients constants: second-order terms through the layer
    would be left out silently, so the backward refuses."""
    if route == "operator":  # what a compiled graph calls
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x, h0, c0, weights = make_problem(rng, "lstm", np.float64)
    xt, h0t, c0t, wt = tensors_of("lstm", x, h0, c0, weights)
    y, h_n, c_n = fr.recurrent("lstm", xt, h0t, c0t, wt)
    with pytest.raises(RuntimeError, match="gradient of a gradient"):
        torch.autograd.grad(y.sum(), xt, create_graph=True)
    # Without create_graph the same call works.
    y, h_n, c_n = fr.recurrent("lstm", xt, h0t, c0t, wt)
    assert torch.autograd.grad(y.sum(), xt)[0].shape == xt.shape


@pytest.mark.parametrize("route", ["eager", "operator"])
def test_an_input_that_needs_no_gradient_gets_no_dx_computed(rng, route, monkeypatch):
    """x read straight from the data (no requires_grad): the backward kernels are asked for no dx,
    and every other gradient is bit for bit the one computed with x requiring a gradient."""
    if route == "operator":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    asked = []
    backward = F.recurrent_backward

    def recording(*arguments, want_dx=True):
        asked.append(want_dx)
        return backward(*arguments, want_dx=want_dx)
    monkeypatch.setattr(F, "recurrent_backward", recording)
    x, h0, c0, weights = make_problem(rng, "lstm", np.float32)
    del weights["weight_hr"]
    grads = {}
    for x_needs_grad in (True, False):
        xt, h0t, c0t, wt = tensors_of("lstm", x, h0, c0, weights)
        xt.requires_grad_(x_needs_grad)
        y, h_n, c_n = fr.recurrent("lstm", xt, h0t, c0t, wt)
        (y.square().sum() + h_n.sum()).backward()
        assert (xt.grad is not None) == x_needs_grad
        grads[x_needs_grad] = [t.grad for t in (h0t, c0t, *wt.values())]
    assert asked == [True, False]
    for with_dx, without in zip(grads[True], grads[False]):
        torch.testing.assert_close(without, with_dx, rtol=0, atol=0)


@pytest.mark.parametrize("route", ["eager", "operator"])
@pytest.mark.parametrize("used", ["y", "h_n", "c_n"])
def test_outputs_that_reach_no_loss_count_as_zero_gradients(rng, route, used, monkeypatch):
    """The eager route gets None for the gradient of an output the loss does not use (it does not
    materialise zeros), the operator's autograd zero tensors: both give the gradients of explicit
    zero cotangents."""
    if route == "operator":
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x, h0, c0, weights = make_problem(rng, "lstm", np.float64)
    del weights["weight_hr"]
    xt, h0t, c0t, wt = tensors_of("lstm", x, h0, c0, weights)
    leaves = [xt, h0t, c0t, *wt.values()]
    outputs = fr.recurrent("lstm", xt, h0t, c0t, wt)
    chosen = dict(zip(("y", "h_n", "c_n"), outputs))[used]
    grads = torch.autograd.grad(chosen.square().sum(), leaves)
    outputs = fr.recurrent("lstm", xt, h0t, c0t, wt)
    cotangents = [2 * o.detach() if name == used else torch.zeros_like(o)
                  for name, o in zip(("y", "h_n", "c_n"), outputs)]
    expected = torch.autograd.grad(outputs, leaves, cotangents)
    for grad, reference in zip(grads, expected):
        torch.testing.assert_close(grad, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_half_precision_computes_in_float32_and_returns_its_dtype(rng, cell, dtype):
    x, h0, c0, weights = make_problem(rng, cell, np.float32)
    del weights["weight_hr"]
    half = [t.to(dtype).requires_grad_() for t in (torch.from_numpy(x), torch.from_numpy(h0))]
    half_weights = {name: torch.from_numpy(w).to(dtype).requires_grad_() for name, w in weights.items()}
    outputs = fr.recurrent(cell, half[0], half[1], None, half_weights)
    sum(o.float().sum() for o in outputs if o is not None).backward()
    # The same widened values in float32: the same computation, rounded to the half dtype at the end.
    wide = [t.detach().float().requires_grad_() for t in half]
    wide_weights = {name: w.detach().float().requires_grad_() for name, w in half_weights.items()}
    expected = fr.recurrent(cell, wide[0], wide[1], None, wide_weights)
    sum(o.sum() for o in expected if o is not None).backward()
    for output, reference in zip(outputs, expected):
        if reference is not None:
            assert output.dtype == dtype
            torch.testing.assert_close(output, reference.to(dtype), rtol=0, atol=0)
    for tensor, reference in zip(half + list(half_weights.values()), wide + list(wide_weights.values())):
        assert tensor.grad.dtype == dtype
        torch.testing.assert_close(tensor.grad, reference.grad.to(dtype), rtol=0, atol=0)


def test_contiguous_float_tensors_reach_the_kernels_without_a_copy(rng, monkeypatch):
    x, h0, c0, weights = make_problem(rng, "lstm", np.float32)
    xt, h0t, c0t, wt = tensors_of("lstm", x, h0, c0, weights)
    seen = {}
    original = F.recurrent_forward

    def spy(cell, x, h0, c0, weights, **options):
        seen.update(x=x, h0=h0, c0=c0, **weights)
        return original(cell, x, h0, c0, weights, **options)

    monkeypatch.setattr(F, "recurrent_forward", spy)
    fr.recurrent("lstm", xt, h0t, c0t, wt)
    for name, tensor in dict(x=xt, h0=h0t, c0=c0t, **wt).items():
        if tensor is not None:
            assert seen[name].__array_interface__["data"][0] == tensor.data_ptr(), name


@pytest.mark.parametrize("change", ["none", "in_place", "assign_data", "assign_transposed", "double", "half",
                                    "training"])
def test_kept_weight_views_follow_every_change_of_the_weights(rng, change):
    """The NumPy views of the weights are kept from call to call (by tensor); whatever happens to a
    weight, the next call computes with what the tensor holds then, as a call on fresh copies of
    the tensors does. A view leaves with its tensor."""
    from fusedrnn.torch import _ops

    x, _, _, weights = make_problem(rng, "rnn_tanh", np.float32, I=6)  # (square weight_hh (H, H))
    wt = {name: None if w is None else torch.tensor(w) for name, w in weights.items()}
    xt = torch.tensor(x)
    with torch.no_grad():
        first = fr.recurrent("rnn_tanh", xt, None, None, wt)[0]
    kept = _ops._VIEWS[id(wt["weight_hh"])][4]
    assert kept.__array_interface__["data"][0] == wt["weight_hh"].data_ptr()
    weight = wt["weight_hh"]
    if change == "in_place":
        weight.mul_(0.5)
    elif change == "assign_data":
        weight.data = weight * 0.5
    elif change == "assign_transposed":  # the same address and shape, other strides
        weight.data = weight.t()
    elif change in ("double", "half"):
        wt = {name: None if w is None else w.to(getattr(torch, change)) for name, w in wt.items()}
        xt = xt.to(getattr(torch, change))
    elif change == "training":  # the same weights, then with the graph: the backward reads them too
        for w in wt.values():
            if w is not None:
                w.requires_grad_()
    with contextlib.nullcontext() if change == "training" else torch.no_grad():
        after = fr.recurrent("rnn_tanh", xt, None, None, wt)[0]
    fresh = {name: None if w is None else w.detach().clone().requires_grad_(w.requires_grad) for name, w in wt.items()}
    expected = fr.recurrent("rnn_tanh", xt.clone(), None, None, fresh)[0]
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    assert torch.equal(after, first) == (change in ("none", "training"))
    if change == "training":
        grads = torch.autograd.grad(after.sum(), [w for w in wt.values() if w is not None])
        expected_grads = torch.autograd.grad(expected.sum(), [w for w in fresh.values() if w is not None])
        for a, b in zip(grads, expected_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Half weights are widened copies, which would go stale: not kept. Freed tensors leave.
    assert (id(wt["weight_hh"]) in _ops._VIEWS) == (change != "half")
    keys = [id(w) for w in wt.values() if w is not None]
    del wt, weight, after, expected
    gc.collect()
    assert not any(key in _ops._VIEWS for key in keys)


def test_non_contiguous_inputs_give_the_results_of_contiguous_ones(rng):
    x, h0, c0, weights = make_problem(rng, "rnn_tanh", np.float64)
    batch_major = torch.tensor(x.transpose(1, 0, 2).copy(), requires_grad=True)
    weight_hh_t = torch.tensor(weights["weight_hh"].T.copy(), requires_grad=True)
    y, h_n, _ = fr.recurrent("rnn_tanh", batch_major.transpose(0, 1), None, None,
                             dict(weights, weight_ih=torch.tensor(weights["weight_ih"]), weight_hh=weight_hh_t.t(),
                                  bias_ih=None, bias_hh=None, weight_hr=None))
    (y.sum() + h_n.sum()).backward()
    outputs, grads = run_torch("rnn_tanh", x, None, None, dict(weights, bias_ih=None, bias_hh=None),
                               [np.ones_like(y.detach().numpy()), np.ones_like(h_n.detach().numpy()), None])
    np.testing.assert_array_equal(y.detach().numpy(), outputs[0])
    np.testing.assert_array_equal(batch_major.grad.transpose(0, 1).numpy(), grads["x"])
    np.testing.assert_array_equal(weight_hh_t.grad.t().numpy(), grads["weight_hh"])


def test_the_eager_backward_reuses_the_forwards_arrays_once_and_only_views(rng, monkeypatch):
    """EagerForward keeps the arrays its forward read and computed for the backward when they are
    views of the saved tensors, drops them after that backward (they would keep the saved memory
    alive as long as the outputs), and a second backward of a retained graph, which goes through
    the tensors again, gives the same gradients. A non-contiguous input (copied to reach the
    kernels) keeps nothing."""
    x, h0, c0, weights = make_problem(rng, "lstm", np.float32)
    xt, h0t, c0t, wt = tensors_of("lstm", x, h0, c0, weights)
    y, h_n, c_n = fr.recurrent("lstm", xt, h0t, c0t, wt)
    node = y.grad_fn
    assert node.arrays is not None and node.arrays["x"].__array_interface__["data"][0] == xt.data_ptr()
    leaves = [t for t in (xt, h0t, c0t, *wt.values()) if t is not None]
    from fusedrnn.torch import _ops
    rebuilt = []   # (the backward from the tensors makes their index arrays; the kept one does not)
    original = _ops._index_array
    monkeypatch.setattr(_ops, "_index_array", lambda *a: rebuilt.append(True) or original(*a))
    first = torch.autograd.grad([y.sum(), h_n.sum()], leaves, retain_graph=True)
    assert node.arrays is None and not rebuilt   # the kept arrays served, and are gone
    second = torch.autograd.grad([y.sum(), h_n.sum()], leaves)
    assert rebuilt   # the tensors' arrays again
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    batch_major = xt.detach().transpose(0, 1).contiguous().requires_grad_()
    y, _, _ = fr.recurrent("lstm", batch_major.transpose(0, 1), h0t, c0t, wt)
    assert y.grad_fn.arrays is None


def test_without_grad_nothing_is_saved_and_the_results_are_the_same(rng):
    x, h0, c0, weights = make_problem(rng, "lstm", np.float32, P=4)
    arguments = op_arguments(rng, "lstm", True, projection=True)
    with torch.no_grad():
        inference = torch.ops.fusedrnn.recurrent_forward(*arguments[:13], False, arguments[14])
    training = torch.ops.fusedrnn.recurrent_forward(*arguments)
    assert [tuple(t.shape) for t in inference[3:]] == [(0,)] * 4
    assert [tuple(t.shape) for t in training[3:]] == [(4, 3, 5 * F.CELLS["lstm"].saved), (5, 3, 4), (5, 3, 5),
                                                      (4, 3, 5)]
    for a, b in zip(inference[:3], training[:3]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with torch.no_grad():
        y, h_n, c_n = fr.recurrent("lstm", *tensors_of("lstm", x, h0, c0, weights))
    assert not y.requires_grad and c_n.shape == (4, 6)
    forward = torch.ops.fusedrnn.recurrent_forward(*arguments[:13], False, arguments[14])
    with pytest.raises(RuntimeError, match="training=False"):
        forward[0].sum().backward()


def test_threads_follow_torch_unless_set_for_fusedrnn(rng, monkeypatch):
    x, h0, c0, weights = make_problem(rng, "rnn_relu", np.float32)
    before, kernel_threads = torch.get_num_threads(), fusedrnn.get_num_threads()
    monkeypatch.setattr(fusedrnn, "_user_threads", None)  # restored after the test
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fr.recurrent("rnn_relu", *tensors_of("rnn_relu", x, h0, c0, weights))
            assert fusedrnn.get_num_threads() == threads
        fusedrnn.set_num_threads(1)  # from now on fusedrnn's own count, in every thread
        fr.recurrent("rnn_relu", *tensors_of("rnn_relu", x, h0, c0, weights))
        assert fusedrnn.get_num_threads() == 1
        fusedrnn.set_num_threads(None)  # following PyTorch again
        assert fusedrnn._user_threads is None
        fr.recurrent("rnn_relu", *tensors_of("rnn_relu", x, h0, c0, weights))
        assert fusedrnn.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        _core.set_max_threads(kernel_threads)


def test_import_without_torch_says_how_to_install_it():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import fusedrnn\n"
            "try:\n"
            "    import fusedrnn.torch\n"
            "except ImportError as error:\n"
            "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True)
    assert 'pip install "fusedrnn[torch]"' in result.stdout


def test_the_package_imports_pytorch_itself():
    assert fr.torch is torch and fr._ops.torch is torch


def test_wrong_arguments_raise_before_any_kernel_runs(rng):
    x, h0, c0, weights = make_problem(rng, "gru", np.float32)
    xt, h0t, _, wt = tensors_of("gru", x, h0, c0, weights)
    with pytest.raises(ValueError, match="cell must be one of"):
        fr.recurrent("lstmm", xt, h0t, None, wt)
    with pytest.raises(ValueError, match="gru has no cell state"):
        fr.recurrent("gru", xt, h0t, h0t, wt)
    with pytest.raises(ValueError, match="unknown weight name"):
        fr.recurrent("gru", xt, h0t, None, dict(wt, weight_xx=xt))
    with pytest.raises(TypeError, match="dtype float64 but x has dtype float32"):
        fr.recurrent("gru", xt, h0t.double(), None, wt)

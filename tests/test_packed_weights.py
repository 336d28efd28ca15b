"""Packed weights kept across calls (fusedrnn.functional.PackedWeights and the layers that own one).

A hit must pack nothing (the native cache's ``packs`` count stays) and give bitwise the result of
a call without the handle; every kind of weight change must make the next call pack afresh and
give the new weights' result. A generation step of one sequence (T = B = 1) packs nothing: its
products read the weights in place, and the handle goes unused. The cache tests here use two
sequences.
"""

import copy
import gc
import weakref

import numpy as np
import pytest

import fusedrnn.keras as fk
from fusedrnn import functional as F
from fusedrnn import nn, optim

from rnn_cases import GATES, make_weights


def run(cell, x, weights, **options):
    B, P = x.shape[1], weights["weight_hh"].shape[1]
    H = weights["weight_hh"].shape[0] // GATES[cell]
    h0 = np.full((B, P), 0.1, x.dtype)
    c0 = np.full((B, H), -0.2, x.dtype) if cell == "lstm" else None
    y, h_n, c_n, _ = F.recurrent_forward(cell, x, h0, c0, weights, training=False, **options)
    return (y, h_n) + (() if c_n is None else (c_n,))


def assert_same(a, b):
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


# (T, B, I, H): generation steps, a few rows, ragged panels, a merged input GEMM (many rows).
SHAPES = [(1, 2, 8, 16), (3, 2, 5, 37), (1, 2, 40, 70), (20, 12, 24, 33)]


@pytest.mark.parametrize("cell", list(GATES))
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_hits_pack_nothing_and_match_a_call_without_the_handle(cell, shape, rng):
    T, B, I, H = shape
    weights = make_weights(rng, cell, I, H)
    handle = F.PackedWeights()
    expected = run(cell, rng.standard_normal((T, B, I)).astype(np.float32), weights)
    for step in range(3):
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        packs_before = handle._native.packs
        got = run(cell, x, weights, packed=handle, packed_version=7)
        assert_same(got, run(cell, x, weights))
        if step > 0:
            assert handle._native.packs == packs_before, "a hit must not pack"
    assert (handle.hits, handle.misses) == (2, 1)
    assert handle.nbytes >= weights["weight_hh"].nbytes
    del expected


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_bf16_and_projection_and_float64_hit_bitwise(cell, rng):
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    weights = make_weights(rng, cell, 6, 20)
    handle = F.PackedWeights()
    for _ in range(2):
        assert_same(run(cell, x, weights, bf16_weights=True, packed=handle, packed_version=0),
                    run(cell, x, weights, bf16_weights=True))
    weights64 = make_weights(rng, cell, 6, 20, np.float64, proj=7 if cell == "lstm" else 0)
    handle64 = F.PackedWeights()
    for _ in range(2):
        assert_same(run(cell, x.astype(np.float64), weights64, packed=handle64, packed_version=0),
                    run(cell, x.astype(np.float64), weights64))
    assert handle.hits == handle64.hits == 1


def test_every_key_change_repacks(rng):
    cell, x = "gru", rng.standard_normal((1, 2, 5)).astype(np.float32)
    weights = make_weights(rng, cell, 5, 18)
    handle = F.PackedWeights()

    def check(w, expect_miss, version=1, **options):
        misses = handle.misses
        assert_same(run(cell, x.astype(w["weight_ih"].dtype), w, packed=handle, packed_version=version, **options),
                    run(cell, x.astype(w["weight_ih"].dtype), w, **options))
        assert handle.misses == misses + expect_miss

    check(weights, True)
    check(weights, False)
    weights["weight_hh"] *= 2             # in place, with the version bumped
    check(weights, True, version=2)
    weights = dict(weights, weight_ih=weights["weight_ih"] + 1)   # a new array, same version
    check(weights, True, version=2)
    check(weights, True, version=2, bf16_weights=True)            # the bf16 flag
    check(weights, True, version=2)
    check({k: v.astype(np.float64) for k, v in weights.items()}, True, version=2)   # the dtype
    handle.clear()
    assert handle.nbytes == 0
    check(weights, True, version=2)


def test_without_a_version_the_fingerprint_sees_in_place_edits(rng):
    x = rng.standard_normal((1, 2, 4)).astype(np.float32)
    weights = make_weights(rng, "lstm", 4, 12)
    handle = F.PackedWeights()
    run("lstm", x, weights, packed=handle)
    weights["weight_hh"][3, 2] += 1.0     # in place, nobody told
    assert_same(run("lstm", x, weights, packed=handle), run("lstm", x, weights))
    assert handle.misses == 2
    run("lstm", x, weights, packed=handle)
    assert handle.hits == 1


def test_a_handle_serves_another_cell_or_shape_correctly(rng):
    handle = F.PackedWeights()
    for cell, I, H in [("lstm", 4, 12), ("gru", 4, 12), ("gru", 6, 12), ("rnn_relu", 6, 30)]:
        x = rng.standard_normal((2, 2, I)).astype(np.float32)
        weights = make_weights(rng, cell, I, H)
        assert_same(run(cell, x, weights, packed=handle, packed_version=0), run(cell, x, weights))


def test_bad_handle_arguments(rng):
    x = rng.standard_normal((1, 1, 4)).astype(np.float32)
    weights = make_weights(rng, "gru", 4, 8)
    with pytest.raises(TypeError, match="PackedWeights"):
        run("gru", x, weights, packed=object())
    with pytest.raises(ValueError, match="pass packed too"):
        run("gru", x, weights, packed_version=1)
    with pytest.raises(TypeError, match="hashable"):
        run("gru", x, weights, packed=F.PackedWeights(), packed_version=[1])


@pytest.mark.parametrize("cell", list(GATES))
def test_a_generation_step_of_one_sequence_reads_the_weights_in_place(rng, isa, threads, cell):
    """T = B = 1: nothing packed, the handle unused, and the reference's result; with two sequences
    (or a projection, bf16 weights, reset_after=False) the weights are packed as ever."""
    from fusedrnn import _reference
    for dtype in (np.float32, np.float64):
        weights = make_weights(rng, cell, 19, 37, dtype)
        x = rng.standard_normal((1, 1, 19)).astype(dtype)
        handle = F.PackedWeights()
        got = run(cell, x, weights, packed=handle)
        assert_same(got, run(cell, x, weights))
        in_place = not F.CELLS[cell].two_phase
        assert (handle._native.packs == 0) == in_place
        assert (handle.hits + handle.misses == 0) == in_place
        wide = {k: v.astype(np.float64) for k, v in weights.items()}
        h0 = np.full((1, 37), 0.1)
        c0 = np.full((1, 37), -0.2) if cell == "lstm" else None
        expected = _reference.recurrent_forward(cell, x.astype(np.float64), h0, c0, wide, training=False)
        tolerance = 1e-5 if dtype == np.float32 else 1e-13
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
    run(cell, np.concatenate([x, x], axis=1), weights, packed=handle)   # two sequences: packed
    assert handle._native.packs > 0


# -- the layers -------------------------------------------------------------------------------------

def generate(layer, x, steps=3):
    state, outputs = None, []
    for _ in range(steps):
        y, state = layer(x, state)
        outputs.append(y)
    return np.concatenate(outputs)


def fresh_copy(layer):
    """A layer with the same weights and no packed weights (the oracle)."""
    twin = type(layer)(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                       bidirectional=layer.bidirectional)
    twin.load_state_dict(layer.state_dict())
    twin.eval()
    twin.bf16_inference = layer.bf16_inference
    return twin


def layer_packs(layer):
    return sum(h._native.packs for h in layer.__dict__.get("_packed_weights", {}).values())


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_nn_layer_keeps_its_packed_weights_until_they_change(kind, rng):
    layer = getattr(nn, kind)(5, 16, num_layers=2, bidirectional=True, rng=1)
    layer.eval()
    x = rng.standard_normal((1, 2, 5)).astype(np.float32)
    generate(layer, x)
    packs = layer_packs(layer)
    assert packs > 0
    np.testing.assert_array_equal(generate(layer, x), generate(fresh_copy(layer), x))
    assert layer_packs(layer) == packs

    def changed(change):
        before = layer_packs(layer)
        change()
        np.testing.assert_array_equal(generate(layer, x), generate(fresh_copy(layer), x))
        assert layer_packs(layer) > before

    def in_place():
        layer.weight_hh_l1_reverse.data[0, :] += 0.5
        layer.weight_hh_l1_reverse.bump_version()

    def optimizer_step():
        layer.train()
        y, _ = layer(rng.standard_normal((2, 3, 5)).astype(np.float32))
        layer.backward(np.ones_like(y))
        optim.SGD(layer.parameters(), lr=0.5).step()
        layer.eval()

    def load():
        state = layer.state_dict()
        layer.load_state_dict({k: v * 0.5 for k, v in state.items()})

    def assign():
        layer.weight_ih_l0.data = layer.weight_ih_l0.data[::-1].copy()

    def replace_parameter():   # a new Parameter object with the old one's version: only the address tells
        new = nn.Parameter(layer.weight_hh_l0.data * 0.5)
        for _ in range(layer.weight_hh_l0.version):
            new.bump_version()
        layer.weight_hh_l0 = new

    def bf16():
        layer.bf16_inference = True

    for change in (in_place, optimizer_step, load, assign, replace_parameter, bf16):
        changed(change)


def test_nn_layer_dtype_change_repacks(rng):
    layer = nn.GRU(3, 8, rng=2)
    layer.eval()
    x = rng.standard_normal((1, 2, 3))
    generate(layer, x.astype(np.float32))
    for param in layer.parameters():
        param.data = param.data.astype(np.float64)
    twin = nn.GRU(3, 8, dtype=np.float64)
    twin.load_state_dict(layer.state_dict())
    twin.eval()
    np.testing.assert_array_equal(generate(layer, x), generate(twin, x))


def test_packed_weights_are_freed_with_the_layer_and_not_copied(rng):
    layer = nn.LSTM(4, 32, rng=3)
    layer.eval()
    x = rng.standard_normal((1, 2, 4)).astype(np.float32)
    generate(layer, x, 1)
    other = copy.deepcopy(layer)
    assert all(h.nbytes == 0 for h in other.__dict__["_packed_weights"].values())
    np.testing.assert_array_equal(generate(other, x), generate(layer, x))
    handle = weakref.ref(layer.__dict__["_packed_weights"][(0, 0)])
    del layer
    gc.collect()
    assert handle() is None


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_keras_layer_repacks_after_training_and_set_weights(kind, rng):
    layer = getattr(fk.layers, kind)(6, return_sequences=True)
    model = fk.Sequential([fk.Input((4, 3)), layer])
    model.compile(optimizer=fk.optimizers.SGD(0.5), loss="mse")
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)

    def fresh():
        twin = fk.Sequential([fk.Input((4, 3)), getattr(fk.layers, kind)(6, return_sequences=True)])
        twin.set_weights(model.get_weights())
        return np.asarray(twin.predict(x, verbose=0))

    first = np.asarray(model.predict(x, verbose=0))
    handle = layer.__dict__["_packed_weights"]["weights"]
    packs = handle._native.packs
    np.testing.assert_array_equal(np.asarray(model.predict(x, verbose=0)), first)
    assert handle._native.packs == packs
    model.train_on_batch(x, np.ones((2, 4, 6), np.float32))
    np.testing.assert_array_equal(np.asarray(model.predict(x, verbose=0)), fresh())
    model.set_weights([w * 0.5 for w in model.get_weights()])
    np.testing.assert_array_equal(np.asarray(model.predict(x, verbose=0)), fresh())
    assert handle._native.packs > packs


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_nn_cells_keep_packed_weights_in_eval_mode(kind, rng):
    cell = getattr(nn, kind)(4, 20, rng=5)
    cell.eval()
    x = rng.standard_normal((2, 4)).astype(np.float32)
    first = cell(x)
    handle = cell.__dict__["_packed_weights"]["weights"]
    packs = handle._native.packs
    again = cell(x)
    assert handle._native.packs == packs
    for a, b in zip(first if isinstance(first, tuple) else [first], again if isinstance(again, tuple) else [again]):
        np.testing.assert_array_equal(a, b)
    cell.weight_hh.data = cell.weight_hh.data * 0.5
    twin = getattr(nn, kind)(4, 20)
    twin.load_state_dict(cell.state_dict())
    twin.train()    # training mode: no cache, packs afresh
    got, want = cell(x), twin(x)
    for a, b in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]):
        np.testing.assert_array_equal(a, b)
    assert handle._native.packs > packs

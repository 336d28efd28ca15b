"""How a team of kernel threads shares a layer's steps (cpu/driver.h's plan_team): by units (each
thread all batch rows of its chunks of units, a barrier a step) or by batch rows (each thread all
units of its rows, no barrier). The rule picks the rows for layers whose recurrent weights fit in
L2; ``_core._set_team_split`` forces either way, and every result of forward and backward
must be bitwise the same both ways (and with one thread): the rows' products and pointwise steps
are the same operations in the same order, and the bias gradients, which a split by rows sums
after the loop, are summed in the loop's order."""

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _core
from fusedrnn import functional as F

import rnn_cases


# conftest.py's `threads` fixture, at one value.
two_threads = pytest.mark.parametrize("threads", [2], indirect=True)


@pytest.fixture
def restore_split():
    yield
    _core._set_team_split("rule")
    _core._set_cache_sizes(0, 0, 0)


def run_layer(cell, x, h0, c0, weights, dy, dh_n, dc_n, **options):
    """Every output of a training forward and its backward, as a flat list."""
    y, h_n, c_n, saved = F.recurrent_forward(cell, x, h0, c0, weights, training=True, **options)
    dx, dh0, dc0, dweights = F.recurrent_backward(dy, dh_n, dc_n if c_n is not None else None, saved)
    inference = F.recurrent_forward(cell, x, h0, c0, weights, training=False, **options)
    return [y, h_n, c_n, dx, dh0, dc0, *(dweights[k] for k in sorted(dweights)), *inference[:3]]


# (T, B, I, H, options): rows split evenly and not, a batch with a row per thread, rows beyond one
# 64-row block, lengths (the balanced split by steps taken), masks, both output modes, reverse,
# recurrent dropout's scale, a projection.
CASES = [
    (7, 24, 10, 32, {}),
    (6, 3, 5, 16, {}),
    (5, 67, 8, 20, {"reverse": True}),
    (9, 30, 6, 24, {"lengths": "sorted"}),
    (9, 29, 6, 17, {"lengths": "random", "reverse": True}),
    (8, 26, 4, 16, {"mask": True, "masked_output": "repeat"}),
    (6, 25, 7, 20, {"recurrent_scale": True}),
]


def options_for(rng, T, B, H, options, dtype):
    options = dict(options)
    if options.get("lengths") == "sorted":
        options["lengths"] = rnn_cases.make_sorted_lengths(T, B)
    elif options.get("lengths") == "random":
        options["lengths"] = rnn_cases.make_lengths(rng, T, B)
    if options.pop("mask", False):
        options["mask"] = rng.random((T, B)) < 0.7
    if options.pop("recurrent_scale", False):
        options["recurrent_scale"] = ((rng.random((B, H)) < 0.8) / 0.8).astype(dtype)
    return options


def layer_case(rng, cell, dtype, T, B, I, H, spec):
    """((x, h0, c0, weights, dy, dh_n, dc_n), options) of a CASES entry, for run_layer."""
    problem = rnn_cases.astype(rnn_cases.make_problem(rng, cell, T, B, I, H), dtype)
    x, (h0, *c), weights = problem["x"], problem["states"], dict(zip(rnn_cases.WEIGHT_NAMES, problem["weights"]))
    options = options_for(rng, T, B, H, spec, dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n, dc_n = rng.standard_normal((2, B, H)).astype(dtype)
    return (x, h0, c[0] if c else None, weights, dy, dh_n, dc_n), options


@two_threads
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", rnn_cases.CELLS)
def test_split_by_rows_and_by_units_give_the_same_bits(cell, dtype, rng, threads, restore_split):
    for T, B, I, H, spec in CASES:
        layer, options = layer_case(rng, cell, dtype, T, B, I, H, spec)
        results = {}
        for split in ("units", "rows"):
            _core._set_team_split(split)
            results[split] = run_layer(cell, *layer, **options)
        _core._set_team_split("rule")
        fusedrnn.set_num_threads(1)
        results["one thread"] = run_layer(cell, *layer, **options)
        fusedrnn.set_num_threads(2)
        for split in ("rows", "one thread"):
            for got, want in zip(results[split], results["units"]):
                assert (got is None and want is None) or np.array_equal(got, want), (T, B, I, H, spec, split)


@two_threads
def test_a_projection_splits_by_rows_with_the_same_bits(rng, threads, restore_split):
    T, B, I, H, P = 6, 28, 9, 24, 10
    weights = rnn_cases.make_weights(rng, "lstm", I, H, proj=P)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((B, P)).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32)
    dy = rng.standard_normal((T, B, P)).astype(np.float32)
    dh_n, dc_n = rng.standard_normal((B, P)).astype(np.float32), rng.standard_normal((B, H)).astype(np.float32)
    lengths = rnn_cases.make_lengths(rng, T, B)
    results = {}
    for split in ("units", "rows"):
        _core._set_team_split(split)
        results[split] = run_layer("lstm", x, h0, c0, weights, dy, dh_n, dc_n, lengths=lengths)
    for got, want in zip(results["rows"], results["units"]):
        assert (got is None and want is None) or np.array_equal(got, want)


@two_threads
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_bf16_weights_split_by_rows_with_the_same_bits(cell, rng, threads, restore_split):
    T, B, I, H = 5, 27, 12, 40
    weights = rnn_cases.make_weights(rng, cell, I, H)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    c0 = h0.copy() if cell == "lstm" else None
    results = {}
    for split in ("units", "rows"):
        _core._set_team_split(split)
        results[split] = F.recurrent_forward(cell, x, h0, c0, weights, training=False, bf16_weights=True)[:3]
    for got, want in zip(results["rows"], results["units"]):
        assert (got is None and want is None) or np.array_equal(got, want)


@two_threads
def test_the_rule_splits_the_batch_where_the_weights_fit_in_l2(threads, restore_split):
    # LSTM, H = 128: W_hh is 128 x 512 floats, 256 KiB.
    _core._set_cache_sizes(32 << 10, 256 << 10, 0)
    assert _core._forward_team("lstm", 64, 128) == (2, True)
    assert _core._forward_team("lstm", 48, 128) == (2, True)   # 24 rows a thread
    assert _core._forward_team("lstm", 47, 128)[1] is False    # fewer: the units
    assert _core._forward_team("lstm", 64, 129)[1] is False    # W_hh past L2
    _core._set_cache_sizes(32 << 10, 255 << 10, 0)
    assert _core._forward_team("lstm", 64, 128)[1] is False
    _core._set_cache_sizes(32 << 10, 256 << 10, 0)
    _core._set_team_split("units")
    assert _core._forward_team("lstm", 64, 128) == (2, False)
    _core._set_team_split("rows")
    assert _core._forward_team("lstm", 3, 128) == (2, True)    # forced: a row a thread is enough
    assert _core._forward_team("lstm", 1, 128)[1] is False     # (one row: one thread)
    with pytest.raises(ValueError, match="rule"):
        _core._set_team_split("columns")


@pytest.mark.parametrize("threads", [1], indirect=True)
def test_one_thread_never_splits(threads, restore_split):
    _core._set_team_split("rows")
    assert _core._forward_team("gru", 64, 32) == (1, False)


# cpu/driver.h's chunk_group: a thread's chunks of units go to the GEMM a few at a time, as many as
# keep its block in half of L1. An L1 of 1 KiB forces two chunks a call, one of 1 MiB the whole run;
# every result must be bitwise the same either way (each value's products sum over the same k in
# the same order). H = 100 and 70: several chunks, the last one ragged, for both element sizes.
@two_threads
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", rnn_cases.CELLS)
def test_any_number_of_chunks_a_gemm_call_gives_the_same_bits(cell, dtype, rng, threads, restore_split):
    caches = _core.cache_sizes()
    for T, B, I, H, spec in [(5, 40, 7, 100, {}), (6, 50, 5, 70, {"lengths": "random", "reverse": True})]:
        layer, options = layer_case(rng, cell, dtype, T, B, I, H, spec)
        for split in ("units", "rows"):
            _core._set_team_split(split)
            results = {}
            for l1d in (1 << 10, 1 << 20):
                _core._set_cache_sizes(l1d, caches["l2"], caches["l3_per_core"])
                results[l1d] = run_layer(cell, *layer, **options)
            for got, want in zip(results[1 << 10], results[1 << 20]):
                assert (got is None and want is None) or np.array_equal(got, want), (T, B, I, H, split)

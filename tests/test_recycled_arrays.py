"""The memory kept for the kernels' big output arrays (csrc/recycled_arrays.h).

A freed output's memory goes to the next output of about its size, so it holds whatever the last
array left there: every kernel must write each of its outputs in full. The poisoned runs here
fill reused memory with NaN first and compare every output with a run that reuses nothing.
"""

import gc

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _core
from fusedrnn import functional as F
from rnn_cases import CELLS, GATES, make_weights

MiB = 1 << 20


@pytest.fixture
def cache():
    """An empty cache with the start-up settings; the settings are restored after the test."""
    before = _core.array_cache_info()
    _core.set_array_cache(0, before["min_bytes"], False)
    _core.set_array_cache(before["limit"], before["min_bytes"], False)
    yield
    _core.set_array_cache(before["limit"], before["min_bytes"], before["poison"])


def training_step(cell, x, weights, want_dx=True, **options):
    """Every array a forward and its backward return, copied (the originals are freed)."""
    T, B, _ = x.shape
    P = weights["weight_hh"].shape[1]
    H = weights["weight_hh"].shape[0] // GATES[cell]
    h0 = np.full((B, P), 0.1, x.dtype)
    c0 = np.full((B, H), -0.2, x.dtype) if F.CELLS[cell].has_cell_state else None
    y, h_n, c_n, saved = F.recurrent_forward(cell, x, h0, c0, weights, training=True, **options)
    dy = np.cos(np.arange(y.size, dtype=x.dtype)).reshape(y.shape)
    dx, dh0, dc0, dweights = F.recurrent_backward(dy, None, None, saved, want_dx=want_dx)
    arrays = [y, h_n, c_n, *saved.arrays[-4:], dx, dh0, dc0, *(dweights[name] for name in F.WEIGHT_NAMES)]
    return [None if a is None else np.array(a) for a in arrays]


def assert_same(got, expected):
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        if e is None:
            assert g is None, i
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"array {i}")


def test_a_training_step_reuses_the_memory_of_the_last_ones_outputs(rng, cache):
    T, B, H = 20, 16, 256   # the saved gates 1.25 MiB, dweight_ih and dweight_hh 1 MiB
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    weights = make_weights(rng, "lstm", H, H)
    first = training_step("lstm", x, weights)
    gc.collect()
    kept = fusedrnn.array_cache_info()
    assert kept["kept_blocks"] >= 1 and kept["kept_bytes"] >= T * B * 4 * H * 4
    second = training_step("lstm", x, weights)
    after = fusedrnn.array_cache_info()
    assert after["hits"] > kept["hits"]
    assert after["misses"] == kept["misses"]   # nothing big was allocated afresh
    assert_same(second, first)


# Each option that changes which parts of an output a kernel writes: masked steps (zero or
# repeated outputs), varied lengths (rows that take no step, gathered GEMMs), the reverse
# direction, a projection, recurrent dropout's scale, and a backward without dx.
def option_cases():
    T, B = 9, 5
    mask = np.ones((T, B), bool)
    mask[2:5, 1] = False
    mask[:, 3] = False
    mask[0, 4] = False
    cases = []
    for cell in CELLS:
        cases += [(cell, {}), (cell, dict(reverse=True)), (cell, dict(lengths=np.array([9, 3, 1, 6, 9]))),
                  (cell, dict(mask=mask)), (cell, dict(mask=mask, masked_output="repeat")),
                  (cell, dict(want_dx=False))]
    cases += [("lstm", dict(proj=6)), ("lstm", dict(proj=6, lengths=np.array([2, 9, 4, 4, 1]))),
              ("rnn_tanh", dict(recurrent_scale=True))]
    return cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell, options", option_cases(),
                         ids=[f"{c}-{'-'.join(o) or 'plain'}" for c, o in option_cases()])
def test_every_output_is_written_in_full_over_reused_memory(cell, options, dtype, rng, cache):
    T, B, I, H = 9, 5, 7, 12
    options = dict(options)
    proj = options.pop("proj", 0)
    if options.pop("recurrent_scale", False):
        options["recurrent_scale"] = rng.choice([0.0, 2.0], (B, H)).astype(dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    weights = make_weights(rng, cell, I, H, dtype, proj)
    limit = _core.array_cache_info()["limit"]
    _core.set_array_cache(0, 0, False)                # nothing reused: the expected arrays
    expected = training_step(cell, x, weights, **options)
    _core.set_array_cache(limit, 0, True)             # every array cached, reused memory NaN
    training_step(cell, x, weights, **options)
    hits = _core.array_cache_info()["hits"]
    got = training_step(cell, x, weights, **options)
    assert _core.array_cache_info()["hits"] > hits
    assert_same(got, expected)


def test_an_array_in_use_is_never_handed_out_again(rng, cache):
    T, B, H = 70, 32, 128   # y 1.1 MiB
    weights = make_weights(rng, "gru", H, H)
    h0 = np.zeros((B, H), np.float32)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    y1 = F.recurrent_forward("gru", x, h0, None, weights, training=False)[0]
    copy1 = y1.copy()
    for _ in range(3):
        y2 = F.recurrent_forward("gru", 2 * x, h0, None, weights, training=False)[0]
        assert not np.shares_memory(y1, y2)
        del y2
    np.testing.assert_array_equal(y1, copy1)


def outputs_of(rng, steps, B=64, H=256):
    """A forward's y of `steps` steps: steps * 64 KiB of float32 (h_n, 64 KiB, bypasses the cache)."""
    weights = make_weights(rng, "rnn_tanh", 4, H)
    x = rng.standard_normal((steps, B, 4)).astype(np.float32)
    return F.recurrent_forward("rnn_tanh", x, None, None, weights, training=False)[0]


def test_a_kept_block_serves_arrays_down_to_half_its_size(rng, cache):
    del rng  # (the arrays' values don't matter here)
    gen = np.random.default_rng(0)
    outputs_of(gen, 40)                       # 2.5 MiB, kept when freed
    before = fusedrnn.array_cache_info()
    assert before["kept_bytes"] == 40 * 64 * 1024
    outputs_of(gen, 17)                       # 1.06 MiB: more than twice smaller, a new block
    middle = fusedrnn.array_cache_info()
    assert (middle["hits"], middle["misses"]) == (before["hits"], before["misses"] + 1)
    outputs_of(gen, 25)                       # 1.56 MiB: the 2.5 MiB block (the 1.06 one is too small)
    after = fusedrnn.array_cache_info()
    assert (after["hits"], after["misses"]) == (middle["hits"] + 1, middle["misses"])
    assert after["kept_bytes"] == (40 + 17) * 64 * 1024


def test_the_kept_memory_stays_within_the_limit(rng, cache):
    fusedrnn.set_array_cache_limit(3 * MiB)
    arrays = [outputs_of(rng, steps) for steps in (20, 30, 40)]   # 1.25, 1.9, 2.5 MiB
    for i in range(3):
        arrays[i] = None    # freed in this order
    info = fusedrnn.array_cache_info()
    assert info["limit"] == 3 * MiB
    assert info["kept_bytes"] == 40 * 64 * 1024   # the oldest two went to stay under 3 MiB
    fusedrnn.set_array_cache_limit(0)
    assert fusedrnn.array_cache_info()["kept_bytes"] == 0
    outputs_of(rng, 20)
    assert fusedrnn.array_cache_info()["kept_bytes"] == 0


def test_bad_settings_raise(cache):
    with pytest.raises(ValueError, match="at least 0"):
        fusedrnn.set_array_cache_limit(-1)
    with pytest.raises(TypeError, match="int"):
        fusedrnn.set_array_cache_limit(2.0**30)
    with pytest.raises(TypeError, match="int"):
        fusedrnn.set_array_cache_limit(True)
    with pytest.raises(ValueError, match="at least 0"):
        _core.set_array_cache(1, -1)

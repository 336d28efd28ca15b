"""The bfloat16-weight inference mode (``bf16_weights=True``): its kernel against the exactly
rounded product, the layers against the reference's bf16 forward, the error against float32
that the functional module documents, and the arguments it refuses.

Tolerances: one step from a given state must match the reference to float32 rounding, since both
multiply the same rounded values. Over a sequence the states themselves are rounded at every
step, and a state value within float32 rounding of a bfloat16 tie may round one way here and the
other way in the reference: a 2^-9 relative change of that value, which the following steps carry
on. Those comparisons use 2e-3: over 20 seeds of every case the worst was 8.3e-4, while the
float32 path differs from the bf16 reference by up to 4e-3 (and the sharp one-step tests catch a
wrong product).
"""

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _core, _reference
from fusedrnn import functional as F

from rnn_cases import GATES, make_sorted_lengths

# Every cell but the reset-before GRU, which has no bfloat16 mode (two products a step).
CELLS = [cell for cell, info in F.CELLS.items() if not info.two_phase]


def bf16(a):
    return _reference._bf16(a)


def problem(rng, cell, T, B, H, I=None):
    I = I or H
    G, scale = GATES[cell], 1 / np.sqrt(H)
    return dict(
        x=rng.standard_normal((T, B, I)).astype(np.float32),
        h0=rng.uniform(-1, 1, (B, H)).astype(np.float32),
        c0=rng.uniform(-1, 1, (B, H)).astype(np.float32),
        weight_ih=rng.uniform(-scale, scale, (G * H, I)).astype(np.float32),
        weight_hh=rng.uniform(-scale, scale, (G * H, H)).astype(np.float32),
        bias_ih=rng.uniform(-scale, scale, G * H).astype(np.float32),
        bias_hh=rng.uniform(-scale, scale, G * H).astype(np.float32),
    )


def run(module, cell, p, **options):
    """(y, h_n) of `module`'s forward (fusedrnn.functional or the reference) in inference mode."""
    args = (p["x"], p["h0"])
    weights = (p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
    if cell == "lstm":
        y, h_n, _, _ = module.lstm_forward(*args, p["c0"], *weights, training=False, **options)
    elif cell == "gru":
        y, h_n, _ = module.gru_forward(*args, *weights, training=False, **options)
    else:
        y, h_n, _ = module.rnn_forward(*args, *weights, nonlinearity=cell[4:], training=False, **options)
    return y, h_n


# -- the kernel ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("M, K, N", [(1, 1, 1), (1, 7, 5), (3, 33, 17), (5, 64, 70), (9, 31, 33), (4, 256, 130)])
@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_kernel_is_the_rounded_product(rng, M, K, N, layout):
    """layout "columns": B's columns contiguous in k, as the rows of a weight matrix, which the
    packing reads through the float32 transpose (16 x 16 blocks, then the K % 16 rows left)."""
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    if layout == "columns":
        b = np.ascontiguousarray(b.T).T
    product = _core.gemm_bf16(a, b)
    exact = bf16(a).astype(np.float64) @ bf16(b).astype(np.float64)
    # float32 sums of K exact products: within K * eps of sum |a_k b_k|.
    bound = K * 2.0 ** -23 * (np.abs(bf16(a)).astype(np.float64) @ np.abs(bf16(b)).astype(np.float64))
    assert product.dtype == np.float32 and product.shape == (M, N)
    assert np.all(np.abs(product - exact) <= bound + 1e-30)
    assert np.abs(product - a.astype(np.float64) @ b).max() > 0   # it did round


def test_rounding_is_to_nearest_even(isa):
    """The rows of a are rounded by a loop compiled for each instruction set: each rounds alike,
    overflow to infinity and NaN included."""
    # bfloat16 keeps 7 bits after the point: 1 + 2^-8 is a tie between 1 and 1 + 2^-7.
    largest = np.finfo(np.float32).max  # (rounds up to infinity)
    values = np.array([1.0, 1 + 2 ** -7, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2.5, largest,
                       -np.inf, np.nan] * 3, np.float32)
    expected = np.array([1.0, 1 + 2 ** -7, 1.0, 1 + 2 ** -6, 1 + 2 ** -7, -2.5, np.inf, -np.inf, np.nan] * 3,
                        np.float32)
    np.testing.assert_array_equal(bf16(values), expected)
    # Each value alone in a row (K = 1: a pair's high half zero), and as the even and the odd k of
    # a full pair whose other value is zero (times 1 and 0: no inf times 0).
    np.testing.assert_array_equal(_core.gemm_bf16(values[:, None], np.ones((1, 1), np.float32))[:, 0], expected)
    zeros = np.zeros_like(values)
    for pair, pick in ((np.stack([values, zeros], 1), [[1], [0]]), (np.stack([zeros, values], 1), [[0], [1]])):
        np.testing.assert_array_equal(_core.gemm_bf16(pair, np.array(pick, np.float32))[:, 0], expected)
    # And in rows of 48 (the rounding loop's vector part): value i at k = 5 i mod 48 of row i, the
    # rest of the row finite, read through the identity (column k: that value alone).
    rows = np.tile(np.linspace(-3, 3, 48, dtype=np.float32), (values.size, 1))
    where = 5 * np.arange(values.size) % 48
    rows[np.arange(values.size), where] = values
    product = _core.gemm_bf16(rows, np.eye(48, dtype=np.float32))
    np.testing.assert_array_equal(product[np.arange(values.size), where], expected)
    finite_rows = np.isfinite(values) & (values != largest)
    np.testing.assert_array_equal(product[finite_rows], bf16(rows[finite_rows]))


def test_portable_loop_equals_the_instruction(rng):
    if not _core.bf16_native():
        pytest.skip("this CPU (or build) has no AVX512-BF16: only the portable loop runs")
    a = rng.standard_normal((6, 45)).astype(np.float32)
    b = rng.standard_normal((45, 50)).astype(np.float32)
    native = _core.gemm_bf16(a, b)
    assert _core.bf16_kernel() == "avx512bf16"
    np.testing.assert_array_equal(native, _core._gemm_bf16_with("portable", a, b))


# -- the layers ---------------------------------------------------------------------------------------
SIZES = [(1, 33), (3, 64), (70, 17)]   # batch 70 spans two row blocks; 33 and 17: an odd pair at the end


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B, H", SIZES)
def test_one_step_matches_reference(rng, cell, B, H, threads):
    p = problem(rng, cell, 1, B, H, I=5)
    y, h_n = run(F, cell, p, bf16_weights=True)
    y_ref, h_ref = run(_reference, cell, p, bf16_weights=True)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_n, h_ref, rtol=1e-5, atol=1e-5)
    y32, _ = run(F, cell, p)
    assert np.abs(y - y32).max() > 1e-5   # the mode is on: float32 differs by far more


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B, H", SIZES)
@pytest.mark.parametrize("variant", ["plain", "reverse_lengths", "sorted_lengths", "mask_repeat"])
def test_sequences_match_reference(rng, cell, B, H, variant, threads):
    T = 12
    p = problem(rng, cell, T, B, H)
    options = {}
    if variant == "reverse_lengths":
        options = dict(reverse=True, lengths=rng.integers(0, T + 1, B))
    elif variant == "sorted_lengths":   # (each step's product runs only the sequences taking it)
        options = dict(lengths=make_sorted_lengths(T, B))
    elif variant == "mask_repeat":
        options = dict(mask=rng.random((T, B)) < 0.7, masked_output="repeat")
    y, h_n = run(F, cell, p, bf16_weights=True, **options)
    y_ref, h_ref = run(_reference, cell, p, bf16_weights=True, **options)
    np.testing.assert_allclose(y, y_ref, atol=2e-3, rtol=0)
    np.testing.assert_allclose(h_n, h_ref, atol=2e-3, rtol=0)


def test_results_do_not_depend_on_threads(rng):
    p = problem(rng, "lstm", 20, 3, 200)
    original = fusedrnn.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            fusedrnn.set_num_threads(threads)
            results.append(run(F, "lstm", p, bf16_weights=True))
    finally:
        fusedrnn.set_num_threads(original)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS[:1] + CELLS[2:])
def test_error_against_float32_as_documented(rng, cell):
    """The functional module's notes: outputs typically within 1e-3 to 1e-2 of float32."""
    p = problem(rng, cell, 100, 4, 128)
    y16, _ = run(F, cell, p, bf16_weights=True)
    y32, _ = run(F, cell, p)
    error = np.abs(y16 - y32).max()
    assert 1e-5 < error < 2e-2


# -- bfloat16 input projections (bf16_projections=True: the bf16 compute mode) ---------------------
def run_both(module, cell, p, projections=True, **options):
    """(y, h_n) of recurrent_forward with every product in bfloat16 (projections=False: the
    recurrent ones only)."""
    weights = {name: p[name] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    y, h_n, _, _ = module.recurrent_forward(cell, p["x"], p["h0"], p["c0"] if cell == "lstm" else None, weights,
                                            training=False, bf16_weights=True, bf16_projections=projections,
                                            **options)
    return y, h_n


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B, H, I", [(1, 33, 5), (3, 64, 40), (70, 17, 9)])
def test_bf16_projections_one_step_matches_reference(rng, cell, B, H, I, threads):
    p = problem(rng, cell, 1, B, H, I=I)
    y, h_n = run_both(F, cell, p)
    y_ref, h_ref = run_both(_reference, cell, p)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_n, h_ref, rtol=1e-5, atol=1e-5)
    y_recurrent_only, _ = run(F, cell, p, bf16_weights=True)
    assert np.abs(y - y_recurrent_only).max() > 1e-5   # the projections did round


# The projections run blocked (each thread its units' columns, a block of steps at a time) or as
# one GEMM over every row (merged), as the caches and the team decide: for these sizes a 16 KiB L2
# makes them merged, a 2 MiB one blocked, with one thread and with two. Each way sums every product
# over the whole of I in the same order, so the results' bits are the same.
PROJECTION_WAYS = [(1, (16 << 10, 16 << 10, 0)), (1, (48 << 10, 2 << 20, 0)), (2, (16 << 10, 16 << 10, 0)),
                   (2, (48 << 10, 2 << 20, 0))]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", ["plain", "reverse_lengths", "sorted_lengths", "mask_repeat"])
def test_bf16_projections_sequences_match_reference_every_way(rng, cell, variant):
    T, B, H, I = 12, 70, 40, 150
    p = problem(rng, cell, T, B, H, I=I)
    options = {}
    if variant == "reverse_lengths":
        options = dict(reverse=True, lengths=rng.integers(0, T + 1, B))
    elif variant == "sorted_lengths":   # (the merged GEMM then runs on the rows taking a step only)
        options = dict(lengths=make_sorted_lengths(T, B))
    elif variant == "mask_repeat":
        options = dict(mask=rng.random((T, B)) < 0.7, masked_output="repeat")
    original = fusedrnn.get_num_threads()
    results = []
    try:
        for threads, caches in PROJECTION_WAYS:
            fusedrnn.set_num_threads(threads)
            _core._set_cache_sizes(*caches)
            results.append(run_both(F, cell, p, **options))
    finally:
        fusedrnn.set_num_threads(original)
        _core._set_cache_sizes(0, 0, 0)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    y_ref, h_ref = run_both(_reference, cell, p, **options)
    np.testing.assert_allclose(results[0][0], y_ref, atol=2e-3, rtol=0)   # (the module's notes: why 2e-3)
    np.testing.assert_allclose(results[0][1], h_ref, atol=2e-3, rtol=0)


def test_bf16_projections_kept_packed_hit_bitwise(rng):
    p = problem(rng, "lstm", 5, 4, 48, I=40)
    handle = F.PackedWeights()
    expected = run_both(F, "lstm", p)
    for _ in range(2):
        for a, b in zip(run_both(F, "lstm", p, packed=handle, packed_version=0), expected):
            np.testing.assert_array_equal(a, b)
    # The same handle for the recurrent products alone: a hit that packs one matrix, its own
    # float32 W_ih (the bfloat16 one stays for the next call with projections).
    packs = handle._native.packs
    for a, b in zip(run_both(F, "lstm", p, projections=False),
                    run_both(F, "lstm", p, projections=False, packed=handle, packed_version=0)):
        np.testing.assert_array_equal(a, b)
    assert handle.hits == 2 and handle._native.packs == packs + 1


@pytest.mark.parametrize("M", [1, 63, 64, 65, 150])
def test_kernel_rows_split_among_threads(rng, M, threads):
    """_core.gemm_bf16 rounds the rows of a in blocks of 64, shared among the threads: each row
    as the single-row product gives it."""
    a = rng.standard_normal((M, 37)).astype(np.float32)
    b = rng.standard_normal((37, 40)).astype(np.float32)
    product = _core.gemm_bf16(a, b)
    for i in (0, M // 2, M - 1):
        np.testing.assert_array_equal(product[i], _core.gemm_bf16(a[i:i + 1], b)[0])
    np.testing.assert_array_equal(product, _core._gemm_bf16_with(_core.bf16_kernel(), a, b))


# -- what it refuses -----------------------------------------------------------------------------------
def test_refused_arguments(rng):
    p = problem(rng, "lstm", 3, 2, 8)
    args = (p["x"], None, None, p["weight_ih"], p["weight_hh"])
    with pytest.raises(ValueError, match="inference"):
        F.lstm_forward(*args, bf16_weights=True)   # training=True is the default
    with pytest.raises(TypeError, match="float32"):
        F.lstm_forward(p["x"].astype(np.float64), None, None, p["weight_ih"].astype(np.float64),
                       p["weight_hh"][:, :4].astype(np.float64), weight_hr=np.zeros((4, 8)), training=False,
                       bf16_weights=True)
    with pytest.raises(ValueError, match="projection"):
        F.lstm_forward(p["x"], None, None, p["weight_ih"], p["weight_hh"][:, :4],
                       weight_hr=np.zeros((4, 8), np.float32), training=False, bf16_weights=True)
    with pytest.raises(ValueError, match="recurrent dropout"):
        F.lstm_forward(*args, training=False, bf16_weights=True, recurrent_scale=np.ones((2, 8), np.float32))
    g = problem(rng, "gru", 3, 2, 8)
    with pytest.raises(ValueError, match="reset_after"):
        F.gru_forward(g["x"], None, g["weight_ih"], g["weight_hh"], training=False, reset_after=False,
                      bf16_weights=True)
    with pytest.raises(TypeError, match="bool"):
        F.lstm_forward(*args, training=False, bf16_weights="yes")
    weights = dict(weight_ih=p["weight_ih"], weight_hh=p["weight_hh"])
    with pytest.raises(ValueError, match="bf16_weights=True"):
        F.recurrent_forward("lstm", p["x"], None, None, weights, training=False, bf16_projections=True)
    with pytest.raises(TypeError, match="bf16_projections must be a bool"):
        F.recurrent_forward("lstm", p["x"], None, None, weights, training=False, bf16_weights=True,
                            bf16_projections=1)
    with pytest.raises(ValueError, match="inference"):
        F.recurrent_forward("lstm", p["x"], None, None, weights, bf16_weights=True, bf16_projections=True)
    with pytest.raises(ValueError, match="bf16_weights too"):
        _core.forward("lstm", p["x"], None, None, p["weight_ih"], p["weight_hh"], None, None, None, None, None,
                      None, False, False, False, False, None, True)
    with pytest.raises(ValueError, match="inference"):
        _core.forward("lstm", p["x"], None, None, p["weight_ih"], p["weight_hh"], None, None, None, None, None,
                      None, False, False, True, True)


# -- fusedrnn.nn ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer_class", ["LSTM", "GRU", "RNN"])
def test_nn_layers_use_it_in_eval_mode_only(rng, layer_class):
    from fusedrnn import nn
    layer = getattr(nn, layer_class)(6, 24, num_layers=2, bidirectional=True, rng=1)
    x = rng.standard_normal((9, 3, 6)).astype(np.float32)
    layer.eval()
    y32, _ = layer(x)
    layer.bf16_inference = True
    y16, _ = layer(x)
    # Layer by layer and direction by direction, the functional bf16 forward of the same weights.
    expected, options = x, dict(training=False, bf16_weights=True)
    for index in range(2):
        outputs = []
        for reverse, suffix in ((False, ""), (True, "_reverse")):
            weights = [getattr(layer, f"{name}_l{index}{suffix}").data
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if layer_class == "LSTM":
                outputs.append(F.lstm_forward(expected, None, None, *weights, reverse=reverse, **options)[0])
            elif layer_class == "GRU":
                outputs.append(F.gru_forward(expected, None, *weights, reverse=reverse, **options)[0])
            else:
                outputs.append(F.rnn_forward(expected, None, *weights, reverse=reverse, **options)[0])
        expected = np.concatenate(outputs, axis=-1)
    np.testing.assert_array_equal(y16, expected)
    assert 0 < np.abs(y16 - y32).max() < 2e-2
    layer.train()
    y_train, _ = layer(x)
    np.testing.assert_array_equal(y_train, y32)   # training stays float32


def test_nn_refuses_it_with_a_projection():
    from fusedrnn import nn
    layer = nn.LSTM(4, 8, proj_size=3)
    with pytest.raises(ValueError, match="proj_size"):
        layer.bf16_inference = True
    with pytest.raises(TypeError, match="bool"):
        nn.GRU(4, 8).bf16_inference = 1

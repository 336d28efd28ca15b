"""The CUDA backend against the CPU kernels: every cell, dtype, masking and direction, forward
and backward, in every loop form (stepwise, warp and persistent) and with each GEMM available
(fusedrnn's own kernel; cuBLAS too where it loads: not in the emulator), plus its GEMM and device
arrays. test_cuda_gemm.py has the GEMM switch's own tests.

The sizes are small: without a GPU these run in a CUDA emulator on the CPU (about a million
thread-steps a second). They run unchanged on a GPU; without the backend or a device they skip.
FUSEDRNN_CUDA_TEST_SIZE=full (bench/gpu_check.py sets it on a GPU) runs them at the sizes the
tolerance table was calibrated on instead (T=20, B=8, I=64, H=128).

Expected values are the CPU kernels' in float64 on the same inputs (the CPU kernels are checked
against fusedrnn._reference elsewhere), compared at the one tolerance table: float32 results are
held to the distance from that exact answer, as the table's float32 rows are calibrated.
"""

import os

import numpy as np
import pytest

import fusedrnn.cuda as cuda
from fusedrnn import functional as F
from rnn_cases import CELLS, make_lengths, make_problem
from tolerances import INPUT_GRAD, OUTPUT, STATE, WEIGHT_GRAD, assert_close


@pytest.fixture(autouse=True)
def _needs_a_device():
    # (Asked when a test here runs, not at collection: the backend is loaded only if needed.)
    if not cuda.is_available():
        pytest.skip("no CUDA backend in this build, or no device (GPU or emulator)")


T, B, I, H = (20, 8, 64, 128) if os.environ.get("FUSEDRNN_CUDA_TEST_SIZE") == "full" else (4, 3, 5, 6)
WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


@pytest.fixture(params=["stepwise", "warp", "persistent"])
def algorithm(request):
    cuda.set_algorithm(request.param)
    yield request.param
    cuda.set_algorithm("auto")


@pytest.fixture(params=["fusedrnn", "cublas"])
def gemm(request):
    """Which GEMM the products outside the time loop run in (the cuBLAS cases skip where it cannot load)."""
    try:
        cuda.set_gemm(request.param)
    except RuntimeError as error:
        pytest.skip(f"cuBLAS cannot be used here: {error}")
    yield request.param
    cuda.set_gemm("auto")


def problem(rng, cell, dtype, proj=None):
    p = make_problem(rng, cell, T, B, I, H, dtype=np.float64)
    states = p["states"] + [None] * (2 - len(p["states"]))
    weights = dict(zip(WEIGHTS, p["weights"]))
    if proj:
        weights["weight_hh"] = rng.uniform(-0.4, 0.4, (4 * H, proj))
        weights["weight_hr"] = rng.uniform(-0.4, 0.4, (proj, H))
        states[0] = rng.standard_normal((B, proj))
    def cast(a):
        return None if a is None else np.asarray(a, dtype)
    return cast(p["x"]), cast(states[0]), cast(states[1]), {k: cast(v) for k, v in weights.items()}


def on_device(value):
    return None if value is None else cuda.to_device(value)


def host(value):
    return None if value is None else cuda.to_host(value)


def f64(value):
    return None if value is None else np.asarray(value, np.float64)


def run_both(cell, x, h0, c0, weights, dtype, rng, *, with_dh_n=True, **options):
    """Forward and backward on the device (inputs uploaded, results downloaded) and on the CPU in
    float64 from the same values; compares every result."""
    y, h_n, c_n, saved = F.recurrent_forward(cell, on_device(x), on_device(h0), on_device(c0),
                                             {k: on_device(v) for k, v in weights.items()}, **options)
    assert isinstance(y, cuda.DeviceArray) and y.dtype == dtype
    scale = options.pop("recurrent_scale", None)
    y0, h0_, c0_, saved0 = F.recurrent_forward(cell, f64(x), f64(h0), f64(c0), {k: f64(v) for k, v in weights.items()},
                                               recurrent_scale=f64(scale), **options)
    assert_close(host(y), y0, dtype, OUTPUT, "y")
    assert_close(host(h_n), h0_, dtype, STATE, "h_n")
    if c_n is not None:
        assert_close(host(c_n), c0_, dtype, STATE, "c_n")
    if not options.get("training", True):
        assert saved is None
        return
    dy = rng.standard_normal(y0.shape).astype(dtype)
    dh_n = rng.standard_normal(h0_.shape).astype(dtype) if with_dh_n else None
    dc_n = rng.standard_normal(c0_.shape).astype(dtype) if c0_ is not None else None
    dx, dh0, dc0, dw = F.recurrent_backward(on_device(dy), on_device(dh_n), on_device(dc_n), saved)
    dx0, dh00, dc00, dw0 = F.recurrent_backward(f64(dy), f64(dh_n), f64(dc_n), saved0)
    assert_close(host(dx), dx0, dtype, INPUT_GRAD, "dx")
    assert_close(host(dh0), dh00, dtype, INPUT_GRAD, "dh0")
    if dc00 is not None:
        assert_close(host(dc0), dc00, dtype, INPUT_GRAD, "dc0")
    for name in WEIGHTS:
        assert (dw[name] is None) == (dw0[name] is None), name
        if dw0[name] is not None:
            assert_close(host(dw[name]), dw0[name], dtype, WEIGHT_GRAD, name)


MASKINGS = ["none", "lengths", "mask_repeat"]


def masking_options(rng, masking):
    if masking == "lengths":
        return dict(lengths=make_lengths(rng, T, B))
    if masking == "mask_repeat":
        mask = rng.random((T, B)) < 0.6
        mask[:, 1] = False  # a sequence that never steps
        return dict(mask=mask, masked_output="repeat")
    return {}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_and_backward_match_the_cpu_kernels(cell, dtype, masking, reverse, algorithm, gemm):
    rng = np.random.default_rng(11)
    x, h0, c0, weights = problem(rng, cell, dtype)
    run_both(cell, x, h0, c0, weights, dtype, rng, reverse=reverse, **masking_options(rng, masking))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masking", ["none", "lengths"])
def test_lstm_projection(dtype, masking, algorithm, gemm):
    rng = np.random.default_rng(12)
    x, h0, c0, weights = problem(rng, "lstm", dtype, proj=4)
    run_both("lstm", x, h0, c0, weights, dtype, rng, reverse=masking == "lengths", **masking_options(rng, masking))


@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_scale(cell, algorithm):
    rng = np.random.default_rng(13)
    x, h0, c0, weights = problem(rng, cell, np.float64)
    scale = (rng.random((B, H)) < 0.7) / 0.7
    run_both(cell, x, h0, c0, weights, np.float64, rng, recurrent_scale=scale, lengths=make_lengths(rng, T, B))


@pytest.mark.parametrize("cell", ["lstm", "gru_reset_before"])
def test_inference_without_bias_or_initial_state(cell, algorithm):
    rng = np.random.default_rng(14)
    x, _, _, weights = problem(rng, cell, np.float32)
    weights["bias_ih"] = weights["bias_hh"] = None
    run_both(cell, x, None, None, weights, np.float32, rng, training=False)
    run_both(cell, x, None, None, weights, np.float32, rng, with_dh_n=False)


@pytest.mark.parametrize("cell", ["lstm", "gru_reset_before", "rnn_relu"])
def test_sizes_beyond_one_tile(cell, algorithm):
    """More sequences and units than one block of the stepwise form covers (8 x 32), ragged."""
    rng = np.random.default_rng(20)
    steps, batch, hidden = 3, 11, 37
    p = make_problem(rng, cell, steps, batch, 5, hidden, dtype=np.float64)
    states = p["states"] + [None] * (2 - len(p["states"]))
    lengths = rng.integers(0, steps + 1, size=batch)
    run_both(cell, p["x"], states[0], states[1], dict(zip(WEIGHTS, p["weights"])), np.float64, rng,
             lengths=lengths, reverse=True)


def test_persistent_kernel_with_weights_too_large_for_shared_memory():
    """Weights that do not fit in a block's shared memory are read from global memory."""
    rng = np.random.default_rng(15)
    hidden = 96  # LSTM, float64: 4*96*96*8 = 295 KB, beyond the 227 KB a block may have
    assert not cuda._native().persistent_weights_fit(4 * hidden * hidden * 8)
    p = make_problem(rng, "lstm", 2, 1, 3, hidden, dtype=np.float64)
    weights = dict(zip(WEIGHTS, p["weights"]))
    cuda.set_algorithm("persistent")
    try:
        y, h_n, c_n, saved = F.recurrent_forward("lstm", cuda.to_device(p["x"]), None, None,
                                                 {k: on_device(v) for k, v in weights.items()})
        dx, dh0, dc0, dw = F.recurrent_backward(cuda.to_device(np.ones((2, 1, hidden))), None, None, saved)
    finally:
        cuda.set_algorithm("auto")
    y0, _, _, saved0 = F.recurrent_forward("lstm", p["x"], None, None, weights)
    dx0, dh00, _, dw0 = F.recurrent_backward(np.ones((2, 1, hidden)), None, None, saved0)
    assert_close(host(y), y0, np.float64, OUTPUT, "y")
    assert_close(host(dx), dx0, np.float64, INPUT_GRAD, "dx")
    assert_close(host(dw["weight_hh"]), dw0["weight_hh"], np.float64, WEIGHT_GRAD, "dweight_hh")


def test_gradients_are_deterministic(gemm):
    rng = np.random.default_rng(16)
    x, h0, c0, weights = problem(rng, "gru", np.float32)
    dev = {k: on_device(v) for k, v in weights.items()}
    _, _, _, saved = F.recurrent_forward("gru", on_device(x), on_device(h0), None, dev)
    dy = on_device(rng.standard_normal((T, B, H)).astype(np.float32))
    first = F.recurrent_backward(dy, None, None, saved)
    second = F.recurrent_backward(dy, None, None, saved)
    for name in WEIGHTS[:4]:
        assert np.array_equal(host(first[3][name]), host(second[3][name])), name


@pytest.mark.parametrize("cell", CELLS)
def test_a_backward_without_dx_gives_the_same_other_gradients(cell, gemm):
    rng = np.random.default_rng(18)
    x, h0, c0, weights = problem(rng, cell, np.float32)
    dev = {k: on_device(v) for k, v in weights.items()}
    _, _, _, saved = F.recurrent_forward(cell, on_device(x), on_device(h0), on_device(c0), dev)
    dy = on_device(rng.standard_normal((T, B, H)).astype(np.float32))
    full = F.recurrent_backward(dy, None, None, saved)
    dx, dh0, dc0, dw = F.recurrent_backward(dy, None, None, saved, want_dx=False)
    assert dx is None and full[0] is not None
    assert np.array_equal(host(dh0), host(full[1]))
    assert (dc0 is None) == (full[2] is None)
    if dc0 is not None:
        assert np.array_equal(host(dc0), host(full[2]))
    for name in WEIGHTS:
        assert (dw[name] is None) == (full[3][name] is None), name
        if dw[name] is not None:
            assert np.array_equal(host(dw[name]), host(full[3][name])), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (37, 20, 45), (33, 17, 64), (5, 70, 3)])
def test_gemm_matches_numpy(dtype, ta, tb, m, k, n, gemm):
    rng = np.random.default_rng(17)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c = cuda._native().gemm(cuda.to_device(a), cuda.to_device(b), transpose_a=ta, transpose_b=tb).numpy()
    expected = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    assert_close(c, expected, dtype, OUTPUT, "c")


def test_device_arrays():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = cuda.to_device(a)
    assert d.shape == (3, 4) and d.dtype == np.float32 and d.ndim == 2 and d.nbytes == 48
    assert np.array_equal(d.numpy(), a) and np.array_equal(cuda.to_host(d), a)
    interface = d.__cuda_array_interface__
    assert interface["shape"] == (3, 4) and interface["typestr"] == "<f4" and interface["version"] == 3
    assert interface["data"][0] != 0 and interface["strides"] is None
    assert d.__dlpack_device__() == (2, d.device)
    capsule = d.__dlpack__()
    import ctypes
    is_valid = ctypes.pythonapi.PyCapsule_IsValid
    is_valid.restype, is_valid.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]
    assert is_valid(capsule, b"dltensor")
    del capsule  # an unconsumed capsule frees its hold on the buffer
    assert np.array_equal(d.numpy(), a)


class DLPackOnly:
    """A producer with DLPack and no __cuda_array_interface__ (as some frameworks' GPU arrays):
    it exports a DeviceArray's capsules and counts the stream each consumer asked for."""

    def __init__(self, array):
        self._array = array
        self.streams = []

    def __dlpack__(self, stream=None):
        self.streams.append(stream)
        return self._array.__dlpack__()

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_only_arrays_are_read_in_place(rng):
    x, h0, c0, weights = problem(rng, "gru", np.float32)
    dx = cuda.to_device(x)
    producer = DLPackOnly(dx)
    assert cuda.is_device_array(producer) and not cuda.is_device_array(np.zeros(2))
    view = cuda._native().from_dlpack(producer)
    assert producer.streams == [1]  # the legacy default stream, where the kernels run
    assert view.__cuda_array_interface__["data"][0] == dx.__cuda_array_interface__["data"][0]  # no copy
    assert np.array_equal(cuda.to_host(producer), x)
    device_weights = {k: DLPackOnly(cuda.to_device(w)) if w is not None else None for k, w in weights.items()}
    y, h_n, _, saved = F.recurrent_forward("gru", producer, DLPackOnly(cuda.to_device(h0)), None, device_weights)
    expected_y, expected_h_n, _, expected_saved = F.recurrent_forward("gru", dx, h0, None, weights)
    assert np.array_equal(y.numpy(), expected_y.numpy()) and np.array_equal(h_n.numpy(), expected_h_n.numpy())
    dy = rng.standard_normal(x.shape[:2] + (H,)).astype(np.float32)
    grads = F.recurrent_backward(DLPackOnly(cuda.to_device(dy)), None, None, saved)
    expected = F.recurrent_backward(cuda.to_device(dy), None, None, expected_saved)
    assert np.array_equal(grads[0].numpy(), expected[0].numpy())
    for name in WEIGHTS[:4]:
        assert np.array_equal(grads[3][name].numpy(), expected[3][name].numpy()), name
    # The imported view keeps the producer's memory alive after the producer is gone.
    del producer, dx, saved
    assert np.array_equal(view.numpy(), x)


def test_dlpack_arrays_in_host_memory_or_odd_dtypes_are_refused():
    class HostDLPack(DLPackOnly):
        def __dlpack_device__(self):
            return (1, 0)

    assert not cuda.is_device_array(HostDLPack(cuda.to_device(np.zeros(2, np.float32))))
    with pytest.raises(TypeError, match="x must be a float32 or float64 device array"):
        F.recurrent_forward("gru", DLPackOnly(cuda.to_device(np.zeros((1, 1, 1), np.int32))), None, None,
                            dict(weight_ih=np.ones((3, 1), np.float32), weight_hh=np.ones((3, 1), np.float32)))


def test_results_are_device_arrays_and_saved_state_stays_on_the_device():
    rng = np.random.default_rng(18)
    x, h0, c0, weights = problem(rng, "lstm", np.float32)
    y, h_n, c_n, saved = F.recurrent_forward("lstm", on_device(x), h0, c0, weights)  # host weights are uploaded
    assert all(isinstance(v, cuda.DeviceArray) for v in (y, h_n, c_n))
    assert all(v is None or isinstance(v, cuda.DeviceArray) for v in saved.arrays[:7] + saved.arrays[9:])
    assert saved.meta.fingerprints is None


def test_bad_device_arguments_raise():
    rng = np.random.default_rng(19)
    x, h0, c0, weights = problem(rng, "gru", np.float32)
    dx = on_device(x)
    with pytest.raises(ValueError, match="weight_ih must have shape"):
        F.recurrent_forward("gru", dx, None, None, dict(weights, weight_ih=on_device(weights["weight_ih"][1:])))
    with pytest.raises(TypeError, match="weight_hh has dtype float64"):
        wrong = on_device(weights["weight_hh"].astype(np.float64))
        F.recurrent_forward("gru", dx, None, None, dict(weights, weight_hh=wrong))
    with pytest.raises(ValueError, match="bf16_weights"):
        F.recurrent_forward("gru", dx, None, None, weights, training=False, bf16_weights=True)
    with pytest.raises(ValueError, match="lengths"):
        F.recurrent_forward("gru", dx, None, None, weights, lengths=[1, 2, 9])
    with pytest.raises(ValueError, match="algorithm"):
        cuda.set_algorithm("fastest")


def test_a_failed_cuda_call_raises_naming_the_call():
    class NotDeviceMemory:  # claims device memory at an address no allocation has
        def __init__(self, *shape):
            self.__cuda_array_interface__ = dict(shape=shape, typestr="<f4", data=(0x10, False), version=3,
                                                 strides=None)

    with pytest.raises(RuntimeError, match=r"cudaMemcpy \(device to host\) failed: cudaError"):
        cuda.to_host(NotDeviceMemory(4))
    with pytest.raises(ValueError, match="does not point to device memory"):
        F.recurrent_forward("rnn_tanh", NotDeviceMemory(1, 1, 1), None, None,
                            dict(weight_ih=np.ones((1, 1), np.float32), weight_hh=np.ones((1, 1), np.float32)))


def test_build_info_says_what_was_built():
    info = cuda.build_info()
    assert info["built"] and isinstance(info["emulator"], bool) and info["architectures"]
    assert len(info["devices"]) == cuda.device_count() >= 1

"""The CUDA backend's GEMM interface: the switch between cuBLAS and fusedrnn's own kernel
(fusedrnn.cuda.set_gemm), the mapping of its row-major products onto cuBLAS's column-major
arguments, which GEMM a product is routed to, and products through every GEMM available here.

On a GPU with cuBLAS installed both GEMMs run; in the emulated build (the CUDA emulator has no
cuBLAS) only fusedrnn's, and the cuBLAS cases skip. The mapping test needs no device: it checks
the arguments cuBLAS would be given by carrying out cuBLAS's documented column-major product on
the same memory in NumPy. The layer tests of every GEMM choice are in test_cuda.py.
"""

import numpy as np
import pytest

import fusedrnn.cuda as cuda
from tolerances import OUTPUT, assert_close


@pytest.fixture
def native():
    if not cuda.is_built():
        pytest.skip("no CUDA backend in this build")
    return cuda._native()


@pytest.fixture
def device(native):
    if not cuda.is_available():
        pytest.skip("no CUDA device (GPU or emulator)")
    return native


@pytest.fixture(autouse=True)
def _restore_the_switch():
    yield
    if cuda.is_built():
        cuda.set_gemm("auto")
        cuda._native().set_cublas_min_work(default_min_work())


def default_min_work():
    return 1 << 21  # cuda/cublas.h kDefaultMinWork


def cublas_usable():
    try:
        cuda.set_gemm("cublas")
    except RuntimeError:
        return False
    cuda.set_gemm("auto")
    return True


# --- the switch -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cuBLAS", "", "cudnn", None])
def test_bad_gemm_names_raise(name):
    with pytest.raises(ValueError, match="gemm must be one of auto, cublas, fusedrnn"):
        cuda.set_gemm(name)
    assert cuda.get_gemm() == "auto"


def test_set_gemm_and_get_gemm(native):
    for name in ("fusedrnn", "auto"):
        cuda.set_gemm(name)
        assert cuda.get_gemm() == name and cuda.build_info()["gemm"]["mode"] == name


def test_cublas_where_it_cannot_load_raises_saying_why(device):
    if cublas_usable():
        pytest.skip("cuBLAS loads here")
    cuda.set_gemm("fusedrnn")
    with pytest.raises(RuntimeError, match="cuBLAS") as error:
        cuda.set_gemm("cublas")
    info = cuda.build_info()
    if info["emulator"]:
        assert "emulator" in str(error.value)
    elif info["gemm"]["cublas_unavailable"] is not None:
        assert "libcublas.so." in str(error.value) and "looked for" in str(error.value)
    else:  # loaded, but no handle for this device
        assert "cublasCreate_v2 failed: CUBLAS_STATUS_" in str(error.value)
    assert cuda.get_gemm() == "fusedrnn"  # a failed switch leaves the choice as it was


def test_build_info_says_which_gemm_runs_and_why(device):
    gemm = cuda.build_info()["gemm"]
    assert gemm["mode"] == "auto" and gemm["cublas_min_work"] == default_min_work()
    if cuda.build_info()["emulator"]:
        assert gemm["cublas_version"] is None and gemm["cublas_library"] is None
        assert "emulator" in gemm["cublas_unavailable"]
        assert gemm["runs"].startswith("fusedrnn's tiled kernel for every product")
    elif gemm["cublas_version"] is not None:
        assert gemm["cublas_unavailable"] is None and "libcublas.so." in gemm["cublas_library"]
        assert len(gemm["cublas_version"].split(".")) == 3
        assert gemm["runs"].startswith("cuBLAS " + gemm["cublas_version"])
    cuda.set_gemm("fusedrnn")
    assert cuda.build_info()["gemm"]["runs"] == "fusedrnn's tiled kernel for every product (set_gemm('fusedrnn'))"


# --- the mapping onto cuBLAS's arguments ------------------------------------------------------

def column_major(buffer, rows, cols, ld):
    """The rows x cols column-major matrix at leading dimension ld over a flat buffer (a view)."""
    assert ld >= max(1, rows), "cuBLAS requires ld >= rows"
    assert (rows - 1) + (cols - 1) * ld < buffer.size, "the matrix must lie inside its buffer"
    return np.lib.stride_tricks.as_strided(buffer, (rows, cols), (buffer.itemsize, ld * buffer.itemsize))


def cublas_gemm(form, first, second, c):
    """cuBLAS's gemm on flat buffers as its documentation defines it (column-major, alpha 1, beta
    0): C (m x n, ldc) = op(A) (m x k, lda) op(B) (k x n, ldb); `first` is its A, `second` its B."""
    m, n, k = form["m"], form["n"], form["k"]
    op_a = (column_major(first, m, k, form["lda"]) if form["transa"] == "N"
            else column_major(first, k, m, form["lda"]).T)
    op_b = (column_major(second, k, n, form["ldb"]) if form["transb"] == "N"
            else column_major(second, n, k, form["ldb"]).T)
    column_major(c, m, n, form["ldc"])[...] = op_a @ op_b


def strided(rng, rows, cols, transposed, pad):
    """A rows x cols operand inside a larger buffer: its flat buffer and (row stride, column stride)."""
    if transposed:
        base = rng.standard_normal((cols, rows + pad))
        return base.ravel(), (1, rows + pad)
    base = rng.standard_normal((rows, cols + pad))
    return base.ravel(), (cols + pad, 1)


def operand(buffer, rows, cols, strides):
    size = buffer.itemsize
    return np.lib.stride_tricks.as_strided(buffer, (rows, cols), (strides[0] * size, strides[1] * size))


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m, n, k", [(3, 4, 5), (1, 4, 5), (3, 1, 5), (3, 4, 1), (1, 1, 1), (7, 2, 9)])
def test_row_major_products_map_onto_cublas_arguments(native, m, n, k, ta, tb, pad):
    rng = np.random.default_rng(31)
    a, a_strides = strided(rng, m, k, ta, pad)
    b, b_strides = strided(rng, k, n, tb, pad)
    ldc = n + pad
    form = native.cublas_form(m, n, k, *a_strides, *b_strides, ldc)
    assert form is not None
    c = np.full(m * ldc, np.nan)
    cublas_gemm(form, b, a, c)  # C^T = B^T A^T: cuBLAS's A is our B
    expected = operand(a, m, k, a_strides) @ operand(b, k, n, b_strides)
    np.testing.assert_allclose(c.reshape(m, ldc)[:, :n], expected, rtol=1e-13, atol=1e-13)
    assert np.isnan(c.reshape(m, ldc)[:, n:]).all()  # the padding of C is not written


@pytest.mark.parametrize("m, n, k, a_strides, b_strides, ldc, why", [
    (3, 4, 5, (10, 2), (4, 1), 4, "A has no unit stride"),
    (3, 4, 5, (5, 1), (0, 1), 4, "B is broadcast along K"),
    (3, 4, 5, (5, 1), (4, 1), 3, "C's rows overlap"),
    (3, 4, 5, (3, 1), (4, 1), 4, "A's rows overlap"),
    (3, 4, 5, (-5, 1), (4, 1), 4, "a negative stride"),
    (3, 2**31, 5, (5, 1), (2**31, 1), 2**31, "N beyond int"),
])
def test_products_cublas_cannot_address_have_no_form(native, m, n, k, a_strides, b_strides, ldc, why):
    assert native.cublas_form(m, n, k, *a_strides, *b_strides, ldc) is None, why


# --- routing and products through each GEMM ---------------------------------------------------

def test_route_follows_the_documented_rule(device):
    big, small = (128, 128, 129), (128, 128, 127)  # just above and below 2^21 multiply-adds
    def route(m, n, k, a_strides=None):
        return device.gemm_route(m, n, k, *(a_strides or (k, 1)), n, 1, n)
    assert route(*small) == ("fusedrnn", "below the threshold of 2097152 multiply-adds")
    assert route(*big, a_strides=(2, 3))[1] == "cuBLAS cannot address these strides or sizes"
    to, why = route(*big)
    if cublas_usable():
        assert (to, why) == ("cublas", "a large product")
    else:
        assert to == "fusedrnn" and why == cuda.build_info()["gemm"]["cublas_unavailable"]
    cuda.set_gemm("fusedrnn")
    assert route(*big) == ("fusedrnn", "set_gemm('fusedrnn')")


GEMMS = ["fusedrnn", "cublas", "auto"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m, k, n", [(37, 20, 45), (1, 70, 3)])
@pytest.mark.parametrize("gemm", GEMMS)
def test_products_through_each_gemm(device, gemm, m, k, n, ta, tb, dtype):
    """With the threshold lowered to one multiply-add, "auto" takes its large-product path at sizes
    the emulator runs quickly (cuBLAS on a GPU that has it, fusedrnn's kernel in the emulator)."""
    usable = cublas_usable()
    if gemm == "cublas" and not usable:
        pytest.skip("cuBLAS cannot be used here: " + str(cuda.build_info()["gemm"]["cublas_unavailable"]))
    cuda.set_gemm(gemm)
    device.set_cublas_min_work(1)
    rng = np.random.default_rng(32)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    route = device.gemm_route(m, n, k, *((1, m) if ta else (k, 1)), *((1, k) if tb else (n, 1)), n)[0]
    assert route == ("cublas" if gemm != "fusedrnn" and usable else "fusedrnn")
    c = device.gemm(cuda.to_device(a), cuda.to_device(b), transpose_a=ta, transpose_b=tb).numpy()
    expected = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    assert c.dtype == dtype
    assert_close(c, expected, dtype, OUTPUT, "c")

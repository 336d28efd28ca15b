"""The CUDA backend: what was built, device arrays, and the switch between its two loop forms.

The backend is opt-in at build time (``FUSEDRNN_CUDA=1 pip install .``, see the README); without
it :func:`is_built` is False and everything here that needs a device raises ``RuntimeError``.
With it, :func:`fusedrnn.functional.recurrent_forward` and :func:`~fusedrnn.functional.recurrent_backward`
run on the GPU when ``x`` is a device array: anything with ``__cuda_array_interface__`` (a
:class:`DeviceArray`, a CuPy array, a PyTorch CUDA tensor) or with DLPack's ``__dlpack__`` in CUDA
memory (a JAX array on a GPU, ...), read in place, C-contiguous. They
return :class:`DeviceArray` results, which other frameworks take without a copy through DLPack
(``torch.from_dlpack(y)``) or ``__cuda_array_interface__`` (``cupy.asarray(y)``); ``y.numpy()`` copies
one to the host. Host weights given with a device ``x`` are copied to the device for the call.

Large matrix products run in cuBLAS where it is installed (the CUDA toolkit's, or ``pip install
nvidia-cublas``), loaded when first needed; the rest, and everything in a build without cuBLAS,
in fusedrnn's own GEMM kernel: see :func:`set_gemm`.

Verified under a CUDA emulator only (a PTX emulator that runs the kernels on the CPU), until a GPU
run is recorded in bench/RESULTS.md.
"""

import importlib
import importlib.util
import os

import numpy as np

__all__ = ["is_built", "is_available", "device_count", "build_info", "DeviceArray", "to_device", "to_host",
           "is_device_array", "set_algorithm", "get_algorithm", "set_gemm", "get_gemm", "release_workspaces"]

_ALGORITHMS = ("auto", "stepwise", "warp", "persistent")
_algorithm = "auto"
_GEMMS = ("auto", "cublas", "fusedrnn")
_gemm = "auto"
_MODULE = __name__.rpartition(".")[0] + "._cuda"
_native_module = None


def _native():
    """The extension module fusedrnn._cuda, imported on first use (None in a build without it):
    importing fusedrnn loads no CUDA runtime, and a CPU-only user never starts one."""
    global _native_module
    if _native_module is None and is_built():
        module = importlib.import_module(_MODULE)
        module.set_cublas_search_dirs(_cublas_wheel_dirs(module.cublas_library_name()))
        _native_module = module
    return _native_module


def _cublas_wheel_dirs(library):
    """Where the nvidia-cublas wheel put `library` (libcublas.so.N), if it is installed: its CUDA 13
    wheels use nvidia/cu13/lib, its CUDA 12 wheels nvidia/cublas/lib. Found without importing
    anything; the module tries these after the loader's own search."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    major = library.rpartition(".")[2]
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    candidates = [os.path.join(root, sub, "lib") for root in roots for sub in (f"cu{major}", "cublas")]
    return [d for d in candidates if os.path.isfile(os.path.join(d, library))]


def __getattr__(name):
    if name == "DeviceArray":  # the device array type of the backend's results (None without it)
        module = _native()
        return module.DeviceArray if module is not None else None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_built():
    """Whether this copy of fusedrnn was built with the CUDA backend."""
    return importlib.util.find_spec(_MODULE) is not None


def device_count():
    """CUDA devices visible to the backend (0 without the backend, a driver or a device)."""
    module = _native()
    return module.device_count() if module is not None else 0


def is_available():
    """Whether the CUDA backend is built and a device (or the emulator it was built for) is there."""
    return device_count() > 0


def build_info():
    """What was built and what it runs on: a dict with ``built`` (bool) and, when built,
    ``emulator`` (linked against the CUDA emulator rather than the CUDA runtime), ``architectures``
    (what nvcc compiled for), ``nvcc`` (its version), ``runtime_version``, ``driver_version`` and
    ``devices`` (name, compute capability, multiprocessors, memory of each), and ``gemm``: which
    GEMM the products run in and why (``mode``, ``runs`` in words, ``cublas_version`` and
    ``cublas_library`` when cuBLAS is loaded, else ``cublas_unavailable`` with the reason, and
    ``cublas_min_work``, the smallest product "auto" sends to cuBLAS). Asking loads cuBLAS if it
    is installed and not loaded yet."""
    if not is_built():
        return {"built": False}
    return {"built": True, **_native().build_info()}


def _require():
    if not is_built():
        raise RuntimeError("fusedrnn was built without the CUDA backend: rebuild with FUSEDRNN_CUDA=1 (see README)")
    if _native().device_count() == 0:
        raise RuntimeError("fusedrnn's CUDA backend found no CUDA device")


_DLPACK_CUDA_DEVICES = (2, 13)  # DLPack's kDLCUDA and kDLCUDAManaged


def is_device_array(value):
    """Whether `value` is a CUDA device array: it has ``__cuda_array_interface__``, or it is in CUDA
    memory by its DLPack ``__dlpack_device__``."""
    if hasattr(value, "__cuda_array_interface__"):
        return True
    dlpack_device = getattr(value, "__dlpack_device__", None)
    return dlpack_device is not None and hasattr(value, "__dlpack__") and dlpack_device()[0] in _DLPACK_CUDA_DEVICES


def _with_interface(value):
    """A device array as one with ``__cuda_array_interface__``: itself, or a :class:`DeviceArray`
    viewing it through DLPack (no copy)."""
    if hasattr(value, "__cuda_array_interface__"):
        return value
    _require()
    return _native().from_dlpack(value)


def to_device(array):
    """A :class:`DeviceArray` copy of a host array (C-contiguous on the device)."""
    _require()
    return _native().to_device(np.ascontiguousarray(array))


def to_host(array):
    """A NumPy copy of a device array (anything C-contiguous with ``__cuda_array_interface__`` or DLPack);
    a host array is returned as ``numpy.asarray`` gives it."""
    if not is_device_array(array):
        return np.asarray(array)
    _require()
    return _native().to_host(_with_interface(array))


def set_algorithm(name):
    """How the kernels run the time loop, from now on: ``"stepwise"`` (one launch per step phase,
    a thread per (sequence, unit) pair, in blocks of 8 sequences x 32 units that share tiles of
    the state and weights), ``"warp"`` (the same with a warp per pair, its lanes
    splitting the dot products: for batches too small to fill the GPU otherwise), ``"persistent"``
    (one block per sequence for the whole loop; the recurrent weights in shared memory when they
    fit), or ``"auto"`` (the default: persistent when the weights fit, else warp below 2^15 pairs
    per step, else stepwise)."""
    global _algorithm
    if name not in _ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(_ALGORITHMS)}, got {name!r}")
    _algorithm = name


def get_algorithm():
    """The loop form set by :func:`set_algorithm`."""
    return _algorithm


def set_gemm(name):
    """Which GEMM the backend's matrix products (the input projections, the weight and input
    gradients after the loop) run in, from now on: ``"auto"`` (the default: cuBLAS for products of
    at least ``build_info()["gemm"]["cublas_min_work"]`` multiply-adds when cuBLAS is installed,
    fusedrnn's own tiled kernel otherwise), ``"cublas"`` (cuBLAS for every product; raises
    ``RuntimeError`` saying why where it cannot load: an emulated build, the library not found,
    or its handle not made) or ``"fusedrnn"`` (fusedrnn's kernel for every product). Both are
    deterministic. cuBLAS is loaded at run time from the system's CUDA toolkit or the
    ``nvidia-cublas`` wheel; the recurrent products inside the time loop are always fusedrnn's."""
    global _gemm
    if name not in _GEMMS:
        raise ValueError(f"gemm must be one of {', '.join(_GEMMS)}, got {name!r}")
    module = _native()
    if module is not None:
        module.set_gemm(name)
    elif name == "cublas":
        raise RuntimeError("fusedrnn was built without the CUDA backend: rebuild with FUSEDRNN_CUDA=1 (see README)")
    _gemm = name


def get_gemm():
    """The GEMM choice set by :func:`set_gemm`."""
    return _gemm


def release_workspaces():
    """Frees the device workspaces the kernels keep between calls (they are reallocated on demand)."""
    if _native_module is not None:
        _native_module.release_workspaces()

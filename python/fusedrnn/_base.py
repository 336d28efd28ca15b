"""What the NumPy front ends share: Parameter, the argument checks, and the GEMM they multiply with.

``fusedrnn.nn``, ``fusedrnn.keras``, ``fusedrnn.optim`` and ``fusedrnn.distributed`` all import
these from here, so none of them reaches into another's modules.
"""

import numpy as np

from . import _core

__all__ = ["Parameter", "parameter_versions", "check_parameter_versions", "resolve_dtype", "check_device", "as_float_array", "as_any_float_array", "check_grad",
           "matmul"]

_FLOAT_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


class Parameter:
    """A trainable array: ``.data`` (ndarray), ``.grad`` (ndarray or None), ``.requires_grad``, and
    ``.version``, which counts the writes to ``.data`` as PyTorch's ``tensor._version`` does.

    Assigning ``.data`` bumps the version; so does ``param.data -= step``, which Python runs as an
    assignment. Optimizers bump it once per parameter they update, and weight loads once per
    parameter they write. A write into the array itself (``param.data[...] = values``) goes
    unseen: call ``bump_version()`` after it. Whatever is computed from the values (a forward
    pass's saved state, packed copies of the weights) can compare versions to tell whether the
    values changed since.
    """

    __slots__ = ("_data", "_version", "grad", "requires_grad")

    def __init__(self, data, requires_grad=True):
        self._data = np.array(data, copy=True)
        self._version = 0
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data = value
        self._version += 1

    @property
    def version(self):
        """How many times the values were written (0 for a new Parameter); read-only."""
        return self._version

    def bump_version(self):
        """Records a write into ``.data`` made in place, which the Parameter cannot see."""
        self._version += 1

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def size(self):
        return self._data.size

    def numel(self):
        return self._data.size

    def accumulate_grad(self, grad):
        """Adds `grad` into .grad (creating it on first use), PyTorch's ``+=`` contract."""
        if not self.requires_grad or grad is None:
            return
        if self.grad is None:
            self.grad = np.array(grad, dtype=self._data.dtype, copy=True).reshape(self._data.shape)
        else:
            self.grad += grad

    def __array__(self, dtype=None, copy=None):
        return self._data if dtype is None else self._data.astype(dtype)

    def __repr__(self):
        return f"Parameter containing:\n{self._data!r}"


def parameter_versions(named_parameters):
    """``[(name, parameter, version)]`` of (name, Parameter) pairs, taken by a training forward
    for :func:`check_parameter_versions` in its backward."""
    return [(name, param, param.version) for name, param in named_parameters if param is not None]


def check_parameter_versions(recorded):
    """Raises RuntimeError naming the first parameter written since :func:`parameter_versions`
    recorded it: what the forward saved for backward is stale then, and PyTorch raises too."""
    for name, param, version in recorded:
        if param.version != version:
            raise RuntimeError(f"{name} was changed (by an optimizer step, an assignment or a weight load) after "
                               f"the forward pass that saved it for backward: it is at version {param.version}, "
                               f"the forward saw version {version}. Run the forward again after changing it.")


def resolve_dtype(dtype):
    """`dtype` (None, np.float32/np.float64 or their names) as a NumPy dtype; None is float32."""
    if dtype is None:
        return _FLOAT_DTYPES["float32"]
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.name not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved


def check_device(device):
    """For modules that run on the CPU only: accept the spellings PyTorch code passes for it."""
    if device is None or (isinstance(device, str) and device == "cpu"):
        return
    raise ValueError(f"device must be None or 'cpu': this module runs on the CPU only (fusedrnn.nn's RNN, LSTM "
                     f"and GRU also take 'cuda'), got {device!r}")


def _refuse_device_array(x, name):
    # np.asarray would make an object array of it, and the error would say "dtype object".
    if hasattr(x, "__cuda_array_interface__"):
        raise TypeError(f"{name} is a CUDA device array, but this runs on the host: pass a NumPy array "
                        "(fusedrnn.cuda.to_host copies one), or move a fusedrnn.nn RNN/LSTM/GRU to 'cuda'")


def as_float_array(x, dtype, name="input"):
    """`x` as an ndarray of `dtype`. Arrays of another dtype raise TypeError (PyTorch raises on a
    dtype mismatch); Python numbers and lists, which carry no dtype of their own, are converted."""
    if type(x) is not np.ndarray:  # (a plain array, the common case, is never a device array)
        if isinstance(x, Parameter):
            x = x.data
        _refuse_device_array(x, name)
    if isinstance(x, np.ndarray):
        if x.dtype != dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but the module's parameters are {np.dtype(dtype).name}: "
                            f"convert it (.astype({np.dtype(dtype).name!r})) or build the module with "
                            f"dtype={x.dtype.name!r}")
        return x
    return np.asarray(x, dtype=dtype)


def as_any_float_array(x, name="input"):
    """`x` as a float32 or float64 ndarray (for modules without a dtype of their own)."""
    if isinstance(x, Parameter):
        x = x.data
    _refuse_device_array(x, name)
    x = np.asarray(x)
    if x.dtype.name not in _FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}, expected float32 or float64")
    return x


def check_grad(grad_output, shape, dtype):
    """The incoming gradient, of the output's shape and dtype."""
    grad_output = as_float_array(grad_output, dtype, "grad_output")
    if grad_output.shape != shape:
        raise ValueError(f"grad_output has shape {grad_output.shape}, expected the output's {shape}")
    return grad_output


def matmul(a, b):
    """a @ b for 2-d float arrays of one dtype, on fusedrnn's own GEMM.

    Not NumPy's: its BLAS threads keep spinning for a while after each call, on the very cores
    the recurrent kernels' threads then wait for at their per-step barrier (a training step of
    a small model measured 36 ms alone and up to seconds beside NumPy matmuls on 2 cores).
    """
    return _core.gemm(a, b)

"""Where a recurrent layer of fusedrnn.nn runs: the device names, and a CUDA layer's device copies
of its weights.

A layer built with ``device="cuda"`` (or moved there with ``.to("cuda")``) keeps its parameters and
gradients as NumPy arrays on the host, so optimizers, ``state_dict`` and checkpoints see nothing
new. Its forward runs each layer direction's kernel on the device with device copies of the
weights, which :class:`DeviceWeights` keeps between calls and uploads again only when the host
values changed.

How a change is seen: by a fingerprint of each weight's bytes (``_core.fingerprint``, the digest
the CPU path already takes of every weight at each training forward), not by the Parameter's
version or the array's identity. An optimizer writes into the same array (identity unchanged) and
bumps the version, but a plain ``param.data[...] = values`` bumps nothing; a stale device copy
would be a silent wrong answer, so only the bytes decide. Any change of a value changes that
lane's digest (the digest is a bijection of each word), so a single changed weight is always seen.

The arithmetic between layers and directions (joining a bidirectional layer's two outputs, dropout
between layers, the sum of the two directions' input gradients) runs on the host: those arrays
are downloaded and the next layer's input uploaded again. Inputs the kernels cannot read in place
(batch_first, unbatched or packed device inputs) take the same round trip.
"""

import numpy as np

from .. import _core
from .. import cuda as _cuda
from .utils.rnn import PackedSequence

__all__ = ["resolve_device", "DeviceWeights", "is_device_array", "to_host", "to_device", "forward_arguments",
           "backward_arguments", "to_callers_kind"]

is_device_array = _cuda.is_device_array
to_device = _cuda.to_device


def to_host(value):
    """`value` as a NumPy array: a device array is downloaded. (An ndarray is told by its type
    first: the CPU layers call this on every result, and asking for a device interface costs.)"""
    return value if type(value) is np.ndarray else _cuda.to_host(value)

_TYPESTRS = {"<f4": np.dtype(np.float32), "<f8": np.dtype(np.float64)}


def resolve_device(device):
    """``"cpu"`` or ``"cuda"`` from what PyTorch code passes (None, ``"cpu"``, ``"cuda"``,
    ``"cuda:0"``); raises ValueError for other names and RuntimeError where CUDA cannot run."""
    if device is None or (isinstance(device, str) and device == "cpu"):
        return "cpu"
    if not isinstance(device, str) or device not in ("cuda", "cuda:0"):
        raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:0', got {device!r}")
    if not _cuda.is_available():
        info = _cuda.build_info()
        why = ("this copy of fusedrnn was built without the CUDA backend (rebuild with FUSEDRNN_CUDA=1, see "
               "the README)") if not info["built"] else "the CUDA backend found no CUDA device"
        raise RuntimeError(f"device={device!r} is not available: {why}")
    return "cuda"


class _DeviceView:
    """A device array given by a caller, described by its ``__cuda_array_interface__`` (so that
    shape and dtype are read the same way from CuPy, PyTorch or our own arrays); it keeps the
    array alive and is read in place by the kernels."""

    __slots__ = ("base", "shape", "dtype", "__cuda_array_interface__")

    def __init__(self, base, name):
        base = _cuda._with_interface(base)   # (a DLPack-only array: viewed as a DeviceArray, no copy)
        interface = base.__cuda_array_interface__
        if interface["typestr"] not in _TYPESTRS:
            raise TypeError(f"{name} must be a float32 or float64 device array, got typestr {interface['typestr']}")
        shape = tuple(interface["shape"])
        strides = interface.get("strides")
        itemsize = _TYPESTRS[interface["typestr"]].itemsize
        contiguous = tuple(itemsize * int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))
        if strides is not None and tuple(strides) != contiguous and 0 not in shape:
            raise ValueError(f"{name} must be a C-contiguous device array, got strides {tuple(strides)}")
        self.base, self.shape, self.dtype = base, shape, _TYPESTRS[interface["typestr"]]
        self.__cuda_array_interface__ = dict(interface, strides=None)

    @property
    def ndim(self):
        return len(self.shape)


def _checked_device(value, dtype, name):
    view = _DeviceView(value, name)
    if view.dtype != dtype:
        raise TypeError(f"{name} has dtype {view.dtype} but the module's parameters are {dtype.name}: convert "
                        f"it or build the module with dtype={view.dtype.name!r}")
    return view


def _download(value, dtype, name):
    """A caller's device array as a host array (after the dtype check); host values unchanged."""
    return to_host(_checked_device(value, dtype, name)) if is_device_array(value) else value


def _download_states(states, dtype, name):
    if isinstance(states, (tuple, list)):
        return type(states)(None if s is None else _download(s, dtype, name) for s in states)
    return None if states is None else _download(states, dtype, name)


def forward_arguments(module, input, hx):
    """(input, hx, device_io) for a CUDA layer's forward: device_io says the caller gave device
    data (the results go back as device arrays). A time-major 3-D device input stays on the
    device (checked, read in place); other device inputs and the states are downloaded."""
    dtype = module.weight_ih_l0.dtype
    data = input.data if isinstance(input, PackedSequence) else input
    device_io = is_device_array(data)
    if isinstance(input, PackedSequence):
        input = input._replace(data=_download(data, dtype, "input"))
    elif device_io:
        view = _checked_device(input, dtype, "input")
        input = view if view.ndim == 3 and not module.batch_first else to_host(view)
    return input, _download_states(hx, dtype, "hx"), device_io


def backward_arguments(module, grad_output, grad_hn, context):
    """grad_output and grad_hn for a CUDA layer's backward: a device grad_output stays on the
    device where the forward's output was the kernels' own (time-major) array; else downloaded.
    First raises if a weight's bytes changed since the forward (see DeviceWeights.check_unchanged)."""
    for index, stamps in enumerate(context["stamps"]):
        layer, direction = divmod(index, module._directions)
        DeviceWeights.check_unchanged(module._weight_parameters(layer, direction), stamps,
                                      module._suffixes(layer)[direction])
    dtype = module.weight_ih_l0.dtype
    if isinstance(grad_output, PackedSequence):
        grad_output = grad_output._replace(data=_download(grad_output.data, dtype, "grad_output"))
    elif is_device_array(grad_output):
        view = _checked_device(grad_output, dtype, "grad_output")
        in_place = context["packed"] is None and not context["unbatched"] and not module.batch_first
        grad_output = view if in_place else to_host(view)
    return grad_output, _download_states(grad_hn, dtype, "grad_hn")


def _as_kind(value, device):
    if value is None:
        return None
    if isinstance(value, PackedSequence):
        return value._replace(data=_as_kind(value.data, device))
    if isinstance(value, tuple):
        return tuple(_as_kind(v, device) for v in value)
    if device:
        return value if is_device_array(value) else _cuda.to_device(value)
    return to_host(value)


def to_callers_kind(values, device_io):
    """Every array in `values` (a tuple; nested tuples and PackedSequences too) as a device array
    when the caller gave device data, else as a NumPy array."""
    return _as_kind(tuple(values), device_io)


class DeviceWeights:
    """A CUDA layer's device copies of its weights, one per (layer, direction, name), each kept
    with the fingerprint of the host bytes it was uploaded from.

    ``uploads`` counts the weight arrays uploaded (for tests and for curious users). Copying or
    pickling a layer gives an empty cache: device copies are not state.
    """

    def __init__(self):
        self._copies = {}   # (layer, direction, name) -> (stamp, device array)
        self.uploads = 0

    def weights(self, params, slot):
        """The device copies of `params` (name -> Parameter, the layer direction's weights) for
        a forward, uploading those whose host bytes changed; also returns their stamps, which a
        training forward keeps so that its backward can see a weight written in place."""
        device_weights, stamps = {}, {}
        for name, param in params.items():
            host = np.ascontiguousarray(param.data)
            stamp = (host.dtype.str, host.shape, _core.fingerprint(host))
            key = slot + (name,)
            held = self._copies.get(key)
            if held is None or held[0] != stamp:
                # A new device array, never a write into the old one: a training forward's saved
                # state may still hold the old copy for its backward.
                held = self._copies[key] = (stamp, _cuda.to_device(host))
                self.uploads += 1
            device_weights[name], stamps[name] = held[1], stamp
        return device_weights, stamps

    @staticmethod
    def check_unchanged(params, stamps, suffix=""):
        """Raises, as the CPU path does, if a weight's host bytes differ from those the forward used
        (a write into ``.data`` that bumped no version): its gradients would belong to other values."""
        for name, param in params.items():
            host = np.ascontiguousarray(param.data)
            if (host.dtype.str, host.shape, _core.fingerprint(host)) != stamps[name]:
                raise RuntimeError(f"{name}{suffix} was modified in place after the forward pass that saved it for "
                                   "backward: its gradients would be wrong. Run the forward again after changing it.")

    @property
    def nbytes(self):
        return sum(copy.nbytes for _, copy in self._copies.values())

    def __reduce__(self):
        return DeviceWeights, ()

    def __repr__(self):
        return f"DeviceWeights({len(self._copies)} arrays, {self.nbytes} bytes, {self.uploads} uploads)"

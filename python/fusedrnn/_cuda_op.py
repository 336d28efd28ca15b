"""The uniform op (fusedrnn.functional) on the CUDA backend: argument checks for device arrays,
then fusedrnn._cuda's kernels. functional.recurrent_forward / recurrent_backward come here when
x is a device array; the contract and the results' shapes are theirs, the results DeviceArrays.

Device inputs are read in place; host weights and states given with a device x are copied to
the device. lengths and mask are copied to the host (B and T*B values): the masking schedule's
first steps are computed there. The backward's fingerprint check of the saved inputs
(check_unchanged) is a host-side digest and does not run on device arrays.
"""

import numpy as np

from . import _arguments as args
from . import cuda as _device

_TYPESTRS = {"<f4": np.dtype(np.float32), "<f8": np.dtype(np.float64)}


def _shape_and_dtype(value, name):
    interface = value.__cuda_array_interface__
    typestr = interface["typestr"]
    if typestr not in _TYPESTRS:
        raise TypeError(f"{name} must be a float32 or float64 device array, got typestr {typestr}")
    return tuple(interface["shape"]), _TYPESTRS[typestr]


def _on_device(value, name, shape, dtype, optional=False):
    """value (device or host) as a device array of `dtype` and exactly `shape`."""
    if value is None:
        if optional:
            return None
        raise TypeError(f"{name} is required")
    if not _device.is_device_array(value):
        return _device.to_device(args.checked(value, name, shape, dtype))
    value = _device._with_interface(value)
    actual, actual_dtype = _shape_and_dtype(value, name)
    if actual_dtype != dtype:
        raise TypeError(f"{name} has dtype {actual_dtype} but x has dtype {dtype}: use one dtype")
    if actual != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {actual}")
    return value


def _sizes(cell, gates, weight_hh, weight_hr):
    """(H, P) as args.sizes, from device or host weights."""
    def shape(value, name):
        return _shape_and_dtype(value, name)[0] if _device.is_device_array(value) else np.shape(value)
    hh = shape(weight_hh, "weight_hh")
    if weight_hr is None:
        if len(hh) != 2 or hh[1] == 0 or hh[0] != gates * hh[1]:
            raise ValueError(f"weight_hh must have shape ({gates}*H, H) with H >= 1 for {cell}, got {hh}")
        return hh[1], hh[1]
    hr = shape(weight_hr, "weight_hr")
    if len(hr) != 2 or 0 in hr:
        raise ValueError(f"weight_hr must have shape (P, H) with P, H >= 1, got {hr}")
    return hr[1], hr[0]


def forward(cell, info, x, h0, c0, weights, *, lengths, mask, masked_output, reverse, training, recurrent_scale,
            bf16_weights, bf16_projections):
    """recurrent_forward on the device; returns (y, h_n, c_n, computed, inputs, lengths, mask)."""
    _device._require()
    if bf16_weights or bf16_projections:
        raise ValueError("bf16_weights=True is a CPU inference mode: the CUDA backend has no bfloat16 kernels")
    x = _device._with_interface(x)
    # (DLPack-only weights viewed once here: their shapes are read before they are checked.)
    weights = {name: _device._with_interface(w) if w is not None and _device.is_device_array(w) else w
               for name, w in weights.items()}
    x_shape, dtype = _shape_and_dtype(x, "x")
    if len(x_shape) != 3:
        raise ValueError(f"x must have 3 dimensions (T, B, I), got shape {x_shape}")
    T, B, I = x_shape
    if T == 0:
        raise ValueError("x has T = 0 time steps: a sequence needs at least one step")
    G = info.gates
    H, P = _sizes(cell, G, weights["weight_hh"], weights["weight_hr"])
    lengths = args.checked_lengths(_device.to_host(lengths) if lengths is not None else None, T, B)
    mask = args.checked_mask(_device.to_host(mask) if mask is not None else None, T, B, lengths)
    arrays = dict(
        x=_on_device(x, "x", (T, B, I), dtype),
        h0=_on_device(h0, "h0", (B, P), dtype, optional=True),
        c0=_on_device(c0, "c0", (B, H), dtype, optional=True),
        w_ih=_on_device(weights["weight_ih"], "weight_ih", (G * H, I), dtype),
        w_hh=_on_device(weights["weight_hh"], "weight_hh", (G * H, P), dtype),
        w_hr=_on_device(weights["weight_hr"], "weight_hr", (P, H), dtype, optional=True),
        recurrent_scale=_on_device(recurrent_scale, "recurrent_scale", (B, P), dtype, optional=True),
        b_ih=_on_device(weights["bias_ih"], "bias_ih", (G * H,), dtype, optional=True),
        b_hh=_on_device(weights["bias_hh"], "bias_hh", (G * H,), dtype, optional=True),
    )
    y, h_n, c_n, computed = _device._native().forward(
        cell, lengths=lengths, mask=mask, repeat_masked_output=masked_output == "repeat", reverse=bool(reverse),
        training=bool(training), algorithm=_device.get_algorithm(), **arrays)
    inputs = tuple(arrays[key] for key in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "recurrent_scale"))
    return y, h_n, c_n, computed, inputs, lengths, mask


def backward(dy, dh_n, dc_n, saved, info, want_dx=True):
    """recurrent_backward on the device: (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr); dx is
    None, and not computed, unless want_dx."""
    _device._require()
    meta = saved.meta
    x = saved["x"]
    (T, B, _), dtype = _shape_and_dtype(x, "x")
    w_hh_shape, _ = _shape_and_dtype(saved["weight_hh"], "weight_hh")
    H, P = w_hh_shape[0] // info.gates, w_hh_shape[1]
    grads = dict(dy=_on_device(dy, "dy", (T, B, P), dtype, optional=True),
                 dh_n=_on_device(dh_n, "dh_n", (B, P), dtype, optional=True),
                 dc_n=_on_device(dc_n, "dc_n", (B, H), dtype, optional=True))
    return _device._native().backward(
        meta.cell, x, saved["weight_ih"], saved["weight_hh"], saved["weight_hr"], saved["recurrent_scale"],
        saved["lengths"], saved["mask"], meta.repeat_masked_output, meta.reverse,
        (saved["gates"], saved["h"], saved["c"], saved["m"]),
        want_db_ih=saved["bias_ih"] is not None, want_db_hh=saved["bias_hh"] is not None,
        algorithm=_device.get_algorithm(), want_dx=bool(want_dx), **grads)

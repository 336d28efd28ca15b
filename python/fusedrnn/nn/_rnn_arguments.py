"""The recurrent layers' state and gradient arguments (hx, grad_output, grad_hn): checked against
the layer and turned into the kernels' time-major, batch-sorted layout.

Each function takes the layer (an RNNBase) as ``module``; ``ctx`` is what its training forward saved.
"""

import numpy as np

from .. import functional as F
from .._base import as_float_array
from . import _device
from .utils.rnn import PackedSequence, _packed_to_padded

__all__ = ["expected_states", "initial_states", "grad_output_time_major", "grad_final_states"]


def _has_cell_state(mode):
    return F.CELLS[mode.lower()].has_cell_state


def expected_states(module, batch):
    """Expected shapes of h and c (batched), in the order of the hx tuple."""
    rows = module.num_layers * module._directions
    shapes = [(rows, batch, module._state_size)]
    if _has_cell_state(module.mode):
        shapes.append((rows, batch, module.hidden_size))
    return shapes


def initial_states(module, hx, batch, unbatched, sorted_indices, dtype):
    """hx as batched (h0, c0) arrays in the kernels' (sorted) batch order; (None, None) if absent."""
    if hx is None:
        return None, None
    lstm = _has_cell_state(module.mode)
    # The common case first, as a generation loop passes back what the last call returned:
    # batched arrays of the module's dtype and the expected shapes, in the caller's batch order.
    if not unbatched and sorted_indices is None:
        h = hx[0] if lstm and type(hx) is tuple and len(hx) == 2 else hx
        c = hx[1] if lstm and h is not hx else None
        rows = module.num_layers * module._directions
        if type(h) is np.ndarray and h.dtype == dtype and h.shape == (rows, batch, module._state_size) and \
                (not lstm or (type(c) is np.ndarray and c.dtype == dtype and c.shape == (rows, batch, module.hidden_size))):
            return h, c
    if lstm:
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("hx of an LSTM must be a tuple (h_0, c_0)")
        states = [as_float_array(hx[0], dtype, "hx"), as_float_array(hx[1], dtype, "hx")]
    elif isinstance(hx, (tuple, list)):
        raise TypeError(f"hx of {type(module).__name__} must be one array, not a {type(hx).__name__}")
    else:
        states = [as_float_array(hx, dtype, "hx")]
    want = 2 if unbatched else 3
    if states[0].ndim != want or states[-1].ndim != want:
        kind = "unbatched 2-D" if unbatched else "batched 3-D"
        dims = ", ".join(f"{s.ndim}-D" for s in states)
        what = f"hx and cx should also be {want}-D but got ({dims}) arrays" if lstm else \
            f"hx should also be {want}-D but got {dims} array"
        raise ValueError(f"For {kind} input, {what}")
    if unbatched:
        states = [s[:, None] for s in states]
    for i, (state, shape) in enumerate(zip(states, expected_states(module, batch))):
        if state.shape != shape:
            label = f"hidden[{i}]" if lstm else "hidden"
            got = state.shape if not unbatched else state.shape[:1] + state.shape[2:]
            want_shape = shape if not unbatched else shape[:1] + shape[2:]
            raise ValueError(f"Expected {label} size {want_shape}, got {got}")
    if sorted_indices is not None:
        states = [s[:, sorted_indices] for s in states]
    return states[0], states[1] if lstm else None


def grad_output_time_major(module, grad_output, ctx):
    """grad_output as (T, B, D*P) in the kernels' layout, or None."""
    if grad_output is None:
        return None
    dtype = module.weight_ih_l0.dtype
    packed = ctx["packed"]
    if packed is not None:
        data = grad_output.data if isinstance(grad_output, PackedSequence) else grad_output
        data = as_float_array(data, dtype, "grad_output")
        expected = (packed.data.shape[0], ctx["output_shape"][-1])
        if data.shape != expected:
            raise ValueError(f"grad_output must have the output's data shape {expected}, got {data.shape}")
        padded, _ = _packed_to_padded(packed._replace(data=data))
        return padded
    if module.device == "cpu" or not _device.is_device_array(grad_output):
        grad_output = as_float_array(grad_output, dtype, "grad_output")
    T, B, features = ctx["output_shape"]
    expected = (T, features) if ctx["unbatched"] else (B, T, features) if module.batch_first else (T, B, features)
    if grad_output.shape != expected:
        raise ValueError(f"grad_output must have the output's shape {expected}, got {grad_output.shape}")
    if ctx["unbatched"]:
        return grad_output[:, None]
    return grad_output.swapaxes(0, 1) if module.batch_first else grad_output


def grad_final_states(module, grad_hn, ctx):
    """grad_hn as batched (dh_n, dc_n) in the kernels' (sorted) order; entries may be None."""
    lstm = _has_cell_state(module.mode)
    if grad_hn is None:
        return None, None
    if lstm and not (isinstance(grad_hn, (tuple, list)) and len(grad_hn) == 2):
        raise TypeError("grad_hn of an LSTM must be a tuple (dh_n, dc_n) (entries may be None)")
    grads = list(grad_hn) if lstm else [grad_hn]
    dtype = module.weight_ih_l0.dtype
    packed = ctx["packed"]
    for i, shape in enumerate(expected_states(module, ctx["batch"])):
        if grads[i] is None:
            continue
        grad = as_float_array(grads[i], dtype, "grad_hn")
        if ctx["unbatched"]:
            shape = shape[:1] + shape[2:]
        if grad.shape != shape:
            label = f"grad_hn[{i}]" if lstm else "grad_hn"
            raise ValueError(f"{label} must have the shape of the final state {shape}, got {grad.shape}")
        if ctx["unbatched"]:
            grad = grad[:, None]
        if packed is not None and packed.sorted_indices is not None:
            grad = grad[:, packed.sorted_indices]   # h_n was returned in the caller's order
        grads[i] = grad
    return grads[0], grads[1] if lstm else None

"""Argument checks of the uniform recurrent op (fusedrnn.functional), with its messages.

Each returns its argument as the native kernels take it (C-contiguous, of x's dtype) or raises
ValueError / TypeError naming it; the memory check raises MemoryError before anything is
allocated.
"""

import functools
import os
from collections.abc import Mapping

import numpy as np

# The keys of a layer's weights, as PyTorch names them (without the layer suffix).
WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_WEIGHT_NAME_SET = frozenset(WEIGHT_NAMES)


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(value, name):
    array = value if type(value) is np.ndarray else np.asarray(value)
    if array.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {array.dtype}")
    return array


def checked(value, name, shape, dtype, optional=False):
    """value as a C-contiguous array of `dtype` and exactly `shape` (None allowed if optional)."""
    if value is None:
        if optional:
            return None
        raise TypeError(f"{name} is required")
    # (Written for the common case, a C-contiguous ndarray of the right dtype: this runs for every
    # argument of every call, and a one-step call is mostly such checks.)
    array = value if type(value) is np.ndarray else float_array(value, name)
    if array.dtype != dtype:
        float_array(array, name)  # a non-float dtype gets that message
        raise TypeError(f"{name} has dtype {array.dtype} but x has dtype {dtype}: use one dtype")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


def checked_lengths(lengths, T, B):
    if lengths is None:
        return None
    array = np.asarray(lengths)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"lengths must be integers, got dtype {array.dtype}")
    if array.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got {array.shape}")
    if B and (array.min() < 0 or array.max() > T):
        raise ValueError(f"lengths must lie in [0, T={T}], got values from {array.min()} to {array.max()}")
    return np.array(array, dtype=np.int64)  # a copy: the backward reads it again


def checked_mask(mask, T, B, lengths):
    if mask is None:
        return None
    if lengths is not None:
        raise ValueError("give lengths or mask, not both")
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(f"mask must be a boolean array, got dtype {array.dtype}")
    if array.shape != (T, B):
        raise ValueError(f"mask must have shape (T, B) = ({T}, {B}), got {array.shape}")
    return np.array(array, dtype=np.uint8)  # a copy: the backward reads it again


def sizes(cell, gates, weight_hh, weight_hr):
    """(H, P) from weight_hh (G*H, P) and the projection weight_hr (P, H) or None (P = H)."""
    weight_hh = float_array(weight_hh, "weight_hh")
    if weight_hr is None:
        if weight_hh.ndim != 2 or weight_hh.shape[1] == 0 or weight_hh.shape[0] != gates * weight_hh.shape[1]:
            raise ValueError(f"weight_hh must have shape ({gates}*H, H) with H >= 1 for {cell}, "
                             f"got {weight_hh.shape}")
        return weight_hh.shape[1], weight_hh.shape[1]
    weight_hr = float_array(weight_hr, "weight_hr")
    if weight_hr.ndim != 2 or 0 in weight_hr.shape:
        raise ValueError(f"weight_hr must have shape (P, H) with P, H >= 1, got {weight_hr.shape}")
    return weight_hr.shape[1], weight_hr.shape[0]


@functools.cache  # read once: it does not change while the process runs
def physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        return None


def check_memory(cell, elements, itemsize):
    """Refuses, before anything is allocated, a call whose arrays could not fit in this machine's
    memory: with overcommitted memory the allocation itself may succeed and the process be
    killed later, when the pages are touched."""
    needed = elements * itemsize
    memory = physical_memory()
    if needed >= 2 ** 63 or (memory is not None and needed > memory):
        what = f"{cell} forward"
        raise MemoryError(f"{what} needs {needed / 2**30:.1f} GiB of outputs and workspace, more than this "
                          f"machine's {memory / 2**30:.1f} GiB" if memory else f"{what} needs {needed} bytes")


def check_bf16(bf16_weights, info, dtype, training, weight_hr, recurrent_scale, bf16_projections=False):
    for name, value in (("bf16_weights", bf16_weights), ("bf16_projections", bf16_projections)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    if bf16_projections and not bf16_weights:
        raise ValueError("bf16_projections=True comes with bf16_weights=True (the recurrent products in bfloat16 too)")
    if not bf16_weights:
        return
    if training:
        raise ValueError("bf16_weights=True is for inference: pass training=False")
    if dtype != np.float32:
        raise TypeError(f"bf16_weights=True needs float32 arrays, got {dtype}")
    if weight_hr is not None or recurrent_scale is not None or info.two_phase:
        raise ValueError("bf16_weights=True is not available with a projection, recurrent dropout or "
                         "reset_after=False")


def checked_weights(weights):
    """weights as a dict of the five names in WEIGHT_NAMES' order (None for an absent one)."""
    if type(weights) is dict and tuple(weights) == WEIGHT_NAMES and weights["weight_ih"] is not None \
            and weights["weight_hh"] is not None:
        return weights  # (already so, as an adapter passes them: a copy would cost a microsecond a call)
    if type(weights) is not dict and not isinstance(weights, Mapping):  # (the exact type first: cheaper)
        raise TypeError(f"weights must be a dict of name -> array ({', '.join(WEIGHT_NAMES)}), "
                        f"got {type(weights).__name__}")
    if not weights.keys() <= _WEIGHT_NAME_SET:
        unknown = sorted(map(str, weights.keys() - _WEIGHT_NAME_SET))
        raise ValueError(f"unknown weight name(s) {', '.join(unknown)}: expected {', '.join(WEIGHT_NAMES)}")
    get = weights.get
    if get("weight_ih") is None or get("weight_hh") is None:
        name = "weight_ih" if get("weight_ih") is None else "weight_hh"
        raise TypeError(f"weights[{name!r}] is required")
    return {name: get(name) for name in WEIGHT_NAMES}


def no_cell_state(cell, info, value, name):
    if value is not None and not info.has_cell_state:
        raise ValueError(f"{cell} has no cell state: {name} must be None")

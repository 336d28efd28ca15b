"""Forward and backpropagation through time of one recurrent layer, on the native kernels.

Letters: T time steps, B batch, I input size, H hidden size, G gates (RNN 1, GRU 3, LSTM 4).
Arrays are time-major: ``x`` is ``(T, B, I)``. Weights are laid out exactly as PyTorch's:
``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih (G*H,)``, ``bias_hh (G*H,)``; gate order
LSTM ``i, f, g, o``, GRU ``r, z, n`` (linear-before-reset: ``n = tanh(W_in x + b_in + r * (W_hn h +
b_hn))``). The math of each cell is written out in :mod:`fusedrnn._reference`, which has the same
functions with the same signatures and is the spec these kernels are tested against.

Variable lengths: ``lengths`` (B integers in ``[0, T]``) makes sequence ``b`` run over its first
``lengths[b]`` steps; after them its state is carried unchanged and its outputs are zero. With
``reverse=True`` each sequence is processed from its own last valid step back to step 0.

Recurrent dropout (Keras's): ``recurrent_scale`` (B, P) multiplies h wherever it enters a
recurrent product (``W_hh h``, and ``W_hn (r h)`` of the reset-before GRU) but not the state update
itself; pass the dropout mask divided by the keep probability, the same at every step.

Masks (Keras's): ``mask`` (T, B) booleans says where a step is taken; elsewhere the state is
carried unchanged and the output is zero, or with ``masked_output="repeat"`` the last output
(zero before a sequence's first step), as Keras does. ``reverse=True`` then walks the time axis
from T-1 to 0. (Lengths are the mask ``t < lengths[b]``; for them both readings agree.)

bfloat16 weights (opt-in, inference): ``bf16_weights=True`` with ``training=False`` and float32
arrays runs each step's recurrent product ``W_hh h`` with both rounded to bfloat16 (8 significant
bits) and float32 sums, on AVX512-BF16 where the CPU has it. At a batch of a few rows a step is
bound by reading W_hh, and this halves those bytes. Each rounding errs by at most 2^-9 relatively,
so a gate's pre-activation moves by up to about 2^-8 * sum_k |W_hh[j, k] h_k| per step (the input
projection stays float32); over a sequence the outputs typically differ from float32 by 1e-3 to
1e-2. Not with a projection, recurrent dropout, or ``reset_after=False``.

Every function accepts arrays of any memory layout (they are made contiguous here), float32 or
float64, all of one dtype; a wrong argument raises ``ValueError`` or ``TypeError`` naming it.
Backward returns fresh arrays (gradients are written, never accumulated); a bias given as None
gets None as its gradient.
"""

import os

import numpy as np

from . import _core

__all__ = [
    "rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
]

# cell -> (G, carries a cell state c)
_CELLS = {"rnn_tanh": (1, False), "rnn_relu": (1, False), "lstm": (4, True), "gru": (3, False),
          "gru_reset_before": (3, False)}
_MASKED_OUTPUTS = ("zero", "repeat")


class Saved:
    """What a training-mode forward keeps for its backward. Opaque: pass it to the backward."""

    __slots__ = ("cell", "x", "weight_ih", "weight_hh", "weight_hr", "recurrent_scale", "has_bias_ih",
                 "has_bias_hh", "lengths", "mask", "repeat_masked_output", "reverse", "arrays")

    def __init__(self, **fields):
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def hidden_size(self):
        """H, the cell's units."""
        return self.weight_hh.shape[0] // _CELLS[self.cell][0]

    @property
    def state_size(self):
        """P, the size of h: H, or the projection's size."""
        return self.weight_hh.shape[1]


def _float_array(value, name):
    array = np.asarray(value)
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {array.dtype}")
    return array


def _checked(value, name, shape, dtype, optional=False):
    """value as a C-contiguous array of `dtype` and exactly `shape` (None allowed if optional)."""
    if value is None:
        if optional:
            return None
        raise TypeError(f"{name} is required")
    array = _float_array(value, name)
    if array.dtype != dtype:
        raise TypeError(f"{name} has dtype {array.dtype} but x has dtype {dtype}: use one dtype")
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {array.shape}")
    return np.ascontiguousarray(array)


def _checked_lengths(lengths, T, B):
    if lengths is None:
        return None
    array = np.asarray(lengths)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"lengths must be integers, got dtype {array.dtype}")
    if array.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per sequence), got {array.shape}")
    if B and (array.min() < 0 or array.max() > T):
        raise ValueError(f"lengths must lie in [0, T={T}], got values from {array.min()} to {array.max()}")
    return np.ascontiguousarray(array, dtype=np.int64)


def _sizes(cell, weight_hh, weight_hr):
    """(H, P) from weight_hh (G*H, P) and the projection weight_hr (P, H) or None (P = H)."""
    gates = _CELLS[cell][0]
    weight_hh = _float_array(weight_hh, "weight_hh")
    if weight_hr is None:
        if weight_hh.ndim != 2 or weight_hh.shape[1] == 0 or weight_hh.shape[0] != gates * weight_hh.shape[1]:
            raise ValueError(f"weight_hh must have shape ({gates}*H, H) with H >= 1 for {cell}, "
                             f"got {weight_hh.shape}")
        return weight_hh.shape[1], weight_hh.shape[1]
    weight_hr = _float_array(weight_hr, "weight_hr")
    if weight_hr.ndim != 2 or 0 in weight_hr.shape:
        raise ValueError(f"weight_hr must have shape (P, H) with P, H >= 1, got {weight_hr.shape}")
    return weight_hr.shape[1], weight_hr.shape[0]


def _checked_mask(mask, T, B, lengths):
    if mask is None:
        return None
    if lengths is not None:
        raise ValueError("give lengths or mask, not both")
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        raise TypeError(f"mask must be a boolean array, got dtype {array.dtype}")
    if array.shape != (T, B):
        raise ValueError(f"mask must have shape (T, B) = ({T}, {B}), got {array.shape}")
    return np.ascontiguousarray(array, dtype=np.uint8)


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        return None


def _check_memory(what, elements, itemsize):
    """Refuses, before anything is allocated, a call whose arrays could not fit in this machine's
    memory: with overcommitted memory the allocation itself may succeed and the process be
    killed later, when the pages are touched."""
    needed = elements * itemsize
    memory = _physical_memory()
    if needed >= 2 ** 63 or (memory is not None and needed > memory):
        raise MemoryError(f"{what} needs {needed / 2**30:.1f} GiB of outputs and workspace, more than this "
                          f"machine's {memory / 2**30:.1f} GiB" if memory else f"{what} needs {needed} bytes")


def _forward(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, training,
             weight_hr=None, mask=None, masked_output="zero", recurrent_scale=None, bf16_weights=False):
    gates, has_c = _CELLS[cell]
    x = _float_array(x, "x")
    _check_bf16(bf16_weights, cell, x.dtype, training, weight_hr, recurrent_scale)
    if x.ndim != 3:
        raise ValueError(f"x must have 3 dimensions (T, B, I), got shape {x.shape}")
    T, B, I = x.shape
    if T == 0:
        raise ValueError("x has T = 0 time steps: a sequence needs at least one step")
    H, P = _sizes(cell, weight_hh, weight_hr)
    dtype = x.dtype
    # y and xp always; in training the saved gates (up to 4 per unit) and states too.
    _check_memory(f"{cell} forward", T * B * (P + gates * H) + bool(training) * (T + 1) * B * (4 * H + 2 * P + 2 * H),
                  dtype.itemsize)
    if not isinstance(reverse, (bool, np.bool_)):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    if masked_output not in _MASKED_OUTPUTS:
        raise ValueError(f"masked_output must be 'zero' or 'repeat', got {masked_output!r}")
    arrays = dict(
        x=np.ascontiguousarray(x),
        h0=_checked(h0, "h0", (B, P), dtype, optional=True),
        c0=_checked(c0, "c0", (B, H), dtype, optional=True) if has_c else None,
        w_ih=_checked(weight_ih, "weight_ih", (gates * H, I), dtype),
        w_hh=_checked(weight_hh, "weight_hh", (gates * H, P), dtype),
        w_hr=_checked(weight_hr, "weight_hr", (P, H), dtype, optional=True),
        recurrent_scale=_checked(recurrent_scale, "recurrent_scale", (B, P), dtype, optional=True),
        b_ih=_checked(bias_ih, "bias_ih", (gates * H,), dtype, optional=True),
        b_hh=_checked(bias_hh, "bias_hh", (gates * H,), dtype, optional=True),
        lengths=_checked_lengths(lengths, T, B),
        mask=_checked_mask(mask, T, B, lengths),
    )
    repeat = masked_output == "repeat"
    y, h_n, c_n, saved_arrays = _core.forward(cell, repeat_masked_output=repeat, reverse=bool(reverse),
                                              training=bool(training), bf16_weights=bool(bf16_weights), **arrays)
    saved = None
    if training:
        saved = Saved(cell=cell, x=arrays["x"], weight_ih=arrays["w_ih"], weight_hh=arrays["w_hh"],
                      weight_hr=arrays["w_hr"], recurrent_scale=arrays["recurrent_scale"], has_bias_ih=arrays["b_ih"] is not None,
                      has_bias_hh=arrays["b_hh"] is not None, lengths=arrays["lengths"], mask=arrays["mask"],
                      repeat_masked_output=repeat, reverse=bool(reverse), arrays=saved_arrays)
    return y, h_n, c_n, saved


def _check_bf16(bf16_weights, cell, dtype, training, weight_hr, recurrent_scale):
    if not isinstance(bf16_weights, (bool, np.bool_)):
        raise TypeError(f"bf16_weights must be a bool, got {type(bf16_weights).__name__}")
    if not bf16_weights:
        return
    if training:
        raise ValueError("bf16_weights=True is for inference: pass training=False")
    if dtype != np.float32:
        raise TypeError(f"bf16_weights=True needs float32 arrays, got {dtype}")
    if weight_hr is not None or recurrent_scale is not None or cell == "gru_reset_before":
        raise ValueError("bf16_weights=True is not available with a projection, recurrent dropout or "
                         "reset_after=False")


def _backward(cell, dy, dh_n, dc_n, saved):
    if saved is None:
        raise ValueError("backward needs what a training-mode forward saved: this forward ran with "
                         "training=False, which saves nothing")
    if not isinstance(saved, Saved):
        raise TypeError(f"saved must be the object the forward returned, got {type(saved).__name__}")
    if saved.cell != cell:
        raise ValueError(f"saved comes from a {saved.cell} forward, not {cell}")
    T, B, _ = saved.x.shape
    H, P, dtype = saved.hidden_size, saved.state_size, saved.x.dtype
    return _core.backward(
        cell, saved.x, saved.weight_ih, saved.weight_hh, saved.weight_hr, saved.recurrent_scale,
        saved.lengths, saved.mask,
        saved.repeat_masked_output, saved.reverse, saved.arrays,
        dy=_checked(dy, "dy", (T, B, P), dtype, optional=True),
        dh_n=_checked(dh_n, "dh_n", (B, P), dtype, optional=True),
        dc_n=_checked(dc_n, "dc_n", (B, H), dtype, optional=True) if _CELLS[cell][1] else None,
        want_db_ih=saved.has_bias_ih, want_db_hh=saved.has_bias_hh)


def _rnn_cell(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return "rnn_" + nonlinearity


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, lengths=None,
                reverse=False, nonlinearity="tanh", training=True, mask=None, masked_output="zero",
                recurrent_scale=None, bf16_weights=False):
    """Elman RNN layer: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, act = tanh or relu.

    Args:
        x: ``(T, B, I)`` inputs.
        h0: ``(B, H)`` initial state, or None for zeros.
        weight_ih: ``(H, I)``. weight_hh: ``(H, H)``. bias_ih, bias_hh: ``(H,)`` or None.
        lengths: ``(B,)`` integers in ``[0, T]``, or None for all T.
        reverse: process each sequence from its last valid step back to step 0.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        training: save what backward needs (otherwise ``saved`` is None).
        mask: ``(T, B)`` booleans (instead of lengths): where a step is taken.
        masked_output: ``"zero"``, or ``"repeat"`` the last output at a masked step (Keras).
        recurrent_scale: ``(B, H)`` recurrent dropout scale (see the module's notes), or None.
        bf16_weights: the recurrent products in bfloat16 (inference only; see the module's notes).

    Returns:
        ``(y, h_n, saved)``: y ``(T, B, H)`` (zero past each sequence's length), h_n ``(B, H)``.
    """
    cell = _rnn_cell(nonlinearity)
    y, h_n, _, saved = _forward(cell, x, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
                                reverse, training, mask=mask, masked_output=masked_output,
                                recurrent_scale=recurrent_scale, bf16_weights=bf16_weights)
    return y, h_n, saved


def rnn_backward(dy, dh_n, saved):
    """Gradients of an :func:`rnn_forward`.

    Args:
        dy: ``(T, B, H)`` gradient of y, or None for zeros. dh_n: ``(B, H)`` or None.
        saved: what the training-mode forward returned.

    Returns:
        ``(dx (T, B, I), dh0 (B, H), dweight_ih (H, I), dweight_hh (H, H), dbias_ih (H,) | None,
        dbias_hh (H,) | None)``.
    """
    is_rnn = isinstance(saved, Saved) and saved.cell.startswith("rnn_")
    cell = saved.cell if is_rnn else "rnn_tanh"  # anything else is refused by _backward
    dx, dh0, _, dw_ih, dw_hh, db_ih, db_hh, _ = _backward(cell, dy, dh_n, None, saved)
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh


def lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, weight_hr=None,
                 lengths=None, reverse=False, training=True, mask=None, masked_output="zero",
                 recurrent_scale=None, bf16_weights=False):
    """LSTM layer (gate order i, f, g, o): ``c' = f*c + i*g``, ``h' = o*tanh(c')``.

    With a projection (PyTorch's ``proj_size``), ``h' = weight_hr @ (o*tanh(c'))`` has P values
    instead of H; below, P = H without one.

    Args:
        x: ``(T, B, I)``. h0: ``(B, P)``, c0: ``(B, H)``, or None for zeros.
        weight_ih: ``(4H, I)``. weight_hh: ``(4H, P)``. bias_ih, bias_hh: ``(4H,)`` or None.
        weight_hr: ``(P, H)`` projection, or None for none.
        lengths, reverse, training, mask, masked_output, recurrent_scale, bf16_weights: as in
        :func:`rnn_forward` (recurrent_scale and bf16_weights are not available with a projection).

    Returns:
        ``(y (T, B, P), h_n (B, P), c_n (B, H), saved)``.
    """
    return _forward("lstm", x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, training,
                    weight_hr, mask, masked_output, recurrent_scale, bf16_weights)


def lstm_backward(dy, dh_n, dc_n, saved):
    """Gradients of an :func:`lstm_forward`; dy ``(T, B, P)``, dh_n ``(B, P)``, dc_n ``(B, H)``
    may be None (zeros).

    Returns:
        ``(dx (T, B, I), dh0 (B, P), dc0 (B, H), dweight_ih (4H, I), dweight_hh (4H, P),
        dbias_ih (4H,) | None, dbias_hh (4H,) | None)``, and an eighth value, ``dweight_hr (P, H)``,
        when the forward had a projection.
    """
    *grads, dw_hr = _backward("lstm", dy, dh_n, dc_n, saved)
    return (*grads, dw_hr) if dw_hr is not None else tuple(grads)


def gru_forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, lengths=None,
                reverse=False, training=True, mask=None, masked_output="zero", reset_after=True,
                recurrent_scale=None, bf16_weights=False):
    """GRU layer, gate order r, z, n.

    ``r = σ(W_ir x + b_ir + W_hr h + b_hr)``, ``z`` likewise, ``h' = (1 - z) * n + z * h`` and
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` (linear-before-reset: PyTorch's, Keras's
    ``reset_after=True``), or with ``reset_after=False`` (Keras's other form)
    ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.

    Args:
        x: ``(T, B, I)``. h0: ``(B, H)`` or None for zeros.
        weight_ih: ``(3H, I)``. weight_hh: ``(3H, H)``. bias_ih, bias_hh: ``(3H,)`` or None.
        lengths, reverse, training, mask, masked_output, recurrent_scale, bf16_weights: as in
        :func:`rnn_forward` (bf16_weights needs reset_after=True).

    Returns:
        ``(y (T, B, H), h_n (B, H), saved)``.
    """
    cell = "gru" if reset_after else "gru_reset_before"
    y, h_n, _, saved = _forward(cell, x, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
                                reverse, training, mask=mask, masked_output=masked_output,
                                recurrent_scale=recurrent_scale, bf16_weights=bf16_weights)
    return y, h_n, saved


def gru_backward(dy, dh_n, saved):
    """Gradients of a :func:`gru_forward`; dy, dh_n may be None (zeros).

    Returns:
        ``(dx (T, B, I), dh0 (B, H), dweight_ih (3H, I), dweight_hh (3H, H), dbias_ih (3H,) | None,
        dbias_hh (3H,) | None)``.
    """
    is_gru = isinstance(saved, Saved) and saved.cell.startswith("gru")
    cell = saved.cell if is_gru else "gru"  # anything else is refused by _backward
    dx, dh0, _, dw_ih, dw_hh, db_ih, db_hh, _ = _backward(cell, dy, dh_n, None, saved)
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh

"""Plain NumPy forward pass and backpropagation through time (BPTT): the executable spec.

One layer, one direction, time-major. The native kernels (``fusedrnn.functional``) must agree
with this file; it favours clarity over speed and computes in the dtype of ``x``.

Shapes: x (T, B, I); h0, c0, h_n, c_n (B, H); y (T, B, H); weight_ih (G*H, I);
weight_hh (G*H, H); bias_ih, bias_hh (G*H,), with G = 1 (RNN), 4 (LSTM), 3 (GRU), exactly as
PyTorch stores them. Bias None means zero (its gradient is then None); h0/c0 None mean zeros.

Equations for one step, with x the input at time t and h, c the state before the step
(sigma is the logistic sigmoid, * is elementwise):

  RNN   a  = W_ih x + b_ih + W_hh h + b_hh
        h' = act(a)                                   act = tanh or relu

  LSTM  a  = W_ih x + b_ih + W_hh h + b_hh            rows split into gates i, f, g, o
        i = sigma(a_i)   f = sigma(a_f)   g = tanh(a_g)   o = sigma(a_o)
        c' = f * c + i * g
        h' = o * tanh(c')

  GRU   (linear-before-reset, as PyTorch and cuDNN)   rows split into gates r, z, n
        x_k = W_ik x + b_ik    h_k = W_hk h + b_hk    for k in r, z, n
        r = sigma(x_r + h_r)   z = sigma(x_z + h_z)
        n = tanh(x_n + r * h_n)
        h' = (1 - z) * n + z * h

Variable lengths: sequence b is processed at t = 0 .. len[b]-1, or with reverse=True at
t = len[b]-1 down to 0 (it starts at its own last valid step). y[t, b] is the hidden state right
after processing time t, and 0 for t >= len[b]; h_n (c_n) is the state after the last processed
step (h0 if len[b] == 0). A finished sequence keeps its state, and dy at padded positions has no
effect because y there is the constant 0.

Structure: every cell is a pair of pointwise functions (step, step_backward) on the gate
pre-activations; one generic driver (_forward, _backward) owns the time loop, the matrix
products, the length masks and the direction. Gradient contract: every function returns fresh
arrays; callers that keep .grad accumulate into it themselves.
"""

from collections import namedtuple

import numpy as np

__all__ = [
    "recurrent_forward", "recurrent_backward",
    "rnn_forward", "rnn_backward",
    "lstm_forward", "lstm_backward",
    "gru_forward", "gru_backward",
]


def _bf16(a):
    """float32 values rounded to bfloat16 (8 significant bits; nearest, ties to even), as float32."""
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def _sigmoid(a):
    # Written through tanh so that it never overflows (np.exp(-a) does for a << 0 in float32).
    return 0.5 * (1.0 + np.tanh(0.5 * a))


# ---------------------------------------------------------------------------------------------
# Cells. step(xp, hp, states) -> (new_states, cache)
#   xp = W_ih x + b_ih and hp = W_hh h + b_hh, both (B, G*H); states = (h,) or (h, c).
# step_backward(d_new_states, cache) -> (dxp, dhp, d_states_direct)
#   dxp, dhp: gradients w.r.t. xp and hp (they differ only for the GRU's n gate);
#   d_states_direct: gradient w.r.t. the old states through every path except hp
#   (the driver adds the path through W_hh: dh += dhp @ W_hh).
# ---------------------------------------------------------------------------------------------

_Cell = namedtuple("_Cell", "name gates num_states step step_backward")


def _rnn_tanh_step(xp, hp, states):
    h_new = np.tanh(xp + hp)
    return (h_new,), h_new


def _rnn_tanh_step_backward(d_new, h_new):
    (dh_new,) = d_new
    da = dh_new * (1 - h_new * h_new)
    return da, da, (np.zeros_like(dh_new),)


def _rnn_relu_step(xp, hp, states):
    h_new = np.maximum(xp + hp, 0)
    return (h_new,), h_new


def _rnn_relu_step_backward(d_new, h_new):
    (dh_new,) = d_new
    da = dh_new * (h_new > 0)  # relu'(a) taken as 0 at a == 0, where h_new == 0
    return da, da, (np.zeros_like(dh_new),)


def _lstm_step(xp, hp, states):
    h, c = states
    a_i, a_f, a_g, a_o = np.split(xp + hp, 4, axis=1)
    i, f, g, o = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g), _sigmoid(a_o)
    c_new = f * c + i * g
    tanh_c_new = np.tanh(c_new)
    h_new = o * tanh_c_new
    return (h_new, c_new), (i, f, g, o, c, tanh_c_new)


def _lstm_step_backward(d_new, cache):
    dh_new, dc_new = d_new
    i, f, g, o, c, tanh_c_new = cache
    dc_total = dc_new + dh_new * o * (1 - tanh_c_new * tanh_c_new)  # c' reaches the loss twice
    da = np.concatenate([
        dc_total * g * i * (1 - i),                # d a_i
        dc_total * c * f * (1 - f),                # d a_f
        dc_total * i * (1 - g * g),                # d a_g
        dh_new * tanh_c_new * o * (1 - o),         # d a_o
    ], axis=1)
    return da, da, (np.zeros_like(dh_new), dc_total * f)


def _gru_step(xp, hp, states):
    (h,) = states
    x_r, x_z, x_n = np.split(xp, 3, axis=1)
    h_r, h_z, h_n = np.split(hp, 3, axis=1)
    r = _sigmoid(x_r + h_r)
    z = _sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    h_new = (1 - z) * n + z * h
    return (h_new,), (r, z, n, h_n, h)


def _gru_step_backward(d_new, cache):
    (dh_new,) = d_new
    r, z, n, h_n, h = cache
    da_n = dh_new * (1 - z) * (1 - n * n)          # d(x_n + r * h_n)
    da_r = da_n * h_n * r * (1 - r)
    da_z = dh_new * (h - n) * z * (1 - z)
    dxp = np.concatenate([da_r, da_z, da_n], axis=1)
    dhp = np.concatenate([da_r, da_z, da_n * r], axis=1)  # h_n enters only through r * h_n
    return dxp, dhp, (dh_new * z,)


_RNN_TANH = _Cell("rnn_tanh", 1, 1, _rnn_tanh_step, _rnn_tanh_step_backward)
_RNN_RELU = _Cell("rnn_relu", 1, 1, _rnn_relu_step, _rnn_relu_step_backward)
_LSTM = _Cell("lstm", 4, 2, _lstm_step, _lstm_step_backward)
_GRU = _Cell("gru", 3, 1, _gru_step, _gru_step_backward)


# ---------------------------------------------------------------------------------------------
# The generic driver.
# ---------------------------------------------------------------------------------------------

def _time_order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _active_mask(lengths, mask, T, B):
    """(T, B, 1) bool: True where sequence b takes a step at time t (lengths or a mask).

    The same mask serves both directions: walking t downwards, sequence b first becomes active at
    its own last valid step t = len[b]-1, as the spec requires.
    """
    if mask is not None:
        return np.asarray(mask, dtype=bool).reshape(T, B, 1)
    if lengths is None:
        return np.ones((T, B, 1), dtype=bool)
    lengths = np.asarray(lengths).reshape(B)
    return (np.arange(T)[:, None] < lengths[None, :])[:, :, None]


def _repeated_mask(active, reverse, masked_output):
    """(T, B, 1) bool: True where a masked step's output repeats the last output (Keras's
    masked_output="repeat"): masked, and after the sequence's first step in the walking order.
    Elsewhere a masked step outputs zero."""
    repeated = np.zeros_like(active)
    if masked_output == "repeat":
        stepped = np.zeros_like(active[0])
        for t in _time_order(active.shape[0], reverse):
            repeated[t] = ~active[t] & stepped
            stepped |= active[t]
    return repeated


def _forward(cell, x, states, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, training,
             weight_hr=None, mask=None, masked_output="zero", recurrent_scale=None, bf16_weights=False):
    T, B, _ = x.shape
    P = weight_hh.shape[1]                                  # size of h
    H = P if weight_hr is None else weight_hr.shape[1]      # units of the cell (size of c)
    states = tuple(np.zeros((B, size), x.dtype) if s is None else s
                   for s, size in zip(states, (P, H)))
    active = _active_mask(lengths, mask, T, B)
    repeated = _repeated_mask(active, reverse, masked_output)

    # The input projection does not depend on the recurrence: one product for all steps.
    xp = x @ weight_ih.T
    if bias_ih is not None:
        xp = xp + bias_ih

    # Recurrent dropout scales h where it enters W_hh h, not in the state update itself.
    scale = 1 if recurrent_scale is None else recurrent_scale
    # bfloat16 weights (inference): W_hh and each step's h are rounded to bfloat16 before their
    # product, which is summed in float32.
    rounded = _bf16 if bf16_weights else (lambda a: a)
    weight_rec = rounded(weight_hh)
    y = np.zeros((T, B, P), x.dtype)
    h_prev = np.zeros((T, B, P), x.dtype)   # what W_hh multiplied at step t (h * scale), for dW_hh
    m = np.zeros((T, B, H), x.dtype)        # the cell's output before the projection, for dW_hr
    caches = [None] * T
    for t in _time_order(T, reverse):
        hp = rounded(states[0] * scale) @ weight_rec.T
        if bias_hh is not None:
            hp = hp + bias_hh
        new_states, caches[t] = cell.step(xp[t], hp, states)
        if weight_hr is not None:           # LSTM with proj_size: h' = W_hr (o * tanh(c'))
            m[t] = new_states[0]
            new_states = (new_states[0] @ weight_hr.T,) + new_states[1:]
        h_prev[t] = states[0] * scale
        # Masked sequences (finished, or in reverse not yet started) keep their state, and output
        # zero or (Keras) repeat their last output, which is then their state.
        y[t] = np.where(active[t], new_states[0], np.where(repeated[t], states[0], 0))
        states = tuple(np.where(active[t], new, old) for new, old in zip(new_states, states))

    saved = None
    if training:
        saved = dict(cell=cell, x=x, weight_ih=weight_ih, weight_hh=weight_hh, weight_hr=weight_hr,
                     has_bias_ih=bias_ih is not None, has_bias_hh=bias_hh is not None,
                     active=active, repeated=repeated, reverse=reverse, h_prev=h_prev, m=m,
                     caches=caches, scale=scale)
    return y, states, saved


def _backward(saved, dy, d_final_states, accepted_cells):
    if saved is None:
        raise ValueError("backward needs the `saved` of a forward call made with training=True")
    cell = saved["cell"]
    if cell not in accepted_cells:
        raise ValueError(f"`saved` comes from a {cell.name} forward")
    x, weight_ih, weight_hh = saved["x"], saved["weight_ih"], saved["weight_hh"]
    weight_hr, m = saved["weight_hr"], saved["m"]
    active, h_prev, caches = saved["active"], saved["h_prev"], saved["caches"]
    T, B, I = x.shape
    GH, P = weight_hh.shape
    H = m.shape[2]

    def zeros_or_copy(a, shape):
        return np.zeros(shape, x.dtype) if a is None else np.array(a, dtype=x.dtype)

    dy = zeros_or_copy(dy, (T, B, P))
    d_states = tuple(zeros_or_copy(d, (B, size)) for d, size in zip(d_final_states, (P, H)))

    dxp = np.zeros((T, B, GH), x.dtype)
    dhp = np.zeros((T, B, GH), x.dtype)
    dh_projected = np.zeros((T, B, P), x.dtype)   # gradient of each step's h', for dW_hr
    # Walk the steps in the opposite order of the forward pass.
    for t in reversed(_time_order(T, saved["reverse"])):
        # Rows that did not step at time t get zero cotangents (so zero dxp, dhp) and pass their
        # state gradient through unchanged; y there is the constant 0 (dy[t] is dropped) or the
        # carried state (dy[t] joins its gradient).
        d_states = (d_states[0] + np.where(saved["repeated"][t], dy[t], 0),) + d_states[1:]
        d_new = (np.where(active[t], d_states[0] + dy[t], 0),) + \
            tuple(np.where(active[t], d, 0) for d in d_states[1:])
        if weight_hr is not None:
            dh_projected[t] = d_new[0]
            d_new = (d_new[0] @ weight_hr,) + d_new[1:]
        dxp[t], dhp[t], d_old = cell.step_backward(d_new, caches[t])
        # Under a projection the cell sees the old h only through hp (the LSTM reads c, not h).
        d_direct = 0 if weight_hr is not None else d_old[0]
        d_old = (d_direct + (dhp[t] @ weight_hh) * saved["scale"],) + d_old[1:]
        d_states = tuple(np.where(active[t], dn, dk) for dn, dk in zip(d_old, d_states))

    # Weight gradients sum over all T*B rows at once, after the loop.
    dx = dxp @ weight_ih
    dweight_ih = dxp.reshape(T * B, GH).T @ x.reshape(T * B, I)
    dweight_hh = dhp.reshape(T * B, GH).T @ h_prev.reshape(T * B, P)
    dbias_ih = dxp.sum(axis=(0, 1)) if saved["has_bias_ih"] else None
    dbias_hh = dhp.sum(axis=(0, 1)) if saved["has_bias_hh"] else None
    dweight_hr = None
    if weight_hr is not None:
        dweight_hr = dh_projected.reshape(T * B, P).T @ m.reshape(T * B, H)
    return dx, d_states, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dweight_hr


# ---------------------------------------------------------------------------------------------
# Public functions, with the signatures of fusedrnn.functional.
# ---------------------------------------------------------------------------------------------

_RNN_CELLS = {"tanh": _RNN_TANH, "relu": _RNN_RELU}


def _rnn_cell(nonlinearity):
    if nonlinearity not in _RNN_CELLS:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return _RNN_CELLS[nonlinearity]


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, lengths=None,
                reverse=False, nonlinearity="tanh", training=True, mask=None, masked_output="zero",
                recurrent_scale=None, bf16_weights=False):
    """Returns (y, h_n, saved); saved is None when training is False."""
    y, (h_n,), saved = _forward(_rnn_cell(nonlinearity), x, (h0,), weight_ih, weight_hh,
                                bias_ih, bias_hh, lengths, reverse, training, None, mask, masked_output,
                                recurrent_scale, bf16_weights)
    return y, h_n, saved


def rnn_backward(dy, dh_n, saved):
    """Returns (dx, dh0, dweight_ih, dweight_hh, dbias_ih, dbias_hh)."""
    dx, (dh0,), *dweights, _ = _backward(saved, dy, (dh_n,), (_RNN_TANH, _RNN_RELU))
    return (dx, dh0, *dweights)


def lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, weight_hr=None,
                 lengths=None, reverse=False, training=True, mask=None, masked_output="zero",
                 recurrent_scale=None, bf16_weights=False):
    """Returns (y, h_n, c_n, saved); saved is None when training is False.

    weight_hr (P, H), PyTorch's proj_size: h' = weight_hr @ (o * tanh(c')), so h0, h_n and y
    have P values per sequence and weight_hh is (4H, P).
    """
    y, (h_n, c_n), saved = _forward(_LSTM, x, (h0, c0), weight_ih, weight_hh, bias_ih, bias_hh,
                                    lengths, reverse, training, weight_hr, mask, masked_output,
                                    recurrent_scale, bf16_weights)
    return y, h_n, c_n, saved


def lstm_backward(dy, dh_n, dc_n, saved):
    """Returns (dx, dh0, dc0, dweight_ih, dweight_hh, dbias_ih, dbias_hh), and dweight_hr as an
    eighth value when the forward had a projection."""
    dx, (dh0, dc0), *dweights, dweight_hr = _backward(saved, dy, (dh_n, dc_n), (_LSTM,))
    return (dx, dh0, dc0, *dweights) + ((dweight_hr,) if dweight_hr is not None else ())


def gru_forward(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, lengths=None,
                reverse=False, training=True, mask=None, masked_output="zero", reset_after=True,
                recurrent_scale=None, bf16_weights=False):
    """Returns (y, h_n, saved); saved is None when training is False.

    reset_after=False is Keras's other GRU: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).
    """
    if not reset_after:
        if bf16_weights:
            raise ValueError("bf16_weights=True needs reset_after=True")
        return _gru_reset_before_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
                                         reverse, training, mask, masked_output, recurrent_scale)
    y, (h_n,), saved = _forward(_GRU, x, (h0,), weight_ih, weight_hh, bias_ih, bias_hh,
                                lengths, reverse, training, None, mask, masked_output, recurrent_scale,
                                bf16_weights)
    return y, h_n, saved


def gru_backward(dy, dh_n, saved):
    """Returns (dx, dh0, dweight_ih, dweight_hh, dbias_ih, dbias_hh)."""
    if saved is not None and saved["cell"] is _GRU_RESET_BEFORE:
        return _gru_reset_before_backward(dy, dh_n, saved)
    dx, (dh0,), *dweights, _ = _backward(saved, dy, (dh_n,), (_GRU,))
    return (dx, dh0, *dweights)


def recurrent_forward(cell, x, h0, c0, weights, *, lengths=None, mask=None, masked_output="zero",
                      reverse=False, training=True, recurrent_scale=None, bf16_weights=False,
                      bf16_projections=False):
    """The uniform op of fusedrnn.functional: any cell by name, weights as a dict (weight_ih,
    weight_hh, bias_ih, bias_hh, weight_hr). Returns (y, h_n, c_n or None, saved).

    bf16_projections: x and weight_ih rounded to bfloat16 before the input projections (summed
    in float32), as the bf16 compute mode does."""
    w = [weights.get(name) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    if bf16_projections:
        x, w[0] = _bf16(x), _bf16(w[0])
    options = dict(lengths=lengths, reverse=reverse, training=training, mask=mask, masked_output=masked_output,
                   recurrent_scale=recurrent_scale, bf16_weights=bf16_weights)
    if cell == "lstm":
        return lstm_forward(x, h0, c0, *w, weight_hr=weights.get("weight_hr"), **options)
    if cell in ("gru", "gru_reset_before"):
        y, h_n, saved = gru_forward(x, h0, *w, reset_after=cell == "gru", **options)
    else:
        y, h_n, saved = rnn_forward(x, h0, *w, nonlinearity=cell[len("rnn_"):], **options)
    return y, h_n, None, saved


def recurrent_backward(dy, dh_n, dc_n, saved):
    """Returns (dx, dh0, dc0 or None, dweights): dweights maps weight_ih, weight_hh, bias_ih,
    bias_hh, weight_hr to their gradients (None where the forward had no such weight)."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
    if saved is not None and saved["cell"] is _LSTM:
        dx, dh0, dc0, *dweights = lstm_backward(dy, dh_n, dc_n, saved)
    else:
        dc0 = None
        backward = gru_backward if saved is not None and saved["cell"].name.startswith("gru") else rnn_backward
        dx, dh0, *dweights = backward(dy, dh_n, saved)
    return dx, dh0, dc0, dict(zip(names, dweights + [None] * (len(names) - len(dweights))))


# ---------------------------------------------------------------------------------------------
# The reset-before-product GRU (Keras reset_after=False). Its n gate multiplies W_hn by r * h,
# which depends on this step's r, so the recurrent product does not fit the generic driver's
# "one product of the old h per step"; it has a loop of its own, with the same masks.
#
#   r = sigma(x_r + W_hr h + b_hr)   z = sigma(x_z + W_hz h + b_hz)
#   n = tanh(x_n + W_hn (r * h) + b_hn)        h' = (1 - z) * n + z * h
# ---------------------------------------------------------------------------------------------

_GRU_RESET_BEFORE = _Cell("gru_reset_before", 3, 1, None, None)


def _gru_reset_before_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse,
                              training, mask, masked_output, recurrent_scale):
    T, B, _ = x.shape
    H = weight_hh.shape[1]
    h = np.zeros((B, H), x.dtype) if h0 is None else h0
    active = _active_mask(lengths, mask, T, B)
    repeated = _repeated_mask(active, reverse, masked_output)
    xp = x @ weight_ih.T
    if bias_ih is not None:
        xp = xp + bias_ih
    b_hh = np.zeros(3 * H, x.dtype) if bias_hh is None else bias_hh
    scale = 1 if recurrent_scale is None else recurrent_scale   # recurrent dropout: products only

    y = np.zeros((T, B, H), x.dtype)
    h_prev = np.zeros((T, B, H), x.dtype)
    caches = [None] * T
    for t in _time_order(T, reverse):
        x_r, x_z, x_n = np.split(xp[t], 3, axis=1)
        h_r, h_z = np.split((h * scale) @ weight_hh[:2 * H].T + b_hh[:2 * H], 2, axis=1)
        r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
        rh = r * (h * scale)
        n = np.tanh(x_n + rh @ weight_hh[2 * H:].T + b_hh[2 * H:])
        h_new = (1 - z) * n + z * h
        h_prev[t], caches[t] = h, (r, z, n, rh)
        y[t] = np.where(active[t], h_new, np.where(repeated[t], h, 0))
        h = np.where(active[t], h_new, h)

    saved = None
    if training:
        saved = dict(cell=_GRU_RESET_BEFORE, x=x, weight_ih=weight_ih, weight_hh=weight_hh,
                     has_bias_ih=bias_ih is not None, has_bias_hh=bias_hh is not None,
                     active=active, repeated=repeated, reverse=reverse, h_prev=h_prev, caches=caches,
                     scale=scale)
    return y, h, saved


def _gru_reset_before_backward(dy, dh_n, saved):
    x, weight_ih, weight_hh = saved["x"], saved["weight_ih"], saved["weight_hh"]
    active, repeated, h_prev, caches = saved["active"], saved["repeated"], saved["h_prev"], saved["caches"]
    T, B, I = x.shape
    H = weight_hh.shape[1]
    scale = saved["scale"]
    dy = np.zeros((T, B, H), x.dtype) if dy is None else np.asarray(dy, x.dtype)
    dh = np.zeros((B, H), x.dtype) if dh_n is None else np.array(dh_n, dtype=x.dtype)

    dg = np.zeros((T, B, 3 * H), x.dtype)     # gradient of the gates' pre-activations
    rh_all = np.zeros((T, B, H), x.dtype)     # r * h of every step, for dW_hn
    for t in reversed(_time_order(T, saved["reverse"])):
        dh = dh + np.where(repeated[t], dy[t], 0)
        dh_new = np.where(active[t], dh + dy[t], 0)
        r, z, n, rh = caches[t]
        h = h_prev[t]
        da_n = dh_new * (1 - z) * (1 - n * n)
        da_z = dh_new * (h - n) * z * (1 - z)
        d_rh = da_n @ weight_hh[2 * H:]
        da_r = d_rh * (h * scale) * r * (1 - r)
        dg[t] = np.concatenate([da_r, da_z, da_n], axis=1)
        rh_all[t] = rh
        dh_old = dh_new * z + (d_rh * r + dg[t, :, :2 * H] @ weight_hh[:2 * H]) * scale
        dh = np.where(active[t], dh_old, dh)

    rows = dg.reshape(T * B, 3 * H)
    dx = dg @ weight_ih
    dweight_ih = rows.T @ x.reshape(T * B, I)
    dweight_hh = np.concatenate([rows[:, :2 * H].T @ (h_prev * scale).reshape(T * B, H),
                                 rows[:, 2 * H:].T @ rh_all.reshape(T * B, H)])
    dbias = rows.sum(axis=0)
    return (dx, dh, dweight_ih, dweight_hh, dbias if saved["has_bias_ih"] else None,
            dbias.copy() if saved["has_bias_hh"] else None)

"""RNNCell, LSTMCell and GRUCell with torch.nn's interface: one time step, on the layer kernels
with T = 1 (fusedrnn.functional's recurrent op).

Since there is no autograd, ``backward`` runs through the last training-mode forward: it
returns ``(grad_input, grad_hx)`` and accumulates (``+=``) into every parameter's ``.grad``.
"""

import numpy as np

from .. import functional as F
from .._packed import owned_packed_weights, weight_versions
from .._base import (Parameter, as_float_array, check_device, check_parameter_versions, parameter_versions,
                     resolve_dtype)
from .._random import resolve_rng
from .module import Module
from .rnn import _BackwardState, _cell, _check_size, _has_cell_state, _reset_uniform

__all__ = ["RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]


class RNNCellBase(Module):
    """One time step of a recurrent layer: the layer kernels run with T = 1.

    forward(input ``(B, I)`` or ``(I,)``, hx=None) returns the next state; backward(grad of it)
    returns ``(grad_input, grad_hx)`` (grad_hx None when forward had no hx) and accumulates the
    parameter gradients.
    """

    def __init__(self, mode, input_size, hidden_size, bias=True, device=None, dtype=None, rng=None):
        super().__init__()
        check_device(device)
        self.mode = mode
        self.input_size = _check_size(input_size, "input_size")
        self.hidden_size = _check_size(hidden_size, "hidden_size")
        self.bias = bool(bias)
        self._rng = None if rng is None else resolve_rng(rng)
        self._backward_state = _BackwardState.NO_FORWARD
        self._context = None
        dtype = resolve_dtype(dtype)
        gates_h = F.CELLS[_cell(mode)].gates * self.hidden_size
        self.weight_ih = Parameter(np.zeros((gates_h, self.input_size), dtype))
        self.weight_hh = Parameter(np.zeros((gates_h, self.hidden_size), dtype))
        if self.bias:
            self.bias_ih = Parameter(np.zeros(gates_h, dtype))
            self.bias_hh = Parameter(np.zeros(gates_h, dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Draws every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        _reset_uniform(self)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def forward(self, input, hx=None):
        """input ``(B, I)`` or ``(I,)``; hx ``(B, H)`` or ``(H,)`` (LSTM: a tuple (h, c)) or None.

        Returns h' (LSTM: ``(h', c')``), batched or not like the input.
        """
        name = type(self).__name__
        dtype = self.weight_ih.dtype
        x = as_float_array(input, dtype, "input")
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {x.ndim}D instead")
        batched = x.ndim == 2
        x = x if batched else x[None]
        if x.shape[1] != self.input_size:
            raise ValueError(f"input has inconsistent input_size: got {x.shape[1]} expected {self.input_size}")
        lstm = _has_cell_state(self.mode)
        states = [None, None]
        if hx is not None:
            if lstm and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError("hx of an LSTMCell must be a tuple (h, c)")
            for i, state in enumerate(hx if lstm else [hx]):
                state = as_float_array(state, dtype, "hx")
                if state.ndim != (2 if batched else 1):
                    raise ValueError(f"{name}: Expected hidden to be {'2D' if batched else '1D'} like the "
                                     f"input, got {state.ndim}D")
                state = state if batched else state[None]
                if state.shape[0] != x.shape[0]:
                    raise ValueError(f"Input batch size {x.shape[0]} doesn't match hidden{i} batch size "
                                     f"{state.shape[0]}")
                if state.shape[1] != self.hidden_size:
                    raise ValueError(f"hidden{i} has inconsistent hidden_size: got {state.shape[1]}, "
                                     f"expected {self.hidden_size}")
                states[i] = state
        weights = {name: param.data for name, param in self._parameters.items() if param is not None}
        # Eval mode (a generation loop) keeps the packed weights while the Parameter versions stay.
        cache = None if self.training else owned_packed_weights(self, "weights")
        cache_version = None if self.training else weight_versions([self.weight_ih, self.weight_hh])
        _, h, c, saved = F.recurrent_forward(_cell(self.mode), x[None], states[0], states[1], weights,
                                             training=self.training, packed=cache, packed_version=cache_version)
        if self.training:
            self._context = dict(saved=saved, versions=parameter_versions(self.named_parameters()), batched=batched,
                                 hx_given=hx is not None, batch=x.shape[0])
            self._backward_state = None
        else:
            self._context, self._backward_state = None, _BackwardState.EVAL
        if not batched:
            h, c = h[0], None if c is None else c[0]
        return (h, c) if lstm else h

    def backward(self, grad_h, grad_c=None):
        """Gradients of the last training-mode forward.

        Args:
            grad_h: gradient of h', shaped like it, or None. For an LSTMCell, grad_c is that of c'
                (or pass ``(grad_h, grad_c)`` as grad_h, mirroring forward's result).

        Returns:
            ``(grad_input, grad_hx)``; grad_hx is shaped like hx (a tuple for LSTMCell), or None
            when forward had no hx.
        """
        if self._backward_state is not None:
            raise RuntimeError(self._backward_state)
        lstm = _has_cell_state(self.mode)
        if lstm and isinstance(grad_h, tuple) and grad_c is None:
            grad_h, grad_c = grad_h
        if not lstm and grad_c is not None:
            raise TypeError(f"{type(self).__name__} has no cell state: grad_c must be None")
        ctx = self._context
        check_parameter_versions(ctx["versions"])
        dtype = self.weight_ih.dtype
        shape = (ctx["batch"], self.hidden_size) if ctx["batched"] else (self.hidden_size,)
        grads = []
        for label, grad in (("grad_h", grad_h), ("grad_c", grad_c)):
            if grad is not None:
                grad = as_float_array(grad, dtype, label)
                if grad.shape != shape:
                    raise ValueError(f"{label} must have the state's shape {shape}, got {grad.shape}")
                grad = grad if ctx["batched"] else grad[None]
            grads.append(grad)
        self._context, self._backward_state = None, _BackwardState.USED
        dx, dh0, dc0, dweights = F.recurrent_backward(None, grads[0], grads[1], ctx["saved"])
        for name, grad in dweights.items():
            if grad is not None:
                getattr(self, name).accumulate_grad(grad)
        dx = dx[0] if ctx["batched"] else dx[0, 0]
        if not ctx["hx_given"]:
            return dx, None
        if not ctx["batched"]:
            dh0, dc0 = dh0[0], None if dc0 is None else dc0[0]
        return dx, ((dh0, dc0) if lstm else dh0)


class RNNCell(RNNCellBase):
    """One step of an Elman RNN: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``; arguments as torch.nn.RNNCell."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None,
                 rng=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity!r}. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, bias, device, dtype, rng)
        self.nonlinearity = nonlinearity


class LSTMCell(RNNCellBase):
    """One LSTM step; forward(input, (h, c)) returns ``(h', c')``; arguments as torch.nn.LSTMCell."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, rng=None):
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype, rng)


class GRUCell(RNNCellBase):
    """One GRU step (linear-before-reset); arguments as torch.nn.GRUCell."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, rng=None):
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype, rng)

"""Recurrent layers with torch.nn's interface, running on :mod:`fusedrnn.functional` (the cells are in
rnn_cell.py).

``RNN``, ``LSTM`` and ``GRU`` take torch.nn's constructor arguments, have its parameter names,
shapes and order (a PyTorch ``state_dict`` converted to NumPy loads unchanged) and shape their
results as PyTorch does. Each layer and direction is one fused kernel call over all time steps;
Python only loops over layers and directions.

Since there is no autograd, ``backward(grad_output, grad_hn=None)`` runs BPTT through the last
training-mode forward: it returns ``(grad_input, grad_hx)`` and accumulates (``+=``) into every
parameter's ``.grad``.

Letters: T steps, B batch, I input size, H hidden size, P the size of h (proj_size, or H without
projection), L layers, D directions (2 when bidirectional).
"""

import math
import numbers
import warnings

import numpy as np

from .. import functional as F
from .._packed import owned_packed_weights
from .._random import resolve_rng
from .._base import Parameter, as_float_array, check_parameter_versions, parameter_versions, resolve_dtype
from . import _device
from ._device import to_host
from ._rnn_arguments import grad_final_states, grad_output_time_major, initial_states
from .module import Module
from .utils.rnn import PackedSequence, _packed_to_padded, _valid_steps

__all__ = ["RNNBase", "RNN", "LSTM", "GRU"]

_MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")  # torch.nn's
_GRAD_NAMES = F.WEIGHT_NAMES
_PACKED_NAMES = frozenset(("weight_ih", "weight_hh", "weight_hr"))  # the weights a forward packs


def _cell(mode):
    """The cell table's name of a torch.nn mode ("RNN_TANH", "LSTM", ...)."""
    return mode.lower()


def _has_cell_state(mode):
    """Whether a mode's state is (h, c), as LSTM's, rather than h alone (from the cell table)."""
    return F.CELLS[_cell(mode)].has_cell_state


def _reset_uniform(module):
    """PyTorch's initialisation of recurrent layers and cells: every parameter from
    U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), drawn from the module's generator."""
    bound = 1.0 / math.sqrt(module.hidden_size)
    rng = resolve_rng(module._rng)
    for param in module.parameters():
        param.data[...] = rng.uniform(-bound, bound, param.shape)
        param.bump_version()


# -- argument checks shared by layers and cells -------------------------------------------------

def _check_size(value, name):
    """A positive int (PyTorch's messages for hidden_size and num_layers)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero")
    return int(value)


class _BackwardState:
    """Why a module cannot run backward now; keeps the error messages in one place."""

    NO_FORWARD = "backward was called before any forward: run forward in training mode first"
    EVAL = ("the last forward ran in eval mode, which saves nothing for backward: call .train() "
            "and run forward again")
    USED = ("Trying to backward through the same forward a second time: the first backward freed "
            "what it saved; run forward again")
    MOVED = "the module was moved to another device after its last forward: run forward again"
    COPIED = ("this CUDA module is a copy made after a training forward, whose saved state stays on the device "
              "with the original: run forward again")


# -- layers --------------------------------------------------------------------------------------

class RNNBase(Module):
    """Shared machinery of RNN, LSTM and GRU (use those).

    mode: ``"RNN_TANH"``, ``"RNN_RELU"``, ``"LSTM"`` or ``"GRU"``. The other arguments are torch.nn's,
    plus ``rng`` (None for the shared generator, an int seed or a numpy Generator) for the initial
    weights and the dropout masks.

    ``device="cuda"`` (or ``.to("cuda")`` later) runs the kernels on the CUDA backend; parameters
    and gradients stay NumPy on the host, and results are of the input's kind (NumPy or device
    arrays). See nn/_device.py.

    ``bf16_inference = True`` (not a torch.nn attribute) runs the recurrent products of eval-mode
    forwards with bfloat16 weights (``fusedrnn.functional``'s ``bf16_weights``: faster at small
    batches, outputs within ~1e-2 of float32); training-mode forwards stay float32. float32 layers
    without a projection only.
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None, rng=None):
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"Unrecognized RNN mode: {mode!r}")
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the probability "
                             "of an element being zeroed")
        input_size = _check_size(input_size, "input_size")
        hidden_size = _check_size(hidden_size, "hidden_size")
        num_layers = _check_size(num_layers, "num_layers")
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
            raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__}")
        proj_size = int(proj_size)
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero "
                          f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}")
        device = _device.resolve_device(device)
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.proj_size = proj_size
        # None stays None so that fusedrnn.manual_seed, which replaces the shared generator, is
        # honoured by later dropout masks too.
        self._rng = None if rng is None else resolve_rng(rng)
        self._backward_state = _BackwardState.NO_FORWARD
        self._bf16_inference = False
        self._context = None
        self._device_weights = _device.DeviceWeights() if device == "cuda" else None

        dtype = resolve_dtype(dtype)
        gates_h = F.CELLS[_cell(mode)].gates * hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else self._state_size * self._directions
            for suffix in self._suffixes(layer):
                shapes = {"weight_ih": (gates_h, layer_input), "weight_hh": (gates_h, self._state_size)}
                if self.bias:
                    shapes.update(bias_ih=(gates_h,), bias_hh=(gates_h,))
                if proj_size:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                for name, shape in shapes.items():
                    self.register_parameter(name + suffix, Parameter(np.zeros(shape, dtype)))
        self.reset_parameters()

    # -- structure -------------------------------------------------------------------------------
    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    @property
    def _state_size(self):
        """Size of h (and of each direction's output): proj_size when projecting, else hidden_size."""
        return self.proj_size or self.hidden_size

    def _suffixes(self, layer):
        return [f"_l{layer}", f"_l{layer}_reverse"][:self._directions]

    def _direction_names(self, layer, direction):
        """[(name without suffix, parameter name)] of one layer direction (made once, for every call)."""
        names = self.__dict__.get("_weight_names")
        if names is None:
            names = {(layer, d): [(name, name + suffix) for name in _GRAD_NAMES]
                     for layer in range(self.num_layers) for d, suffix in enumerate(self._suffixes(layer))}
            object.__setattr__(self, "_weight_names", names)
        return names[layer, direction]

    def _weight_parameters(self, layer, direction):
        """{name without suffix: Parameter} of one layer direction."""
        params = self._parameters
        return {name: params[full] for name, full in self._direction_names(layer, direction)
                if params.get(full) is not None}

    def _host_weights(self, layer, direction, training):
        """(weights, packed, packed_version) of one layer direction on the CPU: its arrays by name
        without the suffix, and in eval mode the PackedWeights that keeps them packed between calls
        (a generation loop) with the versions of the weights it packs, which say when they changed.
        Training calls pack afresh (None, None): the weights change at every step there anyway.
        (One pass over the parameters: a generation step pays this at every call.)"""
        params = self._parameters
        weights, versions = {}, []
        for name, full in self._direction_names(layer, direction):
            param = params.get(full)
            # (All five names in their order, None for an absent one: the form recurrent_forward
            # takes as it is, without making another dict.)
            weights[name] = None if param is None else param.data
            if param is not None and name in _PACKED_NAMES:
                versions.append(param.version)
        if training:
            return weights, None, None
        return weights, owned_packed_weights(self, (layer, direction)), tuple(versions)

    @property
    def _flat_weights_names(self):
        return [name for name, _ in self.named_parameters()]

    @property
    def all_weights(self):
        """The parameters grouped per layer and direction, as in PyTorch."""
        return [[getattr(self, name + suffix) for name in _GRAD_NAMES if hasattr(self, name + suffix)]
                for layer in range(self.num_layers) for suffix in self._suffixes(layer)]

    def reset_parameters(self):
        """Draws every parameter from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        _reset_uniform(self)

    def flatten_parameters(self):
        """Does nothing: the weights are always used in place (kept for PyTorch code that calls it)."""

    @property
    def device(self):
        """Where forward runs: ``"cpu"`` or ``"cuda"`` (the parameters stay NumPy on the host)."""
        return "cpu" if self._device_weights is None else "cuda"

    def _move_to(self, device):
        """Module.to's work here: a new device drops the device copies and what a forward saved."""
        if device != self.device:
            self._device_weights = _device.DeviceWeights() if device == "cuda" else None
            self._context, self._backward_state = None, _BackwardState.MOVED

    def __getstate__(self):
        # Device arrays cannot be copied or pickled: a copy of a CUDA layer leaves its saved state behind.
        state = dict(self.__dict__)
        if self._device_weights is not None and self._context is not None:
            state.update(_context=None, _backward_state=_BackwardState.COPIED)
        return state

    @property
    def bf16_inference(self):
        return self._bf16_inference

    @bf16_inference.setter
    def bf16_inference(self, enabled):
        if not isinstance(enabled, (bool, np.bool_)):
            raise TypeError(f"bf16_inference must be a bool, got {type(enabled).__name__}")
        if enabled and self.proj_size:
            raise ValueError("bf16_inference is not available with proj_size")
        object.__setattr__(self, "_bf16_inference", bool(enabled))

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, input, hx=None):
        """Runs all layers over a batch.

        Args:
            input: ``(T, B, I)`` (``(B, T, I)`` with batch_first), unbatched ``(T, I)``, or a
                PackedSequence with data ``(N, I)``.
            hx: initial state ``(L*D, B, P)`` (``(L*D, P)`` unbatched), for LSTM a tuple
                ``(h_0, c_0)`` with c_0 ``(L*D, B, H)``; None for zeros. For a PackedSequence, hx is
                in the caller's batch order.

        Returns:
            ``(output, h_n)``, for LSTM ``(output, (h_n, c_n))``: output shaped like the input with
            ``D*P`` features (a PackedSequence for a PackedSequence), h_n ``(L*D, B, P)`` and c_n
            ``(L*D, B, H)`` (without the batch dimension for unbatched input).
        """
        dtype = self.weight_ih_l0.dtype
        device, device_io = self._device_weights, False
        if device is not None:
            input, hx, device_io = _device.forward_arguments(self, input, hx)
        packed = isinstance(input, PackedSequence)
        lengths = steps = sorted_indices = None
        if packed:
            data = as_float_array(input.data, dtype, "input")
            if data.ndim != 2:
                raise ValueError(f"input must have 2 dimensions, got {data.ndim}: the data of a "
                                 "PackedSequence is (N, input_size)")
            x, lengths = _packed_to_padded(input._replace(data=data))
            steps = _valid_steps(input.batch_sizes)
            sorted_indices = input.sorted_indices
            unbatched = False
        else:
            if device is None or not _device.is_device_array(input):   # (a CPU layer refuses device arrays)
                input = as_float_array(input, dtype, "input")
            if input.ndim not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got "
                                 f"{input.ndim}D instead")
            unbatched = input.ndim == 2
            x = input[:, None] if unbatched else input.swapaxes(0, 1) if self.batch_first else input
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                             f"got {x.shape[-1]}")
        h0, c0 = initial_states(self, hx, x.shape[1], unbatched, sorted_indices, dtype)

        training = self.training
        rng = None  # drawn from only with dropout between layers
        saved, masks, h_n, c_n, stamps = [], [], [], [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            if device is not None and not _device.is_device_array(layer_input):
                layer_input = _device.to_device(layer_input)   # once for both directions
            for direction in range(self._directions):
                index = layer * self._directions + direction
                if device is None:
                    weights, cache, cache_version = self._host_weights(layer, direction, training)
                else:
                    weights, stamp = device.weights(self._weight_parameters(layer, direction), (layer, direction))
                    stamps.append(stamp)
                    cache = cache_version = None
                y, h, c, state = F.recurrent_forward(
                    _cell(self.mode), layer_input, None if h0 is None else h0[index],
                    None if c0 is None else c0[index], weights, lengths=lengths,
                    reverse=direction == 1, training=training,
                    bf16_weights=self._bf16_inference and not training, packed=cache,
                    packed_version=cache_version)
                outputs.append(y)
                saved.append(state)
                h_n.append(to_host(h))
                c_n.append(None if c is None else to_host(c))
            # Between layers the CUDA path works on the host (see nn/_device.py).
            layer_output = outputs[0] if len(outputs) == 1 else np.concatenate([to_host(y) for y in outputs], -1)
            if training and self.dropout > 0 and layer < self.num_layers - 1:
                rng = rng or resolve_rng(self._rng)
                mask = self._dropout_mask(rng, layer_output.shape, dtype)
                masks.append(mask)
                layer_output = to_host(layer_output) * mask
            layer_input = layer_output

        if training:
            self._context = dict(saved=saved, versions=parameter_versions(self.named_parameters()), masks=masks,
                                 packed=input if packed else None, stamps=stamps, device_io=device_io,
                                 steps=steps, unbatched=unbatched, hx_given=hx is not None,
                                 output_shape=layer_input.shape, batch=x.shape[1])
            self._backward_state = None
        elif self._backward_state is not _BackwardState.EVAL:   # (Module.__setattr__ costs at every call)
            self._context, self._backward_state = None, _BackwardState.EVAL

        # (np.stack costs several microseconds even for one array: a generation step's whole budget)
        h_n = h_n[0][None] if len(h_n) == 1 else np.stack(h_n)
        c_n = None if c_n[0] is None else c_n[0][None] if len(c_n) == 1 else np.stack(c_n)
        if packed or unbatched or self.batch_first:
            layer_input = to_host(layer_input)
        if packed:
            output = PackedSequence(layer_input[steps], input.batch_sizes, input.sorted_indices,
                                    input.unsorted_indices)
            if input.unsorted_indices is not None:
                h_n = h_n[:, input.unsorted_indices]
                c_n = None if c_n is None else c_n[:, input.unsorted_indices]
        elif unbatched:
            output, h_n = layer_input[:, 0], h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        else:
            output = np.ascontiguousarray(layer_input.swapaxes(0, 1)) if self.batch_first else layer_input
        if device is not None:
            output, h_n, c_n = _device.to_callers_kind((output, h_n, c_n), device_io)
        return output, (h_n if c_n is None else (h_n, c_n))

    def _dropout_mask(self, rng, shape, dtype):
        """Inverted dropout: zero with probability p, else 1/(1-p), so the expectation is unchanged."""
        if self.dropout >= 1:
            return np.zeros(shape, dtype)
        keep = rng.random(shape) >= self.dropout
        return keep.astype(dtype) / dtype.type(1 - self.dropout)

    # -- backward --------------------------------------------------------------------------------
    def backward(self, grad_output, grad_hn=None):
        """BPTT through the last training-mode forward.

        Args:
            grad_output: gradient of output, shaped like it (for a PackedSequence output: a
                PackedSequence or its data array); None for zeros.
            grad_hn: gradient of h_n, shaped like h_n; for LSTM a tuple ``(dh_n, dc_n)`` whose
                entries may be None; None for zeros.

        Returns:
            ``(grad_input, grad_hx)``: grad_input shaped like the input (for a PackedSequence input,
            a PackedSequence with the same batch_sizes and indices:
            ``pad_packed_sequence(grad_input, total_length=T)`` gives the gradient of the padded
            batch that was packed); grad_hx shaped like the hx given (a tuple for LSTM), or None
            when forward had no hx. Parameter gradients are added into their ``.grad``.
        """
        if self._backward_state is not None:
            raise RuntimeError(self._backward_state)
        ctx = self._context
        check_parameter_versions(ctx["versions"])
        if self._device_weights is not None:
            grad_output, grad_hn = _device.backward_arguments(self, grad_output, grad_hn, ctx)
        packed = ctx["packed"]
        dy = grad_output_time_major(self, grad_output, ctx)
        dh_n, dc_n = grad_final_states(self, grad_hn, ctx)
        # Consumed only now, so that a refused gradient can be corrected and passed again.
        self._context, self._backward_state = None, _BackwardState.USED

        rows = self.num_layers * self._directions
        dh0, dc0 = [None] * rows, [None] * rows
        P = self._state_size
        d_output = dy
        for layer in reversed(range(self.num_layers)):
            d_input = None
            for direction in range(self._directions):
                index = layer * self._directions + direction
                dy_direction = d_output if d_output is None or self._directions == 1 else \
                    to_host(d_output)[..., direction * P:(direction + 1) * P]
                dx, dh0[index], dc0[index], dweights = F.recurrent_backward(
                    dy_direction, None if dh_n is None else dh_n[index],
                    None if dc_n is None else dc_n[index], ctx["saved"][index])
                suffix = self._suffixes(layer)[direction]
                for name, grad in dweights.items():
                    if grad is not None:
                        getattr(self, name + suffix).accumulate_grad(to_host(grad))
                d_input = dx if d_input is None else to_host(d_input) + to_host(dx)
            if layer > 0 and ctx["masks"]:
                d_input = to_host(d_input)
                d_input *= ctx["masks"][layer - 1]
            d_output = d_input

        if packed is not None or ctx["unbatched"] or self.batch_first:
            d_output = to_host(d_output)
        if packed is not None:
            grad_input = PackedSequence(d_output[ctx["steps"]], packed.batch_sizes, packed.sorted_indices,
                                        packed.unsorted_indices)
        elif ctx["unbatched"]:
            grad_input = d_output[:, 0]
        else:
            grad_input = np.ascontiguousarray(d_output.swapaxes(0, 1)) if self.batch_first else d_output
        grad_hx = None
        if ctx["hx_given"]:
            states = [np.stack([to_host(d) for d in dh0])]
            states += [np.stack([to_host(d) for d in dc0])] if _has_cell_state(self.mode) else []
            if packed is not None and packed.unsorted_indices is not None:
                states = [s[:, packed.unsorted_indices] for s in states]
            if ctx["unbatched"]:
                states = [s[:, 0] for s in states]
            grad_hx = tuple(states) if _has_cell_state(self.mode) else states[0]
        if self._device_weights is not None:
            return _device.to_callers_kind((grad_input, grad_hx), ctx["device_io"])
        return grad_input, grad_hx


class RNN(RNNBase):
    """Elman RNN, ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with act tanh or relu.

    Arguments as torch.nn.RNN (nonlinearity is the fourth positional one, as there), plus ``rng``.
    See :class:`RNNBase` for forward and backward.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None, rng=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, 0, device, dtype, rng)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory layer (gates i, f, g, o), optionally with a projection of h.

    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``, and with ``proj_size > 0``
    ``h_t = W_hr (o * tanh(c_t))``. Arguments as torch.nn.LSTM, plus ``rng``. forward returns
    ``(output, (h_n, c_n))``; see :class:`RNNBase`.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None, rng=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, rng)


class GRU(RNNBase):
    """Gated recurrent unit layer (gates r, z, n; linear-before-reset, as PyTorch and cuDNN).

    Arguments as torch.nn.GRU, plus ``rng``. See :class:`RNNBase` for forward and backward.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, rng=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, rng)

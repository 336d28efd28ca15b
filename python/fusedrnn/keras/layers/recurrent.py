"""SimpleRNN, LSTM and GRU with Keras's arguments, weights and masking, on the fused kernels.

Each layer keeps its weights in the kernels' layout (``weight_ih (G*units, in)``, ``weight_hh``,
``bias_ih``, ``bias_hh``; gates LSTM i,f,g,o and GRU r,z,n) so nothing is transposed per call;
``get_weights``/``set_weights`` convert from and to Keras's ``kernel (in, G*units)``,
``recurrent_kernel (units, G*units)`` and ``bias`` (GRU ``reset_after``: ``(2, 3*units)``, the input
bias then the recurrent one), with Keras's gate order (LSTM i,f,c,o; GRU z,r,h).

One kernel call runs the whole sequence. Masks (Keras's ``(batch, time)`` booleans) run in the
kernel too: a masked step carries the state, and its output repeats the last one (zeros with
``zero_output_for_mask``, which Bidirectional sets when returning sequences), as Keras does.
"""

import numpy as np

from ... import functional as F
from ..._base import check_parameter_versions, parameter_versions
from ..._packed import owned_packed_weights, weight_versions
from ..._random import resolve_rng
from .. import initializers
from .base import Layer, reject_unsupported

__all__ = ["SimpleRNN", "LSTM", "GRU"]

def _activation_name(activation):
    if activation is None:
        return "linear"
    return activation if isinstance(activation, str) else getattr(activation, "__name__", repr(activation))


def _fraction(value, name):
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


class _Recurrent(Layer):
    """What SimpleRNN, LSTM and GRU share. Subclasses define _cell (the cell table's name of the
    kernel they run) and set _GATE_ORDER (ours[k] is Keras's gate _GATE_ORDER[k]) and _SUPPORTED,
    the (activation, recurrent activation) pairs the kernels have."""

    supports_masking = True
    _GATE_ORDER = (0,)

    def __init__(self, units, activation="tanh", recurrent_activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, seed=None, zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        reject_unsupported(owner, kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                           bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                           kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
                           bias_constraint=bias_constraint)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = _activation_name(activation)
        self.recurrent_activation = _activation_name(recurrent_activation)
        self._check_activations()
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.dropout = _fraction(dropout, "dropout")
        self.recurrent_dropout = _fraction(recurrent_dropout, "recurrent_dropout")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)   # no numerical effect: the kernels never unroll in Python
        self.seed = seed
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.states = None           # stateful: the arrays carried from one call to the next
        self._generator = None if seed is None else resolve_rng(seed)
        self._config.update(
            units=self.units, activation=self.activation, use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer, recurrent_initializer=self.recurrent_initializer,
            bias_initializer=self.bias_initializer, dropout=self.dropout, recurrent_dropout=self.recurrent_dropout,
            return_sequences=self.return_sequences, return_state=self.return_state,
            go_backwards=self.go_backwards, stateful=self.stateful, unroll=self.unroll, seed=seed,
            zero_output_for_mask=self.zero_output_for_mask)

    def _check_activations(self):
        if (self.activation, self.recurrent_activation) in self._SUPPORTED:
            return
        given = f"activation={self.activation!r}"
        if not isinstance(self, SimpleRNN):
            given += f", recurrent_activation={self.recurrent_activation!r}"
        raise NotImplementedError(f"{type(self).__name__}({given}) is not supported by the fused kernels; "
                                  f"supported: {self._SUPPORTED_TEXT}")

    # -- weights ----------------------------------------------------------------------------------
    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: expected an input of shape (batch, time, features) with known "
                             f"features, got {tuple(input_shape)}")
        features, units, width = input_shape[-1], self.units, self._gates * self.units
        self._add_param("weight_ih", np.zeros((width, features)))
        self._add_param("weight_hh", np.zeros((width, units)))
        if self.use_bias:
            self._add_param("bias_ih", np.zeros(width))
            if self._has_recurrent_bias():
                self._add_param("bias_hh", np.zeros(width))
        weights = [self.kernel_initializer((features, width), self.dtype),
                   self.recurrent_initializer((units, width), self.dtype)]
        if self.use_bias:
            weights.append(self._initial_bias())
        self._load_keras_weights(weights)

    def _has_recurrent_bias(self):
        return False

    def _initial_bias(self):
        return self.bias_initializer((self._gates * self.units,), self.dtype)

    def _reorder(self, array, order):
        """The gate blocks of the last axis of `array` taken in `order`."""
        units = self.units
        return np.concatenate([array[..., g * units:(g + 1) * units] for g in order], axis=-1)

    def _keras_bias_from(self, bias_ih, bias_hh):
        return self._reorder(bias_ih, np.argsort(self._GATE_ORDER))

    def _keras_weights(self, attribute="data"):
        to_keras = np.argsort(self._GATE_ORDER)
        p = {name: getattr(param, attribute) for name, param in self._params.items()}
        weights = [self._reorder(p["weight_ih"].T, to_keras), self._reorder(p["weight_hh"].T, to_keras)]
        if self.use_bias:
            weights.append(self._keras_bias_from(p["bias_ih"], p.get("bias_hh")))
        return weights

    def _load_keras_weights(self, arrays):
        def ours(array):
            return np.ascontiguousarray(self._reorder(np.asarray(array), self._GATE_ORDER), dtype=self.dtype)

        p = self._params
        p["weight_ih"].data = np.ascontiguousarray(ours(arrays[0]).T)
        p["weight_hh"].data = np.ascontiguousarray(ours(arrays[1]).T)
        if self.use_bias:
            bias = np.asarray(arrays[2])
            if "bias_hh" in p:   # GRU reset_after: rows are the input and the recurrent bias
                p["bias_ih"].data, p["bias_hh"].data = ours(bias[0]), ours(bias[1])
            else:
                p["bias_ih"].data = ours(bias)

    # -- shapes and states --------------------------------------------------------------------------
    @property
    def _cell(self):
        raise NotImplementedError

    @property
    def _gates(self):
        return F.CELLS[self._cell].gates

    @property
    def _state_count(self):
        return 2 if F.CELLS[self._cell].has_cell_state else 1

    def compute_output_shape(self, input_shape):
        batch, steps = input_shape[0], input_shape[1]
        output = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return [output] + [(batch, self.units)] * self._state_count
        return output

    def reset_states(self):
        """Zeroes the carried states of a stateful layer (before it has run there are none)."""
        if self.states is not None:
            self.states = [np.zeros_like(s) for s in self.states]

    reset_state = reset_states

    def _initial_states(self, initial_state, batch):
        if initial_state is not None:
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            if len(states) != self._state_count:
                raise ValueError(f"{self.name}: initial_state needs {self._state_count} array(s), got {len(states)}")
            states = [self._float_input(s) for s in states]
            for s in states:
                if s.shape != (batch, self.units):
                    raise ValueError(f"{self.name}: an initial state has shape {s.shape}, expected "
                                     f"{(batch, self.units)}")
            return states
        if not self.stateful:
            return [None] * self._state_count
        if self.states is None:
            self.states = [np.zeros((batch, self.units), self.dtype) for _ in range(self._state_count)]
        if self.states[0].shape[0] != batch:
            raise ValueError(f"{self.name} is stateful with batch size {self.states[0].shape[0]}, but got a batch "
                             f"of {batch}: a stateful RNN needs the same batch size at every call")
        return self.states

    # -- dropout ----------------------------------------------------------------------------------
    def _dropout_scales(self, batch, features):
        """One (batch, features) input mask and one (batch, units) recurrent mask, each constant
        over time and scaled by 1/(1-rate), or None when that dropout is off."""
        generator = self._generator or resolve_rng(None)

        def draw(rate, width):
            if not 0 < rate < 1:
                return None
            keep = generator.random((batch, width)) >= rate
            return keep.astype(self.dtype) / self.dtype.type(1 - rate)

        return draw(self.dropout, features), draw(self.recurrent_dropout, self.units)

    # -- forward and backward -----------------------------------------------------------------------
    def __call__(self, inputs, *args, mask=None, training=None, initial_state=None, **kwargs):
        if initial_state is not None:
            kwargs["initial_state"] = initial_state
        return super().__call__(inputs, *args, mask=mask, training=training, **kwargs)

    def forward(self, x, mask=None, training=False, initial_state=None):
        """x ``(batch, time, features)``, mask ``(batch, time)`` booleans or None.

        Returns ``(output, output_mask)``; output is ``(batch, time, units)`` with
        return_sequences, else ``(batch, units)``, and with return_state a list
        ``[output, h]`` (LSTM ``[output, h, c]``).
        """
        x = self._float_input(x)
        if x.ndim != 3 or x.shape[2] != self._params["weight_ih"].shape[1]:
            raise ValueError(f"{self.name}: expected input (batch, time, {self._params['weight_ih'].shape[1]}), "
                             f"got shape {x.shape}")
        batch, steps, features = x.shape
        kernel_mask = None
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (batch, steps):
                raise ValueError(f"{self.name}: mask must have shape (batch, time) = {(batch, steps)}, "
                                 f"got {mask.shape}")
            if not mask.all():   # an all-true mask changes nothing: skip the kernel's mask path
                kernel_mask = np.ascontiguousarray(mask.T)
        states = self._initial_states(initial_state, batch)
        input_scale, recurrent_scale = self._dropout_scales(batch, features) if training else (None, None)
        x_time_major = x.transpose(1, 0, 2)
        if input_scale is not None:
            x_time_major = x_time_major * input_scale   # the same mask at every step
        options = dict(reverse=self.go_backwards, training=training, mask=kernel_mask,
                       masked_output="zero" if self.zero_output_for_mask else "repeat",
                       recurrent_scale=recurrent_scale)
        weights = {name: param.data for name, param in self._params.items()}
        # Inference keeps the packed weights between calls while the Parameters' versions stay the
        # same (training changes them at every step anyway).
        cache = None if training else owned_packed_weights(self, "weights")
        cache_version = None if training else weight_versions(self._params.get(n) for n in ("weight_ih", "weight_hh"))
        y, h_n, c_n, saved = F.recurrent_forward(self._cell, x_time_major, *(list(states) + [None])[:2], weights,
                                                 packed=cache, packed_version=cache_version, **options)
        new_states = [h_n] if c_n is None else [h_n, c_n]
        if self.go_backwards:
            y = y[::-1]   # Keras returns the steps in the order they were processed
        if self.stateful:
            self.states = [s.copy() for s in new_states]
        versions = parameter_versions((f"{self.name}.{name}", param) for name, param in self._params.items())
        self._save(training, saved, versions, input_scale, steps, kernel_mask is not None)
        output = np.ascontiguousarray(y.transpose(1, 0, 2)) if self.return_sequences else y[-1].copy()
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output] + list(new_states), output_mask
        return output, output_mask

    def backward(self, grad):
        """grad: the gradient of the output (not of returned states). Returns the input's."""
        return self._backward(grad, want_dx=True)

    def backward_weights_only(self, grad):
        self._backward(grad, want_dx=False)   # (the kernels then skip the input's product)

    def _backward(self, grad, want_dx):
        saved, versions, input_scale, steps, masked = self._take_saved()
        check_parameter_versions(versions)
        grad = np.asarray(grad, dtype=self.dtype)
        dy = dh_n = None
        if self.return_sequences:
            dy = grad.transpose(1, 0, 2)
            if self.go_backwards:
                dy = dy[::-1]
        elif masked:
            # The output is the last processed step's output, which masking can make differ
            # from the final state.
            dy = np.zeros((steps,) + grad.shape, self.dtype)
            dy[0 if self.go_backwards else steps - 1] = grad
        else:
            dh_n = grad
        dx, _, _, grads = F.recurrent_backward(dy, dh_n, None, saved, want_dx=want_dx)
        for name, param in self._params.items():
            param.accumulate_grad(grads[name])
        if not want_dx:
            return None
        if input_scale is not None:
            dx = dx * input_scale
        return dx.transpose(1, 0, 2)


class SimpleRNN(_Recurrent):
    """Keras's SimpleRNN: ``h' = activation(x @ kernel + h @ recurrent_kernel + bias)``;
    activation ``"tanh"`` (default) or ``"relu"``."""

    _SUPPORTED = {("tanh", "linear"), ("relu", "linear")}
    _SUPPORTED_TEXT = "activation='tanh' or 'relu'"

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, activation=activation, **kwargs)

    @property
    def _cell(self):
        return "rnn_" + self.activation


class LSTM(_Recurrent):
    """Keras's LSTM (gates i, f, c, o). ``unit_forget_bias`` (default) starts the forget gate's
    bias at exactly 1."""

    _GATE_ORDER = (0, 1, 2, 3)   # Keras's i, f, c, o are the kernels' i, f, g, o
    _SUPPORTED = {("tanh", "sigmoid")}
    _SUPPORTED_TEXT = "activation='tanh' with recurrent_activation='sigmoid'"

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", unit_forget_bias=True,
                 use_cudnn="auto", implementation=2, **kwargs):
        # use_cudnn and implementation choose between Keras's equivalent code paths: ignored.
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self._config.update(recurrent_activation=self.recurrent_activation, unit_forget_bias=self.unit_forget_bias)

    @property
    def _cell(self):
        return "lstm"

    def _initial_bias(self):
        if not self.unit_forget_bias:
            return super()._initial_bias()
        units = self.units
        return np.concatenate([self.bias_initializer((units,), self.dtype), np.ones(units, self.dtype),
                               self.bias_initializer((2 * units,), self.dtype)])



class GRU(_Recurrent):
    """Keras's GRU (gates z, r, h). ``reset_after=True`` (default; PyTorch's and cuDNN's form) has
    an input and a recurrent bias, ``bias (2, 3*units)``; ``reset_after=False`` applies the reset
    gate before the recurrent product and has one bias ``(3*units,)``."""

    _GATE_ORDER = (1, 0, 2)   # the kernels' r, z, n are Keras's gates 1 (r), 0 (z), 2 (h)
    _SUPPORTED = {("tanh", "sigmoid")}
    _SUPPORTED_TEXT = "activation='tanh' with recurrent_activation='sigmoid'"

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", reset_after=True,
                 use_cudnn="auto", implementation=2, **kwargs):
        # use_cudnn and implementation choose between Keras's equivalent code paths: ignored.
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)
        self.reset_after = bool(reset_after)
        self._config.update(recurrent_activation=self.recurrent_activation, reset_after=self.reset_after)

    @property
    def _cell(self):
        return "gru" if self.reset_after else "gru_reset_before"

    def _has_recurrent_bias(self):
        return self.reset_after

    def _keras_variables(self):
        # Keras's one bias variable (2, 3*units) is two Parameters here.
        groups = super()._keras_variables()
        if self.trainable and self.use_bias and self.reset_after:
            groups = groups[:2] + [[self._params["bias_ih"], self._params["bias_hh"]]]
        return groups

    def _initial_bias(self):
        if self.reset_after:
            return self.bias_initializer((2, 3 * self.units), self.dtype)
        return super()._initial_bias()

    def _keras_bias_from(self, bias_ih, bias_hh):
        to_keras = np.argsort(self._GATE_ORDER)
        if bias_hh is None:
            return self._reorder(bias_ih, to_keras)
        return np.stack([self._reorder(bias_ih, to_keras), self._reorder(bias_hh, to_keras)])

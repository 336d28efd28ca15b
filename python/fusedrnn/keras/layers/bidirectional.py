"""Bidirectional: a recurrent layer run forwards and backwards over the sequence, outputs merged."""

import numpy as np

from .base import Layer
from .recurrent import _Recurrent

__all__ = ["Bidirectional"]

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Layer):
    """Runs a copy of `layer` forwards and a copy with ``go_backwards`` flipped (or
    `backward_layer`), flips the backward output back into time order, and merges the two with
    ``merge_mode``: ``"concat"`` (default), ``"sum"``, ``"mul"``, ``"ave"`` or None (a list of both).
    With ``return_state`` the forward layer's states follow the output, then the backward's.

    As Keras does, both copies output zeros at masked steps when returning sequences.
    Weights: the forward layer's then the backward layer's, each in Keras's order.
    """

    supports_masking = True

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        if not isinstance(layer, _Recurrent):
            raise TypeError(f"Bidirectional wraps SimpleRNN, LSTM or GRU, got {type(layer).__name__}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {_MERGE_MODES}, got {merge_mode!r}")
        kwargs.setdefault("dtype", layer.dtype.name)   # weights are cast to the wrapper's dtype
        super().__init__(**kwargs)
        config = layer.get_config()
        config["name"] = "forward_" + layer.name
        self.forward_layer = type(layer)(**config)
        if backward_layer is None:
            config.update(name="backward_" + layer.name, go_backwards=not layer.go_backwards)
            backward_layer = type(layer)(**config)
        elif not isinstance(backward_layer, _Recurrent):
            raise TypeError(f"backward_layer must be SimpleRNN, LSTM or GRU, got {type(backward_layer).__name__}")
        elif backward_layer.go_backwards == layer.go_backwards:
            raise ValueError("layer and backward_layer must have different go_backwards values")
        self.backward_layer = backward_layer
        for sub in (self.forward_layer, self.backward_layer):
            if (sub.return_sequences, sub.return_state) != (layer.return_sequences, layer.return_state):
                raise ValueError("layer and backward_layer must agree on return_sequences and return_state")
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.stateful = layer.stateful
        self._initial_weights = weights
        self._config.update(merge_mode=merge_mode)

    @property
    def _sublayers(self):
        return (self.forward_layer, self.backward_layer)

    def build(self, input_shape):
        for sub in self._sublayers:
            sub._ensure_built(input_shape)
        if self._initial_weights is not None:
            self.built = True
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    def compute_output_shape(self, input_shape):
        shapes = self.forward_layer.compute_output_shape(input_shape)
        output, states = (shapes[0], shapes[1:]) if self.return_state else (shapes, [])
        if self.merge_mode == "concat":
            output = output[:-1] + (2 * output[-1],)
        outputs = [output, output] if self.merge_mode is None else [output]
        if self.return_state:
            return outputs + states + states
        return outputs if self.merge_mode is None else output

    def reset_states(self):
        for sub in self._sublayers:
            sub.reset_states()

    reset_state = reset_states

    def __call__(self, inputs, *args, mask=None, training=None, initial_state=None, **kwargs):
        if initial_state is not None:
            kwargs["initial_state"] = initial_state
        return super().__call__(inputs, *args, mask=mask, training=training, **kwargs)

    def forward(self, x, mask=None, training=False, initial_state=None):
        forward_states = backward_states = None
        if initial_state is not None:
            half = len(initial_state) // 2
            forward_states, backward_states = initial_state[:half], initial_state[half:]
        y_forward, out_mask = self.forward_layer.forward(x, mask, training, forward_states)
        y_backward, _ = self.backward_layer.forward(x, mask, training, backward_states)
        states = []
        if self.return_state:
            states = y_forward[1:] + y_backward[1:]
            y_forward, y_backward = y_forward[0], y_backward[0]
        if self.return_sequences:
            y_backward = y_backward[:, ::-1]   # back into time order
        merged = self._merge(y_forward, y_backward)
        self._save(training, y_forward, y_backward)
        if self.merge_mode is None:
            out_mask = [out_mask, out_mask]
        if self.return_state:
            outputs = (merged if self.merge_mode is None else [merged]) + states
            return outputs, out_mask
        return merged, out_mask

    def _merge(self, a, b):
        if self.merge_mode == "concat":
            return np.concatenate([a, b], axis=-1)
        if self.merge_mode == "sum":
            return a + b
        if self.merge_mode == "mul":
            return a * b
        if self.merge_mode == "ave":
            return (a + b) / 2
        return [a, b]

    def backward(self, grad):
        """grad: the merged output's gradient (a pair of gradients for merge_mode None)."""
        g_forward, g_backward = self._split_gradient(grad)
        return self.forward_layer.backward(g_forward) + self.backward_layer.backward(g_backward)

    def backward_weights_only(self, grad):
        g_forward, g_backward = self._split_gradient(grad)
        self.forward_layer.backward_weights_only(g_forward)
        self.backward_layer.backward_weights_only(g_backward)

    def _split_gradient(self, grad):
        """The merged output's gradient as the two directions' output gradients."""
        y_forward, y_backward = self._take_saved()
        if self.merge_mode == "concat":
            units = y_forward.shape[-1]
            g_forward, g_backward = grad[..., :units], grad[..., units:]
        elif self.merge_mode == "sum":
            g_forward = g_backward = grad
        elif self.merge_mode == "ave":
            g_forward = g_backward = np.asarray(grad) / 2
        elif self.merge_mode == "mul":
            g_forward, g_backward = grad * y_backward, grad * y_forward
        else:
            g_forward, g_backward = grad
        if self.return_sequences:
            g_backward = g_backward[:, ::-1]
        return g_forward, g_backward

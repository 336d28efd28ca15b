"""Layer, the symbolic KerasTensor, Input and InputLayer.

A layer holds its weights as Parameters (``fusedrnn.nn.Parameter``: ``.data`` and ``.grad``) in
the layout its kernel wants; ``get_weights``/``set_weights`` speak Keras's layout and order, so
weights move between Keras and fusedrnn unchanged.

Since there is no autograd, every layer implements, besides Keras's ``build`` and
``compute_output_shape``:

- ``forward(x, mask, training) -> (y, y_mask)``: runs the layer; in training it remembers what
  ``backward`` needs. ``mask`` is a ``(batch, time)`` boolean array or None, and ``y_mask`` the
  mask it passes on, as Keras propagates masks.
- ``backward(grad_y) -> grad_x``: the gradient of the input (None for integer inputs) from that
  last training-mode forward, accumulating (``+=``) into each weight's ``.grad``. It runs once
  per forward (or ``backward_weights_only(grad_y)`` instead, where nothing needs grad_x).

Calling a layer on an array runs it (in inference mode unless ``training=True``) and returns
arrays; calling it on a KerasTensor (from ``Input``) records a functional-API graph.
"""

import re

import numpy as np

from ..._base import Parameter, resolve_dtype

__all__ = ["Layer", "InputLayer", "Input", "KerasTensor"]

_name_counts = {}


def _snake_case(name):
    """Keras's default layer names: SimpleRNN -> simple_rnn, InputLayer -> input_layer."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def unique_name(base):
    """base, then base_1, base_2, ... (Keras's naming of layers created in one session)."""
    count = _name_counts.get(base, 0)
    _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def reject_unsupported(owner, **options):
    """Keras arguments accepted only at their default None (regularizers, constraints, ...)."""
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise NotImplementedError(f"{owner}: {', '.join(given)} not supported by fusedrnn.keras "
                                  "(leave them None)")


class KerasTensor:
    """A symbolic tensor of the functional API: a shape (None where unknown), a dtype, and the
    layer call that produced it (``layer``, its input ``parent`` and output ``index``)."""

    def __init__(self, shape, dtype="float32", layer=None, parent=None, index=0):
        self.shape = tuple(None if s is None else int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.layer, self.parent, self.index = layer, parent, index

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype.name}>"


class Layer:
    """Base class of every layer.

    Keyword arguments every layer takes: ``name``, ``dtype`` (``"float32"`` default, or
    ``"float64"``), ``trainable``, and Keras-2 style ``input_shape`` (without the batch),
    ``batch_input_shape``, ``input_dim`` or ``batch_size`` on a model's first layer.
    """

    supports_masking = False

    def __init__(self, *, name=None, dtype=None, trainable=True, input_shape=None, batch_input_shape=None,
                 input_dim=None, batch_size=None, **unknown):
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s): {', '.join(unknown)}")
        self.name = name or unique_name(_snake_case(type(self).__name__))
        self.dtype = resolve_dtype(dtype)   # float32 (default) or float64
        self.built = False
        self._params = {}   # name -> Parameter, in the kernels' layout
        self._trainable = bool(trainable)
        self._saved = None
        self._config = {"name": self.name, "dtype": self.dtype.name, "trainable": self._trainable}
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_input_shape is not None:
            self._batch_input_shape = tuple(batch_input_shape)
        elif input_shape is not None:
            self._batch_input_shape = (batch_size,) + tuple(input_shape)
        else:
            self._batch_input_shape = None

    # -- Keras's API ---------------------------------------------------------------------------
    def build(self, input_shape):
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        """The constructor arguments (enough to build an identical, unbuilt layer)."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for param in self._params.values():
            param.requires_grad = self._trainable
        for layer in self._sublayers:
            layer.trainable = value

    @property
    def _sublayers(self):
        """The layers this one is made of (a wrapper's layer, a model's layers): their weights
        follow its own in every list of weights, and setting its trainable sets theirs."""
        return ()

    @property
    def weights(self):
        """The layer's Parameters (kernel layout; ``get_weights`` gives Keras's)."""
        return list(self._params.values()) + [w for layer in self._sublayers for w in layer.weights]

    @property
    def trainable_weights(self):
        """The weights training updates: none when the layer is frozen, else its own and its
        sublayers' trainable ones (a sublayer may be frozen on its own)."""
        if not self.trainable:
            return []
        return list(self._params.values()) + [w for layer in self._sublayers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    def _keras_variables(self):
        """The trainable Parameters grouped as Keras's variables (for per-variable clipnorm)."""
        if not self.trainable:
            return []
        return [[param] for param in self._params.values()] + [
            group for layer in self._sublayers for group in layer._keras_variables()]

    def count_params(self):
        if not self.built:
            raise ValueError(f"layer {self.name!r} is not built yet: its weights do not exist")
        return int(sum(w.size for w in self.get_weights()))

    def get_weights(self):
        """Copies of the weights in Keras's layout and order."""
        return [np.array(w, copy=True) for w in self._keras_weights()]

    def set_weights(self, weights):
        """Loads arrays in Keras's layout and order (as Keras's get_weights gives them); each
        Parameter written has its version bumped."""
        if not self.built:
            raise ValueError(f"layer {self.name!r} is not built yet: call it on data (or build it) first")
        expected = self._keras_weights()
        weights = list(weights)
        if len(weights) != len(expected):
            raise ValueError(f"layer {self.name!r} expects {len(expected)} weight arrays, got {len(weights)}")
        arrays = []
        for index, (given, own) in enumerate(zip(weights, expected)):
            given = np.asarray(given)
            if given.shape != own.shape:
                raise ValueError(f"layer {self.name!r}, weight {index}: shape {given.shape} does not match "
                                 f"the layer's {own.shape}")
            arrays.append(given.astype(own.dtype))   # a sublayer's dtype may differ from this layer's
        self._load_keras_weights(arrays)

    # -- weights, in the subclass's layout -------------------------------------------------------
    def _add_param(self, name, value):
        self._params[name] = Parameter(np.ascontiguousarray(value, dtype=self.dtype), self.trainable)
        return self._params[name]

    def _keras_weights(self, attribute="data"):
        """The weights as Keras lays them out (may be views; get_weights copies); with
        attribute="grad", their gradients laid out the same way."""
        return [getattr(param, attribute) for param in self._params.values()] + [
            array for layer in self._sublayers for array in layer._keras_weights(attribute)]

    def _load_keras_weights(self, arrays):
        """Writes arrays laid out as _keras_weights gives them (checked by set_weights)."""
        own = len(self._params)
        for param, array in zip(self._params.values(), arrays[:own]):
            param.data = np.ascontiguousarray(array)
        start = own
        for layer in self._sublayers:
            count = len(layer._keras_weights())
            layer._load_keras_weights(arrays[start:start + count])
            start += count

    # -- running ---------------------------------------------------------------------------------
    def forward(self, x, mask=None, training=False):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def backward_weights_only(self, grad):
        """What backward(grad) adds to the weights' gradients, where nothing needs the input's (a
        model's first layer with weights: its input is the data). This default runs backward and
        drops the input's gradient; layers whose input gradient is a product of its own (Dense,
        the recurrent layers) skip that product."""
        self.backward(grad)

    def _save(self, training, *values):
        # An inference forward forgets the previous training one: a later backward would
        # otherwise differentiate an input other than the one just seen.
        self._saved = values if training else None

    def _take_saved(self):
        if self._saved is None:
            raise RuntimeError(f"{self.name}.backward: nothing to differentiate; run the layer in "
                               "training mode first (backward runs once per forward)")
        saved, self._saved = self._saved, None
        return saved

    def _float_input(self, x):
        """The input as an array of the layer's dtype (Keras casts inputs to the layer's dtype)."""
        return np.asarray(x, dtype=self.dtype)

    def _ensure_built(self, input_shape):
        if not self.built:
            self.build(tuple(input_shape))
            self.built = True

    def __call__(self, inputs, *args, mask=None, training=None, **kwargs):
        if isinstance(inputs, KerasTensor):
            return self._symbolic_call(inputs, *args, **kwargs)
        inputs = np.asarray(inputs)
        self._ensure_built(inputs.shape)
        outputs, _ = self.forward(inputs, mask, bool(training), *args, **kwargs)
        return outputs

    def _symbolic_call(self, inputs, *args, **kwargs):
        if args or kwargs:
            raise NotImplementedError(f"{self.name}: extra arguments in a functional-API call are not "
                                      "supported (a single-input chain only)")
        self._ensure_built(inputs.shape)
        shapes = self.compute_output_shape(inputs.shape)
        if isinstance(shapes, list):
            return [KerasTensor(shape, self.dtype, self, inputs, index) for index, shape in enumerate(shapes)]
        return KerasTensor(shapes, self.dtype, self, inputs)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


class InputLayer(Layer):
    """The input of a model: holds its shape; passes data through unchanged."""

    def __init__(self, shape=None, batch_size=None, dtype=None, batch_shape=None, name=None, **kwargs):
        if "input_shape" in kwargs:   # Keras 2's spelling
            shape = kwargs.pop("input_shape")
        if batch_shape is None:
            if shape is None:
                raise ValueError("InputLayer needs shape= (or batch_shape=)")
            batch_shape = (batch_size,) + tuple(shape)
        super().__init__(name=name, **kwargs)
        self.batch_shape = tuple(batch_shape)
        self.input_dtype = np.dtype("float32" if dtype is None else dtype)
        self.built = True
        self.output = KerasTensor(self.batch_shape, self.input_dtype, self)

    def forward(self, x, mask=None, training=False):
        return x, mask

    def backward(self, grad):
        return grad


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None, **kwargs):
    """A symbolic input: ``Input(shape=(T, F))`` (the batch dimension left out)."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, batch_shape=batch_shape,
                      name=name, **kwargs).output

"""Model and Sequential: the container of a chain of layers; training comes from Trainer.

``Sequential([...])`` (or ``.add``) and the functional ``Model(inputs, outputs)`` of a
single-input chain of layers are the same thing here: the layers run in order, passing masks
along as Keras does, and backward runs through them in reverse. A model is a Layer, so a model
can be one layer of another. compile, fit, evaluate, predict and train_step live in
``trainer.py``.
"""

import os

from . import saving
from .layers.base import InputLayer, KerasTensor, Layer, unique_name
from .trainer import Trainer, as_input_array

__all__ = ["Model", "Sequential"]


def _format_shape(shape):
    return f"({', '.join('None' if s is None else str(s) for s in shape)})" if shape is not None else "?"


class Model(Trainer, Layer):
    """A single-input chain of layers: ``Model(inputs, outputs)`` with ``inputs = Input(...)``
    and ``outputs`` the result of calling layers one after another on it.

    A model is a Layer too: it can be a layer of another model (``Sequential([inner, Dense(1)])``,
    or ``outputs = Dense(1)(inner(inputs))``). Its weights are its layers', in order; setting its
    ``trainable`` sets theirs.
    """

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True):
        self._layers = []
        self._input_layer = None
        default_name = "sequential" if isinstance(self, Sequential) else "functional"
        Layer.__init__(self, name=name or unique_name(default_name), trainable=trainable)
        Trainer.__init__(self)
        if isinstance(self, Sequential):
            return
        if inputs is None or outputs is None:
            raise TypeError("Model needs inputs and outputs (the functional API): Model(inputs=Input(...), "
                            "outputs=...); subclassed models are not supported")
        self._init_chain(inputs, outputs)
        if not trainable:
            self.trainable = False   # freezes the layers too, as Keras does

    def _init_chain(self, inputs, outputs):
        def single(value, what):
            if isinstance(value, (list, tuple)):
                if len(value) != 1:
                    raise NotImplementedError(f"a model with several {what} is not supported (a single chain only)")
                value = value[0]
            if not isinstance(value, KerasTensor):
                raise TypeError(f"{what} must come from fusedrnn.keras.Input and its layers, got "
                                f"{type(value).__name__}")
            return value

        inputs, tensor = single(inputs, "inputs"), single(outputs, "outputs")
        chain = []
        while not isinstance(tensor.layer, InputLayer):
            if tensor.index != 0:
                raise NotImplementedError(f"the model uses a returned state of {tensor.layer.name}: only "
                                          "a single chain of layer outputs is supported")
            chain.append(tensor.layer)
            tensor = tensor.parent
        if tensor is not inputs:
            raise ValueError("outputs were not computed from inputs")
        self._set_input(inputs.layer)
        self._layers = chain[::-1]

    def _set_input(self, input_layer):
        self._input_layer = input_layer
        # As for a layer given input_shape=: a Sequential that starts with this model takes it.
        self._batch_input_shape = input_layer.batch_shape

    # -- structure ----------------------------------------------------------------------------------
    @property
    def layers(self):
        return list(self._layers)

    @property
    def _sublayers(self):
        return tuple(self._layers)

    @property
    def built(self):
        return bool(self._layers) and all(layer.built for layer in self._layers)

    @built.setter
    def built(self, value):
        """Layer's code sets a layer's flag; a model's follows from its layers instead."""

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self._layers[index]
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; layers: {[layer.name for layer in self._layers]}")

    def _shapes(self, input_shape):
        """Each layer's output shape for an input of input_shape (building what is unbuilt)."""
        if not self._layers:
            raise ValueError(f"model {self.name!r} has no layers")
        shapes, shape = [], tuple(input_shape)
        for layer in self._layers:
            layer._ensure_built(shape)
            shape = layer.compute_output_shape(shape)
            if isinstance(shape, list):
                raise NotImplementedError(f"layer {layer.name} returns several outputs (return_state, or "
                                          "Bidirectional with merge_mode=None): not supported inside a model")
            shapes.append(shape)
        return shapes

    def build(self, input_shape=None):
        """Creates every layer's weights for inputs of ``input_shape`` (batch dimension included,
        None allowed), or of the Input's shape."""
        if not self._layers:
            raise ValueError(f"model {self.name!r} has no layers")
        if input_shape is None:
            if self._input_layer is None:
                raise ValueError("build needs input_shape (this model has no Input)")
            input_shape = self._input_layer.batch_shape
        else:
            input_shape = tuple(input_shape)
            if self._input_layer is None:
                self._set_input(InputLayer(batch_shape=input_shape))
        self._shapes(input_shape)

    def _ensure_built(self, input_shape):
        """Builds the model for inputs of input_shape at the first data (or the first call of
        an enclosing model), for any batch size."""
        if not self.built:
            self.build((None,) + tuple(input_shape[1:]))

    def compute_output_shape(self, input_shape):
        return self._shapes(input_shape)[-1]

    @property
    def input_shape(self):
        return None if self._input_layer is None else self._input_layer.batch_shape

    @property
    def output_shape(self):
        return self._shapes(self.input_shape)[-1] if self.input_shape is not None else None

    def _check_built(self):
        if not self.built:
            raise ValueError(f"model {self.name!r} is not built: give it an Input (or input_shape), call it "
                             "on data, or build(input_shape) first")

    def set_weights(self, weights):
        """Loads a list like Keras's ``model.get_weights()`` (every layer's weights in order, a
        nested model's as its layers'), each layer checking its own."""
        self._check_built()
        weights = list(weights)
        counts = [len(layer._keras_weights()) for layer in self._layers]
        if len(weights) != sum(counts):
            raise ValueError(f"model {self.name!r} has {sum(counts)} weight arrays, got {len(weights)}")
        start = 0
        for layer, count in zip(self._layers, counts):
            layer.set_weights(weights[start:start + count])
            start += count

    def reset_states(self):
        """Zeroes the states of every stateful layer."""
        for layer in self._layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    reset_state = reset_states

    # -- running --------------------------------------------------------------------------------------
    def forward(self, x, mask=None, training=False):
        """Runs the layers in order on x, passing masks along; returns (output, output mask)."""
        for layer in self._layers:
            x, mask = layer.forward(x, mask, training)
            if isinstance(x, list):
                raise NotImplementedError(f"layer {layer.name} returns several outputs: not supported inside a model")
        return x, mask

    def backward(self, grad, layer_done=None, input_grad=True):
        """Backward through the layers, last to first, from the last training-mode forward;
        returns the input's gradient (None for integer inputs). ``layer_done(layer)`` runs after
        each layer's backward, when its weights' gradients are final (data-parallel training
        starts sending them then).

        ``input_grad=False`` (fit's steps: the input is the data) returns None and computes only
        what the weights' gradients need: the layers in front of the first one with trainable
        weights are skipped, and that one computes no input gradient (an LSTM reading the data
        then leaves out a sixth of its backward's multiply-adds when its input is as wide as it)."""
        layers = self._layers
        first = 0 if input_grad else next((i for i, layer in enumerate(layers) if layer.trainable_weights),
                                          len(layers))
        for layer in layers[:first]:
            layer._save(False)   # (what their forward kept is not needed)
        for index in reversed(range(first, len(layers))):
            layer = layers[index]
            if index == first and not input_grad:
                layer.backward_weights_only(grad)
                grad = None
            else:
                grad = layer.backward(grad)
            if layer_done is not None:
                layer_done(layer)
            if grad is None:   # integer inputs (an Embedding) end the chain
                break
        return grad if input_grad else None

    def __call__(self, inputs, training=None, mask=None):
        """On data: the model's output (in inference mode unless training=True). On a
        KerasTensor: the model as one layer of a functional model being defined."""
        if isinstance(inputs, KerasTensor):
            return self._symbolic_call(inputs)
        x = as_input_array(inputs)
        self._ensure_built(x.shape)
        y, _ = self.forward(x, mask, bool(training))
        return y

    # -- weights files ------------------------------------------------------------------------------------
    def save_weights(self, filepath, overwrite=True):
        """Writes the weights to `filepath`: Keras 3's HDF5 weights format when it ends in
        ``.h5`` (needs h5py; Keras's ``load_weights`` reads it), else a NumPy ``.npz`` archive
        (no pickle) at exactly that path whatever its suffix."""
        if not self.built:
            raise ValueError(f"model {self.name!r} is not built: there are no weights to save")
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(f"{filepath} exists and overwrite=False")
        saving.save_weights(self, filepath)

    def load_weights(self, filepath, skip_mismatch=False):
        """Loads weights saved by ``save_weights``, or by Keras (a Keras 3 ``.weights.h5`` file
        or a Keras 2 ``.h5`` weights file; needs h5py), into a model of the same architecture."""
        if skip_mismatch:
            raise NotImplementedError("skip_mismatch is not supported")
        self._check_built()
        saving.load_weights(self, filepath)

    # -- summary ---------------------------------------------------------------------------------------
    def _summary_rows(self, expand_nested, indent=""):
        """(layer (type), output shape, parameter count) per layer; a nested model's layers
        follow its row, indented, with expand_nested."""
        if self.built and self._input_layer is not None:
            shapes = [_format_shape(s) for s in self._shapes(self._input_layer.batch_shape)]
        else:
            shapes = ["?"] * len(self._layers)
        rows = []
        for layer, shape in zip(self._layers, shapes):
            rows.append((f"{indent}{layer.name} ({type(layer).__name__})", shape,
                         f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"))
            if expand_nested and isinstance(layer, Model):
                rows += layer._summary_rows(expand_nested, indent + "  ")
        return rows

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False,
                layer_range=None):
        """Prints a table of the layers (type, output shape, parameters) and the totals;
        ``expand_nested=True`` lists the layers of nested models too."""
        print_fn = print_fn or print
        rows = self._summary_rows(expand_nested)
        header = ("Layer (type)", "Output Shape", "Param #")
        widths = [max(len(header[i]), *(len(row[i]) for row in rows)) + 2 for i in range(3)] if rows else [14, 14, 9]
        line = "-" * sum(widths)

        def fmt(row):
            return row[0].ljust(widths[0]) + row[1].ljust(widths[1]) + row[2].rjust(widths[2])

        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        print_fn(fmt(header))
        print_fn("=" * sum(widths))
        for row in rows:
            print_fn(fmt(row))
        print_fn(line)
        # Counted over the Parameters, so that a layer frozen inside a nested model counts as
        # frozen (their sizes add up to those of Keras's weights).
        total = sum(w.size for w in self.weights)
        trainable = sum(w.size for w in self.trainable_weights)
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {total - trainable:,}")


class Sequential(Model):
    """A linear stack of layers: ``Sequential([Input((T, F)), LSTM(32), Dense(1)])``, or layers
    ``add``-ed one by one. The first layer may carry Keras-2 style ``input_shape=(T, F)``; without
    any input shape the model is built at its first call on data."""

    def __init__(self, layers=None, trainable=True, name=None):
        super().__init__(name=name, trainable=trainable)
        for layer in layers or []:
            self.add(layer)
        if not trainable:
            self.trainable = False   # freezes the layers too, as Keras does

    def add(self, layer):
        """Appends a layer (or a model) to the stack, building it when the input shape is known."""
        if isinstance(layer, KerasTensor) and isinstance(layer.layer, InputLayer):
            layer = layer.layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError("an Input can only be the first entry of a Sequential model")
            self._set_input(layer)
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add takes a layer, got {type(layer).__name__}")
        if layer is self:
            raise ValueError("a model cannot be a layer of itself")
        if not self._layers and self._input_layer is None and layer._batch_input_shape is not None:
            self._set_input(InputLayer(batch_shape=layer._batch_input_shape))
        self._layers.append(layer)
        if self._input_layer is not None:
            self._shapes(self._input_layer.batch_shape)   # builds the new layer, as Keras does

    def pop(self):
        if not self._layers:
            raise TypeError("there are no layers in the model")
        return self._layers.pop()

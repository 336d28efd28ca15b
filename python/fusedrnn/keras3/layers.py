"""Keras 3's SimpleRNN, LSTM, GRU, RNN (of their cells) and Bidirectional on the fused kernels.

Each class here is a subclass of Keras's own with nothing changed but its loop: the same
arguments, cell, variables (``kernel``, ``recurrent_kernel``, ``bias``, in Keras's layout), state
handling, dropout masks and return modes, because all of that is Keras's code. Only
``inner_loop`` is replaced, by one call of the kernels (:mod:`fusedrnn.keras3._dispatch`), and it
hands the call back to Keras's own loop where the kernels don't serve it (see
``_dispatch.fusable``).

Saving: the layers serialize exactly as Keras's own classes do (``"module": "keras.layers"``,
``"class_name": "LSTM"``), so a ``.keras`` file saved with them is a plain Keras file and loads
anywhere; it loads back as Keras's classes, which run the kernels after
:func:`fusedrnn.keras3.enable`, or become these classes with :func:`convert` (Keras's
``custom_objects`` cannot replace its own classes). For the same reason Keras's
``Bidirectional``, which rebuilds its two layers from their config, would rebuild Keras's classes:
:class:`Bidirectional` here keeps the wrapped layer's class.
"""

import keras
from keras.src import api_export

from . import _dispatch

__all__ = ["SimpleRNN", "LSTM", "GRU", "RNN", "Bidirectional", "convert"]

#: Keras's classes' own loops (before any enable()), which the fallback runs. (LSTM's and GRU's
#: own loop ends in RNN's, RNN.inner_loop, which the fused one of RNN then replaces: it finds the
#: same call unfit for the kernels and runs RNN's own.)
STOCK_INNER_LOOPS = {cls: cls.inner_loop
                     for cls in (keras.layers.SimpleRNN, keras.layers.LSTM, keras.layers.GRU, keras.layers.RNN)}


def run_inner_loop(layer, stock_class, sequences, initial_state, mask, training):
    """The kernels where they serve this call, else `stock_class`'s own loop."""
    result = _dispatch.inner_loop(layer, sequences, initial_state, mask, training)
    if result is None:
        result = STOCK_INNER_LOOPS[stock_class](layer, sequences, initial_state, mask=mask, training=training)
    return result


def _serialize_as(cls, stock_class):
    """Files name `cls` as `stock_class` (see the module's notes). Keras looks a class's public name
    up in this table when it serializes an object; only this direction is added, so loading
    `stock_class`'s name still gives `stock_class`."""
    api_export.REGISTERED_OBJS_TO_NAMES[cls] = api_export.get_name_from_symbol(stock_class)
    return cls


class SimpleRNN(keras.layers.SimpleRNN):
    __doc__ = f"""Keras's SimpleRNN (tanh or relu) on the fused kernels.\n\n{keras.layers.SimpleRNN.__doc__}"""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        return run_inner_loop(self, keras.layers.SimpleRNN, sequences, initial_state, mask, training)


class LSTM(keras.layers.LSTM):
    __doc__ = f"""Keras's LSTM on the fused kernels.\n\n{keras.layers.LSTM.__doc__}"""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        return run_inner_loop(self, keras.layers.LSTM, sequences, initial_state, mask, training)


class GRU(keras.layers.GRU):
    __doc__ = f"""Keras's GRU (both ``reset_after`` forms) on the fused kernels.\n\n{keras.layers.GRU.__doc__}"""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        return run_inner_loop(self, keras.layers.GRU, sequences, initial_state, mask, training)


class RNN(keras.layers.RNN):
    __doc__ = f"""Keras's RNN on the fused kernels when its cell is Keras's own ``SimpleRNNCell``, ``LSTMCell``
    or ``GRUCell`` (the same loop as the layer of that cell), or a list of them (run as that many
    layers); any other cell runs Keras's loop.\n\n{keras.layers.RNN.__doc__}"""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        return run_inner_loop(self, keras.layers.RNN, sequences, initial_state, mask, training)


_FUSED_OF_STOCK = {keras.layers.SimpleRNN: SimpleRNN, keras.layers.LSTM: LSTM, keras.layers.GRU: GRU,
                   keras.layers.RNN: RNN}


class Bidirectional(keras.layers.Bidirectional):
    """Keras's Bidirectional, whose two layers keep the wrapped layer's class (Keras's own
    rebuilds them from their config, which names Keras's classes: see the module's notes).
    With :func:`fusedrnn.keras3.enable`, Keras's own Bidirectional runs the kernels as well."""

    def __init__(self, layer, *args, **kwargs):
        super().__init__(layer, *args, **kwargs)
        for inner in (self.forward_layer, self.backward_layer):
            # Safe: the fused classes add no attributes, only a method.
            if type(inner) in _FUSED_OF_STOCK and isinstance(layer, tuple(_FUSED_OF_STOCK.values())):
                inner.__class__ = _FUSED_OF_STOCK[type(inner)]


_FUSED_OF_STOCK_OR_WRAPPER = {**_FUSED_OF_STOCK, keras.layers.Bidirectional: Bidirectional}


def convert(model):
    """Switches Keras's SimpleRNN, LSTM, GRU, RNN and Bidirectional layers inside `model` (a layer or
    model, e.g. one ``keras.models.load_model`` gave) to these classes, in place, keeping their
    weights and state; returns `model`. (On JAX, a model that already compiled a step keeps it
    until it is compiled again.)"""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"convert needs a Keras layer or model, got {type(model).__name__}")
    for layer in model._flatten_layers(include_self=True, recursive=True):
        fused = _FUSED_OF_STOCK_OR_WRAPPER.get(type(layer))
        if fused is not None:
            layer.__class__ = fused   # safe: the fused classes add no attributes, only methods
    return model


for _stock, _fused in _FUSED_OF_STOCK_OR_WRAPPER.items():
    _serialize_as(_fused, _stock)

"""One Keras 3 recurrent layer's whole loop on the fused kernels, or None where they don't serve it.

Keras's ``RNN.call`` prepares the initial state (stateful or not), the dropout masks and the return
modes, and calls ``inner_loop(sequences, initial_state, mask, training)`` for the loop itself,
which returns ``(last_output, outputs, states)``. :func:`inner_loop` here is that loop as one call
of the uniform op (:mod:`fusedrnn.functional`), through the backend's adapter:
:mod:`._torch_backend` (the ``fusedrnn.torch`` operators, PyTorch's autograd) or
:mod:`._jax_backend` (``jax.custom_vjp`` around the host kernels). Everything here is written with
``keras.ops``, so it is the same code on both backends; it owns no math, only the mapping:

- Keras's weights to PyTorch's layout: ``kernel (I, G*H)`` -> ``weight_ih (G*H, I)``,
  ``recurrent_kernel (H, G*H)`` -> ``weight_hh``; gates LSTM i,f,c,o = the kernels' i,f,g,o, GRU
  z,r,h -> r,z,n; ``bias (G*H,)`` is ``bias_ih`` (SimpleRNN, LSTM and the reset-before GRU have
  no second bias); the reset-after GRU's ``bias (2, 3H)`` is ``bias_ih`` then ``bias_hh``. These
  are views/small copies inside the framework's graph, so gradients flow back to Keras's variables.
- batch-major ``(B, T, I)`` to time-major, ``go_backwards`` as the flipped sequence (Keras's
  outputs are then in the order processed, as its own loop gives them), the ``(B, T)`` mask to
  ``(T, B)``; a masked step repeats the last output, or is zero with ``zero_output_for_mask``.
- dropout: the mask Keras drew for this call (``cell.get_dropout_mask``) multiplies the inputs
  (in a stack of cells, each cell's its own input), which is what Keras's cell does when one mask
  serves all gates; SimpleRNN's recurrent dropout mask is the op's ``recurrent_scale``.

What the kernels don't serve returns None, and the caller runs Keras's own loop (see
:func:`fusable` for the list).
"""

import keras
from keras import activations, ops

from fusedrnn import functional as F

# Keras's gate order inside each fused kernel's gate order: ours[k] is Keras's gate ORDER[k].
_GRU_GATES = (1, 0, 2)   # the kernels' r, z, n are Keras's z, r, h at 1, 0, 2

_BACKENDS = ("torch", "jax")


def _stacked(layer):
    """Whether the layer's cell is a ``StackedRNNCells`` (what ``RNN([cell, cell, ...])`` makes of
    a list)."""
    return type(layer.cell) is keras.layers.StackedRNNCells


def _cells(layer):
    """The layer's cells in order: its cell, or the cells of its stack."""
    return list(layer.cell.cells) if _stacked(layer) else [layer.cell]


def _cell_name(cell):
    """The kernels' cell for one of Keras's own three cells, or None (a generic RNN layer's cell
    can be anything)."""
    kind = type(cell)
    tanh, sigmoid, relu = activations.get("tanh"), activations.get("sigmoid"), activations.get("relu")
    if kind is keras.layers.SimpleRNNCell:
        return {tanh: "rnn_tanh", relu: "rnn_relu"}.get(cell.activation)
    if kind not in (keras.layers.LSTMCell, keras.layers.GRUCell):
        return None
    if cell.activation is not tanh or cell.recurrent_activation is not sigmoid:
        return None
    if kind is keras.layers.LSTMCell:
        return "lstm"
    return "gru" if cell.reset_after else "gru_reset_before"


def _exporting_to_onnx():
    # (On the torch backend, Keras's export to ONNX is torch.onnx.export: the file then holds
    # Keras's own loop, which runs without fusedrnn, where the kernels' operators have no ONNX form.)
    if keras.backend.backend() != "torch":
        return False
    import torch
    return torch.onnx.is_in_onnx_export()


def _on_cpu(sequences):
    if keras.backend.backend() == "torch":
        return sequences.device.type == "cpu"
    import jax
    return jax.default_backend() == "cpu"


_NARROW = ("bfloat16", "float16")


def _kernel_dtype(layer, sequences):
    """The dtype the kernels compute this call in, or None where they can't.

    float32 and float64 as they are. A bfloat16 or float16 layer (a mixed-precision policy, its
    variables float32, or a narrow one) computes in float32 from the inputs, states and weights as
    that dtype has them, and Keras's ``RNN.call`` rounds the results to it: where Keras's loop
    rounds every step's products and states, the kernels round once at the end."""
    compute = layer.compute_dtype
    if keras.backend.standardize_dtype(sequences.dtype) != compute:
        return None
    if compute in ("float32", "float64"):
        return compute if layer.variable_dtype == compute else None
    if compute in _NARROW and layer.variable_dtype in _NARROW + ("float32",):
        return "float32"
    return None


def fusable(layer, sequences, training):
    """Why the kernels can't run this call (a short phrase), or None when they can.

    Keras's own loop runs: on another backend than torch or JAX; with ``unroll=True``; with a cell
    the kernels don't have (other activations than SimpleRNN's tanh/relu and LSTM/GRU's
    tanh/sigmoid, or a cell subclass), anywhere in a stack of cells; off the CPU; for a dtype
    :func:`_kernel_dtype` refuses; in an export to ONNX (torch backend); and in training with
    LSTM/GRU recurrent dropout or ``implementation=1`` input dropout (Keras then draws a different
    mask per gate, which the kernels' one recurrent scale cannot express), in any cell of a stack.
    """
    if keras.backend.backend() not in _BACKENDS:
        return f"the {keras.backend.backend()} backend"
    if layer.unroll:
        return "unroll=True"
    cells = _cells(layer)
    if any(_cell_name(cell) is None for cell in cells):
        return "a cell or activation the kernels don't have"
    if _stacked(layer) and len(cells) < 2:
        return "a stack of one cell"   # (Keras's loop unwraps its states)
    if _kernel_dtype(layer, sequences) is None:
        return "a dtype the kernels don't take"
    if len(sequences.shape) != 3 or not sequences.shape[0] or not sequences.shape[1]:
        return "an empty or non-3D input"
    if not _on_cpu(sequences):
        return "a tensor off the CPU"
    if _exporting_to_onnx():
        return "an export to ONNX"
    for cell in cells if training else ():
        per_gate = type(cell) is not keras.layers.SimpleRNNCell and getattr(cell, "implementation", 2) == 1
        if 0.0 < cell.recurrent_dropout < 1.0 and per_gate:
            return "recurrent dropout of LSTM or GRU (a mask per gate)"
        if 0.0 < cell.dropout < 1.0 and per_gate:
            return "input dropout with implementation=1 (a mask per gate)"
        if cell.dropout >= 1.0 or cell.recurrent_dropout >= 1.0:
            return "dropout of 1"
    return None


# -- Keras's weights in PyTorch's layout ---------------------------------------------------------

def _gates_in_our_order(tensor, units, order):
    """The last axis's gate blocks reordered (None: already in order)."""
    tensor = ops.convert_to_tensor(tensor)   # a variable's current value (JAX: the traced one)
    if order is None:
        return tensor
    return ops.concatenate([tensor[..., g * units:(g + 1) * units] for g in order], axis=-1)


def torch_layout_weights(cell, cell_name):
    """Keras cell's variables -> the uniform op's weights dict (tensors of the backend)."""
    units = cell.units
    order = _GRU_GATES if cell_name.startswith("gru") else None
    weights = dict(
        weight_ih=ops.transpose(_gates_in_our_order(cell.kernel, units, order)),
        weight_hh=ops.transpose(_gates_in_our_order(cell.recurrent_kernel, units, order)),
        bias_ih=None, bias_hh=None)
    if cell.use_bias:
        bias = _gates_in_our_order(cell.bias, units, order)
        if cell_name == "gru":          # reset_after: (2, 3H), the input bias then the recurrent one
            weights["bias_ih"], weights["bias_hh"] = bias[0], bias[1]
        else:
            weights["bias_ih"] = bias
    return weights


# -- the loop ------------------------------------------------------------------------------------

def _adapter():
    if keras.backend.backend() == "torch":
        from . import _torch_backend as adapter
    else:
        from . import _jax_backend as adapter
    return adapter


def inner_loop(layer, sequences, initial_state, mask, training):
    """``RNN.inner_loop`` on the kernels: ``(last_output, outputs, states)``, or None when
    :func:`fusable` says they can't run it. A stack of cells runs as that many layers, one after
    the other on the whole sequence: the same values as Keras's step through the stack (a masked
    step leaves every cell's state as it was, so what a lower layer outputs there is never read)."""
    if fusable(layer, sequences, training) is not None:
        return None
    cells = _cells(layer)
    stacked = _stacked(layer)
    dtype = _kernel_dtype(layer, sequences)

    def to_kernel(tensor):   # (RNN.call casts what this returns to the layer's compute dtype)
        return tensor if tensor is None or dtype == layer.compute_dtype else ops.cast(tensor, dtype)

    if isinstance(mask, (list, tuple)):
        mask = mask[0]
    x = to_kernel(ops.transpose(sequences, (1, 0, 2)))
    if mask is not None:
        mask = ops.transpose(ops.cast(mask, "bool"), (1, 0))
    if layer.go_backwards:   # Keras walks the flipped sequence and returns outputs in that order
        x = ops.flip(x, 0)
        mask = None if mask is None else ops.flip(mask, 0)
    # Each cell's states as given: a list ([h] or [h, c]), or (in a stack) a cell's one tensor;
    # each cell's final states go back in the same form, as Keras's loop returns them.
    final = []
    for cell, given in zip(cells, initial_state if stacked else [initial_state]):
        cell_name = _cell_name(cell)
        listed = isinstance(given, (list, tuple))
        given = list(given) if listed else [given]
        h0 = to_kernel(given[0])
        c0 = to_kernel(given[1]) if F.CELLS[cell_name].has_cell_state else None
        # The masks RNN.call drew for this call (each cell's own, one per sequence, the same at
        # every step): the input's multiplies the cell's input, as Keras's cell does when one mask
        # serves all gates; the recurrent one is the kernels' recurrent scale (see fusable).
        if training and 0.0 < cell.dropout < 1.0:
            x = x * ops.expand_dims(to_kernel(cell.get_dropout_mask(x[0])), 0)
        recurrent_scale = None
        if training and 0.0 < cell.recurrent_dropout < 1.0:
            recurrent_scale = to_kernel(cell.get_recurrent_dropout_mask(h0))
        weights = {name: to_kernel(w) for name, w in torch_layout_weights(cell, cell_name).items()}
        y, h_n, c_n = _adapter().recurrent(
            cell_name, x, h0, c0, weights, mask=mask,
            masked_output="zero" if layer.zero_output_for_mask else "repeat", recurrent_scale=recurrent_scale)
        states = [h_n] if c_n is None else [h_n, c_n]
        final.append(states if listed else h_n)
        x = y   # (the next cell's input)
    # Without a mask the last output is h_n, the same values: a model that keeps only it then gives
    # the backward no gradient of y to build (a (T, B, P) tensor of zeros but for its last step),
    # which cost 3-4% of an LSTM/GRU/RNN layer's forward and backward at T=100, B=64, H=128 with
    # PyTorch. With a mask, y[-1] can differ (zero, or a sequence masked throughout).
    last = h_n if mask is None else y[-1]
    return last, ops.transpose(y, (1, 0, 2)), final if stacked else final[0]

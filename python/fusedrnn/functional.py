"""Forward and backpropagation through time of one recurrent layer, on the native kernels.

One op serves every cell and every front end::

    y, h_n, c_n, saved = recurrent_forward(cell, x, h0, c0, weights, ...)
    dx, dh0, dc0, dweights = recurrent_backward(dy, dh_n, dc_n, saved)

``cell`` is a name of the cell table :data:`CELLS` (read from the native module): ``"rnn_tanh"``,
``"rnn_relu"``, ``"lstm"``, ``"gru"`` (linear-before-reset, PyTorch's) or ``"gru_reset_before"``
(Keras's ``reset_after=False``). ``weights`` maps ``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh`` and ``weight_hr`` to arrays (an absent or None bias is zero; ``weight_hr`` is the
LSTM's projection); ``dweights`` has those five keys, None where the weight was absent. Results
have the same shape for every cell: ``c0``, ``c_n`` and ``dc0`` are None for cells without a
cell state. ``rnn_forward``, ``lstm_forward``, ``gru_forward`` and their backwards are thin
wrappers with one signature per cell.

Letters: T time steps, B batch, I input size, H hidden size, G gates (``CELLS[cell].gates``), P
the size of h (H, or the projection's size). Arrays are time-major: ``x`` is ``(T, B, I)``.
Weights are laid out exactly as PyTorch's: ``weight_ih (G*H, I)``, ``weight_hh (G*H, P)``,
``bias_ih (G*H,)``, ``bias_hh (G*H,)``, ``weight_hr (P, H)``; gate order LSTM ``i, f, g, o``, GRU
``r, z, n`` (linear-before-reset: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``). The math of
each cell is written out in :mod:`fusedrnn._reference`, which has the same functions with the
same signatures and is the spec these kernels are tested against.

Variable lengths: ``lengths`` (B integers in ``[0, T]``) makes sequence ``b`` run over its first
``lengths[b]`` steps; after them its state is carried unchanged and its outputs are zero. With
``reverse=True`` each sequence is processed from its own last valid step back to step 0. The
sequences that take no step are left out of its products and GEMMs, so the call's time follows
the steps taken: as they come when sorted longest first (a PackedSequence's order), and in any
order (or with a mask of padded sequences, padded at either end) once the CPU kernels have copied
the batch into that order and back, which they do where it saves more than the copies cost.

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
1e-2. Not with a projection, recurrent dropout, or ``reset_after=False``. With it,
:func:`recurrent_forward`'s ``bf16_projections=True`` rounds x and W_ih to bfloat16 for the input
projections too (float32 sums), a product that the instruction runs at twice float32's rate: the
bf16 compute mode that PyTorch's bfloat16 autocast asks for (:mod:`fusedrnn.torch.nn`).

Packed weights (``packed=``, a :class:`PackedWeights`): every call packs the weights into the
kernels' layout first; a handle passed to every call keeps them packed while they are unchanged
(its module says how it tells, from ``packed_version`` or a fingerprint). Results are bitwise the
same with and without one. A generation step (T = 1, B = 1, without bf16 weights, a projection or
``reset_after=False``) packs nothing: each product is then matrix-times-vector, which reads the
weights where they are, once; the handle goes unused.

Saved state cannot go stale: the backward reads ``x`` and the weights again, so a training
forward records a fingerprint of each (:class:`Saved`), and a backward after one of them was
changed in place raises ``RuntimeError`` naming it, as PyTorch does. (``lengths`` and ``mask`` are
copied.) A caller whose framework already tracks in-place changes may pass
``check_unchanged=False``.

Every function accepts arrays of any memory layout (they are made contiguous here), float32 or
float64, all of one dtype; a wrong argument raises ``ValueError`` or ``TypeError`` naming it.
Backward returns fresh arrays (gradients are written, never accumulated).

CUDA (a build with the backend, :mod:`fusedrnn.cuda`): when ``x`` is a device array (anything with
``__cuda_array_interface__``: :class:`fusedrnn.cuda.DeviceArray`, CuPy, PyTorch CUDA tensors; or
with DLPack's ``__dlpack__`` in CUDA memory; C-contiguous) the forward and its backward run on the GPU, read device inputs in place and return
device arrays; saved state stays on the device. ``bf16_weights`` is CPU-only, and the fingerprint
check of ``check_unchanged`` is not taken of device arrays.
"""

from collections import namedtuple

import numpy as np

from . import _arguments as args
from . import _core
from ._packed import PackedWeights
from . import cuda as _cuda_device

__all__ = [
    "CELLS", "CellInfo", "WEIGHT_NAMES", "PackedWeights", "Saved", "SavedMeta", "recurrent_forward", "recurrent_backward",
    "rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
]

CellInfo = namedtuple("CellInfo", "gates saved has_cell_state two_phase split_gradient")
CellInfo.__doc__ = """One cell's facts: gates G (rows of weight_ih per unit), values per unit that
forward saves for backward, whether the state has a cell value c besides h, whether a step needs
two recurrent products (the reset-before GRU), and whether the gradient reaching W_hh h differs
from the one reaching W_ih x."""

#: The cell table, as the native module defines it: name -> CellInfo, in the table's order.
CELLS = {name: CellInfo(**facts) for name, facts in _core.cell_info().items()}

#: The keys of a layer's weights, as PyTorch names them (without the layer suffix).
WEIGHT_NAMES = args.WEIGHT_NAMES

_MASKED_OUTPUTS = ("zero", "repeat")
# The inputs of a forward that its backward must find unchanged, Saved.ARRAY_NAMES's first ones:
# fingerprinted by the forward. (The biases are not read again, but a changed bias means a
# changed layer all the same, as in PyTorch; h0 and c0 are copied into the saved states.)
_CHECKED_INPUTS = ("x", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "recurrent_scale")

SavedMeta = namedtuple("SavedMeta", "cell reverse repeat_masked_output fingerprints")
SavedMeta.__doc__ = """The plain values of a Saved: the cell's name, the direction, whether masked
steps repeat the last output, and the fingerprints (ints) that the forward took of its inputs x,
weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, recurrent_scale (None for an absent one; None
altogether when not checked)."""


class Saved:
    """What a training-mode forward keeps for its backward: ``meta`` and ``arrays``.

    ``arrays`` is a tuple of arrays (or None where absent) in the order of ``Saved.ARRAY_NAMES``:

    - the inputs: ``x (T, B, I)``, ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (None
      where absent: their gradients are None then), ``weight_hr`` (or None), ``recurrent_scale
      (B, P)`` (or None), ``lengths (B,)`` int64 (or None), ``mask (T, B)`` uint8 (or None);
    - what the forward computed: ``gates (T, B, S*H)``, per time row the cell's S saved values per
      unit (``CELLS[cell].saved``); ``h (T+1, B, P)``, every state (time row t reads slot
      ``t + reverse`` and writes slot ``t + 1 - reverse``); ``c (T+1, B, H)`` likewise for cells
      with a cell state (else None); ``m (T, B, H)``, the cell's output before the projection
      (with ``weight_hr``; else None). Their sequences are in the order the kernels ran them,
      which with lengths or a mask may not be the batch's (the backward finds the same order).

    ``meta`` is a :class:`SavedMeta` of plain values. A framework may carry the arrays as its own
    tensors and rebuild the object for the backward: ``Saved(saved.meta, arrays)``, with anything
    ``numpy.asarray`` reads as the same arrays.
    """

    ARRAY_NAMES = _CHECKED_INPUTS + ("lengths", "mask", "gates", "h", "c", "m")
    __slots__ = ("meta", "arrays")

    def __init__(self, meta, arrays):
        if not isinstance(meta, SavedMeta):
            raise TypeError(f"meta must be a SavedMeta, got {type(meta).__name__}")
        arrays = tuple(arrays)
        if len(arrays) != len(self.ARRAY_NAMES):
            raise ValueError(f"a Saved holds {len(self.ARRAY_NAMES)} arrays ({', '.join(self.ARRAY_NAMES)}), "
                             f"got {len(arrays)}")
        self.meta = meta
        # (Device arrays of the CUDA backend stay where they are; NumPy arrays, the common case,
        # are told apart by type first, which costs less than asking for a device interface.)
        self.arrays = tuple(a if a is None or type(a) is np.ndarray or _cuda_device.is_device_array(a)
                            else np.asarray(a) for a in arrays)

    def __getitem__(self, name):
        """The array called `name` (one of ARRAY_NAMES), or None."""
        return self.arrays[self.ARRAY_NAMES.index(name)]

    @property
    def cell(self):
        return self.meta.cell

    def __repr__(self):
        x = self["x"]
        return f"Saved({self.meta.cell}, x {x.shape} {x.dtype}, reverse={self.meta.reverse})"


def _cell_info(cell):
    if not isinstance(cell, str) or cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    return CELLS[cell]


def _fingerprints(arrays):
    return tuple(None if a is None else _core.fingerprint(a) for a in arrays)


def recurrent_forward(cell, x, h0, c0, weights, *, lengths=None, mask=None, masked_output="zero",
                      reverse=False, training=True, recurrent_scale=None, bf16_weights=False,
                      bf16_projections=False, check_unchanged=True, packed=None, packed_version=None):
    """One recurrent layer in one direction, any cell.

    Args:
        cell: a name of :data:`CELLS`.
        x: ``(T, B, I)`` inputs.
        h0: ``(B, P)`` initial state, or None for zeros. c0: ``(B, H)`` initial cell state of a
            cell that has one (else None), or None for zeros.
        weights: dict with ``weight_ih (G*H, I)``, ``weight_hh (G*H, P)``, optionally ``bias_ih``,
            ``bias_hh (G*H,)`` and (LSTM) the projection ``weight_hr (P, H)``.
        lengths: ``(B,)`` integers in ``[0, T]``, or None for all T.
        mask: ``(T, B)`` booleans (instead of lengths): where a step is taken.
        masked_output: ``"zero"``, or ``"repeat"`` the last output at a masked step (Keras).
        reverse: process each sequence from its last valid step back to step 0.
        training: save what backward needs (otherwise ``saved`` is None).
        recurrent_scale: ``(B, P)`` recurrent dropout scale (see the module's notes), or None.
        bf16_weights: the recurrent products in bfloat16 (inference only; see the module's notes).
        bf16_projections: with bf16_weights, the input projections in bfloat16 too.
        check_unchanged: record fingerprints of x and the weights, so that the backward raises if
            one was changed in place in between.
        packed: a :class:`PackedWeights` that keeps this layer direction's packed weights from one
            call to the next, or None to pack them for this call alone.
        packed_version: with ``packed``, a hashable value the caller changes whenever it changes
            the weights' values (e.g. a tuple of their versions); None fingerprints the weights
            every call instead.

    Returns:
        ``(y (T, B, P), h_n (B, P), c_n (B, H) or None, saved)``; y is zero (or, with "repeat",
        the last output) where a sequence takes no step; saved is None unless training.
    """
    info = _cell_info(cell)
    weights = args.checked_weights(weights)
    if type(x) is not np.ndarray and _cuda_device.is_device_array(x):  # (the type first: hasattr costs more)
        return _forward_on_device(cell, info, x, h0, c0, weights, lengths=lengths, mask=mask,
                                  masked_output=masked_output, reverse=reverse, training=training,
                                  recurrent_scale=recurrent_scale, bf16_weights=bf16_weights,
                                  bf16_projections=bf16_projections)
    x = args.float_array(x, "x")
    if bf16_weights is not False or bf16_projections is not False:
        args.check_bf16(bf16_weights, info, x.dtype, training, weights["weight_hr"], recurrent_scale,
                        bf16_projections)
    args.no_cell_state(cell, info, c0, "c0")
    if x.ndim != 3:
        raise ValueError(f"x must have 3 dimensions (T, B, I), got shape {x.shape}")
    T, B, I = x.shape
    if T == 0:
        raise ValueError("x has T = 0 time steps: a sequence needs at least one step")
    G = info.gates
    H, P = args.sizes(cell, G, weights["weight_hh"], weights["weight_hr"])
    dtype = x.dtype
    # y and the input projections always; in training the saved values and states too.
    args.check_memory(cell, T * B * (P + G * H) + bool(training) * (T + 1) * B * (info.saved * H + 2 * P + 2 * H),
                      dtype.itemsize)
    if not isinstance(reverse, (bool, np.bool_)):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    if masked_output not in _MASKED_OUTPUTS:
        raise ValueError(f"masked_output must be 'zero' or 'repeat', got {masked_output!r}")
    repeat, in_place = masked_output == "repeat", None
    if packed is not None:
        if not isinstance(packed, PackedWeights):
            raise TypeError(f"packed must be a fusedrnn.functional.PackedWeights or None, got {type(packed).__name__}")
        in_place = _core.one_step_in_place(T, B, bool(bf16_weights), weights["weight_hr"] is not None, info.two_phase)
    elif packed_version is not None:
        raise ValueError("packed_version is the version of the weights a PackedWeights holds: pass packed too")

    def run(arrays):
        handle = None if packed is None else packed._for_call(arrays, packed_version, in_place)
        a = arrays  # (positional: the binding then matches no keyword names, a cost at every call)
        return _core.forward(cell, a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["w_hr"], a["b_ih"], a["b_hh"],
                             a["recurrent_scale"], a["lengths"], a["mask"], repeat, bool(reverse), bool(training),
                             bool(bf16_weights), handle, bool(bf16_projections))

    # The binding checks every array itself (dtype, shape, layout: bind.h), so a call of plain
    # C-contiguous arrays of x's dtype goes to it as they are; only when it refuses one do the
    # checks below run, to make the arrays contiguous or name the problem in the caller's terms.
    # (lengths and mask always take the checks: they are copied, since the backward reads them.)
    arrays = None
    if lengths is None and mask is None:
        arrays = dict(x=x, h0=h0, c0=c0, w_ih=weights["weight_ih"], w_hh=weights["weight_hh"],
                      w_hr=weights["weight_hr"], recurrent_scale=recurrent_scale, b_ih=weights["bias_ih"],
                      b_hh=weights["bias_hh"], lengths=None, mask=None)
        try:
            y, h_n, c_n, computed = run(arrays)
        except (TypeError, ValueError):
            arrays = None
    if arrays is None:
        arrays = dict(
            x=np.ascontiguousarray(x),
            h0=args.checked(h0, "h0", (B, P), dtype, optional=True),
            c0=args.checked(c0, "c0", (B, H), dtype, optional=True),
            w_ih=args.checked(weights["weight_ih"], "weight_ih", (G * H, I), dtype),
            w_hh=args.checked(weights["weight_hh"], "weight_hh", (G * H, P), dtype),
            w_hr=args.checked(weights["weight_hr"], "weight_hr", (P, H), dtype, optional=True),
            recurrent_scale=args.checked(recurrent_scale, "recurrent_scale", (B, P), dtype, optional=True),
            b_ih=args.checked(weights["bias_ih"], "bias_ih", (G * H,), dtype, optional=True),
            b_hh=args.checked(weights["bias_hh"], "bias_hh", (G * H,), dtype, optional=True),
            lengths=args.checked_lengths(lengths, T, B),
            mask=args.checked_mask(mask, T, B, lengths),
        )
        y, h_n, c_n, computed = run(arrays)
    if not training:
        return y, h_n, c_n, None
    inputs = tuple(arrays[key] for key in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "recurrent_scale"))
    meta = SavedMeta(cell=cell, reverse=bool(reverse), repeat_masked_output=repeat,
                     fingerprints=_fingerprints(inputs) if check_unchanged else None)
    return y, h_n, c_n, Saved(meta, inputs + (arrays["lengths"], arrays["mask"]) + tuple(computed))


def _forward_on_device(cell, info, x, h0, c0, weights, *, masked_output, reverse, training, **options):
    """recurrent_forward with a device x: the CUDA backend (fusedrnn/_cuda_op.py)."""
    from . import _cuda_op

    args.no_cell_state(cell, info, c0, "c0")
    if not isinstance(reverse, (bool, np.bool_)):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    if masked_output not in _MASKED_OUTPUTS:
        raise ValueError(f"masked_output must be 'zero' or 'repeat', got {masked_output!r}")
    y, h_n, c_n, computed, inputs, lengths, mask = _cuda_op.forward(
        cell, info, x, h0, c0, weights, masked_output=masked_output, reverse=reverse, training=training, **options)
    if not training:
        return y, h_n, c_n, None
    # (No fingerprints: that digest is taken on the host; see _cuda_op.)
    meta = SavedMeta(cell=cell, reverse=bool(reverse), repeat_masked_output=masked_output == "repeat",
                     fingerprints=None)
    return y, h_n, c_n, Saved(meta, inputs + (lengths, mask) + tuple(computed))


def _check_unchanged(saved):
    """Raises if an input the backward reads differs from what the forward read."""
    if saved.meta.fingerprints is None:
        return
    for name, before in zip(_CHECKED_INPUTS, saved.meta.fingerprints):
        array = saved[name]
        if before is not None and _core.fingerprint(np.ascontiguousarray(array)) != before:
            raise RuntimeError(f"{name} was modified in place after the forward pass that saved it for backward: "
                               "its gradients would be wrong. Run the forward again after changing it (or "
                               "change a copy).")


def recurrent_backward(dy, dh_n, dc_n, saved, *, want_dx=True):
    """Gradients of a :func:`recurrent_forward` run with ``training=True``.

    Args:
        dy: ``(T, B, P)`` gradient of y, or None for zeros.
        dh_n: ``(B, P)`` gradient of h_n, or None. dc_n: ``(B, H)`` gradient of c_n of a cell with
            a cell state, or None.
        saved: what the forward returned (or a :class:`Saved` rebuilt from its arrays).
        want_dx: False when nothing needs the input's gradient (the layer reads the data itself):
            dx is then None and not computed (its product is a sixth of a training
            step's multiply-adds when I = H).

    Returns:
        ``(dx (T, B, I) or None, dh0 (B, P), dc0 (B, H) or None, dweights)``: dweights maps every
        name of :data:`WEIGHT_NAMES` to the gradient of that weight, None where the forward had none.
    """
    if saved is None:
        raise ValueError("backward needs what a training-mode forward saved: this forward ran with "
                         "training=False, which saves nothing")
    if not isinstance(saved, Saved):
        raise TypeError(f"saved must be the object the forward returned, got {type(saved).__name__}")
    meta = saved.meta
    info = _cell_info(meta.cell)
    args.no_cell_state(meta.cell, info, dc_n, "dc_n")
    x = saved["x"]
    if type(x) is not np.ndarray and _cuda_device.is_device_array(x):
        from . import _cuda_op

        return _gradients(*_cuda_op.backward(dy, dh_n, dc_n, saved, info, want_dx))
    T, B, _ = x.shape
    G = info.gates
    H, P, dtype = saved["weight_hh"].shape[0] // G, saved["weight_hh"].shape[1], x.dtype
    grads = dict(dy=args.checked(dy, "dy", (T, B, P), dtype, optional=True),
                 dh_n=args.checked(dh_n, "dh_n", (B, P), dtype, optional=True),
                 dc_n=args.checked(dc_n, "dc_n", (B, H), dtype, optional=True))
    _check_unchanged(saved)
    return _gradients(*_core.backward(
        meta.cell, x, saved["weight_ih"], saved["weight_hh"], saved["weight_hr"], saved["recurrent_scale"],
        saved["lengths"], saved["mask"], meta.repeat_masked_output, meta.reverse,
        (saved["gates"], saved["h"], saved["c"], saved["m"]),
        want_db_ih=saved["bias_ih"] is not None, want_db_hh=saved["bias_hh"] is not None, want_dx=bool(want_dx),
        **grads))


def _gradients(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr):
    """A native backward's results (either backend) as recurrent_backward returns them."""
    return dx, dh0, dc0, dict(weight_ih=dw_ih, weight_hh=dw_hh, bias_ih=db_ih, bias_hh=db_hh, weight_hr=dw_hr)


# -- one signature per cell ---------------------------------------------------------------------

def _layer_weights(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr=None):
    return dict(weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh, weight_hr=weight_hr)


def _check_saved_cell(saved, cells, function):
    """The per-cell backwards accept only their own cells' saved state."""
    if isinstance(saved, Saved) and saved.meta.cell not in cells:
        raise ValueError(f"saved comes from a {saved.meta.cell} forward, not {function}'s ({', '.join(cells)})")


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
    y, h_n, _, saved = recurrent_forward(
        _rnn_cell(nonlinearity), x, h0, None, _layer_weights(weight_ih, weight_hh, bias_ih, bias_hh),
        lengths=lengths, mask=mask, masked_output=masked_output, reverse=reverse, training=training,
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
    _check_saved_cell(saved, ("rnn_tanh", "rnn_relu"), "rnn_backward")
    dx, dh0, _, dw = recurrent_backward(dy, dh_n, None, saved)
    return dx, dh0, dw["weight_ih"], dw["weight_hh"], dw["bias_ih"], dw["bias_hh"]


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
    return recurrent_forward(
        "lstm", x, h0, c0, _layer_weights(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr), lengths=lengths,
        mask=mask, masked_output=masked_output, reverse=reverse, training=training,
        recurrent_scale=recurrent_scale, bf16_weights=bf16_weights)


def lstm_backward(dy, dh_n, dc_n, saved):
    """Gradients of an :func:`lstm_forward`; dy ``(T, B, P)``, dh_n ``(B, P)``, dc_n ``(B, H)``
    may be None (zeros).

    Returns:
        ``(dx (T, B, I), dh0 (B, P), dc0 (B, H), dweight_ih (4H, I), dweight_hh (4H, P),
        dbias_ih (4H,) | None, dbias_hh (4H,) | None)``, and an eighth value, ``dweight_hr (P, H)``,
        when the forward had a projection.
    """
    _check_saved_cell(saved, ("lstm",), "lstm_backward")
    dx, dh0, dc0, dw = recurrent_backward(dy, dh_n, dc_n, saved)
    grads = (dx, dh0, dc0, dw["weight_ih"], dw["weight_hh"], dw["bias_ih"], dw["bias_hh"])
    return grads + (dw["weight_hr"],) if dw["weight_hr"] is not None else grads


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
    y, h_n, _, saved = recurrent_forward(
        "gru" if reset_after else "gru_reset_before", x, h0, None,
        _layer_weights(weight_ih, weight_hh, bias_ih, bias_hh), lengths=lengths, mask=mask,
        masked_output=masked_output, reverse=reverse, training=training, recurrent_scale=recurrent_scale,
        bf16_weights=bf16_weights)
    return y, h_n, saved


def gru_backward(dy, dh_n, saved):
    """Gradients of a :func:`gru_forward`; dy, dh_n may be None (zeros).

    Returns:
        ``(dx (T, B, I), dh0 (B, H), dweight_ih (3H, I), dweight_hh (3H, H), dbias_ih (3H,) | None,
        dbias_hh (3H,) | None)``.
    """
    _check_saved_cell(saved, ("gru", "gru_reset_before"), "gru_backward")
    dx, dh0, _, dw = recurrent_backward(dy, dh_n, None, saved)
    return dx, dh0, dw["weight_ih"], dw["weight_hh"], dw["bias_ih"], dw["bias_hh"]

"""Drop-in ``torch.nn.RNN``, ``LSTM`` and ``GRU`` that run on fusedrnn's kernels.

``fusedrnn.torch.nn.RNN``, ``LSTM`` and ``GRU`` subclass their ``torch.nn`` namesakes: the same
constructor, parameters, ``state_dict``, initialisation, inputs and outputs (``isinstance(m,
torch.nn.LSTM)`` holds and a PyTorch checkpoint loads unchanged). Only ``forward`` differs: every
layer and direction runs through :func:`fusedrnn.torch.recurrent` (the reverse direction with
``reverse=True``), so the backward through time runs in the fused kernels too. Supported:
``num_layers``, ``bidirectional``, ``batch_first``, ``dropout`` between layers (drawn with
``torch.nn.functional.dropout``, so from PyTorch's RNG: the same distribution as PyTorch's but not
the same mask), ``proj_size``, ``bias=False``, unbatched 2-D input, ``hx``, and ``PackedSequence``
in and out, run inside the kernels with per-sequence lengths (``sorted_indices`` and
``unsorted_indices`` applied to ``hx`` and ``h_n`` as PyTorch does).

:func:`convert` turns the ``torch.nn.RNN``, ``LSTM`` and ``GRU`` modules inside a model into these,
in place, keeping the very same ``Parameter`` objects.

CUDA tensors run on fusedrnn's CUDA backend when this copy of fusedrnn was built with it and it
finds a device (``fusedrnn.cuda.is_available()``); see :mod:`fusedrnn.torch._ops` for devices and
streams. What the kernels don't serve goes to PyTorch's own implementation (``super().forward``)
with the same arguments:

- an input, state or parameter on another device (MPS, ...), on CUDA without fusedrnn's CUDA
  backend, or not on the same device as the others;
- a dtype other than float32 and float64 (bfloat16 and float16 included: PyTorch computes those
  itself), or parameters and states whose dtype differs from the input's (PyTorch then raises its
  own error);
- a call under a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ``functional_call``
  inside one, ...): the fused operators have no batching rule and an autograd that the
  transforms cannot see through;
- an export to ONNX (``torch.onnx.export``, either exporter): the file then holds ONNX's own
  RNN/LSTM/GRU operators, as torch.nn's modules export, and runs without fusedrnn.

Under ``torch.autocast`` on the CPU (bfloat16) torch.nn's layers compute their products in
bfloat16 (PyTorch 2.13: its LSTM and RNN return bfloat16, its GRU float32). The fused layers do
so in an eager call that needs no graph, on a tensor: both factors of the input and recurrent
products rounded to bfloat16, float32 sums (the kernels' bf16 mode: ``fusedrnn.functional``'s
``bf16_weights`` and ``bf16_projections``). Training under autocast, calls inside
``torch.compile``, a PackedSequence, ``proj_size``, and a CPU without AVX512-BF16 (where those
products run no faster) compute in float32. The results have the input's dtype.

Double backward (a gradient of a gradient) is not supported on the fused path: the operators'
backward is not itself differentiable, so ``backward(create_graph=True)`` through these modules
raises ``RuntimeError`` rather than leave the second-order terms out. Use the ``torch.nn`` modules
for that.

Each call computes with the weights as the module gives them then, as torch.nn's forward does:
parametrized ones (``torch.nn.utils.parametrize``: ``orthogonal``, ``spectral_norm``,
``weight_norm``) computed anew, pruned ones, and the tensors ``torch.func.functional_call`` puts in
place; gradients reach the parameters behind them.

Calls that need no gradient (``torch.no_grad()``, ``inference_mode``, or nothing that requires
grad) on CPU tensors, not packed, not traced: each layer direction calls the uniform op
(:func:`fusedrnn.functional.recurrent_forward`) on NumPy views of the tensors straight away,
without the operators and their conversions, with bitwise the same results (but under autocast:
above). The parameters' views are kept from call to call while each parameter keeps its memory,
shape and strides (in-place changes show through them) and dropped by ``.to()`` and the like; a
copy of the module starts without them. At T = B = 1 (a generation step, H = 256) that cut a call
from 85 to 53 us, against torch.nn's 70. ``torch.jit.trace`` records the operators.

Packed weights: in calls that need no gradient (``torch.no_grad()``, ``inference_mode``, or
parameters that do not require grad) each layer direction keeps its weights packed in the kernels'
layout from one call to the next, while a fingerprint of their bytes is unchanged, so a generation
loop does not repack them at every step. The packed copies take about the weights' own memory and
are freed with the module (a copy of the module starts without them).

``torch.compile``: Dynamo leaves ``torch.nn``'s recurrent modules, subclasses included, out of its
graphs (a graph break; these modules then run eagerly) unless ``torch._dynamo.config.allow_rnn`` is
True; with it they compile, with ``fullgraph=True`` too, as the operators have fake kernels. A
``PackedSequence`` input compiles into the same graph when it carries ``sorted_indices``
(``enforce_sorted=False``) or comes with ``hx``: its rows move between packed and padded steps by
integer indices, whose shapes follow from the inputs' shapes. Otherwise (``enforce_sorted=True``,
no ``hx``) the batch size is a value, ``batch_sizes[0]``: Dynamo breaks the graph where it is read,
unless ``torch._dynamo.config.capture_scalar_outputs`` is True, which makes it a symbolic size in
the same graph. The results are the same either way. (``pack_padded_sequence`` itself makes shapes
from values, so a model that packs inside its ``forward`` has a graph break there, from PyTorch.)
"""

import functools

import numpy as np
import torch
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import PackedSequence

import fusedrnn.cuda
from fusedrnn import functional as F
from fusedrnn._arguments import checked_weights
from fusedrnn._packed import owned_packed_weights

from . import _ops
from ._ops import _array
from .functional import recurrent

__all__ = ["RNN", "LSTM", "GRU", "convert"]

_SERVED_DTYPES = (torch.float32, torch.float64)


@functools.cache
def _cuda_backend_available():
    """Whether CUDA tensors run on fusedrnn's CUDA backend (asked once: it loads the backend)."""
    return fusedrnn.cuda.is_available()


def _permute(hx, permutation):
    """hx (L*D, B, P) with its batch reordered by `permutation` (None: unchanged)."""
    if permutation is None:
        return hx
    return hx.index_select(1, permutation)


def _packed_rows(batch_sizes, B, N):
    """Where a PackedSequence's N rows (time-major, steps of batch_sizes (T,) sequences each) sit
    in a padded (T, B) batch: (lengths (B,), rows (N,) = t * B + b of each row). Integer indices
    throughout, every shape known from the inputs' shapes: a boolean mask would give a result
    whose size depends on values, which torch.compile cannot hold in one graph."""
    T = batch_sizes.shape[0]
    lengths = (torch.arange(B).unsqueeze(0) < batch_sizes.unsqueeze(1)).sum(0)
    ends = torch.cumsum(batch_sizes, 0)  # row index after each step's rows
    n = torch.arange(N)
    t = torch.searchsorted(ends, n, right=True)  # the step each row belongs to
    b = n - (ends - batch_sizes)[t]  # its place within that step
    return lengths, t * B + b


def _stacked(states, stack):
    """The final states of every layer direction as one (L*D, B, P) tensor or array (`stack`:
    torch.stack or np.stack)."""
    return states[0][None] if len(states) == 1 else stack(states)


class _WeightViews:
    """A module's parameters as NumPy views (_Fused._weight_arrays). The key holds no tensor, and a
    copy of the module (copy.deepcopy, pickle) starts without views: they are a cache, not state."""

    __slots__ = ("key", "arrays")

    def __init__(self):
        self.key = self.arrays = None

    def __reduce__(self):
        return _WeightViews, ()


class _Fused:
    """The forward shared by RNN, LSTM and GRU; mixed in before the torch.nn class."""

    def _cell(self):
        return {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "LSTM": "lstm", "GRU": "gru"}[self.mode]

    def _served(self, tensors):
        first = tensors[0]
        if not isinstance(first, torch.Tensor) or first.dtype not in _SERVED_DTYPES:
            return False
        dtype = first.dtype
        if first.is_cpu:  # (the common case first: a device object costs more than these flags)
            return all(isinstance(t, torch.Tensor) and t.is_cpu and t.dtype == dtype for t in tensors)
        device = first.device
        if not (device.type == "cuda" and _cuda_backend_available()):
            return False
        return all(isinstance(t, torch.Tensor) and t.device == device and t.dtype == dtype for t in tensors)

    def _layer_weights(self, layer, direction):
        # torch.nn.RNNBase keeps _flat_weights (its parameters, layer by layer and direction by
        # direction, in the order of _flat_weights_names) up to date as parameters are assigned or
        # moved. Which of them belong to a layer direction, and under which short name, is worked
        # out once for the names the module has.
        names = self._flat_weights_names
        plan = self.__dict__.get("_fused_weight_plan")
        if plan is None or plan[0] is not names or len(plan[1]) != len(names):
            per_layer = len(names) // (self.num_layers * (2 if self.bidirectional else 1))
            slots = [(name.rsplit("_l", 1)[0], i) for i, name in enumerate(names)]
            plan = (names, slots, per_layer)
            self.__dict__["_fused_weight_plan"] = plan
        _, slots, per_layer = plan
        first = (layer * (2 if self.bidirectional else 1) + direction) * per_layer
        flat = self._flat_weights
        return {name: flat[i] for name, i in slots[first:first + per_layer]}

    def _follow_replaced_weights(self):
        # torch.nn's forward first brings _flat_weights up to date with the weights as the module
        # gives them (_update_flat_weights): a parametrized weight (torch.nn.utils.parametrize:
        # orthogonal, spectral_norm, weight_norm) is computed anew at each access, and
        # torch.func.functional_call puts its tensors into _parameters without __setattr__. Its
        # getattr of each name took 7 us a call; while every flat weight is still the parameter of
        # its name (nothing shadows a parameter), it has nothing to do.
        parameters = self._parameters
        for name, weight in zip(self._flat_weights_names, self._flat_weights):
            if parameters.get(name) is not weight:
                self._update_flat_weights()
                return

    def _apply(self, *args, **kwargs):
        # .to(), .double(), .cuda() ... replace the parameters: the packed copies of the old ones
        # (and the references that keep those alive) are of no further use, nor are their views.
        for handle in self.__dict__.get("_packed_weights", {}).values():
            handle.clear()
        self.__dict__.pop("_fused_weight_views", None)
        _ops._drop_views(self._flat_weights)
        return super()._apply(*args, **kwargs)

    def _weight_arrays(self, dtype):
        """(whether a parameter requires grad, the parameters of each layer direction as NumPy
        views in the dicts the uniform op takes), kept from call to call while the parameters are
        the same tensors with the same memory (in-place changes show through the views); None when
        a parameter is not a CPU tensor of `dtype`. Making the views took 8 us a call."""
        flat = self._flat_weights
        key = tuple((id(t), t.data_ptr(), t.shape, t.stride(), t.dtype, t.is_cpu, t.requires_grad) for t in flat)
        kept = self.__dict__.get("_fused_weight_views")
        if kept is not None and kept.key == key:
            return kept.arrays
        if not all(isinstance(t, torch.Tensor) and t.is_cpu and t.dtype == dtype for t in flat):
            return None
        D = 2 if self.bidirectional else 1
        # (All five names, in order: the uniform op then takes the dicts as they are.)
        views = [checked_weights({name: _array(t) for name, t in self._layer_weights(k // D, k % D).items()})
                 for k in range(self.num_layers * D)]
        arrays = (any(t.requires_grad for t in flat), views)
        if all(t.is_contiguous() for t in flat):  # (else _array copied one: a copy would go stale)
            kept = self.__dict__["_fused_weight_views"] = _WeightViews()
            kept.key, kept.arrays = key, arrays
        return arrays

    def _forward_without_graph(self, input, hx):
        """forward for a call that needs no graph (the module's notes say which): the uniform op on
        NumPy views. None where it does not apply: the general path then runs, and raises
        PyTorch's error for a bad input."""
        if type(input) is not torch.Tensor or not input.is_cpu:
            return None  # (a tensor subclass sees the operators of the general path)
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return None  # (a tracer records the operators; it cannot see into NumPy)
        is_lstm = self.mode == "LSTM"
        if hx is None:
            states = ()
        elif is_lstm:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                return None
            states = tuple(hx)
        else:
            states = (hx,)
        tensors = (input, *states)
        dtype = input.dtype
        # Under bfloat16 autocast the products run in bfloat16 (the kernels' bf16 mode), from
        # float32 inputs, or from bfloat16 ones that autocast's other operators gave (widened, then
        # the results rounded back to their dtype, as the general path returns them).
        bf16 = dtype != torch.float64 and not self.proj_size and _ops.autocast_bf16_compute()
        weight_dtype = torch.float32 if bf16 and dtype == torch.bfloat16 else dtype
        if weight_dtype not in _SERVED_DTYPES or not all(type(t) is torch.Tensor and t.is_cpu and t.dtype == dtype
                                                         for t in tensors):
            return None
        arrays = self._weight_arrays(weight_dtype)
        if arrays is None:
            return None
        weights_need_grad, weights = arrays
        if torch.is_grad_enabled() and (weights_need_grad or any(t.requires_grad for t in tensors)):
            return None
        if self.training and self.dropout > 0 and self.num_layers > 1:
            return None  # (dropout between layers: the general path draws it)
        D = 2 if self.bidirectional else 1
        batched = input.dim() == 3
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            return None
        if any(s.dim() != input.dim() or s.shape[0] != self.num_layers * D for s in states):
            return None
        x = input if batched else input.unsqueeze(0 if self.batch_first else 1)
        x = _array(x.transpose(0, 1) if self.batch_first else x)
        states = [_array(s if batched else s.unsqueeze(1)) for s in states]
        h0s = states[0] if states else None
        c0s = states[1] if is_lstm and states else None
        _ops._use_threads()
        h_n, c_n = [], []
        try:
            for layer in range(self.num_layers):
                ys = []
                for direction in range(D):
                    k = layer * D + direction
                    h0, c0 = (None if s is None else s[k] for s in (h0s, c0s))
                    y, h, c, _ = F.recurrent_forward(self._cell(), x, h0, c0, weights[k], reverse=bool(direction),
                                                     training=False, bf16_weights=bf16, bf16_projections=bf16,
                                                     packed=owned_packed_weights(self, k))
                    ys.append(y)
                    h_n.append(h)
                    c_n.append(c)
                x = ys[0] if D == 1 else np.concatenate(ys, axis=2)
        except (ValueError, TypeError):
            return None  # (a state of the wrong batch or size: PyTorch's check says so, below)
        # Shaped as torch.nn returns them while still arrays, then one tensor each: a NumPy view
        # costs a fraction of a tensor's (a one-step call makes three of them).
        as_tensor = torch.from_numpy if dtype == weight_dtype else lambda a: torch.from_numpy(a).to(dtype)
        return self._padded_result(x, h_n, c_n if is_lstm else None, batched, np.stack, as_tensor)

    def _padded_result(self, x, h_n, c_n, batched, stack=torch.stack, as_tensor=None):
        """(output, h_n or (h_n, c_n)) as torch.nn returns them for a padded input, from the last
        layer's time-major output x and the final states of every layer direction (c_n: None
        without a cell state): tensors, or NumPy arrays (`stack` np.stack) made tensors at the end
        by `as_tensor`. (Views and indexing that tensors and arrays share.)"""
        output = x.swapaxes(0, 1) if self.batch_first else x
        hidden = [_stacked(h_n, stack)] + ([] if c_n is None else [_stacked(c_n, stack)])
        if not batched:  # (the batch dimension is 1 here)
            output = output[0] if self.batch_first else output[:, 0]
            hidden = [s[:, 0] for s in hidden]
        if as_tensor is not None:
            output, hidden = as_tensor(output), [as_tensor(s) for s in hidden]
        return output, (hidden[0] if c_n is None else tuple(hidden))

    def forward(self, input, hx=None):
        if _ops.under_torch_func_transform() or torch.onnx.is_in_onnx_export():
            return super().forward(input, hx)
        self._follow_replaced_weights()
        fast = self._forward_without_graph(input, hx)
        if fast is not None:
            return fast
        is_lstm = self.mode == "LSTM"
        if hx is None:
            states = ()
        elif is_lstm:  # (h0, c0); anything else goes to torch, which says what is wrong
            states = tuple(hx) if isinstance(hx, (tuple, list)) and len(hx) == 2 else (None,)
        else:
            states = (hx,)
        data = input.data if isinstance(input, PackedSequence) else input
        if not self._served([data, *states, *self._flat_weights]):
            return super().forward(input, hx)

        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            T = batch_sizes.shape[0]
            # (B from a shape where there is one: batch_sizes[0] is a value, which a torch.compile
            # graph holds only as a symbolic size under capture_scalar_outputs, else breaks there.)
            symbolic_b = False  # (B a symbolic size of a value: inside a graph no `if` may branch on it)
            if sorted_indices is None and hx is not None and torch.compiler.is_compiling():
                B = states[0].shape[1]
                torch._assert_async(batch_sizes[0] == B, "hx's batch size differs from the PackedSequence's")
            elif sorted_indices is None:
                B = int(batch_sizes[0])
                symbolic_b = torch.compiler.is_compiling()
            else:
                B = sorted_indices.shape[0]
                if not torch.compiler.is_compiling() and B != int(batch_sizes[0]):
                    # (A PackedSequence built by hand: rows of a larger batch would overlap.)
                    raise ValueError(f"the PackedSequence's sorted_indices has {B} entries but its batch_sizes[0] "
                                     f"is {int(batch_sizes[0])}: they must both be the batch size")
            if not symbolic_b and data.shape[0] == T * B:
                # Every sequence takes all T steps (a batch of one always does): the packed rows are
                # the padded batch's, in order, and the layer needs no lengths, nor the copies.
                lengths = rows = None
                x = data.reshape(T, B, -1)
            else:
                lengths, rows = _packed_rows(batch_sizes, B, data.shape[0])
                rows = rows.to(data.device)
                x = data.new_zeros((T * B, data.shape[-1])).index_copy(0, rows, data).view(T, B, -1)
            is_batched = True
            if hx is not None:
                states = tuple(_permute(s, sorted_indices) for s in states)
            # (Checked as the padded batch: torch's check of a packed one reads batch_sizes[0].)
            check_input, check_batch_sizes = x.transpose(0, 1) if self.batch_first else x, None
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            expected = 3 if is_batched else 2
            if any(s.dim() != expected for s in states):
                raise RuntimeError(f"For {'batched 3-D' if is_batched else 'unbatched 2-D'} input, hx should also be "
                                   f"{expected}-D but got {', '.join(f'{s.dim()}-D' for s in states)} tensors")
            if not is_batched:
                states = tuple(s.unsqueeze(1) for s in states)
            x = input.transpose(0, 1) if self.batch_first else input
            lengths = sorted_indices = unsorted_indices = None
            check_input, check_batch_sizes = input, None
        if hx is None:
            self.check_input(check_input, check_batch_sizes)
        else:
            self.check_forward_args(check_input, states if is_lstm else states[0], check_batch_sizes)

        h0s = states[0] if states else None
        c0s = states[1] if is_lstm and states else None
        D = 2 if self.bidirectional else 1
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                x = torch.nn.functional.dropout(x, self.dropout, training=self.training)
            ys = []
            for direction in range(D):
                k = layer * D + direction
                y, h, c = recurrent(self._cell(), x, None if h0s is None else h0s[k], None if c0s is None else c0s[k],
                                    self._layer_weights(layer, direction), lengths=lengths, reverse=bool(direction),
                                    packed=None if torch.compiler.is_compiling() or x.is_cuda
                                    else owned_packed_weights(self, k))
                ys.append(y)
                h_n.append(h)
                c_n.append(c)
            x = ys[0] if D == 1 else torch.cat(ys, dim=2)

        if not packed:
            return self._padded_result(x, h_n, c_n if is_lstm else None, is_batched)
        hidden = [_permute(_stacked(h_n, torch.stack), unsorted_indices)]
        if is_lstm:
            hidden.append(_permute(_stacked(c_n, torch.stack), unsorted_indices))
        output = x.reshape(T * B, -1)
        output = PackedSequence(output if rows is None else output.index_select(0, rows), batch_sizes, sorted_indices,
                                unsorted_indices)
        return output, (tuple(hidden) if is_lstm else hidden[0])


class RNN(_Fused, torch.nn.RNN):
    __doc__ = torch.nn.RNN.__doc__


class LSTM(_Fused, torch.nn.LSTM):
    __doc__ = torch.nn.LSTM.__doc__


class GRU(_Fused, torch.nn.GRU):
    __doc__ = torch.nn.GRU.__doc__


_FUSED = {torch.nn.RNN: RNN, torch.nn.LSTM: LSTM, torch.nn.GRU: GRU}


def convert(model):
    """Turn every ``torch.nn.RNN``, ``LSTM`` and ``GRU`` in `model` (`model` itself included) into
    its fusedrnn counterpart, in place, and return `model`.

    Each module keeps its attributes and its very ``Parameter`` objects (only its class changes),
    so an optimizer built before still updates them and the results are the same. Only modules of
    exactly those classes are converted, parametrized ones included (``torch.nn.utils.parametrize``:
    removing the parametrizations later leaves the fusedrnn class): a user's subclass of them keeps
    its own ``forward``.
    """
    for module in model.modules():
        cls = type(module)
        fused = _FUSED.get(cls)
        if fused is None and parametrize.is_parametrized(module) and len(cls.__bases__) == 1:
            # parametrize moved the module into a class of its own over torch.nn's, holding a
            # property per parametrized weight: the same class over ours.
            fused_base = _FUSED.get(cls.__bases__[0])
            if fused_base is not None:
                fused = type(cls.__name__, (fused_base,), dict(vars(cls)))
        if fused is not None:
            module.__class__ = fused
    return model

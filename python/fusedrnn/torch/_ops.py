"""The uniform op (fusedrnn.functional) as two PyTorch custom operators, with fake kernels and
autograd.

``torch.ops.fusedrnn.recurrent_forward``::

    (str cell, Tensor x, Tensor? h0, Tensor? c0, Tensor weight_ih, Tensor weight_hh,
     Tensor? bias_ih, Tensor? bias_hh, Tensor? weight_hr, Tensor? lengths, Tensor? mask,
     str masked_output, bool reverse, bool training, Tensor? recurrent_scale)
    -> (Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor h, Tensor c, Tensor m)

``torch.ops.fusedrnn.recurrent_backward``::

    (str cell, Tensor? dy, Tensor? dh_n, Tensor? dc_n, Tensor x, Tensor weight_ih,
     Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, Tensor? weight_hr,
     Tensor? recurrent_scale, Tensor? lengths, Tensor? mask, str masked_output, bool reverse,
     Tensor gates, Tensor h, Tensor c, Tensor m)
    -> (Tensor dx, Tensor dh0, Tensor dc0, Tensor dweight_ih, Tensor dweight_hh,
        Tensor dbias_ih, Tensor dbias_hh, Tensor dweight_hr)

Arguments mean what they mean in :func:`fusedrnn.functional.recurrent_forward` (time-major
``x (T, B, I)``, PyTorch's weight layout; ``lengths (B,)`` integers, ``mask (T, B)`` booleans).
``gates``, ``h``, ``c`` and ``m`` are what a training forward saves for its backward
(``Saved.ARRAY_NAMES``' last four); the backward also reads the forward's inputs again.

Absent results: an operator's outputs cannot be None, so a result that does not exist is an
empty tensor of shape ``(0,)``: ``c_n`` and ``c`` of a cell without a cell state, ``m`` without a
projection, all four saved tensors when ``training`` is False, ``dc0`` of a cell without a cell
state, and the gradient of a bias or projection that was None. ``recurrent_backward`` reads a
``c`` or ``m`` of shape ``(0,)`` as None.

Devices and dtypes: the operators have CPU and CUDA kernels (another device raises
``NotImplementedError``). CUDA tensors run on fusedrnn's CUDA backend (:mod:`fusedrnn.cuda`; a
build without it raises ``RuntimeError`` saying so): every tensor on x's device, the results made
by the backend and handed to PyTorch through DLPack without a copy; see :func:`_cuda_call` for
streams. Contiguous float32 and float64 tensors reach the kernels without a copy
(others are made contiguous first). bfloat16 and float16 tensors are widened to float32 and
computed in float32: ``y``, ``h_n`` and ``c_n`` then have x's dtype, the saved tensors are
float32, and every gradient has the dtype of the tensor it is the gradient of (``dh0`` and
``dc0``: x's). Apart from that every floating tensor must have x's dtype.

Threads: at each call the kernels use ``torch.get_num_threads()`` threads, unless
``fusedrnn.set_num_threads(n)`` was called: then n (``fusedrnn.set_num_threads(None)`` goes back
to following PyTorch). The kernels release the GIL.

Eager calls: :func:`fusedrnn.torch.recurrent` (and so the modules) runs these implementations
through an autograd.Function (:class:`EagerForward`), without the dispatcher's per-call cost; under
``torch.compile``, or for a tensor that is not on the CPU, it calls the operators.

In-place changes: autograd saves the inputs with ``save_for_backward`` and no copy, so changing x
or a weight in place between forward and backward raises PyTorch's usual error; the uniform op's
own fingerprints are therefore not taken (``check_unchanged=False``).
"""

import weakref

import numpy as np
import torch

import fusedrnn
from fusedrnn import _core
from fusedrnn import functional as F

_HALF = (torch.bfloat16, torch.float16)
_COMPUTED = F.Saved.ARRAY_NAMES[-4:]  # gates, h, c, m
assert _COMPUTED == ("gates", "h", "c", "m")

_FORWARD_SCHEMA = (
    "(str cell, Tensor x, Tensor? h0, Tensor? c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
    "Tensor? bias_hh, Tensor? weight_hr, Tensor? lengths, Tensor? mask, str masked_output, bool reverse, "
    "bool training, Tensor? recurrent_scale) "
    "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor h, Tensor c, Tensor m)")
_BACKWARD_SCHEMA = (
    "(str cell, Tensor? dy, Tensor? dh_n, Tensor? dc_n, Tensor x, Tensor weight_ih, Tensor weight_hh, "
    "Tensor? bias_ih, Tensor? bias_hh, Tensor? weight_hr, Tensor? recurrent_scale, Tensor? lengths, "
    "Tensor? mask, str masked_output, bool reverse, Tensor gates, Tensor h, Tensor c, Tensor m, "
    "bool want_dx=True) "
    "-> (Tensor dx, Tensor dh0, Tensor dc0, Tensor dweight_ih, Tensor dweight_hh, Tensor dbias_ih, "
    "Tensor dbias_hh, Tensor dweight_hr)")


# -- tensors to arrays and back ------------------------------------------------------------------

def compute_dtype(dtype):
    """The dtype the kernels compute in for tensors of `dtype`."""
    return torch.float32 if dtype in _HALF else dtype


def _array(tensor):
    """A tensor as the array the kernels read: the tensor's own memory when it is a contiguous
    float32 or float64 tensor; half precision widened to float32. A CPU tensor becomes a NumPy
    array; a CUDA tensor stays itself (the CUDA backend reads its __cuda_array_interface__, which
    PyTorch gives for detached tensors only)."""
    if tensor is None:
        return None
    if tensor.requires_grad:  # (asked first: detach() makes a new tensor object at every call)
        tensor = tensor.detach()
    if tensor.dtype in _HALF:
        tensor = tensor.float()
    if not tensor.is_contiguous():  # (asked first: contiguous() costs more than the question)
        tensor = tensor.contiguous()
    return tensor if tensor.is_cuda else tensor.numpy()


def _array_is_view(tensor):
    """Whether _array(tensor) is the tensor's own memory (else a copy, which a later change of the
    tensor would not show)."""
    return tensor.is_cpu and tensor.dtype not in _HALF and tensor.is_contiguous()


# NumPy views of the tensors that call after call passes again (a layer's weights), by the
# tensor's id. Making a view costs 1.3-1.8 us, checking that a kept one still shows the tensor's
# memory about 0.4 us, and a one-step call reads four or five weights. A view shows the memory,
# so in-place changes show through it; a view is used only while the tensor has the same data
# pointer, shape, dtype and contiguity, which is what the view was made from. An entry holds the
# memory it shows (a view's base shares the tensor's storage), not the tensor, and leaves when
# its tensor is freed or, for a module's parameters, when .to() and the like replace their memory
# (_drop_views). A tensor whose memory is replaced otherwise (param.data = ...) keeps its old
# memory held until its next call or its end.
_VIEWS = {}


def _forget_view(key, views=_VIEWS):
    # (The dict itself, not the global: a tensor freed while the interpreter shuts down may find
    # this module's globals already cleared.)
    return lambda _: views.pop(key, None)


def _drop_views(tensors):
    """Forgets the kept views of `tensors`, whose memory the caller is about to replace (a module's
    .to()): an entry would otherwise hold the old memory until the tensor is next used or freed."""
    for tensor in tensors:
        _VIEWS.pop(id(tensor), None)


def _weight_array(tensor):
    """_array for a tensor that calls pass again and again, from _VIEWS when it can be."""
    if tensor is None:
        return None
    key = id(tensor)
    kept = _VIEWS.get(key)
    if (kept is not None and kept[1] == tensor.data_ptr() and kept[2] == tensor.shape and kept[3] is tensor.dtype
            and tensor.is_contiguous()):
        return kept[4]
    array = _array(tensor)
    if _array_is_view(tensor):  # (a copy would go stale)
        _VIEWS[key] = (weakref.ref(tensor, _forget_view(key)), tensor.data_ptr(), tensor.shape, tensor.dtype, array)
    return array


def _index_array(tensor, dtype):
    """lengths (any integer dtype) or mask (bool) as a host array, whatever the tensor's device
    (the kernels' masking schedule starts on the host); None stays None."""
    if tensor is None:
        return None
    array = tensor.detach().cpu().contiguous().numpy()
    return array if dtype is None else array.astype(dtype, copy=False)


def _absent(tensor):
    """The convention for a result that does not exist: shape (0,)."""
    return tensor is None or tensor.dim() == 1 and tensor.shape[0] == 0


def _empty(like, dtype):
    return like.new_empty((0,), dtype=dtype)


def _tensor(array, dtype):
    """A result array (NumPy, or a CUDA backend's DeviceArray) as a tensor of `dtype` (no copy when
    it already has it); None stays None."""
    if array is None:
        return None
    tensor = torch.from_numpy(array) if type(array) is np.ndarray else torch.from_dlpack(array)
    return tensor if tensor.dtype is dtype else tensor.to(dtype)


def _cuda_call(x):
    """Before a call of the kernels on CUDA tensors like x: runs the CUDA backend on x's device
    and orders its work after PyTorch's; returns what to do after the call (or None).

    The backend's kernels run on the device's legacy default stream, which is PyTorch's default
    stream too, so in the common case nothing more is needed. Under another current stream
    (``torch.cuda.stream(s)``: PyTorch's streams do not wait for the legacy one) that stream's
    pending work is waited for first, and the backend's work before PyTorch goes on."""
    from fusedrnn import cuda

    cuda._require()
    cuda._native().set_device(x.device.index)
    stream = torch.cuda.current_stream(x.device)
    if stream.cuda_stream == 0:
        return None
    stream.synchronize()
    return torch.cuda.default_stream(x.device).synchronize


def _present(outputs, like, dtypes):
    """Operator outputs cannot be None: an absent one becomes (0,) of its dtype."""
    return tuple(_empty(like, dtype) if t is None else t for t, dtype in zip(outputs, dtypes))


# (None where torch has no such query: its transforms then cannot be told apart here.)
_interpreter_stack = getattr(torch._C._functorch, "peek_interpreter_stack", lambda: None)


def under_torch_func_transform():
    """Whether a torch.func transform (vmap, grad, jacrev, ...) runs this call. The operators have
    no batching rule, and their autograd cannot be transformed (custom autograd functions need a
    separate setup_context for that): vmap failed on NumPy views of batched tensors, grad asked for
    setup_context."""
    # (Not asked while Dynamo traces: it cannot trace the query, and a compiled graph calls the
    # operators anyway.)
    return not torch.compiler.is_compiling() and _interpreter_stack() is not None


def autocast_bf16_compute():
    """Whether the layers compute in bfloat16 now, as torch.nn's do: under ``torch.autocast`` on
    the CPU with bfloat16, where the CPU has AVX512-BF16 (elsewhere the kernels' bfloat16 products
    run no faster than float32's, and float32 it stays)."""
    return (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and _core.bf16_native())


def _use_threads():
    """The kernels run with fusedrnn.set_num_threads's count if the user set one, else PyTorch's."""
    wanted = fusedrnn._user_threads or torch.get_num_threads()
    if _core.max_threads() != wanted:
        _core.set_max_threads(wanted)


def _cell_info(cell):
    if cell not in F.CELLS:
        raise ValueError(f"cell must be one of {', '.join(F.CELLS)}, got {cell!r}")
    return F.CELLS[cell]


def _sizes(x, weight_hh, weight_hr):
    """(H, P) from the shapes alone (for the fake kernels)."""
    if x.dim() != 3:
        raise ValueError(f"x must have 3 dimensions (T, B, I), got shape {tuple(x.shape)}")
    if weight_hr is not None:
        return weight_hr.shape[1], weight_hr.shape[0]
    return weight_hh.shape[1], weight_hh.shape[1]


# -- forward -------------------------------------------------------------------------------------

def forward_tensors(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, mask,
                    masked_output, reverse, training, recurrent_scale, packed=None):
    """The forward operator's results, with None for an absent one (not (0,) as the operator).

    ``packed``: a :class:`fusedrnn.functional.PackedWeights` keeping the packed weights between
    calls, told apart by a fingerprint of the weights' bytes, not by ``tensor._version``: a write
    through ``param.data`` or a NumPy view does not bump the version, and a stale packed copy would
    be a silently wrong answer."""
    return _forward_results(x, *_forward_arrays(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                                                lengths, mask, masked_output, reverse, training, recurrent_scale,
                                                packed))


def _forward_arrays(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, mask,
                    masked_output, reverse, training, recurrent_scale, packed):
    """The uniform op on the tensors' arrays: ``(y, h_n, c_n, saved)`` as it returns them."""
    _use_threads()
    weights = dict(weight_ih=_weight_array(weight_ih), weight_hh=_weight_array(weight_hh),
                   bias_ih=_weight_array(bias_ih), bias_hh=_weight_array(bias_hh),
                   weight_hr=_weight_array(weight_hr))
    after = _cuda_call(x) if x.is_cuda else None
    y, h_n, c_n, saved = F.recurrent_forward(
        cell, _array(x), _array(h0), _array(c0), weights, lengths=_index_array(lengths, None),
        mask=_index_array(mask, None), masked_output=masked_output, reverse=reverse, training=training,
        recurrent_scale=_array(recurrent_scale), check_unchanged=False, packed=packed)
    if after is not None:
        after()
    return y, h_n, c_n, saved


def _forward_results(x, y, h_n, c_n, saved):
    """forward_tensors' results from _forward_arrays'."""
    results = (_tensor(y, x.dtype), _tensor(h_n, x.dtype), _tensor(c_n, x.dtype))
    if saved is None:
        return results + (None,) * len(_COMPUTED)
    compute = compute_dtype(x.dtype)
    return results + tuple(_tensor(saved[name], compute) for name in _COMPUTED)


def forward_impl(cell, x, *arguments):
    compute = compute_dtype(x.dtype)
    return _present(forward_tensors(cell, x, *arguments), x, (x.dtype,) * 3 + (compute,) * len(_COMPUTED))


recurrent_forward = torch.library.custom_op("fusedrnn::recurrent_forward", forward_impl, mutates_args=(),
                                            device_types=("cpu", "cuda"), schema=_FORWARD_SCHEMA)


@recurrent_forward.register_fake
def _forward_fake(cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, mask,
                  masked_output, reverse, training, recurrent_scale):
    info = _cell_info(cell)
    H, P = _sizes(x, weight_hh, weight_hr)
    T, B, _ = x.shape
    compute = compute_dtype(x.dtype)
    y = x.new_empty((T, B, P))
    h_n = x.new_empty((B, P))
    c_n = x.new_empty((B, H)) if info.has_cell_state else _empty(x, x.dtype)
    if not training:
        return (y, h_n, c_n) + tuple(_empty(x, compute) for _ in _COMPUTED)
    gates = x.new_empty((T, B, info.saved * H), dtype=compute)
    h = x.new_empty((T + 1, B, P), dtype=compute)
    c = x.new_empty((T + 1, B, H), dtype=compute) if info.has_cell_state else _empty(x, compute)
    m = x.new_empty((T, B, H), dtype=compute) if weight_hr is not None else _empty(x, compute)
    return y, h_n, c_n, gates, h, c, m


# -- backward ------------------------------------------------------------------------------------

def backward_tensors(cell, dy, dh_n, dc_n, x, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                     recurrent_scale, lengths, mask, masked_output, reverse, gates, h, c, m, want_dx=True):
    """The backward operator's results, with None for an absent one (not (0,) as the operator):
    dx too when not wanted."""
    _use_threads()
    weights = tuple(_weight_array(t) for t in (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr))
    arrays = (_array(x), *weights, _array(recurrent_scale), _index_array(lengths, np.int64),
              _index_array(mask, np.uint8), _array(gates), _array(h), None if _absent(c) else _array(c),
              None if _absent(m) else _array(m))
    meta = F.SavedMeta(cell=cell, reverse=bool(reverse), repeat_masked_output=masked_output == "repeat",
                       fingerprints=None)
    after = _cuda_call(x) if x.is_cuda else None
    grads = _backward_of(F.Saved(meta, arrays), dy, dh_n, dc_n, x, (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr),
                         want_dx)
    if after is not None:
        after()
    return grads


def _backward_of(saved, dy, dh_n, dc_n, x, weights, want_dx):
    """The gradients' tensors from the uniform op's backward of `saved` (F.Saved) and the tensors
    dy, dh_n and dc_n; x and weights give the gradients' dtypes; dx is None unless want_dx."""
    dx, dh0, dc0, dweights = F.recurrent_backward(_array(dy), _array(dh_n), None if _absent(dc_n) else _array(dc_n),
                                                  saved, want_dx=want_dx)
    # Each gradient has the dtype of what it is the gradient of (dh0 and dc0: x's).
    dtypes = (x.dtype,) * 3 + tuple(x.dtype if weight is None else weight.dtype for weight in weights)
    grads = (dx, dh0, dc0) + tuple(dweights[name] for name in F.WEIGHT_NAMES)
    return tuple(_tensor(grad, dtype) for grad, dtype in zip(grads, dtypes))


def backward_impl(cell, dy, dh_n, dc_n, x, *arguments):
    grads = backward_tensors(cell, dy, dh_n, dc_n, x, *arguments)
    # An absent gradient (dx not wanted, dc0 without a cell state, an absent weight's): x's dtype.
    return _present(grads, x, (x.dtype,) * len(grads))


recurrent_backward = torch.library.custom_op("fusedrnn::recurrent_backward", backward_impl, mutates_args=(),
                                             device_types=("cpu", "cuda"), schema=_BACKWARD_SCHEMA)


@recurrent_backward.register_fake
def _backward_fake(cell, dy, dh_n, dc_n, x, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                   recurrent_scale, lengths, mask, masked_output, reverse, gates, h, c, m, want_dx=True):
    info = _cell_info(cell)
    H, P = _sizes(x, weight_hh, weight_hr)
    B = x.shape[1]
    # Contiguous whatever the strides of x and the weights, as the kernels' results are.
    grads = (x.new_empty(x.shape) if want_dx else _empty(x, x.dtype), x.new_empty((B, P)),
             x.new_empty((B, H)) if info.has_cell_state else _empty(x, x.dtype))
    for weight in (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr):
        grads += (_empty(x, x.dtype) if weight is None else weight.new_empty(weight.shape),)
    return grads


# -- autograd ------------------------------------------------------------------------------------

def _save(ctx, inputs, computed):
    """Keeps what the backward reads: the forward's inputs and `computed` (gates, h, c, m)."""
    (cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, lengths, mask, masked_output, reverse,
     training, recurrent_scale) = inputs
    ctx.cell, ctx.masked_output, ctx.reverse, ctx.training = cell, masked_output, reverse, training
    ctx.h0_dtype = None if h0 is None else h0.dtype
    ctx.c0_dtype = None if c0 is None else c0.dtype
    # No copies: autograd's version counters then catch an in-place change before the backward.
    ctx.save_for_backward(x, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, recurrent_scale, lengths, mask,
                          *computed)


def _setup_context(ctx, inputs, output):
    ctx.mark_non_differentiable(*(t for t in output[3:] if t is not None))
    _save(ctx, inputs, output[3:])


def _autograd_backward(run_backward):
    """The backward of the forward operator, running the backward kernels through `run_backward`
    (the backward operator, or its implementation called directly), or on the arrays the forward
    kept in ``ctx.arrays`` (EagerForward), once."""

    def backward(ctx, dy, dh_n, dc_n, *_):
        if not ctx.training:
            raise RuntimeError("fusedrnn::recurrent_forward ran with training=False, which saves nothing for the "
                               "backward: run it with training=True to take gradients")
        saved = ctx.saved_tensors  # (each access unpacks and checks every saved tensor again)
        x, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, recurrent_scale, lengths, mask, gates, h, c, m = saved
        differentiable = saved + (dy, dh_n, dc_n)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in differentiable):
            # backward(create_graph=True): the gradients would be taken as constants, silently
            # leaving out every second-order term that passes through this layer.
            raise RuntimeError("fusedrnn's recurrent backward is not differentiable, so a gradient of a gradient "
                               "(create_graph=True) cannot pass through it: use torch.nn's RNN/LSTM/GRU for that")
        # Nothing computes dx for an input that needs no gradient (data read by the first layer).
        want_dx = ctx.needs_input_grad[1]
        arrays = getattr(ctx, "arrays", None)
        if arrays is not None:
            # (Dropped after this backward: they would keep the saved memory alive as long as the
            # graph's outputs live, after autograd has freed the saved tensors.)
            ctx.arrays = None
            _use_threads()
            grads = _backward_of(arrays, dy, dh_n, dc_n, x, (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr),
                                 want_dx)
        else:
            grads = run_backward(ctx.cell, dy, dh_n, dc_n, x, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                                 recurrent_scale, lengths, mask, ctx.masked_output, ctx.reverse, gates, h, c, m,
                                 want_dx)
        dx, dh0, dc0, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dweight_hr = grads
        return (None, dx if want_dx else None,
                None if ctx.h0_dtype is None else dh0.to(ctx.h0_dtype),
                None if ctx.c0_dtype is None else dc0.to(ctx.c0_dtype),
                dweight_ih, dweight_hh,
                None if bias_ih is None else dbias_ih,
                None if bias_hh is None else dbias_hh,
                None if weight_hr is None else dweight_hr,
                None, None, None, None, None, None)

    return backward


recurrent_forward.register_autograd(_autograd_backward(torch.ops.fusedrnn.recurrent_backward),
                                    setup_context=_setup_context)


class EagerForward(torch.autograd.Function):
    """The forward operator in eager mode: the same implementation and backward, as an
    autograd.Function that calls the implementations directly.

    A custom operator defined in Python pays the dispatcher on every call (its autograd and CPU
    kernels are Python functions it reaches through C++, with checks on the way): about 100 us at
    T=1, B=1, several times the kernels' own time there, which a generation loop pays at every
    step. Under torch.compile the operators are used instead (their fake kernels let it trace
    them). The results are y, h_n and c_n (None without a cell state): the saved tensors are kept
    with save_for_backward, not returned, which spares autograd four outputs to wrap at every
    call."""

    # forward(ctx, ...) rather than a separate setup_context: with one, apply() binds the
    # arguments to forward's signature through inspect at every call (tens of microseconds).
    @staticmethod
    def forward(ctx, *inputs):
        # The gradient of an output that reaches no loss (h_n after a loss on y) stays None:
        # materialised, it is a zero tensor that autograd would fill for nothing at every
        # backward (the kernels read None as zero).
        ctx.set_materialize_grads(False)
        x = inputs[1]
        arrays = _forward_arrays(*inputs, packed=None)
        output = _forward_results(x, *arrays)
        _save(ctx, inputs, output[3:])
        # The backward reads the very arrays the forward read and computed: kept, they spare making
        # NumPy views of a dozen tensors again (about 50 us of a T=1 call's backward). Only where
        # every one is a view of a saved tensor (contiguous CPU float32/float64 inputs): a
        # contiguous or widened copy would hold memory until the backward.
        # (Every tensor has x's device and dtype: the others need only be contiguous.)
        views = _array_is_view(x) and all(t.is_contiguous() for t in inputs if isinstance(t, torch.Tensor))
        ctx.arrays = arrays[3] if views else None
        return output[:3]

    backward = staticmethod(_autograd_backward(backward_tensors))

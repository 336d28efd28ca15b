"""One recurrent layer on PyTorch tensors, with autograd: the entry of fusedrnn's PyTorch modules."""

import numpy as np
import torch

from fusedrnn import _arguments as args

from . import _ops

__all__ = ["recurrent"]


def _as_tensor(value):
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value))


def recurrent(cell, x, h0, c0, weights, *, lengths=None, mask=None, masked_output="zero", reverse=False,
              recurrent_scale=None, packed=None):
    """One recurrent layer in one direction, any cell, through PyTorch's autograd.

    The same op as :func:`fusedrnn.functional.recurrent_forward` (see it for the cells, the
    masks and the recurrent dropout scale), on tensors, its backward run by autograd
    (``torch.ops.fusedrnn.recurrent_forward`` and ``recurrent_backward``).

    Args:
        cell: a name of ``fusedrnn.functional.CELLS``: ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"``,
            ``"gru"`` or ``"gru_reset_before"``.
        x: ``(T, B, I)`` time-major inputs.
        h0: ``(B, P)`` initial state, or None for zeros. c0: ``(B, H)`` initial cell state of an
            LSTM, or None for zeros (None for other cells).
        weights: dict with PyTorch's layout: ``weight_ih (G*H, I)``, ``weight_hh (G*H, P)``, and
            optionally ``bias_ih``, ``bias_hh (G*H,)`` and the LSTM projection ``weight_hr (P, H)``
            (absent or None: none).
        lengths: ``(B,)`` integers in ``[0, T]`` (a tensor, array or list), or None for all T.
        mask: ``(T, B)`` booleans (instead of lengths): where a step is taken.
        masked_output: ``"zero"``, or ``"repeat"`` the last output at a masked step (Keras).
        reverse: process each sequence from its last valid step back to step 0.
        recurrent_scale: ``(B, P)`` recurrent dropout scale, or None; it gets no gradient.
        packed: a :class:`fusedrnn.functional.PackedWeights` that the caller keeps for this layer
            direction: eager calls that save nothing for a backward (no grad needed) then pack
            the weights once and reuse them while a fingerprint of their bytes is unchanged
            (reading the weights once a call instead of packing them). Other calls ignore it.

    Returns:
        ``(y (T, B, P), h_n (B, P), c_n (B, H) or None)``, with x's dtype.

    The forward saves what the backward needs when grad mode is on and x, h0, c0 or a weight
    requires grad. Gradients flow to x, h0, c0 and every weight given; changing one of them in
    place before the backward raises PyTorch's usual error. bfloat16 and float16 tensors compute
    in float32 and give results in their own dtype. CPU tensors, or CUDA tensors with fusedrnn's
    CUDA backend (every tensor on x's device). Threads, devices and streams: see
    :mod:`fusedrnn.torch._ops`. Under a ``torch.func`` transform (``vmap``, ``grad``, ...) it
    raises ``RuntimeError``: the operators cannot be transformed (the modules take torch.nn's own
    path there). An export to ONNX of a call fails (PyTorch's TorchScript exporter gets a
    ``RuntimeError`` from here, the default exporter its own error naming the operator): ONNX has
    no form for the operators; the modules export as torch.nn's.
    """
    if _ops.under_torch_func_transform():
        raise RuntimeError("fusedrnn.torch.recurrent cannot run under torch.func's transforms (vmap, grad, jacrev, ...); "
                           "fusedrnn.torch.nn's modules take torch.nn's own path there")
    if torch.onnx.is_in_onnx_export():
        raise RuntimeError("fusedrnn.torch.recurrent has no ONNX form; fusedrnn.torch.nn's modules export as torch.nn's "
                           "(ONNX's own RNN, LSTM and GRU operators)")
    info = _ops._cell_info(cell)
    weights = args.checked_weights(weights)
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = weights.values()  # in WEIGHT_NAMES' order
    args.no_cell_state(cell, info, c0, "c0")
    tensors = [t for t in (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) if t is not None]
    # (is_cpu first: comparing devices builds a torch.device per tensor, a cost at every call.)
    if not all(t.is_cpu for t in tensors) and any(t.device != x.device for t in tensors):
        raise ValueError(f"every tensor must be on x's device ({x.device}): got "
                         f"{', '.join(sorted({str(t.device) for t in tensors}))}")
    training = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    arguments = (cell, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, _as_tensor(lengths),
                 _as_tensor(mask), masked_output, bool(reverse), training, recurrent_scale)
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or not (x.is_cpu or x.is_cuda):
        # Traced through its fake kernel (torch.compile) or recorded as the operator it is
        # (torch.jit.trace: the eager paths below go through NumPy, which a tracer cannot see);
        # another device gets the operator's NotImplementedError.
        y, h_n, c_n, *_ = torch.ops.fusedrnn.recurrent_forward(*arguments)
    elif training:  # the same kernels without the dispatcher's cost (see EagerForward)
        y, h_n, c_n = _ops.EagerForward.apply(*arguments)
    else:  # nothing to save, no graph to record
        y, h_n, c_n, *_ = _ops.forward_tensors(*arguments, packed=packed)
    return y, h_n, c_n if info.has_cell_state else None

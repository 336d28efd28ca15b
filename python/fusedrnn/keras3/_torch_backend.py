"""The torch backend's adapter: the uniform op through ``fusedrnn.torch`` (its custom operators
``torch.ops.fusedrnn.recurrent_forward``/``recurrent_backward`` and PyTorch's autograd).

Keras's tensors on this backend are torch tensors and its variables' values are parameters that
require grad, so the operator sees them directly; the forward saves for the backward only when
grad mode is on and something requires grad (``predict`` and ``evaluate`` run under
``torch.no_grad`` and save nothing)."""

import fusedrnn.torch as fused_torch


def recurrent(cell, x, h0, c0, weights, *, mask, masked_output, recurrent_scale):
    """``(y (T, B, P), h_n, c_n or None)`` of one layer; time-major torch tensors."""
    if recurrent_scale is not None:
        recurrent_scale = recurrent_scale.detach()   # a dropout mask: a constant of the step
    return fused_torch.recurrent(cell, x, h0, c0, weights, mask=mask, masked_output=masked_output,
                                 recurrent_scale=recurrent_scale)

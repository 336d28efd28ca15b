"""Gradient clipping, as torch.nn.utils: clip_grad_norm_ and clip_grad_value_ (in place)."""

import math

import numpy as np

from ..._base import Parameter

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _gradients(parameters):
    """The existing .grad arrays of a Parameter or an iterable of them (e.g. module.parameters())."""
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    grads = []
    for param in parameters:
        if not isinstance(param, Parameter):
            raise TypeError(f"parameters must be Parameters, got {type(param).__name__}")
        if param.grad is not None:
            grads.append(param.grad)
    return grads


def _vector_norm(values, norm_type):
    """The norm_type-norm of a flat float64 array: inf (max |x|), -inf (min |x|), 0 (count of
    non-zeros), or (sum |x|^p)^(1/p)."""
    magnitudes = np.abs(values)
    if norm_type == math.inf:
        return float(magnitudes.max(initial=0.0))
    if norm_type == -math.inf:
        return float(magnitudes.min(initial=math.inf)) if magnitudes.size else math.inf
    if norm_type == 0:
        return float(np.count_nonzero(magnitudes))
    if norm_type == 2:
        return float(np.sqrt(np.dot(magnitudes, magnitudes)))
    return float(np.sum(magnitudes ** norm_type) ** (1.0 / norm_type))


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scales all gradients together so that their combined norm is at most max_norm.

    The combined norm is the norm_type-norm of all gradient entries as one vector (computed as
    PyTorch does, as the norm of the per-parameter norms; norm_type may be inf or 'inf'). The
    gradients are multiplied by min(1, max_norm / (norm + 1e-6)) in place.
    Returns the norm before clipping, as a Python float (PyTorch returns a 0-d tensor).
    A non-finite norm raises RuntimeError when error_if_nonfinite, else clips to NaN like PyTorch.
    """
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    grads = _gradients(parameters)
    if not grads:
        return 0.0
    # Norms are accumulated in float64 whatever the gradients' dtype, so float32 sums of many
    # squares lose nothing; the result is then what a float64 computation gives.
    per_parameter = np.array([_vector_norm(g.astype(np.float64, copy=False).reshape(-1), norm_type)
                              for g in grads])
    total = _vector_norm(per_parameter, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` "
                           "is non-finite, so it cannot be clipped. To disable this error and "
                           "scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    scale = min(max_norm / (total + 1e-6), 1.0) if not math.isnan(total) else math.nan
    if scale != 1.0:
        # A non-finite norm gives scale 0 or NaN; inf * 0 = NaN is then the intended result.
        with np.errstate(invalid="ignore"):
            for g in grads:
                g *= g.dtype.type(scale)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamps every gradient entry into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for g in _gradients(parameters):
        np.clip(g, -clip_value, clip_value, out=g)

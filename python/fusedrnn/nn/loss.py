"""Losses with PyTorch's semantics: MSELoss, L1Loss, CrossEntropyLoss, NLLLoss, BCEWithLogitsLoss.

``forward(input, target)`` returns the loss as a NumPy array of the input's dtype: 0-d for
``reduction='mean'`` or ``'sum'``, the per-element losses for ``'none'``. ``backward(grad_output=1.0)``
returns the gradient with respect to `input` (targets get none), with `grad_output` of the loss's
shape. Every loss computes, per element i, a loss L_i and the gradient of L_i with respect to the
input; the reduction then only decides how much of each L_i reaches the total:
  'none': L (grad_output gives each weight), 'sum': sum L, 'mean': sum L / d,
where d is the number of elements, or for class-index targets the summed class weights of the
targets that are not ignored (PyTorch's weighted mean). A mean over nothing is NaN, as in PyTorch.

Losses record what backward needs in training and eval mode alike (model.eval() leaves a
criterion untouched in PyTorch too); each forward can be differentiated once.
"""

import numpy as np

from .._base import as_any_float_array
from .module import Module

__all__ = ["MSELoss", "L1Loss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss"]

_REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{reduction!r} is not a valid value for reduction "
                             f"(expected one of {', '.join(_REDUCTIONS)})")
        self.reduction = reduction
        object.__setattr__(self, "_saved", None)

    def _finish(self, losses, local_grad, class_axis=None, denominator=None):
        """Reduces the per-element `losses` and remembers what backward needs.

        local_grad: d losses[i] / d input, laid out like the input. When class_axis is None it is
        elementwise (losses has the input's shape); otherwise losses lacks that axis of input.
        """
        dtype = local_grad.dtype
        if denominator is None:
            denominator = losses.size
        if self.reduction == "none":
            result = losses
        elif self.reduction == "sum":
            result = np.asarray(losses.sum(dtype=dtype))
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                result = np.asarray(losses.sum(dtype=dtype) / dtype.type(denominator))
        object.__setattr__(self, "_saved", (local_grad, losses.shape, class_axis, denominator))
        return result.astype(dtype, copy=False)

    def backward(self, grad_output=1.0):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward: nothing to differentiate; call "
                               "forward first (backward runs once per forward)")
        local_grad, loss_shape, class_axis, denominator = self._saved
        object.__setattr__(self, "_saved", None)
        dtype = local_grad.dtype
        g = np.asarray(grad_output)
        if g.dtype.kind not in "fiu":
            raise TypeError(f"grad_output must be real, got dtype {g.dtype}")
        g = g.astype(dtype, copy=False)
        expected_shape = loss_shape if self.reduction == "none" else ()
        if g.shape != expected_shape:
            raise ValueError(f"grad_output has shape {g.shape}, expected the loss's {expected_shape}")
        if self.reduction == "mean":
            # With nothing to average (every target ignored) the loss is NaN, but no element
            # contributed, so the gradient is 0 everywhere, as in PyTorch.
            g = g / dtype.type(denominator) if denominator else np.zeros_like(g)
        per_element = np.broadcast_to(g, loss_shape)
        if class_axis is not None:
            per_element = np.expand_dims(per_element, class_axis)
        return (local_grad * per_element).astype(dtype, copy=False)


def _float_target(target, input, name="target"):
    """A real-valued target of the input's shape, converted to the input's dtype."""
    target = np.asarray(target)
    if target.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be real, got dtype {target.dtype}")
    if target.shape != input.shape:
        raise ValueError(f"{name} has shape {target.shape}, expected the input's {input.shape} "
                         "(no broadcasting, which PyTorch only warns about)")
    return target.astype(input.dtype, copy=False)


class MSELoss(_Loss):
    """Squared error (input - target)^2; input and target of the same shape."""

    def __init__(self, reduction="mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        x = as_any_float_array(input)
        diff = x - _float_target(target, x)
        return self._finish(diff * diff, 2 * diff)


class L1Loss(_Loss):
    """Absolute error |input - target|; the gradient at a tie is 0, as in PyTorch."""

    def __init__(self, reduction="mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        x = as_any_float_array(input)
        diff = x - _float_target(target, x)
        return self._finish(np.abs(diff), np.sign(diff))


def _softplus(z):
    """log(1 + exp(z)) without overflow."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy on logits: -w [p y log s(x) + (1 - y) log(1 - s(x))], s = sigmoid.

    input: logits of any shape; target: probabilities in [0, 1] of the same shape. weight
    broadcasts to the input's shape (a rescaling per element); pos_weight (the weight p of
    positive examples) broadcasts too, usually a vector over the last (class) dimension.
    """

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.weight = None if weight is None else np.asarray(weight)
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight)

    def forward(self, input, target):
        x = as_any_float_array(input)
        y = _float_target(target, x)
        try:
            w = 1 if self.weight is None else np.broadcast_to(self.weight.astype(x.dtype), x.shape)
            p = 1 if self.pos_weight is None else np.broadcast_to(self.pos_weight.astype(x.dtype), x.shape)
        except ValueError:
            raise ValueError(f"weight / pos_weight do not broadcast to the input's shape {x.shape}") from None
        # log s(x) = -softplus(-x) and log(1 - s(x)) = -softplus(x); softplus(-x) = softplus(x) - x.
        positive_weight = p * y
        coefficient = (1 - y) + positive_weight
        losses = w * (coefficient * _softplus(x) - positive_weight * x)
        local = w * (coefficient * _sigmoid(x) - positive_weight)
        return self._finish(losses.astype(x.dtype, copy=False), np.asarray(local, dtype=x.dtype))


def _class_layout(x):
    """The class axis of `x`: 0 for an unbatched (C,) input, else 1 ((N, C) or (N, C, d1, ...))."""
    if x.ndim == 0:
        raise ValueError("input must have a class dimension: (C,), (N, C) or (N, C, d1, ...)")
    return 0 if x.ndim == 1 else 1


def _class_weight(weight, num_classes, dtype):
    if weight is None:
        return np.ones(num_classes, dtype=dtype)
    if weight.shape != (num_classes,):
        raise ValueError(f"weight must have shape ({num_classes},) (one per class), got {weight.shape}")
    return weight.astype(dtype)


def _check_weight(weight):
    if weight is None:
        return None
    weight = np.asarray(weight)
    if weight.ndim != 1 or weight.dtype.kind not in "fiu":
        raise ValueError(f"weight must be a 1-D real array with one entry per class, got "
                         f"shape {weight.shape} and dtype {weight.dtype}")
    return weight


def _index_targets(target, x, class_axis, ignore_index):
    """Class-index targets checked against input `x`: (valid mask, indices with ignored -> 0)."""
    target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"class-index targets must be integers, got dtype {target.dtype}")
    expected = x.shape[:class_axis] + x.shape[class_axis + 1:]
    if target.shape != expected:
        raise ValueError(f"target has shape {target.shape}, expected {expected} for an input of "
                         f"shape {x.shape}")
    num_classes = x.shape[class_axis]
    valid = target != ignore_index
    out_of_range = valid & ((target < 0) | (target >= num_classes))
    if out_of_range.any():
        raise IndexError(f"target {target[out_of_range].flat[0]} is out of bounds for "
                         f"{num_classes} classes")
    return valid, np.where(valid, target, 0)


def _weighted_nll(log_probs, valid, safe_target, weight):
    """Per-element -w[t] log_probs[t] (0 where ignored) and its gradient with respect to log_probs;
    class axis last. Also the mean's denominator, the summed weights of the kept targets."""
    target_weight = weight[safe_target] * valid
    picked = np.take_along_axis(log_probs, safe_target[..., None], axis=-1)[..., 0]
    losses = -target_weight * picked
    local = np.zeros_like(log_probs)
    np.put_along_axis(local, safe_target[..., None], -target_weight[..., None], axis=-1)
    return losses, local, target_weight.sum()


class NLLLoss(_Loss):
    """Negative log-likelihood of class-index targets, given log-probabilities.

    input (C,), (N, C) or (N, C, d1, ...); target (), (N,) or (N, d1, ...) of class indices, or
    ignore_index (those elements contribute nothing, not even to the mean's denominator).
    weight: (C,) per-class weights; 'mean' divides by the summed weights of the kept targets.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.weight = _check_weight(weight)
        self.ignore_index = int(ignore_index)

    def forward(self, input, target):
        x = as_any_float_array(input)
        class_axis = _class_layout(x)
        valid, safe_target = _index_targets(target, x, class_axis, self.ignore_index)
        weight = _class_weight(self.weight, x.shape[class_axis], x.dtype)
        losses, local, denominator = _weighted_nll(np.moveaxis(x, class_axis, -1), valid,
                                                   safe_target, weight)
        return self._finish(losses, np.moveaxis(local, -1, class_axis), class_axis, denominator)


class CrossEntropyLoss(_Loss):
    """Cross-entropy of logits: log-softmax over the class axis, then the negative log-likelihood.

    input: logits (C,), (N, C) or (N, C, d1, ...). target either class indices (integers, input's
    shape without the class axis; ignore_index skips an element) or class probabilities (floats,
    input's shape). weight: (C,) per-class weights. label_smoothing e mixes the target with the
    uniform distribution: (1 - e) * NLL + e / C * (sum over classes of -w_c log p_c). With index
    targets, 'mean' divides by the summed weights of the kept targets; with probability targets,
    by the number of elements (PyTorch's rules, weights or not).
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
        self.weight = _check_weight(weight)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        x = as_any_float_array(input)
        class_axis = _class_layout(x)
        num_classes = x.shape[class_axis]
        weight = _class_weight(self.weight, num_classes, x.dtype)
        smoothing = x.dtype.type(self.label_smoothing)
        logits = np.moveaxis(x, class_axis, -1)   # class axis last from here on
        # Subtracting the row maximum keeps exp from overflowing (log-sum-exp).
        shifted = logits - logits.max(axis=-1, keepdims=True, initial=-np.inf)
        log_norm = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        log_probs = shifted - log_norm
        probs = np.exp(log_probs)

        target = np.asarray(target)
        if target.dtype.kind == "f":
            # Class probabilities, smoothed towards uniform.
            soft = _float_target(target, x)
            soft = np.moveaxis(soft, class_axis, -1)
            if smoothing:
                soft = soft * (1 - smoothing) + smoothing / num_classes
            local = -weight * soft
            losses = (local * log_probs).sum(axis=-1)
            denominator = losses.size
        else:
            valid, safe_target = _index_targets(target, x, class_axis, self.ignore_index)
            losses, local, denominator = _weighted_nll(log_probs, valid, safe_target, weight)
            if smoothing:
                # The uniform part: -sum_c w_c log p_c, also dropped for ignored elements.
                uniform_local = -weight * valid[..., None].astype(x.dtype)
                uniform_losses = (uniform_local * log_probs).sum(axis=-1)
                losses = (1 - smoothing) * losses + smoothing / num_classes * uniform_losses
                local = (1 - smoothing) * local + smoothing / num_classes * uniform_local
        # Through log-softmax: d/dx = d/dlogp - softmax * sum over classes of d/dlogp.
        local_x = local - probs * local.sum(axis=-1, keepdims=True)
        return self._finish(losses.astype(x.dtype, copy=False),
                            np.moveaxis(local_x, -1, class_axis).astype(x.dtype, copy=False),
                            class_axis, denominator)

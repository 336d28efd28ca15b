"""Losses with Keras's names, formulas and reduction, each with its gradient.

A loss reduces per-sample values (the mean, or for cross-entropies the sum, over the last axis)
with Keras's ``"sum_over_batch_size"``: their sum divided by their count. When the predictions
carry a mask (a sequence output after Masking or ``mask_zero``), masked steps count for nothing
and the mean is over the unmasked ones, as Keras does.

Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` (Keras's epsilon) before logarithms, and
categorical predictions are first normalised to sum to one, exactly as Keras computes them, so
losses and gradients match Keras's.
"""

import numpy as np

from .layers.base import _snake_case

__all__ = ["Loss", "MeanSquaredError", "MeanAbsoluteError", "BinaryCrossentropy", "CategoricalCrossentropy",
           "SparseCategoricalCrossentropy", "mean_squared_error", "mean_absolute_error", "binary_crossentropy",
           "categorical_crossentropy", "sparse_categorical_crossentropy", "mse", "mae", "get"]

EPSILON = 1e-7


def _same_rank(y_true, y_pred):
    """Keras's squeeze_or_expand_to_same_rank: (B,) targets against (B, 1) predictions."""
    if y_true.ndim == y_pred.ndim - 1 and y_pred.shape[-1] == 1:
        y_true = y_true[..., None]
    elif y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return y_true


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


class Loss:
    """Base class. Subclasses implement ``_values_and_grad(y_true, y_pred)`` returning the
    per-sample values (shape ``y_pred.shape[:-1]``) and, laid out like y_pred, the gradient of
    each sample's value with respect to its predictions."""

    def __init__(self, name=None, reduction="sum_over_batch_size"):
        if reduction != "sum_over_batch_size":
            raise NotImplementedError(f"reduction={reduction!r}: only 'sum_over_batch_size' (Keras's "
                                      "default) is supported")
        self.name = name or _snake_case(type(self).__name__)
        self.reduction = reduction

    def _targets(self, y_true, y_pred):
        y_true = _same_rank(np.asarray(y_true), y_pred).astype(y_pred.dtype, copy=False)
        if y_true.shape != y_pred.shape:
            raise ValueError(f"{self.name}: targets of shape {y_true.shape} do not match predictions of "
                             f"shape {y_pred.shape}")
        return y_true

    @staticmethod
    def mean_count(y_pred, mask=None):
        """How many values the reduced loss is the mean of: every sample (and step) of y_pred,
        or the unmasked ones. Data-parallel training weighs each process's loss by it."""
        shape = np.shape(y_pred)[:-1]
        if mask is None:
            return int(np.prod(shape))
        return int(np.broadcast_to(np.asarray(mask, bool), shape).sum())

    def value_and_grad(self, y_true, y_pred, mask=None):
        """The reduced loss (a float) and its gradient with respect to y_pred."""
        y_pred = np.asarray(y_pred)
        if y_pred.dtype not in (np.float32, np.float64):
            y_pred = y_pred.astype(np.float32)
        values, local = self._values_and_grad(y_true, y_pred)
        weights = np.ones(values.shape, y_pred.dtype)
        if mask is not None:
            mask = np.broadcast_to(np.asarray(mask, bool), values.shape)
            valid = mask.sum()
            # Keras weighs unmasked entries by count / valid so that the mean is over them.
            weights = np.where(mask, values.size / valid if valid else 0, 0).astype(y_pred.dtype)
        count = max(values.size, 1)
        loss = float((values * weights).sum(dtype=np.float64) / count)
        grad = local * (weights / y_pred.dtype.type(count))[..., None]
        return loss, grad.astype(y_pred.dtype, copy=False)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise NotImplementedError("sample_weight is not supported")
        return self.value_and_grad(y_true, y_pred)[0]

    def call(self, y_true, y_pred):
        """The per-sample values."""
        y_pred = np.asarray(y_pred)
        return self._values_and_grad(y_true, y_pred.astype(np.result_type(y_pred.dtype, np.float32)))[0]

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


class MeanSquaredError(Loss):
    def _values_and_grad(self, y_true, y_pred):
        diff = y_pred - self._targets(y_true, y_pred)
        return (diff * diff).mean(axis=-1), 2 * diff / diff.shape[-1]


class MeanAbsoluteError(Loss):
    def _values_and_grad(self, y_true, y_pred):
        diff = y_pred - self._targets(y_true, y_pred)
        return np.abs(diff).mean(axis=-1), np.sign(diff) / diff.shape[-1]


class BinaryCrossentropy(Loss):
    """Mean over the last axis of ``-(y log p + (1 - y) log(1 - p))``; p are probabilities, or
    logits with ``from_logits=True``. ``label_smoothing`` moves targets towards 0.5."""

    def __init__(self, from_logits=False, label_smoothing=0.0, name="binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)

    def _values_and_grad(self, y_true, y_pred):
        y = self._targets(y_true, y_pred)
        if self.label_smoothing:
            y = y * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        width = y_pred.shape[-1]
        if self.from_logits:
            z = y_pred
            values = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
            return values.mean(axis=-1), (_sigmoid(z) - y) / width
        p = np.clip(y_pred, EPSILON, 1 - EPSILON)
        inside = (y_pred >= EPSILON) & (y_pred <= 1 - EPSILON)   # clipped entries get no gradient
        values = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        return values.mean(axis=-1), (-y / p + (1 - y) / (1 - p)) * inside / width


class CategoricalCrossentropy(Loss):
    """``-sum(y * log p)`` over the last (class) axis, targets one-hot (or probabilities).
    Probabilities are normalised to sum to one and clipped first, as Keras does; with
    ``from_logits=True`` the predictions are logits (a softmax is applied)."""

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, name="categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if axis != -1:
            raise NotImplementedError("only axis=-1 is supported")
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)

    def _values_and_grad(self, y_true, y_pred):
        y = self._targets(y_true, y_pred)
        return self._from_one_hot(y, y_pred)

    def _from_one_hot(self, y, y_pred):
        if self.label_smoothing:
            y = y * (1 - self.label_smoothing) + self.label_smoothing / y.shape[-1]
        if self.from_logits:
            shifted = y_pred - y_pred.max(axis=-1, keepdims=True)
            log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
            values = -(y * log_softmax).sum(axis=-1)
            return values, np.exp(log_softmax) * y.sum(axis=-1, keepdims=True) - y
        total = y_pred.sum(axis=-1, keepdims=True)
        q = y_pred / total
        q_clipped = np.clip(q, EPSILON, 1 - EPSILON)
        values = -(y * np.log(q_clipped)).sum(axis=-1)
        # Through the clip (no gradient where it bites) and the normalisation q = p / sum(p).
        dq = -y / q_clipped * ((q >= EPSILON) & (q <= 1 - EPSILON))
        return values, (dq - (dq * q).sum(axis=-1, keepdims=True)) / total


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer class targets of shape ``y_pred.shape[:-1]`` (or
    with a trailing axis of 1)."""

    def __init__(self, from_logits=False, ignore_class=None, name="sparse_categorical_crossentropy", **kwargs):
        if ignore_class is not None:
            raise NotImplementedError("ignore_class is not supported")
        super().__init__(from_logits=from_logits, name=name, **kwargs)

    def _values_and_grad(self, y_true, y_pred):
        labels = np.asarray(y_true)
        if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
            labels = labels[..., 0]
        if labels.shape != y_pred.shape[:-1]:
            raise ValueError(f"{self.name}: targets of shape {np.shape(y_true)} do not match predictions of "
                             f"shape {y_pred.shape} (expected one class index per prediction)")
        labels = labels.astype(np.int64)
        classes = y_pred.shape[-1]
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(f"{self.name}: class indices must lie in [0, {classes}), got values from "
                             f"{labels.min()} to {labels.max()}")
        one_hot = (labels[..., None] == np.arange(classes)).astype(y_pred.dtype)
        return self._from_one_hot(one_hot, y_pred)


class _Function:
    """A Keras loss function, ``f(y_true, y_pred)`` -> per-sample values; in compile it stands for
    its Loss class."""

    def __init__(self, name, loss_class):
        self.__name__ = name
        self.loss_class = loss_class

    def __call__(self, y_true, y_pred, **options):
        return self.loss_class(**options).call(y_true, y_pred)

    def __repr__(self):
        return f"<loss function {self.__name__}>"


mean_squared_error = _Function("mean_squared_error", MeanSquaredError)
mean_absolute_error = _Function("mean_absolute_error", MeanAbsoluteError)
binary_crossentropy = _Function("binary_crossentropy", BinaryCrossentropy)
categorical_crossentropy = _Function("categorical_crossentropy", CategoricalCrossentropy)
sparse_categorical_crossentropy = _Function("sparse_categorical_crossentropy", SparseCategoricalCrossentropy)
mse, mae = mean_squared_error, mean_absolute_error

_BY_NAME = {f.__name__: f for f in (mean_squared_error, mean_absolute_error, binary_crossentropy,
                                      categorical_crossentropy, sparse_categorical_crossentropy)}
_BY_NAME.update(mse=mean_squared_error, mae=mean_absolute_error)
_BY_NAME.update({f.loss_class.__name__: f for f in list(_BY_NAME.values())})


def get(identifier):
    """A Loss object from a name (``"mse"``, ``"categorical_crossentropy"``, ...), one of this
    module's functions, or a Loss (returned as is)."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier].loss_class()
    if isinstance(identifier, _Function):
        return identifier.loss_class()
    raise ValueError(f"unsupported loss {identifier!r}: fusedrnn.keras supports {', '.join(sorted(_BY_NAME))} "
                     "(by name, as fusedrnn.keras.losses functions or Loss objects); custom losses cannot be "
                     "differentiated here")

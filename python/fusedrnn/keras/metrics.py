"""Metrics with Keras's names and semantics: running means over every sample seen since the
last reset (``update_state``, ``result``, ``reset_state``).

``"accuracy"`` (or ``"acc"``) in compile becomes binary, categorical or sparse categorical
accuracy from the shapes of targets and predictions, as Keras chooses. Masked steps of a
sequence output are left out, as Keras leaves them out.
"""

import numpy as np

from .layers.base import _snake_case
from .losses import _same_rank

__all__ = ["Metric", "Mean", "MeanMetricWrapper", "BinaryAccuracy", "CategoricalAccuracy",
           "SparseCategoricalAccuracy", "MeanAbsoluteError", "MeanSquaredError", "binary_accuracy",
           "categorical_accuracy", "sparse_categorical_accuracy", "mean_absolute_error",
           "mean_squared_error", "mae", "mse", "get"]


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """Per sample: the fraction of outputs on the right side of `threshold` (last axis)."""
    y_pred = np.asarray(y_pred)
    y_true = _same_rank(np.asarray(y_true), y_pred)
    return ((y_pred > threshold) == (y_true > 0.5)).mean(axis=-1)


def categorical_accuracy(y_true, y_pred):
    """Per sample: 1 where the arg-max of the prediction is that of the one-hot target."""
    return (np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)).astype(np.float64)


def sparse_categorical_accuracy(y_true, y_pred):
    """Per sample: 1 where the arg-max of the prediction is the integer target."""
    y_pred = np.asarray(y_pred)
    labels = np.asarray(y_true)
    if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
        labels = labels[..., 0]
    return (np.argmax(y_pred, axis=-1) == labels.astype(np.int64)).astype(np.float64)


def mean_absolute_error(y_true, y_pred):
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return np.abs(y_pred - _same_rank(np.asarray(y_true), y_pred)).mean(axis=-1)


def mean_squared_error(y_true, y_pred):
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return ((y_pred - _same_rank(np.asarray(y_true), y_pred)) ** 2).mean(axis=-1)


mae, mse = mean_absolute_error, mean_squared_error


class Metric:
    """Base class: a running value; ``update_state(...)``, ``result()`` (a float), ``reset_state()``."""

    def __init__(self, name=None, dtype=None):
        self.name = name or _snake_case(type(self).__name__)
        self.reset_state()

    def reset_state(self):
        raise NotImplementedError

    reset_states = reset_state

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


class Mean(Metric):
    """The (weighted) mean of every value given to ``update_state``."""

    def reset_state(self):
        self.total, self.count = 0.0, 0.0

    def update_state(self, values, sample_weight=None):
        values = np.asarray(values, dtype=np.float64)
        if sample_weight is None:
            self.total += float(values.sum())
            self.count += values.size
        else:
            weights = np.broadcast_to(np.asarray(sample_weight, dtype=np.float64), values.shape)
            self.total += float((values * weights).sum())
            self.count += float(weights.sum())

    def result(self):
        return self.total / self.count if self.count else 0.0


class MeanMetricWrapper(Mean):
    """The mean over samples of ``fn(y_true, y_pred)`` (per-sample values)."""

    def __init__(self, fn, name=None, dtype=None, **fn_options):
        self._fn, self._fn_options = fn, fn_options
        super().__init__(name=name or fn.__name__, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None, mask=None):
        values = self._fn(y_true, y_pred, **self._fn_options)
        if mask is not None:   # masked steps have weight 0 (Keras's mask-as-sample-weight)
            mask = np.asarray(mask, dtype=np.float64)
            sample_weight = mask if sample_weight is None else mask * sample_weight
        super().update_state(values, sample_weight)


class BinaryAccuracy(MeanMetricWrapper):
    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=threshold)


class CategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="categorical_accuracy", dtype=None):
        super().__init__(categorical_accuracy, name=name, dtype=dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="sparse_categorical_accuracy", dtype=None):
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)


class MeanAbsoluteError(MeanMetricWrapper):
    def __init__(self, name="mean_absolute_error", dtype=None):
        super().__init__(mean_absolute_error, name=name, dtype=dtype)


class MeanSquaredError(MeanMetricWrapper):
    def __init__(self, name="mean_squared_error", dtype=None):
        super().__init__(mean_squared_error, name=name, dtype=dtype)


_BY_NAME = {
    "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy, "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError, "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
}
_FUNCTIONS = {binary_accuracy: BinaryAccuracy, categorical_accuracy: CategoricalAccuracy,
              sparse_categorical_accuracy: SparseCategoricalAccuracy, mean_absolute_error: MeanAbsoluteError,
              mean_squared_error: MeanSquaredError}


def get(identifier, y_true=None, y_pred=None):
    """A Metric from a name, one of this module's functions or classes, or a Metric (as is).
    ``"accuracy"``/``"acc"`` needs y_true and y_pred to choose its kind, as in Keras; names given
    as strings keep that name (the History key)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if identifier in _FUNCTIONS:
        return _FUNCTIONS[identifier]()
    if isinstance(identifier, str):
        if identifier.lower() in ("accuracy", "acc"):
            if y_true is None or y_pred is None:
                raise ValueError("'accuracy' needs targets and predictions to choose its kind")
            y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
            if y_pred.shape[-1] == 1:
                return BinaryAccuracy(name=identifier)
            if y_true.ndim < y_pred.ndim or y_true.shape[-1] == 1:
                return SparseCategoricalAccuracy(name=identifier)
            return CategoricalAccuracy(name=identifier)
        if identifier in _BY_NAME:
            return _BY_NAME[identifier](name=identifier)
    raise ValueError(f"unsupported metric {identifier!r}: fusedrnn.keras supports 'accuracy', "
                     f"{', '.join(sorted(_BY_NAME))}")

"""Dense, Activation, Embedding, Masking and Dropout, with Keras's arguments and weights."""

import math

import numpy as np

from ..._random import resolve_rng
from ..._base import matmul
from .. import activations, initializers
from .base import Layer, reject_unsupported

__all__ = ["Dense", "Activation", "Embedding", "Masking", "Dropout", "TimeDistributed"]


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Dense(Layer):
    """``y = activation(x @ kernel + bias)`` over the last axis of an input of any rank (on a
    sequence it applies to every step). kernel ``(in, units)``, bias ``(units,)``. Passes masks on."""

    supports_masking = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        reject_unsupported("Dense", kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                           activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                           bias_constraint=bias_constraint)
        self.units = _check_positive_int(units, "units")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self._config.update(units=self.units, activation=self.activation.__name__, use_bias=self.use_bias,
                            kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"{self.name}: the last dimension of the input must be known, got {input_shape}")
        self._add_param("kernel", self.kernel_initializer((features, self.units), self.dtype))
        if self.use_bias:
            self._add_param("bias", self.bias_initializer((self.units,), self.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, mask=None, training=False):
        x = self._float_input(x)
        kernel = self._params["kernel"].data
        if x.shape[-1] != kernel.shape[0]:
            raise ValueError(f"{self.name}: input has {x.shape[-1]} features, the layer was built for "
                             f"{kernel.shape[0]}")
        rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
        z = matmul(rows, kernel)
        if self.use_bias:
            z += self._params["bias"].data
        y = self.activation(z)
        self._save(training, rows, z, y, x.shape)
        return y.reshape(x.shape[:-1] + (self.units,)), mask

    def backward(self, grad):
        dz, shape = self._weights_backward(grad)
        return matmul(dz, self._params["kernel"].data.T).reshape(shape)

    def backward_weights_only(self, grad):
        self._weights_backward(grad)

    def _weights_backward(self, grad):
        """Adds the weights' gradients; returns the pre-activation's gradient and the input's shape."""
        rows, z, y, shape = self._take_saved()
        dz = self.activation.backward(np.asarray(grad, dtype=self.dtype).reshape(y.shape), z, y)
        dz = np.ascontiguousarray(dz, dtype=self.dtype)
        self._params["kernel"].accumulate_grad(matmul(rows.T, dz))
        if self.use_bias:
            self._params["bias"].accumulate_grad(dz.sum(axis=0))
        return dz, shape


class Activation(Layer):
    """Applies an activation function; passes masks on."""

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self._config.update(activation=self.activation.__name__)

    def forward(self, x, mask=None, training=False):
        x = self._float_input(x)
        y = self.activation(x)
        self._save(training, x, y)
        return y, mask

    def backward(self, grad):
        x, y = self._take_saved()
        return self.activation.backward(np.asarray(grad, dtype=self.dtype), x, y)


class Embedding(Layer):
    """Integer indices ``(...)`` -> vectors ``(..., output_dim)`` from ``embeddings (input_dim,
    output_dim)``. With ``mask_zero`` index 0 is padding: the output mask is ``indices != 0``.
    ``input_length`` (Keras 2) is accepted and ignored, as Keras 3 does."""

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 embeddings_constraint=None, mask_zero=False, input_length=None, **kwargs):
        super().__init__(**kwargs)
        reject_unsupported("Embedding", embeddings_regularizer=embeddings_regularizer,
                           embeddings_constraint=embeddings_constraint)
        self.input_dim = _check_positive_int(input_dim, "input_dim")
        self.output_dim = _check_positive_int(output_dim, "output_dim")
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)
        self._config.update(input_dim=self.input_dim, output_dim=self.output_dim, mask_zero=self.mask_zero,
                            embeddings_initializer=self.embeddings_initializer)

    def build(self, input_shape):
        self._add_param("embeddings", self.embeddings_initializer((self.input_dim, self.output_dim), self.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def forward(self, x, mask=None, training=False):
        indices = np.asarray(x)
        if indices.dtype.kind == "f":
            # Keras casts float inputs (e.g. from a float array of padded ids) to integers.
            indices = indices.astype(np.int64)
        elif indices.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: inputs must be integer indices, got dtype {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.input_dim):
            bad = indices[(indices < 0) | (indices >= self.input_dim)].flat[0]
            raise IndexError(f"{self.name}: index {bad} is out of range for input_dim={self.input_dim}")
        self._save(training, indices)
        out_mask = indices != 0 if self.mask_zero else None
        return self._params["embeddings"].data[indices], out_mask

    def backward(self, grad):
        (indices,) = self._take_saved()
        grad = np.asarray(grad, dtype=self.dtype).reshape(-1, self.output_dim)
        table = np.zeros((self.input_dim, self.output_dim), self.dtype)
        np.add.at(table, indices.reshape(-1), grad)
        self._params["embeddings"].accumulate_grad(table)
        return None   # integer indices have no gradient


class Masking(Layer):
    """Masks every time step whose features all equal ``mask_value``: such steps become zeros and
    the output mask (batch, time) is False there, so recurrent layers downstream skip them."""

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = mask_value
        self._config.update(mask_value=mask_value)

    def forward(self, x, mask=None, training=False):
        x = self._float_input(x)
        keep = np.any(x != self.mask_value, axis=-1)
        self._save(training, keep)
        return np.where(keep[..., None], x, 0).astype(self.dtype, copy=False), keep

    def backward(self, grad):
        (keep,) = self._take_saved()
        return np.asarray(grad, dtype=self.dtype) * keep[..., None]


class Dropout(Layer):
    """In training, zeroes each input element with probability ``rate`` and scales the others by
    ``1/(1-rate)``; the identity in inference. ``noise_shape`` shares one draw along axes of size 1
    (None entries take the input's size). ``seed`` fixes the draws; without one they come from the
    shared generator (``fusedrnn.manual_seed``)."""

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be a number in [0, 1], got {rate!r}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self._generator = None if seed is None else resolve_rng(seed)
        self._config.update(rate=self.rate, noise_shape=self.noise_shape, seed=seed)

    def forward(self, x, mask=None, training=False):
        x = self._float_input(x)
        if not training or self.rate == 0:
            self._save(training, None)
            return x, mask
        shape = x.shape
        if self.noise_shape is not None:
            shape = tuple(x.shape[i] if s is None else s for i, s in enumerate(self.noise_shape))
        generator = self._generator or resolve_rng(None)
        keep = generator.random(shape) >= self.rate
        if self.rate < 1:
            scale = keep.astype(self.dtype) / self.dtype.type(1 - self.rate)
        else:
            scale = np.zeros(shape, self.dtype)   # everything dropped: 1/(1-rate) is undefined
        self._save(training, scale)
        return x * scale, mask

    def backward(self, grad):
        (scale,) = self._take_saved()
        grad = np.asarray(grad, dtype=self.dtype)
        return grad if scale is None else grad * scale


class TimeDistributed(Layer):
    """Applies `layer` to every time step: ``(batch, time, ...)`` runs as ``(batch * time, ...)``
    through it. Its weights are the wrapped layer's; masks pass through."""

    supports_masking = True

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed wraps a layer, got {type(layer).__name__}")
        kwargs.setdefault("dtype", layer.dtype.name)
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f"{self.name}: expected an input of shape (batch, time, ...), got {tuple(input_shape)}")
        self.layer._ensure_built((None,) + tuple(input_shape[2:]))

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return tuple(input_shape[:2]) + tuple(inner[1:])

    @property
    def _sublayers(self):
        return (self.layer,)

    def forward(self, x, mask=None, training=False):
        x = np.asarray(x)
        y, _ = self.layer.forward(x.reshape((-1,) + x.shape[2:]), None, training)
        self._save(training, x.shape)
        return y.reshape(x.shape[:2] + y.shape[1:]), mask

    def backward(self, grad):
        (shape,) = self._take_saved()
        grad = np.asarray(grad)
        dx = self.layer.backward(grad.reshape((-1,) + grad.shape[2:]))
        return None if dx is None else dx.reshape(shape)

"""Activation functions by Keras's names, each with the derivative that Dense's backward needs.

``get(identifier)`` takes a name (``"relu"``), None (linear) or one of the objects below, which are
callable on arrays like Keras's functions. Only these can be differentiated here (there is no
autograd), so anything else raises a ValueError listing them.
"""

import numpy as np

__all__ = ["linear", "relu", "sigmoid", "tanh", "softmax", "softplus", "softsign", "elu", "selu",
           "swish", "silu", "exponential", "get", "serialize"]

# SELU's constants (Klambauer et al., 2017), as Keras uses them.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class Activation:
    """An elementwise (or, for softmax, last-axis) function ``y = f(x)`` and its backward.

    ``backward(g, x, y)`` is the gradient of ``sum(g * f(x))`` with respect to x; it gets both x
    and y so that each derivative can use whichever is cheaper.
    """

    def __init__(self, name, function, backward):
        self.__name__ = name
        self._function = function
        self._backward = backward

    def __call__(self, x):
        return self._function(np.asarray(x))

    def backward(self, g, x, y):
        return self._backward(g, x, y)

    def __repr__(self):
        return f"<activation {self.__name__}>"


def _sigmoid(x):
    # exp of -|x| only, so large |x| cannot overflow.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _softmax(x):
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


linear = Activation("linear", lambda x: x, lambda g, x, y: g)
relu = Activation("relu", lambda x: np.maximum(x, 0), lambda g, x, y: g * (x > 0))
sigmoid = Activation("sigmoid", _sigmoid, lambda g, x, y: g * y * (1 - y))
tanh = Activation("tanh", np.tanh, lambda g, x, y: g * (1 - y * y))
# d softmax: J^T g = y * (g - sum(g * y)) along the class axis.
softmax = Activation("softmax", _softmax, lambda g, x, y: y * (g - (g * y).sum(axis=-1, keepdims=True)))
softplus = Activation("softplus", _softplus, lambda g, x, y: g * _sigmoid(x))
softsign = Activation("softsign", lambda x: x / (1 + np.abs(x)), lambda g, x, y: g / (1 + np.abs(x)) ** 2)
elu = Activation("elu", _elu, lambda g, x, y: g * np.where(x > 0, 1, y + 1))
selu = Activation("selu", lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0))),
                  lambda g, x, y: g * np.where(x > 0, _SELU_SCALE, y + _SELU_SCALE * _SELU_ALPHA))
silu = Activation("silu", lambda x: x * _sigmoid(x),
                  lambda g, x, y: g * (_sigmoid(x) * (1 + x * (1 - _sigmoid(x)))))
swish = silu
exponential = Activation("exponential", np.exp, lambda g, x, y: g * y)

_BY_NAME = {a.__name__: a for a in (linear, relu, sigmoid, tanh, softmax, softplus, softsign, elu, selu,
                                    silu, exponential)}
_BY_NAME["swish"] = silu


def get(identifier):
    """The Activation for a name, None (linear) or an Activation."""
    if identifier is None:
        return linear
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]
    raise ValueError(f"unsupported activation {identifier!r}: fusedrnn.keras supports "
                     f"{', '.join(sorted(_BY_NAME))} (by name or as fusedrnn.keras.activations.<name>)")


def serialize(activation):
    """The activation's name."""
    return get(activation).__name__

"""Weight initializers with Keras's names, arguments and distributions.

An initializer is called as ``init(shape, dtype=None)`` and returns a NumPy array. With ``seed``
(an int) every call draws the same values; without one, values come from the package's shared
generator, which ``fusedrnn.manual_seed`` (or ``fusedrnn.keras.utils.set_random_seed``) seeds.
"""

import math

import numpy as np

from .._random import resolve_rng

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform", "TruncatedNormal",
           "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
           "LecunNormal", "Orthogonal", "get"]


def _dtype(dtype):
    return np.dtype("float32" if dtype is None else dtype)


def _fans(shape):
    """(fan_in, fan_out) as Keras computes them: rows and columns of a matrix; for more dimensions
    the leading ones form a receptive field that multiplies both."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class. Subclasses implement ``_draw(shape, generator)`` (float64 values)."""

    seed = None

    def __call__(self, shape, dtype=None):
        shape = tuple(int(s) for s in shape)
        generator = resolve_rng(self.seed)   # an int seed gives a fresh generator: the same values
        return np.asarray(self._draw(shape, generator), dtype=np.float64).astype(_dtype(dtype))

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def _draw(self, shape, generator):
        return np.zeros(shape)


class Ones(Initializer):
    def _draw(self, shape, generator):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = value

    def _draw(self, shape, generator):
        return np.broadcast_to(np.asarray(self.value, dtype=np.float64), shape).copy()

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def _draw(self, shape, generator):
        return generator.normal(self.mean, self.stddev, shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def _draw(self, shape, generator):
        return generator.uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


def _truncated_normal(generator, shape, stddev):
    """N(0, stddev) restricted to two standard deviations, by redrawing what falls outside."""
    values = generator.standard_normal(shape)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = generator.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2
    return values * stddev


class TruncatedNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def _draw(self, shape, generator):
        return self.mean + _truncated_normal(generator, shape, self.stddev)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class VarianceScaling(Initializer):
    """Variance ``scale / n`` with n = fan_in, fan_out or their average (mode); drawn from a
    truncated normal, a normal or a uniform distribution of that variance."""

    _MODES = ("fan_in", "fan_out", "fan_avg")
    _DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if mode not in self._MODES:
            raise ValueError(f"mode must be one of {self._MODES}, got {mode!r}")
        distribution = "untruncated_normal" if distribution == "normal" else distribution
        if distribution not in self._DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {self._DISTRIBUTIONS}, got {distribution!r}")
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed

    def _draw(self, shape, generator):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3 * variance)
            return generator.uniform(-limit, limit, shape)
        if self.distribution == "untruncated_normal":
            return generator.normal(0.0, math.sqrt(variance), shape)
        # The standard deviation of N(0, 1) truncated to [-2, 2], so the result has `variance`.
        return _truncated_normal(generator, shape, math.sqrt(variance) / 0.87962566103423978)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


class _NamedVarianceScaling(VarianceScaling):
    _SCALE, _MODE, _DISTRIBUTION = 1.0, "fan_in", "truncated_normal"

    def __init__(self, seed=None):
        super().__init__(self._SCALE, self._MODE, self._DISTRIBUTION, seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotUniform(_NamedVarianceScaling):
    """U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""
    _MODE, _DISTRIBUTION = "fan_avg", "uniform"


class GlorotNormal(_NamedVarianceScaling):
    _MODE = "fan_avg"


class HeUniform(_NamedVarianceScaling):
    _SCALE, _DISTRIBUTION = 2.0, "uniform"


class HeNormal(_NamedVarianceScaling):
    _SCALE = 2.0


class LecunUniform(_NamedVarianceScaling):
    _DISTRIBUTION = "uniform"


class LecunNormal(_NamedVarianceScaling):
    pass


class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times gain: the Q of a Gaussian matrix's QR decomposition, with
    signs fixed by R's diagonal so the distribution is uniform. More than two dimensions are
    flattened to (prod of leading, last)."""

    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = gain, seed

    def _draw(self, shape, generator):
        if len(shape) < 2:
            raise ValueError(f"the Orthogonal initializer needs a shape of 2 or more dimensions, got {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        q, r = np.linalg.qr(generator.standard_normal((max(rows, cols), min(rows, cols))))
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q).reshape(shape)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


_ALIASES = {
    "zeros": Zeros, "zero": Zeros, "ones": Ones, "one": Ones, "constant": Constant,
    "random_normal": RandomNormal, "normal": RandomNormal, "random_uniform": RandomUniform,
    "uniform": RandomUniform, "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_uniform": HeUniform,
    "he_normal": HeNormal, "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
    "orthogonal": Orthogonal,
}
_ALIASES.update({cls.__name__: cls for cls in set(_ALIASES.values())})


def get(identifier):
    """An initializer from a name (``"glorot_uniform"`` or ``"GlorotUniform"``), a Keras-style
    config dict ``{"class_name": ..., "config": {...}}``, an instance, or any callable
    ``f(shape, dtype)``."""
    if isinstance(identifier, str):
        if identifier not in _ALIASES:
            raise ValueError(f"unknown initializer {identifier!r}; known: {', '.join(sorted(_ALIASES))}")
        return _ALIASES[identifier]()
    if isinstance(identifier, dict):
        return _ALIASES[identifier["class_name"]](**identifier.get("config", {}))
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"could not interpret initializer {identifier!r}")

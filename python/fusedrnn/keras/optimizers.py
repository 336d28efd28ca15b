"""Optimizers with Keras's names, defaults and update rules (which differ from PyTorch's:
Adam's epsilon is added to sqrt(v) after the bias correction is folded into the step size,
RMSprop's epsilon sits inside the square root, SGD's momentum buffer holds -lr * g).

They update ``fusedrnn.nn.Parameter`` objects in place from their ``.grad``, bumping the version
of each one they update once per step. The options every
optimizer takes, as in Keras: ``weight_decay`` (decoupled: ``p -= lr * weight_decay * p``),
``clipnorm`` (per weight), ``global_clipnorm`` and ``clipvalue``. ``learning_rate`` is a float
(settable, as callbacks do) or a callable of the step count (a schedule).
"""

import math

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "get"]


class Optimizer:
    """Base class; subclasses implement ``_update(data, grad, slots, lr)``, which updates a
    weight's array `data` in place; ``apply`` then bumps its Parameter's version."""

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name=None, **unsupported):
        for option in ("use_ema", "loss_scale_factor", "gradient_accumulation_steps"):
            if unsupported.pop(option, None):
                raise NotImplementedError(f"{option} is not supported")
        for option in ("ema_momentum", "ema_overwrite_frequency"):
            unsupported.pop(option, None)
        if unsupported:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s): {', '.join(unsupported)}")
        if sum(option is not None for option in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("give at most one of clipnorm, clipvalue and global_clipnorm")
        self._learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._slots = {}   # Parameter -> dict of arrays (the optimizer's per-weight state)

    @property
    def learning_rate(self):
        """The current learning rate (a schedule evaluated at the current step)."""
        if callable(self._learning_rate):
            return float(self._learning_rate(self.iterations))
        return float(self._learning_rate)

    @learning_rate.setter
    def learning_rate(self, value):
        self._learning_rate = value

    def _clipped(self, grads):
        """grads: one list of arrays per Keras variable (see apply)."""
        def norm(arrays):
            return math.sqrt(sum(float((g * g).sum()) for g in arrays))

        if self.clipnorm:
            return [[g * (self.clipnorm / max(norm(group), self.clipnorm)) for g in group] for group in grads]
        if self.global_clipnorm:
            total = norm([g for group in grads for g in group])
            return [[g * (self.global_clipnorm / max(total, self.global_clipnorm)) for g in group] for group in grads]
        if self.clipvalue:
            return [[np.clip(g, -self.clipvalue, self.clipvalue) for g in group] for group in grads]
        return grads

    def apply(self, variables):
        """One step on every Parameter that has a gradient. `variables`: Parameters, or lists of
        Parameters that together are one Keras variable (a GRU's bias is two Parameters here,
        one variable in Keras: clipnorm takes the norm over both)."""
        groups = [[p for p in (v if isinstance(v, (list, tuple)) else [v]) if p.grad is not None]
                  for v in variables]
        groups = [group for group in groups if group]
        lr = self.learning_rate
        grads = self._clipped([[np.asarray(p.grad, dtype=p.data.dtype) for p in group] for group in groups])
        for group, group_grads in zip(groups, grads):
            for param, grad in zip(group, group_grads):
                data = param.data
                if self.weight_decay:
                    data -= data * (self.weight_decay * lr)
                self._update(data, grad, self._slots.setdefault(param, {}), lr)
                param.bump_version()
        self.iterations += 1

    def _update(self, data, grad, slots, lr):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name, "learning_rate": self._learning_rate, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}

    def __repr__(self):
        return f"<{type(self).__name__} learning_rate={self.learning_rate}>"


def _slot(slots, name, data, fill=0.0):
    if name not in slots:
        slots[name] = np.full_like(data, fill)
    return slots[name]


class SGD(Optimizer):
    """``m = momentum * m - lr * g``; ``p += m`` (nesterov: ``p += momentum * m - lr * g``);
    without momentum ``p -= lr * g``."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name="SGD", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _update(self, data, grad, slots, lr):
        if not self.momentum:
            data -= lr * grad
            return
        m = _slot(slots, "momentum", data)
        m *= self.momentum
        m -= lr * grad
        data += self.momentum * m - lr * grad if self.nesterov else m


class Adam(Optimizer):
    """``m += (g - m)(1 - beta_1)``, ``v += (g^2 - v)(1 - beta_2)``;
    ``p -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 name="adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, bool(amsgrad)

    def _update(self, data, grad, slots, lr):
        step = self.iterations + 1
        alpha = lr * math.sqrt(1 - self.beta_2 ** step) / (1 - self.beta_1 ** step)
        m, v = _slot(slots, "momentum", data), _slot(slots, "velocity", data)
        m += (grad - m) * (1 - self.beta_1)
        v += (grad * grad - v) * (1 - self.beta_2)
        if self.amsgrad:
            v = np.maximum(_slot(slots, "velocity_hat", data), v, out=slots["velocity_hat"])
        data -= (m * alpha) / (np.sqrt(v) + self.epsilon)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.004, Keras's)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name="adamw", **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay, name=name, **kwargs)


class RMSprop(Optimizer):
    """``v = rho v + (1 - rho) g^2`` (centered: minus the square of the running mean of g);
    ``step = lr g / sqrt(v + epsilon)``; with momentum ``m = momentum m + step``, ``p -= m``."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 name="rmsprop", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, bool(centered)

    def _update(self, data, grad, slots, lr):
        v = _slot(slots, "velocity", data)
        v *= self.rho
        v += (1 - self.rho) * grad * grad
        denominator = v + self.epsilon
        if self.centered:
            average = _slot(slots, "average_gradient", data)
            average *= self.rho
            average += (1 - self.rho) * grad
            denominator = denominator - average * average
        step = lr * grad / np.sqrt(denominator)
        if self.momentum > 0:
            m = _slot(slots, "momentum", data)
            m *= self.momentum
            m += step
            step = m
        data -= step


class Adagrad(Optimizer):
    """``a += g^2`` (starting at initial_accumulator_value); ``p -= lr g / sqrt(a + epsilon)``."""

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name="adagrad", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon

    def _update(self, data, grad, slots, lr):
        accumulator = _slot(slots, "accumulator", data, self.initial_accumulator_value)
        accumulator += grad * grad
        data -= lr * grad / np.sqrt(accumulator + self.epsilon)


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def get(identifier):
    """An optimizer from a name (Keras's defaults) or an Optimizer (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"unsupported optimizer {identifier!r}: fusedrnn.keras supports {', '.join(_BY_NAME)}")

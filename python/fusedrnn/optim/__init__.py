"""Optimizers with torch.optim's interface, defaults and update rules: SGD, Adam, AdamW, RMSprop,
Adagrad, and ``lr_scheduler``.

They update ``fusedrnn.nn.Parameter`` objects: ``.data`` in place from ``.grad``, bumping the
version of each parameter they update once per step; a parameter whose ``.grad`` is None is
skipped (and keeps its version). Options live per parameter group (``param_groups``), so
``optimizer.param_groups[0]["lr"] = 0.1`` changes the learning rate as in PyTorch.

Common notation in the update rules below: g is the gradient (negated when maximize=True),
p the parameter, t the step count of that parameter (starting at 1).
"""

import copy
import math

import numpy as np

from .._base import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]


class _Required:
    """Marks a per-group option that has no default (each group must then give it)."""

    def __repr__(self):
        return "<required parameter>"


required = _Required()


def _check_non_negative(value, what):
    if not 0.0 <= value:
        raise ValueError(f"Invalid {what}: {value}")


class Optimizer:
    """Base class: holds param_groups (dicts with 'params' and the options) and per-parameter
    state (``state[param]``, a dict). Subclasses implement ``_update(group, data, grad, state)``,
    which updates the parameter's array `data` in place; ``step`` then bumps its version.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        if isinstance(params, (Parameter, np.ndarray)):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Parameters or dicts, but got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Adds a group: {'params': iterable of Parameters, option: value, ...}; options it does
        not give take the optimizer's defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of parameters in sets changes between runs; use a list")
        params = list(params) if params is not None else []
        for param in params:
            if not isinstance(param, Parameter):
                raise TypeError(f"optimizer can only optimize Parameters, but one of the params "
                                f"is {type(param).__name__}")
        # A parameter listed twice would be updated twice per step; keep the first.
        unique = list({id(p): p for p in params}.values())
        group["params"] = unique
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError("parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in unique):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.fill(0)

    def step(self, closure=None):
        """Updates every parameter that has a gradient; returns closure() if one is given (it is
        called first, to recompute the loss and gradients, as in PyTorch)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.shape != param.data.shape:
                    raise ValueError(f"a gradient has shape {grad.shape}, its parameter {param.data.shape}")
                if group.get("maximize", False):
                    grad = -grad
                state = self.state.get(param, {})
                self._update(group, param.data, np.asarray(grad, dtype=param.data.dtype), state)
                param.bump_version()
                if state:   # stateless updates (plain SGD) keep no entry, as in PyTorch
                    self.state[param] = state
        return loss

    def _update(self, group, data, grad, state):
        raise NotImplementedError

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self):
        """{'state': {index: {name: value}}, 'param_groups': [{option: value, 'params': [index]}]}
        with parameters numbered in group order, as PyTorch numbers them; arrays are copies."""
        index_of = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = []
            for param in group["params"]:
                index_of.setdefault(id(param), len(index_of))
                packed["params"].append(index_of[id(param)])
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param in self.state:
                    state[index_of[id(param)]] = copy.deepcopy(self.state[param])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restores options and state saved by state_dict() from an optimizer over parameters of
        the same shapes, in the same group structure. Checked before anything changes."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for own, saved in zip(self.param_groups, saved_groups):
            if len(own["params"]) != len(saved["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match "
                                 "the size of optimizer's group")
        param_of = {}
        for own, saved in zip(self.param_groups, saved_groups):
            param_of.update(zip(saved["params"], own["params"]))
        new_state = {}
        for index, values in state_dict["state"].items():
            if index not in param_of:
                raise ValueError(f"loaded state dict has state for parameter {index}, which no group holds")
            param = param_of[index]
            restored = {}
            for name, value in values.items():
                if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                    if value.shape != param.data.shape:
                        raise ValueError(f"state {name!r} of parameter {index} has shape "
                                         f"{value.shape}, the parameter {param.data.shape}")
                    value = value.astype(param.data.dtype)   # a fresh copy, as the saved one is not ours
                else:
                    value = copy.deepcopy(value)
                restored[name] = value
            new_state[param] = restored
        new_groups = []
        for own, saved in zip(self.param_groups, saved_groups):
            group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            group["params"] = own["params"]
            new_groups.append(group)
        self.state = new_state
        self.param_groups = new_groups

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for name in sorted(k for k in group if k != "params"):
                lines.append(f"    {name}: {group[name]}")
        lines.append(")")
        return "\n".join(lines)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's form).

        g <- g + weight_decay * p
        b <- g (first step), else momentum * b + (1 - dampening) * g
        g <- g + momentum * b (nesterov), else b        (when momentum != 0)
        p <- p - lr * g
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False):
        _check_non_negative(lr, "learning rate")
        _check_non_negative(momentum, "momentum value")
        _check_non_negative(weight_decay, "weight_decay value")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _update(self, group, data, grad, state):
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * data
        momentum = group["momentum"]
        if momentum:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                # np.array, not grad.copy(): arithmetic on a 0-d array gives a NumPy scalar,
                # which could not be updated in place at the next step.
                buffer = state["momentum_buffer"] = np.array(grad, dtype=data.dtype)
            else:
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        data -= group["lr"] * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's form with bias corrections:

        g <- g + weight_decay * p      (decoupled_weight_decay: p <- p * (1 - lr * weight_decay))
        m <- beta1 m + (1 - beta1) g ;  v <- beta2 v + (1 - beta2) g^2
        v_hat <- max(v_hat, v) with amsgrad, else v
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        _check_non_negative(lr, "learning rate")
        _check_non_negative(eps, "epsilon value")
        for index, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
        _check_non_negative(weight_decay, "weight_decay value")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _update(self, group, data, grad, state):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay = group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(data)
            state["exp_avg_sq"] = np.zeros_like(data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(data)
        state["step"] += 1
        step = state["step"]
        if weight_decay:
            if group["decoupled_weight_decay"]:
                data *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * data
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg += (1 - beta1) * (grad - exp_avg)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            second_moment = np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        else:
            second_moment = exp_avg_sq
        step_size = lr / (1 - beta1 ** step)
        denominator = np.sqrt(second_moment) / math.sqrt(1 - beta2 ** step) + eps
        data -= step_size * (exp_avg / denominator)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p <- p * (1 - lr * weight_decay)
    before the Adam step, instead of adding weight_decay * p to the gradient."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)


class RMSprop(Optimizer):
    """RMSprop, PyTorch's form:

        g <- g + weight_decay * p
        s <- alpha s + (1 - alpha) g^2
        centered: a <- alpha a + (1 - alpha) g, and d = sqrt(s - a^2) + eps; else d = sqrt(s) + eps
        momentum > 0: b <- momentum b + g / d, p <- p - lr b;  else p <- p - lr g / d
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, maximize=False):
        _check_non_negative(lr, "learning rate")
        _check_non_negative(eps, "epsilon value")
        _check_non_negative(momentum, "momentum value")
        _check_non_negative(weight_decay, "weight_decay value")
        _check_non_negative(alpha, "alpha value")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _update(self, group, data, grad, state):
        alpha, eps, momentum = group["alpha"], group["eps"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = np.zeros_like(data)
            if momentum > 0:
                state["momentum_buffer"] = np.zeros_like(data)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(data)
        state["step"] += 1
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * data
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg += (1 - alpha) * (grad - grad_avg)
            denominator = np.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            denominator = np.sqrt(square_avg) + eps
        if momentum > 0:
            buffer = state["momentum_buffer"]
            buffer *= momentum
            buffer += grad / denominator
            data -= group["lr"] * buffer
        else:
            data -= group["lr"] * (grad / denominator)


class Adagrad(Optimizer):
    """Adagrad, PyTorch's form:

        g <- g + weight_decay * p
        s <- s + g^2                      (s starts at initial_accumulator_value)
        p <- p - lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, *, maximize=False):
        _check_non_negative(lr, "learning rate")
        _check_non_negative(lr_decay, "lr_decay value")
        _check_non_negative(weight_decay, "weight_decay value")
        _check_non_negative(initial_accumulator_value, "initial_accumulator_value value")
        _check_non_negative(eps, "epsilon value")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))
        # PyTorch creates Adagrad's state up front, so it is in state_dict() before any step.
        for group in self.param_groups:
            for param in group["params"]:
                self.state[param] = {
                    "step": 0,
                    "sum": np.full_like(param.data, group["initial_accumulator_value"]),
                }

    def _update(self, group, data, grad, state):
        if not state:   # a parameter of a group added after construction
            state["step"] = 0
            state["sum"] = np.full_like(data, group["initial_accumulator_value"])
        state["step"] += 1
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * data
        learning_rate = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"] += grad * grad
        data -= learning_rate * (grad / (np.sqrt(state["sum"]) + group["eps"]))


# Last: lr_scheduler checks that it is given an Optimizer, so it imports this module's classes.
from . import lr_scheduler  # noqa: E402

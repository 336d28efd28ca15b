"""Module: the PyTorch-flavoured base of every layer, loss and container.

A Parameter (defined in ``fusedrnn._base``, which every front end shares; ``fusedrnn.nn.Parameter``
here) holds its value in ``.data`` (a NumPy array) and its gradient in ``.grad`` (an array of the
same shape and dtype, or None). Modules compute ``forward`` and, since there is no
autograd here, an explicit ``backward(grad_output)`` that returns the gradient of the input and
*accumulates* (``+=``) into the ``.grad`` of their parameters, as PyTorch does; ``zero_grad``
clears them. Recurrent layers' backward takes ``(grad_output, grad_hn)`` and returns
``(grad_input, grad_hx)``.
"""

from collections import OrderedDict

import numpy as np

from .._base import Parameter
from ._device import resolve_device

__all__ = ["Module", "Parameter"]


class Module:
    """Base class: registers Parameters and sub-Modules assigned as attributes, in order."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError("call Module.__init__() before assigning attributes")
        params, modules = self.__dict__["_parameters"], self.__dict__["_modules"]
        # Reassigning a registered name keeps its place in the order (state_dict order is
        # PyTorch's); only a change of kind moves it.
        if isinstance(value, Parameter):
            modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            modules[name] = value
        elif value is None and name in params:
            params[name] = None
        else:
            params.pop(name, None)
            modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Registers `param` (a Parameter or None, for an absent optional one) under `name`."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{name} must be a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{name} must be a Module or None, got {type(module).__name__}")
        self._modules[name] = module
        object.__setattr__(self, name, module)

    # -- traversal ----------------------------------------------------------------------------
    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        for module_prefix, module in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (module_prefix + "." + name if module_prefix else name), param

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_children(self):
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, module in self.named_children():
            yield from module.named_modules(prefix + "." + name if prefix else name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    # -- modes and gradients ------------------------------------------------------------------
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    # -- devices -------------------------------------------------------------------------------
    def to(self, device):
        """Moves the recurrent layers in this module (itself included) to `device` (``"cpu"``,
        ``"cuda"`` or ``"cuda:0"``) and returns self. Parameters and gradients stay NumPy arrays
        on the host; only where the recurrent kernels run changes. The other modules run on the
        host wherever they are (a CUDA layer given NumPy inputs returns NumPy outputs), so moving
        them changes nothing. ValueError for an unknown device, RuntimeError where CUDA cannot run."""
        device = resolve_device(device)
        for module in self.modules():
            module._move_to(device)
        return self

    def cuda(self):
        """``self.to("cuda")``."""
        return self.to("cuda")

    def cpu(self):
        """``self.to("cpu")``."""
        return self.to("cpu")

    def _move_to(self, device):
        """What `to` does to this module alone: nothing for modules that only run on the host."""

    def zero_grad(self, set_to_none=True):
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad.fill(0)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self):
        """An ordered dict of name -> array (copies), with PyTorch's names and order."""
        return OrderedDict((name, param.data.copy()) for name, param in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Loads arrays (anything numpy.asarray takes) into the parameters of the same names.

        Everything is checked before anything is written, so on error the module is unchanged.
        Each parameter loaded has its version bumped. Returns ``(missing_keys, unexpected_keys)`` like PyTorch (both empty when strict).
        """
        own = OrderedDict(self.named_parameters())
        given = OrderedDict(state_dict)
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing key(s): " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected key(s): " + ", ".join(unexpected))
            raise KeyError(f"error loading state_dict for {type(self).__name__}: " + "; ".join(parts))
        staged = []
        for name, param in own.items():
            if name not in given:
                continue
            value = np.asarray(given[name])
            if value.shape != param.data.shape:
                raise ValueError(f"size mismatch for {name}: the checkpoint has shape {value.shape}, "
                                 f"the module has {param.data.shape}")
            if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
                raise TypeError(f"{name} has dtype {value.dtype}: expected a real number array")
            staged.append((param, value))
        for param, value in staged:
            param.data = np.array(value, dtype=param.data.dtype, copy=True)
        return missing, unexpected

    # -- calling --------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- printing -------------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        if not lines:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not self._modules:
            return f"{type(self).__name__}({lines[0]})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"

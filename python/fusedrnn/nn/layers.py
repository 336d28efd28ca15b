"""Feed-forward building blocks: Linear, Embedding, Dropout, activations and Sequential.

Each module's ``forward`` returns a NumPy array and remembers, when the module is in training
mode, what its ``backward(grad_output)`` needs. ``backward`` returns the gradient of the input and
accumulates (``+=``) into its parameters' ``.grad``. What a forward remembered is used once:
backward before any training-mode forward, after an eval-mode forward, or twice for the same
forward raises RuntimeError, as PyTorch does for a graph that was freed or never recorded.
"""

import math
from collections import OrderedDict

import numpy as np

from .._base import Parameter, as_any_float_array, as_float_array, check_device, check_grad, matmul, resolve_dtype
from .._random import resolve_rng
from .module import Module

__all__ = ["Linear", "Embedding", "Dropout", "Identity", "Tanh", "ReLU", "Sigmoid", "Flatten",
           "Sequential"]

class _SavesForBackward(Module):
    """Keeps what the last training-mode forward left for backward, for exactly one backward."""

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "_saved", None)

    def _save(self, *values):
        # An eval-mode forward forgets the previous one too: a backward after it would otherwise
        # silently differentiate a different input than the one just evaluated.
        object.__setattr__(self, "_saved", values if self.training else None)

    def _take_saved(self):
        saved = self._saved
        if saved is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward: nothing to differentiate; call forward in "
                "training mode first (backward runs once per forward, and an eval-mode forward "
                "records nothing)")
        object.__setattr__(self, "_saved", None)
        return saved


class Linear(_SavesForBackward):
    """y = x W^T + b.

    weight: (out_features, in_features); bias: (out_features,). Both start U(-k, k), k =
    1/sqrt(in_features), PyTorch's initial distribution. Input (..., in_features) of any leading
    shape; output (..., out_features).
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, rng=None):
        super().__init__()
        check_device(device)
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        dtype = resolve_dtype(dtype)
        generator = resolve_rng(rng)
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = Parameter(generator.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        if bias:
            self.bias = Parameter(generator.uniform(-bound, bound, out_features).astype(dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, input):
        x = as_float_array(input, self.weight.dtype)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"input has shape {x.shape}: the last dimension must be "
                             f"in_features={self.in_features}")
        rows = math.prod(x.shape[:-1])  # (reshape(-1, 0) is ambiguous when in_features == 0)
        y = matmul(x.reshape(rows, self.in_features), self.weight.data.T).reshape(x.shape[:-1] + (self.out_features,))
        if self.bias is not None:
            y += self.bias.data
        self._save(x, y.shape)
        return y

    def backward(self, grad_output):
        x, out_shape = self._take_saved()
        g = check_grad(grad_output, out_shape, self.weight.dtype)
        rows = math.prod(x.shape[:-1])
        rows_g = g.reshape(rows, self.out_features)
        self.weight.accumulate_grad(matmul(rows_g.T, x.reshape(rows, self.in_features)))
        if self.bias is not None:
            self.bias.accumulate_grad(rows_g.sum(axis=0))
        return matmul(rows_g, self.weight.data).reshape(x.shape)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(_SavesForBackward):
    """A lookup table: integer indices of any shape (...) -> vectors (..., embedding_dim).

    weight: (num_embeddings, embedding_dim), initialised N(0, 1). The row `padding_idx` (negative
    counts from the end, as in PyTorch) starts at zero and never receives gradient. backward
    returns None: integer indices have no gradient.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None, dtype=None,
                 rng=None, _weight=None, _freeze=False):
        super().__init__()
        check_device(device)
        for name, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx must be within num_embeddings ({num_embeddings}), "
                                 f"got {padding_idx}")
            padding_idx = int(padding_idx) % num_embeddings
        self.padding_idx = padding_idx
        dtype = resolve_dtype(dtype)
        if _weight is None:
            weight = resolve_rng(rng).standard_normal((num_embeddings, embedding_dim)).astype(dtype)
            if padding_idx is not None:
                weight[padding_idx] = 0
        else:
            weight = np.array(_weight, dtype=dtype)
            if weight.shape != (num_embeddings, embedding_dim):
                raise ValueError(f"_weight has shape {weight.shape}, expected "
                                 f"{(num_embeddings, embedding_dim)}")
        self.weight = Parameter(weight, requires_grad=not _freeze)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding holding a copy of `embeddings` (2-D); frozen (no gradient) by default."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be 2-D, got shape {embeddings.shape}")
        return cls(embeddings.shape[0], embeddings.shape[1], padding_idx=padding_idx,
                   dtype=embeddings.dtype, _weight=embeddings, _freeze=freeze)

    def forward(self, input):
        indices = np.asarray(input)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"input must hold integer indices, got dtype {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            bad = indices[(indices < 0) | (indices >= self.num_embeddings)].flat[0]
            raise IndexError(f"index {bad} is out of range for an Embedding of "
                             f"num_embeddings={self.num_embeddings}")
        self._save(indices)
        return self.weight.data[indices]

    def backward(self, grad_output):
        (indices,) = self._take_saved()
        g = check_grad(grad_output, indices.shape + (self.embedding_dim,), self.weight.dtype)
        grad = np.zeros_like(self.weight.data)
        np.add.at(grad, indices.reshape(-1), g.reshape(-1, self.embedding_dim))
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        self.weight.accumulate_grad(grad)
        return None

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text


class Dropout(_SavesForBackward):
    """Inverted dropout: in training, zeroes each element with probability p and scales the rest
    by 1/(1-p), so eval mode (the identity) needs no rescaling. Any shape, float32 or float64.

    Masks come from `rng` (a Generator or int seed) or, if None, the shared generator that
    fusedrnn.manual_seed seeds (looked up at each call, so re-seeding takes effect).
    """

    def __init__(self, p=0.5, inplace=False, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p!r}")
        self.p = float(p)
        self.inplace = bool(inplace)
        self._generator = None if rng is None else resolve_rng(rng)

    def forward(self, input):
        x = as_any_float_array(input)
        if not self.training:
            self._save()   # forgets any earlier training-mode forward
            return x
        if self.p == 1.0:
            # Every element dropped; 1/(1-p) would be a division by zero.
            scaled_mask = np.zeros_like(x)
        else:
            generator = self._generator if self._generator is not None else resolve_rng(None)
            keep = generator.random(x.shape) >= self.p
            scaled_mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._save(scaled_mask)
        if self.inplace:
            x *= scaled_mask
            return x
        return x * scaled_mask

    def backward(self, grad_output):
        (scaled_mask,) = self._take_saved()
        return check_grad(grad_output, scaled_mask.shape, scaled_mask.dtype) * scaled_mask

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class _Elementwise(_SavesForBackward):
    """An elementwise function of a float32/float64 input of any shape."""

    def forward(self, input):
        x = as_any_float_array(input)
        y = self._function(x)
        self._save(x, y)
        return y

    def backward(self, grad_output):
        x, y = self._take_saved()
        return self._derivative(check_grad(grad_output, y.shape, y.dtype), x, y)


class Identity(_SavesForBackward):
    """Returns its input (anything); constructor arguments are accepted and ignored, as in PyTorch."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        self._save(True)
        return input

    def backward(self, grad_output):
        self._take_saved()
        return grad_output


class Tanh(_Elementwise):
    def _function(self, x):
        return np.tanh(x)

    def _derivative(self, g, x, y):
        return g * (1 - y * y)


class ReLU(_Elementwise):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def _function(self, x):
        if self.inplace:
            return np.maximum(x, 0, out=x)
        return np.maximum(x, 0)

    def _derivative(self, g, x, y):
        # y > 0 rather than x > 0: with inplace=True, x is y. The derivative at 0 is 0, as in PyTorch.
        return g * (y > 0)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Sigmoid(_Elementwise):
    def _function(self, x):
        # exp of -|x| only, so large |x| cannot overflow.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)

    def _derivative(self, g, x, y):
        return g * y * (1 - y)


class Flatten(_SavesForBackward):
    """Merges dimensions start_dim..end_dim (inclusive; negative counts from the end) into one."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, input):
        x = np.asarray(input.data if isinstance(input, Parameter) else input)
        start, end = self.start_dim, self.end_dim
        start, end = (start + x.ndim if start < 0 else start), (end + x.ndim if end < 0 else end)
        if not (0 <= start < x.ndim and 0 <= end < x.ndim) or start > end:
            raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) does not "
                             f"fit an input of shape {x.shape}")
        shape = x.shape[:start] + (int(np.prod(x.shape[start:end + 1])),) + x.shape[end + 1:]
        self._save(x.shape)
        return x.reshape(shape)

    def backward(self, grad_output):
        (shape,) = self._take_saved()
        return np.asarray(grad_output).reshape(shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Sequential(Module):
    """Modules applied in order; each takes and returns one array.

    ``Sequential(m0, m1, ...)`` names them "0", "1", ...; ``Sequential(OrderedDict(name=m))``
    uses the given names. backward runs the modules' backward in reverse order.
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self._add(name, module)
        else:
            for index, module in enumerate(args):
                self._add(str(index), module)

    def _add(self, name, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential takes Modules, got {type(module).__name__} for {name!r}")
        self.add_module(name, module)

    def _index(self, index):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Sequential indices must be integers or slices, got {type(index).__name__}")
        size = len(self._modules)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range for a Sequential of length {size}")
        return index % size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[self._index(index)]

    def __setitem__(self, index, module):
        name = list(self._modules)[self._index(index)]
        if not isinstance(module, Module):
            raise TypeError(f"Sequential takes Modules, got {type(module).__name__}")
        setattr(self, name, module)  # keeps the name's place in the order

    def __delitem__(self, index):
        if isinstance(index, slice):
            names = list(self._modules)[index]
        else:
            names = [list(self._modules)[self._index(index)]]
        for name in names:
            delattr(self, name)
        # Renumber what is left (as PyTorch does), so that names keep matching positions.
        remaining = list(self._modules.items())
        for name, _ in remaining:
            delattr(self, name)
        for index, (_, module) in enumerate(remaining):
            self.add_module(str(index), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self._add(str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input

    def backward(self, grad_output):
        for module in reversed(self._modules.values()):
            grad_output = module.backward(grad_output)
        return grad_output

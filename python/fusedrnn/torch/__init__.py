"""PyTorch custom operators on fusedrnn's kernels.

``recurrent(cell, x, h0, c0, weights, ...)`` runs one recurrent layer on PyTorch tensors with
autograd; underneath are two operators registered with ``torch.library``,
``torch.ops.fusedrnn.recurrent_forward`` and ``torch.ops.fusedrnn.recurrent_backward``, with fake
(meta) kernels, so that ``torch.compile(fullgraph=True)`` traces them without a graph break. See
:mod:`fusedrnn.torch._ops` for their schemas and conventions.

``fusedrnn.torch.nn.RNN``, ``LSTM`` and ``GRU`` are drop-in ``torch.nn`` modules on those kernels,
and ``convert(model)`` switches the ones inside an existing model in place (:mod:`fusedrnn.torch.nn`).

Needs PyTorch: ``pip install "fusedrnn[torch]"``. ``import fusedrnn`` works without it.
"""

try:
    import torch  # absolute: PyTorch itself, never this package
except ImportError as error:
    raise ImportError('fusedrnn.torch needs PyTorch, which is not installed: pip install "fusedrnn[torch]"') from error

if not hasattr(torch, "library"):
    raise ImportError("fusedrnn.torch needs PyTorch >= 2.4, but 'import torch' found "
                      f"{getattr(torch, '__file__', torch)!r}")

from . import _ops  # noqa: E402  registers the operators
from .functional import recurrent  # noqa: E402
from . import nn  # noqa: E402
from .nn import convert  # noqa: E402

__all__ = ["recurrent", "nn", "convert"]

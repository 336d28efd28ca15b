"""PyTorch-flavoured modules: ``fusedrnn.nn.LSTM`` behaves like ``torch.nn.LSTM``."""

from .._base import Parameter
from . import utils
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers_all
from .loss import *  # noqa: F401,F403
from .loss import __all__ as _loss_all
from .module import Module
from .rnn import *  # noqa: F401,F403
from .rnn import __all__ as _rnn_all
from .rnn_cell import *  # noqa: F401,F403
from .rnn_cell import __all__ as _rnn_cell_all

__all__ = ["Module", "Parameter", "utils", *_rnn_all, *_rnn_cell_all, *_layers_all, *_loss_all]

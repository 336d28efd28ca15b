"""Helpers as in torch.nn.utils: sequence packing (``rnn``) and gradient clipping."""

from . import rnn
from .clip_grad import *  # noqa: F401,F403
from .clip_grad import __all__ as _clip_all

__all__ = ["rnn", *_clip_all]

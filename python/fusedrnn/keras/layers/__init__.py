"""Keras-flavoured layers (``fusedrnn.keras.layers``), mirroring ``keras.layers``."""

from .base import Input, InputLayer, KerasTensor, Layer
from .bidirectional import Bidirectional
from .core import Activation, Dense, Dropout, Embedding, Masking, TimeDistributed
from .recurrent import GRU, LSTM, SimpleRNN

__all__ = ["Layer", "Input", "InputLayer", "KerasTensor", "Dense", "Activation", "Embedding", "Masking",
           "Dropout", "TimeDistributed", "SimpleRNN", "LSTM", "GRU", "Bidirectional"]

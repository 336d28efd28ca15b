"""Keras's data utilities: pad_sequences, to_categorical, set_random_seed."""

import random

import numpy as np

from .._random import manual_seed

__all__ = ["pad_sequences", "to_categorical", "set_random_seed"]


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Pads (and truncates) sequences to one length: an array ``(len(sequences), maxlen, ...)``.

    maxlen: the length (default: the longest sequence). padding / truncating: ``"pre"`` (default)
    or ``"post"``, where values are added or cut. Each sequence may hold scalars or arrays of one
    shape (the trailing dimensions of the result).
    """
    if padding not in ("pre", "post"):
        raise ValueError(f'padding must be "pre" or "post", got {padding!r}')
    if truncating not in ("pre", "post"):
        raise ValueError(f'truncating must be "pre" or "post", got {truncating!r}')
    if not hasattr(sequences, "__len__"):
        raise ValueError("sequences must be iterable (a list of sequences)")
    sequences = [np.asarray(s) for s in sequences]
    lengths = [len(s) for s in sequences]
    if maxlen is None:
        maxlen = max(lengths, default=0)
    sample_shape = next((s.shape[1:] for s in sequences if len(s)), ())
    result = np.full((len(sequences), maxlen) + sample_shape, value, dtype=dtype)
    for index, sequence in enumerate(sequences):
        if not len(sequence) or maxlen == 0:
            continue
        kept = sequence[-maxlen:] if truncating == "pre" else sequence[:maxlen]
        if kept.shape[1:] != sample_shape:
            raise ValueError(f"sequence {index} has items of shape {kept.shape[1:]}, expected {sample_shape} "
                             "like the first non-empty sequence")
        if padding == "post":
            result[index, :len(kept)] = kept
        else:
            result[index, maxlen - len(kept):] = kept
    return result


def to_categorical(x, num_classes=None):
    """One-hot encoding of integer class labels: shape ``x.shape + (num_classes,)`` (a trailing
    axis of size 1 is dropped first), float64 as Keras returns it."""
    x = np.asarray(x, dtype=np.int64)
    shape = x.shape[:-1] if x.ndim > 1 and x.shape[-1] == 1 else x.shape
    x = x.reshape(-1)
    if num_classes is None:
        num_classes = int(x.max()) + 1 if x.size else 0
    if x.size and (x.min() < 0 or x.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}), got values from {x.min()} to {x.max()}")
    categorical = np.zeros((x.size, num_classes))
    categorical[np.arange(x.size), x] = 1
    return categorical.reshape(shape + (num_classes,))


def set_random_seed(seed):
    """Seeds Python's random, NumPy's global generator and fusedrnn's (weights, dropout,
    shuffling), as keras.utils.set_random_seed seeds everything Keras draws from."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed))
    manual_seed(int(seed))

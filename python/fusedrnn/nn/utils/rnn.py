"""Variable-length batches, as torch.nn.utils.rnn: PackedSequence and the packing helpers.

A batch of sequences of different lengths is either *padded*, an array ``(T, B, *)`` (or
``(B, T, *)`` with ``batch_first``) whose entries past each sequence's length are filler, or
*packed*: a :class:`PackedSequence` whose ``data`` ``(N, *)`` holds only the valid steps, time step
by time step (at step t, the sequences still running, longest first), with ``batch_sizes[t]``
rows for step t and ``N = sum(lengths)``. Packed sequences are sorted by decreasing length;
``sorted_indices[j]`` is the caller's index of sorted sequence j, ``unsorted_indices`` its inverse
(both None when the caller's batch was already sorted).

Conversions are single NumPy boolean-mask indexings over the (T, B) grid, never a loop over time.
"""

from collections import namedtuple

import numpy as np

__all__ = [
    "PackedSequence", "pack_padded_sequence", "pad_packed_sequence", "pad_sequence",
    "unpad_sequence", "pack_sequence", "unpack_sequence",
]


def _int_array(values, name):
    """`values` as a 1-D int64 array; floats or booleans are refused rather than truncated."""
    array = np.asarray(values)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array.astype(np.int64)


def _invert_permutation(permutation):
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(permutation.size, dtype=permutation.dtype)
    return inverse


def _valid_steps(batch_sizes):
    """(T, B) boolean grid: True where sorted sequence b has a step t (b < batch_sizes[t])."""
    return np.arange(batch_sizes[0])[None, :] < batch_sizes[:, None]


class PackedSequence(namedtuple("PackedSequence", ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])):
    """A packed batch: ``data (N, *)``, ``batch_sizes (T,)``, ``sorted_indices (B,)`` or None,
    ``unsorted_indices (B,)`` or None (computed from sorted_indices when not given).

    Build one with :func:`pack_padded_sequence` or :func:`pack_sequence`; it is a tuple, so it
    unpacks as ``data, batch_sizes, sorted_indices, unsorted_indices``.
    """

    __slots__ = ()

    def __new__(cls, data, batch_sizes, sorted_indices=None, unsorted_indices=None):
        data = np.asarray(data)
        batch_sizes = _int_array(batch_sizes, "batch_sizes")
        if batch_sizes.size == 0 or batch_sizes[-1] < 1 or np.any(np.diff(batch_sizes) > 0):
            raise ValueError("batch_sizes must be a non-empty, non-increasing sequence of positive counts")
        if data.ndim < 1 or data.shape[0] != batch_sizes.sum():
            raise ValueError(f"data must have sum(batch_sizes) = {batch_sizes.sum()} rows, got shape {data.shape}")
        batch = int(batch_sizes[0])
        if sorted_indices is not None:
            sorted_indices = _int_array(sorted_indices, "sorted_indices")
            if not np.array_equal(np.sort(sorted_indices), np.arange(batch)):
                raise ValueError(f"sorted_indices must be a permutation of range({batch})")
            if unsorted_indices is None:
                unsorted_indices = _invert_permutation(sorted_indices)
        if unsorted_indices is not None:
            unsorted_indices = _int_array(unsorted_indices, "unsorted_indices")
            if sorted_indices is None or not np.array_equal(sorted_indices[unsorted_indices], np.arange(batch)):
                raise ValueError("unsorted_indices must be the inverse permutation of sorted_indices")
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)


def _packed_to_padded(sequence, padding_value=0.0, total_length=None):
    """(padded (T, B, *) in sorted order, lengths (B,) int64 in sorted order)."""
    data, batch_sizes = sequence.data, sequence.batch_sizes
    steps = _valid_steps(batch_sizes)
    T = batch_sizes.size if total_length is None else total_length
    padded = np.full((T, steps.shape[1]) + data.shape[1:], padding_value, dtype=data.dtype)
    padded[:batch_sizes.size][steps] = data
    return padded, steps.sum(axis=0).astype(np.int64)


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Packs a padded batch.

    Args:
        input: ``(T, B, *)``, or ``(B, T, *)`` with batch_first.
        lengths: B integers in ``[1, T]``; decreasing unless ``enforce_sorted=False``, which sorts
            the batch here and records the order in ``sorted_indices``.

    Returns:
        A :class:`PackedSequence` (data is a copy).
    """
    input = np.asarray(input)
    if input.ndim < 2:
        raise ValueError(f"input must have at least 2 dimensions (time and batch), got shape {input.shape}")
    if batch_first:
        input = input.swapaxes(0, 1)
    if input.size == 0:
        raise ValueError("Cannot pack empty tensors.")
    lengths = _int_array(lengths, "lengths")
    T, batch = input.shape[:2]
    if lengths.size != batch:
        raise ValueError(f"Expected `len(lengths)` to be equal to batch_size, but got {lengths.size} "
                         f"(batch_size={batch})")
    sorted_indices = None
    if not enforce_sorted:
        # Stable, so sequences of equal length keep their order (as PyTorch's CPU sort does).
        sorted_indices = np.argsort(-lengths, kind="stable")
        lengths = lengths[sorted_indices]
        input = input[:, sorted_indices]
    if lengths.min() <= 0:
        raise ValueError("Length of all samples has to be greater than 0, but found an element in "
                         "'lengths' that is <= 0")
    if np.any(np.diff(lengths) > 0):
        raise ValueError("`lengths` array must be sorted in decreasing order when `enforce_sorted` is "
                         "True. You can pass `enforce_sorted=False` to pack_padded_sequence and/or "
                         "pack_sequence to sidestep this requirement.")
    if lengths[0] > T:
        raise ValueError(f"lengths must be at most the padded length T={T}, got {lengths[0]}")
    steps = np.arange(lengths[0])[:, None] < lengths[None, :]
    return PackedSequence(input[:lengths[0]][steps], steps.sum(axis=1), sorted_indices)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Pads a packed batch: the inverse of :func:`pack_padded_sequence`.

    Args:
        sequence: a :class:`PackedSequence`.
        total_length: pad to this many steps (at least the longest sequence) instead of the longest.

    Returns:
        ``(padded, lengths)``: padded ``(T, B, *)`` (``(B, T, *)`` with batch_first) in the
        caller's original batch order, filled with padding_value; lengths ``(B,)`` int64.
    """
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"sequence must be a PackedSequence, got {type(sequence).__name__}")
    longest = sequence.batch_sizes.size
    if total_length is not None:
        if isinstance(total_length, bool) or not isinstance(total_length, (int, np.integer)):
            raise TypeError(f"total_length must be an int, got {type(total_length).__name__}")
        if total_length < longest:
            raise ValueError("Expected total_length to be at least the length of the longest sequence in "
                             f"input, but got total_length={total_length} and max sequence length being "
                             f"{longest}")
    padded, lengths = _packed_to_padded(sequence, padding_value, total_length)
    if sequence.unsorted_indices is not None:
        padded = padded[:, sequence.unsorted_indices]
        lengths = lengths[sequence.unsorted_indices]
    if batch_first:
        padded = np.ascontiguousarray(padded.swapaxes(0, 1))
    return padded, lengths


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stacks sequences ``(L_i, *)`` into one padded array.

    Returns:
        ``(T, B, *)`` (``(B, T, *)`` with batch_first), T = max L_i, padding after each sequence
        (``padding_side="right"``) or before it (``"left"``).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    sequences = [np.asarray(s) for s in sequences]
    if not sequences:
        raise ValueError("received an empty list of sequences")
    if any(s.ndim < 1 for s in sequences):
        raise ValueError("every sequence must have at least 1 dimension (time)")
    trailing = sequences[0].shape[1:]
    for i, s in enumerate(sequences):
        if s.shape[1:] != trailing:
            raise ValueError(f"sequences[{i}] has shape {s.shape}, but the trailing dimensions of every "
                             f"sequence must equal those of sequences[0], {trailing}")
    lengths = np.array([s.shape[0] for s in sequences])
    T = lengths.max()
    steps = np.arange(T)[None, :] < lengths[:, None]
    if padding_side == "left":
        steps = steps[:, ::-1]
    dtype = np.result_type(*sequences)
    padded = np.full((lengths.size, T) + trailing, padding_value, dtype=dtype)
    padded[steps] = np.concatenate(sequences, axis=0)
    return padded if batch_first else np.ascontiguousarray(padded.swapaxes(0, 1))


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """Splits a padded array back into a list of sequences ``(L_i, *)`` (views of it)."""
    padded = np.asarray(padded_sequences)
    if padded.ndim < 2:
        raise ValueError(f"padded_sequences must have at least 2 dimensions, got shape {padded.shape}")
    if not batch_first:
        padded = padded.swapaxes(0, 1)
    lengths = _int_array(lengths, "lengths")
    if lengths.size != padded.shape[0]:
        raise ValueError(f"lengths must have one entry per sequence ({padded.shape[0]}), got {lengths.size}")
    if lengths.size and (lengths.min() < 0 or lengths.max() > padded.shape[1]):
        raise ValueError(f"lengths must lie in [0, {padded.shape[1]}]")
    return [padded[b, :length] for b, length in enumerate(lengths)]


def pack_sequence(sequences, enforce_sorted=True):
    """Packs a list of sequences ``(L_i, *)``; see :func:`pack_padded_sequence` for enforce_sorted."""
    sequences = [np.asarray(s) for s in sequences]
    padded = pad_sequence(sequences)  # validates the sequences
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(padded, lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences):
    """The list of sequences ``(L_i, *)`` in a :class:`PackedSequence`, in the caller's order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)

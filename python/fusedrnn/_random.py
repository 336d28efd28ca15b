"""The package's random number source: one seedable generator, as torch.manual_seed gives.

Layers draw their initial weights and dropout masks from an ``rng=`` argument when given one
(a numpy Generator, or an int seed) and from this shared generator otherwise.
"""

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Re-seeds the shared generator; returns it."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_generator():
    return _generator


def resolve_rng(rng):
    """`rng` (None, an int seed or a numpy Generator) as a Generator."""
    if rng is None:
        return _generator
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}")

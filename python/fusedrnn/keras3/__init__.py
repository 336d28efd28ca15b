"""Keras 3's recurrent layers on fusedrnn's kernels, on the torch and JAX backends.

Two ways in:

- ``fusedrnn.keras3.enable()``: Keras's own ``keras.layers.SimpleRNN``, ``LSTM`` and ``GRU``, the
  generic ``keras.layers.RNN`` of their cells (``RNN(LSTMCell(64))``, or of a list of them, run
  as that many layers), and so ``Bidirectional`` of them, run the fused kernels from then on, in
  new models and in models already built or loaded; ``disable()`` gives them back their own loop.
  An existing program changes by one line.
- ``fusedrnn.keras3.layers.SimpleRNN``, ``LSTM``, ``GRU``, ``RNN`` (and ``Bidirectional``):
  subclasses of Keras's classes that always run the kernels (see :mod:`fusedrnn.keras3.layers`);
  ``convert(model)`` switches the Keras layers of a model (say one just loaded) to them in place.

Either way the layers keep everything of Keras's but the loop over time: arguments, variables,
initializers, regularizers, constraints, state handling (``stateful``, ``initial_state``), masks
of any pattern, ``go_backwards``, ``return_sequences``, ``return_state``, dropout masks and
serialization, float32, float64 and mixed precision (``mixed_bfloat16``, ``mixed_float16``: the
kernels compute in float32 from the inputs and weights as that dtype rounds them, and Keras
rounds the results once, where its own loop rounds every step's). Keras's own loop runs instead,
per call, with the TensorFlow backend, ``unroll=True``, other cells (a subclass of Keras's, one of
the user's own, anywhere in a list), other activations, a GPU, an export to ONNX (torch backend:
the file holds Keras's loop), and in training with LSTM/GRU ``recurrent_dropout`` (Keras draws a
mask per gate there; SimpleRNN's recurrent dropout and every layer's input dropout run in the
kernels, each cell's own in a list of cells).

On JAX, a model that already compiled its ``fit``/``predict`` step keeps that step until it is
compiled again: call ``enable()`` before the first ``fit``/``predict``, or ``compile()`` the model
again after it. The fused layers take ``jax.jit``, ``jax.vmap`` and reverse-mode gradients
(``jax.grad``, ``jax.jacrev``); forward mode (``jax.jvp``, ``jax.jacfwd``) raises JAX's
``TypeError`` about a ``custom_vjp`` function, the kernels' gradient being a reverse-mode one:
``disable()`` (Keras's own loop) for that.

Needs Keras 3 with ``KERAS_BACKEND`` set to ``torch`` (and PyTorch) or ``jax`` (and JAX):
``pip install "fusedrnn[keras3]"``.
"""

import importlib.util

if importlib.util.find_spec("keras") is None:
    raise ImportError('fusedrnn.keras3 needs Keras 3: pip install "fusedrnn[keras3]" (torch backend) or '
                      '"fusedrnn[jax]" (JAX backend)')
try:
    import keras
except ImportError as error:   # typically: no KERAS_BACKEND, so Keras looks for TensorFlow
    raise ImportError(f"import keras failed ({error}); fusedrnn.keras3 runs on Keras's torch and JAX backends: "
                      "set KERAS_BACKEND=torch or KERAS_BACKEND=jax before Keras is imported") from error

if not hasattr(keras, "version") or int(keras.version().split(".")[0]) < 3:
    raise ImportError(f"fusedrnn.keras3 needs Keras 3, found {getattr(keras, '__version__', keras)!r}")

import functools  # noqa: E402

from . import layers  # noqa: E402
from .layers import STOCK_INNER_LOOPS, convert, run_inner_loop  # noqa: E402

__all__ = ["enable", "disable", "is_enabled", "convert", "layers"]

# What each stock class had in its own namespace before enable() (None: it inherited the loop).
_OWN_LOOPS = {cls: cls.__dict__.get("inner_loop") for cls in STOCK_INNER_LOOPS}


def _fused_loop_of(stock_class):
    @functools.wraps(STOCK_INNER_LOOPS[stock_class])
    def inner_loop(self, sequences, initial_state, mask, training=False):
        return run_inner_loop(self, stock_class, sequences, initial_state, mask, training)
    inner_loop._fusedrnn = True
    return inner_loop


def enable():
    """Keras's SimpleRNN, LSTM and GRU run the fused kernels (where they serve the call) from now
    on, including layers that already exist. Calling it again changes nothing."""
    for cls in STOCK_INNER_LOOPS:
        if not getattr(cls.__dict__.get("inner_loop"), "_fusedrnn", False):
            cls.inner_loop = _fused_loop_of(cls)


def disable():
    """Undoes :func:`enable`: Keras's layers run their own loop again. (The classes of
    :mod:`fusedrnn.keras3.layers` keep running the kernels.)"""
    for cls, own in _OWN_LOOPS.items():
        if own is None:
            if "inner_loop" in cls.__dict__:
                del cls.inner_loop
        else:
            cls.inner_loop = own


def is_enabled():
    """Whether :func:`enable` is in effect."""
    return all(getattr(cls.__dict__.get("inner_loop"), "_fusedrnn", False) for cls in STOCK_INNER_LOOPS)

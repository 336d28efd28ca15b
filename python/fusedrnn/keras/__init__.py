"""fusedrnn.keras: a Keras-flavoured front end on the fused kernels.

Namespaces mirror ``keras``'s, so a Keras program ports by changing its imports::

    from fusedrnn.keras import Sequential, Input
    from fusedrnn.keras.layers import LSTM, Dense

Weights use Keras's layout and order: ``model.set_weights(keras_model.get_weights())`` works both
ways, and ``load_weights``/``save_weights`` read and write Keras's ``.weights.h5`` files (with h5py)
as well as ``.npz`` archives. Needs only NumPy: Keras itself is never imported.

What cannot be differentiated here (custom losses or activations, regularizers, constraints)
raises a clear error rather than training something else.
"""

from . import activations, callbacks, initializers, layers, losses, metrics, models, optimizers, utils
from .layers import Input
from .models import Model, Sequential

__all__ = ["Sequential", "Model", "Input", "activations", "callbacks", "initializers", "layers", "losses",
           "metrics", "models", "optimizers", "utils"]

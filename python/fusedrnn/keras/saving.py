"""Weights files: NumPy ``.npz`` archives, and Keras's own HDF5 weights files (through h5py,
when it is installed), so that weights saved by Keras load unchanged and the other way round.

- ``.npz`` (the default): ``model.get_weights()`` in order, no pickle.
- Keras 3 ``.weights.h5`` (written for paths ending in ``.h5``): a group per layer under
  ``layers/``, named by the layer's class in snake case and numbered within the model
  (``lstm``, ``lstm_1``, ...); a recurrent layer's arrays sit in ``cell/vars/0, 1, ...``, a
  Bidirectional's in ``forward_layer/cell/vars`` and ``backward_layer/cell/vars``, others' in
  ``vars``; a nested model's layers sit in its own ``layers/`` (a functional model is named
  ``functional``, after Keras's class). Keras addresses layers by these names, not by the
  layers' own names.
- Keras 2 (legacy) ``.h5`` weights files are read too: the root (or ``model_weights``) lists
  ``layer_names``; each layer's group lists its ``weight_names``.

Every format is read in order and checked against the model's weight shapes.
"""

import os
import tempfile
import zipfile

import numpy as np

from .layers.base import _snake_case
from .layers.bidirectional import Bidirectional
from .layers.core import TimeDistributed
from .layers.recurrent import _Recurrent

__all__ = ["save_weights", "load_weights"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading or writing Keras's .h5 weights files needs h5py: pip install h5py") from None
    return h5py


def _keras3_paths(layer):
    """(path inside the layer's group, that part's Keras-layout arrays) for a layer."""
    def nested(prefix, inner):
        return [(f"{prefix}/{path}", weights) for path, weights in _keras3_paths(inner)]

    if isinstance(layer, Bidirectional):
        return [("vars", [])] + nested("forward_layer", layer.forward_layer) + nested("backward_layer",
                                                                                      layer.backward_layer)
    if isinstance(layer, TimeDistributed):
        return [("vars", [])] + nested("layer", layer.layer)
    if isinstance(layer, _Recurrent):
        return [("vars", []), ("cell/vars", layer.get_weights())]
    if _is_model(layer):
        return [("vars", [])] + [path for inner, name in zip(layer.layers, _keras3_names(layer.layers))
                                 for path in nested(f"layers/{name}", inner)]
    return [("vars", layer.get_weights())]


def _is_model(layer, exactly=False):
    from .models import Model   # here, as models imports this module
    return type(layer) is Model if exactly else isinstance(layer, Model)


def _keras_class_name(layer):
    # keras.Model(inputs, outputs) makes an instance of Keras's Functional class.
    return "Functional" if _is_model(layer, exactly=True) else type(layer).__name__


def _keras3_names(layers):
    """Keras's names for the layers of a model: class names in snake case, numbered per model."""
    used, names = {}, []
    for layer in layers:
        base = _snake_case(_keras_class_name(layer))
        names.append(base if base not in used else f"{base}_{used[base]}")
        used[base] = used.get(base, 0) + 1
    return names


def _write_atomically(filepath, write):
    """Calls write(path) on a temporary file beside `filepath`, then renames it over `filepath`:
    a reader sees the old file or the new one, never half of one, and a failed write leaves the
    old file as it was."""
    directory = os.path.dirname(os.path.abspath(filepath))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(str(filepath)), dir=directory)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, filepath)
    except BaseException:
        os.unlink(temporary)
        raise


def save_weights(model, filepath):
    if str(filepath).endswith(".h5"):
        def write(path):
            with _h5py().File(path, "w") as file:
                file.create_group("vars")
                for layer, name in zip(model.layers, _keras3_names(model.layers)):
                    for weight_path, weights in _keras3_paths(layer):
                        group = file.require_group(f"layers/{name}/{weight_path}")
                        for index, weight in enumerate(weights):
                            group.create_dataset(str(index), data=weight)
    else:
        arrays = {}
        for layer in model.layers:
            for index, weight in enumerate(layer.get_weights()):
                arrays[f"{len(arrays):04d}.{layer.name}.{index}"] = weight

        def write(path):
            with open(path, "wb") as file:   # a file object, so numpy adds no ".npz" suffix
                np.savez(file, **arrays)
    _write_atomically(filepath, write)


def _read_keras3(file, model):
    weights = []
    for layer, name in zip(model.layers, _keras3_names(model.layers)):
        if f"layers/{name}" not in file:
            raise ValueError(f"the weights file has no layer {name!r} (layers in it: {', '.join(file['layers'])})")
        for path, expected in _keras3_paths(layer):
            group = file.get(f"layers/{name}/{path}")
            stored = [] if group is None else [group[key][()] for key in sorted(group, key=int)]
            if len(stored) != len(expected):
                raise ValueError(f"layer {name!r} ({layer.name}): the file holds {len(stored)} arrays in {path}, "
                                 f"the layer has {len(expected)}")
            weights.extend(stored)
    return weights


def _names_attribute(group, name):
    """A list-of-names attribute, which Keras splits into name0, name1, ... when it is large."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_legacy(file):
    group = file["model_weights"] if "model_weights" in file else file
    weights = []
    for layer_name in _names_attribute(group, "layer_names"):
        layer_group = group[layer_name]
        weights.extend(layer_group[name][()] for name in _names_attribute(layer_group, "weight_names"))
    return weights


def load_weights(model, filepath):
    with open(filepath, "rb") as file:
        is_hdf5 = file.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
    if is_hdf5:
        with _h5py().File(filepath, "r") as file:
            weights = _read_keras3(file, model) if "layers" in file else _read_legacy(file)
    else:
        if not os.path.exists(filepath):
            raise FileNotFoundError(filepath)
        try:
            with np.load(filepath, allow_pickle=False) as archive:
                weights = [archive[key] for key in sorted(archive.files)]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{filepath} is not a readable weights file (.npz): {error}") from error
    model.set_weights(weights)

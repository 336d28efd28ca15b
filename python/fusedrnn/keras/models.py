"""Model and Sequential: a chain of layers with Keras's compile / fit / evaluate / predict.

``Sequential([...])`` (or ``.add``) and the functional ``Model(inputs, outputs)`` of a
single-input chain of layers are the same thing here: the layers run in order, passing masks
along as Keras does, and training backpropagates through them in reverse.

Training follows Keras's loop: each epoch shuffles the training samples (``shuffle=True``),
runs batches of ``batch_size`` (the last one partial), reports the running mean of the batch
losses (weighted by batch size) and of each metric over the samples seen, then evaluates the
validation data in inference mode (``val_`` logs). ``validation_split`` takes the last fraction
of the samples, before shuffling.
"""

import math
import os

import numpy as np

from .._random import resolve_rng
from . import saving
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from ._data_parallel import DataParallel
from .callbacks import CallbackList, History, ProgbarLogger
from .layers.base import InputLayer, KerasTensor, Layer, unique_name

__all__ = ["Model", "Sequential"]


def _as_input_array(x):
    if isinstance(x, (list, tuple)) and len(x) == 1 and not np.isscalar(x[0]):
        x = x[0]   # a one-element list of inputs, as Keras accepts for single-input models
    return np.asarray(x)


def _format_shape(shape):
    return f"({', '.join('None' if s is None else str(s) for s in shape)})" if shape is not None else "?"


class Model:
    """A single-input chain of layers: ``Model(inputs, outputs)`` with ``inputs = Input(...)``
    and ``outputs`` the result of calling layers one after another on it."""

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True):
        self.name = name or unique_name("sequential" if isinstance(self, Sequential) else "functional")
        self._layers = []
        self._input_layer = None
        self._in_fit = False
        self.optimizer = self.loss = None
        self.compiled = False
        self.compiled_metrics = None
        self.stop_training = False
        self.history = None
        self._trainable = bool(trainable)
        if isinstance(self, Sequential):
            return
        if inputs is None or outputs is None:
            raise TypeError("Model needs inputs and outputs (the functional API): Model(inputs=Input(...), "
                            "outputs=...); subclassed models are not supported")
        self._init_chain(inputs, outputs)

    def _init_chain(self, inputs, outputs):
        def single(value, what):
            if isinstance(value, (list, tuple)):
                if len(value) != 1:
                    raise NotImplementedError(f"a model with several {what} is not supported (a single chain only)")
                value = value[0]
            if not isinstance(value, KerasTensor):
                raise TypeError(f"{what} must come from fusedrnn.keras.Input and its layers, got "
                                f"{type(value).__name__}")
            return value

        inputs, tensor = single(inputs, "inputs"), single(outputs, "outputs")
        chain = []
        while not isinstance(tensor.layer, InputLayer):
            if tensor.index != 0:
                raise NotImplementedError(f"the model uses a returned state of {tensor.layer.name}: only "
                                          "a single chain of layer outputs is supported")
            chain.append(tensor.layer)
            tensor = tensor.parent
        if tensor is not inputs:
            raise ValueError("outputs were not computed from inputs")
        self._input_layer = inputs.layer
        self._layers = chain[::-1]

    # -- structure ----------------------------------------------------------------------------------
    @property
    def layers(self):
        return list(self._layers)

    @property
    def built(self):
        return bool(self._layers) and all(layer.built for layer in self._layers)

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self._layers[index]
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer named {name!r}; layers: {[layer.name for layer in self._layers]}")

    def _shapes(self, input_shape):
        """Each layer's output shape for an input of input_shape (building what is unbuilt)."""
        shapes, shape = [], tuple(input_shape)
        for layer in self._layers:
            layer._ensure_built(shape)
            shape = layer.compute_output_shape(shape)
            if isinstance(shape, list):
                raise NotImplementedError(f"layer {layer.name} returns several outputs (return_state, or "
                                          "Bidirectional with merge_mode=None): not supported inside a model")
            shapes.append(shape)
        return shapes

    def build(self, input_shape=None):
        """Creates every layer's weights for inputs of ``input_shape`` (batch dimension included,
        None allowed), or of the Input's shape."""
        if input_shape is None:
            if self._input_layer is None:
                raise ValueError("build needs input_shape (this model has no Input)")
            input_shape = self._input_layer.batch_shape
        else:
            input_shape = tuple(input_shape)
            if self._input_layer is None:
                self._input_layer = InputLayer(batch_shape=input_shape)
        self._shapes(input_shape)

    def _ensure_built(self, x):
        if not self._layers:
            raise ValueError(f"model {self.name!r} has no layers")
        if not self.built:
            shape = (None,) + tuple(x.shape[1:])
            if self._input_layer is None:
                self._input_layer = InputLayer(batch_shape=shape)
            self._shapes(shape)

    @property
    def input_shape(self):
        return None if self._input_layer is None else self._input_layer.batch_shape

    @property
    def output_shape(self):
        return self._shapes(self.input_shape)[-1] if self.input_shape is not None else None

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Freezes (False) or unfreezes every layer, as Keras's model.trainable does."""
        self._trainable = bool(value)
        for layer in self._layers:
            layer.trainable = value

    @property
    def weights(self):
        return [w for layer in self._layers for w in layer.weights]

    @property
    def trainable_weights(self):
        return [w for layer in self._layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [w for layer in self._layers for w in layer.non_trainable_weights]

    def count_params(self):
        return sum(layer.count_params() for layer in self._layers)

    def get_weights(self):
        """Every layer's weights, in order, each in Keras's layout."""
        return [w for layer in self._layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """Loads a list like Keras's ``model.get_weights()``."""
        if not self.built:
            raise ValueError(f"model {self.name!r} is not built: give it an Input (or input_shape), call it "
                             "on data, or build(input_shape) first")
        weights = list(weights)
        counts = [len(layer._keras_weights()) for layer in self._layers]
        if len(weights) != sum(counts):
            raise ValueError(f"model {self.name!r} has {sum(counts)} weight arrays, got {len(weights)}")
        start = 0
        for layer, count in zip(self._layers, counts):
            layer.set_weights(weights[start:start + count])
            start += count

    def reset_states(self):
        """Zeroes the states of every stateful layer."""
        for layer in self._layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    reset_state = reset_states

    # -- running --------------------------------------------------------------------------------------
    def _run(self, x, training):
        mask = None
        for layer in self._layers:
            x, mask = layer.forward(x, mask, training)
            if isinstance(x, list):
                raise NotImplementedError(f"layer {layer.name} returns several outputs: not supported inside a model")
        return x, mask

    def __call__(self, x, training=False, mask=None):
        if isinstance(x, KerasTensor):
            raise NotImplementedError("calling a model on a symbolic tensor (nesting models) is not supported")
        x = _as_input_array(x)
        self._ensure_built(x)
        y, _ = self._run(x, bool(training))
        return y

    def _backprop(self, grad, layer_done=None):
        """Backward through the layers, last to first; ``layer_done(layer)`` after each one (its
        gradients are then final: data-parallel training starts sending them)."""
        for layer in reversed(self._layers):
            grad = layer.backward(grad)
            if layer_done is not None:
                layer_done(layer)
            if grad is None:   # integer inputs (an Embedding) end the chain
                break

    def _keras_variables(self):
        return [group for layer in self._layers for group in layer._keras_variables()]

    # -- compile, fit, evaluate, predict ------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True):
        """optimizer, loss and metrics by name or object, as in Keras (the other arguments are
        accepted for compatibility; loss_weights and weighted_metrics must be None)."""
        if loss_weights is not None or weighted_metrics is not None:
            raise NotImplementedError("loss_weights and weighted_metrics are not supported")
        if isinstance(loss, (list, dict)) or isinstance(metrics, dict):
            raise NotImplementedError("one loss and a flat list of metrics only (single-output models)")
        self.optimizer = optimizers_module.get(optimizer)
        self.loss = None if loss is None else losses_module.get(loss)
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        self._metric_specs = list(metrics or [])
        self.compiled_metrics = None   # resolved at the first batch ("accuracy" needs shapes)
        self._loss_tracker = metrics_module.Mean(name="loss")
        self.compiled = True

    def _check_compiled(self):
        if not self.compiled:
            raise RuntimeError("you must compile your model before training/testing: "
                               "use model.compile(optimizer, loss)")
        if self.loss is None:
            raise ValueError("the model was compiled without a loss")

    def _update_metrics(self, y, y_pred, mask):
        if self.compiled_metrics is None:
            self.compiled_metrics = [metrics_module.get(spec, y, y_pred) for spec in self._metric_specs]
        for metric in self.compiled_metrics:
            metric.update_state(y, y_pred, mask=mask)

    def _reset_metrics(self):
        self._loss_tracker.reset_state()
        for metric in self.compiled_metrics or []:
            metric.reset_state()

    reset_metrics = _reset_metrics

    def _logs(self):
        logs = {"loss": self._loss_tracker.result()}
        logs.update((metric.name, metric.result()) for metric in self.compiled_metrics or [])
        return dict(sorted(logs.items()))

    def _step(self, x, y, training):
        y_pred, mask = self._run(x, training)
        loss, grad = self.loss.value_and_grad(y, y_pred, mask)
        if training:
            for param in self.trainable_weights:
                param.grad = None
            self._backprop(grad)
            self.optimizer.apply(self._keras_variables())
        self._loss_tracker.update_state(loss, sample_weight=len(x))
        self._update_metrics(y, y_pred, mask)
        return self._logs()

    def _data(self, x, y):
        if x is None or y is None:
            raise ValueError("give x and y as arrays (datasets and generators are not supported)")
        x, y = _as_input_array(x), np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"x and y have different numbers of samples: {len(x)} and {len(y)}")
        self._ensure_built(x)
        return x, y

    def _callbacks(self, callbacks, verbose, params):
        callbacks = list(callbacks or [])
        history = History()
        # Keras's order: the progress bar first, the user's callbacks, History last (so that it
        # records what callbacks add to the logs, like the learning rate).
        progbar = [ProgbarLogger()] if verbose else []
        return CallbackList(progbar + callbacks + [history], self, params), history

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1,
            distributed=False):
        """Trains for `epochs` epochs; returns a History (``history.history["loss"]``, ...).

        ``distributed=True`` trains data-parallel on every process of an MPI job (``mpiexec -n N``,
        see ``fusedrnn.distributed``): every rank passes the same x and y and trains on its share
        of each batch; batch_size is per process, so a step's global batch is N * batch_size. The
        ranks keep identical weights, see identical logs, and only rank 0 prints and saves."""
        self._check_compiled()
        for name, value in (("class_weight", class_weight), ("sample_weight", sample_weight),
                            ("steps_per_epoch", steps_per_epoch), ("validation_steps", validation_steps)):
            if value is not None:
                raise NotImplementedError(f"fit: {name} is not supported")
        x, y = self._data(x, y)
        if validation_data is not None:
            if len(validation_data) != 2:
                raise NotImplementedError("validation_data must be (x_val, y_val)")
            x_val, y_val = self._data(*validation_data)
        elif validation_split:
            if not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
            split = int(math.floor(len(x) * (1 - validation_split)))
            if split == 0 or split == len(x):
                raise ValueError(f"validation_split={validation_split} leaves no training or no validation "
                                 f"samples out of {len(x)}")
            x, x_val, y, y_val = x[:split], x[split:], y[:split], y[split:]
        else:
            x_val = y_val = None
        batch_size = batch_size or 32
        verbose = 1 if verbose == "auto" else int(verbose)
        parallel = DataParallel(self, len(x)) if distributed else None
        global_batch = batch_size * (parallel.world if parallel else 1)
        if parallel:
            callbacks = parallel.callbacks(callbacks)
            verbose = verbose if parallel.is_root else 0
        steps = math.ceil(len(x) / global_batch)
        params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        callback_list, history = self._callbacks(callbacks, verbose, params)
        self.stop_training = False
        self._in_fit = True
        logs = {}
        try:
            callback_list.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                self._reset_metrics()
                callback_list.on_epoch_begin(epoch)
                if shuffle and (parallel is None or parallel.is_root):
                    order = resolve_rng(None).permutation(len(x))
                else:
                    order = np.arange(len(x))
                if parallel and shuffle:
                    order = parallel.agree(order)
                for step in range(steps):
                    batch = order[step * global_batch:(step + 1) * global_batch]
                    callback_list.on_train_batch_begin(step)
                    if parallel:
                        batch = parallel.shard(batch)
                        logs = parallel.train_step(x[batch], y[batch])
                    else:
                        logs = self._step(x[batch], y[batch], training=True)
                    callback_list.on_train_batch_end(step, logs)
                    if parallel:   # a callback on one rank stops them all
                        self.stop_training = parallel.any(self.stop_training)
                    if self.stop_training:
                        break
                logs = dict(logs)
                if x_val is not None and (epoch + 1) % validation_freq == 0:
                    evaluate = parallel.evaluate if parallel else self._evaluate
                    val_logs = evaluate(x_val, y_val, validation_batch_size or batch_size, callback_list)
                    logs.update(("val_" + name, value) for name, value in val_logs.items())
                callback_list.on_epoch_end(epoch, logs)
                if parallel:
                    self.stop_training = parallel.any(self.stop_training)
                if self.stop_training:
                    break
            callback_list.on_train_end(logs)
        finally:
            self._in_fit = False
        return history

    def _evaluate(self, x, y, batch_size, callback_list):
        self._reset_metrics()
        callback_list.on_test_begin()
        for step, start in enumerate(range(0, len(x), batch_size)):
            callback_list.on_test_batch_begin(step)
            logs = self._step(x[start:start + batch_size], y[start:start + batch_size], training=False)
            callback_list.on_test_batch_end(step, logs)
        logs = self._logs()
        callback_list.on_test_end(logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """The loss (and metrics) on (x, y) in inference mode: a float without metrics, else
        ``[loss, metric, ...]`` in compile order, or a dict with ``return_dict=True``."""
        self._check_compiled()
        if sample_weight is not None or steps is not None:
            raise NotImplementedError("evaluate: sample_weight and steps are not supported")
        x, y = self._data(x, y)
        batch_size = batch_size or 32
        verbose = 1 if verbose == "auto" else int(verbose)
        params = {"verbose": verbose, "epochs": 1, "steps": math.ceil(len(x) / batch_size)}
        callback_list, _ = self._callbacks(callbacks, verbose, params)
        logs = self._evaluate(x, y, batch_size, callback_list)
        if return_dict:
            return logs
        if not self.compiled_metrics:
            return logs["loss"]
        return [logs["loss"]] + [metric.result() for metric in self.compiled_metrics]

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The model's outputs for x in inference mode, computed batch by batch."""
        if steps is not None:
            raise NotImplementedError("predict: steps is not supported")
        x = _as_input_array(x)
        self._ensure_built(x)
        batch_size = batch_size or 32
        verbose = 1 if verbose == "auto" else int(verbose)
        params = {"verbose": verbose, "epochs": 1, "steps": math.ceil(len(x) / batch_size)}
        callback_list, _ = self._callbacks(callbacks, verbose, params)
        callback_list.on_predict_begin()
        outputs = []
        for step, start in enumerate(range(0, len(x), batch_size)):
            callback_list.on_predict_batch_begin(step)
            outputs.append(self._run(x[start:start + batch_size], training=False)[0])
            callback_list.on_predict_batch_end(step, {"outputs": outputs[-1]})
        callback_list.on_predict_end()
        return np.concatenate(outputs) if outputs else np.zeros((0,))

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on one batch. As in Keras, the loss and metrics reported are running
        means since the last ``reset_metrics()``."""
        self._check_compiled()
        x, y = self._data(x, y)
        return self._batch_result(self._step(x, y, training=True), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._check_compiled()
        x, y = self._data(x, y)
        return self._batch_result(self._step(x, y, training=False), return_dict)

    def predict_on_batch(self, x):
        x = _as_input_array(x)
        self._ensure_built(x)
        return self._run(x, training=False)[0]

    def _batch_result(self, logs, return_dict):
        if return_dict:
            return logs
        if not self.compiled_metrics:
            return logs["loss"]
        return [logs["loss"]] + [metric.result() for metric in self.compiled_metrics]

    # -- weights files ------------------------------------------------------------------------------------
    def save_weights(self, filepath, overwrite=True):
        """Writes the weights to `filepath`: Keras 3's HDF5 weights format when it ends in
        ``.h5`` (needs h5py; Keras's ``load_weights`` reads it), else a NumPy ``.npz`` archive
        (no pickle) at exactly that path whatever its suffix."""
        if not self.built:
            raise ValueError(f"model {self.name!r} is not built: there are no weights to save")
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(f"{filepath} exists and overwrite=False")
        saving.save_weights(self, filepath)

    def load_weights(self, filepath, skip_mismatch=False):
        """Loads weights saved by ``save_weights``, or by Keras (a Keras 3 ``.weights.h5`` file
        or a Keras 2 ``.h5`` weights file; needs h5py), into a model of the same architecture."""
        if skip_mismatch:
            raise NotImplementedError("skip_mismatch is not supported")
        if not self.built:
            raise ValueError(f"model {self.name!r} is not built: give it an Input (or input_shape), call it "
                             "on data, or build(input_shape) first")
        saving.load_weights(self, filepath)

    # -- summary ---------------------------------------------------------------------------------------
    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False,
                layer_range=None):
        """Prints a table of the layers (type, output shape, parameters) and the totals."""
        print_fn = print_fn or print
        if self.built and self._input_layer is not None:
            shapes = [_format_shape(s) for s in self._shapes(self._input_layer.batch_shape)]
        else:
            shapes = ["?"] * len(self._layers)
        rows = [(f"{layer.name} ({type(layer).__name__})", shape,
                 f"{layer.count_params():,}" if layer.built else "0 (unbuilt)")
                for layer, shape in zip(self._layers, shapes)]
        header = ("Layer (type)", "Output Shape", "Param #")
        widths = [max(len(header[i]), *(len(row[i]) for row in rows)) + 2 for i in range(3)] if rows else [14, 14, 9]
        line = "-" * sum(widths)

        def fmt(row):
            return row[0].ljust(widths[0]) + row[1].ljust(widths[1]) + row[2].rjust(widths[2])

        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        print_fn(fmt(header))
        print_fn("=" * sum(widths))
        for row in rows:
            print_fn(fmt(row))
        print_fn(line)
        built = [layer for layer in self._layers if layer.built]
        trainable = sum(layer.count_params() for layer in built if layer.trainable)
        total = sum(layer.count_params() for layer in built)
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {total - trainable:,}")


class Sequential(Model):
    """A linear stack of layers: ``Sequential([Input((T, F)), LSTM(32), Dense(1)])``, or layers
    ``add``-ed one by one. The first layer may carry Keras-2 style ``input_shape=(T, F)``; without
    any input shape the model is built at its first call on data."""

    def __init__(self, layers=None, trainable=True, name=None):
        super().__init__(name=name, trainable=trainable)
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if isinstance(layer, KerasTensor) and isinstance(layer.layer, InputLayer):
            layer = layer.layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError("an Input can only be the first entry of a Sequential model")
            self._input_layer = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add takes a layer, got {type(layer).__name__}")
        if not self._layers and self._input_layer is None and layer._batch_input_shape is not None:
            self._input_layer = InputLayer(batch_shape=layer._batch_input_shape)
        self._layers.append(layer)
        if self._input_layer is not None:
            self._shapes(self._input_layer.batch_shape)   # builds the new layer, as Keras does

    def pop(self):
        if not self._layers:
            raise TypeError("there are no layers in the model")
        return self._layers.pop()

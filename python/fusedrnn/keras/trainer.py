"""Trainer: compile, the training step, and the fit / evaluate / predict loops of a Model.

A Model is a Trainer and a container of layers (``models.py``), as in Keras. The Trainer asks
the container only for ``forward``, ``backward``, ``trainable_weights`` and its Keras variables,
and builds it from the first data it sees (``_ensure_built``).

``train_step(x, y)`` is one optimizer step on one batch and ``test_step(x, y)`` one evaluation
batch; fit and evaluate call them for every batch, so overriding them changes what fit and
evaluate do, as in Keras. How many processes share the work (one, or every process of an MPI job
with ``fit(..., distributed=True)``) is answered by ``self._process`` (``_data_parallel.py``).

Training follows Keras's loop: each epoch shuffles the training samples (``shuffle=True``),
runs batches of ``batch_size`` (the last one partial), reports the running mean of the batch
losses (weighted by batch size) and of each metric over the samples seen, then evaluates the
validation data in inference mode (``val_`` logs). ``validation_split`` takes the last fraction
of the samples, before shuffling.
"""

import math

import numpy as np

from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from ._data_parallel import DataParallel, SingleProcess
from .callbacks import CallbackList, History, ProgbarLogger

__all__ = ["Trainer"]


def as_input_array(x):
    if isinstance(x, (list, tuple)) and len(x) == 1 and not np.isscalar(x[0]):
        x = x[0]   # a one-element list of inputs, as Keras accepts for single-input models
    return np.asarray(x)


def _reject_sample_weight(sample_weight):
    if sample_weight is not None:
        raise NotImplementedError("sample_weight is not supported")


class Trainer:
    """What a Model adds to its layers to train: compile, the steps, and the loops. The class
    that derives from it provides forward(x, mask, training), backward(grad, layer_done),
    trainable_weights, _keras_variables() and _ensure_built(input_shape)."""

    def __init__(self):
        self.optimizer = self.loss = None
        self.compiled = False
        self.compiled_metrics = None
        self.stop_training = False
        self.history = None
        self._loss_tracker = None
        self._in_fit = False
        self._process = SingleProcess()

    # -- compile and metrics --------------------------------------------------------------------------
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

    @property
    def metrics(self):
        """The running metrics, as in Keras: the loss's mean first, then the compiled metrics
        (empty before compile; the compiled ones appear at the first batch)."""
        if not self.compiled:
            return []
        return [self._loss_tracker] + list(self.compiled_metrics or [])

    def get_metrics_result(self):
        """The logs: each metric's current value by name."""
        return dict(sorted((metric.name, metric.result()) for metric in self.metrics))

    def reset_metrics(self):
        """Starts every running metric afresh (fit does at each epoch, evaluate at its start)."""
        for metric in self.metrics:
            metric.reset_state()

    def _update_metrics(self, y, y_pred, mask):
        if self.compiled_metrics is None:
            self.compiled_metrics = [metrics_module.get(spec, y, y_pred) for spec in self._metric_specs]
        for metric in self.compiled_metrics:
            metric.update_state(y, y_pred, mask=mask)

    # -- one batch -------------------------------------------------------------------------------------
    def train_step(self, x, y, sample_weight=None):
        """One training step on the batch (x, y): a forward pass in training mode, the loss, the
        backward pass, and one optimizer update of the trainable weights.

        Returns the logs as Keras's train_step does: the loss and each compiled metric by name,
        each the running mean since the last ``reset_metrics()`` (fit resets them every epoch).
        fit calls it for every batch. sample_weight must be None (not supported).
        """
        self._check_compiled()
        _reject_sample_weight(sample_weight)
        x, y = self._data(x, y)
        process = self._process
        for param in self.trainable_weights:
            param.grad = None
        loss, count = 0.0, 0
        if len(x):   # in data-parallel training a process may get no sample of the last batch
            y_pred, mask = self.forward(x, None, training=True)
            loss, grad = self.loss.value_and_grad(y, y_pred, mask)
            count = self.loss.mean_count(y_pred, mask)
            process.before_backward(count)
            self.backward(grad, layer_done=process.layer_done, input_grad=False)
            self._update_metrics(y, y_pred, mask)
        process.reduce_gradients(count)
        self.optimizer.apply(self._keras_variables())
        return process.step_logs(self, loss, count, len(x))

    def test_step(self, x, y, sample_weight=None):
        """One evaluation batch: the loss and metrics of a forward pass in inference mode, added
        to the running means; returns the logs as train_step does. evaluate, and fit's
        validation, call it for every batch. sample_weight must be None (not supported)."""
        self._check_compiled()
        _reject_sample_weight(sample_weight)
        x, y = self._data(x, y)
        y_pred, mask = self.forward(x, None, training=False)
        loss, _ = self.loss.value_and_grad(y, y_pred, mask)
        self._loss_tracker.update_state(loss, sample_weight=len(x))
        self._update_metrics(y, y_pred, mask)
        return self.get_metrics_result()

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on one batch. As in Keras, the loss and metrics reported are running
        means since the last ``reset_metrics()``."""
        if class_weight is not None:
            raise NotImplementedError("train_on_batch: class_weight is not supported")
        return self._batch_result(self.train_step(x, y, sample_weight), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        return self._batch_result(self.test_step(x, y, sample_weight), return_dict)

    def predict_on_batch(self, x):
        x = as_input_array(x)
        self._ensure_built(x.shape)
        return self.forward(x, None, training=False)[0]

    def _batch_result(self, logs, return_dict):
        if return_dict:
            return logs
        if not self.compiled_metrics:
            return logs["loss"]
        return [logs["loss"]] + [metric.result() for metric in self.compiled_metrics]

    def _data(self, x, y):
        if x is None or y is None:
            raise ValueError("give x and y as arrays (datasets and generators are not supported)")
        x, y = as_input_array(x), np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"x and y have different numbers of samples: {len(x)} and {len(y)}")
        self._ensure_built(x.shape)
        return x, y

    # -- the loops --------------------------------------------------------------------------------------
    def _callbacks(self, callbacks, verbose, params):
        history = History()
        # Keras's order: the progress bar first, the user's callbacks, History last (so that it
        # records what callbacks add to the logs, like the learning rate).
        progbar = [ProgbarLogger()] if verbose else []
        return CallbackList(progbar + list(callbacks or []) + [history], self, params), history

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
        process = DataParallel(self, len(x)) if distributed else SingleProcess()
        verbose = (1 if verbose == "auto" else int(verbose)) if process.is_root else 0
        global_batch = batch_size * process.world
        steps = math.ceil(len(x) / global_batch)
        params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        callback_list, history = self._callbacks(process.callbacks(callbacks), verbose, params)
        self.stop_training = False
        self._in_fit, self._process = True, process
        logs = {}
        try:
            callback_list.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                self.reset_metrics()
                callback_list.on_epoch_begin(epoch)
                order = process.order(len(x), shuffle)
                for step in range(steps):
                    batch = process.shard(order[step * global_batch:(step + 1) * global_batch])
                    callback_list.on_train_batch_begin(step)
                    logs = self.train_step(x[batch], y[batch])
                    callback_list.on_train_batch_end(step, logs)
                    self.stop_training = process.any(self.stop_training)   # one rank's callback stops all
                    if self.stop_training:
                        break
                logs = dict(logs)
                if x_val is not None and (epoch + 1) % validation_freq == 0:
                    val_logs = self._evaluate(x_val, y_val, validation_batch_size or batch_size, callback_list)
                    logs.update(("val_" + name, value) for name, value in val_logs.items())
                callback_list.on_epoch_end(epoch, logs)
                self.stop_training = process.any(self.stop_training)
                if self.stop_training:
                    break
            callback_list.on_train_end(logs)
        finally:
            self._in_fit, self._process = False, SingleProcess()
        return history

    def _evaluate(self, x, y, batch_size, callback_list):
        """test_step over this process's share of (x, y), batch by batch; the logs of all of it."""
        x, y = self._process.shard(x), self._process.shard(y)
        self.reset_metrics()
        callback_list.on_test_begin()
        for step, start in enumerate(range(0, len(x), batch_size)):
            callback_list.on_test_batch_begin(step)
            logs = self.test_step(x[start:start + batch_size], y[start:start + batch_size])
            callback_list.on_test_batch_end(step, logs)
        logs = self._process.evaluation_logs(self)
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
        return self._batch_result(self._evaluate(x, y, batch_size, callback_list), return_dict)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The model's outputs for x in inference mode, computed batch by batch."""
        if steps is not None:
            raise NotImplementedError("predict: steps is not supported")
        x = as_input_array(x)
        self._ensure_built(x.shape)
        batch_size = batch_size or 32
        verbose = 1 if verbose == "auto" else int(verbose)
        params = {"verbose": verbose, "epochs": 1, "steps": math.ceil(len(x) / batch_size)}
        callback_list, _ = self._callbacks(callbacks, verbose, params)
        callback_list.on_predict_begin()
        outputs = []
        for step, start in enumerate(range(0, len(x), batch_size)):
            callback_list.on_predict_batch_begin(step)
            outputs.append(self.forward(x[start:start + batch_size], None, training=False)[0])
            callback_list.on_predict_batch_end(step, {"outputs": outputs[-1]})
        callback_list.on_predict_end()
        return np.concatenate(outputs) if outputs else np.zeros((0,))

"""Callbacks with Keras's names, arguments and hooks: Callback, History, ProgbarLogger,
EarlyStopping, ModelCheckpoint, LearningRateScheduler, ReduceLROnPlateau, TerminateOnNaN and
LambdaCallback.

A callback sees ``self.model`` and ``self.params`` (``epochs``, ``steps``, ``verbose``); its hooks
get the logs dict (``loss``, metrics, ``val_...``) that History records. Setting
``model.stop_training = True`` ends fit after the current batch's epoch.

Where a callback picks a direction for its monitored value in ``mode="auto"``, names containing
"acc" are maximised and everything else (losses, errors) minimised.
"""

import math
import sys
import time
import warnings

import numpy as np

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "EarlyStopping", "ModelCheckpoint",
           "LearningRateScheduler", "ReduceLROnPlateau", "TerminateOnNaN", "LambdaCallback"]


class Callback:
    """Base class: override the hooks you need (they do nothing here)."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass

    # Keras calls the train-batch hooks on_batch_begin/end unless they are overridden.
    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CallbackList:
    """Calls a hook on every callback in order."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            callback.set_model(model)
            callback.set_params(params)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args):
            for callback in self.callbacks:
                getattr(callback, hook)(*args)
        return call


class History(Callback):
    """Records the logs of every epoch: ``history`` (name -> list of values) and ``epoch``."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(value)
        self.model.history = self


def _format_logs(logs):
    parts = []
    for name, value in logs.items():
        value = float(value)
        parts.append(f"{name}: {value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{name}: {value:.4e}")
    return " - ".join(parts)


def _format_per_step(seconds):
    return f"{seconds * 1e3:.0f}ms/step" if seconds >= 1e-3 else f"{seconds * 1e6:.0f}us/step"


def _format_seconds(seconds):
    if seconds >= 3600:
        return f"{seconds // 3600:.0f}:{seconds % 3600 // 60:02.0f}:{seconds % 60:02.0f}"
    if seconds >= 60:
        return f"{seconds // 60:.0f}:{seconds % 60:02.0f}"
    return f"{seconds:.0f}s"


class ProgbarLogger(Callback):
    """Prints training progress: with verbose=1 a bar per epoch with the running loss and metrics
    (redrawn in place on a terminal, printed once per epoch otherwise), with verbose=2 one line
    per epoch. fit, evaluate and predict add it themselves."""

    WIDTH = 30

    def _verbose(self):
        return self.params.get("verbose", 1)

    def _start_timer(self):
        self._start = time.perf_counter()
        self._dynamic = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()

    def _line(self, step, logs, final):
        total = self.params["steps"]
        elapsed = time.perf_counter() - self._start
        per_step = elapsed / max(step, 1)
        if self._verbose() == 2:
            line = f"{total}/{total} - {_format_seconds(elapsed)} - {_format_per_step(per_step)}"
        else:
            done = int(self.WIDTH * step / total) if total else self.WIDTH
            bar = "=" * max(done - 1, 0) + (">" if done < self.WIDTH else "=") + "." * (self.WIDTH - done)
            timing = (f"{_format_seconds(elapsed)} {_format_per_step(per_step)}" if final
                      else f"ETA: {_format_seconds(per_step * (total - step))}")
            line = f"{step}/{total} [{bar}] - {timing}"
        text = _format_logs(logs or {})
        return line + (" - " + text if text else "")

    def _show(self, step, logs, final):
        verbose = self._verbose()
        if verbose == 1 and (self._dynamic or final):
            # On a terminal the line is redrawn in place; in a log file only the final one is written.
            sys.stdout.write(("\r" if self._dynamic else "") + self._line(step, logs, final) + ("\n" if final else ""))
            sys.stdout.flush()
        elif verbose == 2 and final:
            print(self._line(step, logs, final))

    def on_epoch_begin(self, epoch, logs=None):
        self._start_timer()
        if self._verbose():
            print(f"Epoch {epoch + 1}/{self.params['epochs']}")

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 < self.params["steps"]:
            self._show(batch + 1, logs, final=False)

    def on_epoch_end(self, epoch, logs=None):
        self._show(self.params["steps"], logs, final=True)

    # evaluate and predict show one line; fit's validation shows in the epoch's line instead.
    def _standalone(self):
        return not getattr(self.model, "_in_fit", False)

    def on_test_begin(self, logs=None):
        if self._standalone():
            self._start_timer()

    def on_test_end(self, logs=None):
        if self._standalone():
            self._show(self.params["steps"], logs, final=True)

    def on_predict_begin(self, logs=None):
        self._start_timer()

    def on_predict_end(self, logs=None):
        self._show(self.params["steps"], {}, final=True)


def _direction(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _improves(value, reference, direction, min_delta):
    """value beats reference by more than min_delta (None is beaten by anything)."""
    if reference is None:
        return True
    if direction == "min":
        return value + abs(min_delta) < reference
    return value - abs(min_delta) > reference


def _monitored(logs, monitor, who):
    value = (logs or {}).get(monitor)
    if value is None:
        warnings.warn(f"{who} is conditioned on {monitor!r}, which is not available; available: "
                      f"{', '.join(logs or {})}", stacklevel=3)
    return value


class EarlyStopping(Callback):
    """Stops training when `monitor` has not improved (by more than ``min_delta``) for `patience`
    epochs. ``baseline``: the value to beat before patience is reset; ``restore_best_weights``:
    load the best epoch's weights when training ends; ``start_from_epoch``: epochs to wait before
    watching."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor, self.min_delta, self.patience, self.verbose = monitor, min_delta, patience, verbose
        self.direction = _direction(mode, monitor)
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best, self.best_weights, self.best_epoch = 0, 0, None, None, 0

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored(logs, self.monitor, "EarlyStopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if _improves(current, self.best, self.direction, self.min_delta):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # Patience restarts only once the baseline (if any) is beaten too.
            if self.baseline is None or _improves(current, self.baseline, self.direction, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Saves the weights after every epoch (``save_freq="epoch"``), or only when `monitor`
    improves with ``save_best_only``. `filepath` may hold ``{epoch}`` and log names with formats,
    e.g. ``"ckpt-{epoch:02d}-{val_loss:.2f}.weights.h5"``; the file is written with
    ``model.save_weights`` (Keras's HDF5 weights format for ``.h5`` paths, else ``.npz``). A
    whole-model ``.keras`` file cannot be written here, so ``save_weights_only=False`` saves the
    weights too."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        if save_freq != "epoch":
            raise NotImplementedError("ModelCheckpoint supports save_freq='epoch' only")
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.direction = _direction(mode, monitor)
        self.best = initial_value_threshold

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = _monitored(logs, self.monitor, "ModelCheckpoint")
            if current is None or not _improves(current, self.best, self.direction, 0):
                if self.verbose > 0 and current is not None:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                previous = "inf" if self.best is None else f"{self.best:.5f}"
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {previous} to {current:.5f}, "
                      f"saving model to {path}")
            self.best = current
        elif self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        self.model.save_weights(path)


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch to ``schedule(epoch, lr)`` (or
    ``schedule(epoch)``); logs it as ``learning_rate``."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        try:
            lr = self.schedule(epoch, lr)
        except TypeError:   # a schedule of the epoch alone, which Keras accepts too
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, int, np.floating, np.integer)):
            raise ValueError(f"the schedule must return a float, got {lr!r}")
        self.model.optimizer.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by `factor` (not below `min_lr`) when `monitor` has not
    improved by more than `min_delta` for `patience` epochs, then waits `cooldown` epochs."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kwargs):
        super().__init__()
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0, got {factor}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, factor, patience, verbose
        self.direction = _direction(mode, monitor)
        self.min_delta, self.cooldown, self.min_lr = min_delta, cooldown, min_lr

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self.model.optimizer.learning_rate
        current = _monitored(logs, self.monitor, "ReduceLROnPlateau")
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if _improves(current, self.best, self.direction, self.min_delta):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = self.model.optimizer.learning_rate
                if old > np.float32(self.min_lr):
                    new = max(old * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class TerminateOnNaN(Callback):
    """Stops training as soon as a batch's loss is NaN or infinite."""

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from functions: on_epoch_begin/end(epoch, logs), on_train_batch_begin/end and
    on_batch_begin/end(batch, logs), on_train_begin/end(logs)."""

    def __init__(self, **hooks):
        super().__init__()
        for name, function in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise TypeError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, function)

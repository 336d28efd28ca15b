"""What ``Model.fit(..., distributed=True)`` does differently: data-parallel training over MPI.

Every rank passes the same x and y. Each epoch rank 0 draws the sample order (exactly as a
single process would) and sends it to the others; step s's global batch is the next
``batch_size * world_size`` samples of it, and rank r trains on every world_size-th of them from
r on. The gradients are averaged with each rank weighted by the number of values its loss is
the mean of, so a step computes exactly the gradient of the whole global batch: training on n
processes with batch_size b follows a single process with batch_size n * b (to float rounding).

Losses and metrics are reduced over the ranks at every step, so every rank sees the same logs
and its callbacks decide alike (EarlyStopping, ReduceLROnPlateau); only rank 0 prints a
progress bar and runs ModelCheckpoint.
"""

import numpy as np

from .. import distributed
from .callbacks import ModelCheckpoint


class DataParallel:
    def __init__(self, model, sample_count):
        distributed.init()
        self.model = model
        self.rank, self.world = distributed.rank(), distributed.world_size()
        low, high = distributed.allreduce(sample_count, "min"), distributed.allreduce(sample_count, "max")
        if low != high:
            raise ValueError(f"fit(distributed=True): every rank must pass the same x and y; the ranks have from "
                             f"{int(low)} to {int(high)} training samples")
        if sample_count < self.world:
            raise ValueError(f"fit(distributed=True): {sample_count} training samples cannot be shared by "
                             f"{self.world} processes")
        distributed.broadcast_parameters(model)
        self.reducer = distributed.GradientReducer(model)

    @property
    def is_root(self):
        return self.rank == 0

    def callbacks(self, callbacks):
        """Rank 0 keeps every callback; the others drop those that write files."""
        callbacks = list(callbacks or [])
        return callbacks if self.is_root else [c for c in callbacks if not isinstance(c, ModelCheckpoint)]

    def agree(self, order):
        """Rank 0's order, on every rank."""
        order = np.ascontiguousarray(order, dtype=np.int64)
        distributed._communicator().Bcast(order, root=0)
        return order

    def shard(self, batch):
        return batch[self.rank::self.world]

    def any(self, flag):
        return bool(distributed.allreduce(float(bool(flag)), "max"))

    def _metric_sums(self):
        sums = []
        for metric in self.model.compiled_metrics or []:
            if not (hasattr(metric, "total") and hasattr(metric, "count")):
                raise NotImplementedError(f"metric {metric.name!r} keeps no total and count: it cannot be reduced "
                                          "over ranks in fit(distributed=True)")
            sums += [metric.total, metric.count]
        return sums

    def _logs(self, loss, reduced_sums):
        logs = {"loss": loss}
        for index, metric in enumerate(self.model.compiled_metrics or []):
            total, count = reduced_sums[2 * index:2 * index + 2]
            logs[metric.name] = total / count if count else 0.0
        return dict(sorted(logs.items()))

    def train_step(self, x, y):
        """One step on this rank's part of the global batch (which may be empty at the end)."""
        model = self.model
        for param in model.trainable_weights:
            param.grad = None
        loss, count = 0.0, 0
        if len(x):
            y_pred, mask = model._run(x, True)
            loss, grad = model.loss.value_and_grad(y, y_pred, mask)
            count = model.loss.mean_count(y_pred, mask)
            self.reducer.set_weight(count)
            model._backprop(grad, layer_done=self.reducer.ready)
            model._update_metrics(y, y_pred, mask)
        self.reducer.finish(count)
        model.optimizer.apply(model._keras_variables())
        sums = distributed.allreduce([loss * count, count, len(x)] + self._metric_sums(), "sum")
        weighted_loss, loss_count, samples = sums[:3]
        model._loss_tracker.update_state(weighted_loss / loss_count if loss_count else 0.0, sample_weight=samples)
        return self._logs(model._loss_tracker.result(), sums[3:])

    def evaluate(self, x, y, batch_size, callback_list):
        """Each rank evaluates its share of (x, y); the logs are over all of it."""
        model = self.model
        model._evaluate(self.shard(x), self.shard(y), batch_size, callback_list)
        tracker = model._loss_tracker
        sums = distributed.allreduce([tracker.total, tracker.count] + self._metric_sums(), "sum")
        return self._logs(sums[0] / sums[1] if sums[1] else 0.0, sums[2:])

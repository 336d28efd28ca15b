"""The processes a fit runs on: SingleProcess (one, the usual case) or DataParallel (every
process of an MPI job, ``fit(..., distributed=True)``).

fit and Model.train_step/test_step ask this object every question whose answer depends on
how many processes train: the epoch's sample order, this process's share of a batch, the
gradient average, the logs. So the training loop and the steps are written once, and
data-parallel training differs only here.

Data-parallel training: every rank passes the same x and y. Each epoch rank 0 draws the sample
order (exactly as a single process would) and sends it to the others; step s's global batch is
the next ``batch_size * world_size`` samples of it, and rank r trains on every world_size-th of
them from r on. The gradients are averaged with each rank weighted by the number of values its
loss is the mean of, so a step computes exactly the gradient of the whole global batch: training
on n processes with batch_size b follows a single process with batch_size n * b (to float
rounding).

Losses and metrics are reduced over the ranks at every step, so every rank sees the same logs
and its callbacks decide alike (EarlyStopping, ReduceLROnPlateau); only rank 0 prints a
progress bar and runs ModelCheckpoint.
"""

import numpy as np

from .. import distributed
from .._random import resolve_rng
from .callbacks import ModelCheckpoint


class SingleProcess:
    """Training in this process alone: nothing to share out or to combine."""

    world = 1
    is_root = True
    layer_done = None   # Model.backward's hook after each layer: there is nothing to start early

    def callbacks(self, callbacks):
        """The callbacks this process runs."""
        return list(callbacks or [])

    def order(self, count, shuffle):
        """The order of the `count` training samples in an epoch."""
        return resolve_rng(None).permutation(count) if shuffle else np.arange(count)

    def shard(self, samples):
        """This process's part of a batch, or of the validation data."""
        return samples

    def any(self, flag):
        """Whether `flag` is set on any process."""
        return bool(flag)

    def before_backward(self, count):
        """A training step's loss is the mean of `count` values here; its backward comes next."""

    def reduce_gradients(self, count):
        """Makes every trainable weight's .grad the gradient of the whole batch."""

    def step_logs(self, model, loss, count, samples):
        """Records a training step's loss (the mean of `count` values over `samples` samples
        here) and returns the logs of the epoch so far."""
        model.metrics[0].update_state(loss, sample_weight=samples)   # the loss tracker comes first
        return model.get_metrics_result()

    def evaluation_logs(self, model):
        """The logs of an evaluation whose batches this process ran through test_step."""
        return model.get_metrics_result()


class DataParallel:
    """Training on every process of an MPI job; the same methods as SingleProcess."""

    def __init__(self, model, sample_count):
        distributed.init()
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
        # A layer's gradients are final once its backward returns: start sending them while
        # the layers before it run theirs.
        self.layer_done = self.reducer.ready

    @property
    def is_root(self):
        return self.rank == 0

    def callbacks(self, callbacks):
        """Rank 0 keeps every callback; the others drop those that write files."""
        callbacks = list(callbacks or [])
        return callbacks if self.is_root else [c for c in callbacks if not isinstance(c, ModelCheckpoint)]

    def order(self, count, shuffle):
        """Rank 0's order, on every rank."""
        if not shuffle:
            return np.arange(count)
        order = np.empty(count, np.int64)
        if self.is_root:
            order[:] = resolve_rng(None).permutation(count)
        distributed._communicator().Bcast(order, root=0)
        return order

    def shard(self, samples):
        return samples[self.rank::self.world]

    def any(self, flag):
        return bool(distributed.allreduce(float(bool(flag)), "max"))

    def before_backward(self, count):
        self.reducer.set_weight(count)

    def reduce_gradients(self, count):
        # A rank with no sample in this batch still takes part, with weight 0.
        self.reducer.finish(count)

    @staticmethod
    def _sums(metrics):
        sums = []
        for metric in metrics:
            if not (hasattr(metric, "total") and hasattr(metric, "count")):
                raise NotImplementedError(f"metric {metric.name!r} keeps no total and count: it cannot be reduced "
                                          "over ranks in fit(distributed=True)")
            sums += [metric.total, metric.count]
        return sums

    @staticmethod
    def _logs(metrics, reduced_sums, logs):
        for index, metric in enumerate(metrics):
            total, count = reduced_sums[2 * index:2 * index + 2]
            logs[metric.name] = total / count if count else 0.0
        return dict(sorted(logs.items()))

    def step_logs(self, model, loss, count, samples):
        """The global batch's loss goes into every rank's loss tracker, so the trackers agree;
        the metrics keep this rank's samples and are summed over ranks for the logs. One
        allreduce carries both."""
        loss_tracker, *metrics = model.metrics
        sums = distributed.allreduce([loss * count, count, samples] + self._sums(metrics), "sum")
        weighted_loss, loss_count, samples = sums[:3]
        loss_tracker.update_state(weighted_loss / loss_count if loss_count else 0.0, sample_weight=samples)
        return self._logs(metrics, sums[3:], {loss_tracker.name: loss_tracker.result()})

    def evaluation_logs(self, model):
        """Each rank evaluated its shard of the data; the logs are over all of it."""
        metrics = model.metrics
        return self._logs(metrics, distributed.allreduce(self._sums(metrics), "sum"), {})

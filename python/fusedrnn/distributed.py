"""Data-parallel training over MPI (through mpi4py): every process holds a copy of the model,
trains on its own shard of the data, and the gradients are averaged across processes at every
step, so that all copies stay identical.

    import fusedrnn.distributed as dist
    dist.init()                                    # from the MPI environment (mpiexec -n 2 ...)
    dist.broadcast_parameters(model)               # everyone starts from rank 0's weights
    for epoch in range(epochs):
        sampler.set_epoch(epoch)                   # a DistributedSampler: this rank's indices
        ...forward, loss (a mean over the local batch), backward...
        dist.allreduce_gradients(model)            # the mean of every rank's gradients
        optimizer.step()

Launch with ``mpiexec -n 2 python train.py``. ``keras`` models do all of it in
``model.fit(..., distributed=True)``.

Gradients travel in a few large buffers ("buckets", one MPI call each) rather than one call per
parameter. A GradientReducer can start a bucket's reduction as soon as the backward pass has
produced its gradients (``ready``), overlapping communication with the rest of backward.

mpi4py is optional (``pip install fusedrnn[mpi]`` and an MPI library): this module imports it only
in ``init``. ``init`` also makes an uncaught exception on any rank abort the whole job, instead of
leaving the other ranks waiting for it forever.
"""

import sys
import time

import numpy as np

from ._base import Parameter
from .nn import Module

__all__ = ["init", "is_initialized", "rank", "world_size", "barrier", "broadcast_parameters", "broadcast_object",
           "allreduce", "allreduce_gradients", "GradientReducer", "DistributedSampler"]

INSTALL_HINT = ("fusedrnn.distributed needs mpi4py and an MPI library: `pip install fusedrnn[mpi] mpich` "
                "(or `pip install mpi4py` over the system's MPI, e.g. `apt-get install libopenmpi-dev`); "
                "then launch with `mpiexec -n 2 python your_script.py`")

DEFAULT_BUCKET_BYTES = 4 << 20   # several buckets for a multi-layer model (so they can overlap
                                 # backward), few enough that per-call latency does not count

_comm = None


def init(comm=None):
    """Joins the MPI job this process was launched in (``mpiexec``); a plain ``python`` run is a
    job of one. `comm`: an mpi4py communicator to use instead of COMM_WORLD. Calling it again
    does nothing (or switches to the given communicator)."""
    global _comm
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    if comm is None:
        if _comm is not None:
            return
        comm = MPI.COMM_WORLD
    elif not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator, got {type(comm).__name__}")
    _comm = comm
    _abort_on_uncaught_exception()


def _abort_on_uncaught_exception():
    """An exception that ends one rank would leave the others blocked in their next collective:
    print it, then take the whole job down (as ``python -m mpi4py`` does)."""
    previous = sys.excepthook
    if getattr(previous, "_fusedrnn_aborts", False):
        return

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        if _comm is not None and _comm.Get_size() > 1:
            sys.stderr.write(f"fusedrnn.distributed: rank {_comm.Get_rank()} raised {kind.__name__}; "
                             "aborting the MPI job\n")
            sys.stderr.flush()
            # Abort ends every process of the job at once, and mpiexec may drop output it has not
            # forwarded yet (the traceback above came out cut short under load): a moment first.
            time.sleep(1.0)
            _comm.Abort(1)

    hook._fusedrnn_aborts = True
    sys.excepthook = hook


def is_initialized():
    return _comm is not None


def _communicator():
    if _comm is None:
        raise RuntimeError("fusedrnn.distributed is not initialized: call fusedrnn.distributed.init() first")
    return _comm


def rank():
    """This process's index in the job, 0 .. world_size() - 1."""
    return _communicator().Get_rank()


def world_size():
    """The number of processes in the job."""
    return _communicator().Get_size()


def barrier():
    _communicator().Barrier()


def broadcast_object(value, root=0):
    """`value` as rank `root` has it (any picklable object), on every rank."""
    return _communicator().bcast(value, root=root)


def _mpi_op(op):
    from mpi4py import MPI
    ops = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
    return ops[op]


def allreduce(value, op="mean"):
    """The elementwise ``"sum"``, ``"mean"``, ``"max"`` or ``"min"`` of `value` (a number or an
    array of the same shape on every rank) over all ranks; a new float64 array (a float for a
    number)."""
    comm = _communicator()
    mpi_op = _mpi_op(op)
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"allreduce takes numbers, got dtype {array.dtype}")
    buffer = np.array(array, dtype=np.float64, copy=True, order="C")
    comm.Allreduce(_in_place(), buffer, op=mpi_op)
    if op == "mean":
        buffer /= comm.Get_size()
    return float(buffer) if buffer.ndim == 0 else buffer


def _in_place():
    from mpi4py import MPI
    return MPI.IN_PLACE


# -- what a model's parameters are -----------------------------------------------------------------
def _parameter_list(model, trainable_only):
    """The Parameters of a fusedrnn.nn Module, a fusedrnn.keras Model or Layer, or an iterable of
    Parameters, in a fixed order (the same on every rank for the same model code)."""
    if isinstance(model, Parameter):
        params = [model]
    elif isinstance(model, Module):
        params = [p for p in model.parameters() if p.requires_grad or not trainable_only]
    elif hasattr(model, "trainable_weights") and hasattr(model, "weights"):
        params = list(model.trainable_weights if trainable_only else model.weights)
    else:
        try:
            params = list(model)
        except TypeError:
            raise TypeError("expected a fusedrnn.nn.Module, a fusedrnn.keras model or layer, or an iterable of "
                            f"Parameters; got {type(model).__name__}") from None
    for param in params:
        if not isinstance(param, Parameter):
            raise TypeError(f"expected Parameters, got {type(param).__name__}")
    if not params and hasattr(model, "built") and not model.built:
        raise ValueError("the model is not built yet: it has no weights to share (build it, or call it once)")
    return params


def _check_same_everywhere(comm, params, what):
    """Raises on every rank (not only the odd one out, which would leave the rest blocked in the
    next collective) when the ranks' parameter lists differ."""
    signature = [(tuple(p.shape), p.dtype.str) for p in params]
    root_signature = comm.bcast(signature, root=0)
    differs = comm.allreduce(int(signature != root_signature), op=_mpi_op("max"))
    if differs:
        raise ValueError(f"{what}: the ranks' models differ (parameter shapes or dtypes are not the same on every "
                         f"rank; this rank has {len(signature)} parameters, rank 0 has {len(root_signature)})")


def broadcast_parameters(model, root=0):
    """Copies rank `root`'s parameter values (every weight, trainable or not) to every rank, bumping
    the version of every parameter it writes (on rank `root` too)."""
    comm = _communicator()
    if not 0 <= root < comm.Get_size():
        raise ValueError(f"root must be a rank in [0, {comm.Get_size()}), got {root}")
    params = _parameter_list(model, trainable_only=False)
    _check_same_everywhere(comm, params, "broadcast_parameters")
    for dtype in sorted({p.dtype.str for p in params}):
        group = [p for p in params if p.dtype.str == dtype]
        buffer = np.concatenate([p.data.ravel() for p in group]) if group else np.zeros(0, dtype)
        comm.Bcast(buffer, root=root)
        start = 0
        for param in group:
            param.data = buffer[start:start + param.size].reshape(param.shape).copy()
            start += param.size


# -- gradient averaging ----------------------------------------------------------------------------
class _Bucket:
    """Parameters whose gradients are reduced together in one contiguous buffer. The buffer's
    tail holds, per parameter, 1 where this rank has a gradient for it (so that a parameter no
    rank computed a gradient for keeps ``grad = None``), and finally this rank's weight."""

    def __init__(self, params, dtype, has_weight):
        self.params = params
        self.offsets = np.cumsum([0] + [p.size for p in params])
        self.buffer = np.zeros(self.offsets[-1] + len(params) + int(has_weight), dtype=dtype)
        self.pending = set(range(len(params)))
        self.request = None

    def fill(self, weight):
        values = self.buffer
        flags = values[self.offsets[-1]:self.offsets[-1] + len(self.params)]
        for index, param in enumerate(self.params):
            part = values[self.offsets[index]:self.offsets[index + 1]]
            if param.grad is None:
                part.fill(0)
                flags[index] = 0
            else:
                np.multiply(np.asarray(param.grad).ravel(), weight, out=part, casting="unsafe")
                flags[index] = 1
        if len(values) > self.offsets[-1] + len(self.params):
            values[-1] = weight


class GradientReducer:
    """Averages the gradients of `model`'s trainable parameters over all ranks, bucket by bucket.

    ``ready(params)`` says that the gradients of those parameters are final (their layer's
    backward has returned): a bucket whose parameters are all ready starts its reduction at once
    (a non-blocking MPI call), while backward goes on. ``finish(weight)`` waits for every bucket
    (starting those not started) and writes the result into each ``param.grad``.

    weight: this rank's share of the average. None: the plain mean over ranks, which is the
    gradient of the whole batch when every rank's loss is a mean over a batch of the same size.
    With different batch sizes pass each rank's sample count: the result ``sum(w_r * g_r) /
    sum(w_r)`` is then exactly the gradient of the mean loss over all their samples. A rank with
    nothing to contribute passes weight 0.

    Buckets follow the reverse of the parameter order, as backward produces gradients from the
    last layer to the first.
    """

    def __init__(self, model, bucket_bytes=DEFAULT_BUCKET_BYTES):
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes must be a positive int, got {bucket_bytes!r}")
        self._comm = _communicator()
        params = _parameter_list(model, trainable_only=True)
        _check_same_everywhere(self._comm, params, "GradientReducer")
        self._buckets = []
        for dtype in sorted({p.dtype.str for p in params}):
            current, size = [], 0
            for param in reversed([p for p in params if p.dtype.str == dtype]):
                if current and size + param.size * param.dtype.itemsize > bucket_bytes:
                    self._buckets.append(current)
                    current, size = [], 0
                current.append(param)
                size += param.size * param.dtype.itemsize
            if current:
                self._buckets.append(current)
        last = len(self._buckets) - 1
        self._buckets = [_Bucket(group, group[0].dtype, has_weight=index == last)
                         for index, group in enumerate(self._buckets)]
        self._where = {id(p): (bucket, index) for bucket in self._buckets for index, p in enumerate(bucket.params)}
        self._weight = None

    @property
    def bucket_count(self):
        return len(self._buckets)

    def _start(self, bucket):
        bucket.fill(1.0 if self._weight is None else self._weight)
        bucket.request = self._comm.Iallreduce(_in_place(), bucket.buffer, op=_mpi_op("sum"))

    def set_weight(self, weight):
        """This rank's weight for the step under way (call before ``ready``; see the class)."""
        if weight is not None:
            weight = float(weight)
            if not weight >= 0 or weight == float("inf"):
                raise ValueError(f"weight must be a finite number >= 0, got {weight}")
        self._weight = weight

    def ready(self, params):
        """The gradients of `params` (a model, layer or Parameters) are final for this step."""
        for param in _parameter_list(params, trainable_only=True):
            found = self._where.get(id(param))
            if found is None:
                continue
            bucket, index = found
            bucket.pending.discard(index)
            if not bucket.pending and bucket.request is None:
                self._start(bucket)
        # MPI makes progress on started reductions only inside MPI calls: give it one.
        started = [b.request for b in self._buckets if b.request is not None]
        if started:
            from mpi4py import MPI
            MPI.Request.Testall(started)

    def finish(self, weight=None):
        """Waits for every bucket and writes the averaged gradients into ``param.grad``."""
        if weight is not None:
            if any(bucket.request is not None for bucket in self._buckets) and float(weight) != self._weight:
                raise ValueError("finish(weight) differs from the weight the started buckets used: with ready(), "
                                 "give the weight to set_weight() before backward")
            self.set_weight(weight)
        for bucket in self._buckets:
            if bucket.request is None:
                self._start(bucket)
        from mpi4py import MPI
        MPI.Request.Waitall([bucket.request for bucket in self._buckets])
        if self._weight is None:
            total = float(self._comm.Get_size())
        else:
            total = float(self._buckets[-1].buffer[-1])
        for bucket in self._buckets:
            flags = bucket.buffer[bucket.offsets[-1]:bucket.offsets[-1] + len(bucket.params)]
            for index, param in enumerate(bucket.params):
                if flags[index] == 0:
                    param.grad = None   # no rank computed one: as in a single process
                    continue
                values = bucket.buffer[bucket.offsets[index]:bucket.offsets[index + 1]]
                grad = (values / total if total > 0 else np.zeros_like(values)).reshape(param.shape)
                param.grad = grad.astype(param.dtype, copy=False)
            bucket.pending = set(range(len(bucket.params)))
            bucket.request = None
        self._weight = None


_last_reducer = (None, None)   # (its parameters' ids and bucket size, the reducer)


def allreduce_gradients(model, weight=None, bucket_bytes=DEFAULT_BUCKET_BYTES):
    """Replaces every trainable parameter's ``.grad`` with its average over all ranks (see
    GradientReducer for `weight`). Call it after backward and before the optimizer's step.

    The reducer of the last call is kept (its buffers, and the check that every rank has the
    same parameters, are paid once) while the model's trainable parameters stay the same."""
    global _last_reducer
    key = (tuple(id(p) for p in _parameter_list(model, trainable_only=True)), bucket_bytes, id(_communicator()))
    if _last_reducer[0] != key:
        _last_reducer = (key, GradientReducer(model, bucket_bytes))
    _last_reducer[1].finish(weight)


# -- sharding a data set ---------------------------------------------------------------------------
class DistributedSampler:
    """The indices of this rank's shard of a data set of `dataset` samples (a length or anything
    with ``len``), as torch.utils.data.DistributedSampler gives them.

    Each epoch, every rank draws the same permutation (from ``seed`` and the epoch: call
    ``set_epoch(epoch)`` before iterating) and takes every ``num_replicas``-th index from its
    rank on. Without ``drop_last`` the permutation is padded with its own first indices to a
    multiple of ``num_replicas``, so that every rank gets the same number of samples; with it,
    the tail is dropped instead.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        size = dataset if isinstance(dataset, (int, np.integer)) and not isinstance(dataset, bool) else None
        if size is None:
            try:
                size = len(dataset)
            except TypeError:
                raise TypeError(f"dataset must be a length or have len(), got {type(dataset).__name__}") from None
        if size < 0:
            raise ValueError(f"the data set size must be >= 0, got {size}")
        num_replicas = world_size() if num_replicas is None else num_replicas
        rank = _communicator().Get_rank() if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
        self.size, self.num_replicas, self.rank = int(size), int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = self.size // self.num_replicas
        else:
            self.num_samples = -(-self.size // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def indices(self):
        """This rank's indices for the current epoch (an int64 array)."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        if self.total_size > self.size and self.size:
            order = np.resize(order, self.total_size)   # pads by repeating from the start
        order = order[:self.total_size]
        return order[self.rank::self.num_replicas].astype(np.int64)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

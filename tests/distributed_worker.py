"""The programs test_distributed.py runs under ``mpiexec -n N`` (and, for the single-process
runs they are compared with, in the test process itself).

    python tests/distributed_worker.py SCENARIO OUT_DIR [--overlap]

Each rank writes what it ended with to OUT_DIR/SCENARIO_rank{r}.npz.
"""

import sys

import numpy as np

import fusedrnn
import fusedrnn.distributed as dist
from fusedrnn import keras, nn, optim

STEPS = 4
GLOBAL_BATCH = 10          # not a multiple of 3: ranks of a 3-process job get 4, 3 and 3 samples
T, FEATURES, HIDDEN = 6, 3, 8


def nn_data(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((STEPS, GLOBAL_BATCH, T, FEATURES)).astype(dtype)
    y = rng.standard_normal((STEPS, GLOBAL_BATCH, 2)).astype(dtype)
    return x, y


class Regressor(nn.Module):
    """LSTM (batch-first) -> the last step -> Linear."""

    def __init__(self, dtype):
        super().__init__()
        self.rnn = nn.LSTM(FEATURES, HIDDEN, num_layers=2, batch_first=True, rng=2, dtype=dtype)
        self.head = nn.Linear(HIDDEN, 2, rng=3, dtype=dtype)

    def forward(self, x):
        self.out, _ = self.rnn(x)
        return self.head(self.out[:, -1])

    def backward(self, grad, module_done=None):
        grad_last = self.head.backward(grad)
        if module_done:
            module_done(self.head)
        grad_out = np.zeros_like(self.out)
        grad_out[:, -1] = grad_last
        self.rnn.backward(grad_out)
        if module_done:
            module_done(self.rnn)


def train_nn(dtype, rank=0, world=1, overlap=False):
    """STEPS steps of SGD with momentum on rank `rank`'s share of each global batch; world=1 is
    the single-process run on the whole batch."""
    model = Regressor(dtype)
    if world > 1:
        # Every rank must start from rank 0's weights: perturb the others' to see it happen.
        if rank:
            for param in model.parameters():
                param.data += 1
        dist.broadcast_parameters(model)
        reducer = dist.GradientReducer(model, bucket_bytes=512)   # several buckets for a small model
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.MSELoss()
    xs, ys = nn_data(dtype)
    for x, y in zip(xs, ys):
        x, y = x[rank::world], y[rank::world]
        optimizer.zero_grad()
        loss_fn(model(x), y)
        if world > 1 and overlap:
            reducer.set_weight(len(x))
            model.backward(loss_fn.backward(), module_done=reducer.ready)
            reducer.finish()
        elif world > 1:
            model.backward(loss_fn.backward())
            dist.allreduce_gradients(model, weight=len(x))
        else:
            model.backward(loss_fn.backward())
        optimizer.step()
    return {name: param.data for name, param in model.named_parameters()}


def keras_data():
    """Padded sequences (zeros after each one's length) for a masked model, 3 classes."""
    rng = np.random.default_rng(4)
    count = 53
    x = rng.standard_normal((count, T, FEATURES)).astype("float32")
    lengths = rng.integers(1, T + 1, count)
    x[np.arange(T)[None, :] >= lengths[:, None]] = 0
    y = rng.integers(0, 3, count)
    return x, y


def keras_model():
    model = keras.Sequential([
        keras.layers.Input((T, FEATURES)),
        keras.layers.Masking(0.0),
        keras.layers.GRU(HIDDEN, return_sequences=True),
        keras.layers.LSTM(HIDDEN),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def train_keras(batch_size, distributed, callbacks=()):
    keras.utils.set_random_seed(5)
    model = keras_model()
    x, y = keras_data()
    history = model.fit(x, y, batch_size=batch_size, epochs=3, validation_split=0.2, shuffle=True,
                        verbose=2, callbacks=list(callbacks), distributed=distributed)
    weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    logs = {f"log_{name}": np.array(values) for name, values in history.history.items()}
    return {**weights, **logs}


def fails_on_rank_one(out_dir):
    """Rank 1 raises in the middle of training; rank 0 would wait for it in the next allreduce."""
    model = Regressor(np.float32)
    dist.broadcast_parameters(model)
    loss_fn = nn.MSELoss()
    xs, ys = nn_data(np.float32)
    for step, (x, y) in enumerate(zip(xs, ys)):
        if step == 2 and dist.rank() == 1:
            raise ValueError("a failure on rank 1")
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        dist.allreduce_gradients(model)


def main():
    scenario, out_dir = sys.argv[1], sys.argv[2]
    overlap = "--overlap" in sys.argv
    dist.init()
    rank, world = dist.rank(), dist.world_size()
    fusedrnn.set_num_threads(1)
    if scenario == "fail":
        fails_on_rank_one(out_dir)
        return
    if scenario == "nn":
        result = {f"f32_{k}": v for k, v in train_nn(np.float32, rank, world, overlap).items()}
        result.update({f"f64_{k}": v for k, v in train_nn(np.float64, rank, world, overlap).items()})
    elif scenario == "keras":
        checkpoint = keras.callbacks.ModelCheckpoint(f"{out_dir}/checkpoint_rank{rank}.npz",
                                                     save_weights_only=True)
        result = train_keras(batch_size=4, distributed=True, callbacks=[checkpoint])
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    np.savez(f"{out_dir}/{scenario}_rank{rank}.npz", **result)


if __name__ == "__main__":
    main()

"""Parameter.version: the count of writes to a parameter's values (PyTorch's ``tensor._version``).

Assigning ``.data`` bumps it; every optimizer bumps each parameter it updates once per step and
leaves the others (no gradient, frozen) alone; loading weights (load_state_dict, set_weights,
load_weights, broadcast_parameters) bumps each parameter it writes once.
"""

import numpy as np
import pytest

import fusedrnn.keras as fk
from fusedrnn import nn, optim


def versions(params):
    return [p.version for p in params]


def test_a_parameter_counts_assignments_to_its_data():
    param = nn.Parameter(np.zeros(3))
    assert param.version == 0
    param.data = np.ones(3)
    assert param.version == 1
    param.data -= 0.5            # Python assigns the result back: a write it sees
    assert param.version == 2
    param.data[0] = 7.0          # a write into the array goes unseen until it is reported
    assert param.version == 2
    param.bump_version()
    assert param.version == 3
    np.testing.assert_array_equal(param.data, [7.0, 0.5, 0.5])
    with pytest.raises(AttributeError):
        param.version = 0
    with pytest.raises(AttributeError):
        param.label = "no per-instance attributes: Parameter keeps to its __slots__"


def test_gradients_and_zero_grad_leave_the_version():
    param = nn.Parameter(np.zeros(2))
    param.accumulate_grad(np.ones(2))
    param.accumulate_grad(np.ones(2))
    optim.SGD([param], lr=0.1).zero_grad(set_to_none=False)
    assert param.version == 0


TORCH_STYLE = {
    "sgd": lambda params: optim.SGD(params, lr=0.1),
    "sgd_momentum": lambda params: optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    "adam": lambda params: optim.Adam(params, amsgrad=True, weight_decay=0.1),
    "adam_decoupled": lambda params: optim.Adam(params, weight_decay=0.1, decoupled_weight_decay=True),
    "adamw": lambda params: optim.AdamW(params),
    "rmsprop": lambda params: optim.RMSprop(params, momentum=0.5, centered=True, weight_decay=0.1),
    "adagrad": lambda params: optim.Adagrad(params, weight_decay=0.1),
}


@pytest.mark.parametrize("make", TORCH_STYLE.values(), ids=TORCH_STYLE)
def test_each_torch_style_optimizer_bumps_exactly_what_it_updates(make, rng):
    layer = nn.Linear(3, 2)
    layer.bias.requires_grad = False      # frozen: backward leaves its grad None
    spare = nn.Parameter(np.zeros(4))     # in the optimizer, never given a gradient
    optimizer = make([layer.weight, layer.bias, spare])
    for step in (1, 2):
        optimizer.zero_grad()
        x = rng.standard_normal((5, 3)).astype(np.float32)
        layer.backward(np.ones_like(layer(x)))
        before = layer.weight.data.copy()
        optimizer.step()
        assert not np.array_equal(layer.weight.data, before)
        assert versions([layer.weight, layer.bias, spare]) == [step, 0, 0]


KERAS_STYLE = {
    "sgd": lambda: fk.optimizers.SGD(0.1),
    "sgd_nesterov": lambda: fk.optimizers.SGD(0.1, momentum=0.9, nesterov=True, clipnorm=1.0),
    "adam": lambda: fk.optimizers.Adam(amsgrad=True, global_clipnorm=1.0),
    "adamw": lambda: fk.optimizers.AdamW(clipvalue=0.5),
    "rmsprop": lambda: fk.optimizers.RMSprop(momentum=0.5, centered=True),
    "adagrad": lambda: fk.optimizers.Adagrad(),
}


@pytest.mark.parametrize("make", KERAS_STYLE.values(), ids=KERAS_STYLE)
def test_each_keras_style_optimizer_bumps_exactly_what_it_updates(make, rng):
    frozen = fk.layers.Dense(4)
    model = fk.Sequential([fk.Input((5, 2)), fk.layers.TimeDistributed(frozen), fk.layers.GRU(3), fk.layers.Dense(1)])
    frozen.trainable = False   # inside a trainable wrapper: its weights are not trainable weights
    model.compile(optimizer=make(), loss="mse")
    x = rng.standard_normal((6, 5, 2)).astype(np.float32)
    y = rng.standard_normal((6, 1)).astype(np.float32)
    start = versions(model.trainable_weights)   # building a GRU writes its weights once
    for step in (1, 2):
        model.train_on_batch(x, y)
        assert versions(frozen.weights) == [0, 0]
        assert versions(model.trainable_weights) == [v + step for v in start]

    # apply() directly: a Parameter without a gradient keeps its version.
    with_grad, without = nn.Parameter(np.ones(3, np.float32)), nn.Parameter(np.ones(3, np.float32))
    with_grad.grad = np.full(3, 0.5, np.float32)
    make().apply([with_grad, without])
    assert versions([with_grad, without]) == [1, 0]


def test_load_state_dict_bumps_what_it_loads_and_nothing_on_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    state = {name: value + 1 for name, value in model.state_dict().items()}
    model.load_state_dict(state)
    assert versions(model.parameters()) == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="size mismatch"):
        model.load_state_dict(dict(state, **{"1.bias": np.zeros(5)}))
    assert versions(model.parameters()) == [1, 1, 1, 1]
    partial = {"0.weight": state["0.weight"]}
    model.load_state_dict(partial, strict=False)
    assert versions(model.parameters()) == [2, 1, 1, 1]


def _keras_model():
    return fk.Sequential([fk.Input((4, 3)), fk.layers.Bidirectional(fk.layers.GRU(2, return_sequences=True)),
                          fk.layers.LSTM(3), fk.layers.Dense(1)])


def test_set_weights_and_load_weights_bump_every_weight_once(tmp_path):
    model = _keras_model()
    start = versions(model.weights)
    model.set_weights([w * 2 for w in model.get_weights()])
    assert versions(model.weights) == [v + 1 for v in start]
    model.layers[-1].set_weights(model.layers[-1].get_weights())
    assert versions(model.layers[-1].weights) == [v + 2 for v in start[-2:]]
    path = tmp_path / "weights.npz"
    model.save_weights(path)
    before = versions(model.weights)
    model.load_weights(path)
    assert versions(model.weights) == [v + 1 for v in before]


def test_broadcast_parameters_bumps_what_it_writes():
    pytest.importorskip("mpi4py")
    import fusedrnn.distributed as dist
    dist.init()
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    dist.broadcast_parameters(model)
    assert versions(model.parameters()) == [1, 1, 1, 1]
    keras_model = _keras_model()
    start = versions(keras_model.weights)
    dist.broadcast_parameters(keras_model)
    assert versions(keras_model.weights) == [v + 1 for v in start]

"""fusedrnn.nn building blocks (Linear, Embedding, Dropout, activations, Sequential) against
torch.nn with the same weights and inputs: outputs, input gradients and accumulated parameter
gradients, for random cotangents. Also initialisation, reprs, containers and validation.

Tolerances (|a - b| <= atol + rtol * |b|): float64 1e-12 + 1e-10 relative; float32 1e-5 for
outputs and 1e-4 for gradients, absolute and relative (both sides compute in float32).
"""

from collections import OrderedDict

import numpy as np
import pytest

import fusedrnn
from fusedrnn import nn

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]
TOLERANCE = {  # dtype -> (outputs (atol, rtol), gradients (atol, rtol))
    np.float32: ((1e-5, 1e-5), (1e-4, 1e-4)),
    np.float64: ((1e-12, 1e-10), (1e-12, 1e-10)),
}


def assert_close(actual, expected, dtype, grad=False):
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    assert actual.dtype == np.dtype(dtype)
    atol, rtol = TOLERANCE[dtype][1 if grad else 0]
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


def to_torch(array, requires_grad=False):
    return torch.from_numpy(np.array(array, copy=True)).requires_grad_(requires_grad)


def copy_weights(ours, theirs):
    """Loads torch module `theirs`'s state_dict into `ours` (checks the names match, too)."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def check_against_torch(ours, theirs, x, dtype, integer_input=False, rng=None):
    """Forward both, backward a random cotangent, compare output, input grad and param grads."""
    theirs_x = torch.from_numpy(np.array(x)) if integer_input else to_torch(x, True)
    expected = theirs(theirs_x)
    out = ours(x)
    assert_close(out, expected, dtype)
    cotangent = rng.standard_normal(out.shape).astype(dtype)
    expected.backward(torch.from_numpy(cotangent))
    grad_x = ours.backward(cotangent)
    if integer_input:
        assert grad_x is None
    else:
        assert_close(grad_x, theirs_x.grad, dtype, grad=True)
    theirs_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        assert_close(param.grad, theirs_params[name].grad, dtype, grad=True)
    return out


# -- Linear --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("leading", [(), (4,), (3, 5), (2, 3, 2)])
def test_linear_matches_torch(dtype, bias, leading, rng):
    ours = nn.Linear(7, 5, bias=bias, dtype=dtype)
    theirs = torch.nn.Linear(7, 5, bias=bias, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype)
    copy_weights(ours, theirs)
    x = rng.standard_normal(leading + (7,)).astype(dtype)
    check_against_torch(ours, theirs, x, dtype, rng=rng)


def test_linear_non_contiguous_input(rng):
    ours, theirs = nn.Linear(4, 3, dtype=np.float64), torch.nn.Linear(4, 3, dtype=torch.float64)
    copy_weights(ours, theirs)
    x = rng.standard_normal((4, 6))[:, ::2].T     # (3, 4), neither C- nor F-contiguous rows
    check_against_torch(ours, theirs, x, np.float64, rng=rng)


def test_linear_gradients_accumulate(rng):
    layer = nn.Linear(3, 2, dtype=np.float64)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    g1, g2 = rng.standard_normal((4, 2)), rng.standard_normal((5, 2))
    layer(x1)
    layer.backward(g1)
    first = layer.weight.grad.copy()
    layer(x2)
    layer.backward(g2)
    np.testing.assert_allclose(layer.weight.grad, first + g2.T @ x2, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, g1.sum(0) + g2.sum(0), rtol=1e-12)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_linear_init_and_dtype():
    layer = nn.Linear(400, 300, rng=0)
    bound = 1 / np.sqrt(400)
    assert layer.weight.shape == (300, 400) and layer.bias.shape == (300,)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    for values in (layer.weight.data, layer.bias.data):
        assert np.all(np.abs(values) <= bound)
        assert np.abs(values).max() > 0.95 * bound                 # spread over the whole range
    # Uniform on [-b, b]: variance b^2 / 3.
    assert abs(layer.weight.data.var() - bound ** 2 / 3) < 0.02 * bound ** 2
    assert nn.Linear(3, 2, dtype="float64").weight.dtype == np.float64
    assert nn.Linear(3, 2, dtype=np.float64, device="cpu").bias.dtype == np.float64


def test_linear_seeding():
    np.testing.assert_array_equal(nn.Linear(5, 4, rng=3).weight.data, nn.Linear(5, 4, rng=3).weight.data)
    fusedrnn.manual_seed(11)
    a = nn.Linear(5, 4).weight.data
    fusedrnn.manual_seed(11)
    np.testing.assert_array_equal(a, nn.Linear(5, 4).weight.data)
    assert not np.array_equal(a, nn.Linear(5, 4).weight.data)


def test_linear_zero_in_features():
    layer = nn.Linear(0, 3)
    assert np.all(layer(np.zeros((2, 0), np.float32)) == layer.bias.data)


def test_linear_repr_and_state_dict_match_torch():
    for bias in (True, False):
        assert repr(nn.Linear(3, 4, bias=bias)) == repr(torch.nn.Linear(3, 4, bias=bias))
    assert list(nn.Linear(3, 4).state_dict()) == list(torch.nn.Linear(3, 4).state_dict())


# -- Embedding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [None, 0, 3, -1])
@pytest.mark.parametrize("shape", [(), (6,), (3, 5), (2, 2, 3)])
def test_embedding_matches_torch(dtype, padding_idx, shape, rng):
    theirs = torch.nn.Embedding(10, 4, padding_idx=padding_idx,
                                dtype=torch.float32 if dtype == np.float32 else torch.float64)
    ours = nn.Embedding(10, 4, padding_idx=padding_idx, dtype=dtype)
    copy_weights(ours, theirs)
    # Repeated indices (gradients must add up) and the padding index itself.
    indices = rng.integers(0, 10, size=shape)
    if indices.size > 2 and padding_idx is not None:
        indices.flat[1] = padding_idx % 10
        indices.flat[2] = indices.flat[0]
    check_against_torch(ours, theirs, indices, dtype, integer_input=True, rng=rng)
    if padding_idx is not None:
        assert ours.padding_idx == theirs.padding_idx
        assert np.all(ours.weight.grad[padding_idx] == 0)


def test_embedding_init(rng):
    table = nn.Embedding(1000, 50, padding_idx=2, rng=rng)
    assert table.weight.dtype == np.float32
    assert np.all(table.weight.data[2] == 0)
    values = table.weight.data.astype(np.float64)
    assert abs(values.mean()) < 0.02 and abs(values.std() - 1) < 0.02


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64, np.uint8])
def test_embedding_index_dtypes(index_dtype):
    table = nn.Embedding(5, 2, dtype=np.float64, rng=1)
    np.testing.assert_array_equal(table(np.array([4, 0], dtype=index_dtype)), table.weight.data[[4, 0]])


def test_embedding_errors():
    table = nn.Embedding(5, 2)
    with pytest.raises(IndexError, match="out of range"):
        table(np.array([0, 5]))
    with pytest.raises(IndexError, match="out of range"):
        table(np.array([-1]))
    with pytest.raises(TypeError, match="integer"):
        table(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 2, padding_idx=5)
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 2, padding_idx=-6)


def test_embedding_from_pretrained_and_repr(rng):
    weights = rng.standard_normal((4, 3))
    frozen = nn.Embedding.from_pretrained(weights)
    assert frozen.weight.dtype == np.float64
    np.testing.assert_array_equal(frozen(np.array([1, 3])), weights[[1, 3]])
    frozen.backward(np.ones((2, 3)))
    assert frozen.weight.grad is None                                 # frozen: no gradient
    trainable = nn.Embedding.from_pretrained(weights, freeze=False)
    trainable(np.array([1, 1]))
    trainable.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(trainable.weight.grad[1], [2, 2, 2])
    for kwargs in ({}, {"padding_idx": 1}, {"padding_idx": -1}):
        assert repr(nn.Embedding(10, 3, **kwargs)) == repr(torch.nn.Embedding(10, 3, **kwargs))


# -- Dropout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_eval_is_identity_like_torch(dtype, rng):
    x = rng.standard_normal((3, 4)).astype(dtype)
    ours, theirs = nn.Dropout(0.4).eval(), torch.nn.Dropout(0.4).eval()
    assert_close(ours(x), theirs(to_torch(x)), dtype)
    with pytest.raises(RuntimeError, match="training mode"):
        ours.backward(x)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_training_statistics_and_backward(p, rng):
    x = rng.uniform(1, 2, (200, 300))
    layer = nn.Dropout(p, rng=rng)
    y = layer(x)
    kept = y != 0
    assert abs(1 - kept.mean() - p) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)
    cotangent = rng.standard_normal(x.shape)
    # The gradient of x * mask / (1 - p) is the same mask and scale.
    np.testing.assert_allclose(layer.backward(cotangent), cotangent * (y / x), rtol=1e-14)


def test_dropout_edges_and_seeding(rng):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)
    assert np.all(nn.Dropout(1.0)(x) == 0)
    assert nn.Dropout(0.5)(x).dtype == np.float32
    np.testing.assert_array_equal(nn.Dropout(0.5, rng=4)(x), nn.Dropout(0.5, rng=4)(x))
    fusedrnn.manual_seed(5)
    first = nn.Dropout(0.5)(x)
    fusedrnn.manual_seed(5)
    np.testing.assert_array_equal(first, nn.Dropout(0.5)(x))
    layer = nn.Dropout(0.5, rng=4)
    assert not np.array_equal(layer(x), layer(x))      # a fresh mask each call
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            nn.Dropout(bad)
    assert repr(nn.Dropout(0.3)) == repr(torch.nn.Dropout(0.3))


# -- activations, Flatten, Identity --------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["Tanh", "ReLU", "Sigmoid", "Identity"])
def test_activations_match_torch(name, dtype, rng):
    x = (rng.standard_normal((4, 7)) * 3).astype(dtype)
    x[0, :4] = [0.0, 60.0, -60.0, -800.0]     # ReLU's kink, and sigmoid far out in both tails
    check_against_torch(getattr(nn, name)(), getattr(torch.nn, name)(), x, dtype, rng=rng)


@pytest.mark.parametrize("dims", [(1, -1), (0, -1), (1, 2), (-2, -1), (0, 0)])
def test_flatten_matches_torch(dims, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    check_against_torch(nn.Flatten(*dims), torch.nn.Flatten(*dims), x, np.float64, rng=rng)
    assert repr(nn.Flatten(*dims)) == repr(torch.nn.Flatten(*dims))


def test_activation_input_dtype_checked():
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Tanh()(np.array([1, 2]))


# -- Sequential ----------------------------------------------------------------------------------

def make_pair(dtype):
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    ours = nn.Sequential(nn.Linear(6, 8, dtype=dtype), nn.Tanh(), nn.Linear(8, 5, dtype=dtype),
                         nn.ReLU(), nn.Dropout(0.3), nn.Linear(5, 3, bias=False, dtype=dtype),
                         nn.Sigmoid())
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 8, dtype=torch_dtype), torch.nn.Tanh(),
                                 torch.nn.Linear(8, 5, dtype=torch_dtype), torch.nn.ReLU(),
                                 torch.nn.Dropout(0.3),
                                 torch.nn.Linear(5, 3, bias=False, dtype=torch_dtype),
                                 torch.nn.Sigmoid())
    return ours, theirs


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_matches_torch(dtype, rng):
    ours, theirs = make_pair(dtype)
    ours[4].p = theirs[4].p = 0.0          # dropout active in training mode but deterministic
    copy_weights(ours, theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    x = rng.standard_normal((4, 6)).astype(dtype)
    check_against_torch(ours, theirs, x, dtype, rng=rng)


def test_sequential_with_embedding(rng):
    ours = nn.Sequential(nn.Embedding(7, 4, dtype=np.float64), nn.Linear(4, 3, dtype=np.float64))
    theirs = torch.nn.Sequential(torch.nn.Embedding(7, 4, dtype=torch.float64),
                                 torch.nn.Linear(4, 3, dtype=torch.float64))
    copy_weights(ours, theirs)
    check_against_torch(ours, theirs, rng.integers(0, 7, (5, 2)), np.float64, integer_input=True, rng=rng)


def test_sequential_eval_mode_reaches_children(rng):
    ours, theirs = make_pair(np.float64)
    copy_weights(ours, theirs)
    ours.eval()
    theirs.eval()
    assert not any(m.training for m in ours.modules())
    x = rng.standard_normal((3, 6))
    assert_close(ours(x), theirs(to_torch(x)), np.float64)
    with pytest.raises(RuntimeError):
        ours.backward(np.ones((3, 3)))


def test_sequential_container_behaviour():
    a, b, c = nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and list(seq) == [a, b]
    seq.append(c)
    assert seq[2] is c and list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert list(sub._modules) == ["1", "2"]                       # names kept, as in PyTorch
    relu = nn.ReLU()
    seq[1] = relu
    assert list(seq) == [a, relu, c] and list(seq._modules) == ["0", "1", "2"]
    del seq[0]
    assert list(seq) == [relu, c] and list(seq._modules) == ["0", "1"]
    with pytest.raises(IndexError):
        seq[2]
    with pytest.raises(TypeError):
        nn.Sequential(a, "not a module")
    named = nn.Sequential(OrderedDict([("encoder", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["encoder.weight", "encoder.bias"]
    assert named.encoder is named[0]


def test_sequential_repr_matches_torch():
    ours, theirs = make_pair(np.float32)
    assert repr(ours) == repr(theirs)
    assert repr(nn.Sequential(OrderedDict(fc=nn.Linear(2, 2)))) == \
        repr(torch.nn.Sequential(OrderedDict(fc=torch.nn.Linear(2, 2))))


# -- conventions shared by every module ----------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: nn.Linear(3, 2), lambda: nn.Tanh(), lambda: nn.ReLU(),
                                  lambda: nn.Sigmoid(), lambda: nn.Dropout(0.2), lambda: nn.Flatten(),
                                  lambda: nn.Identity(),
                                  lambda: nn.Sequential(nn.Linear(3, 3), nn.Tanh())])
def test_backward_needs_one_training_forward(make):
    module = make()
    x = np.ones((2, 3), np.float32)
    with pytest.raises(RuntimeError, match="forward"):
        module.backward(np.ones((2, 3), np.float32))
    y = module(x)
    module.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="once"):
        module.backward(np.ones_like(y))
    module.eval()
    module(x)
    with pytest.raises(RuntimeError):
        module.backward(np.ones_like(y))


def test_embedding_backward_needs_one_forward():
    table = nn.Embedding(4, 2)
    with pytest.raises(RuntimeError):
        table.backward(np.ones((1, 2), np.float32))
    table(np.array([1]))
    table.backward(np.ones((1, 2), np.float32))
    with pytest.raises(RuntimeError):
        table.backward(np.ones((1, 2), np.float32))


def test_validation_errors():
    layer = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="float64"):
        layer(np.ones((2, 3), np.float64))                    # float32 layer, float64 input
    with pytest.raises(ValueError, match="in_features=3"):
        layer(np.ones((2, 4), np.float32))
    layer(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="grad_output"):
        layer.backward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="CPU only"):
        nn.Linear(3, 2, device="cuda")
    with pytest.raises(TypeError, match="dtype"):
        nn.Linear(3, 2, dtype=np.int32)
    with pytest.raises(TypeError, match="dtype"):
        nn.Embedding(3, 2, dtype="float16")
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(-1, 2)
    with pytest.raises(TypeError, match="rng"):
        nn.Linear(3, 2, rng="seed")
    # Lists carry no dtype and are converted to the layer's.
    assert layer([[1.0, 2.0, 3.0]]).dtype == np.float32

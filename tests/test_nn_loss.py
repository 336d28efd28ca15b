"""fusedrnn.nn losses against torch.nn's: the loss and its input gradient (for a random
cotangent when reduction='none', a random scalar otherwise), over every option and input layout.

Tolerances (|a - b| <= atol + rtol * |b|): float64 1e-12 + 1e-10 relative; float32 1e-5 for the
loss and 1e-4 for gradients, absolute and relative (both sides compute in float32).
"""

import numpy as np
import pytest

from fusedrnn import nn

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
TOLERANCE = {  # dtype -> (loss (atol, rtol), gradient (atol, rtol))
    np.float32: ((1e-5, 1e-5), (1e-4, 1e-4)),
    np.float64: ((1e-12, 1e-10), (1e-12, 1e-10)),
}


def assert_close(actual, expected, dtype, grad=False):
    expected = expected.detach().numpy()
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    assert actual.dtype == np.dtype(dtype)
    atol, rtol = TOLERANCE[dtype][1 if grad else 0]
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


def tensor(array):
    return None if array is None else torch.from_numpy(np.array(array, copy=True))


def check(ours, theirs, x, target, dtype, rng):
    """Loss and input gradient of ours vs theirs on logits/predictions x."""
    x_t = tensor(x).requires_grad_(True)
    expected = theirs(x_t, tensor(target))
    loss = ours(x, target)
    assert_close(loss, expected, dtype)
    cotangent = rng.standard_normal(np.shape(loss)).astype(dtype)
    expected.backward(tensor(cotangent))
    grad = ours.backward(cotangent if cotangent.ndim else float(cotangent))
    assert_close(grad, x_t.grad, dtype, grad=True)


# -- MSELoss, L1Loss -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(), (5,), (3, 4, 2)])
@pytest.mark.parametrize("name", ["MSELoss", "L1Loss"])
def test_regression_losses(name, shape, reduction, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    if x.size > 2:
        target.flat[1] = x.flat[1]          # a tie: L1's gradient there is 0, as sign(0)
    check(getattr(nn, name)(reduction=reduction), getattr(torch.nn, name)(reduction=reduction),
          x, target, dtype, rng)


# -- BCEWithLogitsLoss ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighting", ["none", "weight", "pos_weight", "both"])
@pytest.mark.parametrize("shape", [(6,), (4, 3), (2, 5, 3)])
def test_bce_with_logits(shape, weighting, reduction, dtype, rng):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x.flat[0], x.flat[-1] = 80.0, -700.0        # far in both tails: must stay finite and exact
    target = rng.uniform(0, 1, shape).astype(dtype)
    target.flat[:2] = [1.0, 0.0]
    weight = rng.uniform(0.2, 2, shape[-1:]).astype(dtype) if weighting in ("weight", "both") else None
    pos_weight = rng.uniform(0.5, 3, shape[-1:]).astype(dtype) if weighting in ("pos_weight", "both") else None
    ours = nn.BCEWithLogitsLoss(weight=weight, reduction=reduction, pos_weight=pos_weight)
    theirs = torch.nn.BCEWithLogitsLoss(weight=tensor(weight), reduction=reduction,
                                        pos_weight=tensor(pos_weight))
    check(ours, theirs, x, target, dtype, rng)


def test_bce_with_logits_broadcast_weight(rng):
    x, target = rng.standard_normal((4, 3)), rng.uniform(0, 1, (4, 3))
    weight = rng.uniform(0.5, 1.5, (4, 1))                         # per-row rescaling
    check(nn.BCEWithLogitsLoss(weight=weight), torch.nn.BCEWithLogitsLoss(weight=tensor(weight)),
          x, target, np.float64, rng)


# -- NLLLoss and CrossEntropyLoss with class-index targets ---------------------------------------

# (input shape, target shape): unbatched, batched, and with extra dimensions (N, C, d1, d2).
INDEX_LAYOUTS = [((5,), ()), ((4, 5), (4,)), ((3, 5, 2, 3), (3, 2, 3))]


def index_problem(layout, dtype, rng, ignore_index=-100, ignore=True):
    input_shape, target_shape = layout
    x = (rng.standard_normal(input_shape) * 2).astype(dtype)
    target = rng.integers(0, input_shape[-1 if len(input_shape) == 1 else 1], target_shape)
    if ignore and target.size > 1:
        target.flat[0] = ignore_index
    return x, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("layout", INDEX_LAYOUTS, ids=["unbatched", "NC", "NCd1d2"])
def test_nll_loss(layout, ignore_index, weighted, reduction, dtype, rng):
    logits, target = index_problem(layout, dtype, rng, ignore_index)
    x = torch.log_softmax(tensor(logits), dim=0 if logits.ndim == 1 else 1).numpy()
    weight = rng.uniform(0.1, 2, 5).astype(dtype) if weighted else None
    check(nn.NLLLoss(weight=weight, ignore_index=ignore_index, reduction=reduction),
          torch.nn.NLLLoss(weight=tensor(weight), ignore_index=ignore_index, reduction=reduction),
          x, target, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("layout", INDEX_LAYOUTS, ids=["unbatched", "NC", "NCd1d2"])
def test_cross_entropy_index_targets(layout, ignore_index, weighted, label_smoothing, reduction,
                                     dtype, rng):
    x, target = index_problem(layout, dtype, rng, ignore_index)
    weight = rng.uniform(0.1, 2, 5).astype(dtype) if weighted else None
    options = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    check(nn.CrossEntropyLoss(weight=weight, **options),
          torch.nn.CrossEntropyLoss(weight=tensor(weight), **options), x, target, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 5, 3)])
def test_cross_entropy_probability_targets(shape, weighted, label_smoothing, reduction, dtype, rng):
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    class_axis = 0 if len(shape) == 1 else 1
    target = rng.uniform(0, 1, shape)
    target = (target / target.sum(axis=class_axis, keepdims=True)).astype(dtype)
    weight = rng.uniform(0.1, 2, 5).astype(dtype) if weighted else None
    options = dict(reduction=reduction, label_smoothing=label_smoothing)
    check(nn.CrossEntropyLoss(weight=weight, **options),
          torch.nn.CrossEntropyLoss(weight=tensor(weight), **options), x, target, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_stable_for_huge_logits(dtype, rng):
    x = (rng.standard_normal((3, 4)) * 1e4).astype(dtype)
    target = np.array([0, 3, 1])
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert np.isfinite(loss(x, target))
    assert np.all(np.isfinite(loss.backward()))
    check(nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(), x, target, dtype, rng)


@pytest.mark.parametrize("name, options", [("CrossEntropyLoss", {}), ("NLLLoss", {}),
                                           ("CrossEntropyLoss", {"label_smoothing": 0.1})])
def test_all_targets_ignored(name, options, rng):
    """Mean over no targets is 0/0 = NaN in PyTorch, sum is 0; the gradient is 0 either way."""
    x = rng.standard_normal((3, 4))
    target = np.full(3, -100)
    for reduction in ("mean", "sum"):
        ours = getattr(nn, name)(reduction=reduction, **options)
        x_t = tensor(x).requires_grad_(True)
        expected = getattr(torch.nn, name)(reduction=reduction, **options)(x_t, tensor(target))
        expected.backward()
        np.testing.assert_array_equal(ours(x, target), expected.detach().numpy())
        np.testing.assert_array_equal(ours.backward(), x_t.grad.numpy())


def test_float_dtype_of_loss_follows_input(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert nn.MSELoss()(x, rng.standard_normal((3, 4))).dtype == np.float32   # target converted
    loss = nn.CrossEntropyLoss()
    assert loss(x, np.array([0, 1, 2])).dtype == np.float32
    assert loss.backward().dtype == np.float32


# -- validation ----------------------------------------------------------------------------------

def test_validation_errors():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="average")
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(IndexError, match="out of bounds"):
        nn.CrossEntropyLoss()(x, np.array([0, 4, 1]))
    with pytest.raises(IndexError, match="out of bounds"):
        nn.NLLLoss()(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="target has shape"):
        nn.CrossEntropyLoss()(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        nn.CrossEntropyLoss()(x, np.zeros((3,)))            # float targets must match input's shape
    with pytest.raises(TypeError, match="integers"):
        nn.NLLLoss()(x, np.zeros(3))
    with pytest.raises(ValueError, match="weight"):
        nn.CrossEntropyLoss(weight=np.ones(3))(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        nn.MSELoss()(x, np.zeros((3, 1)))
    with pytest.raises(ValueError, match="class dimension"):
        nn.CrossEntropyLoss()(np.float64(1.0), np.array(0))
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.MSELoss()(np.zeros(3, dtype=np.int64), np.zeros(3))


def test_backward_protocol():
    loss = nn.MSELoss()
    with pytest.raises(RuntimeError, match="forward"):
        loss.backward()
    loss(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="grad_output"):
        loss.backward(np.ones(3))                              # the mean is a scalar
    loss(np.ones(3), np.zeros(3))
    np.testing.assert_allclose(loss.backward(), 2 / 3 * np.ones(3))
    with pytest.raises(RuntimeError):
        loss.backward()
    loss.eval()                                                # a criterion works in eval mode too
    loss(np.ones(3), np.zeros(3))
    loss.backward()


def test_reprs_match_torch():
    for name in ("MSELoss", "L1Loss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss"):
        assert repr(getattr(nn, name)()) == repr(getattr(torch.nn, name)())

"""PyTorch as the oracle for fusedrnn.nn's recurrent layers: build twin modules, run both, compare.

Tolerances (one table for every recurrent-layer test): float64 must agree with PyTorch's float64 to
1e-10 relative; float32 to 1e-5 (absolute and relative) for outputs and states and 1e-4 for
gradients, which is what two different float32 summation orders over these small sizes allow.
"""

import numpy as np
import torch

import fusedrnn.nn as fnn

TOLERANCES = {  # dtype -> kind -> (atol, rtol)
    np.dtype(np.float64): {"output": (1e-12, 1e-10), "grad": (1e-12, 1e-10)},
    np.dtype(np.float32): {"output": (1e-5, 1e-5), "grad": (1e-4, 1e-4)},
}

TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def assert_close(actual, expected, kind, name):
    """Elementwise |actual - expected| <= atol + rtol * |expected|, shapes equal, no NaN."""
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    atol, rtol = TOLERANCES[expected.dtype][kind]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=name)


def twins(class_name, dtype, seed=0, **kwargs):
    """(ours, theirs): the fusedrnn and torch modules of one class with the same arguments and
    weights (torch's initial weights, loaded into ours through a NumPy state_dict)."""
    torch.manual_seed(seed)
    theirs = getattr(torch.nn, class_name)(**kwargs, dtype=TORCH_DTYPES[np.dtype(dtype)])
    ours = getattr(fnn, class_name)(**kwargs, dtype=dtype)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def leaf(array):
    """A torch leaf tensor requiring grad, holding a copy of `array` (None stays None)."""
    if array is None:
        return None
    return torch.tensor(np.array(array), requires_grad=True)


def nested(fn, value):
    """Applies fn to an array or to each entry of a tuple of them (None stays None)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(nested(fn, v) for v in value)
    return fn(value)


def random_like(rng, value):
    """Random normal cotangent(s) shaped like value (array or tuple), in its dtype."""
    return nested(lambda a: rng.standard_normal(np.shape(a)).astype(np.asarray(a).dtype), value)


def torch_backward(outputs, cotangents):
    """outputs and cotangents: parallel lists of tensors and arrays (None cotangents skipped)."""
    pairs = [(o, torch.tensor(c)) for o, c in zip(outputs, cotangents) if c is not None]
    torch.autograd.backward([o for o, _ in pairs], [c for _, c in pairs])


def assert_param_grads_match(ours, theirs):
    """Every parameter gradient of ours equals torch's, in the same order of names."""
    torch_params = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(torch_params)
    for name, param in ours.named_parameters():
        expected = torch_params[name].grad
        assert param.grad is not None, f"{name}: no gradient"
        assert_close(param.grad, expected, "grad", f"grad of {name}")


def assert_hx_grads_match(grad_hx, hx, hx_t, lstm):
    """grad_hx is None when no hx was given, else (each state) torch's gradient of it."""
    if hx is None:
        assert grad_hx is None
        return
    for a, e in zip(grad_hx if lstm else [grad_hx], hx_t if lstm else [hx_t]):
        assert_close(a, e.grad, "grad", "grad of hx")

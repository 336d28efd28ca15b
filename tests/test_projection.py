"""LSTM with a projection (PyTorch's proj_size): h' = W_hr (o * tanh(c')), P values per step.

Tier 1 (reference against finite differences) and tier 2 (native against reference) for the one
feature that changes the shape of the recurrence: h and y have P values, c keeps H.
"""

import numpy as np
import pytest

from fusedrnn import _reference as ref
from rnn_cases import make_lengths, make_sorted_lengths
from test_reference import assert_gradient, numerical_gradient
from tolerances import INPUT_GRAD, OUTPUT, STATE, WEIGHT_GRAD, assert_close

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]


def make_projected(rng, T, B, I, H, P, dtype=np.float64, random_state=True, bias=True):
    k = 1.0 / np.sqrt(H)

    def uniform(*shape, scale=k):
        return rng.uniform(-scale, scale, shape).astype(dtype)

    return dict(
        x=rng.standard_normal((T, B, I)).astype(dtype),
        h0=uniform(B, P, scale=1.0) if random_state else None,
        c0=uniform(B, H, scale=1.0) if random_state else None,
        weight_ih=uniform(4 * H, I), weight_hh=uniform(4 * H, P),
        bias_ih=uniform(4 * H) if bias else None, bias_hh=uniform(4 * H) if bias else None,
        weight_hr=uniform(P, H))


def run(module, p, lengths=None, reverse=False, cotangents=None, rng=None, training=True):
    """Forward and (with cotangents or rng) backward: -> (outputs, cotangents, gradients)."""
    y, h_n, c_n, saved = module.lstm_forward(
        p["x"], p["h0"], p["c0"], p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"],
        weight_hr=p["weight_hr"], lengths=lengths, reverse=reverse, training=training)
    if not training:
        return (y, h_n, c_n), None, None
    if cotangents is None:
        cotangents = [rng.standard_normal(a.shape).astype(a.dtype) for a in (y, h_n, c_n)]
    grads = module.lstm_backward(*cotangents, saved)
    return (y, h_n, c_n), cotangents, grads


GRAD_NAMES = ["x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"]


def test_shapes(rng):
    T, B, I, H, P = 3, 2, 4, 6, 3
    (y, h_n, c_n), _, grads = run(ref, make_projected(rng, T, B, I, H, P), rng=rng)
    assert y.shape == (T, B, P) and h_n.shape == (B, P) and c_n.shape == (B, H)
    assert [g.shape for g in grads] == [(T, B, I), (B, P), (B, H), (4 * H, I), (4 * H, P),
                                        (4 * H,), (4 * H,), (P, H)]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]], ids=["equal", "variable"])
def test_reference_matches_finite_differences(rng, lengths, reverse):
    T, B, I, H, P = 5, 3, 4, 5, 3
    p = make_projected(rng, T, B, I, H, P)
    _, cot, grads = run(ref, p, lengths, reverse, rng=rng)

    def objective():
        outputs, _, _ = run(ref, p, lengths, reverse, training=False)
        return sum(np.sum(o * c) for o, c in zip(outputs, cot))

    for name, analytic in zip(GRAD_NAMES, grads):
        assert_gradient(analytic, numerical_gradient(objective, p[name]), name)


def test_reference_projection_by_identity_is_plain_lstm(rng):
    """W_hr = I (P = H) must give exactly the unprojected LSTM."""
    T, B, I, H = 4, 2, 3, 5
    p = make_projected(rng, T, B, I, H, H)
    p["weight_hr"] = np.eye(H)
    projected = ref.lstm_forward(p["x"], p["h0"], p["c0"], p["weight_ih"], p["weight_hh"],
                                 p["bias_ih"], p["bias_hh"], weight_hr=p["weight_hr"])
    plain = ref.lstm_forward(p["x"], p["h0"], p["c0"], p["weight_ih"], p["weight_hh"],
                             p["bias_ih"], p["bias_hh"])
    for a, b in zip(projected[:3], plain[:3]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


def compare_native(rng, dtype, T, B, I, H, P, lengths, reverse, random_state=True, bias=True):
    from fusedrnn import functional
    p = make_projected(rng, T, B, I, H, P, dtype, random_state, bias)
    outputs, cot, grads = run(functional, p, lengths, reverse, rng=rng)
    p64 = {k: None if v is None else v.astype(np.float64) for k, v in p.items()}
    expected_out, _, expected = run(ref, p64, lengths, reverse, [c.astype(np.float64) for c in cot])
    for name, a, b, kind in zip(["y", "h_n", "c_n"], outputs, expected_out, [OUTPUT, STATE, STATE]):
        assert a.dtype == dtype
        assert_close(a, b, dtype, kind, name)
    assert len(grads) == 8
    for name, a, b in zip(GRAD_NAMES, grads, expected):
        if b is None:
            assert a is None, name
            continue
        kind = WEIGHT_GRAD if name.startswith(("weight", "bias")) else INPUT_GRAD
        assert_close(a, b, dtype, kind, "d" + name)
    inference, _, _ = run(functional, p, lengths, reverse, training=False)
    for a, b in zip(inference, outputs):
        assert_close(a, b, dtype, OUTPUT, "training=False")


# (T, B, I, H, P): P below, at and across a panel (16 floats, 8 doubles); H != P.
SIZES = [(1, 1, 1, 2, 1), (3, 2, 4, 5, 3), (4, 3, 6, 33, 17), (5, 4, 7, 20, 9), (3, 70, 5, 24, 40)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{}B{}I{}H{}P{}".format(*s))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variable", [False, True], ids=["equal", "variable"])
@pytest.mark.parametrize("random_state", [False, True], ids=["zero_state", "random_state"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_native_matches_reference(rng, dtype, random_state, variable, reverse, bias, size):
    T, B = size[:2]
    lengths = make_lengths(rng, T, B) if variable else None
    compare_native(rng, dtype, *size, lengths, reverse, random_state, bias)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_native_every_kernel_set_and_thread_count(rng, isa, threads, dtype):
    T, B, I, H, P = 4, 67, 5, 40, 24
    compare_native(rng, dtype, T, B, I, H, P, make_lengths(rng, T, B), reverse=True)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_native_sorted_lengths(rng, threads, reverse):
    """Sorted lengths: each step's products (W_hh and W_hr) run only the sequences taking it."""
    T, B, I, H, P = 6, 70, 5, 40, 24
    compare_native(rng, np.float64, T, B, I, H, P, make_sorted_lengths(T, B), reverse)


@pytest.mark.parametrize("bad", ["weight_hr_ndim", "weight_hr_empty", "weight_hh_cols", "h0_size"])
def test_bad_projection_shapes_raise(rng, bad):
    from fusedrnn import functional
    p = make_projected(rng, 3, 2, 4, 6, 3)
    if bad == "weight_hr_ndim":
        p["weight_hr"] = p["weight_hr"].ravel()
    elif bad == "weight_hr_empty":
        p["weight_hr"] = np.zeros((0, 6))
    elif bad == "weight_hh_cols":
        p["weight_hh"] = np.zeros((24, 6))      # (4H, H): the unprojected shape
    else:
        p["h0"] = np.zeros((2, 6))              # h0 has P values, not H
    with pytest.raises(ValueError):
        run(functional, p, rng=rng)

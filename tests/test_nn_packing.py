"""fusedrnn.nn.utils.rnn (packing helpers) and recurrent layers on PackedSequence input, with
torch as the oracle; packed runs are also checked against running each sequence on its own.

Tolerances: see nn_rnn_oracle (float64 to 1e-10 relative; float32 1e-5 outputs, 1e-4 gradients).
"""

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tu = torch.nn.utils.rnn

import fusedrnn.nn as fnn  # noqa: E402
from fusedrnn.nn.utils import rnn as fu  # noqa: E402
from nn_rnn_oracle import (assert_close, assert_hx_grads_match, assert_param_grads_match, leaf, nested, random_like,  # noqa: E402
                           torch_backward, twins)

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


def assert_packed_equal(ours, theirs):
    assert isinstance(ours, fu.PackedSequence)
    np.testing.assert_array_equal(ours.data, theirs.data.detach().numpy())
    np.testing.assert_array_equal(ours.batch_sizes, theirs.batch_sizes.numpy())
    assert ours.batch_sizes.dtype == np.int64
    for name in ("sorted_indices", "unsorted_indices"):
        a, e = getattr(ours, name), getattr(theirs, name)
        assert (a is None) == (e is None), name
        if a is not None:
            np.testing.assert_array_equal(a, e.numpy(), err_msg=name)


# -- the helpers -----------------------------------------------------------------------------------

# (lengths, trailing feature shape): sorted, unsorted, ties, a single sequence, several feature dims.
HELPER_CASES = [([5, 3, 3, 1], (2,)), ([2, 5, 1, 5, 3], (3,)), ([4], ()), ([1, 1, 1], (2, 3)),
                ([3, 6, 2], ())]


@pytest.mark.parametrize("lengths,features", HELPER_CASES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_pack_and_pad_match_torch(lengths, features, batch_first, rng):
    T, B = max(lengths) + 1, len(lengths)  # one step of padding beyond the longest
    shape = ((B, T) if batch_first else (T, B)) + features
    padded = rng.standard_normal(shape)
    is_sorted = lengths == sorted(lengths, reverse=True)
    for enforce_sorted in ([True, False] if is_sorted else [False]):
        ours = fu.pack_padded_sequence(padded, lengths, batch_first, enforce_sorted)
        theirs = tu.pack_padded_sequence(torch.tensor(padded), lengths, batch_first, enforce_sorted)
        assert_packed_equal(ours, theirs)
        for total_length, value in [(None, 0.0), (T + 2, -1.5)]:
            ours_padded, ours_lengths = fu.pad_packed_sequence(ours, batch_first, value, total_length)
            their_padded, their_lengths = tu.pad_packed_sequence(theirs, batch_first, value, total_length)
            np.testing.assert_array_equal(ours_padded, their_padded.numpy())
            np.testing.assert_array_equal(ours_lengths, their_lengths.numpy())
            assert ours_lengths.dtype == np.int64
        sequences = fu.unpack_sequence(ours)
        for seq, seq_t in zip(sequences, tu.unpack_sequence(theirs)):
            np.testing.assert_array_equal(seq, seq_t.numpy())


@pytest.mark.parametrize("lengths", [[3, 1, 4], [2, 2], [1]])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_sequence_unpad_and_pack_sequence_match_torch(lengths, batch_first, side, rng):
    sequences = [rng.standard_normal((n, 2)) for n in lengths]
    tensors = [torch.tensor(s) for s in sequences]
    padded = fu.pad_sequence(sequences, batch_first, 7.0, side)
    np.testing.assert_array_equal(padded, tu.pad_sequence(tensors, batch_first, 7.0, side).numpy())
    if side == "right":
        for a, e in zip(fu.unpad_sequence(padded, lengths, batch_first),
                        tu.unpad_sequence(torch.tensor(padded), torch.tensor(lengths), batch_first)):
            np.testing.assert_array_equal(a, e.numpy())
    assert_packed_equal(fu.pack_sequence(sequences, enforce_sorted=False),
                        tu.pack_sequence(tensors, enforce_sorted=False))


def test_packed_sequence_is_a_namedtuple():
    packed = fu.pack_sequence([np.arange(3.0), np.arange(1.0)])
    data, batch_sizes, sorted_indices, unsorted_indices = packed
    assert packed._fields == ("data", "batch_sizes", "sorted_indices", "unsorted_indices")
    np.testing.assert_array_equal(data, [0, 0, 1, 2])
    np.testing.assert_array_equal(batch_sizes, [2, 1, 1])
    assert sorted_indices is None and unsorted_indices is None
    direct = fu.PackedSequence(data, batch_sizes, np.array([1, 0]))
    np.testing.assert_array_equal(direct.unsorted_indices, [1, 0])


@pytest.mark.parametrize("call,error,message", [
    (lambda: fu.pack_padded_sequence(np.zeros((3, 2, 1)), [3, 0]), ValueError, "greater than 0"),
    (lambda: fu.pack_padded_sequence(np.zeros((3, 2, 1)), [1, 3]), ValueError, "sorted in decreasing order"),
    (lambda: fu.pack_padded_sequence(np.zeros((3, 2, 1)), [3]), ValueError, r"len\(lengths\)` to be equal"),
    (lambda: fu.pack_padded_sequence(np.zeros((3, 2, 1)), [4, 1]), ValueError, "at most the padded length"),
    (lambda: fu.pack_padded_sequence(np.zeros((3, 2, 1)), [2.0, 1.0]), TypeError, "integers"),
    (lambda: fu.pack_padded_sequence(np.zeros((0, 2, 1)), [1, 1]), ValueError, "Cannot pack empty"),
    (lambda: fu.pad_packed_sequence(fu.pack_sequence([np.zeros(3)]), total_length=2), ValueError,
     "total_length to be at least"),
    (lambda: fu.pad_sequence([]), ValueError, "empty list"),
    (lambda: fu.pad_sequence([np.zeros((2, 3)), np.zeros((2, 4))]), ValueError, "trailing dimensions"),
    (lambda: fu.pad_sequence([np.zeros(2)], padding_side="middle"), ValueError, "left or right"),
    (lambda: fu.PackedSequence(np.zeros(3), [1, 2]), ValueError, "non-increasing"),
    (lambda: fu.PackedSequence(np.zeros(4), [2, 1]), ValueError, "sum"),
    (lambda: fu.PackedSequence(np.zeros(3), [2, 1], [0, 0]), ValueError, "permutation"),
])
def test_helper_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


# -- layers on packed input ------------------------------------------------------------------------

def make_config(index, chooser):
    cls = ["LSTM", "GRU", "RNN", "LSTM-proj"][index % 4]
    H = chooser.randint(3, 5)
    kwargs = dict(input_size=3, hidden_size=H, num_layers=1 + (index // 4) % 3,
                  bias=chooser.random() < 0.75, bidirectional=chooser.random() < 0.6)
    if cls == "LSTM-proj":
        cls, kwargs["proj_size"] = "LSTM", chooser.randint(1, H - 1)
    if cls == "RNN":
        kwargs["nonlinearity"] = chooser.choice(["tanh", "relu"])
    B = chooser.randint(1, 5)
    lengths = [chooser.randint(1, 6) for _ in range(B)]
    enforce_sorted = index % 2 == 0
    if enforce_sorted:
        lengths.sort(reverse=True)
    # batch_first shapes the padded batch that gets packed; the layer ignores it for packed input.
    kwargs["batch_first"] = chooser.random() < 0.5
    return dict(cls=cls, kwargs=kwargs, lengths=lengths, enforce_sorted=enforce_sorted,
                batch_first=kwargs["batch_first"], hx=chooser.random() < 0.6,
                dtype=np.float64 if chooser.random() < 0.6 else np.float32)


def config_id(c):
    kw = c["kwargs"]
    return "-".join([c["cls"] + (f"proj{kw['proj_size']}" if kw.get("proj_size") else ""),
                     f"L{kw['num_layers']}", "bi" if kw["bidirectional"] else "uni",
                     "len" + "_".join(map(str, c["lengths"])),
                     "sorted" if c["enforce_sorted"] else "unsorted", "bf" if c["batch_first"] else "tf",
                     "hx" if c["hx"] else "nohx", np.dtype(c["dtype"]).name])


_chooser = random.Random(31)
CONFIGS = [make_config(i, _chooser) for i in range(24)]


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_packed_layer_matches_torch(config, rng):
    """Packed input from a padded batch: output data, final states, the gradient of the padded
    batch (through pad_packed_sequence of our packed gradient) and of hx, every parameter."""
    ours, theirs = twins(config["cls"], config["dtype"], **config["kwargs"])
    kw, lengths, dtype = config["kwargs"], config["lengths"], config["dtype"]
    T, B = max(lengths) + 1, len(lengths)
    rows = kw["num_layers"] * (2 if kw["bidirectional"] else 1)
    P = kw.get("proj_size") or kw["hidden_size"]
    padded = rng.standard_normal(((B, T) if config["batch_first"] else (T, B)) + (3,)).astype(dtype)
    lstm = config["cls"] == "LSTM"
    hx = None
    if config["hx"]:
        hx = rng.standard_normal((rows, B, P)).astype(dtype)
        hx = (hx, rng.standard_normal((rows, B, kw["hidden_size"])).astype(dtype)) if lstm else hx

    packed = fu.pack_padded_sequence(padded, lengths, config["batch_first"], config["enforce_sorted"])
    output, final = ours(packed, hx)
    padded_t, hx_t = leaf(padded), nested(leaf, hx)
    packed_t = tu.pack_padded_sequence(padded_t, lengths, config["batch_first"], config["enforce_sorted"])
    output_t, final_t = theirs(packed_t, hx_t)
    assert isinstance(output, fu.PackedSequence)
    np.testing.assert_array_equal(output.batch_sizes, packed.batch_sizes)
    assert_close(output.data, output_t.data, "output", "output data")
    finals, finals_t = (list(final), list(final_t)) if lstm else ([final], [final_t])
    for a, e, name in zip(finals, finals_t, ["h_n", "c_n"]):
        assert_close(a, e, "output", name)

    d_output = random_like(rng, output.data)
    d_finals = [random_like(rng, f) for f in finals]
    # The gradient of the output may come as a PackedSequence or as its data.
    grad_output = output._replace(data=d_output) if config["hx"] else d_output
    grad_packed, grad_hx = ours.backward(grad_output, tuple(d_finals) if lstm else d_finals[0])
    torch_backward([output_t.data] + finals_t, [d_output] + d_finals)
    assert isinstance(grad_packed, fu.PackedSequence)
    grad_padded, _ = fu.pad_packed_sequence(grad_packed, config["batch_first"], total_length=T)
    assert_close(grad_padded, padded_t.grad, "grad", "grad of the padded input")
    assert_hx_grads_match(grad_hx, hx, hx_t, lstm)
    assert_param_grads_match(ours, theirs)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_packed_equals_each_sequence_on_its_own(cls, rng):
    """A packed bidirectional multi-layer run gives, for every sequence, what running it alone
    (unbatched, no padding) gives: the reverse direction starts at each sequence's own end."""
    layer = getattr(fnn, cls)(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, rng=0)
    lstm = cls == "LSTM"
    lengths = [2, 5, 1, 4]
    sequences = [rng.standard_normal((n, 3)) for n in lengths]
    h0 = rng.standard_normal((4, len(lengths), 4))
    hx = (h0, rng.standard_normal(h0.shape)) if lstm else h0
    output, final = layer(fu.pack_sequence(sequences, enforce_sorted=False), hx)
    padded_output, output_lengths = fu.pad_packed_sequence(output, batch_first=True)
    np.testing.assert_array_equal(output_lengths, lengths)
    d_outputs = [rng.standard_normal((n, 8)) for n in lengths]
    d_h = rng.standard_normal(h0.shape)
    grad_packed, grad_hx = layer.backward(fu.pack_sequence(d_outputs, enforce_sorted=False),
                                          (d_h, None) if lstm else d_h)
    grads = fu.unpack_sequence(grad_packed)
    packed_param_grads = {n: p.grad.copy() for n, p in layer.named_parameters()}

    layer.zero_grad()
    for b, seq in enumerate(sequences):
        hx_b = nested(lambda h: h[:, b], hx)
        single_output, single_final = layer(seq, hx_b)
        np.testing.assert_allclose(padded_output[b, :lengths[b]], single_output, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(padded_output[b, lengths[b]:], 0)
        for a, e in zip(final if lstm else [final], single_final if lstm else [single_final]):
            np.testing.assert_allclose(a[:, b], e, rtol=1e-10, atol=1e-12)
        grad_seq, grad_hx_b = layer.backward(d_outputs[b], (d_h[:, b], None) if lstm else d_h[:, b])
        np.testing.assert_allclose(grads[b], grad_seq, rtol=1e-10, atol=1e-12)
        for a, e in zip(grad_hx if lstm else [grad_hx], grad_hx_b if lstm else [grad_hx_b]):
            np.testing.assert_allclose(a[:, b], e, rtol=1e-10, atol=1e-12)
    for name, param in layer.named_parameters():  # accumulated over the sequences
        np.testing.assert_allclose(packed_param_grads[name], param.grad, rtol=1e-10, atol=1e-12, err_msg=name)


def test_packed_input_errors():
    layer = fnn.GRU(3, 4, dtype=np.float64)
    packed = fu.pack_sequence([np.zeros((3, 3)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"Expected hidden size \(1, 2, 4\)"):
        layer(packed, np.zeros((1, 3, 4)))
    with pytest.raises(ValueError, match="input_size"):
        layer(fu.pack_sequence([np.zeros((3, 2))]))
    with pytest.raises(TypeError, match="float32"):
        layer(fu.pack_sequence([np.zeros((3, 3), np.float32)]))
    layer(packed)
    with pytest.raises(ValueError, match=r"data shape \(5, 4\)"):
        layer.backward(np.zeros((4, 4)))

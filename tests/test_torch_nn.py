"""fusedrnn.torch.nn.RNN, LSTM, GRU and fusedrnn.torch.convert, against torch.nn's own modules.

The oracle is the torch.nn module with the same parameters, evaluated in float64 (the tolerance
table compares float32 results with a float64 evaluation on the same inputs); both run through
PyTorch's autograd with the same random cotangents.
"""

import contextlib
import gc
import io
import itertools
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusedrnn.torch as fr  # noqa: E402
from fusedrnn.torch import nn as fnn  # noqa: E402
from fusedrnn import _core  # noqa: E402
from fusedrnn import functional as F  # noqa: E402
from tolerances import INPUT_GRAD, OUTPUT, STATE, WEIGHT_GRAD, assert_close  # noqa: E402

from torch.nn.utils import prune as torch_prune  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MODES = {  # name -> (torch.nn class name, constructor options)
    "rnn_tanh": ("RNN", dict(nonlinearity="tanh")),
    "rnn_relu": ("RNN", dict(nonlinearity="relu")),
    "lstm": ("LSTM", dict()),
    "lstm_proj": ("LSTM", dict(proj_size=3)),
    "gru": ("GRU", dict()),
}
INPUTS = ("padded", "packed_sorted", "packed_unsorted")
T, B, I, H = 5, 4, 3, 6


def modules(mode, dtype, seed, **options):
    """(torch.nn module in float64, fusedrnn module in dtype) with the same parameters."""
    kind, extra = MODES[mode]
    torch.manual_seed(seed)
    oracle = getattr(torch.nn, kind)(I, H, dtype=torch.float64, **extra, **options)
    fused = getattr(fnn, kind)(I, H, dtype=dtype, **extra, **options)
    fused.load_state_dict(oracle.state_dict())
    return oracle, fused


def states_of(module, rng, batch=B):
    """A random hx for the module: h0, or (h0, c0) for an LSTM; float64 arrays."""
    D = 2 if module.bidirectional else 1
    P = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
    h0 = rng.uniform(-1, 1, (module.num_layers * D, batch, P))
    if module.mode != "LSTM":
        return (h0,)
    return h0, rng.uniform(-1, 1, (module.num_layers * D, batch, module.hidden_size))


def run(module, x, hx, lengths, form, dtype, cotangents=None, rng=None, device="cpu"):
    """Forward and backward of `module` on fresh leaf tensors of `dtype` on `device`.

    -> outputs (output as padded-or-packed data, h_n[, c_n]) and gradients {name: array},
    the cotangents used (drawn from rng when None)."""
    xt = torch.tensor(x, dtype=dtype, device=device, requires_grad=True)
    hxt = [torch.tensor(s, dtype=dtype, device=device, requires_grad=True) for s in hx] if hx is not None else None
    batch_first = module.batch_first
    inp = xt
    if form != "padded":
        inp = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                   enforce_sorted=form == "packed_sorted")
    state = None if hxt is None else (tuple(hxt) if module.mode == "LSTM" else hxt[0])
    output, hidden = module(inp, state)
    if form != "padded":
        assert isinstance(output, PackedSequence)
        assert torch.equal(output.batch_sizes, inp.batch_sizes)
        for name in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(output, name), getattr(inp, name)
            assert (a is None and b is None) or torch.equal(a, b), name
        output = output.data
    outputs = [output] + (list(hidden) if module.mode == "LSTM" else [hidden])
    if cotangents is None:
        cotangents = [rng.standard_normal(tuple(o.shape)) for o in outputs]
    assert all(o.device == xt.device for o in outputs)
    torch.autograd.backward(outputs, [torch.tensor(c, dtype=o.dtype, device=device)
                                      for o, c in zip(outputs, cotangents)])
    grads = {"x": xt.grad}
    if hxt is not None:
        grads.update({f"hx{k}": t.grad for k, t in enumerate(hxt)})
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return ([o.detach().double().cpu().numpy() for o in outputs],
            {k: v.double().cpu().numpy() for k, v in grads.items()}, cotangents)


@contextlib.contextmanager
def one_torch_thread():
    """For the oracle: torch.nn's multi-layer modules take up to 100x longer at these tiny sizes
    with several intra-op threads on a small shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def assert_parity(oracle, fused, x, hx, lengths, form, dtype, rng, monkeypatch, device="cpu"):
    calls = []

    def spy(cell, *args, **kwargs):
        calls.append((cell, kwargs["reverse"], kwargs["lengths"] is not None))
        return fr.recurrent(cell, *args, **kwargs)

    monkeypatch.setattr(fnn, "recurrent", spy)
    actual, actual_grads, cotangents = run(fused, x, hx, lengths, form, dtype, rng=rng, device=device)
    monkeypatch.undo()
    # Every layer and direction ran in the kernels, the reverse ones reversed, packed with lengths
    # (unless every sequence has the same length: the packed rows are then the padded batch's).
    D = 2 if fused.bidirectional else 1
    cell = dict(RNN_TANH="rnn_tanh", RNN_RELU="rnn_relu", LSTM="lstm", GRU="gru")[fused.mode]
    with_lengths = form != "padded" and len(set(np.asarray(lengths).tolist())) > 1
    assert calls == [(cell, bool(d), with_lengths) for _ in range(fused.num_layers) for d in range(D)]
    with one_torch_thread():
        expected, expected_grads, _ = run(oracle, x, hx, lengths, form, torch.float64, cotangents)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    for name, a, e, kind in zip(("output", "h_n", "c_n"), actual, expected, (OUTPUT, STATE, STATE)):
        assert_close(a, e, np_dtype, kind, name)
    assert set(actual_grads) == set(expected_grads)
    for name, grad in actual_grads.items():
        kind = INPUT_GRAD if name == "x" or name.startswith("hx") else WEIGHT_GRAD
        assert_close(grad, expected_grads[name], np_dtype, kind, name)


def matrix():
    """Every mode x num_layers x bidirectional x input form x dtype; batch_first, bias and hx
    cycle through their values over a seeded shuffle so that each pairs with every mode."""
    cases = list(itertools.product(MODES, (1, 2), (False, True), INPUTS, DTYPES))
    flags = list(itertools.product((False, True), repeat=3))  # batch_first, bias, hx
    order = np.random.default_rng(0).permutation(len(cases))
    for index, case in zip(order, cases):
        yield (*case, *flags[index % len(flags)])


@pytest.mark.parametrize("mode, num_layers, bidirectional, form, dtype, batch_first, bias, with_hx", list(matrix()))
def test_outputs_states_and_gradients_match_torch_nn(rng, monkeypatch, mode, num_layers, bidirectional, form, dtype,
                                                     batch_first, bias, with_hx):
    seed = int(rng.integers(2**31))
    oracle, fused = modules(mode, DTYPES[dtype], seed, num_layers=num_layers, bidirectional=bidirectional,
                            batch_first=batch_first, bias=bias)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    lengths = rng.integers(1, T + 1, size=B)
    lengths[1] = T
    if form == "packed_sorted":
        lengths = np.sort(lengths)[::-1].copy()
    hx = states_of(oracle, rng) if with_hx else None
    assert_parity(oracle, fused, x, hx, lengths, form, DTYPES[dtype], rng, monkeypatch)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", INPUTS[1:])
@pytest.mark.parametrize("batch", (1, B))
def test_packed_sequences_that_all_take_every_step_run_as_the_padded_batch(rng, monkeypatch, mode, form, batch):
    """A PackedSequence whose sequences all take all T steps (a batch of one always does) holds the
    padded batch's rows in order: the kernels run it without lengths (assert_parity checks), with
    torch.nn's results."""
    oracle, fused = modules(mode, torch.float64, int(rng.integers(2**31)), num_layers=2, bidirectional=True)
    x = rng.standard_normal((T, batch, I))
    hx = states_of(oracle, rng, batch=batch)
    assert_parity(oracle, fused, x, hx, np.full(batch, T), form, torch.float64, rng, monkeypatch)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", (False, True))
def test_unbatched_input(rng, mode, batch_first):
    oracle, fused = modules(mode, torch.float64, 1, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = rng.standard_normal((T, I))
    hx = tuple(s[:, 0] for s in states_of(oracle, rng, batch=1))
    for states in (None, hx):
        actual, actual_grads, cotangents = run(fused, x, states, None, "padded", torch.float64, rng=rng)
        with one_torch_thread():
            expected, expected_grads, _ = run(oracle, x, states, None, "padded", torch.float64, cotangents)
        assert [a.shape for a in actual] == [e.shape for e in expected]
        assert actual[0].shape[0] == T and actual[1].ndim == 2
        for a, e in zip(actual, expected):
            assert_close(a, e, np.float64, OUTPUT)
        for name, grad in actual_grads.items():
            assert_close(grad, expected_grads[name], np.float64, INPUT_GRAD if name[0] in "xh" else WEIGHT_GRAD,
                         name)


def test_the_classes_are_torch_nn_classes_and_state_dicts_load_both_ways():
    for kind in ("RNN", "LSTM", "GRU"):
        torch.manual_seed(3)
        plain = getattr(torch.nn, kind)(I, H, num_layers=2, bidirectional=True)
        torch.manual_seed(3)
        fused = getattr(fnn, kind)(I, H, num_layers=2, bidirectional=True)
        assert isinstance(fused, getattr(torch.nn, kind))
        # The same constructor draws the same initial parameters from the same seed.
        assert fused.state_dict().keys() == plain.state_dict().keys()
        for name, value in plain.state_dict().items():
            assert torch.equal(fused.state_dict()[name], value), name
        other = getattr(fnn, kind)(I, H, num_layers=2, bidirectional=True)
        other.load_state_dict(plain.state_dict())
        back = getattr(torch.nn, kind)(I, H, num_layers=2, bidirectional=True)
        back.load_state_dict(other.state_dict())
        for name, value in plain.state_dict().items():
            assert torch.equal(other.state_dict()[name], value) and torch.equal(back.state_dict()[name], value)


def test_dropout_between_layers_applies_in_training_only(rng):
    plain, fused = modules("lstm", torch.float32, 5, num_layers=3, dropout=0.5, batch_first=True)
    plain.float()
    x = torch.tensor(rng.standard_normal((B, T, I)), dtype=torch.float32)
    fused.train()
    torch.manual_seed(0)
    y1, (h1, c1) = fused(x)
    y2, _ = fused(x)
    assert y1.shape == (B, T, H) and h1.shape == c1.shape == (3, B, H)
    assert not torch.equal(y1, y2)  # a fresh dropout mask each call
    y1.sum().backward()
    assert all(p.grad is not None for p in fused.parameters())
    fused.eval()
    plain.eval()
    with torch.no_grad():
        y3, _ = fused(x)
        y4, _ = fused(x)
        expected, _ = plain(x)
    assert torch.equal(y3, y4)
    assert_close(y3.numpy(), expected.numpy(), np.float32, OUTPUT)


def test_unsupported_dtype_takes_torchs_own_path(rng, monkeypatch):
    calls = []
    monkeypatch.setattr(fnn, "recurrent", lambda *args, **kwargs: calls.append(1))
    plain, fused = modules("gru", torch.float64, 7, num_layers=2)
    plain.bfloat16()
    fused.bfloat16()
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.bfloat16)
    y, h = fused(x)
    expected_y, expected_h = plain(x)
    assert not calls
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, expected_y) and torch.equal(h, expected_h)


def test_other_devices_and_mixed_dtypes_take_torchs_own_path(monkeypatch):
    monkeypatch.setattr(fnn, "recurrent", lambda *args, **kwargs: pytest.fail("the kernels ran"))
    on_meta = fnn.LSTM(I, H, num_layers=2, proj_size=2, device="meta")
    y, (h_n, c_n) = on_meta(torch.empty(T, B, I, device="meta"))
    assert y.device.type == "meta" and y.shape == (T, B, 2) and h_n.shape == (2, B, 2) and c_n.shape == (2, B, H)
    with pytest.raises((RuntimeError, ValueError), match="dtype"):  # torch's own message
        fnn.GRU(I, H)(torch.zeros(T, B, I, dtype=torch.float64))


@pytest.mark.parametrize("transform", ["vmap", "grad", "jacrev"])
def test_torch_func_transforms_take_torchs_own_path(rng, monkeypatch, transform):
    fail = lambda *args, **kwargs: pytest.fail("the kernels ran")  # noqa: E731
    monkeypatch.setattr(fnn, "recurrent", fail)
    monkeypatch.setattr(fnn.F, "recurrent_forward", fail)
    plain, fused = modules("lstm", torch.float64, 11, num_layers=2, bidirectional=True)
    x = torch.tensor(rng.standard_normal((T, B, I)))
    if transform == "vmap":  # torch.nn's operators have no batching rule either: the same error
        batches = torch.tensor(rng.standard_normal((3, T, B, I)))
        for module in (plain, fused):
            with torch.no_grad(), pytest.raises(RuntimeError, match="Batching rule not implemented for aten::lstm"):
                torch.func.vmap(lambda xs, m=module: m(xs)[0])(batches)
        return
    if transform == "grad":  # every parameter's gradient, functionally
        def gradients(module):
            loss = lambda p: torch.func.functional_call(module, p, (x,))[0].square().sum()  # noqa: E731
            return torch.func.grad(loss)(dict(module.named_parameters()))
        got, want = gradients(fused), gradients(plain)
        assert got.keys() == want.keys() and all(torch.equal(got[name], want[name]) for name in got)
    else:  # the output's Jacobian in the input
        got, want = (torch.func.jacrev(lambda xs, m=m: m(xs)[0])(x) for m in (fused, plain))
        assert torch.equal(got, want)


def test_the_functional_op_refuses_torch_func_transforms(rng):
    weights = {"weight_ih": torch.randn(4 * H, I), "weight_hh": torch.randn(4 * H, H)}
    with pytest.raises(RuntimeError, match="torch.func"):
        torch.func.vmap(lambda x: fr.recurrent("lstm", x, None, None, weights)[0])(torch.randn(2, T, B, I))


@pytest.mark.parametrize("grad", [True, False])
def test_wrong_sizes_raise_torchs_errors(rng, grad):
    torch.set_grad_enabled(grad)  # (without grad the call goes to the uniform op first: calls_without_a_graph)
    request = contextlib.ExitStack()
    request.callback(torch.set_grad_enabled, True)
    with request:
        _wrong_sizes_raise_torchs_errors()


def _wrong_sizes_raise_torchs_errors():
    fused = fnn.LSTM(I, H, num_layers=2)
    with pytest.raises(RuntimeError, match="input.size"):
        fused(torch.randn(T, B, I + 1))
    with pytest.raises(RuntimeError, match="hidden"):
        fused(torch.randn(T, B, I), (torch.zeros(2, B + 1, H), torch.zeros(2, B, H)))
    with pytest.raises(RuntimeError, match="3-D"):
        fused(torch.randn(T, B, I), (torch.zeros(B, H), torch.zeros(B, H)))
    with pytest.raises(ValueError, match="2D or 3D"):
        fused(torch.randn(1, T, B, I))
    for hx in (torch.zeros(2, B, H), (torch.zeros(2, B, H),), [None, None]):
        with pytest.raises(Exception) as fused_error:
            fused(torch.randn(T, B, I), hx)
        with pytest.raises(Exception) as torch_error:
            torch.nn.LSTM(I, H, num_layers=2)(torch.randn(T, B, I), hx)
        assert type(fused_error.value) is type(torch_error.value)
    with pytest.raises(Exception):
        fnn.GRU(I, H)(torch.randn(T, B, I), (torch.zeros(1, B, H),))


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(I, 4)
        self.body = torch.nn.Sequential(torch.nn.LSTM(4, H, num_layers=2, batch_first=True, bidirectional=True))
        self.head = torch.nn.Linear(2 * H, 2)

    def forward(self, x):
        y, _ = self.body(self.embed(x))
        return self.head(y)


def test_convert_keeps_the_parameters_the_optimizer_holds(rng):
    torch.manual_seed(11)
    model = Tagger().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    parameters = list(model.parameters())
    x = torch.tensor(rng.standard_normal((B, T, I)))
    with torch.no_grad():
        before = model(x)
    assert fr.convert(model) is model
    lstm = model.body[0]
    assert type(lstm) is fnn.LSTM and isinstance(lstm, torch.nn.LSTM)
    assert [id(p) for p in model.parameters()] == [id(p) for p in parameters]
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in lstm.parameters()} <= held
    with torch.no_grad():
        after = model(x)
    assert_close(after.numpy(), before.numpy(), np.float64, OUTPUT)

    old = {name: p.detach().clone() for name, p in lstm.named_parameters()}
    optimizer.zero_grad()
    model(x).square().sum().backward()
    optimizer.step()
    for name, p in lstm.named_parameters():
        assert not torch.equal(p, old[name]), name

    # A module converted itself, and one converted twice, stay what they are.
    gru = torch.nn.GRU(I, H)
    assert type(fr.convert(gru)) is fnn.GRU
    assert type(fr.convert(gru)) is fnn.GRU


def test_convert_leaves_user_subclasses_alone():
    class Custom(torch.nn.LSTM):
        pass

    model = torch.nn.Sequential(Custom(I, H), torch.nn.RNN(I, H))
    fr.convert(model)
    assert type(model[0]) is Custom and type(model[1]) is fnn.RNN


def test_convert_turns_parametrized_modules_too(rng):
    """torch.nn.utils.parametrize moves a module into a class of its own over torch.nn's: convert
    puts the same over fusedrnn's, and removing the parametrization leaves fusedrnn's class."""
    class Custom(torch.nn.GRU):
        pass

    oracle, _ = modules("gru", torch.float64, 29)
    fused, _ = modules("gru", torch.float64, 29)  # (a torch.nn.GRU for now)
    custom = Custom(I, H, dtype=torch.float64)
    for module in (oracle, fused, custom):
        torch.nn.utils.parametrizations.weight_norm(module, "weight_hh_l0")
        torch.nn.utils.parametrizations.orthogonal(module, "weight_ih_l0")
    model = torch.nn.Sequential(fused, custom)
    parameters = list(model.parameters())
    fr.convert(model)
    assert isinstance(fused, fnn.GRU) and torch.nn.utils.parametrize.is_parametrized(fused, "weight_hh_l0")
    assert not isinstance(custom, fnn.GRU)
    assert [id(p) for p in model.parameters()] == [id(p) for p in parameters]
    x = torch.tensor(rng.standard_normal((T, B, I)))
    assert_close(fused(x)[0].detach().numpy(), oracle(x)[0].detach().numpy(), np.float64, OUTPUT)
    for module in (oracle, fused):
        torch.nn.utils.parametrize.remove_parametrizations(module, "weight_hh_l0")
        torch.nn.utils.parametrize.remove_parametrizations(module, "weight_ih_l0")
    assert type(fused) is fnn.GRU
    assert_close(fused(x)[0].detach().numpy(), oracle(x)[0].detach().numpy(), np.float64, OUTPUT)


@pytest.fixture
def allow_rnn():
    """Dynamo leaves torch.nn's recurrent modules (subclasses included) out of graphs unless told.
    (Through torch's own patch: pytest's monkeypatch (9.2) deletes a config module's setting
    when it undoes, so that a later test finds no allow_rnn.)"""
    with torch._dynamo.config.patch(allow_rnn=True):
        yield


def test_compiled_with_fullgraph_equals_eager(rng, allow_rnn):
    _, fused = modules("gru", torch.float32, 13, batch_first=True)
    x = torch.tensor(rng.standard_normal((B, T, I)), dtype=torch.float32, requires_grad=True)
    compiled = torch.compile(fused, fullgraph=True)
    results = []
    for module in (fused, compiled):
        y, h_n = module(x)
        loss = y.sin().sum() + h_n.square().sum()
        results.append([y, h_n, *torch.autograd.grad(loss, [x, *fused.parameters()])])
    for eager, traced in zip(*results):
        assert_close(traced.detach().numpy(), eager.detach().numpy(), np.float32, OUTPUT)


@pytest.mark.parametrize("mode", ("lstm", "gru"))
def test_packed_input_compiles_with_fullgraph_and_equals_eager(rng, allow_rnn, mode):
    """A PackedSequence that carries sorted_indices (enforce_sorted=False) goes into one graph:
    the steps are moved between packed and padded rows with integer indices, whose shapes come
    from the inputs' shapes (a boolean mask's would depend on values)."""
    _, fused = modules(mode, torch.float32, 17, num_layers=2, bidirectional=True)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32, requires_grad=True)
    lengths = torch.tensor([3, T, 1, 4])
    explained = torch._dynamo.explain(fused)(pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(fused, fullgraph=True)
    results = []
    for module in (fused, compiled):
        output, hidden = module(pack_padded_sequence(x, lengths, enforce_sorted=False))
        h_n = hidden[0] if mode == "lstm" else hidden
        assert torch.equal(output.batch_sizes, torch.tensor([4, 3, 3, 2, 1]))
        loss = output.data.sin().sum() + h_n.square().sum()
        results.append([output.data, h_n, *torch.autograd.grad(loss, [x, *fused.parameters()])])
    for eager, traced in zip(*results):
        assert_close(traced.detach().numpy(), eager.detach().numpy(), np.float32, OUTPUT)


def sorted_packed_results(module, x, lengths, mode, hx=None):
    output, hidden = module(pack_padded_sequence(x, lengths), hx)
    h_n = hidden[0] if mode == "lstm" else hidden
    loss = output.data.sin().sum() + h_n.square().sum()
    return [output.data, h_n, *torch.autograd.grad(loss, [x, *module.parameters()])]


@pytest.mark.parametrize("mode", ("lstm", "gru"))
def test_sorted_packed_input_compiles_with_fullgraph_when_dynamo_captures_scalars(rng, allow_rnn, mode):
    """Without sorted_indices (enforce_sorted=True) and hx the batch size is batch_sizes[0], a value:
    the graph breaks there, unless Dynamo's capture_scalar_outputs makes it a symbolic size; then
    the call is one graph, equal to eager."""
    _, fused = modules(mode, torch.float32, 19, num_layers=2, bidirectional=True)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32, requires_grad=True)
    lengths = torch.tensor([T, 4, 3, 1])
    assert torch._dynamo.explain(fused)(pack_padded_sequence(x, lengths)).graph_break_count == 1
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        explained = torch._dynamo.explain(fused)(pack_padded_sequence(x, lengths))
        assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
        results = [sorted_packed_results(m, x, lengths, mode) for m in (fused, torch.compile(fused, fullgraph=True))]
    for eager, traced in zip(*results):
        assert_close(traced.detach().numpy(), eager.detach().numpy(), np.float32, OUTPUT)


@pytest.mark.parametrize("mode", ("lstm", "gru"))
def test_sorted_packed_input_with_hx_compiles_with_fullgraph(rng, allow_rnn, mode):
    """With hx the batch size comes from its shape (batch_sizes[0] checked inside the graph): one
    graph, equal to eager; an hx of another batch size raises there as in eager."""
    _, fused = modules(mode, torch.float32, 23, num_layers=2, bidirectional=True)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32, requires_grad=True)
    lengths = torch.tensor([T, 4, 3, 1])
    hx = tuple(torch.tensor(s, dtype=torch.float32) for s in states_of(fused, rng))
    hx = hx if mode == "lstm" else hx[0]
    explained = torch._dynamo.explain(fused)(pack_padded_sequence(x, lengths), hx)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(fused, fullgraph=True)
    results = [sorted_packed_results(m, x, lengths, mode, hx) for m in (fused, compiled)]
    for eager, traced in zip(*results):
        assert_close(traced.detach().numpy(), eager.detach().numpy(), np.float32, OUTPUT)
    fewer = pack_padded_sequence(x[:, :3], lengths[:3])
    for module in (fused, compiled):
        with pytest.raises(RuntimeError, match="batch size|hidden"):
            module(fewer, hx)


def test_a_packed_sequence_whose_sorted_indices_disagree_with_its_batch_sizes_raises(rng):
    _, fused = modules("gru", torch.float32, 3)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32)
    packed = pack_padded_sequence(x, torch.tensor([3, T, 1, 4]), enforce_sorted=False)
    forged = PackedSequence(packed.data, packed.batch_sizes, packed.sorted_indices[:-1], packed.unsorted_indices[:-1])
    with pytest.raises(ValueError, match="sorted_indices has 3 entries but its batch_sizes"):
        fused(forged)


# -- calls that record no graph: the uniform op on NumPy views, without the operators --------------

def no_graph_matrix():
    """Every mode x num_layers x bidirectional x dtype x way of needing no graph; batch_first, hx
    and unbatched input cycle through their values over a seeded shuffle."""
    cases = list(itertools.product(MODES, (1, 2), (False, True), DTYPES, ("no_grad", "inference_mode", "frozen")))
    flags = list(itertools.product((False, True), repeat=3))  # batch_first, hx, unbatched
    order = np.random.default_rng(1).permutation(len(cases))
    for index, case in zip(order, cases):
        yield (*case, *flags[index % len(flags)])


def no_graph(context, module):
    """The context of a call that needs no graph: grad disabled, inference mode, or grad enabled
    with nothing that requires it ("frozen": the module's parameters frozen)."""
    if context == "frozen":
        module.requires_grad_(False)
        return contextlib.nullcontext()
    return torch.no_grad() if context == "no_grad" else torch.inference_mode()


@pytest.mark.parametrize("mode, num_layers, bidirectional, dtype, context, batch_first, with_hx, unbatched",
                         list(no_graph_matrix()))
def test_calls_without_a_graph_run_the_uniform_op_directly(rng, monkeypatch, mode, num_layers, bidirectional, dtype,
                                                           context, batch_first, with_hx, unbatched):
    """They skip the operators (and the autograd machinery) and give bitwise the results of a call
    through them, and torch.nn's within the tolerances."""
    seed = int(rng.integers(2**31))
    oracle, fused = modules(mode, DTYPES[dtype], seed, num_layers=num_layers, bidirectional=bidirectional,
                            batch_first=batch_first)
    batch = 1 if unbatched else B
    x = rng.standard_normal((batch, T, I) if batch_first else (T, batch, I))
    hx = states_of(oracle, rng, batch=batch) if with_hx else None
    if unbatched:
        x = x[0] if batch_first else x[:, 0]
        hx = None if hx is None else tuple(s[:, 0] for s in hx)

    def call(module, dtype, requires_grad):
        xt = torch.tensor(x, dtype=dtype, requires_grad=requires_grad)
        states = None if hx is None else [torch.tensor(s, dtype=dtype, requires_grad=requires_grad) for s in hx]
        output, hidden = module(xt, None if states is None else tuple(states) if module.mode == "LSTM" else states[0])
        return [output] + (list(hidden) if module.mode == "LSTM" else [hidden])

    through_operators = [t.detach() for t in call(fused, DTYPES[dtype], True)]
    with one_torch_thread():
        expected = [t.detach() for t in call(oracle, torch.float64, True)]
    direct, uniform_op = [], fnn.F.recurrent_forward
    monkeypatch.setattr(fnn, "recurrent", lambda *args, **kwargs: pytest.fail("the operators ran"))
    monkeypatch.setattr(fnn.F, "recurrent_forward", lambda *args, **kwargs: direct.append(1) or
                        uniform_op(*args, **kwargs))
    with no_graph(context, fused):
        actual = call(fused, DTYPES[dtype], False)
    assert len(direct) == num_layers * (2 if bidirectional else 1)
    for name, a, o, e in zip(("output", "h_n", "c_n"), actual, through_operators, expected):
        assert not a.requires_grad and a.dtype == DTYPES[dtype] and a.shape == e.shape, name
        torch.testing.assert_close(a, o, rtol=0, atol=0)
        assert_close(a.numpy(), e.numpy(), np.float32 if dtype == "float32" else np.float64, OUTPUT, name)


@pytest.mark.parametrize("change", ["in_place", "replace_parameter", "assign_data", "assign_transposed",
                                    "freeze", "double"])
def test_the_weight_views_follow_every_change_of_the_parameters(rng, change):
    """Calls without a graph keep NumPy views of the parameters from call to call; whatever
    happens to a parameter, the next call computes with what the parameter holds then."""
    torch.manual_seed(5)
    module = fnn.RNN(H, H, num_layers=2)  # (square weights: a transposed one keeps shape and address)
    x = torch.tensor(rng.standard_normal((T, B, H)), dtype=torch.float32)
    with torch.no_grad():
        first = module(x)[0]
        assert torch.equal(module(x)[0], first)
    weight = module.weight_hh_l1
    if change == "in_place":
        with torch.no_grad():
            weight.mul_(0.5)
    elif change == "replace_parameter":
        module.weight_hh_l1 = torch.nn.Parameter(weight.detach() * 0.5)
    elif change == "assign_data":
        weight.data = weight.detach() * 0.5
    elif change == "assign_transposed":
        weight.data = weight.data.t()
    elif change == "freeze":  # the same values, now reached with grad enabled too
        module.requires_grad_(False)
    else:
        module.double()
        x = x.double()
    views = module.__dict__.get("_fused_weight_views")
    assert change != "double" or views is None  # (casting drops the views of the old parameters)
    context = contextlib.nullcontext() if change == "freeze" else torch.no_grad()
    with context:
        after = module(x)[0]
    with torch.no_grad():
        expected = torch.nn.RNN.forward(module, x)[0]
    assert_close(after.numpy(), expected.numpy(), np.float64 if change == "double" else np.float32, OUTPUT)
    assert torch.equal(after, first) == (change == "freeze")


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_under_autocast_the_fused_layers_compute_in_float32(rng, mode):
    """torch.autocast (bfloat16, CPU) leaves the fused operators alone: float32 in and out, the
    values of a float32 call, gradients included (the module docstring says so)."""
    oracle, fused = modules(mode, torch.float32, 23)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fused(x)[0]
    assert y.dtype == torch.float32
    (dx,) = torch.autograd.grad(y.square().sum(), x)
    x64 = x.detach().double().requires_grad_()
    y64 = oracle(x64)[0]
    (dx64,) = torch.autograd.grad(y64.square().sum(), x64)
    assert_close(y.detach().numpy(), y64.detach().numpy(), np.float32, OUTPUT)
    assert_close(dx.numpy(), dx64.numpy(), np.float32, INPUT_GRAD)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_inference_under_autocast_computes_as_torch_nn_does(rng, mode, isa):
    """Without a graph, under bfloat16 autocast, every cell computes its products in bfloat16 (the
    kernels' bf16 mode, where the CPU has AVX512-BF16; float32 elsewhere), as torch.nn's compute
    there (torch.nn's GRU returns float32 but differs from a float32 call as much); checked with
    each instruction set this machine runs: below AVX-512, float32 throughout. Inputs in bfloat16
    (another autocast operator's output) give results in bfloat16: in the bf16 mode the same
    values, rounded; elsewhere (the general path, which rounds each layer's outputs to the input's
    dtype before the next layer reads them) within a few bfloat16 units of them."""
    torch.manual_seed(5)
    kind, extra = MODES[mode]
    fused = getattr(fnn, kind)(17, 24, num_layers=2, bidirectional=True, **extra)
    x = torch.tensor(rng.standard_normal((9, 3, 17)), dtype=torch.float32)
    with torch.no_grad():
        float32 = fused(x)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            theirs = getattr(torch.nn, kind).forward(fused, x)[0].float()   # (torch.nn's own forward)
            y = fused(x)[0]
            y_from_bf16 = fused(x.bfloat16())[0]
    bf16 = _core.bf16_native()
    expected = x.numpy()
    for layer in range(2):
        outputs = []
        for direction, suffix in enumerate(("", "_reverse")):
            weights = {name: getattr(fused, f"{name}_l{layer}{suffix}").detach().numpy()
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            outputs.append(F.recurrent_forward(fused._cell(), expected, None, None, weights, training=False,
                                               reverse=bool(direction), bf16_weights=bf16, bf16_projections=bf16)[0])
        expected = np.concatenate(outputs, axis=2)
    assert (theirs - float32).abs().max() > 1e-4   # (torch.nn's products are bfloat16 there, every cell's)
    assert y.dtype == torch.float32 and y_from_bf16.dtype == torch.bfloat16
    np.testing.assert_array_equal(y.numpy(), expected)
    assert torch.equal(y, float32) == (not bf16)
    x_rounded = torch.tensor(x.bfloat16().float().numpy())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        from_rounded = fused(x_rounded)[0]
    if bf16:
        assert torch.equal(y_from_bf16, from_rounded.bfloat16())
    else:
        np.testing.assert_allclose(y_from_bf16.float().numpy(), from_rounded.numpy(), atol=2 ** -6, rtol=2 ** -6)


REPARAMETRIZATIONS = {
    "orthogonal": lambda m: torch.nn.utils.parametrizations.orthogonal(m, "weight_hh_l0"),
    "spectral_norm": lambda m: torch.nn.utils.parametrizations.spectral_norm(m, "weight_ih_l0"),
    "weight_norm": lambda m: torch.nn.utils.parametrizations.weight_norm(m, "weight_hh_l0"),
    "prune": lambda m: torch_prune.random_unstructured(m, "weight_hh_l0", amount=0.5),
}


@pytest.mark.parametrize("mode", ("lstm", "gru"))
@pytest.mark.parametrize("how", sorted(REPARAMETRIZATIONS))
@pytest.mark.parametrize("grad", [True, False])
def test_reparametrized_weights_are_the_ones_computed_with(rng, mode, how, grad):
    """A parametrized weight (torch.nn.utils.parametrize) is computed anew at each access and
    pruning assigns one in a pre-hook: each call uses the weight as the module gives it then, and
    its gradient reaches the parameters behind it, as in torch.nn."""
    oracle, fused = modules(mode, torch.float64, 17)
    for module in (oracle, fused):
        torch.manual_seed(3)  # (spectral_norm's and pruning's random draws)
        REPARAMETRIZATIONS[how](module)
    x = torch.tensor(rng.standard_normal((T, B, I)))
    for _ in range(2):  # (the second call after spectral_norm's power iteration moved its vectors)
        with contextlib.nullcontext() if grad else torch.no_grad():
            results = [module(x)[0] for module in (oracle, fused)]
        assert_close(results[1].detach().numpy(), results[0].detach().numpy(), np.float64, OUTPUT)
    if grad:
        gradients = [torch.autograd.grad(y.sin().sum(), list(m.parameters())) for y, m in zip(results, (oracle, fused))]
        for expected, got in zip(*gradients):
            assert_close(got.numpy(), expected.numpy(), np.float64, WEIGHT_GRAD)


@pytest.mark.parametrize("grad", [True, False])
def test_functional_call_computes_with_the_tensors_it_is_given(rng, grad):
    """torch.func.functional_call swaps the module's parameters without __setattr__."""
    oracle, fused = modules("lstm", torch.float64, 19)
    replacements = {name: torch.tensor(rng.uniform(-0.5, 0.5, p.shape), requires_grad=grad)
                    for name, p in oracle.named_parameters()}
    x = torch.tensor(rng.standard_normal((T, B, I)))
    for module in (oracle, fused):
        module(x)  # (a call before, with the module's own parameters)
    results = [torch.func.functional_call(module, replacements, (x,))[0] for module in (oracle, fused)]
    assert_close(results[1].detach().numpy(), results[0].detach().numpy(), np.float64, OUTPUT)
    assert_close(fused(x)[0].detach().numpy(), oracle(x)[0].detach().numpy(), np.float64, OUTPUT)  # (its own again)
    if grad:
        gradients = [torch.autograd.grad(y.sin().sum(), list(replacements.values())) for y in results]
        for expected, got in zip(*gradients):
            assert_close(got.numpy(), expected.numpy(), np.float64, WEIGHT_GRAD)


def test_compiled_with_a_parametrized_weight_equals_torch_nn(rng, allow_rnn):
    oracle, fused = modules("gru", torch.float64, 23)
    for module in (oracle, fused):
        torch.nn.utils.parametrizations.orthogonal(module, "weight_hh_l0")
    x = torch.tensor(rng.standard_normal((T, B, I)))
    compiled = torch.compile(fused, fullgraph=True)
    assert_close(compiled(x)[0].detach().numpy(), oracle(x)[0].detach().numpy(), np.float64, OUTPUT)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])  # (ONNX's reference evaluator has no relu RNN)
def test_onnx_export_writes_onnx_recurrent_operators(rng, mode, exporter):
    """torch.onnx.export of a fused module writes what torch.nn's writes: ONNX's own RNN, LSTM or
    GRU operators, which compute the same outputs (run here by ONNX's reference evaluator), with
    nothing of fusedrnn's in the file."""
    onnx = pytest.importorskip("onnx")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    from onnx.reference import ReferenceEvaluator

    oracle, fused = modules(mode, torch.float32, 31, num_layers=2, bidirectional=True)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32)
    models = []
    for module in (fused, oracle.float()):
        buffer = io.BytesIO()
        torch.onnx.export(module, (x,), buffer, dynamo=exporter == "dynamo")
        models.append(onnx.load_from_string(buffer.getvalue()))
    model, torch_nn_model = models
    operators = {(node.domain, node.op_type) for node in model.graph.node}
    assert operators == {(node.domain, node.op_type) for node in torch_nn_model.graph.node}
    assert not any("fusedrnn" in domain for domain, _ in operators)
    evaluator = ReferenceEvaluator(model)
    y = evaluator.run(None, {evaluator.input_names[0]: x.numpy()})[0]
    with torch.no_grad():
        expected = oracle.double()(x.double())[0]
    assert_close(y, expected.numpy(), np.float32, OUTPUT)


def test_the_functional_op_refuses_an_onnx_export(rng):
    pytest.importorskip("onnx")

    class Layer(torch.nn.Module):
        def forward(self, x):
            return fr.recurrent("rnn_tanh", x, None, None, {"weight_ih": torch.ones(H, I), "weight_hh": torch.ones(H, H)})[0]

    with pytest.raises(RuntimeError, match="no ONNX form"):
        torch.onnx.export(Layer(), (torch.zeros(T, B, I),), io.BytesIO(), dynamo=False)


def test_moving_a_module_drops_the_kept_views_of_its_old_parameters(rng):
    """Training calls keep a view of each parameter by tensor (fusedrnn.torch._ops); .double(),
    .to() and the like replace the parameters' memory, and the views of the old memory go with it
    rather than hold it until the parameter is next used."""
    from fusedrnn.torch import _ops

    module = fnn.LSTM(I, H)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32)
    module(x)[0].sum().backward()
    parameters = list(module.parameters())
    old_memory = [weakref.ref(_ops._VIEWS[id(p)][4].base) for p in parameters]
    module.double()
    assert not any(id(p) in _ops._VIEWS for p in parameters)
    gc.collect()
    assert all(ref() is None for ref in old_memory)
    y = module(x.double())[0]
    y.sum().backward()
    with torch.no_grad():
        expected = torch.nn.LSTM.forward(module, x.double())[0]
    assert_close(y.detach().numpy(), expected.numpy(), np.float64, OUTPUT)


def test_weight_views_start_empty_in_copies():
    import copy
    import pickle

    module = fnn.GRU(I, H)
    x = torch.randn(T, B, I)
    with torch.no_grad():
        expected = module(x)[0]
    assert module.__dict__["_fused_weight_views"].arrays is not None
    for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        assert clone.__dict__["_fused_weight_views"].arrays is None
        with torch.no_grad():
            torch.testing.assert_close(clone(x)[0], expected, rtol=0, atol=0)
            clone.weight_ih_l0.mul_(0.5)  # its own parameters, not the original's
            assert not torch.equal(clone(x)[0], expected)
            torch.testing.assert_close(module(x)[0], expected, rtol=0, atol=0)


@pytest.mark.parametrize("grad", [True, False])
def test_jit_trace_records_the_operators(rng, grad):
    _, fused = modules("lstm", torch.float32, 17, num_layers=2)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(fused, x, check_trace=False)
        other = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32, requires_grad=grad)
        actual, expected = traced(other)[0], fused(other)[0]
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)  # (not the traced call's values)
    if grad:
        torch.testing.assert_close(torch.autograd.grad(actual.sum(), other)[0],
                                   torch.autograd.grad(expected.sum(), other)[0], rtol=0, atol=0)


# -- packed weights kept between calls that need no gradient --------------------------------------

def _handles(module):
    return module.__dict__.get("_packed_weights", {})


@pytest.mark.parametrize("change", ["data_in_place", "numpy_view", "optimizer_step", "load_state_dict",
                                    "assign_data", "no_grad_copy"])
def test_packed_weights_are_reused_until_any_kind_of_change(rng, change):
    """Inference calls reuse each layer direction's packed weights and give the results of a call
    that packs afresh (a call with grad enabled uses no cache); every way of changing a weight,
    those that do not bump tensor._version included, is seen."""
    torch.manual_seed(3)
    module = fnn.GRU(I, H, num_layers=2, bidirectional=True)
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32)

    def fresh():  # the same call with grad enabled: nothing cached, bitwise the same kernels
        return module(x)[0].detach()

    with torch.no_grad():
        first, second = module(x)[0], module(x)[0]
    assert sorted(_handles(module)) == [0, 1, 2, 3]
    assert all(h.misses == 1 and h.hits == 1 for h in _handles(module).values())
    torch.testing.assert_close(first, fresh(), rtol=0, atol=0)
    torch.testing.assert_close(second, first, rtol=0, atol=0)

    weight = module.weight_hh_l1_reverse
    if change == "data_in_place":  # no version bump
        weight.data.mul_(0.5)
    elif change == "numpy_view":  # no version bump either
        weight.detach().numpy()[0] += 1.0
    elif change == "optimizer_step":
        optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
        module(x)[0].square().sum().backward()
        optimizer.step()
    elif change == "load_state_dict":
        module.load_state_dict({k: v * 0.5 for k, v in module.state_dict().items()})
    elif change == "assign_data":
        weight.data = weight.detach() * 0.5
    else:
        with torch.no_grad():
            weight.copy_(weight * 0.5)
    with torch.no_grad():
        changed = module(x)[0]
    assert not torch.equal(changed, first)
    torch.testing.assert_close(changed, fresh(), rtol=0, atol=0)


def test_packed_weights_start_empty_in_copies_and_are_not_state():
    import copy

    module = fnn.LSTM(I, H)
    with torch.no_grad():
        module(torch.zeros(T, B, I))
    assert _handles(module)[0].nbytes > 0
    clone = copy.deepcopy(module)
    assert all(h.nbytes == 0 for h in _handles(clone).values())
    assert set(module.state_dict()) == set(fnn.LSTM(I, H).state_dict())
    # Moving or casting the parameters drops the packed copies of the old ones.
    module.double()
    assert all(h.nbytes == 0 for h in _handles(module).values())
    x = torch.randn(T, B, I, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(module(x)[0], module(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(module(x)[0].detach(), torch.nn.LSTM.forward(module, x)[0].detach())


# -- CUDA tensors on fusedrnn's CUDA backend ------------------------------------------------------
# These need PyTorch with CUDA and fusedrnn built with its CUDA backend, on a GPU (bench/gpu_check.py
# runs them there); PyTorch's CPU build cannot make CUDA tensors, so under the emulator they skip.

def _needs_cuda_tensors():
    import fusedrnn.cuda

    if not torch.cuda.is_available() or not fusedrnn.cuda.is_available():
        pytest.skip("needs PyTorch with CUDA and fusedrnn's CUDA backend on a GPU")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("form", ("padded", "packed_unsorted"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_tensors_run_on_the_cuda_backend_and_match_torch_nn(rng, monkeypatch, mode, form, dtype):
    _needs_cuda_tensors()
    oracle, fused = modules(mode, DTYPES[dtype], 21, num_layers=2, bidirectional=True)
    fused.cuda()
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(1, T + 1, size=B)
    assert_parity(oracle, fused, x, states_of(oracle, rng), lengths, form, DTYPES[dtype], rng, monkeypatch,
                  device="cuda")


def test_cuda_results_are_the_same_on_another_current_stream(rng):
    _needs_cuda_tensors()
    _, fused = modules("lstm", torch.float32, 22, num_layers=2)
    fused.cuda()
    x = torch.tensor(rng.standard_normal((T, B, I)), dtype=torch.float32, device="cuda")
    expected = fused(x)[0]
    with torch.cuda.stream(torch.cuda.Stream()):
        # Work queued on this stream just before: the call must wait for it.
        shifted = x * 2
        actual = fused(shifted / 2)[0] * 1
    torch.cuda.synchronize()
    assert torch.equal(actual, expected)


def test_cuda_compiled_with_fullgraph_equals_eager(rng, allow_rnn):
    _needs_cuda_tensors()
    _, fused = modules("gru", torch.float32, 23, batch_first=True)
    fused.cuda()
    x = torch.tensor(rng.standard_normal((B, T, I)), dtype=torch.float32, device="cuda", requires_grad=True)
    results = []
    for module in (fused, torch.compile(fused, fullgraph=True)):
        y, h_n = module(x)
        loss = y.sin().sum() + h_n.square().sum()
        results.append([y, h_n, *torch.autograd.grad(loss, [x, *fused.parameters()])])
    for eager, traced in zip(*results):
        assert_close(traced.detach().cpu().numpy(), eager.detach().cpu().numpy(), np.float32, OUTPUT)

"""fusedrnn.optim (optimizers, lr_scheduler) and fusedrnn.nn.utils gradient clipping against
torch.optim / torch.nn.utils: the same parameters and gradient sequences must give the same
parameters after every step, the same learning-rate sequences and the same clipped gradients.

Tolerances (|a - b| <= atol + rtol * |b|): float64 1e-14 + 1e-12 relative (both sides do the same
float64 arithmetic, up to operation order); float32 1e-6 + 1e-5 relative (both in float32, five
steps of rounding differences in the updates). Learning rates are plain Python floats: 1e-13.
"""

import math

import numpy as np
import pytest

from fusedrnn import nn, optim
from fusedrnn.nn.utils import clip_grad_norm_, clip_grad_value_
from fusedrnn.optim import lr_scheduler

torch = pytest.importorskip("torch")

TOLERANCE = {np.float64: (1e-14, 1e-12), np.float32: (1e-6, 1e-5)}
SHAPES = [(3, 4), (5,), (2, 3, 2), ()]
STEPS = 5


def assert_close(actual, expected, dtype):
    atol, rtol = TOLERANCE[dtype]
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    assert actual.dtype == np.dtype(dtype) and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)


def twin_parameters(rng, dtype, shapes=SHAPES):
    values = [np.asarray(rng.standard_normal(shape), dtype=dtype) for shape in shapes]
    ours = [nn.Parameter(v) for v in values]
    theirs = [torch.from_numpy(v.copy()).requires_grad_(True) for v in values]
    return ours, theirs


def run_steps(ours_opt, theirs_opt, ours, theirs, rng, dtype, steps=STEPS, skip=None):
    """Feeds the same random gradients to both and compares the parameters after each step.
    `skip(step, index)` says which parameters get no gradient (None) at a step."""
    for step in range(steps):
        for index, (p, q) in enumerate(zip(ours, theirs)):
            if skip is not None and skip(step, index):
                p.grad, q.grad = None, None
                continue
            grad = np.asarray(rng.standard_normal(p.shape), dtype=dtype)
            p.grad = grad.copy()
            q.grad = torch.from_numpy(grad.copy())
        ours_opt.step()
        theirs_opt.step()
        for p, q in zip(ours, theirs):
            assert_close(p.data, q, dtype)


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, maximize=True)),
    ("SGD", dict()),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-3)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6, maximize=True)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-6)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, maximize=True)),
]


def config_id(config):
    name, options = config
    return name + "-" + ",".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_optimizer_matches_torch(config, dtype, rng):
    name, options = config
    ours, theirs = twin_parameters(rng, dtype)
    run_steps(getattr(optim, name)(ours, **options), getattr(torch.optim, name)(theirs, **options),
              ours, theirs, rng, dtype)


@pytest.mark.parametrize("config", CONFIGS[1::3], ids=config_id)
def test_parameters_without_gradient_are_skipped(config, rng):
    """A parameter whose .grad is None is left alone and its state does not advance."""
    name, options = config
    ours, theirs = twin_parameters(rng, np.float64)
    frozen_value = ours[0].data.copy()
    run_steps(getattr(optim, name)(ours, **options), getattr(torch.optim, name)(theirs, **options),
              ours, theirs, rng, np.float64, skip=lambda step, index: index == 0 or (step + index) % 3 == 0)
    np.testing.assert_array_equal(ours[0].data, frozen_value)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_param_groups_with_own_options(name, rng):
    ours, theirs = twin_parameters(rng, np.float64)
    extra = {"SGD": dict(momentum=0.5), "Adam": dict(betas=(0.5, 0.9)), "RMSprop": dict(centered=True),
             "Adagrad": dict(lr_decay=0.2)}[name]

    def groups(params):
        return [{"params": params[:2]}, {"params": params[2:3], "lr": 0.3, **extra}]

    ours_opt = getattr(optim, name)(groups(ours), lr=0.05)
    theirs_opt = getattr(torch.optim, name)(groups(theirs), lr=0.05)
    ours_opt.add_param_group({"params": ours[3:], "lr": 0.02})
    theirs_opt.add_param_group({"params": theirs[3:], "lr": 0.02})
    assert [g["lr"] for g in ours_opt.param_groups] == [0.05, 0.3, 0.02]
    for ours_group, theirs_group in zip(ours_opt.param_groups, theirs_opt.param_groups):
        for key in ours_group:
            if key != "params":
                assert ours_group[key] == theirs_group[key], key
    run_steps(ours_opt, theirs_opt, ours, theirs, rng, np.float64)
    # Changing a group's lr by hand takes effect at the next step, as in PyTorch.
    ours_opt.param_groups[0]["lr"] = theirs_opt.param_groups[0]["lr"] = 0.5
    run_steps(ours_opt, theirs_opt, ours, theirs, rng, np.float64, steps=2)


@pytest.mark.parametrize("config", [c for c in CONFIGS if c[1]], ids=config_id)
def test_state_dict_round_trip(config, rng):
    """Three steps, save, restore into a fresh optimizer over copies, two more steps: the same
    as five steps without interruption. State keys and numbering are PyTorch's."""
    name, options = config
    ours, theirs = twin_parameters(rng, np.float64)
    ours_opt = getattr(optim, name)(ours, **options)
    theirs_opt = getattr(torch.optim, name)(theirs, **options)
    run_steps(ours_opt, theirs_opt, ours, theirs, rng, np.float64, steps=3)
    saved = ours_opt.state_dict()
    theirs_saved = theirs_opt.state_dict()
    assert sorted(saved["state"]) == sorted(theirs_saved["state"])
    for index, values in saved["state"].items():
        assert sorted(values) == sorted(theirs_saved["state"][index]), name
    assert [g["params"] for g in saved["param_groups"]] == [g["params"] for g in theirs_saved["param_groups"]]

    copies = [nn.Parameter(p.data) for p in ours]
    restored = getattr(optim, name)(copies, lr=123.0)      # options come from the state dict
    restored.load_state_dict(saved)
    assert restored.param_groups[0]["lr"] == ours_opt.param_groups[0]["lr"]
    saved["state"].clear()                                 # the restored state is a copy
    for step in range(2):
        for p, c in zip(ours, copies):
            p.grad = rng.standard_normal(p.shape)
            c.grad = p.grad.copy()
        ours_opt.step()
        restored.step()
    for p, c in zip(ours, copies):
        np.testing.assert_array_equal(p.data, c.data)


def test_load_state_dict_checks_structure(rng):
    params = [nn.Parameter(rng.standard_normal(3)) for _ in range(3)]
    opt = optim.Adam(params)
    with pytest.raises(ValueError, match="number of parameter groups"):
        opt.load_state_dict(optim.Adam([{"params": params[:1]}, {"params": params[1:]}]).state_dict())
    with pytest.raises(ValueError, match="size"):
        opt.load_state_dict(optim.Adam(params[:2]).state_dict())


def test_zero_grad_and_closure():
    p = nn.Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(3)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None

    def closure():
        p.grad = 2 * p.data
        return float((p.data ** 2).sum())

    assert opt.step(closure) == 3.0
    np.testing.assert_allclose(p.data, 0.8 * np.ones(3))


def test_module_parameters_and_float32_updates_stay_float32(rng):
    model = nn.Linear(3, 2)
    opt = optim.Adam(model.parameters(), lr=0.01)
    model(rng.standard_normal((4, 3)).astype(np.float32))
    model.backward(rng.standard_normal((4, 2)).astype(np.float32))
    before = model.weight.data
    opt.step()
    assert model.weight.data is before and before.dtype == np.float32    # updated in place


# (optimizer, options, message): each must raise ValueError in both libraries.
VALIDATION = [
    ("SGD", dict(lr=-1), "Invalid learning rate"),
    ("SGD", dict(momentum=-0.1), "Invalid momentum value"),
    ("SGD", dict(weight_decay=-1), "Invalid weight_decay value"),
    ("SGD", dict(nesterov=True), "Nesterov momentum requires"),
    ("SGD", dict(momentum=0.9, dampening=0.1, nesterov=True), "Nesterov momentum requires"),
    ("Adam", dict(lr=-1), "Invalid learning rate"),
    ("Adam", dict(eps=-1), "Invalid epsilon value"),
    ("Adam", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0"),
    ("Adam", dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1"),
    ("AdamW", dict(weight_decay=-1), "Invalid weight_decay value"),
    ("RMSprop", dict(alpha=-1), "Invalid alpha value"),
    ("RMSprop", dict(momentum=-1), "Invalid momentum value"),
    ("RMSprop", dict(eps=-1), "Invalid epsilon value"),
    ("Adagrad", dict(lr_decay=-1), "Invalid lr_decay value"),
    ("Adagrad", dict(initial_accumulator_value=-1), "Invalid initial_accumulator_value"),
    ("Adagrad", dict(eps=-1), "Invalid epsilon value"),
]


@pytest.mark.parametrize("name, options, message", VALIDATION)
def test_validation_errors_match_torch(name, options, message):
    with pytest.raises(ValueError, match=message):
        getattr(optim, name)([nn.Parameter(np.zeros(2))], **options)
    with pytest.raises(ValueError, match=message):
        getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **options)


def test_parameter_list_errors():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def test_type_errors():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="Parameters"):
        optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="sets"):
        optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(TypeError, match="not an Optimizer"):
        lr_scheduler.StepLR(object(), 2)


# -- learning-rate schedulers ------------------------------------------------------------------

def twin_optimizers(lrs=(0.1, 0.03)):
    ours = optim.SGD([{"params": [nn.Parameter(np.zeros(1))], "lr": lr} for lr in lrs], lr=1.0)
    theirs = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr}
                              for lr in lrs], lr=1.0)
    return ours, theirs


def compare_schedules(ours_sched, theirs_sched, ours_opt, theirs_opt, steps, edit_at=None):
    assert ours_sched.get_last_lr() == pytest.approx(theirs_sched.get_last_lr(), rel=1e-13)
    for step in range(steps):
        if step == edit_at:      # an lr changed by hand carries forward in the chainable form
            for group in ours_opt.param_groups + theirs_opt.param_groups:
                group["lr"] *= 0.5
        ours_opt.step()
        theirs_opt.step()
        ours_sched.step()
        theirs_sched.step()
        assert ours_sched.last_epoch == theirs_sched.last_epoch
        assert ours_sched.get_last_lr() == pytest.approx(theirs_sched.get_last_lr(), rel=1e-13, abs=1e-15)
        assert [g["lr"] for g in ours_opt.param_groups] == ours_sched.get_last_lr()


@pytest.mark.parametrize("step_size, gamma", [(1, 0.5), (3, 0.1), (4, 0.9)])
@pytest.mark.parametrize("edit_at", [None, 5])
def test_step_lr_matches_torch(step_size, gamma, edit_at):
    ours_opt, theirs_opt = twin_optimizers()
    compare_schedules(lr_scheduler.StepLR(ours_opt, step_size, gamma),
                      torch.optim.lr_scheduler.StepLR(theirs_opt, step_size, gamma),
                      ours_opt, theirs_opt, 13, edit_at)


@pytest.mark.parametrize("T_max, eta_min", [(5, 0.0), (4, 0.01), (1, 0.0), (7, 0.02)])
@pytest.mark.parametrize("edit_at", [None, 3])
def test_cosine_annealing_matches_torch(T_max, eta_min, edit_at):
    ours_opt, theirs_opt = twin_optimizers()
    compare_schedules(lr_scheduler.CosineAnnealingLR(ours_opt, T_max, eta_min),
                      torch.optim.lr_scheduler.CosineAnnealingLR(theirs_opt, T_max, eta_min),
                      ours_opt, theirs_opt, 3 * T_max + 2, edit_at)


def test_cosine_annealing_closed_form():
    opt, _ = twin_optimizers(lrs=(1.0,))
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.1)
    for epoch in range(1, 11):
        opt.step()
        sched.step()
        assert sched.get_last_lr()[0] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * epoch / 10)) / 2)


@pytest.mark.parametrize("kind", ["StepLR", "CosineAnnealingLR"])
def test_scheduler_resume(kind):
    """A scheduler rebuilt with last_epoch (after the optimizer's state_dict, which carries
    initial_lr) or restored with load_state_dict continues as the original does, as in PyTorch."""
    args = (3,) if kind == "StepLR" else (6, 0.01)
    ours_opt, theirs_opt = twin_optimizers()
    ours_sched = getattr(lr_scheduler, kind)(ours_opt, *args)
    theirs_sched = getattr(torch.optim.lr_scheduler, kind)(theirs_opt, *args)
    compare_schedules(ours_sched, theirs_sched, ours_opt, theirs_opt, 4)
    state = ours_sched.state_dict()
    assert "optimizer" not in state
    assert set(state) <= set(theirs_sched.state_dict()) | {"_is_initial"}

    resumed_opt, resumed_theirs_opt = twin_optimizers()
    resumed_opt.load_state_dict(ours_opt.state_dict())
    resumed_theirs_opt.load_state_dict(theirs_opt.state_dict())
    resumed = getattr(lr_scheduler, kind)(resumed_opt, *args, last_epoch=ours_sched.last_epoch)
    resumed_theirs = getattr(torch.optim.lr_scheduler, kind)(resumed_theirs_opt, *args,
                                                             last_epoch=theirs_sched.last_epoch)
    compare_schedules(resumed, resumed_theirs, resumed_opt, resumed_theirs_opt, 8)

    reloaded_opt, _ = twin_optimizers()
    reloaded_opt.load_state_dict(ours_opt.state_dict())
    reloaded = getattr(lr_scheduler, kind)(reloaded_opt, *args)
    reloaded.load_state_dict(state)
    compare_schedules(reloaded, theirs_sched, reloaded_opt, theirs_opt, 8)

    with pytest.raises(KeyError, match="initial_lr"):
        getattr(lr_scheduler, kind)(twin_optimizers()[0], *args, last_epoch=3)


# -- gradient clipping -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, 0.5, math.inf, "inf", 0.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(max_norm, norm_type, dtype, rng):
    ours, theirs = twin_parameters(rng, dtype)
    for index, (p, q) in enumerate(zip(ours, theirs)):
        if index == 2:
            continue                     # one parameter without a gradient
        grad = np.asarray(rng.standard_normal(p.shape), dtype=dtype)
        grad.flat[0] = 0.0
        p.grad, q.grad = grad.copy(), torch.from_numpy(grad.copy())
    total = clip_grad_norm_(iter(ours), max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(expected.item(), rel=TOLERANCE[dtype][1])
    for p, q in zip(ours, theirs):
        if q.grad is None:
            assert p.grad is None
        else:
            assert_close(p.grad, q.grad, dtype)


def test_clip_grad_norm_edges(rng):
    p = nn.Parameter(np.zeros(3))
    assert clip_grad_norm_([p], 1.0) == 0.0                       # no gradients at all
    p.grad = np.array([3.0, 4.0, 0.0])
    assert clip_grad_norm_(p, 1.0) == 5.0                         # a single Parameter is accepted
    np.testing.assert_allclose(p.grad, [0.6, 0.8, 0.0], rtol=1e-6)
    for bad in (np.inf, np.nan):
        p.grad = np.array([1.0, bad, 2.0])
        q = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        q.grad = torch.tensor([1.0, bad, 2.0], dtype=torch.float64)
        with pytest.raises(RuntimeError, match="non-finite"):
            clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
        total = clip_grad_norm_([p], 1.0)
        expected = torch.nn.utils.clip_grad_norm_([q], 1.0)
        np.testing.assert_array_equal(total, expected.item())
        np.testing.assert_array_equal(p.grad, q.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_value_matches_torch(dtype, rng):
    ours, theirs = twin_parameters(rng, dtype)
    for p, q in zip(ours, theirs):
        grad = np.asarray(rng.standard_normal(p.shape) * 2, dtype=dtype)
        p.grad, q.grad = grad.copy(), torch.from_numpy(grad.copy())
    clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad, q.grad.numpy())

"""Robustness of the kernels: threads, saturation, long sequences, impossible sizes."""

import os
import select
import threading
import warnings

import numpy as np
import pytest

import fusedrnn
from fusedrnn import functional
from rnn_cases import CELLS, backward, forward, make_cotangents, make_problem


@pytest.mark.parametrize("cell", CELLS)
def test_saturating_inputs_give_finite_outputs_and_gradients(rng, cell):
    problem = make_problem(rng, cell, 6, 3, 4, 5, np.float32)
    problem["x"] = (rng.choice([-1, 1], problem["x"].shape) * 10.0 ** rng.uniform(0, 4, problem["x"].shape)).astype(np.float32)
    y, final_states, saved = forward(functional, cell, problem)
    dy, d_final = make_cotangents(rng, y, final_states)
    dx, d_states, d_weights = backward(functional, cell, dy, d_final, saved)
    for array in [y, *final_states, dx, *d_states, *(w for w in d_weights if w is not None)]:
        assert np.all(np.isfinite(array))


def test_nan_in_the_input_propagates_without_crashing(rng):
    problem = make_problem(rng, "lstm", 4, 3, 5, 6)
    problem["x"][1, 0, 2] = np.nan
    y, (h_n, c_n), _ = forward(functional, "lstm", problem)
    assert np.all(np.isnan(y[1:, 0])) and np.all(np.isfinite(y[:, 1:]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_ten_thousand_steps_run_stably_in_float32(rng, cell):
    problem = make_problem(rng, cell, 10_000, 2, 3, 8, np.float32)
    y, final_states, saved = forward(functional, cell, problem)
    dy, d_final = make_cotangents(rng, y, final_states)
    dx, d_states, d_weights = backward(functional, cell, dy, d_final, saved)
    for array in [y, *final_states, dx, *d_states, *d_weights]:
        assert np.all(np.isfinite(array))
    assert np.abs(y).max() <= 1.0 + 1e-6   # tanh-bounded outputs stay bounded


def test_threads_running_layers_at_once_match_running_them_in_turn(rng):
    """The kernels release the GIL and keep no shared mutable scratch: concurrent calls from
    several Python threads give exactly the sequential results."""
    problems = [(cell, make_problem(rng, cell, 20, 9, 7, 33, np.float32)) for cell in CELLS * 2]
    cotangents = {}

    def run(index):
        cell, problem = problems[index]
        y, final_states, saved = forward(functional, cell, problem)
        if index not in cotangents:
            cotangents[index] = make_cotangents(np.random.default_rng(index), y, final_states)
        dx, d_states, d_weights = backward(functional, cell, *cotangents[index], saved)
        return [y, *final_states, dx, *d_states, *d_weights]

    expected = [run(i) for i in range(len(problems))]
    results = [None] * len(problems)

    def worker(i):
        for _ in range(3):
            results[i] = run(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            assert (a is None and b is None) or np.array_equal(a, b)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_process_forked_after_a_team_ran_runs_its_own_teams(rng):
    """GNU OpenMP's worker threads do not survive fork: without cpu/openmp_fork.h's handler, a
    child forked after a team of two had run waited forever in its first team (a multiprocessing
    worker's first layer). The child must finish, on two threads, with the parent's results."""
    from fusedrnn import _core
    T, B, I, H = 5, 8, 16, 64
    problem = make_problem(rng, "lstm", T, B, I, H, np.float32)
    original = fusedrnn.get_num_threads()
    fusedrnn.set_num_threads(2)
    try:
        assert _core._forward_team("lstm", B, H)[0] == 2  # (the parent's call runs a team of two)
        y, final_states, saved = forward(functional, "lstm", problem)
        dy, d_final = make_cotangents(rng, y, final_states)
        dx, _, d_weights = backward(functional, "lstm", dy, d_final, saved)
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # (Python 3.12+: fork of a threaded process)
            pid = os.fork()
        if pid == 0:  # the child: the same layer, on a team of two, then its verdict
            try:
                child_y, child_states, child_saved = forward(functional, "lstm", problem)
                child_dx, _, child_weights = backward(functional, "lstm", dy, d_final, child_saved)
                same = all(np.array_equal(a, b) for a, b in zip([child_y, child_dx, *child_weights], [y, dx, *d_weights]))
                os.write(write, b"same" if same else b"different")
            finally:
                os._exit(0)
        os.close(write)
        ready, _, _ = select.select([read], [], [], 60)
        verdict = os.read(read, 16) if ready else b""
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read)
        assert verdict == b"same", "the forked child hung" if not ready else verdict
    finally:
        fusedrnn.set_num_threads(original)


@pytest.mark.parametrize("extra_threads", [0, 1], ids=["as_many_threads_as_cpus", "one_more_than_cpus"])
def test_teams_of_several_threads_from_several_python_threads_match_one_call_at_a_time(rng, extra_threads):
    """Layers big enough to run a team of several kernel threads, one barrier per step, started
    from several Python threads at once: each team's barrier waits for its own threads only, and
    the results are bitwise those of calls made one at a time. With as many kernel threads as CPUs
    a call alone spins at its barriers; teams running at once, or one more thread than CPUs, hold
    more threads than there are CPUs, and their barriers yield the core instead."""
    threads_per_team = (os.cpu_count() or 1) + extra_threads
    problems = [(cell, make_problem(rng, cell, 30, 16, 24, 96, np.float32)) for cell in CELLS]
    original = fusedrnn.get_num_threads()
    fusedrnn.set_num_threads(max(2, threads_per_team))
    try:
        def run(index):
            cell, problem = problems[index]
            y, final_states, saved = forward(functional, cell, problem)
            cotangents = make_cotangents(np.random.default_rng(index), y, final_states)
            dx, d_states, d_weights = backward(functional, cell, *cotangents, saved)
            return [y, *final_states, dx, *d_states, *d_weights]

        expected = [run(i) for i in range(len(problems))]
        results = [[] for _ in problems]

        def worker(i):
            for _ in range(3):
                results[i].append(run(i))

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(len(problems))]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    finally:
        fusedrnn.set_num_threads(original)
    for got_runs, want in zip(results, expected):
        assert len(got_runs) == 3
        for got in got_runs:
            for a, b in zip(got, want):
                assert (a is None and b is None) or np.array_equal(a, b)


def test_sizes_beyond_memory_raise_memory_error_before_allocating(rng):
    # Small inputs, but outputs of T*B*H = 2^33 floats per array: more than any test machine has.
    x = np.zeros((2 ** 20, 1, 1), np.float32)
    H = 2 ** 13
    w_ih, w_hh = np.zeros((H, 1), np.float32), np.zeros((H, H), np.float32)
    with pytest.raises(MemoryError):
        functional.rnn_forward(x, None, w_ih, w_hh)


def test_clip_grad_norm_tames_an_exploding_gradient(rng):
    """An RNN with large recurrent weights blows its gradient up over 30 steps; clipping brings
    the total norm down to max_norm and keeps its direction."""
    import fusedrnn
    from fusedrnn import nn
    from fusedrnn.nn.utils import clip_grad_norm_
    fusedrnn.manual_seed(0)
    layer = nn.RNN(3, 16, nonlinearity="relu", dtype=np.float64)
    layer.weight_hh_l0.data = 1.5 * np.eye(16) + 0.1 * rng.standard_normal((16, 16))
    y, _ = layer(rng.standard_normal((30, 4, 3)))
    layer.backward(np.ones_like(y))
    grads = [p.grad.copy() for p in layer.parameters()]
    norm = np.sqrt(sum(np.sum(g * g) for g in grads))
    assert norm > 1e4   # it did explode
    returned = clip_grad_norm_(layer.parameters(), max_norm=1.0)
    assert returned == pytest.approx(norm)
    clipped = np.sqrt(sum(np.sum(p.grad * p.grad) for p in layer.parameters()))
    assert clipped == pytest.approx(1.0, rel=1e-6)
    for p, g in zip(layer.parameters(), grads):
        np.testing.assert_allclose(p.grad, g / norm, rtol=1e-6, atol=1e-12)

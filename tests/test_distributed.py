"""fusedrnn.distributed: data-parallel training over MPI.

The job tests launch 2 and 3 processes on this machine with ``mpiexec`` (shared memory, no
network) running tests/distributed_worker.py, and compare what every rank ends with against each
other (bitwise: every rank applies the same averaged gradients) and against one process training
on the whole of each batch (to float32 rounding, float64 to 1e-12).
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fusedrnn
import fusedrnn.distributed as dist
from fusedrnn import nn

import distributed_worker as worker

WORKER = pathlib.Path(worker.__file__)


def find_mpiexec():
    beside_python = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


def launch(processes, *args, script=WORKER, timeout=240):
    pytest.importorskip("mpi4py")
    mpiexec = find_mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install mpich)")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(WORKER.parent)] + [p for p in sys.path if p]))
    return subprocess.run([mpiexec, "-n", str(processes), sys.executable, str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def rank_results(out_dir, scenario, processes):
    results = [dict(np.load(out_dir / f"{scenario}_rank{r}.npz")) for r in range(processes)]
    for rank, result in enumerate(results[1:], start=1):
        assert result.keys() == results[0].keys()
        for name in results[0]:
            assert np.array_equal(result[name], results[0][name]), f"rank {rank} differs from rank 0 in {name}"
    return results[0]


# conftest.py's `threads` fixture, at one value.
single_thread = pytest.mark.parametrize("threads", [1], indirect=True)


@single_thread
@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("overlap", [False, True], ids=["after_backward", "overlapped"])
def test_nn_training_matches_one_process(tmp_path, processes, overlap, threads):
    run = launch(processes, "nn", tmp_path, *(["--overlap"] if overlap else []))
    assert run.returncode == 0, run.stderr[-3000:]
    result = rank_results(tmp_path, "nn", processes)
    for dtype, tag, tolerance in ((np.float32, "f32", dict(rtol=2e-5, atol=2e-6)),
                                  (np.float64, "f64", dict(rtol=1e-12, atol=1e-13))):
        expected = worker.train_nn(dtype)
        untrained = dict(worker.Regressor(dtype).named_parameters())
        for name, value in expected.items():
            assert result[f"{tag}_{name}"].dtype == dtype
            np.testing.assert_allclose(result[f"{tag}_{name}"], value, err_msg=name, **tolerance)
            assert not np.allclose(value, untrained[name].data), f"{name} did not train"


@single_thread
@pytest.mark.parametrize("processes", [2, 3])
def test_keras_fit_matches_one_process(tmp_path, processes, threads):
    run = launch(processes, "keras", tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = rank_results(tmp_path, "keras", processes)
    # Per-process batch 4 on n processes is one process's batch 4n: same samples, same steps.
    expected = worker.train_keras(batch_size=4 * processes, distributed=False)
    assert result.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(result[name], value, rtol=2e-5, atol=2e-6, err_msg=name)
    # Only rank 0 prints and saves.
    assert run.stdout.count("Epoch 1/3") == 1, run.stdout
    assert (tmp_path / "checkpoint_rank0.npz").exists()
    assert not any((tmp_path / f"checkpoint_rank{r}.npz").exists() for r in range(1, processes))


def test_a_failing_rank_ends_the_job(tmp_path):
    run = launch(2, "fail", tmp_path, timeout=120)   # a hang would time out and fail the test
    assert run.returncode != 0
    assert "a failure on rank 1" in run.stderr


def test_char_rnn_example_runs_on_two_processes(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 200)
    script = WORKER.parent.parent / "examples" / "char_rnn.py"
    run = launch(2, text, "--distributed", "--steps", "6", "--batch", "4", "--seq-len", "16", "--hidden", "32",
                 "--embed", "8", "--print-every", "2", "--sample-len", "20", script=script)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es)" in run.stdout
    assert run.stdout.count("trained 6 steps") == 1   # rank 0 alone reports
    assert "sample" in run.stdout


# -- in this process: a job of one --------------------------------------------------------------
@pytest.fixture
def job_of_one():
    pytest.importorskip("mpi4py")
    dist.init()
    assert dist.world_size() == 1 and dist.rank() == 0


def small_model():
    model = nn.Sequential(nn.Linear(3, 5, rng=0), nn.Linear(5, 2, rng=1))
    x = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    model.backward(np.ones_like(model(x)))
    return model


def assert_all_close(actual, expected, rtol=0.0):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=0)


def test_job_of_one_keeps_gradients(job_of_one):
    model = small_model()
    before = [p.grad.copy() for p in model.parameters()]
    dist.allreduce_gradients(model)
    assert_all_close([p.grad for p in model.parameters()], before)
    dist.allreduce_gradients(model, weight=7)
    assert_all_close([p.grad for p in model.parameters()], before, rtol=1e-6)


def test_the_reducer_is_kept_while_the_parameters_stay(job_of_one):
    model = small_model()
    dist.allreduce_gradients(model)
    kept = dist._last_reducer[1]
    dist.allreduce_gradients(model)
    assert dist._last_reducer[1] is kept
    next(model.parameters()).requires_grad = False   # another set of trainable parameters
    dist.allreduce_gradients(model)
    assert dist._last_reducer[1] is not kept
    assert dist._last_reducer[1].bucket_count == 1


def test_missing_gradients_stay_missing(job_of_one):
    model = small_model()
    first = next(model.parameters())
    first.grad = None
    dist.allreduce_gradients(model, bucket_bytes=16)
    assert first.grad is None
    assert all(p.grad is not None for p in list(model.parameters())[1:])


def test_buckets_split_by_size(job_of_one):
    model = small_model()   # 15 + 5 + 10 + 2 float32 values
    assert dist.GradientReducer(model).bucket_count == 1
    assert dist.GradientReducer(model, bucket_bytes=4).bucket_count == 4
    assert dist.GradientReducer(model, bucket_bytes=48).bucket_count == 3


def test_allreduce_ops(job_of_one):
    assert dist.allreduce(3, "mean") == 3.0
    np.testing.assert_array_equal(dist.allreduce(np.array([1, -2]), "sum"), [1.0, -2.0])
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="op"):
        dist.allreduce(1, "product")
    with pytest.raises(TypeError):
        dist.allreduce(np.array(["a"]))


def test_broadcast_parameters_of_one(job_of_one):
    model = small_model()
    before = [p.data.copy() for p in model.parameters()]
    dist.broadcast_parameters(model)
    assert_all_close([p.data for p in model.parameters()], before)
    with pytest.raises(ValueError, match="root"):
        dist.broadcast_parameters(model, root=1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_bucket_sizes(job_of_one, bad):
    with pytest.raises(ValueError, match="bucket_bytes"):
        dist.GradientReducer(small_model(), bucket_bytes=bad)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_bad_weights(job_of_one, bad):
    with pytest.raises(ValueError, match="weight"):
        dist.allreduce_gradients(small_model(), weight=bad)


def test_bad_models(job_of_one):
    with pytest.raises(TypeError):
        dist.allreduce_gradients(42)
    with pytest.raises(TypeError):
        dist.broadcast_parameters([np.zeros(3)])


def test_without_mpi4py(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(dist, "_comm", None)
    with pytest.raises(ImportError, match=r"pip install fusedrnn\[mpi\]"):
        dist.init()
    with pytest.raises(RuntimeError, match="init"):
        dist.rank()


# -- sharding ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 7, 12])
@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_shards_cover_the_data(size, replicas, drop_last):
    samplers = [dist.DistributedSampler(size, replicas, rank, seed=3, drop_last=drop_last) for rank in range(replicas)]
    shards = [s.indices() for s in samplers]
    lengths = {len(shard) for shard in shards}
    assert lengths == {len(samplers[0])}
    together = np.concatenate(shards)
    assert np.all((0 <= together) & (together < max(size, 1)))
    if drop_last:
        assert len(together) == size // replicas * replicas
        assert len(set(together.tolist())) == len(together)   # nothing twice
    else:
        assert set(together.tolist()) == set(range(size))      # everything, padded by repeats
        assert len(together) == -(-size // replicas) * replicas


def test_sampler_epochs_shuffle_alike_on_every_rank():
    first = [dist.DistributedSampler(range(20), 2, rank, seed=1) for rank in range(2)]
    again = [dist.DistributedSampler(20, 2, rank, seed=1) for rank in range(2)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.indices(), b.indices())
    epoch0 = first[0].indices()
    first[0].set_epoch(1)
    assert not np.array_equal(first[0].indices(), epoch0)
    assert list(dist.DistributedSampler(6, 2, 1, shuffle=False)) == [1, 3, 5]


@pytest.mark.parametrize("kwargs, error", [
    (dict(dataset=-1, num_replicas=2, rank=0), ValueError),
    (dict(dataset=4, num_replicas=0, rank=0), ValueError),
    (dict(dataset=4, num_replicas=2, rank=2), ValueError),
    (dict(dataset=4, num_replicas=2, rank=-1), ValueError),
    (dict(dataset=object(), num_replicas=2, rank=0), TypeError),
])
def test_sampler_bad_arguments(kwargs, error):
    with pytest.raises(error):
        dist.DistributedSampler(**kwargs)

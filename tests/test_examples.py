"""The examples run end to end (a few steps each, on small inputs)."""

import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args):
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_char_rnn_trains_and_samples(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 200)
    for cell in ("lstm", "gru", "rnn"):
        out = run_example("char_rnn.py", str(text), "--cell", cell, "--steps", "4", "--batch", "4",
                          "--seq-len", "16", "--hidden", "32", "--embed", "8", "--print-every", "2",
                          "--sample-len", "20")
        assert "held-out loss" in out and "sample" in out


def test_torch_char_rnn_is_the_same_program_on_fusedrnn(tmp_path):
    """The PyTorch example with --fusedrnn (one changed line) trains like torch.nn from the same seed."""
    import re

    import pytest
    pytest.importorskip("torch")
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 200)
    for cell in ("lstm", "gru", "rnn"):
        losses = []
        for flag in ((), ("--fusedrnn",)):
            out = run_example("torch_char_rnn.py", str(text), "--cell", cell, "--steps", "4", "--batch", "4",
                              "--seq-len", "16", "--hidden", "32", "--embed", "8", "--print-every", "2",
                              "--sample-len", "20", *flag)
            assert "sample:" in out
            losses.append([float(v) for v in re.findall(r"loss (\d+\.\d+)", out)])
        assert len(losses[0]) == 3 and len(losses[1]) == 3
        # float32, different summation orders in the products: equal to well within 1e-3 nats
        assert max(abs(a - b) for a, b in zip(*losses)) < 1e-3, (cell, losses)


def test_keras3_examples_train():
    """The real-Keras examples with fusedrnn.keras3.enable(), one short epoch each: the sine
    regression (SimpleRNN) on the torch backend, the text classifier (Embedding with mask_zero,
    LSTM) on JAX. (tests/test_keras3.py compares every layer with Keras's on both.)"""
    import importlib.util
    import os

    import pytest
    runs = (("torch", "keras3_sine_regression.py", ["--steps", "12", "--units", "8"]),
            ("jax", "keras3_text_classification.py", ["--max-words", "12", "--units", "8"]))
    ran = 0
    for backend, name, args in runs:
        if not (importlib.util.find_spec("keras") and importlib.util.find_spec(backend)):
            continue
        env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS="1")   # tiny sizes: one thread is plenty
        result = subprocess.run([sys.executable, str(EXAMPLES / name), "--epochs", "1", "--train", "256",
                                 "--test", "64", *args], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, (backend, name, result.stderr[-2000:])
        assert f"{backend} backend, fusedrnn kernels" in result.stdout and "test " in result.stdout
        ran += 1
    if not ran:
        pytest.skip("Keras 3 with torch or JAX is not installed")

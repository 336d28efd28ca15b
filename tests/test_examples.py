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

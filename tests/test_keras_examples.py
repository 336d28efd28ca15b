"""The fusedrnn.keras examples run end to end (a few epochs each) and report their metric."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_example(name, tmp_path, *args):
    plot = tmp_path / "plot.png"
    result = subprocess.run([sys.executable, str(EXAMPLES / name), "--plot", str(plot), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    if HAVE_MATPLOTLIB:
        assert plot.exists() and "plot saved" in result.stdout
    else:
        assert "matplotlib is not installed" in result.stdout
    return result.stdout


def test_sine_regression(tmp_path):
    out = run_example("sine_regression.py", tmp_path, "--epochs", "2", "--samples", "200", "--steps", "20")
    assert "test MSE" in out and "Epoch 2/2" in out


def test_sequence_classification(tmp_path):
    pytest.importorskip("sklearn")
    out = run_example("sequence_classification.py", tmp_path, "--epochs", "2", "--units", "16")
    assert "test accuracy" in out


def test_forecast(tmp_path):
    pytest.importorskip("statsmodels")
    out = run_example("forecast.py", tmp_path, "--epochs", "2")
    assert "test MAE: GRU" in out and "naive last value" in out

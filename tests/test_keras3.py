"""fusedrnn.keras3 on each Keras backend: tests/keras3_cases.py run once per backend.

Keras reads KERAS_BACKEND once per process, so each backend's run is a pytest of its own in a
subprocess; a failure shows that run's report. A backend whose framework is not installed skips.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

CASES = pathlib.Path(__file__).resolve().parent / "keras3_cases.py"


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_keras3_layers_on_backend(backend):
    for module in ("keras", backend):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run([sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider",
                             "-W", "ignore::DeprecationWarning"],
                            capture_output=True, text=True, env=env, cwd=CASES.parent, timeout=900)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, f"keras3_cases.py on the {backend} backend:\n{report}"
    assert " passed" in result.stdout

"""One-shot check of the CUDA backend on a machine with a GPU: build, test, time against cuDNN.

    python bench/gpu_check.py [--out DIR] [--skip-build] [--budget SECONDS]

1. Builds fusedrnn with the CUDA backend for the GPU that is there (CMake, CMAKE_CUDA_ARCHITECTURES
   =native, into build/gpu-check; the modules are copied into python/fusedrnn and imported from
   there), unless --skip-build or a CUDA-enabled fusedrnn is already importable.
2. Runs the CUDA tests (every test named for CUDA: tests/test_cuda*.py at full sizes,
   FUSEDRNN_CUDA_TEST_SIZE=full, against the CPU kernels; PyTorch's CUDA tensors; device layers).
3. Times fusedrnn against PyTorch's cuDNN RNNs on the same GPU with CUDA events (when PyTorch with
   CUDA is installed; else fusedrnn alone, by wall clock around its synchronising calls):
   cells rnn_tanh, lstm, gru x {inference, training} x B in {1, 8, 64, 256} x H in {256, 512,
   1024}, T = 100, I = H, float32. Training is a forward that saves state plus the backward of a
   random dy. Each time is the median of several runs after a warm-up.
Writes gpu_check.md (the table, the machine, the test summary) into --out (default: $OUT if set,
else bench/) and prints it. Configurations left when --budget runs out (default 420 s, within the
8 minutes a lent machine gives one call) are listed as not run.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELLS = ("rnn_tanh", "lstm", "gru")
TORCH_MODULES = {"rnn_tanh": "RNN", "lstm": "LSTM", "gru": "GRU"}
BATCHES = (1, 8, 64, 256)
HIDDEN = (256, 512, 1024)
STEPS = 100


def log(message):
    print(message, flush=True)


def gpu_architecture():
    """The first GPU's compute capability as CMake writes it (e.g. 90), from nvidia-smi; else
    "native" (CMake asks the driver)."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30)
        value = result.stdout.split()[0].replace(".", "")
        return value if value.isdigit() else "native"
    except (OSError, IndexError, subprocess.SubprocessError):
        return "native"


def build():
    """Configures and builds with the CUDA backend; returns the build log's tail on failure."""
    try:
        import pybind11
    except ImportError:
        raise SystemExit("the build needs the pybind11 Python package (pip install pybind11), or pass --skip-build "
                         "with a CUDA-enabled fusedrnn importable") from None

    build_dir = os.path.join(ROOT, "build", "gpu-check")
    configure = ["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release", "-DSKBUILD_PROJECT_VERSION=0.1.0",
                 f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", "-DFUSEDRNN_CUDA=ON",
                 f"-DCMAKE_CUDA_ARCHITECTURES={os.environ.get('CUDAARCHS') or gpu_architecture()}",
                 f"-DPython_EXECUTABLE={sys.executable}"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    started = time.time()
    for command in (configure, ["cmake", "--build", build_dir, "--parallel", str(os.cpu_count() or 4)]):
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"build failed: {' '.join(command)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    for name in os.listdir(build_dir):
        if name.startswith(("_core", "_cuda")) and name.endswith(".so"):
            shutil.copy2(os.path.join(build_dir, name), os.path.join(ROOT, "python", "fusedrnn", name))
    log(f"built in {time.time() - started:.0f} s")


def run_tests():
    env = dict(os.environ, FUSEDRNN_CUDA_TEST_SIZE="full", PYTHONPATH=os.path.join(ROOT, "python"))
    started = time.time()
    # Every CUDA test: tests/test_cuda*.py, and those of the other files named for CUDA (PyTorch's
    # CUDA tensors on the backend, fusedrnn.nn layers on the device).
    result = subprocess.run([sys.executable, "-m", "pytest", "tests", "-k", "cuda", "-q", "-p", "no:cacheprovider"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    log(f"tests ({time.time() - started:.0f} s): {summary}")
    if result.returncode != 0:
        log(result.stdout[-6000:])
    return summary, result.returncode == 0


class Timer:
    """CUDA events when PyTorch has CUDA (they see fusedrnn's kernels too: both use the legacy
    default stream), else the wall clock around fusedrnn's calls, which end synchronised."""

    def __init__(self, torch):
        self.torch = torch

    def median_ms(self, fn, repeats):
        fn()  # warm-up: workspaces, cuDNN plans
        times = []
        for _ in range(repeats):
            if self.torch is not None:
                start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                started = time.perf_counter()
                fn()
                times.append((time.perf_counter() - started) * 1e3)
        times.sort()
        return times[len(times) // 2]


def fusedrnn_case(cell, training, B, H, rng):
    import numpy as np

    import fusedrnn.cuda as cuda
    from fusedrnn import functional as F

    G = F.CELLS[cell].gates
    bound = 1 / np.sqrt(H)
    x = cuda.to_device(rng.standard_normal((STEPS, B, H), dtype=np.float32))
    weights = {name: cuda.to_device(rng.uniform(-bound, bound, shape).astype(np.float32))
               for name, shape in (("weight_ih", (G * H, H)), ("weight_hh", (G * H, H)), ("bias_ih", (G * H,)),
                                   ("bias_hh", (G * H,)))}
    dy = cuda.to_device(rng.standard_normal((STEPS, B, H), dtype=np.float32))

    def run():
        _, _, _, saved = F.recurrent_forward(cell, x, None, None, weights, training=training)
        if training:
            F.recurrent_backward(dy, None, None, saved)
    return run


def cudnn_case(torch, cell, training, B, H):
    module = getattr(torch.nn, TORCH_MODULES[cell])(H, H).cuda()
    x = torch.randn(STEPS, B, H, device="cuda", requires_grad=training)
    dy = torch.randn(STEPS, B, H, device="cuda")

    def run():
        if training:
            module(x)[0].backward(dy)
        else:
            with torch.no_grad():
                module(x)
    return run


def int_list(text):
    return tuple(int(v) for v in text.split(","))


def repeats_for(B, H):
    return 3 if B * H >= 64 * 1024 else 5


def main():
    global STEPS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "bench"))
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole check")
    # For a smoke run of this script itself (e.g. in the CUDA emulator): smaller sizes, no tests.
    parser.add_argument("--batch", type=int_list, default=BATCHES)
    parser.add_argument("--hidden", type=int_list, default=HIDDEN)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--skip-tests", action="store_true")
    options = parser.parse_args()
    STEPS = options.steps
    started = time.time()
    sys.path.insert(0, os.path.join(ROOT, "python"))

    if not options.skip_build:
        build()
    import numpy as np

    import fusedrnn.cuda as cuda
    if not cuda.is_available():
        raise SystemExit(f"no usable CUDA backend: {cuda.build_info()}")
    info = cuda.build_info()
    log(f"fusedrnn.cuda: {info}")
    test_summary, tests_passed = ("not run (--skip-tests)", True) if options.skip_tests else run_tests()

    try:
        import torch
        if not torch.cuda.is_available():
            torch = None
    except ImportError:
        torch = None
    timer = Timer(torch)
    rng = np.random.default_rng(0)
    rows, skipped = [], []
    for cell in CELLS:
        for training in (False, True):
            for B in options.batch:
                for H in options.hidden:
                    label = (cell, "training" if training else "inference", B, H)
                    if time.time() - started > options.budget:
                        skipped.append(label)
                        continue
                    ours = timer.median_ms(fusedrnn_case(cell, training, B, H, rng), repeats_for(B, H))
                    theirs = None
                    if torch is not None:
                        theirs = timer.median_ms(cudnn_case(torch, cell, training, B, H), repeats_for(B, H))
                    rows.append(label + (ours, theirs))
                    log(f"{label}: fusedrnn {ours:.3f} ms" + (f", cuDNN {theirs:.3f} ms" if theirs else ""))
                    cuda.release_workspaces()

    device = info["devices"][0] if info["devices"] else {}
    lines = ["# fusedrnn CUDA backend on a GPU", "",
             f"- device: {device.get('name')} (compute capability {device.get('compute_capability')}), "
             f"architectures built: {info['architectures']}, nvcc {info['nvcc']}, runtime {info['runtime_version']}, "
             f"driver {info['driver_version']}",
             "- PyTorch: " + (f"{torch.__version__}, cuDNN {torch.backends.cudnn.version()}" if torch else "not available"),
             f"- Python {platform.python_version()}, {platform.platform()}",
             f"- GEMM: {info.get('gemm', {}).get('runs')}",
             f"- the CUDA tests (tests -k cuda, full sizes): {test_summary}",
             f"- timing: {'CUDA events' if torch else 'wall clock'}, median of 3-5 runs after a warm-up; "
             f"T = {STEPS}, I = H, float32, loop form 'auto' ({cuda.get_algorithm()})", "",
             "| cell | mode | B | H | fusedrnn ms | cuDNN ms | cuDNN / fusedrnn |", "|---|---|---|---|---|---|---|"]
    for cell, mode, B, H, ours, theirs in rows:
        ratio = f"{theirs / ours:.2f}" if theirs else "-"
        lines.append(f"| {cell} | {mode} | {B} | {H} | {ours:.3f} | {theirs:.3f} | {ratio} |" if theirs else
                     f"| {cell} | {mode} | {B} | {H} | {ours:.3f} | - | - |")
    if skipped:
        lines += ["", f"Not run (time budget of {options.budget:.0f} s spent): " +
                  ", ".join(f"{c} {m} B={b} H={h}" for c, m, b, h in skipped)]
    lines += ["", f"Total {time.time() - started:.0f} s."]
    text = "\n".join(lines) + "\n"
    os.makedirs(options.out, exist_ok=True)
    with open(os.path.join(options.out, "gpu_check.md"), "w") as f:
        f.write(text)
    log(text)
    return 0 if tests_passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the saved-state check costs: a training step with and without the input fingerprints.

A training forward fingerprints the inputs its backward reads again (x and the weights), and the
backward fingerprints them once more (fusedrnn.functional, "Saved state cannot go stale"). This
times a whole training step (forward that saves, backward with a random cotangent) with
``check_unchanged=True`` (the default) and ``False``, interleaved call by call in one process,
and prints the medians and the difference as a fraction of the step.

    python bench/staleness.py                       # LSTM, B=64, I=H=256, T=100
    python bench/staleness.py --cell gru --batch 1 --hidden 512
"""

import argparse
import platform
import statistics
import time

import numpy as np

import fusedrnn
from fusedrnn import functional as F


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=list(F.CELLS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--calls", type=int, default=60, help="timed calls of each kind")
    args = parser.parse_args()

    T, B, H = args.steps, args.batch, args.hidden
    info = F.CELLS[args.cell]
    rng = np.random.default_rng(0)
    scale = 1 / np.sqrt(H)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    weights = {name: rng.uniform(-scale, scale, shape).astype(np.float32)
               for name, shape in (("weight_ih", (info.gates * H, H)), ("weight_hh", (info.gates * H, H)),
                                   ("bias_ih", (info.gates * H,)), ("bias_hh", (info.gates * H,)))}
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    c0 = np.zeros((B, H), np.float32) if info.has_cell_state else None

    def step(check):
        *_, saved = F.recurrent_forward(args.cell, x, None, c0, weights, check_unchanged=check)
        F.recurrent_backward(dy, None, None, saved)

    times = {True: [], False: []}
    for _ in range(5):  # warm up both
        step(True)
        step(False)
    for _ in range(args.calls):
        for check in (True, False):
            start = time.perf_counter()
            step(check)
            times[check].append(time.perf_counter() - start)
    checked, unchecked = (statistics.median(times[c]) * 1e3 for c in (True, False))
    fingerprint_bytes = x.nbytes + sum(w.nbytes for w in weights.values())
    start = time.perf_counter()
    for _ in range(20):
        for array in (x, *weights.values()):
            fusedrnn._core.fingerprint(array)
    alone = (time.perf_counter() - start) / 20 * 2 * 1e3  # taken twice a step
    print(f"{cpu_model()}, {fusedrnn.get_num_threads()} threads | {args.cell} T={T} B={B} I=H={H} training step")
    print(f"  with the check {checked:.2f} ms, without {unchecked:.2f} ms (medians of {args.calls}): "
          f"{checked - unchecked:+.2f} ms = {100 * (checked - unchecked) / unchecked:+.1f}% of the step")
    print(f"  the fingerprints alone: {alone:.2f} ms a step ({fingerprint_bytes / 2**20:.1f} MiB read twice) = "
          f"{100 * alone / unchecked:.1f}% of the step")


if __name__ == "__main__":
    main()

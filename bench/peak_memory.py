"""Peak resident memory of one training step of one contender; run by run.py in a fresh process.

    python bench/peak_memory.py {fusedrnn|torch} CELL T B H THREADS

A fresh process per contender, so that neither's allocator caches or libraries count against the
other. The libraries are warmed up on a tiny problem first (thread pools, JIT code, lazy
initialisation are not the step's memory), the inputs and weights are created, and the peak is
reset to the current resident size; then one training step runs (forward that saves, backward,
the gradients kept until it ends). step_mb = peak during the step - resident size before it.
Prints one JSON line.
"""

import gc
import json
import resource
import sys

import run  # the same problems and contenders as the timed suite


def status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def main():
    name, cell = sys.argv[1], sys.argv[2]
    T, B, H, threads = map(int, sys.argv[3:7])
    run.set_threads(threads)

    def step(T, B, H):
        contenders = run.contenders_for(cell, run.make_problem(cell, T, B, H, H), reference=False)
        return contenders[name][1]

    step(3, 2, 8)()
    train = step(T, B, H)
    gc.collect()
    try:
        # Writing 5 to clear_refs resets the peak (VmHWM) to the current resident size (Linux >= 4.0).
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM after clear_refs"
        before = status_kb("VmRSS")
        train()
        peak = status_kb("VmHWM")
    except OSError:
        # Without it the baseline is the high-water mark so far, which may hide part of the step.
        method = "ru_maxrss"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        train()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"step_mb": (peak - before) / 1024, "baseline_mb": before / 1024,
                      "peak_mb": peak / 1024, "method": method}))


if __name__ == "__main__":
    main()

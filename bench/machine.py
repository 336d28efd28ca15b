"""Which CPU a benchmark ran on, and where its results are kept.

Results are only comparable within one CPU model (the machines change from one run to the next),
so every benchmark script that saves its results writes them under bench/results/<cpu key>/, and
bench/report.py renders one section of bench/RESULTS.md per CPU. It also holds the speed probes
the timing scripts share.
"""

import math
import os
import platform
import re

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def cpu_model():
    """'<model name> (family F, model M)' from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict((k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in f if ":" in line))
        return f"{fields['model name']} (family {fields['cpu family']}, model {fields['model']})"
    except (OSError, KeyError):
        return platform.processor() or platform.machine() or "unknown CPU"


def cpu_key(model=None):
    """A folder name for the CPU: its model in lower case, runs of other characters as '-'."""
    return re.sub(r"[^a-z0-9]+", "-", (model or cpu_model()).lower()).strip("-")


def results_path(name, model=None):
    """bench/results/<cpu key>/<name>.json, its folder created."""
    folder = os.path.join(RESULTS, cpu_key(model))
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name + ".json")


# The FMA loop timed among the contenders: 2e6 iterations, about 4 ms with 2 threads at 200 GFLOP/s.
PROBE_ITERATIONS = 2_000_000
# A measurement during which that loop ran below SLOWED times the run's start peak was taken while
# something outside this machine's process list held a core (a run.py run once timed eight rows
# with the probe at 102 GFLOP/s of 200 while /proc/stat showed no other process): it is retried.
SLOWED = 0.75
# The cross-core probe timed among the contenders (with two threads or more): 2,000 round trips
# between the team's two threads, 0.1 ms at 30 ns a way, 0.6 ms at 160. A row whose probe answered
# more than FAR times slower than the run's near latency was measured while the host kept this
# process's CPUs further apart: at such moments (Zen 4, B = 64, 2 threads) the same calls took up
# to 1.6x longer, and so did two independent one-thread calls run at once.
CROSS_CORE_ROUNDS = 2000
FAR = 2.0


def cross_core_ns():
    """One cross-core probe (ns), or None where the kernels' team has one thread."""
    from fusedrnn import _core
    ns = _core.cross_core_latency_ns(CROSS_CORE_ROUNDS)
    return ns if math.isfinite(ns) else None

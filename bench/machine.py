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
import time

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


# A measurement whose cross-core probe answered displaced from the run's near latency (more than
# FAR times it: the CPUs further apart; less than 1/FAR of it: one core's two hardware threads,
# where the FMA loop runs at half speed) is taken again after this pause, twice at most.
DISPLACED_PAUSE_S = 3


class NearLatency:
    """The cross-core latency (ns) of the run's undisturbed moments, the reference a displaced
    moment is told from. Taken at the start from a few probes while the FMA loop scaled with the
    threads (one core's two hardware threads answer sooner, with the loop at half speed, and would
    make every later moment look displaced: scaled_probe); lowered during the run by a nearer such
    probe (the start may have been a far moment). ns is None with one thread."""

    def __init__(self, threads, known=None, tries=5):
        self.threads = threads
        self.ns = known  # (one taken by a parent process: no probes then)
        if known or cross_core_ns() is None:
            return
        for _ in range(tries):
            ns = self.scaled_probe()
            if ns is not None and (self.ns is None or ns < self.ns):
                self.ns = ns

    def scaled(self):
        from fusedrnn import _core
        return _core.fma_peak_gflops(self.threads) >= 0.75 * self.threads * _core.fma_peak_gflops(1)

    def scaled_probe(self):
        """A probe taken between two runs of the FMA loop that both scaled with the threads, or None.
        The host moves the threads between moments: a probe checked by one run only, after it, once
        answered 14 ns (one core's two hardware threads) and made every later moment look far."""
        if not self.scaled():
            return None
        ns = cross_core_ns()
        return ns if ns is not None and self.scaled() else None

    def displaced(self, ns):
        """Whether a probe's answer (ns) is displaced from the near latency (see DISPLACED_PAUSE_S).
        Below it, a fresh probe between scaling FMA runs that is nearer too becomes the near latency."""
        if ns is None or self.ns is None or ns <= FAR * self.ns and ns >= self.ns / FAR:
            return False
        if ns < self.ns:
            fresh = self.scaled_probe()
            if fresh is not None and fresh < self.ns:
                self.ns = fresh
                return ns > FAR * fresh or ns < fresh / FAR
        return True


def measure_near(measure, near, attempts=3):
    """measure() -> (result, the median cross-core probe of its moments); measured again after a
    pause while that probe was displaced from the NearLatency `near`, twice at most (a displaced
    moment slows the contenders unequally). Returns (result, probe, retries)."""
    for attempt in range(attempts):
        result, ns = measure()
        if not near.displaced(ns) or attempt + 1 == attempts:
            return result, ns, attempt
        print(f"  (the cores answered {ns:.0f} ns apart, {near.ns:.0f} usually: measuring again)", flush=True)
        time.sleep(DISPLACED_PAUSE_S)

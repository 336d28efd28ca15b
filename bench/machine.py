"""Which CPU a benchmark ran on, and where its results are kept.

Results are only comparable within one CPU model (the machines change from one run to the next),
so every benchmark script that saves its results writes them under bench/results/<cpu key>/, and
bench/report.py renders one section of bench/RESULTS.md per CPU.
"""

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

"""A generation loop: one step at a time (T=1, B=1), the state carried from call to call, eval mode.

This is how a language model samples text, and the case where per-call work that does not depend
on the input (packing the weights, Python overhead) shows most. For each cell and hidden size it
times `--steps` calls of fusedrnn.nn's layer and of torch.nn's (when installed), interleaved
round by round in this one process with the same thread count, and prints the time per step and
the ratio. I = H.

    python bench/generation.py                         # every cell, H = 256, 512, 1024
    python bench/generation.py --cells gru --hidden 1024 --rounds 5
    python bench/generation.py --save                  # also keep the rows as this CPU's results

Times are only comparable inside one run: the machines are shared and noisy.
"""

import argparse
import datetime
import json
import statistics
import sys
import time

import numpy as np

import fusedrnn
from fusedrnn import _core, nn

import machine  # bench/machine.py

try:
    import torch
except ImportError:  # PyTorch is an optional contender
    torch = None

LAYERS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def ours(cell, H, bf16):
    layer = getattr(nn, LAYERS[cell])(H, H)
    layer.eval()
    layer.bf16_inference = bf16
    x = np.random.default_rng(0).standard_normal((1, 1, H)).astype(np.float32)

    def run(steps):
        state = None
        for _ in range(steps):
            _, state = layer(x, state)
    return run


def theirs(cell, H):
    layer = getattr(torch.nn, LAYERS[cell])(H, H).eval()
    x = torch.randn(1, 1, H)

    def run(steps):
        state = None
        with torch.inference_mode():
            for _ in range(steps):
                _, state = layer(x, state)
    return run


def per_step_us(runs, steps, rounds, threads, peak):
    """{name: (best, median) microseconds per step} of `runs`, timed round by round in turn, so
    that a slow stretch of the machine falls on every contender alike; a slowed round (the FMA
    loop, timed right after it, below machine.SLOWED times the run's start peak) is done again, at
    most `rounds` times in all. Also returns the count of rounds done again.

    Each timed round follows an untimed quarter round of the same contender: right after the other
    library's round, the first steps ran slower (most likely the two libraries' OpenMP runtimes
    handing the two cores over), by up to 40% at H = 256 over a whole round."""
    for run in runs.values():
        run(2)  # warm up: first-call allocations, packing
    times = {name: [] for name in runs}
    redone = 0
    while len(times[next(iter(runs))]) < rounds:
        this = {}
        for name, run in runs.items():
            run(max(1, steps // 4))
            start = time.perf_counter()
            run(steps)
            this[name] = (time.perf_counter() - start) / steps * 1e6
        if redone < rounds and _core.fma_peak_gflops(threads, machine.PROBE_ITERATIONS) < machine.SLOWED * peak:
            redone += 1
            continue
        for name, t in this.items():
            times[name].append(t)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}, redone


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--hidden", default="256,512,1024")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, help="threads for both (default: fusedrnn's)")
    parser.add_argument("--bf16", action="store_true", help="also time fusedrnn with bf16_inference")
    parser.add_argument("--save", action="store_true",
                        help="write the rows as this CPU's results, bench/results/<cpu>/generation.json (see report.py)")
    opts = parser.parse_args(argv)
    threads = opts.threads or _core.max_threads()
    _core.set_max_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    print(f"generation loop: T=1, B=1, {opts.steps} steps a round, best/median of {opts.rounds} rounds, "
          f"{threads} threads, fusedrnn {fusedrnn.__version__} isa={_core.isa_selected()}")
    print(f"{'cell':5} {'H':>5} {'ours us':>9} {'torch us':>9} {'torch/ours':>10}" +
          (f" {'bf16 us':>9} {'f32/bf16':>9}" if opts.bf16 else ""))
    peak = max(_core.fma_peak_gflops(threads) for _ in range(3))
    rows = []
    for cell in opts.cells.split(","):
        for H in (int(h) for h in opts.hidden.split(",")):
            runs = {"ours": ours(cell, H, False)}
            if torch is not None:
                runs["torch"] = theirs(cell, H)
            if opts.bf16 and cell != "gru_reset_before":
                runs["bf16"] = ours(cell, H, True)
            timed, redone = per_step_us(runs, opts.steps, opts.rounds, threads, peak)
            mine = timed["ours"]
            row = dict(cell=cell, H=H, ours_us=mine[0], ours_median_us=mine[1], rounds_redone=redone)
            line = f"{cell:5} {H:5d} {mine[0]:9.1f}"
            if "torch" in timed:
                other = timed["torch"]
                row.update(torch_us=other[0], torch_median_us=other[1])
                line += f" {other[0]:9.1f} {other[0] / mine[0]:10.2f}"
            else:
                line += f" {'-':>9} {'-':>10}"
            if "bf16" in timed:
                half = timed["bf16"]
                row.update(bf16_us=half[0])
                line += f" {half[0]:9.1f} {mine[0] / half[0]:9.2f}"
            rows.append(row)
            print(line + (f"  ({redone} slowed rounds done again)" if redone else ""), flush=True)
    if opts.save:
        result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                      command="python bench/generation.py " + " ".join(sys.argv[1:] if argv is None else argv),
                      cpu=machine.cpu_model(), threads=threads, steps=opts.steps, rounds=opts.rounds,
                      fma_peak_gflops=peak,
                      fusedrnn=fusedrnn.__version__, torch=torch.__version__ if torch is not None else None,
                      rows=rows)
        with open(machine.results_path("generation"), "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

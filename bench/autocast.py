"""torch.nn's recurrent layers against fusedrnn.torch's under torch.autocast (CPU, bfloat16).

Under bfloat16 autocast torch.nn's layers compute their products in bfloat16 (its LSTM through
oneDNN's bfloat16 LSTM); the fused layers' calls without a graph run the kernels' bf16 mode where
the CPU has AVX512-BF16, and their training stays float32. For each cell, batch and hidden size this
times one layer (T = 100, I = H, float32 inputs) in inference (`torch.no_grad()`) and in training
(forward and backward of the sum of the outputs), both contenders under autocast and, for scale,
both without it; the calls of a row are interleaved round by round in this one process with the
same threads. The table gives median times and torch.nn / fused (above 1: fused is faster).

    python bench/autocast.py                       # LSTM, GRU and RNN; B = 1, 64; H = 256, 512
    python bench/autocast.py --cells lstm --batches 64 --hidden 256 --rounds 5
    python bench/autocast.py --save                # also keep the rows as this CPU's results

Times are only comparable inside one run: the machines are shared and noisy.
"""

import argparse
import datetime
import json
import statistics
import sys
import time

import torch

import fusedrnn
import fusedrnn.torch as fused_torch
from fusedrnn import _core

import machine  # bench/machine.py

LAYERS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
T = 100


def contenders(cell, B, H, training):
    """{name: call} for torch.nn's layer and the fused one (same weights), with and without autocast."""
    torch.manual_seed(0)
    theirs = getattr(torch.nn, LAYERS[cell])(H, H)
    ours = fused_torch.nn.convert(getattr(torch.nn, LAYERS[cell])(H, H))
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, H, requires_grad=training)

    def call(layer, autocast):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                if not training:
                    with torch.no_grad():
                        return layer(x)
                y, _ = layer(x)
            y.float().sum().backward()
        return run
    return {f"{who} {'autocast' if autocast else 'float32'}": call(layer, autocast)
            for autocast in (True, False) for who, layer in (("torch.nn", theirs), ("fused", ours))}


def timed(calls, rounds):
    """{name: median seconds} of each call, the calls taken in turn round by round, and the median
    cross-core probe taken after each round (machine.measure_near reads it)."""
    for run in calls.values():
        run()  # warm up: first-call allocations, packing
    times = {name: [] for name in calls}
    probes = []
    for _ in range(rounds):
        for name, run in calls.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        probes.append(machine.cross_core_ns())
    probes = [p for p in probes if p is not None]
    return {name: statistics.median(t) for name, t in times.items()}, statistics.median(probes) if probes else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--hidden", default="256,512")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, help="threads for both (default: fusedrnn's)")
    parser.add_argument("--save", action="store_true",
                        help="write the rows as this CPU's results, bench/results/<cpu>/autocast.json (see report.py)")
    opts = parser.parse_args(argv)
    threads = opts.threads or _core.max_threads()
    torch.set_num_threads(threads)
    print(f"torch.autocast (cpu, bfloat16): T={T}, I=H, medians of {opts.rounds} interleaved rounds, {threads} "
          f"threads, PyTorch {torch.__version__}, fusedrnn {fusedrnn.__version__}, bf16 kernel "
          f"{_core.bf16_kernel()}")
    print(f"{'cell':5} {'B':>3} {'H':>5} {'call':9} {'torch.nn ac':>11} {'fused ac':>9} {'x':>5}  "
          f"{'torch.nn f32':>12} {'fused f32':>9} {'x':>5}   (ms)")
    near = machine.NearLatency(threads)
    rows = []
    for cell in opts.cells.split(","):
        for B in (int(b) for b in opts.batches.split(",")):
            for H in (int(h) for h in opts.hidden.split(",")):
                for training in (False, True):
                    calls = contenders(cell, B, H, training)
                    medians, ns, retries = machine.measure_near(lambda: timed(calls, opts.rounds), near)
                    ms = {name: 1e3 * t for name, t in medians.items()}
                    row = dict(cell=cell, B=B, H=H, call="training" if training else "inference",
                               cross_core_ns=ns, retries=retries, ms=ms)
                    rows.append(row)
                    print(f"{cell:5} {B:3d} {H:5d} {row['call']:9} {ms['torch.nn autocast']:11.2f} "
                          f"{ms['fused autocast']:9.2f} {ms['torch.nn autocast'] / ms['fused autocast']:5.2f}  "
                          f"{ms['torch.nn float32']:12.2f} {ms['fused float32']:9.2f} "
                          f"{ms['torch.nn float32'] / ms['fused float32']:5.2f}", flush=True)
    if opts.save:
        result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                      command="python bench/autocast.py " + " ".join(sys.argv[1:] if argv is None else argv),
                      cpu=machine.cpu_model(), threads=threads, T=T, rounds=opts.rounds,
                      bf16_kernel=_core.bf16_kernel(), near_ns=near.ns,
                      fusedrnn=fusedrnn.__version__, torch=torch.__version__, rows=rows)
        with open(machine.results_path("autocast"), "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

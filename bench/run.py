"""Microbenchmarks: fusedrnn against the NumPy reference and, when installed, PyTorch.

For each cell and shape it times inference (forward, nothing saved) and training (forward that
saves, then backward with a random cotangent) for every contender in this one process, with the
same thread count, and prints the median and min time, GFLOP/s and the ratios to fusedrnn.

    python bench/run.py                # the default table
    python bench/run.py --quick        # smaller sizes, fewer repeats (a smoke run)
    python bench/run.py --json out.json

Work counted: the GEMM FLOPs of a forward pass, 2*T*B*(I+H)*G*H; training counts 3x that
(forward, plus the input-gradient and the weight-gradient products of backward).
Times are only comparable inside one run: the machines are shared and noisy.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import fusedrnn
from fusedrnn import _reference, functional

try:
    import torch
except ImportError:  # PyTorch is an optional contender
    torch = None

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def timed(fn, repeat, min_seconds):
    """Calls fn once to warm up, then at least `repeat` times and `min_seconds`; returns ms."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_seconds and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def make_problem(cell, T, B, I, H, rng):
    G = GATES[cell]
    scale = 1.0 / np.sqrt(H)
    p = {
        "x": rng.standard_normal((T, B, I)).astype(np.float32),
        "h0": rng.standard_normal((B, H)).astype(np.float32),
        "c0": rng.standard_normal((B, H)).astype(np.float32),
        "w_ih": rng.uniform(-scale, scale, (G * H, I)).astype(np.float32),
        "w_hh": rng.uniform(-scale, scale, (G * H, H)).astype(np.float32),
        "b_ih": rng.uniform(-scale, scale, G * H).astype(np.float32),
        "b_hh": rng.uniform(-scale, scale, G * H).astype(np.float32),
        "dy": rng.standard_normal((T, B, H)).astype(np.float32),
    }
    return p


def numpy_contender(module, cell, p):
    """(infer, train, outputs) closures over a module with the functional API."""
    weights = (p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    if cell == "lstm":
        def forward(training):
            return module.lstm_forward(p["x"], p["h0"], p["c0"], *weights, training=training)

        def train():
            _, _, _, saved = forward(True)
            module.lstm_backward(p["dy"], None, None, saved)
    else:
        fwd = module.gru_forward if cell == "gru" else module.rnn_forward
        bwd = module.gru_backward if cell == "gru" else module.rnn_backward

        def forward(training):
            return fwd(p["x"], p["h0"], *weights, training=training)

        def train():
            bwd(p["dy"], None, forward(True)[-1])
    return (lambda: forward(False)), train, (lambda: forward(False)[0])


def torch_contender(cell, p):
    T, B, I = p["x"].shape
    H = p["w_hh"].shape[1]
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H)
    with torch.no_grad():
        for name, key in (("weight_ih_l0", "w_ih"), ("weight_hh_l0", "w_hh"),
                          ("bias_ih_l0", "b_ih"), ("bias_hh_l0", "b_hh")):
            getattr(module, name).copy_(torch.from_numpy(p[key]))
    x = torch.from_numpy(p["x"])
    h0 = torch.from_numpy(p["h0"])[None]
    hx = (h0, torch.from_numpy(p["c0"])[None]) if cell == "lstm" else h0
    dy = torch.from_numpy(p["dy"])

    def infer():
        with torch.inference_mode():
            return module(x, hx)[0]

    def train():
        xg = x.detach().requires_grad_(True)
        out = module(xg, hx)[0]
        out.backward(dy)

    return infer, train, (lambda: infer().numpy())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per contender (at least)")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) NumPy reference")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    threads = fusedrnn.build_info()["max_threads"]
    if torch is not None:
        torch.set_num_threads(threads)
    shapes = [(100, 64, 256, 256), (100, 1, 256, 256)]
    repeat, min_seconds = args.repeat, 1.0
    if args.quick:
        shapes, repeat, min_seconds = [(20, 16, 64, 64), (20, 1, 64, 64)], 3, 0.1

    info = fusedrnn.build_info()
    print(f"fusedrnn {info['version']} | isa {info['isa_selected']} | threads {threads} | "
          f"numpy {np.__version__} | torch {torch.__version__ if torch else 'not installed'} | "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    header = f"{'cell':5} {'T':>4} {'B':>4} {'I':>5} {'H':>5} {'mode':9} {'contender':10} " \
             f"{'median ms':>10} {'min ms':>9} {'GFLOP/s':>8} {'fusedrnn x':>10}"
    print(header)
    print("-" * len(header))

    rng = np.random.default_rng(0)
    rows = []
    for cell in args.cells.split(","):
        for T, B, I, H in shapes:
            p = make_problem(cell, T, B, I, H, rng)
            contenders = {"fusedrnn": numpy_contender(functional, cell, p)}
            if not args.no_reference:
                contenders["reference"] = numpy_contender(_reference, cell, p)
            if torch is not None:
                contenders["torch"] = torch_contender(cell, p)
            # The contenders must compute the same thing before their times mean anything.
            ours = contenders["fusedrnn"][2]()
            for name, (_, _, output) in contenders.items():
                err = float(np.max(np.abs(output() - ours)))
                if err > 1e-3:
                    sys.exit(f"{cell} {name} disagrees with fusedrnn by {err:.2e}: not timing it")
            flops = 2.0 * T * B * (I + H) * GATES[cell] * H
            for mode, work in (("inference", flops), ("training", 3 * flops)):
                results = {}
                for name, (infer, train, _) in contenders.items():
                    results[name] = timed(infer if mode == "inference" else train, repeat, min_seconds)
                for name, (median, best) in results.items():
                    ratio = median / results["fusedrnn"][0]
                    row = dict(cell=cell, T=T, B=B, I=I, H=H, mode=mode, contender=name,
                               median_ms=median, min_ms=best, gflops=work / median / 1e6,
                               speedup_of_fusedrnn=ratio)
                    rows.append(row)
                    print(f"{cell:5} {T:>4} {B:>4} {I:>5} {H:>5} {mode:9} {name:10} {median:>10.3f} "
                          f"{best:>9.3f} {row['gflops']:>8.1f} {ratio:>10.2f}")
    print("\n'fusedrnn x' = the contender's median time / fusedrnn's (above 1: fusedrnn is faster).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"build_info": info, "threads": threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

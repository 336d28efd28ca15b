"""Keras 3 models with Keras's own recurrent layers against the same models after
``fusedrnn.keras3.enable()``, on the torch and JAX backends.

What a Keras user times: ``model.fit`` (one epoch, Adam, MSE) and ``model.predict`` of
Input(T, I) -> SimpleRNN/LSTM/GRU(units) -> Dense(1), B=64, T=100, I=32, units 128 and 512; and at
units 128 the same behind a Masking layer, on sequences of lengths in [T/2, T] padded with zeros
(the masked rows: a Keras text model's batch, in no order of length), and under the
mixed_bfloat16 policy (the output layer float32, as Keras's mixed-precision guide has it). Keras
fixes its backend per process, so each backend runs in a subprocess of this script. Within one,
the stock and the fused model hold the same weights and are timed interleaved, call by call, with
the same threads (on the torch backend enable() is switched on and off around each call; on JAX
each model's jitted step is traced once, the stock one before enable(), and kept). The table gives
the median time per call and stock / fused, with the minimum beside it.

    python bench/keras3_dropin.py                         # both backends, every cell and size
    python bench/keras3_dropin.py --quick                 # a small smoke run
    python bench/keras3_dropin.py --backends jax --cells lstm --units 128 --repeats 5
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import machine  # bench/machine.py

CELLS = ("simplernn", "lstm", "gru")
MAX_ROUNDS = 15


def run_backend(args):
    """In the subprocess: time every configuration on KERAS_BACKEND; print JSON rows."""
    import numpy as np
    import keras

    import fusedrnn.keras3 as fk

    if keras.backend.backend() == "torch":
        import torch
        torch.set_num_threads(args.threads)
    layer_of = {"simplernn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.samples, args.steps, args.features)).astype("float32")
    y = rng.standard_normal((args.samples, 1)).astype("float32")
    # Padded sequences of lengths in [T/2, T], in no order, zeros after their ends and a Masking
    # layer in front: a Keras text model's batch.
    lengths = rng.integers(args.steps // 2, args.steps + 1, args.samples)
    x_padded = np.where(np.arange(args.steps)[None, :, None] < lengths[:, None, None], x, 0).astype("float32")
    configurations = ([(units, "full", "float32") for units in args.units]
                      + [(units, "masked", "float32") for units in args.masked_units]
                      + [(units, "full", "mixed_bfloat16") for units in args.mixed_units])
    rows = []
    near = machine.NearLatency(args.threads, known=args.near_ns)
    for cell in args.cells:
        for units, inputs, policy in configurations:
            data = x if inputs == "full" else x_padded
            masking = [] if inputs == "full" else [keras.layers.Masking(0.0)]
            keras.mixed_precision.set_global_policy(policy)
            models = {}
            for fused in (False, True):
                (fk.enable if fused else fk.disable)()
                keras.utils.set_random_seed(1)
                model = keras.Sequential([keras.Input((args.steps, args.features)), *masking, layer_of[cell](units),
                                          keras.layers.Dense(1, dtype="float32")])
                model.compile(optimizer="adam", loss="mse")
                if fused:
                    model.set_weights(models[False].get_weights())
                # Warm-up: builds (and on JAX traces and compiles) each step with its own loop.
                model.fit(data, y, batch_size=args.batch, epochs=1, verbose=0)
                model.predict(data, batch_size=args.batch, verbose=0)
                models[fused] = model

            def timed_rounds():
                """({(fused, call): [s, ...]}, the median cross-core probe taken after each round)."""
                times = {(fused, what): [] for fused in (False, True) for what in ("fit", "predict")}
                probes = []   # (see machine.FAR)
                # At least `repeats` rounds and `seconds` of them: a small model's calls (20-50 ms)
                # get a dozen rounds, where three left its median to the host's moments of noise; a
                # large model's (a stock LSTM(512) fit takes 9-11 s) keep `repeats`.
                start = time.perf_counter()
                while len(probes) < args.repeats or (time.perf_counter() - start < args.seconds
                                                     and len(probes) < MAX_ROUNDS):
                    for fused in (False, True):
                        (fk.enable if fused else fk.disable)()
                        for what in ("fit", "predict"):
                            began = time.perf_counter()
                            if what == "fit":
                                models[fused].fit(data, y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
                            else:
                                models[fused].predict(data, batch_size=args.batch, verbose=0)
                            times[fused, what].append(time.perf_counter() - began)
                    probes.append(machine.cross_core_ns())
                fk.disable()
                return times, None if None in probes else statistics.median(probes)

            times, cross_core, retries = machine.measure_near(timed_rounds, near)
            for what in ("fit", "predict"):
                stock, fused = times[False, what], times[True, what]
                rows.append(dict(backend=keras.backend.backend(), cell=cell, units=units, inputs=inputs, policy=policy,
                                 what=what,
                                 stock_median=statistics.median(stock), stock_min=min(stock),
                                 fused_median=statistics.median(fused), fused_min=min(fused),
                                 rounds=len(stock), cross_core_ns=cross_core, retries=retries))
            print(json.dumps(rows[-2]), json.dumps(rows[-1]), sep="\n", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["torch", "jax"], choices=["torch", "jax"])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--units", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--masked-units", nargs="*", type=int, default=[128],
                        help="sizes also timed on padded input behind a Masking layer")
    parser.add_argument("--mixed-units", nargs="*", type=int, default=[128],
                        help="sizes also timed under the mixed_bfloat16 policy")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="T")
    parser.add_argument("--features", type=int, default=32, help="I")
    parser.add_argument("--samples", type=int, default=256, help="per fit/predict call (an epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of calls per configuration, at least")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help=f"more rounds (up to {MAX_ROUNDS}) until a configuration's rounds take this long")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--save", action="store_true",
                        help="write the rows as this CPU's results, bench/results/<cpu>/keras3_dropin.json")
    parser.add_argument("--run-backend", help=argparse.SUPPRESS)
    parser.add_argument("--near-ns", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.units, args.masked_units, args.mixed_units = [16], [16], [16]
        args.steps, args.samples, args.batch, args.repeats = 10, 32, 16, 1
        args.seconds = 0.0
    if args.run_backend:
        run_backend(args)
        return

    from fusedrnn import _core

    # The FMA loop's peak bounds every call: the report compares it with the speed a target needs.
    peak = max(_core.fma_peak_gflops(args.threads) for _ in range(3))
    # A configuration measured while the cores were displaced from this is measured again.
    near = machine.NearLatency(args.threads)
    saved = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                 command="python bench/keras3_dropin.py " + " ".join(sys.argv[1:]), cpu=machine.cpu_model(),
                 threads=args.threads, B=args.batch, T=args.steps, I=args.features, samples=args.samples,
                 repeats=args.repeats, seconds=args.seconds, max_rounds=MAX_ROUNDS, fma_peak_gflops=peak,
                 near_cross_core_ns=near.ns, displaced_pause_s=machine.DISPLACED_PAUSE_S, rows=[])
    print(f"{saved['cpu']}, {args.threads} threads; B={args.batch}, T={args.steps}, I={args.features}, "
          f"{args.samples} samples per call, median of {args.repeats}+ rounds (min); FMA peak {peak:.0f} GFLOP/s\n")
    print("| backend | layer | units | input | policy | call | Keras (s) | enable() (s) | Keras / enable() |")
    print("|---|---|---:|---|---|---|---:|---:|---:|")
    for backend in args.backends:
        command = [sys.executable, __file__, "--run-backend", backend, "--cells", *args.cells,
                   "--units", *map(str, args.units), "--masked-units", *map(str, args.masked_units),
                   "--mixed-units", *map(str, args.mixed_units),
                   "--batch", str(args.batch), "--steps", str(args.steps),
                   "--features", str(args.features), "--samples", str(args.samples),
                   "--repeats", str(args.repeats), "--seconds", str(args.seconds), "--threads", str(args.threads)]
        if near.ns is not None:
            command += ["--near-ns", str(near.ns)]
        env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS=str(args.threads))
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            sys.exit(f"the {backend} run failed:\n{result.stderr[-3000:]}")
        for line in result.stdout.splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            saved["rows"].append(r)
            print(f"| {r['backend']} | {r['cell']} | {r['units']} | {r['inputs']} | {r['policy']} | {r['what']} | "
                  f"{r['stock_median']:.3f} "
                  f"({r['stock_min']:.3f}) | {r['fused_median']:.3f} ({r['fused_min']:.3f}) | "
                  f"{r['stock_median'] / r['fused_median']:.1f}x |", flush=True)
    if args.save:
        with open(machine.results_path("keras3_dropin"), "w") as f:
            json.dump(saved, f, indent=1)


if __name__ == "__main__":
    main()

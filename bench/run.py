"""The benchmark suite: fusedrnn against PyTorch (when installed) and the NumPy reference.

For every cell {rnn, lstm, gru} x batch B x hidden size H (I = H, T = 100) it times inference
(forward, nothing saved) and training (a forward that saves, then backward with a random
cotangent) for each contender, interleaved call by call in this one process with the same thread
count, and prints the median and min time, GFLOP/s, the ratio to PyTorch and the fraction of the
machine's float32 FMA peak measured in the same run. Then: NumPy's float32 matmul next to our
GEMM on the merged-GEMM shape, the peak resident memory of one training step (ours vs PyTorch,
each in a fresh process), and the speed-up from 1 thread to all of them.

    python bench/run.py                            # the full suite (about 5 minutes on 2 cores)
    python bench/run.py --quick                    # a small subset, well under a minute
    python bench/run.py --cells lstm --batch 1,64 --hidden 256 --threads 2
    python bench/run.py --save                     # also keep every row as this CPU's results
    python bench/report.py > bench/RESULTS.md      # the report, from every CPU's saved results

Work counted: the GEMM FLOPs of a forward pass, 2*T*B*(I+H)*G*H; training counts 3x that
(forward, plus the input-gradient and the weight-gradient products of backward).
Times are only comparable inside one run: the machines are shared and noisy.
"""

import os

# The NumPy reference calls OpenBLAS; OpenBLAS worker threads busy-wait for a while after each
# call and would steal cores from the next contender's OpenMP threads. One BLAS thread means no
# workers at all (set before NumPy loads OpenBLAS). NumPy's own GEMM speed is measured apart, in
# a subprocess with as many BLAS threads as ours (see gemm_peak.py).
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse  # noqa: E402  (the environment above must be set before NumPy is imported)
import ctypes  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fusedrnn  # noqa: E402
from fusedrnn import _core, _reference, functional  # noqa: E402

import machine  # noqa: E402  (bench/machine.py)

try:
    import torch
except ImportError:  # PyTorch is an optional contender
    torch = None

HERE = os.path.dirname(os.path.abspath(__file__))
# The benchmark's cell names and the cell table's.
KERNEL_CELLS = {"rnn": "rnn_tanh", "lstm": "lstm", "gru": "gru"}
GATES = {cell: functional.CELLS[kernel].gates for cell, kernel in KERNEL_CELLS.items()}
T_STEPS = 100
# The NumPy reference runs one small GEMM per step in Python: only time it where T*B*G*H*H is at
# most that of an LSTM at B=8, H=128 (a fraction of a second per call).
REFERENCE_MAX_WORK = 100 * 8 * 4 * 128 * 128


def w_hh_bytes(cell, H):
    """The bytes of a float32 W_hh of this suite's layers (I = H, no projection)."""
    return GATES[cell] * H * H * 4


def forward_flops(cell, T, B, I, H):
    return 2.0 * T * B * (I + H) * GATES[cell] * H


# ---------------------------------------------------------------------------------------------
# Problems and contenders. Each contender is (infer, train, output): closures with no arguments.

def make_problem(cell, T, B, I, H, seed=0):
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    scale = 1.0 / np.sqrt(H)
    return {
        "x": rng.standard_normal((T, B, I)).astype(np.float32),
        "h0": rng.standard_normal((B, H)).astype(np.float32),
        "c0": rng.standard_normal((B, H)).astype(np.float32),
        "w_ih": rng.uniform(-scale, scale, (G * H, I)).astype(np.float32),
        "w_hh": rng.uniform(-scale, scale, (G * H, H)).astype(np.float32),
        "b_ih": rng.uniform(-scale, scale, G * H).astype(np.float32),
        "b_hh": rng.uniform(-scale, scale, G * H).astype(np.float32),
        "dy": rng.standard_normal((T, B, H)).astype(np.float32),
    }


def layer_weights(p):
    return dict(weight_ih=p["w_ih"], weight_hh=p["w_hh"], bias_ih=p["b_ih"], bias_hh=p["b_hh"])


def numpy_contender(module, cell, p, keep_packed=False):
    """Contender over a module with the uniform op (fusedrnn.functional or the reference).

    keep_packed: inference keeps the packed weights in a PackedWeights handle from call to call, as
    every layer of the package does (the weights never change here); training packs them at every
    call, as it must when an optimizer changes them between steps."""
    kernel, weights = KERNEL_CELLS[cell], layer_weights(p)
    c0 = p["c0"] if functional.CELLS[kernel].has_cell_state else None
    kept = dict(packed=functional.PackedWeights(), packed_version=0) if keep_packed else {}

    def forward(training):
        return module.recurrent_forward(kernel, p["x"], p["h0"], c0, weights, training=training,
                                        **({} if training else kept))

    def train():
        return module.recurrent_backward(p["dy"], None, None, forward(True)[-1])
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
        # Fresh gradients every step (what a training loop's zero_grad() does), as ours returns
        # fresh arrays; dx is computed too, as ours always does.
        module.zero_grad(set_to_none=True)
        xg = x.detach().requires_grad_(True)
        module(xg, hx)[0].backward(dy)

    return infer, train, (lambda: infer().numpy())


def contenders_for(cell, p, reference):
    result = {"fusedrnn": numpy_contender(functional, cell, p, keep_packed=INFERENCE_KEEPS_PACKED)}
    if torch is not None:
        result["torch"] = torch_contender(cell, p)
    if reference:
        result["reference"] = numpy_contender(_reference, cell, p)
    return result


# ---------------------------------------------------------------------------------------------
# Timing

def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_interleaved(fns, min_calls, min_seconds, max_calls):
    """Times every fn of {name: fn}, one call of each in turn, so that a slow phase of the machine
    hits every contender alike. One warm-up call each first (lazy initialisation, first-touch page
    faults). Stops after min_calls rounds once min_seconds have passed, or at max_calls.
    Returns ({name: [ms, ...]}, {name: page faults per call})."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    # Page faults: glibc hands blocks above its mmap threshold (at most 32 MB) straight back to the
    # kernel on free, so a call that allocates them pays first-touch faults every time.
    faults = dict.fromkeys(fns, 0)
    start = time.perf_counter()
    while True:
        for name, fn in fns.items():
            f0, t0 = minor_faults(), time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
            faults[name] += minor_faults() - f0
        calls = len(next(iter(times.values())))
        if calls >= max_calls or (calls >= min_calls and time.perf_counter() - start >= min_seconds):
            return times, {name: f / calls for name, f in faults.items()}


# The machine is shared: another process on one of the cores stalls every kernel that waits at a
# barrier each step, by a scheduler time slice at a time (10x swings). So every measurement also
# records how much CPU the rest of the machine used meanwhile, and a disturbed one is retried.
BUSY = 0.04  # other processes used more than this fraction of all CPUs: the measurement is disturbed
# Our inference contender keeps its packed weights between calls, as the package's layers do (the
# handle keeps W_hh; a merged input GEMM still packs W_ih: RNN B=1 H=1024 5.70 -> 5.47 ms).
INFERENCE_KEEPS_PACKED = True


def cpu_snapshot():
    """(CPU seconds the whole machine was busy, CPU seconds this process used, wall seconds)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait; steal counts
    except (OSError, ValueError):
        busy = 0.0  # not Linux: nothing to check against
    t = os.times()  # with the finished subprocesses' time: the workers are ours too
    return busy, t.user + t.system + t.children_user + t.children_system, time.perf_counter()


def others_share(a, b):
    """Fraction of all CPUs that other processes (or the hypervisor) used between two snapshots."""
    busy, own, wall = (y - x for x, y in zip(a, b))
    # Both counters advance in clock ticks: allow two ticks of disagreement over short windows.
    return max(0.0, busy - own - 2.0 / os.sysconf("SC_CLK_TCK")) / (wall * os.cpu_count())


def wait_quiet(max_seconds):
    """Waits until the other processes leave the CPUs alone for a second; False if they never did."""
    deadline = time.perf_counter() + max_seconds
    while time.perf_counter() < deadline:
        a = cpu_snapshot()
        time.sleep(1.0)
        if others_share(a, cpu_snapshot()) < BUSY:
            return True
    return False


# The probes timed among the contenders (see measure): the FMA loop of machine.PROBE_ITERATIONS;
# the read-bandwidth probe reads at least 32 MiB, a fraction of a ms. RUN_FMA_PEAK: the run's FMA
# peak, taken at its start (set by main); a measurement whose FMA probe ran below machine.SLOWED
# times it is retried like a busy one, and kept marked busy if it stays so. RUN_NEAR_NS: the
# lowest median of the cross-core probe seen so far in the run; a measurement whose probe
# answered above machine.FAR times it was taken while the host kept the process's CPUs further
# apart (the same calls up to 1.6x slower): it is retried too, after a pause, and kept as it is
# (the report marks it far) if the cores stay far apart. Like a busy moment, that is the host's
# state, not the contenders', and it does not slow them alike (one-step calls of B = 1 twice as
# much as PyTorch's).
RUN_FMA_PEAK = None
RUN_NEAR_NS = None
FAR_PAUSE_S = 3


def measure(fns, timing, attempts=3, probe_threads=None, probe_bytes=None):
    """time_interleaved, retried (after the machine quietens) while other processes disturb it.
    Returns ({name: [ms, ...]}, {name: page faults per call}, the others' CPU share meanwhile,
    {probe: median rate}).

    With probe_threads, an FMA loop on that many threads is timed as one more contender, call by
    call among the others, and so is, with probe_bytes, the read bandwidth at that size, and with two
    threads or more the latency between two cores; the fourth result gives their medians,
    {"fma_gflops": ..., "read_gbs": ..., "cross_core_ns": ...} (empty without probes): the machine's
    state at the moments the contenders ran. (Its speed swings by up to 2x within minutes here; peaks measured
    once would make a slow moment's times look far from them, and a fast moment's look closer
    than they are, or a roofline built on them no bound at all.)"""
    probes = {}
    if probe_threads:
        probes["fma_gflops"] = lambda: _core.fma_peak_gflops(probe_threads, machine.PROBE_ITERATIONS)
        if probe_bytes:
            probes["read_gbs"] = lambda: _core.read_bandwidth_gbs(probe_bytes, probe_threads, passes=1)
        if probe_threads >= 2:
            probes["cross_core_ns"] = lambda: _core.cross_core_latency_ns(machine.CROSS_CORE_ROUNDS)
    global RUN_NEAR_NS
    for attempt in range(attempts):
        a = cpu_snapshot()
        rates = {name: [] for name in probes}
        run = dict(fns)
        for name, probe in probes.items():
            run[name] = lambda name=name, probe=probe: rates[name].append(probe())
        times, faults = time_interleaved(run, *timing)
        for name in probes:
            times.pop(name)
            faults.pop(name)
        share = others_share(a, cpu_snapshot())
        fma = statistics.median(rates["fma_gflops"]) if "fma_gflops" in rates else None
        slowed = fma is not None and RUN_FMA_PEAK is not None and fma < machine.SLOWED * RUN_FMA_PEAK
        quiet = share < BUSY and not slowed
        cross_core = statistics.median(rates["cross_core_ns"]) if rates.get("cross_core_ns") else math.nan
        # (Not from a disturbed attempt: the two CPUs were once one core's two hardware threads,
        # 14 ns apart with the FMA loop at half speed.)
        if math.isfinite(cross_core) and quiet:
            RUN_NEAR_NS = cross_core if RUN_NEAR_NS is None else min(RUN_NEAR_NS, cross_core)
        far = math.isfinite(cross_core) and RUN_NEAR_NS is not None and cross_core > machine.FAR * RUN_NEAR_NS
        if quiet:
            if not far or attempt + 1 == attempts:
                break
            print(f"  (the cores were far apart: {cross_core:.0f} ns, {cross_core / RUN_NEAR_NS:.1f}x the run's "
                  "nearest: retrying)", flush=True)
            time.sleep(FAR_PAUSE_S)
            continue
        if slowed:
            print(f"  (the FMA probe ran at {fma:.0f} GFLOP/s, {100 * fma / RUN_FMA_PEAK:.0f}% of the run's peak: ",
                  end="")
            share = max(share, BUSY)  # (kept, it is marked busy)
        else:
            print(f"  (other processes used {100 * share:.0f}% of the CPUs: ", end="")
        print("retrying)" if attempt + 1 < attempts else "keeping it, marked busy)", flush=True)
        wait_quiet(20)
    return times, faults, share, {name: statistics.median(r) for name, r in rates.items()}


def fma_peaks(threads, tries=5):
    """(peak with `threads`, peak with 1), in GFLOP/s. An FMA loop shares nothing but the cores, so
    it should scale with the threads; where it doesn't, another process holds a core: wait, retry."""
    best = (0.0, 1.0)
    for _ in range(tries):
        wait_quiet(30)
        peaks = tuple(max(_core.fma_peak_gflops(n) for _ in range(3)) for n in (threads, 1))
        best = max(best, peaks, key=lambda p: p[0])
        if peaks[0] >= 0.8 * threads * peaks[1]:
            break
    return best


def cross_core_ns(threads, samples=5):
    """The median of a few samples of the latency between two cores, in ns; None with one thread
    (or a team that got one: the probe's NaN)."""
    if threads < 2:
        return None
    ns = [machine.cross_core_ns() for _ in range(samples)]
    return None if None in ns else statistics.median(ns)


def steady_malloc():
    """Keeps every freed block in glibc's heap (no mmap, no trimming), so that after the warm-up no
    call touches fresh memory: the times are then the kernels' alone, whatever ran before. Under
    glibc's defaults blocks above the (adaptive, at most 32 MB) mmap threshold are unmapped on
    free, and whether a large block comes back from the heap depends on what the process did
    earlier."""
    libc = ctypes.CDLL(None)
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def set_threads(n):
    fusedrnn.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# Parts of the suite

def bench_table(cells, batches, hiddens, modes, timing, reference, threads):
    rows = []
    print(f"\n{'cell':4} {'B':>3} {'H':>5} {'mode':9} | {'ours ms':>9} {'min':>9} {'GFLOP/s':>7} "
          f"{'%peak':>5} | {'torch ms':>9} {'min':>9} {'GFLOP/s':>7} | {'x torch':>7} | {'ref ms':>8} "
          f"{'x ref':>6} | {'kflt ours':>9} {'torch':>6}")
    for cell in cells:
        for B in batches:
            for H in hiddens:
                T, I = T_STEPS, H
                p = make_problem(cell, T, B, I, H)
                with_ref = reference and T * B * GATES[cell] * H * H <= REFERENCE_MAX_WORK
                contenders = contenders_for(cell, p, with_ref)
                # The contenders must compute the same thing before their times mean anything.
                ours = contenders["fusedrnn"][2]()
                for name, (_, _, output) in contenders.items():
                    err = float(np.max(np.abs(output() - ours)))
                    if err > 1e-3:
                        sys.exit(f"{cell} B={B} H={H}: {name} disagrees with fusedrnn by {err:.2e}")
                for mode in modes:
                    work = forward_flops(cell, T, B, I, H) * (3 if mode == "training" else 1)
                    fns = {name: c[0 if mode == "inference" else 1] for name, c in contenders.items()}
                    times, faults, share, peaks = measure(fns, timing, probe_threads=threads,
                                                          probe_bytes=w_hh_bytes(cell, H))
                    med = {name: statistics.median(t) for name, t in times.items()}
                    new = []
                    for name, t in times.items():
                        new.append(dict(
                            cell=cell, T=T, B=B, I=I, H=H, mode=mode, contender=name,
                            median_ms=med[name], min_ms=min(t), calls=len(t), faults_per_call=faults[name],
                            gflops=work / med[name] / 1e6,
                            peak_fraction=work / med[name] / 1e6 / peaks["fma_gflops"], **peaks,
                            # torch's median / this one's: above 1, this contender is faster.
                            ratio_to_torch=med["torch"] / med[name] if "torch" in med else None,
                            others_cpu=share))
                    rows += new
                    print(table_line({r["contender"]: r for r in new}), flush=True)
    return rows


def table_line(by):
    """One console line for one configuration; `by` maps contender -> row."""
    ours = by["fusedrnn"]
    line = (f"{ours['cell']:4} {ours['B']:>3} {ours['H']:>5} {ours['mode']:9} | {ours['median_ms']:>9.3f} "
            f"{ours['min_ms']:>9.3f} {ours['gflops']:>7.1f} {100 * ours['peak_fraction']:>5.1f} |")
    if "torch" in by:
        t = by["torch"]
        line += f" {t['median_ms']:>9.3f} {t['min_ms']:>9.3f} {t['gflops']:>7.1f} | {ours['ratio_to_torch']:>7.2f} |"
    else:
        line += f" {'':>9} {'':>9} {'':>7} | {'':>7} |"
    if "reference" in by:
        r = by["reference"]
        line += f" {r['median_ms']:>8.1f} {r['median_ms'] / ours['median_ms']:>6.1f} |"
    else:
        line += f" {'':>8} {'':>6} |"
    line += f" {ours['faults_per_call'] / 1e3:>9.1f} {by.get('torch', {}).get('faults_per_call', 0) / 1e3:>6.1f}"
    if math.isfinite(ours.get("cross_core_ns", math.nan)):
        line += f"  x-core {ours['cross_core_ns']:.0f} ns"
    if ours["others_cpu"] >= BUSY:
        line += f"  busy ({100 * ours['others_cpu']:.0f}% of the CPUs taken by others)"
    elif any(r["median_ms"] > 1.5 * r["min_ms"] for r in by.values()):
        line += "  noisy"  # median far above the min: the calls were disturbed
    return line


def run_worker(script, args, env=None):
    """Runs bench/<script> in a fresh interpreter and returns the JSON it prints."""
    out = subprocess.run([sys.executable, os.path.join(HERE, script), *map(str, args)],
                         capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_gemm(shapes, threads, quick):
    """NumPy's float32 matmul and torch.matmul next to ours on a layer's GEMM shapes ((kind, M, N,
    K) each), in a subprocess where OpenBLAS gets `threads` threads and no OPENBLAS_CORETYPE /
    OPENBLAS_L2_SIZE overrides (they can slow it down: a fair NumPy). If those are set here, the
    same is measured with them too, for the record."""
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    base["OPENBLAS_NUM_THREADS"] = str(threads)
    clean = {k: v for k, v in base.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    spec = json.dumps([shape[1:] for shape in shapes])

    def quiet_run(env):  # retried like measure() while other processes disturb it
        for _ in range(3):
            a = cpu_snapshot()
            result = run_worker("gemm_peak.py", [threads, spec, int(quick)], env)
            result["others_cpu"] = others_share(a, cpu_snapshot())
            for row, shape in zip(result["shapes"], shapes):
                row["kind"] = shape[0]
            if result["others_cpu"] < BUSY:
                break
            wait_quiet(20)
        return result

    results = {"clean": quiet_run(clean)}
    overrides = {k: base[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in base}
    if overrides:
        results["inherited"] = quiet_run(base)
        results["inherited"]["overrides"] = overrides
    return results


def bench_bandwidth(sizes, threads, tries=3):
    """The read bandwidth (GB/s) with `threads` threads at each size in bytes: what a step that
    reads its weights once can reach (report.py's roofline). The best of a few tries: like the FMA
    peak, a rate that another process's load can only lower."""
    rows = []
    for size in sorted(set(sizes)):
        best = 0.0
        for _ in range(tries):
            wait_quiet(10)
            best = max(best, _core.read_bandwidth_gbs(size, threads))
        rows.append(dict(bytes=size, gbs=best))
        print(f"  {size / 2**20:8.2f} MiB: {best:6.1f} GB/s", flush=True)
    return rows


def bench_memory(configs, threads):
    """Peak RSS growth of one training step, each contender in a fresh process (see peak_memory.py)."""
    rows = []
    for cell, B, H in configs:
        row = dict(cell=cell, T=T_STEPS, B=B, I=H, H=H)
        for name in ["fusedrnn"] + (["torch"] if torch is not None else []):
            row[name] = run_worker("peak_memory.py", [name, cell, T_STEPS, B, H, threads])
        if "torch" in row:
            row["ratio"] = row["fusedrnn"]["step_mb"] / row["torch"]["step_mb"]
        rows.append(row)
        t = row.get("torch", {}).get("step_mb", float("nan"))
        print(f"{cell:4} B={B:<3} H={H:<5} ours {row['fusedrnn']['step_mb']:8.1f} MB   torch {t:8.1f} MB   "
              f"ours/torch {row.get('ratio', float('nan')):.2f}", flush=True)
    return rows


def bench_scaling(configs, modes, threads, timing):
    """1 thread against `threads`, both contenders, interleaved call by call."""
    rows = []
    for cell, B, H in configs:
        p = make_problem(cell, T_STEPS, B, H, H)
        contenders = contenders_for(cell, p, reference=False)
        for mode in modes:
            fns = {}
            for name, c in contenders.items():
                fn = c[0 if mode == "inference" else 1]
                for n in (1, threads):
                    # Setting the count is part of the call: microseconds against 10s of ms.
                    fns[(name, n)] = (lambda fn=fn, n=n: (set_threads(n), fn()))
            times, faults, share, _ = measure(fns, timing)
            set_threads(threads)
            med = {key: statistics.median(t) for key, t in times.items()}
            row = dict(cell=cell, T=T_STEPS, B=B, I=H, H=H, mode=mode, threads=threads, others_cpu=share)
            for name in contenders:
                row[name] = dict(ms_1=med[(name, 1)], ms_n=med[(name, threads)],
                                 speedup=med[(name, 1)] / med[(name, threads)],
                                 faults_per_call=(faults[(name, 1)] + faults[(name, threads)]) / 2)
            rows.append(row)
            t = row.get("torch", {}).get("speedup", float("nan"))
            print(f"{cell:4} B={B:<3} H={H:<5} {mode:9} 1 -> {threads} threads: ours {row['fusedrnn']['speedup']:.2f}x "
                  f"({row['fusedrnn']['ms_1']:.1f} -> {row['fusedrnn']['ms_n']:.1f} ms, "
                  f"{row['fusedrnn']['faults_per_call'] / 1e3:.1f}k faults/call)   torch {t:.2f}x"
                  + ("  busy" if share >= BUSY else ""), flush=True)
    return rows


def bench_bf16(cells, hiddens, timing, threads):
    """Inference at B=1: our float32 against our bfloat16 weights (bf16_weights=True), interleaved;
    each both as a stateless call (which packs the weights first) and with the packed weights kept
    in a PackedWeights handle, as the layers run them."""
    rows = []
    for cell in cells:
        for H in hiddens:
            p = make_problem(cell, T_STEPS, 1, H, H)
            kernel = KERNEL_CELLS[cell]
            c0 = p["c0"] if functional.CELLS[kernel].has_cell_state else None

            def forward(bf16, handle=None, kernel=kernel, p=p, c0=c0):
                return functional.recurrent_forward(kernel, p["x"], p["h0"], c0, layer_weights(p), training=False,
                                                    bf16_weights=bf16, packed=handle,
                                                    packed_version=None if handle is None else 0)[0]

            # The input projections x W_ih^T, alone: work that bf16 weights leave as it is (only the
            # recurrent products read bfloat16), so the speed-up is at most
            # float32 / (projections + (float32 - projections) / 2), bf16 halving the rest at best.
            x, w_ih_t = p["x"].reshape(T_STEPS, H), p["w_ih"].T
            kept = {bf16: functional.PackedWeights() for bf16 in (False, True)}

            error = float(np.abs(forward(True) - forward(False)).max())
            times, _, share, _ = measure({"float32": lambda: forward(False), "bf16": lambda: forward(True),
                                          "float32 kept": lambda: forward(False, kept[False]),
                                          "bf16 kept": lambda: forward(True, kept[True]),
                                          "projections": lambda: _core.gemm(x, w_ih_t)}, timing,
                                         probe_threads=threads)
            med = {name: statistics.median(t) for name, t in times.items()}
            f32, b16, f32_kept, b16_kept = med["float32"], med["bf16"], med["float32 kept"], med["bf16 kept"]
            projections = min(min(times["projections"]), f32_kept)
            bound = f32_kept / (projections + (f32_kept - projections) / 2)
            rows.append(dict(cell=cell, B=1, H=H, T=T_STEPS, float32_ms=f32, bf16_ms=b16, speedup=f32 / b16,
                             float32_kept_ms=f32_kept, bf16_kept_ms=b16_kept, speedup_kept=f32_kept / b16_kept,
                             projections_ms=projections, speedup_bound=bound, max_abs_diff=error, others_cpu=share))
            print(f"{cell:4} B=1 H={H:<5} packing every call: float32 {f32:.3f} ms  bf16 {b16:.3f} ms  "
                  f"{f32 / b16:.2f}x | kept: float32 {f32_kept:.3f} ms  bf16 {b16_kept:.3f} ms  "
                  f"{f32_kept / b16_kept:.2f}x (at most {bound:.2f}x: projections {projections:.3f} ms)  "
                  f"max |diff| {error:.1e}" + ("  busy" if share >= BUSY else ""), flush=True)
    return rows


def machine_description(threads):
    # Which OpenMP / BLAS libraries this process loaded: one OpenMP runtime shared by torch and
    # fusedrnn means neither's idle threads spin against the other's.
    libs = []
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({os.path.basename(line.split()[-1]) for line in f
                           if any(k in line for k in ("omp", "blas", "mkl"))})
    except OSError:
        pass
    info = fusedrnn.build_info()
    return {
        "cpu": machine.cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "isa_selected": info["isa_selected"],
        "isa_compiled": info["isa_compiled"],
        "cache_sizes": info["cache_sizes"],
        "threads": threads,
        "fusedrnn": info["version"],
        "compiler": info["compiler"],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "os": platform.platform(),
        "libraries": libs,
        # Settings that change what is measured: threads, BLAS kernels, glibc malloc thresholds.
        "environment": {k: v for k, v in sorted(os.environ.items())
                        if k.startswith(("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "MALLOC_", "FUSEDRNN_"))},
    }


def load_average():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


# ---------------------------------------------------------------------------------------------

def int_list(text):
    return [int(v) for v in text.split(",")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small subset with few repeats")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--batch", type=int_list, help="batch sizes (default 1,8,64)")
    parser.add_argument("--hidden", type=int_list, help="hidden sizes, I = H (default 128,256,512,1024)")
    parser.add_argument("--modes", default="inference,training")
    parser.add_argument("--threads", type=int, help="threads for every contender (default: fusedrnn's)")
    parser.add_argument("--no-reference", action="store_true", help="skip the NumPy reference")
    parser.add_argument("--no-extras", action="store_true", help="only the table: no GEMM, memory, scaling")
    parser.add_argument("--steady-malloc", action="store_true",
                        help="no page faults after warm-up: glibc keeps freed memory (see steady_malloc)")
    parser.add_argument("--json", metavar="PATH", help="write everything measured as JSON")
    parser.add_argument("--save", action="store_true",
                        help="write it as this CPU's results, bench/results/<cpu>/run.json (see report.py)")
    args = parser.parse_args(argv)

    if args.steady_malloc and not steady_malloc():
        sys.exit("--steady-malloc: mallopt refused (not glibc?)")
    threads = args.threads or fusedrnn.get_num_threads()
    set_threads(threads)
    cells = args.cells.split(",")
    modes = args.modes.split(",")
    if args.quick:
        batches, hiddens = args.batch or [1, 64], args.hidden or [256]
        timing = (3, 0.05, 10)  # (min calls, min seconds, max calls) per configuration
        gemm_shapes = [("merged", T_STEPS * 64, 4 * 256, 256)]
        memory_configs, scaling_configs = [("lstm", 64, 256)], [("lstm", 64, 256)]
    else:
        batches, hiddens = args.batch or [1, 8, 64], args.hidden or [128, 256, 512, 1024]
        timing = (7, 0.5, 40)
        # The products of an LSTM layer (G = 4, I = H): the merged input GEMM (M = T*B rows, N = G*H,
        # K = I), one step's recurrent product of the whole batch (M = B, N = G*H, K = H) and the
        # weight gradient (M = G*H, N = I, K = T*B).
        gemm_shapes = [("merged", T_STEPS * B, 4 * H, H) for B, H in ((8, 256), (64, 256), (64, 512))]
        gemm_shapes += [("recurrent", 64, 4 * H, H) for H in (256, 512)]
        gemm_shapes += [("weight-gradient", 4 * H, H, T_STEPS * 64) for H in (256, 512)]
        memory_configs = [(c, 64, H) for c in cells for H in (256, 512)]
        scaling_configs = [(c, 64, 512) for c in cells]

    if not wait_quiet(120):
        print("warning: other processes kept using the CPUs for 2 minutes; measuring anyway")
    load_before = load_average()
    described = machine_description(threads)
    # Others may rebuild the native module while this runs; the subprocesses would load the new one.
    built = os.path.getmtime(_core.__file__)
    print(f"fusedrnn {described['fusedrnn']} ({described['compiler']}) | isa {described['isa_selected']} | "
          f"threads {threads} | numpy {described['numpy']} | torch {described['torch'] or 'not installed'} | "
          f"python {described['python']}")
    print(f"{described['cpu']}, {described['cpus']} cpus | load average {load_before:.2f} | "
          f"libraries: {', '.join(described['libraries'])}")
    print("environment: " + " ".join(f"{k}={v}" for k, v in described["environment"].items()))
    if load_before is not None and load_before > 1:
        print(f"warning: load average {load_before:.2f}: the machine is busy, timings will be noisy")

    global RUN_FMA_PEAK, RUN_NEAR_NS
    fma_n, fma_1 = fma_peaks(threads)
    fma = [fma_n]
    RUN_FMA_PEAK = fma_n
    print(f"FMA peak: {fma_n:.1f} GFLOP/s with {threads} threads, {fma_1:.1f} with 1")
    cross_core = [cross_core_ns(threads)]
    scaled = fma_n >= 0.8 * threads * fma_1
    if cross_core[0] is not None:
        # The far retries' first reference: probes between FMA runs that scaled (machine.NearLatency),
        # not one from a moment the cores were shared or were one core's two hardware threads.
        RUN_NEAR_NS = machine.NearLatency(threads, tries=3).ns
        print(f"Latency between two cores: {cross_core[0]:.0f} ns"
              + (f" (the run's near reference: {RUN_NEAR_NS:.0f} ns)" if RUN_NEAR_NS else ""))
    if not scaled:
        print(f"warning: the FMA peak scales only {fma_n / fma_1:.2f}x from 1 to {threads} threads: "
              "cores are busy")

    rows = bench_table(cells, batches, hiddens, modes, timing, not args.no_reference, threads)
    print("'x torch' = torch's median / ours (above 1: fusedrnn is faster); 'x ref' likewise for the "
          "NumPy reference (1 BLAS thread); %peak = ours / the FMA peak timed among the contenders, call by "
          "call; kflt = thousands of page faults per call.")

    gemm, memory, scaling, bf16 = None, [], [], []
    # The float32 W_hh of every layer in the table: the bytes a step reads at a small batch.
    print(f"\nRead bandwidth with {threads} threads at each layer's W_hh size:")
    bandwidth = bench_bandwidth([w_hh_bytes(cell, H) for cell in cells for H in hiddens], threads)
    if not args.no_extras:
        print(f"\nThe GEMM shapes of an LSTM layer, float32, {threads} threads (NumPy and torch in a subprocess):")
        wait_quiet(60)
        gemm = bench_gemm(gemm_shapes, threads, args.quick)
        for key, result in gemm.items():
            note = "OPENBLAS_CORETYPE/L2_SIZE unset" if key == "clean" else f"as inherited {result['overrides']}"
            busy = f" (busy: others took {100 * result['others_cpu']:.0f}% of the CPUs)" \
                if result["others_cpu"] >= BUSY else ""
            print(f"  NumPy {note}: OpenBLAS core {result['openblas_core']}{busy}")
            for s in result["shapes"]:
                versus_torch = f"  torch {s['torch_gflops']:6.1f}  ours/torch {s['ours_gflops'] / s['torch_gflops']:.2f}" \
                    if "torch_gflops" in s else ""
                print(f"    {s['kind']:15} M={s['M']:<6} N={s['N']:<5} K={s['K']:<5} numpy {s['numpy_gflops']:6.1f}  "
                      f"ours {s['ours_gflops']:6.1f} GFLOP/s  ours/numpy {s['ours_gflops'] / s['numpy_gflops']:.2f}"
                      f"{versus_torch}  (ours right after a NumPy call, its BLAS threads still spinning: "
                      f"{s['ours_after_numpy_gflops']:.1f})")
        print("\nPeak resident memory of one training step (growth over the process's baseline):")
        memory = bench_memory(memory_configs, threads)
        if threads > 1:
            print("\nThread scaling:")
            scaling = bench_scaling(scaling_configs, modes, threads, timing)
        if "inference" in modes:
            print("\nbfloat16 recurrent weights (bf16_weights=True), inference at B=1, against our float32:")
            bf16 = bench_bf16(cells, hiddens, timing, threads)
    wait_quiet(60)
    fma.append(fma_peaks(threads, tries=1)[0])
    cross_core.append(cross_core_ns(threads))
    load_after = load_average()
    print(f"\nFMA peak at the end: {fma[1]:.1f} GFLOP/s (start {fma[0]:.1f}); load average {load_after:.2f}")
    if cross_core[1] is not None:
        print(f"Latency between two cores at the end: {cross_core[1]:.0f} ns (start {cross_core[0]:.0f})")
    if os.path.getmtime(_core.__file__) != built:
        print("warning: the native module was rebuilt during the run: the results mix two builds")
    if max(fma) > 1.2 * min(fma):
        print("warning: the FMA peak moved by more than 20% during the run: the machine was busy")

    if args.json or args.save:
        result = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": described, "threads": threads, "T": T_STEPS, "steady_malloc": args.steady_malloc,
            "timing": dict(zip(("min_calls", "min_seconds", "max_calls"), timing), busy_threshold=BUSY,
                           inference_keeps_packed=INFERENCE_KEEPS_PACKED, far_retry_pause_s=FAR_PAUSE_S),
            "load_average": [load_before, load_after],
            "peaks": {"fma_gflops": fma, "fma_gflops_1_thread": fma_1, "gemm": gemm, "read_bandwidth": bandwidth,
                      "cross_core_ns": cross_core},
            "rows": rows, "memory": memory, "scaling": scaling, "bf16": bf16,
        }
        for path in filter(None, (args.json, args.save and machine.results_path("run"))):
            with open(path, "w") as f:
                json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

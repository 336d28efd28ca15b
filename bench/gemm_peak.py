"""NumPy's and PyTorch's float32 matmul next to fusedrnn's GEMM on the same shapes.

    python bench/gemm_peak.py THREADS '[[M, N, K], ...]' QUICK   # run.py's worker: one JSON line
    python bench/gemm_peak.py [--threads N] [--hidden 256,512,1024] [--quick]   # a table

As run.py's worker (in a fresh process) the caller sets the environment (OPENBLAS_NUM_THREADS, and
whether OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set) before NumPy loads here. Every contender
computes a (M, K) @ w.T with w (N, K). The table mode times, for an LSTM layer (G = 4) with
T = 100, B = 64, I = H, the three kinds of product a layer runs:
  merged:   the input projections X W_ihᵀ,          M = T*B, N = G*H, K = I
  recurrent: one step's h W_hhᵀ (in the kernels, a thread's slice at a time), M = B, N = G*H, K = H
  weight-gradient: dGᵀ X,                            M = G*H, N = I, K = T*B
and prints GFLOP/s and ours / torch.matmul. Times are only comparable inside one run: the machines
are shared and noisy.
"""

import ctypes
import json
import statistics
import sys
import time

import numpy as np

from fusedrnn import _core, set_num_threads

try:
    import torch
except ImportError:  # PyTorch is an optional contender
    torch = None


def block_ms(fn, calls):
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def openblas_core():
    """The kernel set OpenBLAS picked (e.g. Haswell, SkylakeX, Zen), or None if it can't be asked."""
    try:
        with open("/proc/self/maps") as f:
            path = next(line.split()[-1] for line in f if "openblas" in line)
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"):
            if hasattr(lib, name):
                fn = getattr(lib, name)
                fn.restype = ctypes.c_char_p
                return fn().decode()
    except (OSError, StopIteration):
        pass
    return None


def measure_shapes(shapes, threads, quick):
    set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    rounds, calls = (2, 3) if quick else (4, 5)
    rng = np.random.default_rng(0)
    out = []
    for M, N, K in shapes:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.uniform(-0.1, 0.1, (N, K)).astype(np.float32).T  # a transposed view, as in the layer
        ours = lambda: _core.gemm(a, b)  # noqa: E731
        numpy = lambda: a @ b  # noqa: E731
        fns = {"ours": ours, "numpy": numpy}
        if torch is not None:
            a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
            fns["torch"] = lambda: torch.matmul(a_t, b_t)
        for fn in fns.values():
            fn()
        times = {name: [] for name in fns}
        for _ in range(rounds):
            # OpenBLAS's worker threads busy-wait for a while (about 0.1 s) after each call: every
            # contender runs after a pause, so that they have gone to sleep.
            for name, fn in fns.items():
                time.sleep(0.3)
                times[name] += block_ms(fn, calls)
        t_ours, t_numpy = times["ours"], times["numpy"]
        # The same, without the pause: how much the spinning BLAS threads cost the next kernel.
        t_after = []
        for _ in range(calls):
            numpy()
            t_after += block_ms(ours, 1)
        work = 2.0 * M * N * K / 1e6
        row = dict(M=M, N=N, K=K,
                   numpy_gflops=work / statistics.median(t_numpy),
                   ours_gflops=work / statistics.median(t_ours),
                   ours_after_numpy_gflops=work / statistics.median(t_after))
        if "torch" in times:
            row["torch_gflops"] = work / statistics.median(times["torch"])
        out.append(row)
    return out


def table(argv):
    import argparse
    parser = argparse.ArgumentParser(description="fusedrnn's GEMM against torch.matmul and NumPy")
    parser.add_argument("--threads", type=int, default=_core.max_threads())
    parser.add_argument("--hidden", default="256,512,1024")
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args(argv)
    T, B, G = 100, 64, 4
    shapes = []
    for H in (int(h) for h in opts.hidden.split(",")):
        shapes += [("merged", H, (T * B, G * H, H)), ("recurrent", H, (B, G * H, H)),
                   ("weight-gradient", H, (G * H, H, T * B))]
    rows = measure_shapes([s for _, _, s in shapes], opts.threads, opts.quick)
    print(f"{opts.threads} threads, isa={_core.isa_selected()}, blocking={_core.gemm_blocking('float32')}, "
          f"OpenBLAS core {openblas_core()}; GFLOP/s (medians)")
    print(f"{'shape':16} {'H':>5} {'M':>6} {'N':>6} {'K':>6} {'ours':>7} {'torch':>7} {'numpy':>7} {'ours/torch':>10}")
    for (kind, H, _), row in zip(shapes, rows):
        torch_gflops = row.get("torch_gflops")
        ratio = f"{row['ours_gflops'] / torch_gflops:10.2f}" if torch_gflops else f"{'-':>10}"
        print(f"{kind:16} {H:5d} {row['M']:6d} {row['N']:6d} {row['K']:6d} {row['ours_gflops']:7.1f} "
              f"{torch_gflops or float('nan'):7.1f} {row['numpy_gflops']:7.1f} {ratio}")


def main():
    if len(sys.argv) == 4 and not sys.argv[1].startswith("-"):
        threads, shapes, quick = int(sys.argv[1]), json.loads(sys.argv[2]), bool(int(sys.argv[3]))
        print(json.dumps({"openblas_core": openblas_core(), "shapes": measure_shapes(shapes, threads, quick)}))
    else:
        table(sys.argv[1:])


if __name__ == "__main__":
    main()

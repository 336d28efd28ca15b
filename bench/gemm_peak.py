"""NumPy's float32 matmul next to fusedrnn's GEMM on the same shapes; run by run.py in a fresh process.

    python bench/gemm_peak.py THREADS '[[M, N, K], ...]' QUICK

The caller sets the environment (OPENBLAS_NUM_THREADS, and whether OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE are set) before NumPy loads here. Both compute a (M, K) @ w.T with w (N, K),
which is the merged input GEMM of a layer, Xp = X W_ihᵀ. Prints one JSON line.
"""

import ctypes
import json
import statistics
import sys
import time

import numpy as np

from fusedrnn import _core, set_num_threads


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


def main():
    threads, shapes, quick = int(sys.argv[1]), json.loads(sys.argv[2]), bool(int(sys.argv[3]))
    set_num_threads(threads)
    rounds, calls = (2, 3) if quick else (4, 5)
    rng = np.random.default_rng(0)
    out = []
    for M, N, K in shapes:
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.uniform(-0.1, 0.1, (N, K)).astype(np.float32).T  # a transposed view, as in the layer
        ours = lambda: _core.gemm(a, b)  # noqa: E731
        numpy = lambda: a @ b  # noqa: E731
        ours(), numpy()
        t_ours, t_numpy = [], []
        for _ in range(rounds):
            # OpenBLAS's worker threads busy-wait for a while (about 0.1 s) after each call; ours
            # runs after a pause so that they have gone to sleep.
            time.sleep(0.3)
            t_ours += block_ms(ours, calls)
            t_numpy += block_ms(numpy, calls)
        # The same, without the pause: how much the spinning BLAS threads cost the next kernel.
        t_after = []
        for _ in range(calls):
            numpy()
            t_after += block_ms(ours, 1)
        work = 2.0 * M * N * K / 1e6
        out.append(dict(M=M, N=N, K=K,
                        numpy_gflops=work / statistics.median(t_numpy),
                        ours_gflops=work / statistics.median(t_ours),
                        ours_after_numpy_gflops=work / statistics.median(t_after)))
    print(json.dumps({"openblas_core": openblas_core(), "shapes": out}))


if __name__ == "__main__":
    main()

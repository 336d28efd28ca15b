"""fusedrnn: fused CPU kernels for RNN, LSTM and GRU layers, with a NumPy API.

``fusedrnn.functional`` holds the layer-level forward and backward functions;
``fusedrnn._reference`` the plain NumPy spec they are tested against; ``fusedrnn.nn`` and
``fusedrnn.optim`` the PyTorch-flavoured layers, losses and optimizers; ``fusedrnn.keras`` the
Keras-flavoured ones; ``fusedrnn.distributed`` data-parallel training over MPI (mpi4py optional).
"""

from . import _core, cuda, distributed, functional, keras, nn, optim
from ._random import manual_seed

__version__ = _core.__version__

__all__ = ["functional", "cuda", "nn", "optim", "keras", "distributed", "manual_seed", "build_info", "get_num_threads",
           "set_num_threads", "set_array_cache_limit", "array_cache_info", "__version__"]


# The thread count set by set_num_threads, or None: then the framework adapters (fusedrnn.torch)
# give the kernels the framework's own thread count at each call.
_user_threads = None
_STARTUP_THREADS = _core.max_threads()


def get_num_threads():
    """Threads a kernel may use (OMP_NUM_THREADS at start-up, or what set_num_threads set)."""
    return _core.max_threads()


def set_num_threads(threads):
    """Sets how many threads the kernels may use from now on (in the calling thread).

    Once set, PyTorch's custom operators (fusedrnn.torch) use this count too, in every thread,
    instead of following ``torch.get_num_threads()``; ``set_num_threads(None)`` undoes that and
    goes back to the start-up count.
    """
    global _user_threads
    if threads is None:
        _user_threads = None
        _core.set_max_threads(_STARTUP_THREADS)
        return
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be an int, got {type(threads).__name__}")
    _core.set_max_threads(threads)
    _user_threads = threads


def set_array_cache_limit(nbytes):
    """Bounds the memory fusedrnn keeps for its next output arrays (1 GiB at start-up).

    The big arrays the kernels return (outputs, the states a training forward saves, gradients)
    get memory that a freed one of about the same size gave back, when there is some: a training
    loop then touches no fresh pages at each step, which glibc would otherwise map and unmap
    around every call (up to a fifth of an LSTM or GRU step at B=64, H=512). At most `nbytes` of
    memory that no array uses is kept, the oldest freed first; ``0`` frees it all and keeps none.
    Arrays under 1 MiB always come from the ordinary allocator.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be at least 0, got {nbytes}")
    info = _core.array_cache_info()
    _core.set_array_cache(nbytes, info["min_bytes"], info["poison"])


def array_cache_info():
    """What :func:`set_array_cache_limit` bounds, now: a dict of ``kept_bytes`` and ``kept_blocks``
    (memory kept that no array uses), ``limit``, ``hits`` (arrays given kept memory) and
    ``misses`` (arrays of 1 MiB or more given new memory)."""
    info = _core.array_cache_info()
    return {key: info[key] for key in ("kept_bytes", "kept_blocks", "limit", "hits", "misses")}


def build_info():
    """How this copy of fusedrnn was built and what it runs on.

    Returns a dict: ``version``, ``compiler``, ``openmp`` (bool), ``max_threads`` (threads a kernel
    may use now), ``isa_compiled`` (GEMM kernel sets in the build), ``isa_selected`` (the one chosen
    for this CPU at run time; ``FUSEDRNN_ISA`` may ask for a lower one), ``bf16_native`` (whether
    ``bf16_weights=True`` runs on AVX512-BF16 instructions here), ``bf16_kernel`` (the kernel it
    runs: ``avx512bf16``, ``avx512`` or ``avx2`` widening bfloat16 in registers, or ``portable``),
    ``cuda`` (bool: built with the CUDA backend; :func:`fusedrnn.cuda.build_info` says more),
    ``cpu_vendor``, ``cache_sizes`` (bytes per core the kernels plan for, and
    their source) and ``gemm_blocking`` (the float32 GEMM's block sizes kc, mc, nc and its
    micro-kernel tile, derived from those caches and the ISA).
    """
    return {
        "version": __version__,
        "compiler": _core.compiler,
        "openmp": bool(_core.openmp),
        "max_threads": _core.max_threads(),
        "isa_compiled": _core.isa_compiled().split(","),
        "isa_selected": _core.isa_selected(),
        "bf16_native": bool(_core.bf16_native()),
        "bf16_kernel": _core.bf16_kernel(),
        "cuda": cuda.is_built(),
        "cpu_vendor": _core.cpu_vendor(),
        "cache_sizes": _core.cache_sizes(),
        "gemm_blocking": _core.gemm_blocking("float32"),
    }

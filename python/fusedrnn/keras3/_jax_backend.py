"""The JAX backend's adapter: the uniform op as a ``jax.custom_vjp`` whose forward and backward
are host callbacks into :mod:`fusedrnn.functional` (:func:`host_call`: ``jax.pure_callback``
without its copies).

So it runs under ``jit`` (Keras's ``fit``, ``evaluate`` and ``predict`` trace it once) and under
``grad``: the primal call runs the forward without saving anything; the vjp's forward keeps the
kernels' gates and states on the host (:class:`_SavedOnHost`) and gives JAX a token for them as its
residual, beside the inputs; its backward hands them back to the kernels with the inputs. The
kernels write fresh arrays; the callbacks' arguments are only read. Under ``vmap`` each callback
loops over the mapped axis (``vmap_method="sequential"``), which is correct, one call per element.
CPU only: the caller sends other platforms to Keras's loop. The mask and the recurrent dropout
scale get no gradient (zero cotangents); x gets one only when something differentiates it, and an
output nothing reads costs the backward nothing (symbolic zeros).

Threads: the callbacks run on a thread of XLA's; they use ``fusedrnn.set_num_threads``'s count if
one was set, else the count at start-up (``OMP_NUM_THREADS`` or the cores).
"""

import collections
import functools
import inspect
import threading

import jax
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

import fusedrnn
from fusedrnn import _core
from fusedrnn import functional as F


def _host(array):
    """An argument of a callback as a NumPy array, or None: the NumPy view that :func:`host_call`
    passes, or a JAX array on the host through DLPack, a read-only view of the same memory, where
    ``np.asarray`` copies it (0.17 ms against 40 ms for a 52 MB jit argument)."""
    if array is None or type(array) is np.ndarray:
        return array
    try:
        return np.from_dlpack(array)
    except (TypeError, BufferError):  # (no DLPack for this array, dtype or device: a copy then)
        return np.asarray(array)


# -- host calls without copies ------------------------------------------------------------------
#
# Under jit, XLA hands a host callback its operands as read-only NumPy views of its own buffers;
# jax.pure_callback then copies each into a new JAX array (device_put) before the callback sees
# it. For a training layer's backward that copied the saved gates and states: 34-46 ms for the
# 52 MB of gates of an LSTM(512) at B=64, T=100, a sixth of the backward's kernels (measured on a
# Zen 3). The primitive below calls back with XLA's views as they are. It keeps to pure_callback's
# meaning: lowered on the CPU as pure_callback lowers (emit_python_callback, no side effect),
# with pure_callback itself for what it does not do here (eager calls, vmap, a computation over
# several devices, a JAX whose emit_python_callback takes other arguments).

def _lowers_like_pure_callback():
    emit = getattr(mlir, "emit_python_callback", None)
    if emit is None:
        return False
    try:
        parameters = inspect.signature(emit).parameters
    except (TypeError, ValueError):
        return False
    return {"has_side_effect", "returns_token"} <= parameters.keys()


_EMIT_DIRECTLY = _lowers_like_pure_callback()


class _FlatCallback:
    """callback(*args) on the flat leaves of args (None leaves left out, as pytrees do), returning
    the flat tuple of results. Hashed by identity: a primitive's parameters must hash."""

    def __init__(self, callback, tree):
        self.callback, self.tree = callback, tree

    def __call__(self, *leaves):
        return tuple(self.callback(*jax.tree_util.tree_unflatten(self.tree, leaves)))


def _as_pure_callback(flat, result_avals, *leaves):
    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in result_avals]
    return jax.pure_callback(flat, shapes, *leaves, vmap_method="sequential")


_host_call_p = Primitive("fusedrnn_host_call")
_host_call_p.multiple_results = True
_host_call_p.def_impl(lambda *leaves, flat, result_avals: _as_pure_callback(flat, result_avals, *leaves))
_host_call_p.def_abstract_eval(lambda *avals, flat, result_avals: result_avals)


def _lowering(ctx, *operands, flat, result_avals):
    one_device = getattr(ctx.module_context.axis_context, "num_devices", None) == 1
    if not (_EMIT_DIRECTLY and one_device):
        return mlir.lower_fun(functools.partial(_as_pure_callback, flat, result_avals), multiple_results=True)(
            ctx, *operands)
    results, _, _ = mlir.emit_python_callback(ctx, flat, None, list(operands), ctx.avals_in, ctx.avals_out,
                                              has_side_effect=False, returns_token=False)
    return results


def _batched(leaves, dims, *, flat, result_avals):
    axes = [d if isinstance(d, int) else None for d in dims]  # (an unmapped one: None, or not_mapped before)
    results = jax.vmap(functools.partial(_as_pure_callback, flat, result_avals), in_axes=axes)(*leaves)
    return results, [0] * len(results)


try:  # (the callback differs from call to call: a lowering must not be reused, as pure_callback's)
    mlir.register_lowering(_host_call_p, _lowering, platform="cpu", cacheable=False)
except TypeError:  # (a JAX without the option)
    mlir.register_lowering(_host_call_p, _lowering, platform="cpu")
batching.primitive_batchers[_host_call_p] = _batched


def host_call(callback, result_shapes, *args):
    """``jax.pure_callback(callback, result_shapes, *args, vmap_method="sequential")`` where the
    arguments reach `callback` as NumPy views of XLA's buffers (not copies); CPU only. Returns
    the results as a list."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    result_avals = tuple(jax.core.ShapedArray(s.shape, s.dtype) for s in result_shapes)
    return _host_call_p.bind(*leaves, flat=_FlatCallback(callback, tree), result_avals=result_avals)


def _use_threads():
    wanted = fusedrnn._user_threads or fusedrnn._STARTUP_THREADS
    if _core.max_threads() != wanted:
        _core.set_max_threads(wanted)


def _shapes(cell, x, weights):
    """The forward's result shapes from the inputs' shapes (what the callbacks will return)."""
    T, B, _ = x.shape
    H = weights["weight_hh"].shape[1]
    out = jax.ShapeDtypeStruct
    return (out((T, B, H), x.dtype), out((B, H), x.dtype)) + (
        (out((B, H), x.dtype),) if F.CELLS[cell].has_cell_state else ())


class _SavedOnHost:
    """The gates and states that training forwards saved, kept on the host until their backward
    takes them, by token (an int32 the vjp carries as its residual).

    Why not residuals: XLA copies a callback's results into buffers of its own, fresh memory at
    every step for anything above glibc's mmap threshold (32 MB at most), so each page faults on
    first touch. For an LSTM(512) at B=64, T=100 a jitted forward and backward took 677 ms, of
    which 459 ms in the kernels' callbacks: the copy of 78 MB of gates and states added half again
    (measured on a Zen 3; 432 ms now).

    A token whose entry is not here (taken by an earlier backward of the same forward, or dropped
    to keep at most `capacity` entries: a forward whose backward never runs) makes the backward
    run the forward again on the same inputs, which gives the same gates and states."""

    def __init__(self, capacity):
        self.capacity = capacity
        self._entries = collections.OrderedDict()
        self._last_token = 0
        self._lock = threading.Lock()  # (XLA may run callbacks on several threads at once)

    def put(self, saved):
        with self._lock:
            self._last_token = self._last_token % (2**31 - 1) + 1
            self._entries[self._last_token] = saved
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return self._last_token

    def take(self, token):
        with self._lock:
            return self._entries.pop(token, None)


# More entries than the recurrent layers of any model whose forward runs before its backward.
_SAVED = _SavedOnHost(capacity=256)
_TOKEN = jax.ShapeDtypeStruct((), np.int32)


def _host_forward(cell, masked_output, training, x, h0, c0, weights, mask, recurrent_scale):
    """The forward's results, and with training the token of its saved gates and states."""
    _use_threads()
    y, h_n, c_n, saved = _forward_on_host(cell, masked_output, training, x, h0, c0, weights, mask, recurrent_scale)
    results = (y, h_n) + ((c_n,) if c_n is not None else ())
    if not training:
        return results
    return results + (np.asarray(_SAVED.put(_computed(saved)), np.int32),)


def _forward_on_host(cell, masked_output, training, x, h0, c0, weights, mask, recurrent_scale):
    return F.recurrent_forward(
        cell, _host(x), _host(h0), _host(c0), {k: _host(v) for k, v in weights.items()},
        mask=_host(mask), masked_output=masked_output, training=training,
        recurrent_scale=_host(recurrent_scale), check_unchanged=False)


def _computed(saved):
    """What the kernels wrote for the backward (arrays of our own: the inputs are XLA's buffers,
    valid only during the callback)."""
    return saved["gates"], saved["h"], saved["c"]


def _forward(static, x, h0, c0, weights, mask, recurrent_scale, training):
    cell, masked_output = static
    results = _shapes(cell, x, weights)
    callback = functools.partial(_host_forward, cell, masked_output, training)
    out = host_call(callback, results + ((_TOKEN,) if training else ()), x, h0, c0, weights, mask, recurrent_scale)
    n = len(results)
    primal = (out[0], out[1], out[2] if n == 3 else None)
    return primal, out[n] if training else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recurrent(static, x, h0, c0, weights, mask, recurrent_scale):
    return _forward(static, x, h0, c0, weights, mask, recurrent_scale, training=False)[0]


def _value(primal):
    """A primal as the forward rule gets it with symbolic zeros (CustomVJPPrimal: the value, and
    whether it is perturbed), or None."""
    return None if primal is None else primal.value


def _recurrent_fwd(static, x, h0, c0, weights, mask, recurrent_scale):
    # (defvjp with symbolic_zeros: each input comes with whether anything differentiates it, and
    # an output nothing reads has a symbolic zero cotangent.) The residual for dx is an empty array
    # when x is perturbed, None when not: its presence is the flag, as residuals must be arrays.
    want_dx = jax.numpy.zeros((0,), np.int32) if x.perturbed else None
    x, h0, c0, mask, recurrent_scale = map(_value, (x, h0, c0, mask, recurrent_scale))
    weights = {name: _value(w) for name, w in weights.items()}
    primal, token = _forward(static, x, h0, c0, weights, mask, recurrent_scale, training=True)
    return primal, (x, h0, c0, weights, mask, recurrent_scale, token, want_dx)


def _cotangent(ct):
    """None for a symbolic zero (the kernels read None as zeros, with nothing to fill or read)."""
    return None if ct is None or isinstance(ct, jax.custom_derivatives.SymbolicZero) else ct


def _host_backward(cell, masked_output, want_dx, dy, dh_n, dc_n, x, h0, c0, weights, mask, recurrent_scale,
                   token):
    _use_threads()
    computed = _SAVED.take(int(token))
    if computed is None:  # (see _SavedOnHost)
        computed = _computed(_forward_on_host(cell, masked_output, True, x, h0, c0, weights, mask, recurrent_scale)[3])
    mask = None if mask is None else np.asarray(mask, dtype=np.uint8)
    arrays = (_host(x),) + tuple(_host(weights[name]) for name in F.WEIGHT_NAMES) + (
        _host(recurrent_scale), None, mask) + computed + (None,)
    meta = F.SavedMeta(cell=cell, reverse=False, repeat_masked_output=masked_output == "repeat", fingerprints=None)
    dx, dh0, dc0, dweights = F.recurrent_backward(_host(dy), _host(dh_n), _host(dc_n), F.Saved(meta, arrays),
                                                  want_dx=want_dx)
    grads = ((dx,) if want_dx else ()) + (dh0,) + ((dc0,) if c0 is not None else ())  # (as _recurrent_bwd asks)
    return grads + tuple(dweights[name] for name in F.WEIGHT_NAMES if weights[name] is not None)


def _recurrent_bwd(static, residuals, cotangents):
    cell, masked_output = static
    x, h0, c0, weights, mask, recurrent_scale, token, want_dx = residuals
    dy, dh_n, dc_n = map(_cotangent, cotangents)
    want_dx = want_dx is not None
    out = jax.ShapeDtypeStruct
    shapes = ((out(x.shape, x.dtype),) if want_dx else ()) + (out(h0.shape, h0.dtype),)
    shapes += (out(c0.shape, c0.dtype),) if c0 is not None else ()
    present = [name for name in F.WEIGHT_NAMES if weights[name] is not None]
    shapes += tuple(out(weights[name].shape, weights[name].dtype) for name in present)
    grads = list(host_call(functools.partial(_host_backward, cell, masked_output, want_dx), shapes, dy, dh_n, dc_n,
                           x, h0, c0, weights, mask, recurrent_scale, token))
    dx = grads.pop(0) if want_dx else None
    dh0 = grads.pop(0)
    dc0 = grads.pop(0) if c0 is not None else None
    dweights = dict.fromkeys(F.WEIGHT_NAMES)
    dweights.update(zip(present, grads))
    return (dx, dh0, dc0, dweights, None, None)


# symbolic_zeros: the forward rule learns whether x is differentiated at all (the data a first
# layer reads is not: no dx is computed then), and the backward gets no zeros to build for the
# outputs nothing reads (y under return_sequences=False).
_recurrent.defvjp(_recurrent_fwd, _recurrent_bwd, symbolic_zeros=True)


def recurrent(cell, x, h0, c0, weights, *, mask, masked_output, recurrent_scale):
    """``(y (T, B, P), h_n, c_n or None)`` of one layer; time-major JAX arrays, differentiable in
    x, h0, c0 and the weights."""
    weights = {name: weights.get(name) for name in F.WEIGHT_NAMES}
    if recurrent_scale is not None:
        recurrent_scale = jax.lax.stop_gradient(recurrent_scale)
    h0 = jax.numpy.asarray(h0, x.dtype)
    c0 = None if c0 is None else jax.numpy.asarray(c0, x.dtype)
    return _recurrent((cell, masked_output), x, h0, c0, weights, mask, recurrent_scale)

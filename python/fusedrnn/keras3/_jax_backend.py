"""The JAX backend's adapter: the uniform op as a ``jax.custom_vjp`` whose forward and backward
are host callbacks (``jax.pure_callback``) into :mod:`fusedrnn.functional`.

So it runs under ``jit`` (Keras's ``fit``, ``evaluate`` and ``predict`` trace it once) and under
``grad``: the primal call runs the forward without saving anything; the vjp's forward saves the
kernels' gates and states as residuals (ordinary JAX arrays), and its backward hands them back to
the kernels with the inputs. The kernels write fresh arrays; the callbacks' arguments are only
read. Under ``vmap`` each callback loops over the mapped axis (``vmap_method="sequential"``),
which is correct, one call per element. CPU only: the caller sends other platforms to Keras's
loop. The mask and the recurrent dropout scale get no gradient (zero cotangents).

Threads: the callbacks run on a thread of XLA's; they use ``fusedrnn.set_num_threads``'s count if
one was set, else the count at start-up (``OMP_NUM_THREADS`` or the cores).
"""

import functools

import jax
import numpy as np

import fusedrnn
from fusedrnn import _core
from fusedrnn import functional as F


def _host(array):
    """An argument of a callback (a JAX array on the host) as a NumPy array, or None: through
    DLPack, a read-only view of the same memory, where ``np.asarray`` copies it (0.17 ms against
    40 ms for a 52 MB jit argument). (JAX may still copy a large intermediate itself on export.)"""
    if array is None:
        return None
    try:
        return np.from_dlpack(array)
    except (TypeError, BufferError):  # (no DLPack for this array, dtype or device: a copy then)
        return np.asarray(array)


def _use_threads():
    wanted = fusedrnn._user_threads or fusedrnn._STARTUP_THREADS
    if _core.max_threads() != wanted:
        _core.set_max_threads(wanted)


def _shapes(cell, x, weights):
    """Result and residual shapes from the inputs' shapes (what the callbacks will return)."""
    info = F.CELLS[cell]
    T, B, _ = x.shape
    H = weights["weight_hh"].shape[1]
    out = jax.ShapeDtypeStruct
    results = (out((T, B, H), x.dtype), out((B, H), x.dtype)) + ((out((B, H), x.dtype),) if info.has_cell_state else ())
    saved = (out((T, B, info.saved * H), x.dtype), out((T + 1, B, H), x.dtype))
    saved += (out((T + 1, B, H), x.dtype),) if info.has_cell_state else ()
    return results, saved


def _host_forward(cell, masked_output, training, x, h0, c0, weights, mask, recurrent_scale):
    _use_threads()
    y, h_n, c_n, saved = F.recurrent_forward(
        cell, _host(x), _host(h0), _host(c0), {k: _host(v) for k, v in weights.items()},
        mask=_host(mask), masked_output=masked_output, training=training,
        recurrent_scale=_host(recurrent_scale), check_unchanged=False)
    results = (y, h_n) + ((c_n,) if c_n is not None else ())
    if not training:
        return results
    return results + tuple(saved[name] for name in ("gates", "h") + (("c",) if c_n is not None else ()))


def _forward(static, x, h0, c0, weights, mask, recurrent_scale, training):
    cell, masked_output = static
    results, saved = _shapes(cell, x, weights)
    callback = functools.partial(_host_forward, cell, masked_output, training)
    shapes = results + (saved if training else ())
    out = jax.pure_callback(callback, shapes, x, h0, c0, weights, mask, recurrent_scale,
                            vmap_method="sequential")
    n = len(results)
    primal = (out[0], out[1], out[2] if n == 3 else None)
    return primal, tuple(out[n:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recurrent(static, x, h0, c0, weights, mask, recurrent_scale):
    return _forward(static, x, h0, c0, weights, mask, recurrent_scale, training=False)[0]


def _recurrent_fwd(static, x, h0, c0, weights, mask, recurrent_scale):
    primal, computed = _forward(static, x, h0, c0, weights, mask, recurrent_scale, training=True)
    return primal, (x, h0, c0, weights, mask, recurrent_scale, computed)


def _host_backward(cell, masked_output, dy, dh_n, dc_n, x, weights, mask, recurrent_scale, computed):
    _use_threads()
    gates, h, c = (_host(a) for a in computed) if len(computed) == 3 else (*map(_host, computed), None)
    mask = None if mask is None else np.asarray(mask, dtype=np.uint8)
    arrays = (_host(x),) + tuple(_host(weights[name]) for name in F.WEIGHT_NAMES) + (
        _host(recurrent_scale), None, mask, gates, h, c, None)
    meta = F.SavedMeta(cell=cell, reverse=False, repeat_masked_output=masked_output == "repeat", fingerprints=None)
    dx, dh0, dc0, dweights = F.recurrent_backward(_host(dy), _host(dh_n), _host(dc_n), F.Saved(meta, arrays))
    grads = (dx, dh0) + ((dc0,) if dc0 is not None else ())
    return grads + tuple(dweights[name] for name in F.WEIGHT_NAMES if weights[name] is not None)


def _recurrent_bwd(static, residuals, cotangents):
    cell, masked_output = static
    x, h0, c0, weights, mask, recurrent_scale, computed = residuals
    dy, dh_n, dc_n = cotangents
    out = jax.ShapeDtypeStruct
    shapes = (out(x.shape, x.dtype), out(h0.shape, h0.dtype)) + ((out(c0.shape, c0.dtype),) if c0 is not None else ())
    present = [name for name in F.WEIGHT_NAMES if weights[name] is not None]
    shapes += tuple(out(weights[name].shape, weights[name].dtype) for name in present)
    grads = jax.pure_callback(functools.partial(_host_backward, cell, masked_output), shapes, dy, dh_n, dc_n, x,
                              weights, mask, recurrent_scale, computed, vmap_method="sequential")
    n = 3 if c0 is not None else 2
    dweights = dict.fromkeys(F.WEIGHT_NAMES)
    dweights.update(zip(present, grads[n:]))
    return (grads[0], grads[1], grads[2] if c0 is not None else None, dweights, None, None)


_recurrent.defvjp(_recurrent_fwd, _recurrent_bwd)


def recurrent(cell, x, h0, c0, weights, *, mask, masked_output, recurrent_scale):
    """``(y (T, B, P), h_n, c_n or None)`` of one layer; time-major JAX arrays, differentiable in
    x, h0, c0 and the weights."""
    weights = {name: weights.get(name) for name in F.WEIGHT_NAMES}
    if recurrent_scale is not None:
        recurrent_scale = jax.lax.stop_gradient(recurrent_scale)
    h0 = jax.numpy.asarray(h0, x.dtype)
    c0 = None if c0 is None else jax.numpy.asarray(c0, x.dtype)
    return _recurrent((cell, masked_output), x, h0, c0, weights, mask, recurrent_scale)

"""PackedWeights: the packed weights of one layer direction, kept from one forward call to the next.

Every forward packs ``weight_hh`` (and ``weight_ih``, ``weight_hr``) into the GEMM kernels' panel
layout before its first step. For a one-step call (a generation loop: T = 1, B = 1) that packing
is most of the call. Passing the same ``PackedWeights`` to every call
(``recurrent_forward(..., packed=handle)``) packs once and reuses the result for as long as the
weights are unchanged.

When are they unchanged? The native cache itself compares what the packed copies depend on besides
the weights' values: the cell, the dtype, the sizes, the bf16 flag and where the weight arrays are
(their data addresses: the handle keeps a reference to the arrays, so that no other array can take
those addresses while it holds their packed copies). The values are the caller's to vouch for, with
either

- ``version``: any hashable value the caller changes whenever it writes the weights' values (a
  framework's own counters: fusedrnn's ``Parameter.version``, PyTorch's ``tensor._version``); or
- with ``version=None``, a fingerprint of the weights' bytes (``_core.fingerprint``) taken every
  call: always safe, but it reads every weight once per call, a good part of what packing costs.

Anything else (a change of any of these) clears the packed copies first and packs afresh, so results
are bitwise those of a call without the handle. A handle holds one set of packed weights, about the
size of the weights themselves (half for bfloat16), until it is cleared or dropped.

From PyTorch: keep one handle per layer and direction, pass the NumPy views of the weight tensors
(``t.detach().numpy()``; a new view each call is fine, since the key uses the data address) and
``version=tuple(t._version for t in (w_ih, w_hh, w_hr) if t is not None)``: an in-place change
(an optimizer step, ``copy_``, ``load_state_dict``) bumps ``_version``, and ``param.data = new``
changes the data address.
"""

from . import _core

__all__ = ["PackedWeights", "owned_packed_weights", "weight_versions"]

# The weights a forward packs (the biases are added as they are).
_PACKED_NAMES = ("w_ih", "w_hh", "w_hr")


class PackedWeights:
    """Packed weights of one layer direction, reused by :func:`recurrent_forward` calls given it.

    ``hits`` and ``misses`` count the calls that found the packed weights current and those that
    packed them; ``nbytes`` is the memory held; ``clear()`` frees it.
    """

    __slots__ = ("_native", "_stamp", "_held", "__weakref__")

    def __init__(self):
        self._native = _core.PackedWeights()
        self._stamp = None
        self._held = None

    @property
    def nbytes(self):
        return self._native.nbytes

    @property
    def hits(self):
        return self._native.hits

    @property
    def misses(self):
        return self._native.misses

    def clear(self):
        """Forgets the packed weights (the next call packs them again) and frees their memory."""
        self._native.clear()
        self._stamp = self._held = None

    def _for_call(self, arrays, version, in_place):
        """The native cache for a forward over `arrays` (the checked, contiguous ones the kernel
        reads), cleared first if the weights' values may have changed since the last call; None
        for a call that reads the weights in place (`in_place`: a generation step, which packs
        nothing, so there is nothing to check: a fingerprint would read every weight once more)."""
        if version is not None:
            try:
                hash(version)
            except TypeError:
                raise TypeError(f"version must be hashable (an int or a tuple of them), got "
                                f"{type(version).__name__}") from None
        if in_place:
            return None
        weights = tuple(arrays[name] for name in _PACKED_NAMES)
        if version is None:
            stamp = ("fingerprint",) + tuple(None if w is None else _core.fingerprint(w) for w in weights)
        else:
            stamp = ("version", version)
        if stamp != self._stamp:
            self._native.clear()
            self._stamp = stamp
        # The native cache keys on the arrays' addresses: holding them keeps those addresses theirs.
        self._held = weights
        return self._native

    def __reduce__(self):
        # A copy (copy.deepcopy, pickle) starts empty: packed weights are a cache, not state.
        return PackedWeights, ()

    def __repr__(self):
        return f"PackedWeights({self.nbytes} bytes, {self.hits} hits, {self.misses} misses)"


def owned_packed_weights(owner, slot):
    """The PackedWeights of `owner` (a layer) for `slot` (e.g. its layer and direction), made on
    first use and kept in the owner's ``__dict__``, so that it is freed with the owner."""
    handles = owner.__dict__.get("_packed_weights")
    if handles is None:
        handles = {}
        object.__setattr__(owner, "_packed_weights", handles)
    handle = handles.get(slot)
    if handle is None:
        handle = handles[slot] = PackedWeights()
    return handle


def weight_versions(params):
    """The ``packed_version`` of the weights in `params` (Parameters or None): their versions."""
    return tuple(None if p is None else p.version for p in params)

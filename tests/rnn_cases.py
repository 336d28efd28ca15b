"""Shared test helpers: random problems and one way to call any cell of a module.

`module` is fusedrnn.functional or fusedrnn._reference: both have the uniform op
recurrent_forward / recurrent_backward. The helpers keep a cell's states as a list (h, or h and
c) so that a test can loop over cells. The cells and their facts come from the cell table.
"""

import numpy as np

from fusedrnn.functional import CELLS as CELL_TABLE

# gru_reset_before is Keras's reset_after=False GRU (gru_forward(..., reset_after=False)).
CELLS = tuple(CELL_TABLE)
GATES = {cell: info.gates for cell, info in CELL_TABLE.items()}
WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def num_states(cell):
    return 2 if CELL_TABLE[cell].has_cell_state else 1


def make_problem(rng, cell, T, B, I, H, dtype=np.float64, random_state=True, bias=True):
    """Inputs as a dict: x, states (list: h0[, c0]), weights (list: w_ih, w_hh, b_ih, b_hh).

    Weights are uniform in +-1/sqrt(H), PyTorch's default, so the recurrence neither saturates
    nor explodes and every gradient path carries signal.
    """
    G = GATES[cell]
    k = 1.0 / np.sqrt(H)

    def uniform(*shape, scale):
        return rng.uniform(-scale, scale, shape).astype(dtype)

    x = rng.standard_normal((T, B, I)).astype(dtype)
    states = [uniform(B, H, scale=1.0) if random_state else None for _ in range(num_states(cell))]
    weights = [uniform(G * H, I, scale=k), uniform(G * H, H, scale=k),
               uniform(G * H, scale=k) if bias else None,
               uniform(G * H, scale=k) if bias else None]
    return dict(x=x, states=states, weights=weights)


def make_weights(rng, cell, I, H, dtype=np.float32, proj=0):
    """One layer's weights as the uniform op's dict (with ``weight_hr`` (proj, H) when proj),
    uniform in +-0.3."""
    G, P = GATES[cell], proj or H
    w = dict(weight_ih=rng.uniform(-0.3, 0.3, (G * H, I)), weight_hh=rng.uniform(-0.3, 0.3, (G * H, P)),
             bias_ih=rng.uniform(-0.3, 0.3, G * H), bias_hh=rng.uniform(-0.3, 0.3, G * H))
    if proj:
        w["weight_hr"] = rng.uniform(-0.3, 0.3, (P, H))
    return {k: v.astype(dtype) for k, v in w.items()}


def make_lengths(rng, T, B):
    """Variable lengths in [0, T]; with B >= 3 both extremes (T and 0) are present."""
    lengths = rng.integers(0, T + 1, size=B)
    if B >= 3:
        lengths[0], lengths[1] = T, 0
    return lengths


def make_sorted_lengths(T, B):
    """Lengths sorted longest first, as a PackedSequence orders its sequences: two of each from T
    down to 1, the rest 1, the last two 0. Each step's running sequences are then the first ones,
    so the kernels leave the others out of their products; with B = 70 the first step runs 68 rows,
    past one 64-row block, and later ones a few, so that the backward's GEMMs over all steps (and
    a merged input GEMM) gather the rows that ran (three quarters of them take no step)."""
    lengths = np.maximum(T - np.arange(B) // 2, 1)
    lengths[-2:] = 0
    return lengths


def make_cotangents(rng, y, final_states):
    """Random cotangents (never ones: ones hide transposed or swapped gradients)."""
    dy = rng.standard_normal(y.shape).astype(y.dtype)
    return dy, [rng.standard_normal(s.shape).astype(s.dtype) for s in final_states]


def astype(problem, dtype):
    """The same problem with every array converted to dtype (None stays None)."""
    def conv(a):
        return None if a is None else np.asarray(a, dtype=dtype)
    return dict(x=conv(problem["x"]), states=[conv(s) for s in problem["states"]],
                weights=[conv(w) for w in problem["weights"]])


def forward(module, cell, problem, lengths=None, reverse=False, training=True, **options):
    """-> (y, final_states list, saved). options: mask=, masked_output=, ..."""
    states = list(problem["states"]) + [None] * (2 - len(problem["states"]))
    weights = dict(zip(WEIGHT_NAMES, problem["weights"]))
    y, h_n, c_n, saved = module.recurrent_forward(cell, problem["x"], *states, weights, lengths=lengths,
                                                  reverse=reverse, training=training, **options)
    return y, [h_n] if c_n is None else [h_n, c_n], saved


def backward(module, cell, dy, d_final_states, saved):
    """-> (dx, d_initial_states list, d_weights list of 4: dw_ih, dw_hh, db_ih, db_hh)."""
    d_states = list(d_final_states) + [None] * (2 - len(d_final_states))
    dx, dh0, dc0, dweights = module.recurrent_backward(dy, *d_states, saved)
    return dx, [dh0] if num_states(cell) == 1 else [dh0, dc0], [dweights[name] for name in WEIGHT_NAMES]


def loss(y, final_states, dy, d_final_states):
    """The scalar whose gradient backward(dy, d_final_states) computes."""
    return np.sum(y * dy) + sum(np.sum(s * d) for s, d in zip(final_states, d_final_states))

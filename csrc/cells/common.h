// What every cell shares: the recurrent state of one hidden unit of one sequence, the activations
// and the host/device qualifier.
//
// A cell is a struct of static functions on ONE hidden unit of ONE sequence at one time step
// (or a vector of them: the code is the same):
//
//   kName           the cell's name, in Python and in the cell table (recurrence.h)
//   kGates          G, rows of weight_ih / weight_hh per hidden unit (gate order as PyTorch's)
//   kSaved          values per unit that forward saves for backward (post-activation gates, ...)
//   kHasCell        whether the state carries a cell value c besides h (LSTM)
//   kSplitGradient  whether the gradient reaching W_hh h differs from the one reaching W_ih x;
//                   only the last gate's may differ (GRU: the reset gate multiplies W_hn h + b_hn)
//   kTwoPhase       whether the last gate's recurrent product needs a value the first gates
//                   give (reset-before-product GRU); such a cell has its own interface (gru.h)
//
//   forward(xg[G], hg[G], prev, next&, saved[kSaved])
//       xg: W_ih x + b_ih of this unit, one value per gate; hg: W_hh h + b_hh, likewise.
//       A one-phase cell writes it as two stages, and forward_in_two_stages (below) joins them:
//   kActivated      values the first stage gives the second (0 in a two-phase cell)
//   activate(xg[G], hg[G], act&[kActivated])
//       the gates' activations that need nothing but this step's xg and hg;
//   update(xg[G], hg[G], act[kActivated], prev, next&, saved[kSaved])
//       the rest of forward.
//       Why two stages: each activation is a chain of some 20 dependent operations (exp, then a
//       division), and in one pass a unit's chains queue behind each other (GRU: r, then
//       tanh(x_n + r h_n)); a core overlaps independent chains only within a short window. The
//       CPU driver runs activate() on a whole chunk of units before update() on it, so that the
//       first stage's chains, of every vector and gate of the chunk, are independent. Measured on
//       a Zen 3 (AVX2): a GRU row of 16 units alone in a loop, 46 -> 24 ns per 8 units; whole
//       forward calls at T=100, B=64, one thread, where the pointwise math dominates (H=16, I=1
//       and H=64, I=16), 7-11% faster at best, 12-22% at the quartile; results bit for bit the same.
//   backward(saved, prev, next, d_next, dgx&[G], dgh&[G], d_prev&)
//       d_next: total gradient reaching this step's new state (h and c);
//       dgx / dgh: gradient of xg / hg (equal unless kSplitGradient);
//       d_prev: the part of the gradient of the previous state that does NOT go through W_hh
//       (the driver adds dgh . W_hh to it).
//
// Gradient contract: cells and kernels write (=) their outputs; the Python layer accumulates
// (+=) into param.grad, as PyTorch does.
#pragma once

// T is float or double (on a GPU, or the host's scalar tests), or on the CPU a Vec<float|double>
// (cpu/simd.h): there a cell's code runs on a chunk of units at once, inlined into the driver's
// per-instruction-set functions. The activations are cells/math.h's on scalars and cpu/math.h's
// on vectors (found by argument-dependent lookup); nothing here depends on a backend.
#include "cells/math.h"
#include "host_device.h"

namespace fusedrnn {

template <class T>
struct State {
  T h;
  T c;  // used by cells with kHasCell only
};

// A one-phase cell's forward: its two stages on one unit.
template <class Cell, class T>
FUSEDRNN_HD void forward_in_two_stages(const T* xg, const T* hg, const State<T>& prev, State<T>& next, T* saved) {
  T act[Cell::kActivated > 0 ? Cell::kActivated : 1];
  Cell::activate(xg, hg, act);
  Cell::update(xg, hg, act, prev, next, saved);
}

}  // namespace fusedrnn

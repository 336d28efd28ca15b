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

}  // namespace fusedrnn

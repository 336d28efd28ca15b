// The CPU backend's entry points: forward and backpropagation through time of one recurrent
// layer in one direction, for every cell. The arguments and their shapes are recurrence.h's;
// how the driver runs them: cpu/driver.h, cpu/forward.cc, cpu/backward.cc.
#pragma once

#include "recurrence.h"

namespace fusedrnn::cpu {

// Both run one OpenMP team over the whole time loop and must be called from outside any parallel
// region. Every output is overwritten (=).
template <class T>
void forward(CellKind cell, const ForwardArgs<T>& args);
template <class T>
void backward(CellKind cell, const BackwardArgs<T>& args);

// Whether forward reads the weights in place, packing nothing (so a PackedWeights given to it
// goes unused): a one-step call of one sequence (a generation step), without bfloat16 weights, a
// projection or a two-phase cell. Each product is then matrix-times-vector, which reads every
// weight once whatever their layout; packing them first, or checking that a cached packed copy
// is current, would read them a second time.
inline bool one_step_in_place(int64_t steps, int64_t B, bool bf16, bool projected, bool two_phase) {
  return steps == 1 && B == 1 && !bf16 && !projected && !two_phase;
}

}  // namespace fusedrnn::cpu

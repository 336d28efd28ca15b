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

}  // namespace fusedrnn::cpu

// The CPU backend's entry points: forward and backpropagation through time of one recurrent
// layer in one direction, for every cell. The arguments and their shapes are recurrence.h's;
// how the driver runs them: cpu/driver.h, cpu/forward.cc, cpu/backward.cc.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>

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

// forward's team for a float32 layer of this cell, batch and size (no projection, every sequence
// taking every step): its thread count, and whether it splits the batch. For tests.
std::pair<int, bool> forward_team(CellKind cell, int64_t B, int64_t H);

// How the teams split a step's work (cpu/driver.h's plan_team): by its rule (the batch for layers
// whose recurrent weights fit in L2, else the units), or, for tests, always by units or
// always by rows where the team has a row for each thread (_core._set_team_split).
enum class TeamSplit : int { kRule = 0, kUnits = 1, kRows = 2 };
inline std::atomic<int>& team_split_setting() {
  static std::atomic<int> setting{static_cast<int>(TeamSplit::kRule)};
  return setting;
}

}  // namespace fusedrnn::cpu

// The CUDA backend's entry points: forward and backpropagation through time of one recurrent
// layer in one direction, for every cell, with the CPU backend's contract (recurrence.h). Every
// array of the arguments is on the device, lengths and mask included; the caller computes
// first_active_steps (schedule.h) on the host and passes its B values on the device as
// `first_step` (null unless repeat_masked_output). How the kernels run: cuda/driver.h.
#pragma once

#include <cstdint>

#include "recurrence.h"

namespace fusedrnn::cuda {

// How the time loop runs.
//   kStepwise: one kernel launch per step phase over all (sequence, unit) pairs, a thread per
//     pair; blocks of 8 sequences x 32 units share tiles of the state and of the weights in
//     shared memory, so each step reads the weights from global memory (L2) once per 8 sequences.
//   kPersistent: one launch for the whole loop, one block per sequence (sequences are
//     independent), __syncthreads() between phases; the recurrent weights are copied into shared
//     memory once when they fit (persistent_weights_fit), else read from global memory.
//   kWarp: as kStepwise, but a warp per pair, its 32 lanes splitting each dot product (reduced
//     with shuffles): 32 times the threads, for batches too small to fill a GPU thread by pair.
//   kAuto: kPersistent when the weights fit in shared memory, else kWarp when there are fewer
//     than kWarpPairs pairs, else kStepwise.
enum class Algorithm { kAuto, kStepwise, kPersistent, kWarp };
constexpr int64_t kWarpPairs = int64_t(1) << 15;

template <class T>
void forward(CellKind cell, const ForwardArgs<T>& args, const int64_t* first_step, Algorithm algorithm);
template <class T>
void backward(CellKind cell, const BackwardArgs<T>& args, const int64_t* first_step, Algorithm algorithm);

// Whether `bytes` of weights fit in one block's shared memory on the current device (opt-in limit).
bool persistent_weights_fit(int64_t bytes);

}  // namespace fusedrnn::cuda

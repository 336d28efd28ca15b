// Compile check, not a test that runs: the backend-neutral headers (the cells, their scalar
// math, the masking schedule, the cell table) must compile under nvcc, for float and double, on
// the device. .ci/run compiles this file where nvcc is installed; nothing launches the kernels.
#include <cstdint>

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "recurrence.h"
#include "schedule.h"

namespace {

using fusedrnn::State;

// One unit per thread: forward, then backward from its results.
template <class Cell, class T>
__global__ void cell_step(int n, const T* xg, const T* hg, const T* h, const T* c, const T* dh, const T* dc,
                          T* out) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const State<T> prev{h[i], c[i]};
  State<T> next{T(0), T(0)};
  T saved[S > 0 ? S : 1];
  Cell::forward(xg + i * G, hg + i * G, prev, next, saved);
  State<T> d_prev{T(0), T(0)};
  T dgx[G], dgh[G];
  Cell::backward(saved, prev, next, State<T>{dh[i], dc[i]}, dgx, dgh, d_prev);
  out[i] = next.h + next.c + dgx[0] + dgh[G - 1] + d_prev.h + d_prev.c;
}

// The two-phase cell's four steps, its last gate's product taken as the identity.
template <class T>
__global__ void gru_reset_before_step(int n, const T* xg, const T* hg, const T* h, const T* dh, T* out) {
  using Cell = fusedrnn::GruResetBeforeCell;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const State<T> prev{h[i], T(0)};
  State<T> next{T(0), T(0)};
  T rz[2], rh, saved[Cell::kSaved], dg[Cell::kGates];
  Cell::reset(xg + i * 3, hg + i * 3, prev, rz, rh);
  Cell::output(xg[i * 3 + 2], rh + hg[i * 3 + 2], rz, rh, prev, next, saved);
  State<T> d_prev{T(0), T(0)};
  Cell::output_backward(saved, prev, State<T>{dh[i], T(0)}, dg, d_prev);
  Cell::reset_backward(saved, prev, dg[2], dg, d_prev);
  out[i] = next.h + dg[0] + dg[1] + dg[2] + d_prev.h;
}

// The schedule on the device: which (step, sequence) pairs run, and their saved slots.
__global__ void schedule_slots(fusedrnn::ForwardArgs<float> args, const int64_t* first_step, int64_t* out) {
  const fusedrnn::Schedule sch(args, first_step);
  const int64_t s = blockIdx.x, b = threadIdx.x, t = sch.row(s);
  out[s * args.B + b] = sch.active(t, b) ? sch.new_slot(t) : sch.repeats_output(s, b) ? -sch.prev_slot(t) : 0;
}

template <class T>
void instantiate() {
  (void)&cell_step<fusedrnn::RnnCell<fusedrnn::Activation::kTanh>, T>;
  (void)&cell_step<fusedrnn::RnnCell<fusedrnn::Activation::kRelu>, T>;
  (void)&cell_step<fusedrnn::LstmCell, T>;
  (void)&cell_step<fusedrnn::GruCell, T>;
  (void)&gru_reset_before_step<T>;
}

}  // namespace

void instantiate_all() {
  instantiate<float>();
  instantiate<double>();
  (void)&schedule_slots;
  static_assert(fusedrnn::cell_info(fusedrnn::CellKind::kLstm).gates == 4, "the cell table is constexpr");
}

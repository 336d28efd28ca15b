// THE time-loop driver, one for every cell (csrc/cells/*.h supply the pointwise math).
//
// Forward, one layer, one direction:
//   1. One merged GEMM over all T*B rows: xp = x W_ih^T + b_ih.
//   2. One OpenMP team spans the whole time loop. Hidden units are cut into chunks of one GEMM
//      panel width (kPanel units); each thread owns a contiguous run of chunks and computes ALL
//      gates of its units, so it applies the cell right after its recurrent GEMM block, while
//      the values are still in L1. It packs its slice of W_hh once per call with the gates of a
//      chunk interleaved panel by panel, so the slice stays in its core's L2 for all T steps.
//      The state is double-buffered: step s reads buffer s&1 and writes the other, so one
//      barrier per step is enough.
//   3. Training saves the cell's post-activation values and every state; inference saves nothing.
//
// Backward (reverse time), per step: the recurrent product dh += dG_{s+1} W_hh for the thread's
// own units (a column slice of W_hh, packed once, L2-resident), fused with the cell's pointwise
// backward that yields dG_s; one barrier per step. After the loop, merged GEMMs with K = T*B give
// dW_ih = dGx^T x, dW_hh = dGh^T h_prev and dx = dGx W_ih, and the biases are column sums.
//
// Gradient contract: outputs are overwritten (=); the Python layer accumulates (+=).
#include "cpu/recurrence.h"

#include <algorithm>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "cpu/buffer.h"
#include "cpu/gemm.h"

namespace fusedrnn::cpu {
namespace {

// Batch rows per recurrent GEMM call: bounds each thread's scratch (kRowBlock x G x kPanel values,
// 16 KiB for an LSTM) so that it stays in L1 between the GEMM and the pointwise update.
constexpr int64_t kRowBlock = 64;

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::vector<int64_t> lengths_or_full(const int64_t* lengths, int64_t B, int64_t T) {
  return lengths ? std::vector<int64_t>(lengths, lengths + B) : std::vector<int64_t>(B, T);
}

// Copies n values, or writes zeros when there is no source (an absent h0 or bias).
template <class T>
void copy_or_zero(T* dst, const T* src, int64_t n) {
  if (src) {
    std::copy(src, src + n, dst);
  } else {
    std::fill(dst, dst + n, T(0));
  }
}

// dst[j] = sum_r src[r, j]. Threads split the columns and every thread adds its rows in order,
// so the result is the same whatever the thread count and needs no atomics.
template <class T>
void column_sums(int64_t rows, int64_t cols, const T* src, T* dst) {
  constexpr int64_t kCols = 64;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (int64_t j0 = 0; j0 < cols; j0 += kCols) {
    const int64_t n = std::min(kCols, cols - j0);
    T acc[kCols] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = src + r * cols + j0;
      for (int64_t j = 0; j < n; ++j) acc[j] += row[j];
    }
    std::copy(acc, acc + n, dst + j0);
  }
}

// How the hidden units are cut among the team: chunks of kPanel units, contiguous runs of chunks.
template <class T>
struct UnitChunks {
  int64_t count;  // chunks in all
  int threads;    // team size asked for: no more threads than chunks

  explicit UnitChunks(int64_t H)
      : count(ceil_div(H, kPanel<T>)),
        threads(static_cast<int>(std::min<int64_t>(max_threads(), count))) {}

  // This thread's chunks [first, last), for the team it actually got.
  void mine(int64_t* first, int64_t* last) const {
    const int64_t tid = thread_id(), team = team_size();
    *first = count * tid / team;
    *last = count * (tid + 1) / team;
  }
};

// The pointwise half of a forward step for one sequence and one chunk of units.
template <class Cell, class T>
struct ForwardStep {
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  static constexpr int64_t NR = kPanel<T>;
  const ForwardArgs<T>& a;
  const std::vector<int64_t>& len;
  const T* xp;    // [T, B, G*H] input projections (with b_ih)
  const T* b_hh;  // [G*H] (zeros when the layer has no bias)

  // rec: this sequence's row of the recurrent GEMM block, gate g of unit u0+w at rec[g*NR + w].
  void row(int64_t s, int64_t b, int64_t u0, int64_t width, const T* rec, const T* h_prev,
           T* h_next, const T* c_prev, T* c_next) const {
    const int64_t B = a.B, H = a.H, GH = G * H;
    const int64_t state = b * H + u0;
    const bool training = a.saved_h != nullptr;
    if (s >= len[b]) {  // finished: carry the state, output zero, save zeros (finite, unused)
      std::copy(h_prev + state, h_prev + state + width, h_next + state);
      if constexpr (Cell::kHasCell) std::copy(c_prev + state, c_prev + state + width, c_next + state);
      std::fill_n(a.y + (s * B + b) * H + u0, width, T(0));
      if (training) {
        std::fill_n(a.saved_h + ((s + 1) * B + b) * H + u0, width, T(0));
        if constexpr (Cell::kHasCell) std::fill_n(a.saved_c + ((s + 1) * B + b) * H + u0, width, T(0));
        for (int k = 0; k < S; ++k) std::fill_n(a.saved_gates + (s * B + b) * S * H + k * H + u0, width, T(0));
      }
      return;
    }
    const int64_t t = a.reverse ? len[b] - 1 - s : s;
    const T* x_row = xp + (t * B + b) * GH + u0;
    const T* bias = b_hh + u0;
    T* y_row = a.y + (t * B + b) * H + u0;
    const int64_t new_slot = t + (a.reverse ? 0 : 1);
    for (int64_t w = 0; w < width; ++w) {
      T xg[G], hg[G], saved[S > 0 ? S : 1];
      for (int g = 0; g < G; ++g) {
        xg[g] = x_row[g * H + w];
        hg[g] = rec[g * NR + w] + bias[g * H + w];
      }
      State<T> prev{h_prev[state + w], Cell::kHasCell ? c_prev[state + w] : T(0)};
      State<T> next{};
      Cell::forward(xg, hg, prev, next, saved);
      h_next[state + w] = next.h;
      y_row[w] = next.h;
      if constexpr (Cell::kHasCell) c_next[state + w] = next.c;
      if (training) {
        a.saved_h[(new_slot * B + b) * H + u0 + w] = next.h;
        if constexpr (Cell::kHasCell) a.saved_c[(new_slot * B + b) * H + u0 + w] = next.c;
        for (int k = 0; k < S; ++k) a.saved_gates[(t * B + b) * S * H + k * H + u0 + w] = saved[k];
      }
    }
  }
};

template <class Cell, class T>
void forward_layer(const ForwardArgs<T>& a) {
  constexpr int G = Cell::kGates;
  constexpr int64_t NR = kPanel<T>;
  const int64_t steps = a.T_, B = a.B, I = a.I, H = a.H, GH = G * H, BH = B * H;
  const std::vector<int64_t> len = lengths_or_full(a.lengths, B, steps);

  // 1. xp = x W_ih^T + b_ih for all steps: rows start as the bias, the GEMM adds onto them.
  Buffer<T> xp(steps * B * GH);
  for (int64_t r = 0; r < steps * B; ++r) copy_or_zero(xp.get() + r * GH, a.b_ih, GH);
  gemm<T>(steps * B, GH, I, a.x, I, 1, a.w_ih, 1, I, xp.get(), GH, /*accumulate=*/true);
  Buffer<T> b_hh(GH);
  copy_or_zero(b_hh.get(), a.b_hh, GH);

  // 2. The initial state, in the double buffer and, for backward, in its saved slot.
  Buffer<T> h_state(2 * BH), c_state(Cell::kHasCell ? 2 * BH : 0);
  copy_or_zero(h_state.get(), a.h0, BH);
  if constexpr (Cell::kHasCell) copy_or_zero(c_state.get(), a.c0, BH);
  if (a.saved_h) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t slot = a.reverse ? len[b] : 0;
      std::copy_n(h_state.get() + b * H, H, a.saved_h + (slot * B + b) * H);
      if constexpr (Cell::kHasCell) std::copy_n(c_state.get() + b * H, H, a.saved_c + (slot * B + b) * H);
    }
  }

  const UnitChunks<T> chunks(H);
  const int64_t cols = G * NR;  // one chunk's GEMM columns: G panels, one per gate
  const int64_t packed_size = packed_b_size<T>(H, cols);
  Buffer<T> packed(chunks.count * packed_size);
  Buffer<T> scratch(chunks.threads * kRowBlock * cols);
  const ForwardStep<Cell, T> step{a, len, xp.get(), b_hh.get()};

#ifdef _OPENMP
#pragma omp parallel num_threads(chunks.threads)
#endif
  {
    int64_t first, last;
    chunks.mine(&first, &last);
    T* rec = scratch.get() + thread_id() * kRowBlock * cols;
    // Each thread packs only the chunks it uses, so no barrier is needed before the loop.
    for (int64_t c = first; c < last; ++c) {
      int64_t col_offset[G * NR];
      for (int g = 0; g < G; ++g) {
        for (int64_t w = 0; w < NR; ++w) {
          const int64_t u = c * NR + w;
          col_offset[g * NR + w] = u < H ? (g * H + u) * H : -1;  // row g*H+u of W_hh
        }
      }
      pack_b<T>(H, cols, a.w_hh, col_offset, 1, packed.get() + c * packed_size);
    }
    for (int64_t s = 0; s < steps; ++s) {
      const T* h_prev = h_state.get() + (s & 1) * BH;
      T* h_next = h_state.get() + ((s + 1) & 1) * BH;
      const T* c_prev = Cell::kHasCell ? c_state.get() + (s & 1) * BH : nullptr;
      T* c_next = Cell::kHasCell ? c_state.get() + ((s + 1) & 1) * BH : nullptr;
      for (int64_t c = first; c < last; ++c) {
        const int64_t u0 = c * NR, width = std::min(NR, H - u0);
        for (int64_t b0 = 0; b0 < B; b0 += kRowBlock) {
          const int64_t rows = std::min(kRowBlock, B - b0);
          gemm_packed_b<T>(rows, cols, H, h_prev + b0 * H, H, packed.get() + c * packed_size, rec,
                           cols, /*accumulate=*/false);
          for (int64_t b = b0; b < b0 + rows; ++b) {
            step.row(s, b, u0, width, rec + (b - b0) * cols, h_prev, h_next, c_prev, c_next);
          }
        }
      }
#ifdef _OPENMP
#pragma omp barrier
#endif
    }
  }

  std::copy_n(h_state.get() + (steps & 1) * BH, BH, a.h_n);
  if constexpr (Cell::kHasCell) std::copy_n(c_state.get() + (steps & 1) * BH, BH, a.c_n);
}

// The pointwise half of a backward step for one sequence and one chunk of units.
template <class Cell, class T>
struct BackwardStep {
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  const BackwardArgs<T>& a;
  const std::vector<int64_t>& len;
  T* dgx;       // [T, B, G*H] gradient of x W_ih^T + b_ih, time order
  T* dgh;       // [T, B, G*H] gradient of h W_hh^T + b_hh (== dgx unless kSplitGradient)
  T* dh_carry;  // [B, H] gradient reaching the state besides the recurrent product
  T* dc_carry;  // [B, H] the same for c (LSTM)

  // rec: dG_{s+1} W_hh for this sequence and units u0.., zero at the last step.
  // dg_step: this step's dgh again, in step order, for the next recurrent product.
  void row(int64_t s, int64_t b, int64_t u0, int64_t width, const T* rec, T* dg_step) const {
    const int64_t B = a.B, H = a.H, GH = G * H;
    const int64_t state = b * H + u0;
    if (s >= len[b]) {  // finished at this step: the state was carried, so is its gradient
      for (int64_t w = 0; w < width; ++w) dh_carry[state + w] += rec[w];
      for (int g = 0; g < G; ++g) {
        std::fill_n(dgx + (s * B + b) * GH + g * H + u0, width, T(0));
        if constexpr (Cell::kSplitGradient) std::fill_n(dgh + (s * B + b) * GH + g * H + u0, width, T(0));
        std::fill_n(dg_step + b * GH + g * H + u0, width, T(0));
      }
      return;
    }
    const int64_t t = a.reverse ? len[b] - 1 - s : s;
    const int64_t prev_slot = t + (a.reverse ? 1 : 0), new_slot = t + (a.reverse ? 0 : 1);
    const T* dy_row = a.dy ? a.dy + (t * B + b) * H + u0 : nullptr;
    const T* saved_row = a.saved_gates + (t * B + b) * S * H + u0;
    T* dgx_row = dgx + (t * B + b) * GH + u0;
    T* dgh_row = dgh + (t * B + b) * GH + u0;
    T* dg_step_row = dg_step + b * GH + u0;
    const int64_t prev_at = (prev_slot * B + b) * H + u0, new_at = (new_slot * B + b) * H + u0;
    for (int64_t w = 0; w < width; ++w) {
      T saved[S > 0 ? S : 1], gx[G], gh[G];
      for (int k = 0; k < S; ++k) saved[k] = saved_row[k * H + w];
      const State<T> prev{a.saved_h[prev_at + w], Cell::kHasCell ? a.saved_c[prev_at + w] : T(0)};
      const State<T> next{a.saved_h[new_at + w], Cell::kHasCell ? a.saved_c[new_at + w] : T(0)};
      const State<T> d_next{dh_carry[state + w] + rec[w] + (dy_row ? dy_row[w] : T(0)),
                            Cell::kHasCell ? dc_carry[state + w] : T(0)};
      State<T> d_prev{};
      Cell::backward(saved, prev, next, d_next, gx, gh, d_prev);
      for (int g = 0; g < G; ++g) {
        dgx_row[g * H + w] = gx[g];
        if constexpr (Cell::kSplitGradient) dgh_row[g * H + w] = gh[g];
        dg_step_row[g * H + w] = gh[g];
      }
      dh_carry[state + w] = d_prev.h;
      if constexpr (Cell::kHasCell) dc_carry[state + w] = d_prev.c;
    }
  }
};

template <class Cell, class T>
void backward_layer(const BackwardArgs<T>& a) {
  constexpr int G = Cell::kGates;
  constexpr int64_t NR = kPanel<T>;
  const int64_t steps = a.T_, B = a.B, I = a.I, H = a.H, GH = G * H, BH = B * H;
  const std::vector<int64_t> len = lengths_or_full(a.lengths, B, steps);

  Buffer<T> dgx(steps * B * GH), dgh_split(Cell::kSplitGradient ? steps * B * GH : 0);
  T* dgh = Cell::kSplitGradient ? dgh_split.get() : dgx.get();
  // dgh of the step just done and of the one before, in step order: the recurrent product reads
  // one while the team writes the other.
  Buffer<T> dg_step(2 * B * GH);
  Buffer<T> dh_carry(BH), dc_carry(Cell::kHasCell ? BH : 0);
  copy_or_zero(dh_carry.get(), a.dh_n, BH);
  if constexpr (Cell::kHasCell) copy_or_zero(dc_carry.get(), a.dc_n, BH);

  const UnitChunks<T> chunks(H);
  const int64_t packed_size = packed_b_size<T>(GH, NR);  // columns u0..u0+NR of W_hh, K = G*H
  Buffer<T> packed(chunks.count * packed_size);
  Buffer<T> scratch(chunks.threads * kRowBlock * NR);
  const BackwardStep<Cell, T> step{a, len, dgx.get(), dgh, dh_carry.get(), dc_carry.get()};

#ifdef _OPENMP
#pragma omp parallel num_threads(chunks.threads)
#endif
  {
    int64_t first, last;
    chunks.mine(&first, &last);
    T* rec = scratch.get() + thread_id() * kRowBlock * NR;
    for (int64_t c = first; c < last; ++c) {
      int64_t col_offset[NR];
      for (int64_t w = 0; w < NR; ++w) col_offset[w] = c * NR + w < H ? c * NR + w : -1;
      pack_b<T>(GH, NR, a.w_hh, col_offset, H, packed.get() + c * packed_size);
    }
    // rec = dg_step(of step `from`) W_hh for rows b0.., units of chunk c; zero when there is none.
    auto recurrent = [&](int64_t from, int64_t c, int64_t b0, int64_t rows) {
      if (from >= steps) {
        std::fill_n(rec, rows * NR, T(0));
      } else {
        gemm_packed_b<T>(rows, NR, GH, dg_step.get() + (from & 1) * B * GH + b0 * GH, GH,
                         packed.get() + c * packed_size, rec, NR, /*accumulate=*/false);
      }
    };
    for (int64_t s = steps - 1; s >= 0; --s) {
      T* dg_cur = dg_step.get() + (s & 1) * B * GH;
      for (int64_t c = first; c < last; ++c) {
        const int64_t u0 = c * NR, width = std::min(NR, H - u0);
        for (int64_t b0 = 0; b0 < B; b0 += kRowBlock) {
          const int64_t rows = std::min(kRowBlock, B - b0);
          recurrent(s + 1, c, b0, rows);
          for (int64_t b = b0; b < b0 + rows; ++b) step.row(s, b, u0, width, rec + (b - b0) * NR, dg_cur);
        }
      }
#ifdef _OPENMP
#pragma omp barrier
#endif
    }
    // The gradient of the initial state: what step 0 sends back through W_hh, plus the carry.
    for (int64_t c = first; c < last; ++c) {
      const int64_t u0 = c * NR, width = std::min(NR, H - u0);
      for (int64_t b0 = 0; b0 < B; b0 += kRowBlock) {
        const int64_t rows = std::min(kRowBlock, B - b0);
        recurrent(0, c, b0, rows);
        for (int64_t b = b0; b < b0 + rows; ++b) {
          for (int64_t w = 0; w < width; ++w) {
            a.dh0[b * H + u0 + w] = rec[(b - b0) * NR + w] + dh_carry.get()[b * H + u0 + w];
          }
        }
      }
    }
  }
  if constexpr (Cell::kHasCell) std::copy_n(dc_carry.get(), BH, a.dc0);

  // Merged GEMMs over all T*B rows. h_prev of time row t is saved_h[t + reverse].
  const int64_t rows = steps * B;
  const T* h_prev = a.saved_h + (a.reverse ? BH : 0);
  gemm<T>(rows, I, GH, dgx.get(), GH, 1, a.w_ih, I, 1, a.dx, I, false);
  gemm<T>(GH, I, rows, dgx.get(), 1, GH, a.x, I, 1, a.dw_ih, I, false);
  gemm<T>(GH, H, rows, dgh, 1, GH, h_prev, H, 1, a.dw_hh, H, false);
  if (a.db_ih) column_sums(rows, GH, dgx.get(), a.db_ih);
  if (a.db_hh) column_sums(rows, GH, dgh, a.db_hh);
}

}  // namespace

int gate_count(CellKind cell) {
  switch (cell) {
    case CellKind::kRnnTanh:
    case CellKind::kRnnRelu: return RnnCell<Activation::kTanh>::kGates;
    case CellKind::kLstm: return LstmCell::kGates;
    case CellKind::kGru: return GruCell::kGates;
  }
  return 0;
}

int saved_count(CellKind cell) {
  switch (cell) {
    case CellKind::kRnnTanh:
    case CellKind::kRnnRelu: return RnnCell<Activation::kTanh>::kSaved;
    case CellKind::kLstm: return LstmCell::kSaved;
    case CellKind::kGru: return GruCell::kSaved;
  }
  return 0;
}

bool has_cell_state(CellKind cell) { return cell == CellKind::kLstm; }

template <class T>
void forward(CellKind cell, const ForwardArgs<T>& args) {
  switch (cell) {
    case CellKind::kRnnTanh: return forward_layer<RnnCell<Activation::kTanh>, T>(args);
    case CellKind::kRnnRelu: return forward_layer<RnnCell<Activation::kRelu>, T>(args);
    case CellKind::kLstm: return forward_layer<LstmCell, T>(args);
    case CellKind::kGru: return forward_layer<GruCell, T>(args);
  }
}

template <class T>
void backward(CellKind cell, const BackwardArgs<T>& args) {
  switch (cell) {
    case CellKind::kRnnTanh: return backward_layer<RnnCell<Activation::kTanh>, T>(args);
    case CellKind::kRnnRelu: return backward_layer<RnnCell<Activation::kRelu>, T>(args);
    case CellKind::kLstm: return backward_layer<LstmCell, T>(args);
    case CellKind::kGru: return backward_layer<GruCell, T>(args);
  }
}

template void forward<float>(CellKind, const ForwardArgs<float>&);
template void forward<double>(CellKind, const ForwardArgs<double>&);
template void backward<float>(CellKind, const BackwardArgs<float>&);
template void backward<double>(CellKind, const BackwardArgs<double>&);

}  // namespace fusedrnn::cpu

// What every backend shares about one recurrent layer in one direction: the cell table, and the
// arguments of forward and backpropagation through time with every field's shape. A backend
// (cpu/, later cuda/) runs these; layer-level features (stacking, two directions, projections
// of several layers) are built by the caller from such calls.
//
// Letters: T time steps, B batch, I input size, H hidden size, G gates of the cell
// (RNN 1, GRU 3, LSTM 4), S values per unit the cell saves for backward (RNN 0, GRU 4, LSTM 4),
// P the size of the recurrent state h: P = H, except for an LSTM with a projection
// (PyTorch's proj_size), where h_t = W_hr m_t projects the cell's output m_t = o * tanh(c_t).
// All arrays are C-contiguous and time-major; weights are laid out as PyTorch's.
//
// Steps are taken at time t = 0 .. T-1, or T-1 down to 0 with reverse. A masked (t, b) pair
// carries the state of sequence b unchanged; its output is zero, or, with repeat_masked_output
// (Keras), the last output (zero before the sequence's first step). Masks come from lengths
// (t < len[b]: with reverse, each sequence then starts at its own last valid step, PyTorch's
// packed semantics) or from an explicit mask (schedule.h says which steps run).
//
// Gradient contract: every output is overwritten (=), never accumulated into; the Python layer
// accumulates into param.grad (+=).
#pragma once

#include <cstdint>
#include <stdexcept>

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"

namespace fusedrnn {

namespace cpu {
class PackedWeights;  // cpu/packed_weights.h
}

// The cell table. Each kind names one cell struct (cells/*.h) and with_cell() is the one place
// that maps a kind to it; every fact about a cell (its name, gates, saved values, ...) is the
// struct's own constant, read through cell_info() or the struct, never written down again.
// kGru is PyTorch's GRU (linear-before-reset, Keras reset_after=True); kGruResetBefore is
// Keras's reset_after=False, with the same weight layout.
enum class CellKind { kRnnTanh, kRnnRelu, kLstm, kGru, kGruResetBefore };

// Every kind, in the table's order (the order _core.cell_info() lists them in).
inline constexpr CellKind kCellKinds[] = {CellKind::kRnnTanh, CellKind::kRnnRelu, CellKind::kLstm,
                                          CellKind::kGru, CellKind::kGruResetBefore};

// Calls f(Cell{}) with the cell struct of `kind` and returns what it returns: code generic in the
// cell (a driver's layer function, a binding) is instantiated for every cell from this one switch.
template <class F>
constexpr decltype(auto) with_cell(CellKind kind, F&& f) {
  switch (kind) {
    case CellKind::kRnnTanh: return f(RnnCell<Activation::kTanh>{});
    case CellKind::kRnnRelu: return f(RnnCell<Activation::kRelu>{});
    case CellKind::kLstm: return f(LstmCell{});
    case CellKind::kGru: return f(GruCell{});
    case CellKind::kGruResetBefore: return f(GruResetBeforeCell{});
  }
  throw std::invalid_argument("fusedrnn: not a CellKind");
}

// A cell's facts as values, for code that holds a CellKind rather than a cell type.
struct CellInfo {
  const char* name;
  int gates;            // G (Cell::kGates)
  int saved;            // S (Cell::kSaved)
  bool has_cell_state;  // the state has c besides h (Cell::kHasCell)
  bool two_phase;       // the last gate's product waits for the first gates (Cell::kTwoPhase)
  bool split_gradient;  // the last gate's gradient of W_hh h differs from W_ih x's (Cell::kSplitGradient)
};

constexpr CellInfo cell_info(CellKind kind) {
  return with_cell(kind, [](auto cell) {
    using Cell = decltype(cell);
    return CellInfo{Cell::kName, Cell::kGates, Cell::kSaved, Cell::kHasCell, Cell::kTwoPhase, Cell::kSplitGradient};
  });
}

template <class T>
struct ForwardArgs {
  int64_t T_, B, I, H, P;     // (T_ because T names the element type); P = H without projection
  const T* x;                 // [T, B, I]
  const T* h0;                // [B, P], or null for zeros
  const T* c0;                // [B, H], or null for zeros (LSTM)
  const T* w_ih;              // [G*H, I]
  const T* w_hh;              // [G*H, P]
  const T* w_hr;              // [P, H] projection (LSTM with proj_size), or null for none
  const T* b_ih;              // [G*H], or null for none
  const T* b_hh;              // [G*H], or null for none
  const T* recurrent_scale;   // [B, P] multiplies h wherever h enters a recurrent product (not the
                              // state update): recurrent dropout; null for none; not with w_hr
  const int64_t* lengths;     // [B] with 0 <= len <= T, or null for all T
  const uint8_t* mask;        // [T, B] nonzero where a step is taken, or null (then lengths)
  bool repeat_masked_output;
  bool reverse;
  bool bf16_weights;          // inference only, float only: the recurrent product W_hh h in
                              // bfloat16 (on the CPU: cpu/gemm_bf16.h); not with w_hr,
                              // recurrent_scale, or a two-phase cell (reset-before-product GRU)
  bool bf16_projections;      // with bf16_weights: the input projections x W_ih^T in bfloat16 too
                              // (x and W_ih rounded, float32 sums)
  T* y;                       // out [T, B, P]
  T* h_n;                     // out [B, P]
  T* c_n;                     // out [B, H] (LSTM; else null)
  // What backward needs. Null in inference mode (nothing is saved); set in training mode.
  T* saved_gates;             // out [T, B, S*H]: per time row, S blocks of H (cell's saved values)
  T* saved_h;                 // out [T+1, B, P]: states; row t's input state is saved_h[t + reverse]
                              //     and its new state saved_h[t + !reverse]
  T* saved_c;                 // out [T+1, B, H]: the same for c (LSTM; else null)
  T* saved_m;                 // out [T, B, H]: the cell's output before projection (with w_hr only)
  // Packed copies of the weights kept across calls (the CPU backend's, cpu/packed_weights.h), or
  // null to pack them for this call alone. Its owner clears it whenever the weights may have changed.
  cpu::PackedWeights* packed;
};

template <class T>
struct BackwardArgs {
  int64_t T_, B, I, H, P;
  const T* x;                 // [T, B, I]   as given to forward
  const T* w_ih;              // [G*H, I]
  const T* w_hh;              // [G*H, P]
  const T* w_hr;              // [P, H] or null, as given to forward
  const T* recurrent_scale;   // [B, P] or null, as given to forward
  const int64_t* lengths;     // [B] or null, as given to forward
  const uint8_t* mask;        // [T, B] or null, as given to forward
  bool repeat_masked_output;
  bool reverse;
  const T* saved_gates;       // [T, B, S*H] from forward
  const T* saved_h;           // [T+1, B, P] from forward
  const T* saved_c;           // [T+1, B, H] from forward (LSTM; else null)
  const T* saved_m;           // [T, B, H] from forward (with w_hr; else null)
  const T* dy;                // [T, B, P] gradient of y, or null for zeros
  const T* dh_n;              // [B, P] gradient of h_n, or null for zeros
  const T* dc_n;              // [B, H] gradient of c_n, or null for zeros (LSTM)
  T* dx;                      // out [T, B, I], or null: not wanted (the input needs no gradient)
  T* dh0;                     // out [B, P]
  T* dc0;                     // out [B, H] (LSTM; else null)
  T* dw_ih;                   // out [G*H, I]
  T* dw_hh;                   // out [G*H, P]
  T* dw_hr;                   // out [P, H] (with w_hr; else null)
  T* db_ih;                   // out [G*H], or null to skip
  T* db_hh;                   // out [G*H], or null to skip
};

}  // namespace fusedrnn

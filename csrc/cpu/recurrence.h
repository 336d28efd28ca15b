// The CPU time-loop driver: forward and backpropagation through time of one recurrent layer in
// one direction, for every cell (csrc/cells/*.h). Layer-level features (stacking, two directions,
// projections) are built by the caller from these calls.
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
// packed semantics) or from an explicit mask.
//
// Gradient contract: every output is overwritten (=), never accumulated into; the Python layer
// accumulates into param.grad (+=).
#pragma once

#include <cstdint>

namespace fusedrnn::cpu {

// kGru is PyTorch's (linear-before-reset, Keras reset_after=True); kGruResetBefore is Keras's
// reset_after=False, with the same weight layout (cells/gru.h).
enum class CellKind { kRnnTanh, kRnnRelu, kLstm, kGru, kGruResetBefore };

int gate_count(CellKind cell);   // G
int saved_count(CellKind cell);  // S
bool has_cell_state(CellKind cell);

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
                              // bfloat16 (cpu/gemm_bf16.h); not with w_hr, recurrent_scale, or
                              // the reset-before-product GRU
  T* y;                       // out [T, B, P]
  T* h_n;                     // out [B, P]
  T* c_n;                     // out [B, H] (LSTM; else null)
  // What backward needs. Null in inference mode (nothing is saved); set in training mode.
  T* saved_gates;             // out [T, B, S*H]: per time row, S blocks of H (cell's saved values)
  T* saved_h;                 // out [T+1, B, P]: states; row t's input state is saved_h[t + reverse]
                              //     and its new state saved_h[t + !reverse]
  T* saved_c;                 // out [T+1, B, H]: the same for c (LSTM; else null)
  T* saved_m;                 // out [T, B, H]: the cell's output before projection (with w_hr only)
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
  T* dx;                      // out [T, B, I]
  T* dh0;                     // out [B, P]
  T* dc0;                     // out [B, H] (LSTM; else null)
  T* dw_ih;                   // out [G*H, I]
  T* dw_hh;                   // out [G*H, P]
  T* dw_hr;                   // out [P, H] (with w_hr; else null)
  T* db_ih;                   // out [G*H], or null to skip
  T* db_hh;                   // out [G*H], or null to skip
};

// Both run one OpenMP team over the whole time loop (see recurrence.cc) and must be called from
// outside any parallel region.
template <class T>
void forward(CellKind cell, const ForwardArgs<T>& args);
template <class T>
void backward(CellKind cell, const BackwardArgs<T>& args);

}  // namespace fusedrnn::cpu

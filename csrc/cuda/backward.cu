// The CUDA backward loop (backpropagation through time): one recurrent layer, one direction,
// every cell (the shared machinery and the two drivers, stepwise and persistent: cuda/driver.h).
//
// Per step (reverse time), for each (sequence b, unit u): the recurrent product dG_{s+1} W_hh for
// the unit's column of W_hh (dh of the unit), fused in the same thread with the cell's pointwise
// backward that yields dG_s. A projection adds a first phase (dh of each state dim, then
// dm = dh W_hr per unit); a two-phase cell a second (d(r*h) = da_n W_hn, then r's gradient).
// After the loop: dx = dGx W_ih, dW_ih = dGx^T x, dW_hh = dGh^T h_prev (and dW_hr) as GEMMs over
// all T*B rows, and the bias gradients as column sums, one thread per column in row order:
// deterministic, no atomics.
// Which steps ran and where their states were saved: schedule.h.
//
// Gradient contract: outputs are overwritten (=); the Python layer accumulates (+=).
#include "cuda/driver.h"
#include "cuda/gemm.h"

namespace fusedrnn::cuda {
namespace {

// Device buffers of one backward call.
template <class T>
struct BackwardState {
  T* dgx;       // [T, B, G*H] gradient of x W_ih^T + b_ih, time order
  T* dgh_last;  // [T, B, H] kSplitGradient only: the last gate's gradient of h W_hh^T + b_hh
  T* dh_carry;  // [B, P] gradient reaching the state besides the recurrent product
  T* dc_carry;  // [B, H] the same for c (LSTM)
  T* dh_step;   // [B, P] this step's total gradient of h (projection only)
  T* dh_all;    // [T, B, P] every step's, time order, for dW_hr (projection only)
  T* dg_step;   // [2, B, G*H] dgh of this step and of the one after it, in step order
  const T* w_hh_t;  // [P, G*H] W_hh transposed (the warp form's products), or null
};

template <class Cell, class T>
struct BackwardStep {
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  // Rows of W_hh whose product reads h itself (a two-phase cell's last gate reads r*h).
  static constexpr int kFirst = Cell::kTwoPhase ? G - 1 : G;
  BackwardArgs<T> a;
  Schedule sch;
  BackwardState<T> st;

  __device__ __forceinline__ T* dg_cur(int64_t s) const { return st.dg_step + (s & 1) * a.B * G * a.H; }
  // dG_{s+1} of step s's successor, or null at the last step.
  __device__ __forceinline__ const T* dg_next(int64_t s) const {
    return s + 1 < a.T_ ? st.dg_step + ((s + 1) & 1) * a.B * G * a.H : nullptr;
  }

  // (dG W_hh) of sequence b at state dim p, through the rows reading h; dg: [B, G*H] or null.
  __device__ __forceinline__ T state_product(const T* dg, int64_t b, int64_t p, const T* w_hh) const {
    if (!dg) return T(0);
    const int64_t GH = G * a.H, P = a.P;
    T sum = T(0);
    const T* d = dg + b * GH;
    for (int64_t j = 0; j < kFirst * a.H; ++j) sum += d[j] * w_hh[j * P + p];
    return sum;
  }

  // The same by the 32 lanes of a warp, each summing every 32nd row, from W_hh transposed
  // (consecutive lanes, consecutive addresses); every lane gets the sum.
  __device__ __forceinline__ T warp_state_product(const T* dg, int64_t b, int64_t p, int lane) const {
    if (!dg) return T(0);
    const int64_t GH = G * a.H;
    T sum = T(0);
    const T* d = dg + b * GH;
    const T* w = st.w_hh_t + p * GH;
    for (int64_t j = lane; j < kFirst * a.H; j += 32) sum += d[j] * w[j];
    return warp_sum(sum);
  }

  // Projection, phase 1: the total gradient of state dim p of sequence b at step s.
  __device__ __forceinline__ void gather(int64_t s, int64_t b, int64_t p, const T* w_hh) const {
    gather_given(s, b, p, state_product(dg_next(s), b, p, w_hh));
  }

  // The same given rec = (dG_{s+1} W_hh) of (b, p).
  __device__ __forceinline__ void gather_given(int64_t s, int64_t b, int64_t p, T rec) const {
    const int64_t B = a.B, P = a.P, at = b * P + p, t = sch.row(s);
    const T dy = a.dy ? a.dy[(t * B + b) * P + p] : T(0);
    if (!sch.active(t, b)) {  // masked: the state was carried, so is its gradient
      st.dh_carry[at] += rec + (sch.repeats_output(s, b) ? dy : T(0));
      st.dh_step[at] = T(0);
      st.dh_all[(t * B + b) * P + p] = T(0);
      return;
    }
    const T total = st.dh_carry[at] + rec + dy;
    st.dh_step[at] = total;
    st.dh_all[(t * B + b) * P + p] = total;
    st.dh_carry[at] = T(0);  // the LSTM update reads no h directly: nothing else flows back
  }

  // The cell's backward for (b, u) at step s: the first phase of a two-phase cell. Without a
  // projection the unit's dh comes from dG_{s+1} W_hh (w_hh), with one from dm = dh_step W_hr.
  __device__ __forceinline__ void cell(int64_t s, int64_t b, int64_t u, const T* w_hh, const T* w_hr) const {
    T rec = T(0);
    if (a.w_hr) {
      for (int64_t p = 0; p < a.P; ++p) rec += st.dh_step[b * a.P + p] * w_hr[p * a.H + u];
    } else {
      rec = state_product(dg_next(s), b, u, w_hh);
    }
    cell_given(s, b, u, rec);
  }

  // Given rec = (dG_{s+1} W_hh) of (b, p): the state dim's gradient with a projection, else the
  // cell's backward for unit p (the tiled and warp forms, which compute rec themselves).
  __device__ __forceinline__ void state_given(int64_t s, int64_t b, int64_t p, T rec) const {
    if (a.w_hr) {
      gather_given(s, b, p, rec);
    } else {
      cell_given(s, b, p, rec);
    }
  }

  // The same given rec, the product above.
  __device__ __forceinline__ void cell_given(int64_t s, int64_t b, int64_t u, T rec) const {
    const int64_t B = a.B, H = a.H, GH = G * H, at = b * H + u, t = sch.row(s);
    const bool projected = a.w_hr != nullptr;
    const T dy = a.dy && !projected ? a.dy[(t * B + b) * H + u] : T(0);
    // Under recurrent dropout rec is the gradient of h * scale: scaled once more, it is h's.
    const T scale = a.recurrent_scale ? a.recurrent_scale[at] : T(1);
    T* dgx_row = st.dgx + (t * B + b) * GH + u;
    T* dg_row = dg_cur(s) + b * GH + u;
    if (!sch.active(t, b)) {  // masked: the state was carried, so is its gradient
      if (!projected) st.dh_carry[at] += rec * scale + (sch.repeats_output(s, b) ? dy : T(0));
      for (int g = 0; g < G; ++g) {
        dgx_row[g * H] = T(0);
        dg_row[g * H] = T(0);
      }
      if constexpr (Cell::kSplitGradient) st.dgh_last[(t * B + b) * H + u] = T(0);
      return;
    }
    T saved[S > 0 ? S : 1], gx[G], gh[G];
    const T* saved_row = a.saved_gates + (t * B + b) * S * H + u;
    for (int k = 0; k < S; ++k) saved[k] = saved_row[k * H];
    const int64_t prev_at = (sch.prev_slot(t) * B + b) * H + u, new_at = (sch.new_slot(t) * B + b) * H + u;
    // Under a projection only c's saved rows are per unit (the LSTM reads no h).
    const State<T> prev{projected ? T(0) : a.saved_h[prev_at], Cell::kHasCell ? a.saved_c[prev_at] : T(0)};
    const State<T> next{projected ? T(0) : a.saved_h[new_at], Cell::kHasCell ? a.saved_c[new_at] : T(0)};
    T dh = rec * scale;
    if (!projected) dh += st.dh_carry[at] + dy;
    const State<T> d_next{dh, Cell::kHasCell ? st.dc_carry[at] : T(0)};
    State<T> d_prev{T(0), T(0)};
    if constexpr (Cell::kTwoPhase) {
      Cell::output_backward(saved, prev, d_next, gx, d_prev);
      for (int g = 1; g < G; ++g) {
        dgx_row[g * H] = gx[g];
        dg_row[g * H] = gx[g];
      }
    } else {
      Cell::backward(saved, prev, next, d_next, gx, gh, d_prev);
      for (int g = 0; g < G; ++g) {
        dgx_row[g * H] = gx[g];
        dg_row[g * H] = gh[g];
      }
      if constexpr (Cell::kSplitGradient) st.dgh_last[(t * B + b) * H + u] = gh[G - 1];
    }
    if (!projected) st.dh_carry[at] = d_prev.h;
    if constexpr (Cell::kHasCell) st.dc_carry[at] = d_prev.c;
  }

  // Two-phase cells, second phase: d_rh = (W_hn^T da_n) of unit u gives da_r and the rest of
  // the previous state's gradient.
  __device__ __forceinline__ void reset(int64_t s, int64_t b, int64_t u, const T* w_hh) const {
    if constexpr (Cell::kTwoPhase) {
      const int64_t B = a.B, H = a.H, P = a.P, GH = G * H, at = b * H + u, t = sch.row(s);
      if (!sch.active(t, b)) return;  // cell() zeroed its gradients and carried the state's
      const T* da_n = dg_cur(s) + b * GH + (G - 1) * H;
      const T* w_hn = w_hh + (G - 1) * H * P;
      T d_rh = T(0);
      for (int64_t k = 0; k < H; ++k) d_rh += da_n[k] * w_hn[k * P + u];
      T saved[S], dg[G];
      const T* saved_row = a.saved_gates + (t * B + b) * S * H + u;
      for (int k = 0; k < S; ++k) saved[k] = saved_row[k * H];
      // r multiplied h as the products see it (h * scale under recurrent dropout).
      const T scale = a.recurrent_scale ? a.recurrent_scale[at] : T(1);
      const T h_product = a.saved_h[(sch.prev_slot(t) * B + b) * H + u] * scale;
      State<T> d_product{T(0), T(0)};
      Cell::reset_backward(saved, State<T>{h_product, T(0)}, d_rh, dg, d_product);
      st.dgx[(t * B + b) * GH + u] = dg[0];
      dg_cur(s)[b * GH + u] = dg[0];
      st.dh_carry[at] += d_product.h * scale;
    }
  }

  // The gradient of the initial state: what step 0 sends back through W_hh, plus the carry.
  __device__ __forceinline__ void initial(int64_t b, int64_t p, const T* w_hh) const {
    const int64_t at = b * a.P + p;
    const T scale = a.recurrent_scale ? a.recurrent_scale[at] : T(1);
    a.dh0[at] = state_product(a.T_ > 0 ? st.dg_step : nullptr, b, p, w_hh) * scale + st.dh_carry[at];
  }
};

// Phase 1 of the stepwise form: block (x, y) computes dG_{s+1} W_hh for state dims
// x*kTileCols.. of sequences y*kTileSeqs.. (driver.h), then goes on with the cell (without a
// projection) or the state dims' gradients (with one).
template <class Cell, class T>
__global__ void backward_tiled_kernel(const BackwardStep<Cell, T>* step, int64_t s) {
  __shared__ T d_tile[kTileSeqs][kTileK];
  __shared__ T w_tile[kTileK][kTileCols];
  const BackwardStep<Cell, T> f = *step;
  const int64_t B = f.a.B, P = f.a.P, GH = Cell::kGates * f.a.H, rows = BackwardStep<Cell, T>::kFirst * f.a.H;
  const int col = threadIdx.x % kTileCols, row = threadIdx.x / kTileCols;
  const int64_t p0 = int64_t(blockIdx.x) * kTileCols, p = p0 + col, b = int64_t(blockIdx.y) * kTileSeqs + row;
  const T* dg = f.dg_next(s);
  T rec = T(0);
  for (int64_t j0 = 0; dg && j0 < rows; j0 += kTileK) {
    d_tile[row][col] = b < B && j0 + col < rows ? dg[b * GH + j0 + col] : T(0);  // (kTileK == kTileCols)
    for (int e = threadIdx.x; e < kTileK * kTileCols; e += blockDim.x) {
      const int j = e / kTileCols, c = e % kTileCols;
      w_tile[j][c] = j0 + j < rows && p0 + c < P ? f.a.w_hh[(j0 + j) * P + p0 + c] : T(0);
    }
    __syncthreads();
    for (int j = 0; j < kTileK; ++j) rec += d_tile[row][j] * w_tile[j][col];
    __syncthreads();
  }
  if (b < B && p < P) f.state_given(s, b, p, rec);
}

template <class Cell, class T>
__global__ void backward_cell_kernel(const BackwardStep<Cell, T>* step, int64_t s) {
  const BackwardStep<Cell, T> f = *step;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < f.a.B * f.a.H) f.cell(s, i / f.a.H, i % f.a.H, f.a.w_hh, f.a.w_hr);
}

// A warp per (b, unit or state dim): the lanes share dG_{s+1} W_hh, the first lane goes on with
// the cell (without a projection) or the state dim's gradient (with one).
template <class Cell, class T>
__global__ void backward_warp_kernel(const BackwardStep<Cell, T>* step, int64_t s) {
  const BackwardStep<Cell, T> f = *step;
  const int64_t P = f.a.P, pair = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (pair >= f.a.B * P) return;  // (the whole warp: its lanes share the pair)
  const int64_t b = pair / P, p = pair % P;
  const T rec = f.warp_state_product(f.dg_next(s), b, p, lane);
  if (lane == 0) f.state_given(s, b, p, rec);
}

template <class Cell, class T>
__global__ void backward_reset_kernel(const BackwardStep<Cell, T>* step, int64_t s) {
  const BackwardStep<Cell, T> f = *step;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < f.a.B * f.a.H) f.reset(s, i / f.a.H, i % f.a.H, f.a.w_hh);
}

template <class Cell, class T>
__global__ void backward_initial_kernel(const BackwardStep<Cell, T>* step) {
  const BackwardStep<Cell, T> f = *step;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < f.a.B * f.a.P) f.initial(i / f.a.P, i % f.a.P, f.a.w_hh);
}

// Block b runs every step of sequence b backwards, then its initial state's gradient.
template <class Cell, class T>
__global__ void __launch_bounds__(1024)
    backward_persistent_kernel(const BackwardStep<Cell, T>* step, bool weights_in_shared) {
  const BackwardStep<Cell, T> f = *step;
  const int64_t H = f.a.H, P = f.a.P, GH = Cell::kGates * H, b = blockIdx.x;
  const T* w_hh = f.a.w_hh;
  const T* w_hr = f.a.w_hr;
  if (weights_in_shared) stage_in_shared(w_hh, GH * P, w_hr, P * H);
  const bool projected = f.a.w_hr != nullptr;
  for (int64_t s = f.a.T_ - 1; s >= 0; --s) {
    if (projected) {
      for (int64_t p = threadIdx.x; p < P; p += blockDim.x) f.gather(s, b, p, w_hh);
      __syncthreads();
    }
    for (int64_t u = threadIdx.x; u < H; u += blockDim.x) f.cell(s, b, u, w_hh, w_hr);
    if (Cell::kTwoPhase) {
      __syncthreads();
      for (int64_t u = threadIdx.x; u < H; u += blockDim.x) f.reset(s, b, u, w_hh);
    }
    __syncthreads();
  }
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) f.initial(b, p, w_hh);
}

template <class Cell, class T>
void backward_layer(const BackwardArgs<T>& a, const int64_t* first_step, Algorithm algorithm) {
  constexpr int G = Cell::kGates;
  constexpr int S = Cell::kSaved;
  const int64_t steps = a.T_, B = a.B, I = a.I, H = a.H, P = a.P, GH = G * H;
  const int64_t KH = Cell::kTwoPhase ? (G - 1) * H : GH;
  const bool projected = a.w_hr != nullptr;
  const Schedule sch(a, first_step);

  BackwardState<T> st{};
  st.dgx = workspace<T>(10, steps * B * GH);
  st.dgh_last = Cell::kSplitGradient ? workspace<T>(11, steps * B * H) : nullptr;
  st.dh_carry = workspace<T>(12, B * P);
  st.dc_carry = Cell::kHasCell ? workspace<T>(13, B * H) : nullptr;
  st.dh_step = projected ? workspace<T>(14, B * P) : nullptr;
  st.dh_all = projected ? workspace<T>(15, steps * B * P) : nullptr;
  st.dg_step = workspace<T>(16, 2 * B * GH);
  const int64_t weight_values = GH * P + (projected ? P * H : 0);
  const Algorithm form = resolve(algorithm, weight_values * int64_t(sizeof(T)), B * P);
  if (form == Algorithm::kWarp) {
    T* w_hh_t = workspace<T>(18, GH * P);
    transpose(w_hh_t, a.w_hh, GH, P);
    st.w_hh_t = w_hh_t;
  }
  copy_or_zero(st.dh_carry, a.dh_n, B * P);
  if constexpr (Cell::kHasCell) copy_or_zero(st.dc_carry, a.dc_n, B * H);

  const BackwardStep<Cell, T>* step = upload_step(BackwardStep<Cell, T>{a, sch, st});
  if (form == Algorithm::kPersistent) {
    launch_persistent(backward_persistent_kernel<Cell, T>, "backward_persistent_kernel launch", B,
                      persistent_threads(std::max(H, P)), weight_values * int64_t(sizeof(T)), step);
  } else {
    for (int64_t s = steps - 1; s >= 0; --s) {
      if (form == Algorithm::kWarp) {
        backward_warp_kernel<Cell, T><<<blocks_for(B * P * 32), kStepThreads>>>(step, s);
        check_launch("backward_warp_kernel launch");
      } else {
        const dim3 grid(blocks_for(P, kTileCols), blocks_for(B, kTileSeqs));
        backward_tiled_kernel<Cell, T><<<grid, kTileSeqs * kTileCols>>>(step, s);
        check_launch("backward_tiled_kernel launch");
      }
      if (projected) {  // the cell's phase, after the state dims' gradients
        backward_cell_kernel<Cell, T><<<blocks_for(B * H), kStepThreads>>>(step, s);
        check_launch("backward_cell_kernel launch");
      }
      if constexpr (Cell::kTwoPhase) {
        backward_reset_kernel<Cell, T><<<blocks_for(B * H), kStepThreads>>>(step, s);
        check_launch("backward_reset_kernel launch");
      }
    }
    backward_initial_kernel<Cell, T><<<blocks_for(B * P), kStepThreads>>>(step);
    check_launch("backward_initial_kernel launch");
  }
  if constexpr (Cell::kHasCell) copy_device(a.dc0, st.dc_carry, B * H, "cudaMemcpy (dc0)");

  // GEMMs over all T*B rows. The input state of time row t is saved_h[t + reverse].
  const int64_t rows = steps * B;
  const T* h_prev = a.saved_h + sch.prev_slot(0) * B * P;
  if (a.recurrent_scale) {  // W_hh multiplied h * scale (the same scale at every step)
    T* scaled = workspace<T>(17, rows * P);
    scale_rows(scaled, h_prev, a.recurrent_scale, rows, B, P);
    h_prev = scaled;
  }
  if (a.dx) gemm<T>(rows, I, GH, st.dgx, GH, 1, a.w_ih, I, 1, a.dx, I, false);  // (null: not wanted)
  gemm<T>(GH, I, rows, st.dgx, 1, GH, a.x, I, 1, a.dw_ih, I, false);
  if constexpr (Cell::kSplitGradient) {  // the last gate's rows from its own gradient
    gemm<T>(KH - H, P, rows, st.dgx, 1, GH, h_prev, P, 1, a.dw_hh, P, false);
    gemm<T>(H, P, rows, st.dgh_last, 1, H, h_prev, P, 1, a.dw_hh + (KH - H) * P, P, false);
  } else {
    gemm<T>(KH, P, rows, st.dgx, 1, GH, h_prev, P, 1, a.dw_hh, P, false);
  }
  if constexpr (Cell::kTwoPhase) {
    // W_hn multiplied r*h, which forward saved as the cell's last saved value.
    gemm<T>(H, P, rows, st.dgx + KH, 1, GH, a.saved_gates + (S - 1) * H, S * H, 1, a.dw_hh + KH * P, P, false);
  }
  if (projected) gemm<T>(P, H, rows, st.dh_all, 1, P, a.saved_m, H, 1, a.dw_hr, H, false);
  if (a.db_ih) column_sums(a.db_ih, st.dgx, rows, GH, GH);
  if (a.db_hh) {
    if constexpr (Cell::kSplitGradient) {
      column_sums(a.db_hh, st.dgx, rows, GH - H, GH);
      column_sums(a.db_hh + GH - H, st.dgh_last, rows, H, H);
    } else {
      column_sums(a.db_hh, st.dgx, rows, GH, GH);
    }
  }
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (end of the backward)");
}

}  // namespace

template <class T>
void backward(CellKind cell, const BackwardArgs<T>& args, const int64_t* first_step, Algorithm algorithm) {
  with_cell(cell, [&](auto cell_type) { backward_layer<decltype(cell_type), T>(args, first_step, algorithm); });
}

template void backward<float>(CellKind, const BackwardArgs<float>&, const int64_t*, Algorithm);
template void backward<double>(CellKind, const BackwardArgs<double>&, const int64_t*, Algorithm);

}  // namespace fusedrnn::cuda

// The CUDA forward loop: one recurrent layer, one direction, every cell (the shared machinery and
// the two drivers, stepwise and persistent: cuda/driver.h).
//
// Forward, one layer, one direction:
//   1. The input projections of all steps at once: xp = x W_ih^T, one GEMM over T*B rows
//      (cuda/gemm.h); b_ih is added in the pointwise step.
//   2. Per step, for each (sequence b, unit u): the unit's G recurrent dot products with the
//      state, W_hh h, then the cell's pointwise step on them, in one thread. W_hh is read
//      transposed ([P, G*H], copied once per call), so the threads of consecutive units read
//      consecutive addresses.
//   A projection (LSTM proj_size) or a two-phase cell (reset-before-product GRU) adds a second
//   phase per step: it needs a value every unit of the sequence gives first.
//   3. Training saves the cell's post-activation values and every state; inference saves nothing.
// Which steps run and where their states are saved: schedule.h, the CPU backend's own.
//
// Gradient contract: outputs are overwritten (=); the Python layer accumulates (+=).
#include "cuda/driver.h"
#include "cuda/gemm.h"

namespace fusedrnn::cuda {
namespace {

// Device buffers of one forward call.
template <class T>
struct ForwardState {
  const T* xp;       // [T, B, G*H] x W_ih^T
  const T* b_ih;     // [G*H] (zeros when the layer has no bias)
  const T* b_hh;     // [G*H]
  const T* w_hh_t;   // [P, G*H] W_hh transposed
  const T* w_hr_t;   // [H, P] W_hr transposed (projection only)
  T* h_state;        // [2, B, P] double buffer
  T* c_state;        // [2, B, H] (LSTM)
  T* h_product;      // [2, B, P] h * recurrent_scale, what the products read (or null)
  T* m_step;         // [B, H] the cell's outputs of this step, to be projected
  T* rz_step;        // [B, 2H] two-phase cells: this step's r and z
  T* rh_step;        // [B, H]  two-phase cells: this step's r*h
};

template <class Cell, class T>
struct ForwardStep {
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  ForwardArgs<T> a;
  Schedule sch;
  ForwardState<T> st;

  __device__ __forceinline__ const T* h_prev(int64_t s) const { return st.h_state + (s & 1) * a.B * a.P; }
  __device__ __forceinline__ T* h_next(int64_t s) const { return st.h_state + ((s + 1) & 1) * a.B * a.P; }
  // The state as the recurrent products see it (scaled under recurrent dropout).
  __device__ __forceinline__ const T* product_prev(int64_t s) const {
    return st.h_product ? st.h_product + (s & 1) * a.B * a.P : h_prev(s);
  }

  // The new state of (b, p) goes where the output and the saved states want it; a masked step
  // carries the old one. Also writes h * scale for the next step's products.
  __device__ __forceinline__ void publish(int64_t s, int64_t b, int64_t p) const {
    const int64_t B = a.B, P = a.P, at = b * P + p, t = sch.row(s);
    const bool active = sch.active(t, b), output = active || sch.repeats_output(s, b);
    T* next = h_next(s);
    const T h = active ? next[at] : h_prev(s)[at];
    if (!active) next[at] = h;
    a.y[(t * B + b) * P + p] = output ? h : T(0);
    if (a.saved_h) a.saved_h[(sch.new_slot(t) * B + b) * P + p] = h;
    if (st.h_product) st.h_product[((s + 1) & 1) * B * P + at] = h * a.recurrent_scale[at];
  }

  // Saved values of a masked (t, b, u): zeros (finite, unused), and the carried c.
  __device__ __forceinline__ void save_masked(int64_t s, int64_t b, int64_t u) const {
    const int64_t B = a.B, H = a.H, t = sch.row(s);
    if constexpr (Cell::kHasCell) {
      const T c = st.c_state[(s & 1) * B * H + b * H + u];
      st.c_state[((s + 1) & 1) * B * H + b * H + u] = c;
      if (a.saved_c) a.saved_c[(sch.new_slot(t) * B + b) * H + u] = c;
    }
    if (a.saved_gates) {
      for (int k = 0; k < S; ++k) a.saved_gates[(t * B + b) * S * H + k * H + u] = T(0);
    }
    if (a.saved_m) a.saved_m[(t * B + b) * H + u] = T(0);
  }

  static constexpr int kFirst = Cell::kTwoPhase ? G - 1 : G;  // gates whose product reads h

  // The recurrent products of (b, u)'s first gates by one thread: hg[g] = (W_hh h)_{g*H+u}, from
  // W_hh transposed (w_t, [P, G*H], in global or shared memory).
  __device__ __forceinline__ void thread_product(int64_t s, int64_t b, int64_t u, const T* w_t, T* hg) const {
    const int64_t GH = G * a.H, P = a.P;
    for (int g = 0; g < kFirst; ++g) hg[g] = T(0);
    const T* h = product_prev(s) + b * P;
    for (int64_t k = 0; k < P; ++k) {
      const T hk = h[k];
      const T* w = w_t + k * GH + u;
      for (int g = 0; g < kFirst; ++g) hg[g] += hk * w[g * a.H];
    }
  }

  // The same by the 32 lanes of a warp, each summing every 32nd k of W_hh's rows (consecutive
  // lanes, consecutive addresses); every lane gets the sums.
  __device__ __forceinline__ void warp_product(int64_t s, int64_t b, int64_t u, int lane, T* hg) const {
    const int64_t H = a.H, P = a.P;
    for (int g = 0; g < kFirst; ++g) hg[g] = T(0);
    const T* h = product_prev(s) + b * P;
    for (int64_t k = lane; k < P; k += 32) {
      const T hk = h[k];
      for (int g = 0; g < kFirst; ++g) hg[g] += hk * a.w_hh[(g * H + u) * P + k];
    }
    for (int g = 0; g < kFirst; ++g) hg[g] = warp_sum(hg[g]);
  }

  // Phase 1 of step s for (b, u): the recurrent products of the first gates (all gates unless
  // two-phase) fused with the cell, in one thread.
  __device__ __forceinline__ void cell(int64_t s, int64_t b, int64_t u, const T* w_t) const {
    T hg[G];
    if (sch.active(sch.row(s), b)) thread_product(s, b, u, w_t, hg);
    cell_given(s, b, u, hg);
  }

  // Phase 1 given the products hg of the first gates (unread at a masked step).
  __device__ __forceinline__ void cell_given(int64_t s, int64_t b, int64_t u, T* hg) const {
    const int64_t B = a.B, H = a.H, P = a.P, GH = G * H, t = sch.row(s);
    const bool projected = a.w_hr != nullptr;
    if (!sch.active(t, b)) {
      if constexpr (Cell::kTwoPhase) {
        st.rh_step[b * H + u] = T(0);  // its row of the next product is unused, but must be finite
      } else {
        save_masked(s, b, u);
        if (!projected) publish(s, b, u);
      }
      return;
    }
    T xg[G];
    const T* h = product_prev(s) + b * P;
    const T* xp = st.xp + (t * B + b) * GH + u;
    for (int g = 0; g < G; ++g) {
      xg[g] = xp[g * H] + st.b_ih[g * H + u];
      if (g < kFirst) hg[g] += st.b_hh[g * H + u];
    }
    if constexpr (Cell::kTwoPhase) {
      T rz[2], rh;
      Cell::reset(xg, hg, State<T>{h[u], T(0)}, rz, rh);
      st.rz_step[b * 2 * H + u] = rz[0];
      st.rz_step[b * 2 * H + H + u] = rz[1];
      st.rh_step[b * H + u] = rh;
    } else {
      T saved[S > 0 ? S : 1];
      // Under a projection h has P dims, not one per unit; only the LSTM projects, and its
      // update reads c, not h.
      const State<T> prev{projected ? T(0) : h_prev(s)[b * P + u],
                          Cell::kHasCell ? st.c_state[(s & 1) * B * H + b * H + u] : T(0)};
      State<T> next{T(0), T(0)};
      Cell::forward(xg, hg, prev, next, saved);
      if (projected) {
        st.m_step[b * H + u] = next.h;
        if (a.saved_m) a.saved_m[(t * B + b) * H + u] = next.h;
      } else {
        h_next(s)[b * P + u] = next.h;
      }
      if constexpr (Cell::kHasCell) {
        st.c_state[((s + 1) & 1) * B * H + b * H + u] = next.c;
        if (a.saved_c) a.saved_c[(sch.new_slot(t) * B + b) * H + u] = next.c;
      }
      if (a.saved_gates) {
        for (int k = 0; k < S; ++k) a.saved_gates[(t * B + b) * S * H + k * H + u] = saved[k];
      }
      if (!projected) publish(s, b, u);
    }
  }

  // Phase 2 of a two-phase cell: the last gate's product W_hn (r*h), then the cell's output.
  __device__ __forceinline__ void output(int64_t s, int64_t b, int64_t u, const T* w_t) const {
    if constexpr (Cell::kTwoPhase) {
      const int64_t B = a.B, H = a.H, P = a.P, GH = G * H, t = sch.row(s);
      if (!sch.active(t, b)) {
        save_masked(s, b, u);
        publish(s, b, u);
        return;
      }
      T hn = st.b_hh[(G - 1) * H + u];
      const T* rh = st.rh_step + b * H;
      for (int64_t k = 0; k < H; ++k) hn += rh[k] * w_t[k * GH + (G - 1) * H + u];
      const T x_n = st.xp[(t * B + b) * GH + (G - 1) * H + u] + st.b_ih[(G - 1) * H + u];
      const T rz[2] = {st.rz_step[b * 2 * H + u], st.rz_step[b * 2 * H + H + u]};
      T saved[S];
      State<T> next{T(0), T(0)};
      Cell::output(x_n, hn, rz, rh[u], State<T>{h_prev(s)[b * P + u], T(0)}, next, saved);
      h_next(s)[b * P + u] = next.h;
      if (a.saved_gates) {
        for (int k = 0; k < S; ++k) a.saved_gates[(t * B + b) * S * H + k * H + u] = saved[k];
      }
      publish(s, b, u);
    }
  }

  // Phase 2 under a projection: h = W_hr m for state dim p, then publish it.
  __device__ __forceinline__ void project(int64_t s, int64_t b, int64_t p, const T* w_hr_t) const {
    const int64_t H = a.H, P = a.P;
    if (sch.active(sch.row(s), b)) {
      T h = T(0);
      const T* m = st.m_step + b * H;
      for (int64_t u = 0; u < H; ++u) h += m[u] * w_hr_t[u * P + p];
      h_next(s)[b * P + p] = h;
    }
    publish(s, b, p);
  }
};

// Phase 1 of the stepwise form: block (x, y) runs units x*kTileCols.. of sequences y*kTileSeqs..
// (driver.h), from W_hh transposed.
template <class Cell, class T>
__global__ void forward_tiled_cell_kernel(const ForwardStep<Cell, T>* step, int64_t s) {
  constexpr int G = Cell::kGates, kFirst = ForwardStep<Cell, T>::kFirst;
  __shared__ T h_tile[kTileSeqs][kTileK];
  __shared__ T w_tile[kTileK][kFirst * kTileCols];
  const ForwardStep<Cell, T> f = *step;
  const int64_t B = f.a.B, H = f.a.H, P = f.a.P, GH = G * H;
  const int col = threadIdx.x % kTileCols, row = threadIdx.x / kTileCols;
  const int64_t u0 = int64_t(blockIdx.x) * kTileCols, u = u0 + col, b = int64_t(blockIdx.y) * kTileSeqs + row;
  const T* h = f.product_prev(s);
  T hg[G];
  for (int g = 0; g < G; ++g) hg[g] = T(0);
  for (int64_t k0 = 0; k0 < P; k0 += kTileK) {
    h_tile[row][col] = b < B && k0 + col < P ? h[b * P + k0 + col] : T(0);  // (kTileK == kTileCols)
    for (int e = threadIdx.x; e < kTileK * kFirst * kTileCols; e += blockDim.x) {
      const int k = e / (kFirst * kTileCols), gc = e % (kFirst * kTileCols);
      const int64_t unit = u0 + gc % kTileCols;
      w_tile[k][gc] = k0 + k < P && unit < H ? f.st.w_hh_t[(k0 + k) * GH + (gc / kTileCols) * H + unit] : T(0);
    }
    __syncthreads();
    for (int k = 0; k < kTileK; ++k) {
      const T hk = h_tile[row][k];
      for (int g = 0; g < kFirst; ++g) hg[g] += hk * w_tile[k][g * kTileCols + col];
    }
    __syncthreads();
  }
  if (b < B && u < H) f.cell_given(s, b, u, hg);
}

// A warp per (b, u): the lanes share the products, the first lane applies the cell.
template <class Cell, class T>
__global__ void forward_warp_cell_kernel(const ForwardStep<Cell, T>* step, int64_t s) {
  const ForwardStep<Cell, T> f = *step;
  const int64_t pair = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (pair >= f.a.B * f.a.H) return;  // (the whole warp: its lanes share the pair)
  const int64_t b = pair / f.a.H, u = pair % f.a.H;
  T hg[Cell::kGates];
  f.warp_product(s, b, u, lane, hg);
  if (lane == 0) f.cell_given(s, b, u, hg);
}

template <class Cell, class T>
__global__ void forward_output_kernel(const ForwardStep<Cell, T>* step, int64_t s) {
  const ForwardStep<Cell, T> f = *step;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < f.a.B * f.a.H) f.output(s, i / f.a.H, i % f.a.H, f.st.w_hh_t);
}

template <class Cell, class T>
__global__ void forward_project_kernel(const ForwardStep<Cell, T>* step, int64_t s) {
  const ForwardStep<Cell, T> f = *step;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < f.a.B * f.a.P) f.project(s, i / f.a.P, i % f.a.P, f.st.w_hr_t);
}

// Block b runs every step of sequence b.
template <class Cell, class T>
__global__ void __launch_bounds__(1024)
    forward_persistent_kernel(const ForwardStep<Cell, T>* step, bool weights_in_shared) {
  const ForwardStep<Cell, T> f = *step;
  const int64_t H = f.a.H, P = f.a.P, GH = Cell::kGates * H, b = blockIdx.x;
  const T* w_t = f.st.w_hh_t;
  const T* w_hr_t = f.st.w_hr_t;
  if (weights_in_shared) stage_in_shared(w_t, P * GH, w_hr_t, H * P);
  const bool projected = f.a.w_hr != nullptr;
  for (int64_t s = 0; s < f.a.T_; ++s) {
    for (int64_t u = threadIdx.x; u < H; u += blockDim.x) f.cell(s, b, u, w_t);
    if (Cell::kTwoPhase || projected) {
      __syncthreads();
      if (Cell::kTwoPhase) {
        for (int64_t u = threadIdx.x; u < H; u += blockDim.x) f.output(s, b, u, w_t);
      } else {
        for (int64_t p = threadIdx.x; p < P; p += blockDim.x) f.project(s, b, p, w_hr_t);
      }
    }
    __syncthreads();
  }
}

template <class Cell, class T>
void forward_layer(const ForwardArgs<T>& a, const int64_t* first_step, Algorithm algorithm) {
  constexpr int G = Cell::kGates;
  const int64_t steps = a.T_, B = a.B, I = a.I, H = a.H, P = a.P, GH = G * H;
  const bool projected = a.w_hr != nullptr, scaled = a.recurrent_scale != nullptr;

  ForwardState<T> st{};
  T* xp = workspace<T>(0, steps * B * GH);
  gemm<T>(steps * B, GH, I, a.x, I, 1, a.w_ih, 1, I, xp, GH, /*accumulate=*/false);
  st.xp = xp;
  T* biases = workspace<T>(1, 2 * GH);
  copy_or_zero(biases, a.b_ih, GH);
  copy_or_zero(biases + GH, a.b_hh, GH);
  st.b_ih = biases;
  st.b_hh = biases + GH;
  T* w_hh_t = workspace<T>(2, GH * P);
  transpose(w_hh_t, a.w_hh, GH, P);
  st.w_hh_t = w_hh_t;
  if (projected) {
    T* w_hr_t = workspace<T>(3, H * P);
    transpose(w_hr_t, a.w_hr, P, H);
    st.w_hr_t = w_hr_t;
  }
  st.h_state = workspace<T>(4, 2 * B * P);
  st.c_state = Cell::kHasCell ? workspace<T>(5, 2 * B * H) : nullptr;
  st.h_product = scaled ? workspace<T>(6, 2 * B * P) : nullptr;
  st.m_step = projected ? workspace<T>(7, B * H) : nullptr;
  st.rz_step = Cell::kTwoPhase ? workspace<T>(8, 2 * B * H) : nullptr;
  st.rh_step = Cell::kTwoPhase ? workspace<T>(9, B * H) : nullptr;

  // The initial state, in the double buffer and, for backward, in its saved slot.
  const Schedule sch(a, first_step);
  copy_or_zero(st.h_state, a.h0, B * P);
  if (scaled) scale_rows(st.h_product, st.h_state, a.recurrent_scale, B, B, P);
  if constexpr (Cell::kHasCell) copy_or_zero(st.c_state, a.c0, B * H);
  if (a.saved_h) {
    copy_device(a.saved_h + sch.initial_slot() * B * P, st.h_state, B * P, "cudaMemcpy (initial state)");
    if constexpr (Cell::kHasCell) {
      copy_device(a.saved_c + sch.initial_slot() * B * H, st.c_state, B * H, "cudaMemcpy (initial cell state)");
    }
  }

  const ForwardStep<Cell, T>* step = upload_step(ForwardStep<Cell, T>{a, sch, st});
  const int64_t weight_values = P * GH + (projected ? H * P : 0);
  const Algorithm form = resolve(algorithm, weight_values * int64_t(sizeof(T)), B * H);
  if (form == Algorithm::kPersistent) {
    launch_persistent(forward_persistent_kernel<Cell, T>, "forward_persistent_kernel launch", B,
                      persistent_threads(std::max(H, P)), weight_values * int64_t(sizeof(T)), step);
  } else {
    for (int64_t s = 0; s < steps; ++s) {
      if (form == Algorithm::kWarp) {
        forward_warp_cell_kernel<Cell, T><<<blocks_for(B * H * 32), kStepThreads>>>(step, s);
        check_launch("forward_warp_cell_kernel launch");
      } else {
        const dim3 grid(blocks_for(H, kTileCols), blocks_for(B, kTileSeqs));
        forward_tiled_cell_kernel<Cell, T><<<grid, kTileSeqs * kTileCols>>>(step, s);
        check_launch("forward_tiled_cell_kernel launch");
      }
      if constexpr (Cell::kTwoPhase) {
        forward_output_kernel<Cell, T><<<blocks_for(B * H), kStepThreads>>>(step, s);
        check_launch("forward_output_kernel launch");
      }
      if (projected) {
        forward_project_kernel<Cell, T><<<blocks_for(B * P), kStepThreads>>>(step, s);
        check_launch("forward_project_kernel launch");
      }
    }
  }
  copy_device(a.h_n, st.h_state + (steps & 1) * B * P, B * P, "cudaMemcpy (h_n)");
  if constexpr (Cell::kHasCell) copy_device(a.c_n, st.c_state + (steps & 1) * B * H, B * H, "cudaMemcpy (c_n)");
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (end of the forward)");
}

}  // namespace

bool persistent_weights_fit(int64_t bytes) {
  int device = 0, limit = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "cudaDeviceGetAttribute (shared memory per block)");
  return bytes <= limit;
}

template <class T>
void forward(CellKind cell, const ForwardArgs<T>& args, const int64_t* first_step, Algorithm algorithm) {
  with_cell(cell, [&](auto cell_type) { forward_layer<decltype(cell_type), T>(args, first_step, algorithm); });
}

template void forward<float>(CellKind, const ForwardArgs<float>&, const int64_t*, Algorithm);
template void forward<double>(CellKind, const ForwardArgs<double>&, const int64_t*, Algorithm);

}  // namespace fusedrnn::cuda

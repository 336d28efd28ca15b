// THE time-loop driver, one for every cell (csrc/cells/*.h supply the pointwise math).
//
// Forward, one layer, one direction:
//   1. The input projections xp = x W_ih^T (b_ih is added in the pointwise step, which reads xp
//      anyway): each thread computes its own units' for a block of steps at a time inside the
//      time loop, so that they stay in its caches until the pointwise step reads them; one
//      merged GEMM over all T*B rows before the loop when W_ih is large (InputProjections).
//   2. One OpenMP team spans the whole time loop. Hidden units are cut into chunks of one GEMM
//      panel width (kPanel units); each thread owns a contiguous run of chunks and computes ALL
//      gates of its units, so it applies the cell right after its recurrent GEMM block, while
//      the values are still in L1. It packs its slice of W_hh once per call with the gates of a
//      chunk interleaved panel by panel, so the slice stays in its core's L2 for all T steps.
//      The state is double-buffered: step s reads buffer s&1 and writes the other, so one
//      barrier per step is enough.
//   3. Training saves the cell's post-activation values and every state; inference saves nothing.
//   A projection (LSTM proj_size) or a two-phase cell (reset-before-product GRU) adds a second
//   GEMM and barrier per step: it needs a value every unit gives first.
//
// Which steps run and where their states are saved: schedule.h.
//
// Backward (reverse time), per step: the recurrent product dh += dG_{s+1} W_hh for the thread's
// own units (a column slice of W_hh, packed once, L2-resident), fused with the cell's pointwise
// backward that yields dG_s; one barrier per step. After the loop, merged GEMMs with K = T*B give
// dW_ih = dGx^T x, dW_hh = dGh^T h_prev and dx = dGx W_ih; the bias gradients are summed in the
// loop, by the thread that owns each unit (add_to_bias_sum).
//
// The pointwise code (cells on Vec<T>: 4 to 16 units at once) is compiled three times, for
// AVX-512, AVX2 and the baseline, and picked at run time with the GEMM's kernels.
//
// Gradient contract: outputs are overwritten (=); the Python layer accumulates (+=).
#include "cpu/layer.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/buffer.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16.h"
#include "cpu/math.h"
#include "recurrence.h"
#include "schedule.h"

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

// Asks for the cache lines at p, p + stride, ... (count of them) ahead of use. The backward loop
// reads its per-step inputs (the saved values) from rows written long before, which no hardware
// prefetcher predicts (one line per gate, H*sizeof(T) apart); fetching the next step's lines
// during this step hides that memory latency.
template <class T>
FUSEDRNN_INLINE void prefetch_lines(const T* p, int count, int64_t stride) {
  for (int i = 0; i < count; ++i) __builtin_prefetch(p + i * stride);
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

// How a dimension (hidden units, or state dims under a projection) is cut among the team:
// chunks of one GEMM panel width, each thread a contiguous run of chunks.
template <class T>
struct Chunks {
  int64_t count;

  explicit Chunks(int64_t n) : count(ceil_div(n, kPanel<T>)) {}

  // This thread's chunks [first, last), for the team it actually got.
  void mine(int64_t* first, int64_t* last) const {
    const int64_t tid = thread_id(), team = team_size();
    *first = count * tid / team;
    *last = count * (tid + 1) / team;
  }
};

// Team size: no more threads than there are chunks, nor than there is work per step for. Each
// step ends in a barrier, so a thread must have enough work per step to pay for it: 2^16 flops'
// worth (~0.25 us at this machine's peak; a barrier of two spinning threads costs well under
// that, measured). The recurrent product of a step also reads every weight once, from the L2
// cache of the core that owns its slice, at ~32 bytes a cycle where the FMA units do 64 flops:
// with a batch of a few rows a step is bound by those bytes, not by its flops, and a second
// core's L2 halves it. So a byte of weights counts as 2 flops. (Counting flops alone ran a
// 256-unit GRU at batch 1 on one thread: 1.7x slower than on two.)
int team_for(int64_t chunks, int64_t step_flops, int64_t weight_bytes) {
  constexpr int64_t kMinWorkPerThread = int64_t(1) << 16;
  const int64_t work = std::max(step_flops, 2 * weight_bytes);
  const int64_t useful = std::max<int64_t>(1, work / kMinWorkPerThread);
  return static_cast<int>(std::min<int64_t>({max_threads(), chunks, useful}));
}

// Packs, for each of `chunks` chunks, the K x (groups*NR) matrix whose column g*NR + w is
// src[offset(g, unit) + k * k_stride] for unit = chunk*NR + w < n (zero past n); the chunks
// are laid out one after another, `size` elements apart. Each thread packs only its own chunks.
// A uint16_t destination packs bfloat16 (cpu/gemm_bf16.h; float weights only).
template <class T, class Offset, class Packed>
void pack_chunks(const Chunks<T>& chunks, int64_t n, int groups, int64_t K, const T* src,
                 int64_t k_stride, Offset offset, Packed* dst, int64_t size) {
  constexpr int64_t NR = kPanel<T>;
  int64_t first, last;
  chunks.mine(&first, &last);
  std::vector<int64_t> col_offset(groups * NR);
  for (int64_t c = first; c < last; ++c) {
    for (int g = 0; g < groups; ++g) {
      for (int64_t w = 0; w < NR; ++w) {
        const int64_t unit = c * NR + w;
        col_offset[g * NR + w] = unit < n ? offset(g, unit) : -1;
      }
    }
    if constexpr (std::is_same_v<Packed, uint16_t>) {
      pack_b_bf16(K, groups * NR, src, col_offset.data(), k_stride, dst + c * size);
    } else {
      pack_b<T>(K, groups * NR, src, col_offset.data(), k_stride, dst + c * size);
    }
  }
}

// The recurrent products of for_each_block: block (rows x ld, row stride ld) = rows b0.. of A
// times the packed matrices of chunks c, c+1, ... (ld columns in all: the chunks' packed matrices
// lie one after another, so a run of them is one wider matrix), or zeros without A.
template <class T>
struct PackedProduct {
  int64_t K;
  const T* A;  // [B, K] row stride lda, or null for zeros
  int64_t lda;
  const T* packed;
  int64_t packed_size;  // elements per chunk

  void operator()(int64_t b0, int64_t rows, int64_t c, int64_t ld, T* block) const {
    if (A) {
      gemm_packed_b<T>(rows, ld, K, A + b0 * lda, lda, packed + c * packed_size, block, ld, false);
    } else {
      std::fill_n(block, rows * ld, T(0));
    }
  }
};

// The same with the weights in bfloat16 (the opt-in inference mode, cpu/gemm_bf16.h): A as rows
// of bfloat16 pairs.
struct Bf16Product {
  int64_t K;
  const uint32_t* A;  // [B, ceil(K/2)]
  const uint16_t* packed;
  int64_t packed_size;

  void operator()(int64_t b0, int64_t rows, int64_t c, int64_t ld, float* block) const {
    gemm_bf16(rows, ld, K, A + b0 * ((K + 1) / 2), packed + c * packed_size, block, ld);
  }
};

// For each block of batch rows and each run of up to `group` of this thread's chunks: one
// product (above) gives the block, then body(chunk's first unit, its width, b0, rows, its
// columns of block, block's row stride).
// Runs of several chunks pay the GEMM's per-call cost once and let it use its widest tiles;
// one chunk at a time keeps a large batch's block in L1 for the pointwise step.
template <class T, class Product, class Body>
void for_each_block(const Chunks<T>& chunks, int64_t n, int64_t B, int64_t cols, const Product& product,
                    int64_t group, T* rec, Body body) {
  constexpr int64_t NR = kPanel<T>;
  int64_t first, last;
  chunks.mine(&first, &last);
  for (int64_t c = first; c < last; c += group) {
    const int64_t count = std::min(group, last - c), ld = count * cols;
    for (int64_t b0 = 0; b0 < B; b0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, B - b0);
      product(b0, rows, c, ld, rec);
      for (int64_t j = 0; j < count; ++j) {
        const int64_t u0 = (c + j) * NR;
        body(u0, std::min(NR, n - u0), b0, rows, rec + j * cols, ld);
      }
    }
  }
}

// Chunks per GEMM call (see for_each_block): with a few batch rows the call overhead dominates,
// so a thread's whole run of chunks goes in one call; with many, one chunk (G panels) at a time,
// or two one-panel chunks so that the GEMM gets two panels per tile.
int64_t chunk_group(int64_t B, int64_t chunks, int threads, int64_t panels_per_chunk) {
  if (B <= 8) return std::max<int64_t>(1, ceil_div(chunks, threads));
  return panels_per_chunk == 1 ? 2 : 1;
}

void barrier() {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

// Calls body(w, n) for the V-wide pieces (n lanes each) of a chunk's first `width` values. A
// whole chunk (width == kPanel: every chunk but a ragged last one) passes n as a constant, so
// that its loads and stores compile to single vector moves, not length-checked copies.
template <class V, class T, class Body>
FUSEDRNN_INLINE void for_each_vector(int64_t width, Body body) {
  if (width == kPanel<T>) {
    for (int64_t w = 0; w < kPanel<T>; w += V::kLanes) body(w, V::kLanes);
  } else {
    for (int64_t w = 0; w < width; w += V::kLanes) body(w, std::min<int64_t>(V::kLanes, width - w));
  }
}

// Writes the new recurrent state of sequence b, dims p0..p0+width, where the output and the
// saved states want it; or, at a masked step, carries the old state. With a recurrent scale it
// also writes h * scale into `product_next`, the copy of the state the next step's recurrent
// products read. One pass of V-wide loads and stores, inlined into the caller's pointwise code.
template <class V, class T>
FUSEDRNN_INLINE void publish_state(const ForwardArgs<T>& a, const Schedule& sch, int64_t s, int64_t b,
                                   int64_t p0, int64_t width, const T* h_prev, T* h_next, T* product_next) {
  const int64_t B = a.B, P = a.P, at = b * P + p0, t = sch.row(s);
  const bool active = sch.active(t, b), output = active || sch.repeats_output(s, b);
  T* y = a.y + (t * B + b) * P + p0;
  T* saved = a.saved_h ? a.saved_h + (sch.new_slot(t) * B + b) * P + p0 : nullptr;
  for_each_vector<V, T>(width, [&](int64_t w, int64_t n) FUSEDRNN_INLINE_LAMBDA {
    const V h = V::load((active ? h_next : h_prev) + at + w, n);
    if (!active) h.store(h_next + at + w, n);
    (output ? h : V()).store(y + w, n);
    if (saved) h.store(saved + w, n);
    if (product_next) (h * V::load(a.recurrent_scale + at + w, n)).store(product_next + at + w, n);
  });
}

// The input projections x W_ih^T (b_ih is added in the pointwise step, which reads them anyway).
// A merged GEMM over all T*B rows before the time loop writes T*B*G*H values (26 MB for an LSTM
// at T=100, B=64, H=256) that the pointwise code reads back a step at a time: that traffic cost
// as much as the pointwise math there. So each thread computes them for its own units a block of
// steps at a time inside the loop, and they stay in its caches in between (LSTM, B=64: 17.5 ->
// 16.9 ms at H=256, 64.6 -> 56.9 ms at H=512). Each block re-reads the thread's slice of W_ih,
// though: at 8 MB (H=1024) that cost more than it saved (243 -> 266 ms), so a thread's slice
// above kMaxSliceBytes keeps the merged GEMM. So does a team of one thread (a small layer) when
// there are more cores: the merged GEMM uses them all (LSTM, T=100, B=8, I=2048, H=32: 1.06 ms
// merged, 1.79 ms by the one thread).
template <class T>
struct InputProjections {
  static constexpr int64_t kMaxSliceBytes = int64_t(2) << 20;
  // One thread's block: with its slice of W_hh it should stay in L2, or at worst in L3.
  static constexpr int64_t kBlockBytes = int64_t(512) << 10;
  // Rows of x per GEMM call: their K values stay in L2 while the call sweeps the panels.
  static constexpr int64_t kRowBytes = int64_t(128) << 10;
  int64_t B, I;
  bool blocked;
  int64_t steps;  // per block
  int64_t rows;   // per GEMM call

  // cols_: the most columns (G per unit) a thread of the planned team owns.
  InputProjections(int64_t B_, int64_t I_, int64_t cols_, int64_t all_steps, int team)
      : B(B_), I(I_),
        blocked(I_ * cols_ * int64_t(sizeof(T)) <= kMaxSliceBytes && (team > 1 || max_threads() == 1)),
        steps(std::clamp<int64_t>(kBlockBytes / std::max<int64_t>(1, B_ * cols_ * int64_t(sizeof(T))), 1, all_steps)),
        rows(std::max<int64_t>(12, kRowBytes / std::max<int64_t>(1, I_ * int64_t(sizeof(T))) / 12 * 12)) {}

  // xp = the count*B rows of x times this thread's packed W_ih chunks (x_cols columns).
  void project(int64_t count, const T* x, const T* packed, int64_t x_cols, T* xp) const {
    for (int64_t r0 = 0; r0 < count * B; r0 += rows) {
      gemm_packed_b<T>(std::min(rows, count * B - r0), x_cols, I, x + r0 * I, I, packed, xp + r0 * x_cols, x_cols,
                       false);
    }
  }
};

// The pointwise half of a forward step for one sequence and one chunk of hidden units.
template <class Cell, class T>
struct ForwardStep {
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  static constexpr int64_t NR = kPanel<T>;
  const ForwardArgs<T>& a;
  const Schedule& sch;
  const T* b_ih;  // [G*H] (zeros when the layer has no bias)
  const T* b_hh;  // [G*H] (zeros when the layer has no bias)
  T* rz_step;     // [B, 2H] two-phase cells: this step's r and z
  T* rh_step;     // [B, H]  two-phase cells: this step's r*h, the input of the last gate's product

  // Two-phase cells, phase 1: r, z and r*h of sequence b, units u0.., from rec (r, z block)
  // and x_row (this sequence's input projections of the chunk, gate g of unit u0+w at
  // x_row[g*x_stride + w]); h_product: the state as the recurrent products see it (scaled under
  // recurrent dropout).
  template <class V>
  FUSEDRNN_INLINE void reset_row(int64_t s, int64_t b, int64_t u0, int64_t width, const T* rec, const T* x_row,
                                 int64_t x_stride, const T* h_product) const {
    const int64_t H = a.H, at = b * H + u0, t = sch.row(s);
    if (!sch.active(t, b)) {  // its row of the next product is unused, but must be finite
      std::fill_n(rh_step + at, width, T(0));
      return;
    }
    for_each_vector<V, T>(width, [&](int64_t w, int64_t n) FUSEDRNN_INLINE_LAMBDA {
      V xg[2], hg[2], rz[2], rh;
      for (int g = 0; g < 2; ++g) {
        xg[g] = V::load(x_row + g * x_stride + w, n) + V::load(b_ih + g * H + u0 + w, n);
        hg[g] = V::load(rec + g * NR + w) + V::load(b_hh + g * H + u0 + w, n);
      }
      Cell::reset(xg, hg, State<V>{V::load(h_product + at + w, n), V()}, rz, rh);
      rz[0].store(rz_step + b * 2 * H + u0 + w, n);
      rz[1].store(rz_step + b * 2 * H + H + u0 + w, n);
      rh.store(rh_step + at + w, n);
    });
  }

  // rec: this sequence's row of the recurrent GEMM block, gate g of unit u0+w at rec[g*NR + w]
  // (two-phase cells: the last gate's block, W_hn (r*h), unit u0+w at rec[w]); x_row: its input
  // projections, gate g of unit u0+w at x_row[g*x_stride + w], for all G gates.
  // out: where the cell's output goes, [B, H]: the next state, or m before the projection.
  // V: the Vec type of the instruction set this is compiled for; a chunk is 1, 2 or 4 of them.
  template <class V>
  FUSEDRNN_INLINE void row(int64_t s, int64_t b, int64_t u0, int64_t width, const T* rec, const T* x_row,
                           int64_t x_stride, const T* h_prev, T* out, const T* c_prev, T* c_next) const {
    const int64_t B = a.B, H = a.H, at = b * H + u0, t = sch.row(s);
    const bool training = a.saved_gates != nullptr, projected = a.w_hr != nullptr;
    T* saved_row = training ? a.saved_gates + (t * B + b) * S * H + u0 : nullptr;
    T* saved_c = training && Cell::kHasCell ? a.saved_c + (sch.new_slot(t) * B + b) * H + u0 : nullptr;
    T* saved_m = training && projected ? a.saved_m + (t * B + b) * H + u0 : nullptr;
    if (!sch.active(t, b)) {  // masked: carry c, save zeros (finite, unused); h is publish_state's
      if constexpr (Cell::kHasCell) std::copy_n(c_prev + at, width, c_next + at);
      if (saved_c) std::copy_n(c_prev + at, width, saved_c);
      if (saved_row) {
        for (int k = 0; k < S; ++k) std::fill_n(saved_row + k * H, width, T(0));
      }
      if (saved_m) std::fill_n(saved_m, width, T(0));
      return;
    }
    const T* x_bias = b_ih + u0;
    const T* bias = b_hh + u0;
    for_each_vector<V, T>(width, [&](int64_t w, int64_t n) FUSEDRNN_INLINE_LAMBDA {
      V saved[S > 0 ? S : 1];
      // Under a projection h has P dims, not one per unit; only the LSTM projects, and its
      // update reads c, not h.
      const State<V> prev{projected ? V() : V::load(h_prev + at + w, n),
                          Cell::kHasCell ? V::load(c_prev + at + w, n) : V()};
      State<V> next{};
      if constexpr (Cell::kTwoPhase) {
        const V rz[2] = {V::load(rz_step + b * 2 * H + u0 + w, n), V::load(rz_step + b * 2 * H + H + u0 + w, n)};
        const V hn = V::load(rec + w) + V::load(bias + (G - 1) * H + w, n);
        const V x_n = V::load(x_row + (G - 1) * x_stride + w, n) + V::load(x_bias + (G - 1) * H + w, n);
        Cell::output(x_n, hn, rz, V::load(rh_step + at + w, n), prev, next, saved);
      } else {
        V xg[G], hg[G];
        for (int g = 0; g < G; ++g) {
          xg[g] = V::load(x_row + g * x_stride + w, n) + V::load(x_bias + g * H + w, n);
          hg[g] = V::load(rec + g * NR + w) + V::load(bias + g * H + w, n);
        }
        Cell::forward(xg, hg, prev, next, saved);
      }
      next.h.store(out + at + w, n);
      if constexpr (Cell::kHasCell) next.c.store(c_next + at + w, n);
      if (saved_c) next.c.store(saved_c + w, n);
      if (saved_row) {
        for (int k = 0; k < S; ++k) saved[k].store(saved_row + k * H + w, n);
      }
      if (saved_m) next.h.store(saved_m + w, n);
    });
  }
};

template <class Cell, class T>
void forward_layer(const ForwardArgs<T>& a) {
  constexpr int G = Cell::kGates;
  constexpr int64_t NR = kPanel<T>;
  // Gates whose recurrent product reads h itself (a two-phase cell's last one reads r*h).
  constexpr int kFirstGates = Cell::kTwoPhase ? G - 1 : G;
  const int64_t steps = a.T_, B = a.B, I = a.I, H = a.H, P = a.P, GH = G * H;
  const bool projected = a.w_hr != nullptr;
  const std::vector<int64_t> first_steps = first_active_steps(a);
  const Schedule sch(a, first_steps.data());

  Buffer<T> b_ih(GH), b_hh(GH);
  copy_or_zero(b_ih.get(), a.b_ih, GH);
  copy_or_zero(b_hh.get(), a.b_hh, GH);

  // 2. The initial state, in the double buffer and, for backward, in its saved slot.
  Buffer<T> h_state(2 * B * P), c_state(Cell::kHasCell ? 2 * B * H : 0);
  Buffer<T> m_step(projected ? B * H : 0);  // the cell's outputs of this step, to be projected
  // Under recurrent dropout the products read h * scale: a second double buffer holds that copy.
  const bool scaled = a.recurrent_scale != nullptr;
  Buffer<T> h_product(scaled ? 2 * B * P : 0);
  copy_or_zero(h_state.get(), a.h0, B * P);
  if (scaled) {
    for (int64_t i = 0; i < B * P; ++i) h_product.get()[i] = h_state.get()[i] * a.recurrent_scale[i];
  }
  if constexpr (Cell::kHasCell) copy_or_zero(c_state.get(), a.c0, B * H);
  if (a.saved_h) {
    std::copy_n(h_state.get(), B * P, a.saved_h + sch.initial_slot() * B * P);
    if constexpr (Cell::kHasCell) std::copy_n(c_state.get(), B * H, a.saved_c + sch.initial_slot() * B * H);
  }

  // Hidden units in chunks (the first gates of a chunk: one panel each); a two-phase cell's
  // last gate in chunks of its own; under a projection, the output dims in chunks too (one
  // panel each: rows of W_hr).
  const Chunks<T> units(H), dims(projected ? P : 0);
  const int64_t cols = kFirstGates * NR;
  const int64_t hh_size = packed_b_size<T>(P, cols), panel_size = packed_b_size<T>(H, NR);
  Buffer<T> packed_hh(units.count * hh_size), packed_hr(dims.count * panel_size);
  Buffer<T> packed_hn(Cell::kTwoPhase ? units.count * panel_size : 0);
  Buffer<T> rz_step(Cell::kTwoPhase ? 2 * B * H : 0), rh_step(Cell::kTwoPhase ? B * H : 0);
  // bfloat16 recurrent weights (the opt-in inference mode; the caller checks that the cell has
  // one product a step, without projection or recurrent scale): W_hh packed as bfloat16, and the
  // state as bfloat16 pairs, double-buffered like h, each thread writing its own units' pairs.
  constexpr bool kBf16Capable = std::is_same_v<T, float> && !Cell::kTwoPhase;
  const bool bf16 = kBf16Capable && a.bf16_weights;
  const int64_t pairs = (P + 1) / 2, hh_bf16_size = bf16 ? packed_bf16_size(P, cols) : 0;
  Buffer<uint16_t> packed_hh_bf16(units.count * hh_bf16_size);
  Buffer<uint32_t> h_pairs(bf16 ? 2 * B * pairs : 0);
  if constexpr (kBf16Capable) {
    if (bf16) pack_a_bf16(B, P, h_state.get(), P, h_pairs.get());
  }
  // (The same team with bf16 weights: halving the count there ran small layers on one thread,
  // 1.6x slower than on two.)
  const int64_t weights = P * G * H + (projected ? H * P : 0);
  const int threads = team_for(std::max(units.count, dims.count), 2 * B * weights, weights * int64_t(sizeof(T)));
  const int64_t group_first = chunk_group(B, units.count, threads, kFirstGates);
  const int64_t group_units = chunk_group(B, units.count, threads, 1), group_dims = chunk_group(B, dims.count, threads, 1);
  const int64_t rec_size = std::min(B, kRowBlock) * std::max({group_first * cols, group_units * NR, group_dims * NR});
  Buffer<T> scratch(threads * rec_size);
  const InputProjections<T> inputs(B, I, G * NR * ceil_div(units.count, threads), steps, threads);
  const int64_t ih_size = inputs.blocked ? packed_b_size<T>(I, G * NR) : 0;
  Buffer<T> packed_ih(units.count * ih_size);
  T* xp_merged = inputs.blocked ? nullptr : workspace<T>(0, steps * B * GH);
  if (!inputs.blocked) gemm<T>(steps * B, GH, I, a.x, I, 1, a.w_ih, 1, I, xp_merged, GH, /*accumulate=*/false);
  const ForwardStep<Cell, T> step{a, sch, b_ih.get(), b_hh.get(), rz_step.get(), rh_step.get()};
  const Isa isa = current_isa();

#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
  {
    const auto w_hh_column = [&](int g, int64_t u) { return (g * H + u) * P; };
    if (bf16) {
      if constexpr (kBf16Capable) {
        pack_chunks(units, H, kFirstGates, P, a.w_hh, 1, w_hh_column, packed_hh_bf16.get(), hh_bf16_size);
      }
    } else {
      pack_chunks(units, H, kFirstGates, P, a.w_hh, 1, w_hh_column, packed_hh.get(), hh_size);
    }
    if constexpr (Cell::kTwoPhase) {
      pack_chunks(units, H, 1, H, a.w_hh, 1, [&](int, int64_t u) { return ((G - 1) * H + u) * P; },
                  packed_hn.get(), panel_size);
    }
    if (projected) {
      pack_chunks(dims, P, 1, H, a.w_hr, 1, [&](int, int64_t p) { return p * H; }, packed_hr.get(), panel_size);
    }
    if (inputs.blocked) {
      pack_chunks(units, H, G, I, a.w_ih, 1, [&](int g, int64_t u) { return (g * H + u) * I; }, packed_ih.get(),
                  ih_size);
    }
    T* rec = scratch.get() + thread_id() * rec_size;
    int64_t first, last;
    units.mine(&first, &last);
    const int64_t x_cols = (last - first) * G * NR;
    // (Sized by the columns this thread owns in the team it got, which may be smaller than
    // planned, e.g. inside another parallel region.)
    Buffer<T> xp_block(inputs.blocked ? inputs.steps * B * x_cols : 0);
    T* xp = xp_block.get();
    int64_t t_first = 0;  // the time row of xp's first rows
    // The input projections for the step of time row t, sequence b, and the chunk of unit u0:
    // gate g of unit u0+w at [g*x_stride + w].
    const int64_t x_stride = inputs.blocked ? NR : H;
    const auto x_row = [&](int64_t t, int64_t b, int64_t u0) {
      return inputs.blocked ? xp + ((t - t_first) * B + b) * x_cols + (u0 / NR - first) * G * NR
                            : xp_merged + (t * B + b) * GH + u0;
    };
    for (int64_t s = 0; s < steps; ++s) {
      if (inputs.blocked && s % inputs.steps == 0) {
        const int64_t count = std::min(inputs.steps, steps - s);
        t_first = a.reverse ? steps - s - count : s;
        inputs.project(count, a.x + t_first * B * I, packed_ih.get() + first * ih_size, x_cols, xp);
      }
      const T* h_prev = h_state.get() + (s & 1) * B * P;
      T* h_next = h_state.get() + ((s + 1) & 1) * B * P;
      const T* c_prev = Cell::kHasCell ? c_state.get() + (s & 1) * B * H : nullptr;
      T* c_next = Cell::kHasCell ? c_state.get() + ((s + 1) & 1) * B * H : nullptr;
      T* cell_out = projected ? m_step.get() : h_next;
      const T* product_prev = scaled ? h_product.get() + (s & 1) * B * P : h_prev;
      T* product_next = scaled ? h_product.get() + ((s + 1) & 1) * B * P : nullptr;
      uint32_t* pairs_next = bf16 ? h_pairs.get() + ((s + 1) & 1) * B * pairs : nullptr;
      const auto cell_rows = [&](int64_t u0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
        run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
          using V = Vec<T, decltype(bytes)::value>;
          for (int64_t b = b0; b < b0 + rows; ++b) {
            const T* x = x_row(sch.row(s), b, u0);
            if constexpr (Cell::kTwoPhase) {
              step.template reset_row<V>(s, b, u0, width, block + (b - b0) * ld, x, x_stride, product_prev);
            } else {
              step.template row<V>(s, b, u0, width, block + (b - b0) * ld, x, x_stride, h_prev, cell_out, c_prev,
                                   c_next);
              if (!projected) publish_state<V>(a, sch, s, b, u0, width, h_prev, h_next, product_next);
              if constexpr (kBf16Capable) {  // (u0 is even: a chunk's pairs are its own)
                if (pairs_next) pack_a_bf16(1, width, h_next + b * P + u0, P, pairs_next + b * pairs + u0 / 2);
              }
            }
          }
        });
      };
      if (bf16) {
        if constexpr (kBf16Capable) {
          const uint32_t* pairs_prev = h_pairs.get() + (s & 1) * B * pairs;
          for_each_block(units, H, B, cols, Bf16Product{P, pairs_prev, packed_hh_bf16.get(), hh_bf16_size},
                         group_first, rec, cell_rows);
        }
      } else {
        for_each_block(units, H, B, cols, PackedProduct<T>{P, product_prev, P, packed_hh.get(), hh_size}, group_first,
                       rec, cell_rows);
      }
      if constexpr (Cell::kTwoPhase) {
        // The last gate's product reads every unit's r*h: a second barrier, and a second GEMM.
        barrier();
        for_each_block(units, H, B, NR, PackedProduct<T>{H, rh_step.get(), H, packed_hn.get(), panel_size}, group_units,
                       rec, [&](int64_t u0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
          run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
            using V = Vec<T, decltype(bytes)::value>;
            for (int64_t b = b0; b < b0 + rows; ++b) {
              step.template row<V>(s, b, u0, width, block + (b - b0) * ld, x_row(sch.row(s), b, u0), x_stride,
                                   h_prev, h_next, nullptr, nullptr);
              publish_state<V>(a, sch, s, b, u0, width, h_prev, h_next, product_next);
            }
          });
        });
      }
      if (projected) {
        // h_next = m W_hr^T needs every unit's m: a second barrier, and a second GEMM.
        barrier();
        for_each_block(dims, P, B, NR, PackedProduct<T>{H, m_step.get(), H, packed_hr.get(), panel_size}, group_dims,
                       rec, [&](int64_t p0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
          run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
            using V = Vec<T, decltype(bytes)::value>;
            for (int64_t b = b0; b < b0 + rows; ++b) {
              std::copy_n(block + (b - b0) * ld, width, h_next + b * P + p0);
              publish_state<V, T>(a, sch, s, b, p0, width, h_prev, h_next, nullptr);  // (no scale with w_hr)
            }
          });
        });
      }
      barrier();
    }
  }

  std::copy_n(h_state.get() + (steps & 1) * B * P, B * P, a.h_n);
  if constexpr (Cell::kHasCell) std::copy_n(c_state.get() + (steps & 1) * B * H, B * H, a.c_n);
}

// Backward buffers shared by the team.
template <class T>
struct BackwardState {
  T* dgx;       // [T, B, G*H] gradient of x W_ih^T + b_ih, time order
  T* dgh_last;  // [T, B, H] kSplitGradient only: the last gate's gradient of h W_hh^T + b_hh (the
                //   other gates' equal dgx's), else null
  T* dh_carry;  // [B, P] gradient reaching the state besides the recurrent product
  T* dc_carry;  // [B, H] the same for c (LSTM)
  T* dh_step;   // [B, P] this step's total gradient of h (projection only)
  T* dh_all;    // [T, B, P] every step's, time order, for dW_hr (projection only)
  T* db_x;      // [G*H] sum of dgx over all steps and sequences (b_ih's gradient), or null
  T* db_h;      // [G*H] the same of dgh (b_hh's) when kSplitGradient, else null
};

// Adds a gate gradient into its bias gradient's sum (db: one of BackwardState's, or null). The
// thread that owns a unit adds all of its (step, sequence) terms, in the same order whatever the
// thread count; summing here, while the terms are in registers, saves a pass over T*B*G*H
// values in memory after the loop (LSTM, B=64, H=256: about 2% of a training step).
template <class V, class T>
FUSEDRNN_INLINE void add_to_bias_sum(T* db, V gradient, int64_t n) {
  if (db) (V::load(db, n) + gradient).store(db, n);
}

// Gradient of the state dims p0..p0+width of sequence b at step s, from dy, the carry and the
// recurrent product `rec`; under a projection it is kept for dW_hr and for the units' dm.
template <class T>
void gather_state_gradient(const BackwardArgs<T>& a, const Schedule& sch, const BackwardState<T>& st,
                           int64_t s, int64_t b, int64_t p0, int64_t width, const T* rec) {
  const int64_t B = a.B, P = a.P, at = b * P + p0, t = sch.row(s);
  const T* dy_row = a.dy ? a.dy + (t * B + b) * P + p0 : nullptr;
  if (!sch.active(t, b)) {  // masked: the state was carried, so is its gradient
    const bool repeated = dy_row && sch.repeats_output(s, b);
    for (int64_t w = 0; w < width; ++w) st.dh_carry[at + w] += rec[w] + (repeated ? dy_row[w] : T(0));
    std::fill_n(st.dh_step + at, width, T(0));
    std::fill_n(st.dh_all + (t * B + b) * P + p0, width, T(0));
    return;
  }
  for (int64_t w = 0; w < width; ++w) {
    const T total = st.dh_carry[at + w] + rec[w] + (dy_row ? dy_row[w] : T(0));
    st.dh_step[at + w] = total;
    st.dh_all[(t * B + b) * P + p0 + w] = total;
    st.dh_carry[at + w] = T(0);  // the LSTM update reads no h directly: nothing else flows back
  }
}

// The pointwise half of a backward step for one sequence and one chunk of hidden units.
template <class Cell, class T>
struct BackwardStep {
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  const BackwardArgs<T>& a;
  const Schedule& sch;
  const BackwardState<T>& st;

  // rec: without projection dG_{s+1} W_hh for these units (zero at the last step), to which the
  // carry and dy are added; with one, dm = dh_step W_hr, the whole gradient of the cell output.
  // dg_step: this step's dgh again, in step order, for the next recurrent product.
  // Two-phase cells: this is their first backward phase (n and z); reset_row finishes r.
  template <class V>
  FUSEDRNN_INLINE void row(int64_t s, int64_t b, int64_t u0, int64_t width, const T* rec, T* dg_step) const {
    const int64_t B = a.B, H = a.H, GH = G * H, at = b * H + u0, t = sch.row(s);
    const bool projected = a.w_hr != nullptr;
    const T* dy_row = a.dy && !projected ? a.dy + (t * B + b) * H + u0 : nullptr;
    T* dgx_row = st.dgx + (t * B + b) * GH + u0;
    T* dgh_last_row = Cell::kSplitGradient ? st.dgh_last + (t * B + b) * H + u0 : nullptr;
    T* dg_step_row = dg_step + b * GH + u0;
    // Under recurrent dropout rec is the gradient of h * scale: scaled once more, it is h's.
    const T* scale = a.recurrent_scale ? a.recurrent_scale + at : nullptr;
    if (!sch.active(t, b)) {  // masked: the state was carried, so is its gradient
      if (!projected) {
        const bool repeated = dy_row && sch.repeats_output(s, b);
        for (int64_t w = 0; w < width; ++w) {
          st.dh_carry[at + w] += rec[w] * (scale ? scale[w] : T(1)) + (repeated ? dy_row[w] : T(0));
        }
      }
      for (int g = 0; g < G; ++g) {
        std::fill_n(dgx_row + g * H, width, T(0));
        std::fill_n(dg_step_row + g * H, width, T(0));
      }
      if constexpr (Cell::kSplitGradient) std::fill_n(dgh_last_row, width, T(0));
      return;
    }
    const T* saved_row = a.saved_gates + (t * B + b) * S * H + u0;
    const int64_t prev_at = (sch.prev_slot(t) * B + b) * H + u0, new_at = (sch.new_slot(t) * B + b) * H + u0;
    if (s > 0) {  // the next step (backward walks down) reads these rows of row(s-1)
      const int64_t t_next = sch.row(s - 1);
      prefetch_lines(a.saved_gates + (t_next * B + b) * S * H + u0, S, H);
      if (dy_row) prefetch_lines(a.dy + (t_next * B + b) * H + u0, 1, 0);
      if (!projected) prefetch_lines(a.saved_h + (sch.prev_slot(t_next) * B + b) * H + u0, 1, 0);
      if (Cell::kHasCell) prefetch_lines(a.saved_c + (sch.prev_slot(t_next) * B + b) * H + u0, 1, 0);
    }
    for_each_vector<V, T>(width, [&](int64_t w, int64_t n) FUSEDRNN_INLINE_LAMBDA {
      V saved[S > 0 ? S : 1], gx[G], gh[G];
      for (int k = 0; k < S; ++k) saved[k] = V::load(saved_row + k * H + w, n);
      // Under a projection only c's saved rows are per unit (the LSTM reads no h).
      const State<V> prev{projected ? V() : V::load(a.saved_h + prev_at + w, n),
                          Cell::kHasCell ? V::load(a.saved_c + prev_at + w, n) : V()};
      const State<V> next{projected ? V() : V::load(a.saved_h + new_at + w, n),
                          Cell::kHasCell ? V::load(a.saved_c + new_at + w, n) : V()};
      V dh = V::load(rec + w);
      if (scale) dh = dh * V::load(scale + w, n);
      if (!projected) {
        dh += V::load(st.dh_carry + at + w, n);
        if (dy_row) dh += V::load(dy_row + w, n);
      }
      const State<V> d_next{dh, Cell::kHasCell ? V::load(st.dc_carry + at + w, n) : V()};
      State<V> d_prev{};
      if constexpr (Cell::kTwoPhase) {
        Cell::output_backward(saved, prev, d_next, gx, d_prev);
        for (int g = 1; g < G; ++g) {
          gx[g].store(dgx_row + g * H + w, n);
          gx[g].store(dg_step_row + g * H + w, n);
          add_to_bias_sum(st.db_x ? st.db_x + g * H + u0 + w : nullptr, gx[g], n);
        }
      } else {
        Cell::backward(saved, prev, next, d_next, gx, gh, d_prev);
        for (int g = 0; g < G; ++g) {
          gx[g].store(dgx_row + g * H + w, n);
          gh[g].store(dg_step_row + g * H + w, n);
          add_to_bias_sum(st.db_x ? st.db_x + g * H + u0 + w : nullptr, gx[g], n);
          if constexpr (Cell::kSplitGradient) add_to_bias_sum(st.db_h ? st.db_h + g * H + u0 + w : nullptr, gh[g], n);
        }
        if constexpr (Cell::kSplitGradient) gh[G - 1].store(dgh_last_row + w, n);
      }
      if (!projected) d_prev.h.store(st.dh_carry + at + w, n);
      if constexpr (Cell::kHasCell) d_prev.c.store(st.dc_carry + at + w, n);
    });
  }

  // Two-phase cells, second phase: d_rh = (W_hn^T da_n) of these units in rec gives da_r and
  // the rest of the previous state's gradient.
  template <class V>
  FUSEDRNN_INLINE void reset_row(int64_t s, int64_t b, int64_t u0, int64_t width, const T* rec, T* dg_step) const {
    const int64_t B = a.B, H = a.H, GH = G * H, at = b * H + u0, t = sch.row(s);
    if (!sch.active(t, b)) return;  // row() zeroed its gradients and carried the state's
    const T* saved_row = a.saved_gates + (t * B + b) * S * H + u0;
    const int64_t prev_at = (sch.prev_slot(t) * B + b) * H + u0;
    const T* scale = a.recurrent_scale ? a.recurrent_scale + at : nullptr;
    for_each_vector<V, T>(width, [&](int64_t w, int64_t n) FUSEDRNN_INLINE_LAMBDA {
      V saved[S], dg[G];
      for (int k = 0; k < S; ++k) saved[k] = V::load(saved_row + k * H + w, n);
      // r multiplied h as the products see it (h * scale under recurrent dropout).
      V h_product = V::load(a.saved_h + prev_at + w, n);
      if (scale) h_product = h_product * V::load(scale + w, n);
      State<V> d_product{};
      Cell::reset_backward(saved, State<V>{h_product, V()}, V::load(rec + w), dg, d_product);
      if (scale) d_product.h = d_product.h * V::load(scale + w, n);
      dg[0].store(st.dgx + (t * B + b) * GH + u0 + w, n);
      dg[0].store(dg_step + b * GH + u0 + w, n);
      add_to_bias_sum(st.db_x ? st.db_x + u0 + w : nullptr, dg[0], n);
      (V::load(st.dh_carry + at + w, n) + d_product.h).store(st.dh_carry + at + w, n);
    });
  }
};

template <class Cell, class T>
void backward_layer(const BackwardArgs<T>& a) {
  constexpr int G = Cell::kGates;
  constexpr int S = Cell::kSaved;
  constexpr int64_t NR = kPanel<T>;
  const int64_t steps = a.T_, B = a.B, I = a.I, H = a.H, P = a.P, GH = G * H;
  // Rows of W_hh whose product reads h itself (a two-phase cell's last gate reads r*h).
  const int64_t KH = Cell::kTwoPhase ? (G - 1) * H : GH;
  const bool projected = a.w_hr != nullptr;
  const std::vector<int64_t> first_steps = first_active_steps(a);
  const Schedule sch(a, first_steps.data());

  T* dgx = workspace<T>(0, steps * B * GH);
  T* dgh_last = Cell::kSplitGradient ? workspace<T>(1, steps * B * H) : nullptr;
  // dgh of the step just done and of the one before, in step order: the recurrent product reads
  // one while the team writes the other.
  Buffer<T> dg_step(2 * B * GH);
  Buffer<T> dh_carry(B * P), dc_carry(Cell::kHasCell ? B * H : 0);
  Buffer<T> dh_step(projected ? B * P : 0);
  T* dh_all = projected ? workspace<T>(2, steps * B * P) : nullptr;
  copy_or_zero(dh_carry.get(), a.dh_n, B * P);
  if constexpr (Cell::kHasCell) copy_or_zero(dc_carry.get(), a.dc_n, B * H);
  // The bias gradients' sums, zeroed: each thread adds its own units' terms (see add_to_bias_sum).
  const bool bias = a.db_ih || a.db_hh;
  Buffer<T> db_sums(bias ? 2 * GH : 0);
  if (bias) std::fill_n(db_sums.get(), 2 * GH, T(0));
  T* db_x = bias ? db_sums.get() : nullptr;
  T* db_h = bias && Cell::kSplitGradient ? db_sums.get() + GH : nullptr;
  const BackwardState<T> st{dgx, dgh_last, dh_carry.get(), dc_carry.get(), dh_step.get(), dh_all, db_x, db_h};

  // State dims in chunks (units when there is no projection), each with its columns of W_hh
  // (K = the rows reading h); under a projection, units in chunks with their columns of W_hr
  // (K = P); a two-phase cell's units with their columns of W_hn (K = H).
  const Chunks<T> dims(P), units(projected || Cell::kTwoPhase ? H : 0);
  const int64_t hh_size = packed_b_size<T>(KH, NR), hr_size = packed_b_size<T>(P, NR);
  const int64_t hn_size = packed_b_size<T>(H, NR);
  Buffer<T> packed_hh(dims.count * hh_size), packed_hr(projected ? units.count * hr_size : 0);
  Buffer<T> packed_hn(Cell::kTwoPhase ? units.count * hn_size : 0);
  const int64_t weights = P * G * H + (projected ? H * P : 0);
  const int threads = team_for(std::max(dims.count, units.count), 2 * B * weights, weights * int64_t(sizeof(T)));
  const int64_t group_dims = chunk_group(B, dims.count, threads, 1), group_units = chunk_group(B, units.count, threads, 1);
  const int64_t rec_size = std::min(B, kRowBlock) * std::max(group_dims, group_units) * NR;
  Buffer<T> scratch(threads * rec_size);
  const BackwardStep<Cell, T> step{a, sch, st};
  const Isa isa = current_isa();

#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
  {
    pack_chunks(dims, P, 1, KH, a.w_hh, P, [](int, int64_t p) { return p; }, packed_hh.get(), hh_size);
    if (projected) {
      pack_chunks(units, H, 1, P, a.w_hr, H, [](int, int64_t u) { return u; }, packed_hr.get(), hr_size);
    }
    if constexpr (Cell::kTwoPhase) {
      pack_chunks(units, H, 1, H, a.w_hh + (G - 1) * H * P, P, [](int, int64_t u) { return u; },
                  packed_hn.get(), hn_size);
    }
    T* rec = scratch.get() + thread_id() * rec_size;
    for (int64_t s = steps - 1; s >= 0; --s) {
      T* dg_cur = dg_step.get() + (s & 1) * B * GH;
      // dG_{s+1} W_hh, through the rows reading h; nothing after the last step.
      const T* dg_next = s + 1 < steps ? dg_step.get() + ((s + 1) & 1) * B * GH : nullptr;
      for_each_block(dims, P, B, NR, PackedProduct<T>{KH, dg_next, GH, packed_hh.get(), hh_size}, group_dims, rec,
                     [&](int64_t p0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
        run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
          using V = Vec<T, decltype(bytes)::value>;
          for (int64_t b = b0; b < b0 + rows; ++b) {
            if (projected) {
              gather_state_gradient(a, sch, st, s, b, p0, width, block + (b - b0) * ld);
            } else {
              step.template row<V>(s, b, p0, width, block + (b - b0) * ld, dg_cur);
            }
          }
        });
      });
      if (projected) {
        // dm = dh W_hr needs every state dim's gradient: a second barrier and a second GEMM.
        barrier();
        for_each_block(units, H, B, NR, PackedProduct<T>{P, dh_step.get(), P, packed_hr.get(), hr_size}, group_units,
                       rec, [&](int64_t u0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
          run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
            using V = Vec<T, decltype(bytes)::value>;
            for (int64_t b = b0; b < b0 + rows; ++b) step.template row<V>(s, b, u0, width, block + (b - b0) * ld, dg_cur);
          });
        });
      }
      if constexpr (Cell::kTwoPhase) {
        // d(r*h) = da_n W_hn needs every unit's da_n: a second barrier and a second GEMM.
        barrier();
        for_each_block(units, H, B, NR, PackedProduct<T>{H, dg_cur + (G - 1) * H, GH, packed_hn.get(), hn_size},
                       group_units, rec,
                       [&](int64_t u0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
          run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
            using V = Vec<T, decltype(bytes)::value>;
            for (int64_t b = b0; b < b0 + rows; ++b) step.template reset_row<V>(s, b, u0, width, block + (b - b0) * ld, dg_cur);
          });
        });
      }
      barrier();
    }
    // The gradient of the initial state: what step 0 sends back through W_hh, plus the carry.
    const T* dg_first = steps > 0 ? dg_step.get() : nullptr;
    for_each_block(dims, P, B, NR, PackedProduct<T>{KH, dg_first, GH, packed_hh.get(), hh_size}, group_dims, rec,
                   [&](int64_t p0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
      for (int64_t b = b0; b < b0 + rows; ++b) {
        for (int64_t w = 0; w < width; ++w) {
          const T scale = a.recurrent_scale ? a.recurrent_scale[b * P + p0 + w] : T(1);
          a.dh0[b * P + p0 + w] = block[(b - b0) * ld + w] * scale + dh_carry.get()[b * P + p0 + w];
        }
      }
    });
  }
  if constexpr (Cell::kHasCell) std::copy_n(dc_carry.get(), B * H, a.dc0);

  // Merged GEMMs over all T*B rows. The input state of time row t is saved_h[t + reverse].
  const int64_t rows = steps * B;
  const T* h_prev = a.saved_h + sch.prev_slot(0) * B * P;
  // Under recurrent dropout W_hh multiplied h * scale (the same scale at every step).
  if (a.recurrent_scale) {
    T* scaled = workspace<T>(2, rows * P);  // (slot 2 is free: no projection with a scale)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t p = 0; p < P; ++p) scaled[r * P + p] = h_prev[r * P + p] * a.recurrent_scale[(r % B) * P + p];
    }
    h_prev = scaled;
  }
  gemm<T>(rows, I, GH, st.dgx, GH, 1, a.w_ih, I, 1, a.dx, I, false);
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
  if (a.db_ih) std::copy_n(db_x, GH, a.db_ih);
  if (a.db_hh) std::copy_n(Cell::kSplitGradient ? db_h : db_x, GH, a.db_hh);
}

}  // namespace

template <class T>
void forward(CellKind cell, const ForwardArgs<T>& args) {
  with_cell(cell, [&](auto cell_type) { forward_layer<decltype(cell_type), T>(args); });
}

template <class T>
void backward(CellKind cell, const BackwardArgs<T>& args) {
  with_cell(cell, [&](auto cell_type) { backward_layer<decltype(cell_type), T>(args); });
}

template void forward<float>(CellKind, const ForwardArgs<float>&);
template void forward<double>(CellKind, const ForwardArgs<double>&);
template void backward<float>(CellKind, const BackwardArgs<float>&);
template void backward<double>(CellKind, const BackwardArgs<double>&);

}  // namespace fusedrnn::cpu

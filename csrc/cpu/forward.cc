// The CPU forward loop: one recurrent layer, one direction, every cell (the shared machinery and
// how the team works: cpu/driver.h).
//
// Forward, one layer, one direction:
//   1. The input projections xp = x W_ih^T (b_ih is added in the pointwise step, which reads xp
//      anyway): each thread computes its own units' for a block of steps at a time inside the
//      time loop, so that they stay in its caches until the pointwise step reads them; one
//      merged GEMM over all T*B rows before the loop when W_ih is large (InputProjections).
//   2. One OpenMP team spans the whole time loop. Hidden units are cut into chunks of one GEMM
//      panel width (kPanel units), packed once per call with the gates of a chunk interleaved
//      panel by panel; a thread computes ALL gates of a chunk, so it applies the cell right after
//      its recurrent GEMM block, while the values are still in L1. A large layer's team splits
//      the chunks: each thread owns a contiguous run, whose slice of W_hh stays in its core's L2
//      for all T steps; the state is double-buffered (step s reads buffer s&1 and writes the
//      other; in inference without masks, its rows of y), so one barrier per step is enough. A
//      small layer's team splits the batch: each thread computes every chunk for its own rows,
//      which need nothing from the others, so the threads meet only once the weights are packed
//      (cpu/driver.h's BatchRows says why).
//   3. Training saves the cell's post-activation values and every state; inference saves nothing.
//   A projection (LSTM proj_size) or a two-phase cell (reset-before-product GRU) adds a second
//   GEMM per step, and a second barrier when the team splits the units: it needs a value every
//   unit gives first.
// Which steps run and where their states are saved: schedule.h.
//
// Gradient contract: outputs are overwritten (=); the Python layer accumulates (+=).
#include <algorithm>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/batch_order.h"
#include "cpu/buffer.h"
#include "cpu/driver.h"
#include "cpu/layer.h"
#include "cpu/packed_weights.h"
#include "recurrence.h"
#include "schedule.h"

namespace fusedrnn::cpu {
namespace {

// Fetches, for writing, the output row of sequence b, dims p0..p0+width, that the next step writes
// (without it the stores waited on memory: an RNN layer, B=64, H=256, ran 0.93-0.94x as fast on a
// Zen 4).
template <class T>
FUSEDRNN_INLINE void prefetch_next_output(const ForwardArgs<T>& a, const Schedule& sch, int64_t s, int64_t b,
                                          int64_t p0, int64_t width) {
  if (s + 1 < a.T_) prefetch_lines<1>(a.y + (sch.row(s + 1) * a.B + b) * a.P + p0, 1, 0, width);
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
  prefetch_next_output(a, sch, s, b, p0, width);
  if (saved && s + 1 < a.T_) {  // the next step writes these rows too
    prefetch_lines<1>(a.saved_h + (sch.new_slot(sch.row(s + 1)) * B + b) * P + p0, 1, 0, width);
  }
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
// above twice L2 (2 MiB there) keeps the merged GEMM. So does a team of one thread (a small layer) when
// there are more cores: the merged GEMM uses them all (LSTM, T=100, B=8, I=2048, H=32: 1.06 ms
// merged, 1.79 ms by the one thread).
//
// The sizes are fractions of the core's L2 (cpu/cpu_caches.h), which they were measured as on a
// core with 1 MiB: a thread's slice of W_ih up to twice L2 is blocked, a block of projections
// takes half of L2, and a GEMM call's rows of x an eighth.
template <class T>
struct InputProjections {
  int64_t B, I;
  bool blocked;
  int64_t steps;  // per block
  int64_t rows;   // per GEMM call

  // rows_: the most batch rows, cols_ the most columns (G per unit) a thread of the planned team
  // computes.
  InputProjections(int64_t B_, int64_t I_, int64_t rows_, int64_t cols_, int64_t all_steps, int team, int64_t l2)
      : B(B_), I(I_),
        blocked(I_ * cols_ * int64_t(sizeof(T)) <= 2 * l2 && (team > 1 || max_threads() == 1)),
        steps(std::clamp<int64_t>(l2 / 2 / std::max<int64_t>(1, rows_ * cols_ * int64_t(sizeof(T))), 1, all_steps)),
        rows(std::max<int64_t>(12, l2 / 8 / std::max<int64_t>(1, I_ * int64_t(sizeof(T))) / 12 * 12)) {}

  // xp = the count steps' rows `mine` of x times this thread's packed W_ih chunks (x_cols
  // columns), step j's row b at xp row j * (mine.last - mine.first) + b - mine.first; of each step
  // only the rows below kept[j] (the sequences taking it: nothing reads the others').
  // multiply(n, x_rows, out): out (n x x_cols) = n rows of x times the chunks, at most `rows`.
  template <class Multiply>
  void project(int64_t count, const T* x, int64_t x_cols, T* xp, const int64_t* kept, BatchRows mine,
               const Multiply& multiply) const {
    const int64_t own = mine.last - mine.first;
    for (int64_t j = 0; j < count;) {
      // A run of steps that keep every row is one range of rows (when this thread has them all), a
      // step that keeps fewer its own.
      int64_t next = j;
      while (own == B && next < count && kept[next] == B) ++next;
      const int64_t begin = j * own;
      const int64_t end = next > j ? next * own : j * own + std::clamp(kept[j] - mine.first, int64_t(0), own);
      const T* x_first = x + (j * B + mine.first) * I;  // (rows of x run on with the next step's when own == B)
      for (int64_t r0 = begin; r0 < end; r0 += rows) {
        multiply(std::min(rows, end - r0), x_first + (r0 - begin) * I, xp + r0 * x_cols);
      }
      j = next > j ? next : j + 1;
    }
  }
};

static_assert(kPackedSlots + PackedWeights::kSlotCount == kBatchOrderSlots, "a workspace slot for each packed matrix");

// Where one packed weight matrix lives for a call: in the caller's PackedWeights (then packed only
// when the cache does not hold it yet) or in the calling thread's workspace (cpu/buffer.h).
template <class E>
struct PackedMatrix {
  PackedWeights* cache;
  PackedWeights::Slot slot;
  E* data;
  bool pack;  // whether this call must pack it

  PackedMatrix(PackedWeights* cache_, PackedWeights::Slot slot_, int64_t count)
      : cache(cache_), slot(slot_),
        data(cache_ ? cache_->storage<E>(slot_, count) : workspace<E>(kPackedSlots + slot_, count)),
        pack(!cache_ || !cache_->ready(slot_)) {}

  E* get() const { return data; }
  // After the team packed it (every chunk: the team's threads own them all between them).
  void packed_by_team() {
    if (cache && pack && data) cache->set_ready(slot);
  }
};

// The team of forward's time loop (cpu/driver.h's plan_team): the chunks it cuts are those of the
// units, or under a projection of the state dims if more; every step's products read W_hh and W_hr.
template <class T>
TeamPlan forward_team_plan(const ForwardArgs<T>& a, int G) {
  constexpr int64_t NR = kPanel<T>;
  const bool projected = a.w_hr != nullptr;
  const int64_t chunks = std::max(ceil_div(a.H, NR), projected ? ceil_div(a.P, NR) : 0);
  return plan_team(a, chunks, a.P * G * a.H + (projected ? a.H * a.P : 0), int64_t(sizeof(T)));
}

// The pointwise half of a forward step for one sequence and one chunk of hidden units (a run of
// chunks for a one-gate cell, whose values then lie unit by unit: forward_layer's kOneGate).
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
    if (training && s + 1 < a.T_) {  // the next step writes these rows
      const int64_t t_next = sch.row(s + 1);
      prefetch_lines<1>(a.saved_gates + (t_next * B + b) * S * H + u0, S, H, width);
      if (saved_c) prefetch_lines<1>(a.saved_c + (sch.new_slot(t_next) * B + b) * H + u0, 1, 0, width);
      if (saved_m) prefetch_lines<1>(a.saved_m + (t_next * B + b) * H + u0, 1, 0, width);
    }
    const T* x_bias = b_ih + u0;
    const T* bias = b_hh + u0;
    const auto load_gates = [&](int64_t w, int64_t n, V* xg, V* hg) FUSEDRNN_INLINE_LAMBDA {
      for (int g = 0; g < G; ++g) {
        xg[g] = V::load(x_row + g * x_stride + w, n) + V::load(x_bias + g * H + w, n);
        hg[g] = V::load(rec + g * NR + w) + V::load(bias + g * H + w, n);
      }
    };
    // A one-phase cell's first stage on the whole chunk, then its second (cells/common.h says why).
    constexpr int kActivated = Cell::kActivated;
    T act[kActivated > 0 ? kActivated * NR : 1];
    if constexpr (kActivated > 0) {
      for_each_vector<V, T>(width, [&](int64_t w, int64_t n) FUSEDRNN_INLINE_LAMBDA {
        V xg[G], hg[G], a[kActivated];
        load_gates(w, n, xg, hg);
        Cell::activate(xg, hg, a);
        for (int k = 0; k < kActivated; ++k) a[k].store(act + k * NR + w);
      });
    }
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
        V xg[G], hg[G], a[kActivated > 0 ? kActivated : 1];
        load_gates(w, n, xg, hg);  // (what update() does not read, the compiler drops)
        for (int k = 0; k < kActivated; ++k) a[k] = V::load(act + k * NR + w);
        Cell::update(xg, hg, a, prev, next, saved);
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
void forward_layer(const ForwardArgs<T>& a, PackedWeights* cache) {
  constexpr int G = Cell::kGates;
  constexpr int64_t NR = kPanel<T>;
  // Gates whose recurrent product reads h itself (a two-phase cell's last one reads r*h).
  constexpr int kFirstGates = Cell::kTwoPhase ? G - 1 : G;
  const int64_t steps = a.T_, B = a.B, I = a.I, H = a.H, P = a.P, GH = G * H;
  const bool projected = a.w_hr != nullptr;
  const std::vector<int64_t> first_steps = first_active_steps(a);
  const Schedule sch(a, first_steps.data());
  const std::vector<int64_t> active_rows = active_prefix_rows(a);

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

  // The team: sized to a step's work; it splits the batch when every thread can keep all the
  // recurrent weights in its L2 (BatchRows), else the units.
  // (The same team with bf16 weights: halving the count there ran small layers on one thread,
  // 1.6x slower than on two.)
  const TeamPlan team = forward_team_plan(a, G);
  // Inference on sequences that all take every step (no recurrent scale, projection, bfloat16
  // state or second phase either): each step's state is its row of y, written there by the cell
  // and read there by the next step's products, not a double buffer that publish_state copies to
  // y, a load and a store more for each value. Measured against the copy (Zen 4, 2 threads, T=100,
  // inference): B=64, I=32, H=128 (Keras's predict in bench/keras3_dropin.py) LSTM 1.10x, GRU
  // 1.06x, RNN 1.03x; B=64, I=H=256 and 512 1.02-1.07x; B=8 1.03-1.06x; B=1 1.01x.
  const bool state_in_y = steps > 0 && !a.saved_gates && !a.lengths && !a.mask && !scaled && !projected &&
                          !a.bf16_weights && !Cell::kTwoPhase;
  const int threads = team.threads;
  const bool by_rows = team.by_rows;

  // Hidden units in chunks (the first gates of a chunk: one panel each); a two-phase cell's
  // last gate in chunks of its own; under a projection, the output dims in chunks too (one
  // panel each: rows of W_hr).
  const Chunks<T> units(H, by_rows), dims(projected ? P : 0, by_rows);
  const int64_t cols = kFirstGates * NR;
  const int64_t hh_size = packed_b_size<T>(P, cols), panel_size = packed_b_size<T>(H, NR);
  // bfloat16 recurrent weights (the opt-in inference mode; the caller checks that the cell has
  // one product a step, without projection or recurrent scale): W_hh packed as bfloat16, and the
  // state as bfloat16 pairs, double-buffered like h, each thread writing its own units' pairs.
  constexpr bool kBf16Capable = std::is_same_v<T, float> && !Cell::kTwoPhase;
  const bool bf16 = kBf16Capable && a.bf16_weights;
  // A generation step reads W_ih and W_hh where they are (cpu/layer.h): nothing to pack.
  const bool in_place = one_step_in_place(steps, B, a.bf16_weights, projected, Cell::kTwoPhase);
  PackedMatrix<T> packed_hh(cache, PackedWeights::kHh, bf16 || in_place ? 0 : units.count * hh_size);
  PackedMatrix<T> packed_hr(cache, PackedWeights::kHr, dims.count * panel_size);
  PackedMatrix<T> packed_hn(cache, PackedWeights::kHn, Cell::kTwoPhase ? units.count * panel_size : 0);
  Buffer<T> rz_step(Cell::kTwoPhase ? 2 * B * H : 0), rh_step(Cell::kTwoPhase ? B * H : 0);
  const int64_t pairs = (P + 1) / 2, hh_bf16_size = bf16 ? packed_bf16_size(P, cols) : 0;
  PackedMatrix<uint16_t> packed_hh_bf16(cache, PackedWeights::kHhBf16, units.count * hh_bf16_size);
  Buffer<uint32_t> h_pairs(bf16 ? 2 * B * pairs : 0);
  if constexpr (kBf16Capable) {
    if (bf16) pack_a_bf16(B, P, h_state.get(), P, h_pairs.get());
  }
  const int64_t group_first = chunk_group<T>(B, team, units.count, kFirstGates);
  const int64_t group_units = chunk_group<T>(B, team, units.count, 1);
  const int64_t group_dims = chunk_group<T>(B, team, dims.count, 1);
  const int64_t rec_size = std::min(B, kRowBlock) * std::max({group_first * cols, group_units * NR, group_dims * NR});
  Buffer<T> scratch(threads * rec_size);
  InputProjections<T> inputs(B, I, team.rows_each(B),
                             G * NR * (by_rows ? units.count : ceil_div(units.count, threads)), steps, threads,
                             cache_sizes().l2);
  // bfloat16 input projections (the bf16 compute mode: a caller's autocast), blocked or merged as
  // float32's are: W_ih packed as bfloat16, and the rows of x rounded a GEMM call's rows at a time.
  const bool bf16_inputs = bf16 && a.bf16_projections;
  // A call whose projections take one GEMM call a thread (a few rows: a generation step) computes
  // them from the threads' packed chunks of W_ih: each thread packs its own share (or finds it in
  // the cache) rather than one thread packing all of W_ih inside the merged GEMM. The choice does
  // not depend on the cache, so that results are bitwise the same with and without one (the
  // merged GEMM sums a long K in blocks).
  if (!inputs.blocked && steps * B <= inputs.rows) {
    inputs.blocked = true;
    inputs.steps = steps;
  }
  const int64_t ih_size = inputs.blocked && !in_place && !bf16_inputs ? packed_b_size<T>(I, G * NR) : 0;
  PackedMatrix<T> packed_ih(cache, PackedWeights::kIh, units.count * ih_size);
  const int64_t ih_bf16_size = inputs.blocked && bf16_inputs ? packed_bf16_size(I, G * NR) : 0;
  PackedMatrix<uint16_t> packed_ih_bf16(cache, PackedWeights::kIhBf16, units.count * ih_bf16_size);
  // Where each time row's projections start in the merged GEMM's result: there, when the rows
  // taking no step are many (a PackedSequence of varied lengths), the GEMM runs on the others
  // only (active_rows[t] of time row t, the first ones), gathered, if the multiply-adds that saves
  // outweigh the copy (kCopyCost each).
  const int64_t kept_rows = std::accumulate(active_rows.begin(), active_rows.end(), int64_t(0));
  const bool gathered = !inputs.blocked && (steps * B - kept_rows) * GH > kCopyCost * kept_rows;
  std::vector<int64_t> first_row(steps);
  for (int64_t t = 0, r = 0; t < steps; r += gathered ? active_rows[t] : B, ++t) first_row[t] = r;
  T* xp_merged = inputs.blocked ? nullptr : workspace<T>(0, (gathered ? kept_rows : steps * B) * GH);
  if (!inputs.blocked) {
    const T* x_rows = a.x;
    if (gathered) {
      T* x_kept = workspace<T>(1, kept_rows * I);
      gather_kept_rows(a.x, I, I, steps, B, active_rows.data(), x_kept);
      x_rows = x_kept;
    }
    const int64_t rows = gathered ? kept_rows : steps * B;
    if (bf16_inputs) {  // (W_ih packed for this call: the cache's slot holds the blocked layout)
      if constexpr (kBf16Capable) {
        std::vector<int64_t> row_of_w_ih(GH);  // (column j of W_ih^T: row j of W_ih)
        for (int64_t j = 0; j < GH; ++j) row_of_w_ih[j] = j * I;
        Buffer<uint16_t> w_ih_bf16(packed_bf16_size(I, GH));
        pack_b_bf16(I, GH, a.w_ih, row_of_w_ih.data(), 1, w_ih_bf16.get());
        gemm_bf16_rows(rows, GH, I, x_rows, I, w_ih_bf16.get(), xp_merged, GH);
      }
    } else {
      gemm<T>(rows, GH, I, x_rows, I, 1, a.w_ih, 1, I, xp_merged, GH, /*accumulate=*/false);
    }
  }
  const ForwardStep<Cell, T> step{a, sch, b_ih.get(), b_hh.get(), rz_step.get(), rh_step.get()};
  // An RNN's chunks have one gate, so a run of them lies unit by unit everywhere (its blocked
  // projections too): for_each_block passes cell_rows whole runs.
  constexpr bool kOneGate = kFirstGates == 1;
  static_assert(!kOneGate || Cell::kActivated == 0, "ForwardStep::row's act holds one chunk, not a run");
  const Isa isa = current_isa();

  StepBarrier step_end(threads);
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
  {
    const auto w_hh_column = [&](int g, int64_t u) { return (g * H + u) * P; };
    if (bf16) {
      if constexpr (kBf16Capable) {
        if (packed_hh_bf16.pack) {
          pack_chunks(units, H, kFirstGates, P, a.w_hh, 1, w_hh_column, packed_hh_bf16.get(), hh_bf16_size);
        }
      }
    } else if (packed_hh.pack && !in_place) {
      pack_chunks(units, H, kFirstGates, P, a.w_hh, 1, w_hh_column, packed_hh.get(), hh_size);
    }
    if constexpr (Cell::kTwoPhase) {
      if (packed_hn.pack) {
        pack_chunks(units, H, 1, H, a.w_hh, 1, [&](int, int64_t u) { return ((G - 1) * H + u) * P; },
                    packed_hn.get(), panel_size);
      }
    }
    if (projected && packed_hr.pack) {
      pack_chunks(dims, P, 1, H, a.w_hr, 1, [&](int, int64_t p) { return p * H; }, packed_hr.get(), panel_size);
    }
    const auto w_ih_column = [&](int g, int64_t u) { return (g * H + u) * I; };
    if (ih_size && packed_ih.pack) pack_chunks(units, H, G, I, a.w_ih, 1, w_ih_column, packed_ih.get(), ih_size);
    if constexpr (kBf16Capable) {
      if (ih_bf16_size && packed_ih_bf16.pack) {
        pack_chunks(units, H, G, I, a.w_ih, 1, w_ih_column, packed_ih_bf16.get(), ih_bf16_size);
      }
    }
    if (by_rows) step_end.wait();  // (every thread reads every chunk's packed weights)
    const BatchRows my_rows = by_rows ? rows_of_this_thread(team.work) : BatchRows{0, B};
    T* rec = scratch.get() + thread_id() * rec_size;
    int64_t first, last;
    units.mine(&first, &last);
    const int64_t x_cols = (last - first) * G * NR, own_rows = my_rows.last - my_rows.first;
    // (Sized by the columns and rows this thread owns in the team it got, which may be smaller
    // than planned, e.g. inside another parallel region.)
    Buffer<T> xp_block(inputs.blocked ? inputs.steps * own_rows * x_cols : 0);
    Buffer<uint32_t> x_pairs(ih_bf16_size ? inputs.rows * ((I + 1) / 2) : 0);  // (a GEMM call's rows of x)
    T* xp = xp_block.get();
    int64_t t_first = 0;  // the time row of xp's first rows
    // The input projections for the step of time row t, sequence b, and the chunk of unit u0:
    // gate g of unit u0+w at [g*x_stride + w].
    const int64_t x_stride = inputs.blocked ? NR : H;
    const auto x_row = [&](int64_t t, int64_t b, int64_t u0) {
      return inputs.blocked ? xp + ((t - t_first) * own_rows + b - my_rows.first) * x_cols + (u0 / NR - first) * G * NR
                            : xp_merged + (first_row[t] + b) * GH + u0;
    };
    for (int64_t s = 0; s < steps; ++s) {
      if (inputs.blocked && s % inputs.steps == 0) {
        const int64_t count = std::min(inputs.steps, steps - s);
        t_first = a.reverse ? steps - s - count : s;
        if (in_place) {
          row_times_chunks(I, a.x, a.w_ih, H, G, first, last - first, xp);
        } else if (ih_bf16_size) {
          if constexpr (kBf16Capable) {
            const uint16_t* mine = packed_ih_bf16.get() + first * ih_bf16_size;
            inputs.project(count, a.x + t_first * B * I, x_cols, xp, active_rows.data() + t_first, my_rows,
                           [&](int64_t n, const T* x_rows, T* out) {
              pack_a_bf16(n, I, x_rows, I, x_pairs.get());
              gemm_bf16(n, x_cols, I, x_pairs.get(), mine, out, x_cols);
            });
          }
        } else {
          const T* mine = packed_ih.get() + first * ih_size;
          inputs.project(count, a.x + t_first * B * I, x_cols, xp, active_rows.data() + t_first, my_rows,
                         [&](int64_t n, const T* x_rows, T* out) {
            gemm_packed_b<T>(n, x_cols, I, x_rows, I, mine, out, x_cols, false);
          });
        }
      }
      const int64_t taking = active_rows[sch.row(s)];  // the products leave out the rows after these
      const T* h_prev = state_in_y && s > 0 ? a.y + sch.row(s - 1) * B * P : h_state.get() + (s & 1) * B * P;
      T* h_next = state_in_y ? a.y + sch.row(s) * B * P : h_state.get() + ((s + 1) & 1) * B * P;
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
              if (state_in_y) {
                prefetch_next_output(a, sch, s, b, u0, width);
              } else if (!projected) {
                publish_state<V>(a, sch, s, b, u0, width, h_prev, h_next, product_next);
              }
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
          for_each_block(units, H, my_rows, taking, cols,
                         Bf16Product{P, pairs_prev, packed_hh_bf16.get(), hh_bf16_size}, group_first, rec, kOneGate,
                         cell_rows);
        }
      } else if (in_place) {
        for_each_block(units, H, my_rows, taking, cols, InPlaceProduct<T>{P, product_prev, a.w_hh, H, kFirstGates},
                       group_first, rec, kOneGate, cell_rows);
      } else {
        for_each_block(units, H, my_rows, taking, cols, PackedProduct<T>{P, product_prev, P, packed_hh.get(), hh_size},
                       group_first, rec, kOneGate, cell_rows);
      }
      if constexpr (Cell::kTwoPhase) {
        // The last gate's product reads every unit's r*h: a second barrier (none when the team splits
        // the batch: a thread's rows need only their own), and a second GEMM.
        if (!by_rows) step_end.wait();
        for_each_block(units, H, my_rows, taking, NR,
                       PackedProduct<T>{H, rh_step.get(), H, packed_hn.get(), panel_size}, group_units, rec,
                       /*whole_runs=*/false,  // (blocked projections lie chunk by chunk, G gates each)
                       [&](int64_t u0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
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
        // h_next = m W_hr^T needs every unit's m: a second barrier (as above), and a second GEMM.
        if (!by_rows) step_end.wait();
        for_each_block(dims, P, my_rows, taking, NR, PackedProduct<T>{H, m_step.get(), H, packed_hr.get(), panel_size},
                       group_dims, rec, /*whole_runs=*/true,
                       [&](int64_t p0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
          run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
            using V = Vec<T, decltype(bytes)::value>;
            for (int64_t b = b0; b < b0 + rows; ++b) {
              std::copy_n(block + (b - b0) * ld, width, h_next + b * P + p0);
              publish_state<V, T>(a, sch, s, b, p0, width, h_prev, h_next, nullptr);  // (no scale with w_hr)
            }
          });
        });
      }
      if (!by_rows) step_end.wait();
    }
  }

  for (auto* matrix : {&packed_hh, &packed_hr, &packed_hn, &packed_ih}) matrix->packed_by_team();
  packed_hh_bf16.packed_by_team();
  packed_ih_bf16.packed_by_team();

  std::copy_n(state_in_y ? a.y + sch.row(steps - 1) * B * P : h_state.get() + (steps & 1) * B * P, B * P, a.h_n);
  if constexpr (Cell::kHasCell) std::copy_n(c_state.get() + (steps & 1) * B * H, B * H, a.c_n);
}

template <class T>
void forward_in_given_order(CellKind cell, const ForwardArgs<T>& args) {
  // A cache busy with another call is left to it: this call packs into buffers of its own.
  PackedWeights* cache = args.packed;
  std::unique_lock<std::mutex> lock;
  if (cache) {
    lock = std::unique_lock<std::mutex>(cache->mutex(), std::try_to_lock);
    if (lock.owns_lock()) {
      cache->use_layout({static_cast<int>(cell), static_cast<int>(sizeof(T)), args.H, args.P, args.I, args.bf16_weights,
                         args.w_ih, args.w_hh, args.w_hr});
    } else {
      cache = nullptr;
    }
  }
  with_cell(cell, [&](auto cell_type) { forward_layer<decltype(cell_type), T>(args, cache); });
}

}  // namespace

template <class T>
void forward(CellKind cell, const ForwardArgs<T>& args) {
  std::vector<int64_t> order = batch_order_worth_running(args, cell_info(cell).gates);
  if (order.empty()) return forward_in_given_order(cell, args);
  // (the saved values stay in the kernels' order: cpu/batch_order.h)
  BatchOrder in_order(std::move(order));
  ForwardArgs<T> a = args;
  in_order.inputs_of_both(a);
  a.h0 = in_order.in(a.h0, 1, a.P);
  a.c0 = in_order.in(a.c0, 1, a.H);
  a.y = in_order.out(a.y, a.T_, a.P);
  a.h_n = in_order.out(a.h_n, 1, a.P);
  a.c_n = in_order.out(a.c_n, 1, a.H);
  forward_in_given_order(cell, a);
  in_order.finish();
}

std::pair<int, bool> forward_team(CellKind cell, int64_t B, int64_t H) {
  ForwardArgs<float> a{};
  a.T_ = 1;
  a.B = B;
  a.H = a.P = H;
  const TeamPlan team = forward_team_plan(a, cell_info(cell).gates);
  return {team.threads, team.by_rows};
}

template void forward<float>(CellKind, const ForwardArgs<float>&);
template void forward<double>(CellKind, const ForwardArgs<double>&);

}  // namespace fusedrnn::cpu

// The CPU backward loop (backpropagation through time): one recurrent layer, one direction, every
// cell (the shared machinery and how the team works: cpu/driver.h).
//
// Backward (reverse time), per step: the recurrent product dh += dG_{s+1} W_hh for the thread's
// own units (a column slice of W_hh, packed once, L2-resident), fused with the cell's pointwise
// backward that yields dG_s; one barrier per step. A small layer's team splits the batch instead,
// each thread all the units of its own rows, with no barrier (cpu/driver.h's BatchRows). After
// the loop, merged GEMMs with K = T*B give dW_ih = dGx^T x, dW_hh = dGh^T h_prev and
// dx = dGx W_ih; the bias gradients are summed in the loop by the thread that owns each unit
// (add_to_bias_sum), or after it when the team split the batch (sum_bias_gradients).
// Which steps ran and where their states were saved: schedule.h.
//
// Gradient contract: outputs are overwritten (=); the Python layer accumulates (+=).
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "cpu/batch_order.h"
#include "cpu/buffer.h"
#include "cpu/driver.h"
#include "cpu/layer.h"
#include "recurrence.h"
#include "schedule.h"

namespace fusedrnn::cpu {
namespace {

// Backward buffers shared by the team.
template <class T>
struct BackwardState {
  T* dgx;       // [T, B, G*H] gradient of x W_ih^T + b_ih, time order, rows dg_stride apart
  int64_t dg_stride;  // the row stride of dgx and of dg_step (gate_gradient_stride)
  T* dgh_last;  // [T, B, H] kSplitGradient only: the last gate's gradient of h W_hh^T + b_hh (the
                //   other gates' equal dgx's), else null
  T* dh_carry;  // [B, P] gradient reaching the state besides the recurrent product
  T* dc_carry;  // [B, H] the same for c (LSTM)
  T* dh_step;   // [B, P] this step's total gradient of h (projection only)
  T* dh_all;    // [T, B, P] every step's, time order, for dW_hr (projection only)
  T* db_x;      // [G*H] sum of dgx over all steps and sequences (b_ih's gradient), or null
  T* db_h;      // [G*H] the same of dgh (b_hh's) when kSplitGradient, else null
};

// The row stride of the gate gradients (dgx, dg_step): G*H, or one cache line more when rows G*H
// apart would fall a multiple of 4 KiB apart, in one L1 set (gemm.cc's rows_share_l1_set). The
// rows are A of the loop's recurrent products and of the merged dx GEMM, which would otherwise copy
// them further apart first (driver.h's rows_apart, gemm.cc's pack_a).
template <class T>
int64_t gate_gradient_stride(int64_t GH) {
  const int64_t apart = unaliased_row_stride<T>(2, GH, GH);
  return apart > 0 ? apart : GH;
}

// Adds a gate gradient into its bias gradient's sum (db: one of BackwardState's, or null). The
// thread that owns a unit adds all of its (step, sequence) terms, in the same order whatever the
// thread count; summing here, while the terms are in registers, saves a pass over T*B*G*H
// values in memory after the loop (LSTM, B=64, H=256: about 2% of a training step).
template <class V, class T>
FUSEDRNN_INLINE void add_to_bias_sum(T* db, V gradient, int64_t n) {
  if (db) (V::load(db, n) + gradient).store(db, n);
}

// db[0..width) += the sum over the steps as the loop takes them, then the rows, of the active (step,
// row)'s src[(t * B + b) * ld + 0..width), kept in registers a block of columns at a time.
template <class V, class T>
FUSEDRNN_INLINE void sum_columns(const Schedule& sch, int64_t steps, int64_t B, const T* src, int64_t ld, int64_t width,
                                 T* db) {
  constexpr int64_t L = V::kLanes, kVectors = 4;
  for (int64_t c0 = 0; c0 < width; c0 += kVectors * L) {
    const int64_t vectors = std::min(kVectors, ceil_div(width - c0, L));
    const auto lanes = [&](int64_t v) { return std::min(L, width - c0 - v * L); };
    V acc[kVectors];
    for (int64_t v = 0; v < vectors; ++v) acc[v] = V::load(db + c0 + v * L, lanes(v));
    for (int64_t s = steps - 1; s >= 0; --s) {
      const int64_t t = sch.row(s);
      for (int64_t b = 0; b < B; ++b) {
        if (!sch.active(t, b)) continue;  // (the loop adds nothing for them)
        const T* row = src + (t * B + b) * ld + c0;
        for (int64_t v = 0; v < vectors; ++v) acc[v] += V::load(row + v * L, lanes(v));
      }
    }
    for (int64_t v = 0; v < vectors; ++v) acc[v].store(db + c0 + v * L, lanes(v));
  }
}

// The bias gradients' sums after the loop, when the team split the batch (a unit's terms then come
// from every thread): the terms add_to_bias_sum adds in the loop, in its order (steps as the loop
// takes them, then rows), so that the sums are bitwise the same either way. db_h (kSplitGradient):
// the gates before the last from dgx, the last from dgh_last. The team splits the columns (each
// column's order stays), and each block of columns is summed in registers. One thread adding each
// row into db in memory took 3% of a GRU layer's training call (B=64, I=32, H=128, Zen 4) while
// the other core waited; the team made the call 1.03x faster, the registers 1.01-1.03x more.
template <class T>
void sum_bias_gradients(const Schedule& sch, int64_t steps, int64_t B, int64_t H, int G, const T* dgx, int64_t ld,
                        const T* dgh_last, T* db_x, T* db_h, int threads) {
  const int64_t GH = G * H;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
  {
    const int64_t share = ceil_div(ceil_div(GH, kPanel<T>), team_size()) * kPanel<T>;
    const int64_t i0 = std::min(GH, thread_id() * share), i1 = std::min(GH, i0 + share);
    run_for_isa(current_isa(), [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
      using V = Vec<T, decltype(bytes)::value>;
      sum_columns<V>(sch, steps, B, dgx + i0, ld, i1 - i0, db_x + i0);
      if (db_h) {
        const int64_t x_end = std::max(i0, std::min(i1, GH - H)), h_begin = std::min(i1, std::max(i0, GH - H));
        sum_columns<V>(sch, steps, B, dgx + i0, ld, x_end - i0, db_h + i0);
        if (h_begin < i1) {
          sum_columns<V>(sch, steps, B, dgh_last + (h_begin - (GH - H)), H, i1 - h_begin, db_h + h_begin);
        }
      }
    });
  }
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

// The pointwise half of a backward step for one sequence and a chunk of hidden units (or a run of
// chunks: nothing here is laid out chunk by chunk).
template <class Cell, class T>
struct BackwardStep {
  static constexpr int G = Cell::kGates;
  static constexpr int S = Cell::kSaved;
  // Whether the recurrent product reads a copy of each step's dgh (dg_step): only where dgh
  // differs from dgx (kSplitGradient). Otherwise it reads dgx's rows themselves, which saves a
  // store per gate and a 2*B*G*H buffer that took part of L2 (LSTM, B=64, H=128: 256 KiB).
  static constexpr bool kStepCopy = Cell::kSplitGradient;
  static_assert(!(Cell::kTwoPhase && kStepCopy), "a two-phase cell's phases write dgx only, not dg_step");
  const BackwardArgs<T>& a;
  const Schedule& sch;
  const BackwardState<T>& st;

  // rec: without projection dG_{s+1} W_hh for these units (zero at the last step), to which the
  // carry and dy are added; with one, dm = dh_step W_hr, the whole gradient of the cell output.
  // dg_step (kStepCopy): this step's dgh again, in step order, for the next recurrent product.
  // Two-phase cells: this is their first backward phase (n and z); reset_row finishes r.
  template <class V>
  FUSEDRNN_INLINE void row(int64_t s, int64_t b, int64_t u0, int64_t width, const T* rec, T* dg_step) const {
    const int64_t B = a.B, H = a.H, at = b * H + u0, t = sch.row(s);
    const bool projected = a.w_hr != nullptr;
    const T* dy_row = a.dy && !projected ? a.dy + (t * B + b) * H + u0 : nullptr;
    T* dgx_row = st.dgx + (t * B + b) * st.dg_stride + u0;
    T* dgh_last_row = Cell::kSplitGradient ? st.dgh_last + (t * B + b) * H + u0 : nullptr;
    T* dg_step_row = kStepCopy ? dg_step + b * st.dg_stride + u0 : nullptr;
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
        if constexpr (kStepCopy) std::fill_n(dg_step_row + g * H, width, T(0));
      }
      if constexpr (Cell::kSplitGradient) std::fill_n(dgh_last_row, width, T(0));
      return;
    }
    const T* saved_row = a.saved_gates + (t * B + b) * S * H + u0;
    const int64_t prev_at = (sch.prev_slot(t) * B + b) * H + u0, new_at = (sch.new_slot(t) * B + b) * H + u0;
    if (s > 0) {  // the next step (backward walks down) reads these rows of row(s-1) and writes dgx
      const int64_t t_next = sch.row(s - 1);
      prefetch_lines(a.saved_gates + (t_next * B + b) * S * H + u0, S, H, width);
      if (dy_row) prefetch_lines(a.dy + (t_next * B + b) * H + u0, 1, 0, width);
      if (!projected) prefetch_lines(a.saved_h + (sch.prev_slot(t_next) * B + b) * H + u0, 1, 0, width);
      if (Cell::kHasCell) prefetch_lines(a.saved_c + (sch.prev_slot(t_next) * B + b) * H + u0, 1, 0, width);
      prefetch_lines<1>(st.dgx + (t_next * B + b) * st.dg_stride + u0, G, H, width);
      if (Cell::kSplitGradient) prefetch_lines<1>(st.dgh_last + (t_next * B + b) * H + u0, 1, 0, width);
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
          add_to_bias_sum(st.db_x ? st.db_x + g * H + u0 + w : nullptr, gx[g], n);
        }
      } else {
        Cell::backward(saved, prev, next, d_next, gx, gh, d_prev);
        for (int g = 0; g < G; ++g) {
          gx[g].store(dgx_row + g * H + w, n);
          if constexpr (kStepCopy) gh[g].store(dg_step_row + g * H + w, n);
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
  FUSEDRNN_INLINE void reset_row(int64_t s, int64_t b, int64_t u0, int64_t width, const T* rec) const {
    const int64_t B = a.B, H = a.H, at = b * H + u0, t = sch.row(s);
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
      dg[0].store(st.dgx + (t * B + b) * st.dg_stride + u0 + w, n);
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
  const std::vector<int64_t> active_rows = active_prefix_rows(a);

  const int64_t dg_stride = gate_gradient_stride<T>(GH);
  T* dgx = workspace<T>(0, steps * B * dg_stride);
  T* dgh_last = Cell::kSplitGradient ? workspace<T>(1, steps * B * H) : nullptr;
  // With kStepCopy, dgh of the step just done and of the one before, in step order: the recurrent
  // product reads one while the team writes the other. Otherwise step s's dgh is dgx's row.
  constexpr bool kStepCopy = BackwardStep<Cell, T>::kStepCopy;
  Buffer<T> dg_step(kStepCopy ? 2 * B * dg_stride : 0);
  const auto step_gradient = [&](int64_t s) {
    return kStepCopy ? dg_step.get() + (s & 1) * B * dg_stride : dgx + sch.row(s) * B * dg_stride;
  };
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

  // The team, as forward's: it splits the batch when every thread can keep all the recurrent
  // weights in its L2 (BatchRows), else the state dims (or units).
  const int64_t weights = P * G * H + (projected ? H * P : 0);
  const int64_t chunks = std::max(ceil_div(P, NR), projected || Cell::kTwoPhase ? ceil_div(H, NR) : 0);  // (below)
  const TeamPlan team = plan_team(a, chunks, weights, int64_t(sizeof(T)));
  const int threads = team.threads;
  const bool by_rows = team.by_rows;
  // (Split by rows, the loop leaves the bias sums to sum_bias_gradients.)
  const BackwardState<T> st{dgx, dg_stride, dgh_last, dh_carry.get(), dc_carry.get(), dh_step.get(), dh_all,
                            by_rows ? nullptr : db_x, by_rows ? nullptr : db_h};

  // State dims in chunks (units when there is no projection), each with its columns of W_hh
  // (K = the rows reading h); under a projection, units in chunks with their columns of W_hr
  // (K = P); a two-phase cell's units with their columns of W_hn (K = H).
  const Chunks<T> dims(P, by_rows), units(projected || Cell::kTwoPhase ? H : 0, by_rows);
  const int64_t hh_size = packed_b_size<T>(KH, NR), hr_size = packed_b_size<T>(P, NR);
  const int64_t hn_size = packed_b_size<T>(H, NR);
  // (In the calling thread's workspace, cpu/buffer.h: the slots of forward's packed matrices,
  // which a backward never runs beside.)
  T* const packed_hh = workspace<T>(kPackedSlots + 0, dims.count * hh_size);
  T* const packed_hr = workspace<T>(kPackedSlots + 1, projected ? units.count * hr_size : 0);
  T* const packed_hn = workspace<T>(kPackedSlots + 2, Cell::kTwoPhase ? units.count * hn_size : 0);
  const int64_t group_dims = chunk_group<T>(B, team, dims.count, 1);
  const int64_t group_units = chunk_group<T>(B, team, units.count, 1);
  const int64_t rec_size = std::min(B, kRowBlock) * std::max(group_dims, group_units) * NR;
  Buffer<T> scratch(threads * rec_size);
  const BackwardStep<Cell, T> step{a, sch, st};
  const Isa isa = current_isa();

  StepBarrier step_end(threads);
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
  {
    pack_chunks(dims, P, 1, KH, a.w_hh, P, [](int, int64_t p) { return p; }, packed_hh, hh_size);
    if (projected) {
      pack_chunks(units, H, 1, P, a.w_hr, H, [](int, int64_t u) { return u; }, packed_hr, hr_size);
    }
    if constexpr (Cell::kTwoPhase) {
      pack_chunks(units, H, 1, H, a.w_hh + (G - 1) * H * P, P, [](int, int64_t u) { return u; },
                  packed_hn, hn_size);
    }
    if (by_rows) step_end.wait();  // (every thread reads every chunk's packed weights)
    const BatchRows my_rows = by_rows ? rows_of_this_thread(team.work) : BatchRows{0, B};
    T* rec = scratch.get() + thread_id() * rec_size;
    for (int64_t s = steps - 1; s >= 0; --s) {
      T* dg_cur = step_gradient(s);
      // dG_{s+1} W_hh, through the rows reading h; nothing after the last step.
      const T* dg_next = s + 1 < steps ? step_gradient(s + 1) : nullptr;
      // Rows of sequences that took neither step s+1 (dG_{s+1} is zero) nor s get no products.
      const int64_t taking_next = s + 1 < steps ? active_rows[sch.row(s + 1)] : 0, taking = active_rows[sch.row(s)];
      for_each_block(dims, P, my_rows, taking_next, NR, PackedProduct<T>{KH, dg_next, dg_stride, packed_hh, hh_size},
                     group_dims, rec, /*whole_runs=*/true,
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
        // dm = dh W_hr needs every state dim's gradient: a second barrier (none when the team splits
        // the batch: a thread's rows need only their own) and a second GEMM.
        if (!by_rows) step_end.wait();
        for_each_block(units, H, my_rows, taking, NR, PackedProduct<T>{P, dh_step.get(), P, packed_hr, hr_size},
                       group_units, rec, /*whole_runs=*/true,
                       [&](int64_t u0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
          run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
            using V = Vec<T, decltype(bytes)::value>;
            for (int64_t b = b0; b < b0 + rows; ++b) step.template row<V>(s, b, u0, width, block + (b - b0) * ld, dg_cur);
          });
        });
      }
      if constexpr (Cell::kTwoPhase) {
        // d(r*h) = da_n W_hn needs every unit's da_n: a second barrier (as above) and a second GEMM.
        if (!by_rows) step_end.wait();
        for_each_block(units, H, my_rows, taking, NR, PackedProduct<T>{H, dg_cur + (G - 1) * H, dg_stride, packed_hn, hn_size},
                       group_units, rec, /*whole_runs=*/true,
                       [&](int64_t u0, int64_t width, int64_t b0, int64_t rows, T* block, int64_t ld) {
          run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
            using V = Vec<T, decltype(bytes)::value>;
            for (int64_t b = b0; b < b0 + rows; ++b) step.template reset_row<V>(s, b, u0, width, block + (b - b0) * ld);
          });
        });
      }
      if (!by_rows) step_end.wait();
    }
    // The gradient of the initial state: what step 0 sends back through W_hh, plus the carry.
    const T* dg_first = steps > 0 ? step_gradient(0) : nullptr;
    const int64_t taking_first = steps > 0 ? active_rows[sch.row(0)] : 0;
    for_each_block(dims, P, my_rows, taking_first, NR, PackedProduct<T>{KH, dg_first, dg_stride, packed_hh, hh_size},
                   group_dims, rec, /*whole_runs=*/true,
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
  if (by_rows && bias) sum_bias_gradients(sch, steps, B, H, G, dgx, dg_stride, dgh_last, db_x, db_h, threads);

  // Merged GEMMs over the T*B rows. The input state of time row t is saved_h[t + reverse].
  int64_t rows = steps * B;
  const T* h_prev = a.saved_h + sch.prev_slot(0) * B * P;
  // Under recurrent dropout W_hh multiplied h * scale (the same scale at every step).
  if (a.recurrent_scale) {
    T* scaled = workspace<T>(2, rows * P);  // (slot 2 is free: no projection with a scale)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t p = 0; p < P; ++p) scaled[r * P + p] = h_prev[r * P + p] * a.recurrent_scale[(r % B) * P + p];
    }
    h_prev = scaled;
  }
  const T* x = a.x;
  const T* r_h = Cell::kTwoPhase ? a.saved_gates + (S - 1) * H : nullptr;  // r*h: what W_hn multiplied
  int64_t r_h_ld = S * H;
  const T* m = a.saved_m;
  T* dx = a.dx;
  // The rows of sequences that took no step (their gate gradients are zero) add nothing to the
  // weights' gradients and get zero in dx. Where they are many (a PackedSequence of varied
  // lengths) the GEMMs run on the other rows, gathered: when the multiply-adds that saves outweigh
  // the copies, counting a copied value as kCopyCost multiply-adds.
  const int64_t* kept = active_rows.data();  // of each time row
  const int64_t kept_rows = std::accumulate(active_rows.begin(), active_rows.end(), int64_t(0));
  const bool gathered = (rows - kept_rows) * GH * (2 * I + P) > kCopyCost * kept_rows * (GH + 2 * I + P);
  if (gathered) {
    const auto gather = [&](const T* src, int64_t ld, int64_t width, T* dst) {
      gather_kept_rows(src, ld, width, steps, B, kept, dst);
    };
    gather(st.dgx, dg_stride, dg_stride, st.dgx);  // (keeping the stride: padding and all)
    if constexpr (Cell::kSplitGradient) gather(st.dgh_last, H, H, st.dgh_last);
    if (projected) gather(st.dh_all, P, P, st.dh_all);
    T* x_kept = workspace<T>(kPackedSlots + 0, kept_rows * I);  // (the loop's packed weights are done with)
    T* h_kept = workspace<T>(kPackedSlots + 1, kept_rows * P);
    gather(a.x, I, I, x_kept);
    gather(h_prev, P, P, h_kept);
    x = x_kept;
    h_prev = h_kept;
    if constexpr (Cell::kTwoPhase) {
      T* r_h_kept = workspace<T>(kPackedSlots + 2, kept_rows * H);
      gather(r_h, r_h_ld, H, r_h_kept);
      r_h = r_h_kept;
      r_h_ld = H;
    }
    if (projected) {
      T* m_kept = workspace<T>(3, kept_rows * H);
      gather(a.saved_m, H, H, m_kept);
      m = m_kept;
    }
    rows = kept_rows;
  }
  if (dx) gemm<T>(rows, I, GH, st.dgx, dg_stride, 1, a.w_ih, I, 1, dx, I, false);
  gemm<T>(GH, I, rows, st.dgx, 1, dg_stride, x, I, 1, a.dw_ih, I, false);
  if constexpr (Cell::kSplitGradient) {  // the last gate's rows from its own gradient
    gemm<T>(KH - H, P, rows, st.dgx, 1, dg_stride, h_prev, P, 1, a.dw_hh, P, false);
    gemm<T>(H, P, rows, st.dgh_last, 1, H, h_prev, P, 1, a.dw_hh + (KH - H) * P, P, false);
  } else {
    gemm<T>(KH, P, rows, st.dgx, 1, dg_stride, h_prev, P, 1, a.dw_hh, P, false);
  }
  if constexpr (Cell::kTwoPhase) {
    gemm<T>(H, P, rows, st.dgx + KH, 1, dg_stride, r_h, r_h_ld, 1, a.dw_hh + KH * P, P, false);
  }
  if (projected) gemm<T>(P, H, rows, st.dh_all, 1, P, m, H, 1, a.dw_hr, H, false);
  if (gathered && dx) {
    // dx's gathered rows back to their places, the last first (a row never moves to an earlier
    // one), zeros between them.
    for (int64_t t = steps - 1, r = kept_rows; t >= 0; --t) {
      for (int64_t b = B - 1; b >= 0; --b) {
        T* row = dx + (t * B + b) * I;
        if (b < kept[t]) {
          std::memmove(row, dx + --r * I, I * sizeof(T));
        } else {
          std::fill_n(row, I, T(0));
        }
      }
    }
  }
  if (a.db_ih) std::copy_n(db_x, GH, a.db_ih);
  if (a.db_hh) std::copy_n(Cell::kSplitGradient ? db_h : db_x, GH, a.db_hh);
}

}  // namespace

template <class T>
void backward(CellKind cell, const BackwardArgs<T>& args) {
  const auto run = [&](const BackwardArgs<T>& a) {
    with_cell(cell, [&](auto cell_type) { backward_layer<decltype(cell_type), T>(a); });
  };
  std::vector<int64_t> order = batch_order_worth_running(args, cell_info(cell).gates);
  if (order.empty()) return run(args);
  // The forward ran the batch in this order and saved its values so (cpu/batch_order.h).
  BatchOrder in_order(std::move(order));
  BackwardArgs<T> a = args;
  in_order.inputs_of_both(a);
  a.dy = in_order.in(a.dy, a.T_, a.P);
  a.dh_n = in_order.in(a.dh_n, 1, a.P);
  a.dc_n = in_order.in(a.dc_n, 1, a.H);
  a.dx = in_order.out(a.dx, a.T_, a.I);
  a.dh0 = in_order.out(a.dh0, 1, a.P);
  a.dc0 = in_order.out(a.dc0, 1, a.H);
  run(a);
  in_order.finish();
}

template void backward<float>(CellKind, const BackwardArgs<float>&);
template void backward<double>(CellKind, const BackwardArgs<double>&);

}  // namespace fusedrnn::cpu

// The CPU time-loop driver's shared parts: one driver for every cell (csrc/cells/*.h supply the
// pointwise math), its forward loop in cpu/forward.cc and its backward loop in cpu/backward.cc.
//
// Both loops run one OpenMP team over the whole time loop, sized to the work of a step (team_for).
// A dimension (hidden units, or state dims under a projection) is cut into chunks of one GEMM panel
// width (Chunks). A large layer's team splits the chunks, each thread owning a contiguous run, and
// meets at a barrier every step (StepBarrier); a small layer's team splits the batch, each thread
// computing every chunk of its own rows, with no barrier in the loop (BatchRows, plan_team). The
// team packs the recurrent weights once per call (pack_chunks), each thread its run of chunks, so
// that the weights a thread multiplies stay in its core's L2 for all T steps; each step multiplies
// them block by block, handing each block to the cell's pointwise code while it is still in L1
// (for_each_block).
//
// The pointwise code (cells on Vec<T>: 4 to 16 units at once) is compiled three times, for
// AVX-512, AVX2 and the baseline, and picked at run time with the GEMM's kernels (run_for_isa).
//
// Like cpu/simd.h, everything here has internal linkage (an unnamed namespace): each loop's file
// compiles its own copy into its per-instruction-set functions.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <thread>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/buffer.h"
#include "cpu/cpu_caches.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16.h"
#include "cpu/layer.h"
#include "cpu/math.h"
#include "cpu/simd.h"
#include "schedule.h"

namespace fusedrnn::cpu {

// Threads in the library's teams running now, over every calling thread (StepBarrier). An inline
// function outside the unnamed namespace: one counter for every file that includes this one.
inline std::atomic<int>& threads_in_teams() {
  static std::atomic<int> count{0};
  return count;
}

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
// chunks of one GEMM panel width, each thread a contiguous run of chunks. When the team splits
// the batch instead (BatchRows), each thread computes every chunk, but still packs only its run.
template <class T>
struct Chunks {
  int64_t count;
  bool every_thread_all;

  explicit Chunks(int64_t n, bool by_rows = false) : count(ceil_div(n, kPanel<T>)), every_thread_all(by_rows) {}

  // The chunks [first, last) this thread packs, for the team it actually got.
  void packed_by_me(int64_t* first, int64_t* last) const {
    const int64_t tid = thread_id(), team = team_size();
    *first = count * tid / team;
    *last = count * (tid + 1) / team;
  }

  // The chunks [first, last) this thread computes in the time loop.
  void mine(int64_t* first, int64_t* last) const {
    if (every_thread_all) {
      *first = 0;
      *last = count;
    } else {
      packed_by_me(first, last);
    }
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

// The batch rows [first, last) a thread computes in the time loop: all of them when the team
// splits the units (Chunks), its own run when it splits the batch.
//
// Why split the batch: a step's state crosses between cores when the team splits the units. Each
// thread writes its units' lines of h, the others read every line in the next step's products,
// and a store to a line another core has read waits for that core's copy to be invalidated (tens
// to hundreds of ns; the host sometimes keeps the two CPUs of a virtual machine further apart).
// A forward at T=100, B=64, H=128 (RNN, Zen 4, 2 threads) spent 43% of its time in the pointwise
// step, 2.4x as much per unit as one thread alone, and 2.3x less without the stores of h. With
// the batch split, each thread's rows depend on nothing the others compute: no state crosses, and
// no barrier ends a step. Each thread then reads all of W_hh every step, so the split is for
// layers whose packed recurrent weights fit in a core's L2, with rows enough per thread for the
// GEMM (plan_team). Measured against the split by units (Zen 4, 2 threads, T=100, B=64, I=H):
// forward 0.85 (RNN H=128), 0.95 (LSTM H=128), 0.93 (GRU H=128); forward and backward 0.95, 0.98,
// 0.98; W_hh of 1 MiB, the whole L2 (LSTM H=256, RNN H=512): 0.94-0.98; and while the host kept
// the two CPUs further apart (160 ns), 0.69 (RNN H=256 forward).
struct BatchRows {
  int64_t first, last;
};

// Rows per thread below which the team splits the units. Measured (as above, H=128, I=32): with 12
// or 16 rows a thread, forward and backward took 1.00-1.05x the time split by units (the
// backward's products, of that many rows, run slower), with 24 or 32, 0.95-0.99x.
constexpr int64_t kMinRowsPerThread = 24;

// The team of a layer's time loop.
struct TeamPlan {
  int threads;
  bool by_rows;
  std::vector<int64_t> work;  // by rows: the steps rows 0..b-1 take, summed, [B + 1]

  // The batch rows a thread computes of B: all of them when the team splits the units, its share
  // when it splits the batch (an even share: rows_of_this_thread balances the steps they take).
  int64_t rows_each(int64_t B) const { return by_rows ? ceil_div(B, threads) : B; }
};

// chunks: how many chunks the split by units cuts; weights: the recurrent weights' count (every
// product of a step). Sized to a step's work (team_for), the team splits the batch when every
// thread keeps all the packed weights in its L2, with kMinRowsPerThread rows or more.
template <class Args>
TeamPlan plan_team(const Args& a, int64_t chunks, int64_t weights, int64_t item_bytes) {
  const int64_t B = a.B, step_flops = 2 * B * weights, weight_bytes = weights * item_bytes;
  const auto setting = static_cast<TeamSplit>(team_split_setting().load(std::memory_order_relaxed));
  const int64_t row_runs = setting == TeamSplit::kRows ? B : B / kMinRowsPerThread;
  const int by_rows_threads = team_for(row_runs, step_flops, weight_bytes);
  const bool by_rows = by_rows_threads > 1 && setting != TeamSplit::kUnits &&
                       (setting == TeamSplit::kRows || weight_bytes <= cache_sizes().l2);
  TeamPlan plan{by_rows ? by_rows_threads : team_for(chunks, step_flops, weight_bytes), by_rows, {}};
  if (by_rows) {
    const std::vector<int64_t> taken = steps_taken(a);
    plan.work.assign(B + 1, 0);
    std::partial_sum(taken.begin(), taken.end(), plan.work.begin() + 1);
  }
  return plan;
}

// This thread's rows when the team splits the batch, balanced by the steps they take (the rows of
// a PackedSequence take fewer and fewer): `work` holds each row's step count summed, [B + 1].
BatchRows rows_of_this_thread(const std::vector<int64_t>& work) {
  const int64_t B = static_cast<int64_t>(work.size()) - 1, tid = thread_id(), team = team_size();
  const auto boundary = [&](int64_t k) {
    if (k == team) return B;
    const int64_t target = (work[B] * k + team - 1) / team;
    return std::clamp<int64_t>(std::lower_bound(work.begin(), work.end(), target) - work.begin(), 0, B);
  };
  return {boundary(tid), boundary(tid + 1)};
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
  chunks.packed_by_me(&first, &last);
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
  const T* A;  // [B, K] row stride lda, or null for zeros; its first row is batch row row0
  int64_t lda;
  const T* packed;
  int64_t packed_size;  // elements per chunk
  int64_t row0 = 0;

  void operator()(int64_t b0, int64_t rows, int64_t c, int64_t ld, T* block) const {
    if (A) {
      gemm_packed_b<T>(rows, ld, K, A + (b0 - row0) * lda, lda, packed + c * packed_size, block, ld, false);
    } else {
      std::fill_n(block, rows * ld, T(0));
    }
  }
};

// The product reading A's rows [r0, r1) from a copy in the calling thread's workspace when they
// lie a multiple of 4 KiB apart (gemm.h's unaliased_row_stride): copied once for all the step's
// GEMM calls (for_each_block), which would otherwise each copy them. The other products read no
// rows of their own (bf16 pairs, or one row) and are used as they are.
template <class Product>
const Product& rows_apart(const Product& product, int64_t, int64_t) {
  return product;
}
template <class T>
PackedProduct<T> rows_apart(const PackedProduct<T>& product, int64_t r0, int64_t r1) {
  const int64_t rows = r1 - r0, ld = product.A && rows > 0 ? unaliased_row_stride<T>(rows, product.lda, product.K) : 0;
  if (ld == 0) return product;
  T* copy = workspace<T>(kRowsApartSlot, rows * ld);
  for (int64_t i = 0; i < rows; ++i) std::copy_n(product.A + (r0 + i) * product.lda, product.K, copy + i * ld);
  return {product.K, copy, ld, product.packed, product.packed_size, r0};
}

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

// out = chunks c0 .. c0+count of `groups` gates x kPanel units (gate g of unit u at
// out[(chunk - c0) * groups * kPanel + g * kPanel + u % kPanel]) of the product of the row a (K
// values) with the rows of W (row of gate g, unit u at w + (g * n + u) * K); zero past unit n.
// Eight rows at a time: each vector of a serves eight (four before: each row's sums are the same
// either way, and four were 0-13% slower on a Zen 3 at H = 256-512).
template <class T>
void row_times_chunks(int64_t K, const T* a, const T* w, int64_t n, int groups, int64_t c0, int64_t count, T* out) {
  constexpr int64_t NR = kPanel<T>;
  constexpr int kRows = 8;
  run_for_isa(current_isa(), [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
    using V = Vec<T, decltype(bytes)::value>;
    constexpr int64_t L = V::kLanes;
    for (int64_t j = 0; j < count; ++j) {
      const int64_t u0 = (c0 + j) * NR, valid = std::clamp<int64_t>(n - u0, 0, NR);
      for (int g = 0; g < groups; ++g) {
        T* o = out + (j * groups + g) * NR;
        std::fill(o + valid, o + NR, T(0));
        for (int64_t i = 0; i < valid; i += kRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kRows, valid - i));
          const T* row[kRows];
          for (int q = 0; q < kRows; ++q) row[q] = w + (g * n + u0 + i + std::min(q, rows - 1)) * K;  // (repeats)
          V acc[kRows];
          int64_t k = 0;
          for (; k + L <= K; k += L) {
            const V x = V::load(a + k);
            for (int q = 0; q < kRows; ++q) acc[q] += V::load(row[q] + k) * x;
          }
          for (int q = 0; q < rows; ++q) {
            T dot = horizontal_sum(acc[q]);
            for (int64_t r = k; r < K; ++r) dot += row[q][r] * a[r];
            o[i + q] = dot;
          }
        }
      }
    }
  });
}

// The recurrent product of for_each_block on the weights in place (cpu/layer.h's one_step_in_place):
// one row.
template <class T>
struct InPlaceProduct {
  int64_t K;
  const T* A;  // [1, K]
  const T* w;  // rows of K: gate g of unit u at (g * n + u) * K
  int64_t n;
  int groups;

  void operator()(int64_t, int64_t, int64_t c, int64_t ld, T* block) const {
    row_times_chunks(K, A, w, n, groups, c, ld / (groups * kPanel<T>), block);
  }
};

// What copying a value costs, in multiply-adds: a core's FMA rate (16-32 float multiply-adds a
// cycle with AVX2 or AVX-512) over the rate it copies arrays beyond L2 at (a value read and
// written every cycle or two), rounded. Used to decide when gathering the rows of the sequences
// that take a step, to leave the others out of a GEMM, pays.
constexpr int64_t kCopyCost = 32;

// Copies row b < kept[t] of each time row t of src (T*B rows, row stride ld) to the next row of
// dst (width values a row), in order: the rows of the sequences taking each step, gathered for a
// GEMM over all steps. In place when dst is src and width is ld (a row never moves to a later one).
template <class T>
void gather_kept_rows(const T* src, int64_t ld, int64_t width, int64_t steps, int64_t B, const int64_t* kept, T* dst) {
  for (int64_t t = 0, r = 0; t < steps; ++t) {
    for (int64_t b = 0; b < kept[t]; ++b, ++r) std::memmove(dst + r * width, src + (t * B + b) * ld, width * sizeof(T));
  }
}

// For each block of this thread's batch rows and each run of up to `group` of its chunks: one
// product (above) gives the block, then body(chunk's first unit, its width, b0, rows, its
// columns of block, block's row stride).
// Runs of several chunks pay the GEMM's per-call cost once and let it use its widest tiles;
// one chunk at a time keeps a large batch's block in L1 for the pointwise step.
// Only the first `computed` rows get the product; the others (sequences that do not take this
// step, whose bodies do not read it or read it as zero) get zeros, which cost next to nothing.
// Rows that share an L1 set are copied apart first, once for the whole step (rows_apart).
// whole_runs (taken with one panel a chunk, cols == kPanel: a run's columns are then its units
// in order): body gets a run's chunks in one call, width up to group * kPanel, for bodies whose
// other values lie unit by unit too. A float chunk is one AVX-512 vector, and a call per chunk
// and row spent about as long setting up as computing in an RNN's step: calls per run made an
// RNN layer (T=100, B=64, H=128, 2 threads, Zen 4) 1.20x faster in inference and its backward
// 1.14x, 1.04x at H=256; LSTM and GRU, whose chunks carry 3-4 gates, within the noise.
template <class T, class Product, class Body>
void for_each_block(const Chunks<T>& chunks, int64_t n, BatchRows mine, int64_t computed, int64_t cols,
                    const Product& step_product, int64_t group, T* rec, bool whole_runs, Body body) {
  constexpr int64_t NR = kPanel<T>;
  const auto product = rows_apart(step_product, mine.first, std::clamp(computed, mine.first, mine.last));
  int64_t first, last;
  chunks.mine(&first, &last);
  for (int64_t c = first; c < last; c += group) {
    const int64_t count = std::min(group, last - c), ld = count * cols;
    for (int64_t b0 = mine.first; b0 < mine.last; b0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, mine.last - b0);
      const int64_t with_product = std::clamp<int64_t>(computed - b0, 0, rows);
      if (with_product > 0) product(b0, with_product, c, ld, rec);
      std::fill(rec + with_product * ld, rec + rows * ld, T(0));
      if (whole_runs && cols == NR) {
        body(c * NR, std::min(count * NR, n - c * NR), b0, rows, rec, ld);
        continue;
      }
      for (int64_t j = 0; j < count; ++j) {
        const int64_t u0 = (c + j) * NR;
        body(u0, std::min(NR, n - u0), b0, rows, rec + j * cols, ld);
      }
    }
  }
}

// Chunks per GEMM call (see for_each_block): with a few batch rows the call overhead dominates,
// so a thread's whole run of chunks goes in one call; with many, one chunk (G panels) at a time,
// or of one-panel chunks as many as keep the block (a thread's rows of it, by a run's columns) in
// half of L1 for the pointwise step. Each call reads the thread's rows of A again: an RNN's step
// (B=64, 2 threads, Zen 4) made 8 calls of two chunks at H=256. Runs of 8 chunks (by rows, 32 a
// thread) or 4 (by units, 64 rows) ran an RNN layer's inference 1.03-1.22x faster and its training
// 1.02-1.09x, H=128 to 1024; LSTM and GRU (one-panel chunks in their backward only) within noise.
template <class T>
int64_t chunk_group(int64_t B, const TeamPlan& team, int64_t chunks, int64_t panels_per_chunk) {
  if (B <= 8) return std::max<int64_t>(1, ceil_div(chunks, team.threads));
  if (panels_per_chunk > 1) return 1;
  const int64_t block_row = kPanel<T> * int64_t(sizeof(T));
  return std::max<int64_t>(2, cache_sizes().l1d / 2 / (std::min(team.rows_each(B), kRowBlock) * block_row));
}

// One round of a spin-wait: tells the core that this thread only waits (its sibling hyperthread,
// if any, gets the core's resources meanwhile).
inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// The team's barrier between steps. OpenMP's own (libgomp's `omp barrier`) spins only while the
// process has no more OpenMP threads than CPUs: past that, as soon as a second thread has run a
// team (a JAX callback's thread, a Python thread), it sleeps in the kernel almost at once, and
// every step then waits for a wake-up. An RNN layer (B=64, H=128, T=100, 2 threads) took 3.0 ms
// from the main thread and 6.1 ms from a second one, as slow as on one thread. This one spins
// with a pause for a while (kSpinRounds), then yields the core between checks. It does not spin
// at all while the library's teams running at once have more threads than there are CPUs (more
// threads asked for than cores, or calls from several threads at once): a thread still to arrive
// may then be waiting for this one's core.
// One is declared before a team starts (outside `omp parallel`), sized to the team planned, and
// every thread of the team calls wait() the same number of times.
class StepBarrier {
 public:
  explicit StepBarrier(int threads) : threads_(threads) { threads_in_teams().fetch_add(threads_); }
  ~StepBarrier() { threads_in_teams().fetch_sub(threads_); }
  StepBarrier(const StepBarrier&) = delete;
  StepBarrier& operator=(const StepBarrier&) = delete;

  void wait() {
    const int team = team_size();
    if (team == 1) return;
    const unsigned generation = generation_.load(std::memory_order_acquire);
    // The last to arrive (its acquire sees every other thread's writes) opens the next generation.
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == team - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    const int spin_rounds = threads_in_teams().load(std::memory_order_relaxed) <= cpus() ? kSpinRounds : 0;
    for (int round = 0; generation_.load(std::memory_order_acquire) == generation;) {
      if (round < spin_rounds) {
        ++round;
        spin_pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  // About as long as libgomp spins by default (300,000 rounds). Yielding after 4,000 rounds made an
  // LSTM's training call (B=64, H=256 and 512, T=100, 2 threads on a Zen 3) 1-5% slower than with
  // OpenMP's barrier; after 2^18 it was 8-16% faster, as was an RNN at B=1, H=128 (0.197 ms with
  // OpenMP's, 0.150 with 4,000 rounds, 0.119 with 2^18).
  static constexpr int kSpinRounds = 1 << 18;

  static int cpus() {
#ifdef _OPENMP
    static const int count = omp_get_num_procs();
    return count;
#else
    return 1;
#endif
  }

  const int threads_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<unsigned> generation_{0};
};

// Asks for the cache lines at p, p + stride, ... (count of them) ahead of use, to be read, or
// written with kWrite. Each step of the loops reads and writes rows of arrays over all T steps
// (the saved values, y, dgx) that no hardware prefetcher predicts (one line per gate, H*sizeof(T)
// apart) and that were last touched a whole call before; asking for the next step's lines during
// this step hides that memory latency. Writes too: a store to a line not in the cache waits for
// the line to be read in. (Measured on a Zen 3, B=64, H=128, 2 threads: prefetching for writing
// the next step's rows cut the pointwise part of the backward (dgx) by 10-30% for RNN, LSTM and
// GRU, and of a training forward (the saved values, y) by 18% for the RNN and 20% for the LSTM;
// at H=512 it was unchanged to 7% faster.)
// Each of the count rows is `width` values long (a chunk's, or a run of chunks').
template <int kWrite = 0, class T>
FUSEDRNN_INLINE void prefetch_lines(const T* p, int count, int64_t stride, int64_t width) {
  constexpr int64_t kLine = 64 / int64_t(sizeof(T));
  for (int i = 0; i < count; ++i) {
    __builtin_prefetch(p + i * stride, kWrite);
    for (int64_t w = kLine; w < width; w += kLine) __builtin_prefetch(p + i * stride + w, kWrite);
  }
}

// Calls body(w, n) for the V-wide pieces (n lanes each) of the first `width` values of a chunk or
// a run of chunks. Whole vectors pass n as a constant, so that their loads and stores compile to
// single vector moves, not length-checked copies; only a ragged end (a layer's last chunk) does not.
template <class V, class T, class Body>
FUSEDRNN_INLINE void for_each_vector(int64_t width, Body body) {
  if (width == kPanel<T>) {  // (a chunk: a loop the compiler unrolls)
    for (int64_t w = 0; w < kPanel<T>; w += V::kLanes) body(w, V::kLanes);
    return;
  }
  int64_t w = 0;
  for (; w + V::kLanes <= width; w += V::kLanes) body(w, V::kLanes);
  if (w < width) body(w, width - w);
}

}  // namespace
}  // namespace fusedrnn::cpu

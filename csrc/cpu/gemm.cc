// ISA selection, packing, and the multi-threaded general GEMM driver. The arithmetic
// lives in gemm_kernels.h, instantiated per ISA by gemm_{avx512,avx2,portable}.cc.
//
// General GEMM blocking (BLIS-style, per thread):
//   for each column block of NC columns of this thread's columns
//     for each KC slice of K            -> pack B(kc x nc) into panels (stays in L2/L3)
//       for each MC block of this thread's rows -> pack A(mc x kc) into slabs (L2),
//                                                 unless A is row-major: then read in place
//         micro-kernel sweep: one B chunk in L1, A slabs stream past it
// Every thread packs its own copies of the operands it needs, so the threads never wait
// on each other: no barriers inside, one fork and one join per call.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <type_traits>

#include "cpu_caches.h"
#include "gemm_bf16.h"
#include "gemm_kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fusedrnn::cpu {
namespace {

using detail::GemmKernels;
using detail::KernelTable;
using detail::TransposeRows16Fn;

// ---------------------------------------------------------------------------------------
// ISA selection

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::kAvx512: return "avx512";
        case Isa::kAvx2: return "avx2";
        default: return "portable";
    }
}

bool isa_from_name(const char* name, Isa* out) {
    if (name == nullptr) return false;
    for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512}) {
        if (std::strcmp(name, isa_name(isa)) == 0) {
            *out = isa;
            return true;
        }
    }
    return false;
}

// True when this build contains the kernels and the CPU (and OS) can run them. The
// flags checked are exactly the -m flags the ISA file is compiled with, since the
// compiler is free to use any of them.
bool isa_usable(Isa isa) {
    switch (isa) {
        case Isa::kPortable: return true;
        case Isa::kAvx2:
#if defined(FUSEDRNN_HAVE_AVX2)
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
            return false;
#endif
        case Isa::kAvx512:
#if defined(FUSEDRNN_HAVE_AVX512)
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("fma");
#else
            return false;
#endif
    }
    return false;
}

const KernelTable& kernel_table(Isa isa) {
    switch (isa) {
#if defined(FUSEDRNN_HAVE_AVX512)
        case Isa::kAvx512: return detail::avx512_kernel_table();
#endif
#if defined(FUSEDRNN_HAVE_AVX2)
        case Isa::kAvx2: return detail::avx2_kernel_table();
#endif
        default: return detail::portable_kernel_table();
    }
}

Isa initial_isa() {
#if defined(FUSEDRNN_HAVE_AVX2) || defined(FUSEDRNN_HAVE_AVX512)
    __builtin_cpu_init();  // harmless if done already; needed if we run before constructors
#endif
    Isa best = Isa::kPortable;
    for (Isa isa : {Isa::kAvx2, Isa::kAvx512})
        if (isa_usable(isa)) best = isa;
    // The environment may only ask for a lower family (e.g. to test or to work around a
    // CPU problem); it cannot enable one the CPU lacks.
    Isa wanted;
    if (isa_from_name(std::getenv("FUSEDRNN_ISA"), &wanted) && isa_usable(wanted) &&
        static_cast<int>(wanted) < static_cast<int>(best))
        best = wanted;
    return best;
}

std::atomic<int>& selected_isa() {
    static std::atomic<int> selected{static_cast<int>(initial_isa())};
    return selected;
}

template <class T>
const GemmKernels<T>& kernels();
template <>
const GemmKernels<float>& kernels<float>() {
    return kernel_table(static_cast<Isa>(selected_isa().load(std::memory_order_relaxed))).f32;
}
template <>
const GemmKernels<double>& kernels<double>() {
    return kernel_table(static_cast<Isa>(selected_isa().load(std::memory_order_relaxed))).f64;
}

// ---------------------------------------------------------------------------------------
// Scratch memory: 64-byte aligned (one panel row = one cache line), kept per thread and
// only grown, so repeated calls do not pay for allocation and page faults every time.

struct AlignedFree {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
};

template <class T>
T* thread_scratch(int slot, int64_t elements) {
    struct Buffer {
        std::unique_ptr<void, AlignedFree> data;
        int64_t bytes = 0;
    };
    thread_local Buffer buffers[3];
    Buffer& buf = buffers[slot];
    const int64_t bytes = elements * static_cast<int64_t>(sizeof(T));
    if (buf.bytes < bytes) {
        buf.data.reset();
        buf.data.reset(::operator new(static_cast<size_t>(bytes), std::align_val_t(64)));
        buf.bytes = bytes;
    }
    return static_cast<T*>(buf.data.get());
}

// Whether rows of A read in place, lda elements apart, would evict each other from L1. An x86
// L1 data cache is indexed by the address bits below the 4 KiB page (sets x line = 4 KiB, its
// size being 4 KiB x ways), so rows a multiple of 4 KiB apart all fall in one set: a 12-row tile
// reading them at the same k needs 12 lines of an 8- or 12-way set at once, and L2 serves every
// broadcast. Measured on a Zen 4 (AVX-512, 2 threads, B = 64, T = 100, inference): an LSTM at
// H = 1024 ran at 158 GFLOP/s against 195 at H = 1008 and 180 at H = 1040, an RNN 138 against
// 162 and 203. Rows 2 KiB apart (two sets, 6 rows each) measured no slower than their neighbours.
template <class T>
bool rows_share_l1_set(int64_t M, int64_t lda) {
    constexpr int64_t kL1WayBytes = 4096;
    return M > 1 && (lda * static_cast<int64_t>(sizeof(T))) % kL1WayBytes == 0;
}

// ---------------------------------------------------------------------------------------
// Packing

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The ISA's transpose for packing full float panels whose columns are contiguous in k (rows of a
// weight matrix), or null (no fast transpose here, or double).
template <class T>
TransposeRows16Fn panel_transpose() {
    if constexpr (std::is_same_v<T, float>) {
        return kernel_table(current_isa()).transpose_rows16;
    } else {
        return nullptr;
    }
}

// Packs the first K / 16 * 16 rows of a full panel from its columns (cols[r] contiguous in k)
// with `transpose`, 16 x 16 blocks at a time; returns how many rows it packed (0 without one).
template <class T>
int64_t pack_full_panel(TransposeRows16Fn transpose, const T* const* cols, int64_t K, T* dst) {
    if constexpr (std::is_same_v<T, float>) {
        if (transpose) {
            const int64_t k_done = K / kPanel<T> * kPanel<T>;
            transpose(cols, k_done, dst);
            return k_done;
        }
    }
    return 0;
}

// Packs a full panel of adjacent columns of a row-major B (row k at first + k * row_stride): each
// panel row is one contiguous 64-byte copy.
template <class T>
void pack_row_major_panel(int64_t K, const T* first, int64_t row_stride, T* dst) {
    constexpr int64_t P = kPanel<T>;
    for (int64_t k = 0; k < K; ++k) std::memcpy(dst + k * P, first + k * row_stride, sizeof(T) * P);
}

// Packs B(k0 .. k0+kc, j0 .. j0+nc) of a strided B into panels of kc rows.
template <class T>
void pack_b_strided(int64_t kc, int64_t nc, const T* B, int64_t b_rs, int64_t b_cs, T* dst) {
    constexpr int64_t P = kPanel<T>;
    const TransposeRows16Fn transpose = b_rs == 1 ? panel_transpose<T>() : nullptr;
    int64_t j_first = 0;
    if (b_cs == 1) {
        // Row-major B (the backward's x and h for the weight gradients): row k by row k, each read
        // once, in order, a line to each full panel. Panel by panel, each row was read a line at a
        // time, a row apart, and the loads waited on memory (gemm_kernels.h's pack_a: measured).
        j_first = nc / P * P;
        for (int64_t k = 0; k < kc; ++k) {
            for (int64_t j0 = 0; j0 < j_first; j0 += P) {
                std::memcpy(dst + j0 * kc + k * P, B + k * b_rs + j0, sizeof(T) * P);
            }
        }
    }
    dst += j_first * kc;
    for (int64_t j0 = j_first; j0 < nc; j0 += P, dst += kc * P) {
        const int64_t cols = min64(P, nc - j0);
        const T* src = B + j0 * b_cs;
        int64_t k_done = 0;
        if (transpose && cols == P) {
            // Column-major B (a transposed weight matrix, W_ih^T).
            const T* columns[P];
            for (int64_t r = 0; r < P; ++r) columns[r] = src + r * b_cs;
            k_done = pack_full_panel(transpose, columns, kc, dst);
        }
        for (int64_t k = k_done; k < kc; ++k) {
            T* row = dst + k * P;
            for (int64_t r = 0; r < cols; ++r) row[r] = src[k * b_rs + r * b_cs];
            for (int64_t r = cols; r < P; ++r) row[r] = T(0);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Threaded general GEMM

// Block sizes, from the caches the CPU reports (cpu/cpu_caches.h) and the ISA's micro-kernel.
//   KC: each K slice after the first reads and writes the M x NC block of C again (from memory
//       when M is large), so a long slice does that less often; the micro-kernel's chunk of B
//       (KC x 2 panels, 128 bytes a k) must stay in L2 beside the A block, so it may take an
//       eighth of L2: KC = L2 / 1024 (a power of two, 256 .. 2048). With 1 MiB of L2 that is
//       1024, which measured (Zen 5, 2 threads) against 256: M=6400 N=2048 K=512 415 -> 465
//       GFLOP/s, M=6400 N=4096 K=1024 400 -> 465, M=1024 N=256 K=6400 394 -> 418.
//   MC: an MC x KC block of A sits in L2 while the B chunks pass: three quarters of L2, in whole
//       slabs of the micro-kernel's rows (192 floats with 1 MiB and KC = 1024).
//   NC: bounds each thread's packed-B scratch (KC x NC), which is streamed, not cache-resident.
struct Blocks {
    int64_t kc, mc, nc;
};

int64_t pow2_floor(int64_t x) {
    int64_t p = 1;
    while (p * 2 <= x) p *= 2;
    return p;
}

template <class T>
Blocks blocks_for(int64_t l2, int rows) {
    Blocks b{};
    b.kc = pow2_floor(l2 / 1024);
    b.kc = b.kc < 256 ? 256 : (b.kc > 2048 ? 2048 : b.kc);
    const int64_t mc = l2 * 3 / 4 / (b.kc * static_cast<int64_t>(sizeof(T))) / rows * rows;
    b.mc = mc < rows ? rows : mc;
    b.nc = 2048;
    return b;
}

// Splits `total` into `parts` nearly equal pieces, each a multiple of `unit` except the
// last; returns [begin, end) of piece `index`.
void split_range(int64_t total, int64_t unit, int parts, int index, int64_t* begin, int64_t* end) {
    const int64_t units = ceil_div(total, unit);
    const int64_t lo = units * index / parts, hi = units * (index + 1) / parts;
    *begin = min64(lo * unit, total);
    *end = min64(hi * unit, total);
}

// The rows x cols grid of `threads` tiles of an M x N result whose largest tile costs the least,
// and that cost per unit of K: the tile (rounded up to whole slabs and panels, as the kernels
// compute them) plus the packing each thread repeats (its rows of A and its columns of B).
constexpr int64_t kPackWeight = 16;  // roughly: copying one element ~ 16 multiply-adds

int64_t thread_grid(int64_t M, int64_t N, int rows_unit, int64_t cols_unit, int threads, int* grid_rows,
                    int* grid_cols) {
    int64_t best = -1;
    for (int tr = 1; tr <= threads; ++tr) {
        if (threads % tr != 0) continue;
        const int tc = threads / tr;
        const int64_t rows = ceil_div(ceil_div(M, rows_unit), tr) * rows_unit;
        const int64_t cols = ceil_div(ceil_div(N, cols_unit), tc) * cols_unit;
        const int64_t cost = rows * cols + kPackWeight * (rows + cols);
        if (best < 0 || cost <= best) {  // ties go to splitting rows, as most RNN GEMMs are tall
            best = cost;
            *grid_rows = tr;
            *grid_cols = tc;
        }
    }
    return best;
}

// Whether gemm sums the product as two halves of K: each half's product computed on its own (by
// half the threads), the second's added to the first's after. In a grid each thread packs all of
// A's rows or all of B's columns (a grid of one row of tiles packs every row of A in each
// thread); for the weight gradients (M, N = the gate rows and units, K = T*B in the thousands, A
// transposed) that repeated packing was a third of the GEMM's time. Halves of K pack each value
// once, for the price of one pass over an M x N result. The rule looks at the shape alone, two
// threads' costs, so that the sums, and so the results' bits, are the same whatever the thread
// count (one thread computes both halves in turn). Measured alternating call by call with the grid
// (Zen 4, 2 threads, K = 6400, dW_ih and dW_hh of one layer): 1.11-1.29x for RNN layers, 1.01-1.13x
// for LSTM and GRU layers (H = 128-512); their training calls (T = 100, B = 64) 1.00-1.07x.
bool sums_halves_of_k(int64_t M, int64_t N, int64_t K, int rows_unit, int64_t cols_unit) {
    constexpr int64_t kMinHalf = 64;  // (a shallower half would not repay its second pass)
    if (K < 2 * kMinHalf) return false;
    int grid_rows, grid_cols;
    const int64_t grid = thread_grid(M, N, rows_unit, cols_unit, 2, &grid_rows, &grid_cols);
    const int64_t rows = ceil_div(M, rows_unit) * rows_unit, cols = ceil_div(N, cols_unit) * cols_unit;
    // Each thread's half of K on the whole result, plus the pass adding the halves (one read and
    // write of each result, costed like packing it), once for all of K.
    const int64_t halves = (rows * cols + kPackWeight * (rows + cols)) / 2 + kPackWeight * M * N * 2 / K;
    return halves < grid;
}

template <class T>
void gemm_thread_tile(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs,
                      const T* B, int64_t b_rs, int64_t b_cs, T* C, int64_t ldc, bool accumulate,
                      const GemmKernels<T>& kern) {
    const Blocks blk = blocks_for<T>(cache_sizes().l2, kern.rows);
    // Even-sized blocks: K = 257 becomes 2 x 129, not 256 + 1.
    const int64_t kc_max = ceil_div(K, ceil_div(K, blk.kc));
    const int64_t mc_max = ceil_div(ceil_div(M, ceil_div(M, blk.mc)), kern.rows) * kern.rows;
    const int64_t nc_max = min64(N, blk.nc);
    // Row-major A is read in place (each row's KC slice is contiguous), which is as fast as
    // a packed copy and saves making it, unless its rows share an L1 set; any other layout is
    // packed into slabs first.
    const bool pack_a = a_cs != 1 || rows_share_l1_set<T>(M, a_rs);
    T* b_pack = thread_scratch<T>(0, kc_max * ceil_div(nc_max, kPanel<T>) * kPanel<T>);
    T* a_pack = pack_a ? thread_scratch<T>(1, mc_max * kc_max) : nullptr;

    for (int64_t j0 = 0; j0 < N; j0 += nc_max) {
        const int64_t nc = min64(nc_max, N - j0);
        for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
            const int64_t kc = min64(kc_max, K - k0);
            // Later K slices add onto what the earlier ones wrote.
            const bool acc = accumulate || k0 > 0;
            pack_b_strided(kc, nc, B + k0 * b_rs + j0 * b_cs, b_rs, b_cs, b_pack);
            for (int64_t i0 = 0; i0 < M; i0 += mc_max) {
                const int64_t mc = min64(mc_max, M - i0);
                const T* a_block = A + i0 * a_rs + k0 * a_cs;
                T* c_block = C + i0 * ldc + j0;
                if (pack_a) {
                    kern.pack_a(mc, kc, a_block, a_rs, a_cs, a_pack);
                    kern.packed_a(mc, nc, kc, a_pack, 0, b_pack, c_block, ldc, acc);
                } else {
                    kern.row_major_a(mc, nc, kc, a_block, a_rs, b_pack, c_block, ldc, acc);
                }
            }
        }
    }
}

template <class T>
void fill_rows(int64_t M, int64_t N, T* C, int64_t ldc) {
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = T(0);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Public API

template <class T>
int64_t packed_b_size(int64_t K, int64_t N) {
    return ceil_div(N, kPanel<T>) * kPanel<T> * K;
}

template <class T>
void pack_b(int64_t K, int64_t N, const T* src, const int64_t* col_offset, int64_t k_stride,
            T* dst) {
    constexpr int64_t P = kPanel<T>;
    const TransposeRows16Fn transpose = k_stride == 1 ? panel_transpose<T>() : nullptr;
    for (int64_t j0 = 0; j0 < N; j0 += P, dst += K * P) {
        int64_t k_done = 0;
        // A full panel of contiguous columns (rows of a weight matrix).
        const T* columns[P];
        bool full = transpose != nullptr && j0 + P <= N;
        for (int64_t r = 0; full && r < P; ++r) {
            full = col_offset[j0 + r] >= 0;
            columns[r] = src + col_offset[j0 + r];
        }
        if (full) k_done = pack_full_panel(transpose, columns, K, dst);
        // A full panel of adjacent columns of a row-major matrix (the backward's W_hh, read as
        // its rows k). Gathered a column at a time instead, k_stride apart, packing W_hh took a
        // tenth of an LSTM's batch-1 training.
        bool adjacent = k_stride > 1 && j0 + P <= N && col_offset[j0] >= 0;
        for (int64_t r = 1; adjacent && r < P; ++r) adjacent = col_offset[j0 + r] == col_offset[j0] + r;
        if (adjacent) {
            pack_row_major_panel(K, src + col_offset[j0], k_stride, dst);
            continue;
        }
        for (int64_t r = 0; r < P; ++r) {
            const int64_t j = j0 + r;
            const bool present = j < N && col_offset[j] >= 0;
            // Walk one column at a time: with k_stride 1 (rows of W_hh) the reads are
            // contiguous, which matters more than the strided writes into the panel.
            const T* col = present ? src + col_offset[j] : nullptr;
            for (int64_t k = k_done; k < K; ++k) dst[k * P + r] = present ? col[k * k_stride] : T(0);
        }
    }
}

template <class T>
void gemm_packed_b(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp, T* C,
                   int64_t ldc, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate) fill_rows(M, N, C, ldc);
        return;
    }
    const GemmKernels<T>& kern = kernels<T>();
    const int64_t ld = unaliased_row_stride<T>(M, lda, K);
    if (ld == 0) return kern.row_major_a(M, N, K, A, lda, Bp, C, ldc, accumulate);
    // Rows that share an L1 set are copied, a block at a time, one cache line further apart
    // each. The copy reads each value of A once, the product N times: 5-9% of a call at N = 32
    // (an RNN's step, measured by forcing the copy), which is why the time loops copy a step's
    // rows once for all its calls (driver.h's rows_apart).
    constexpr int64_t kCopyBytes = 256 * 1024;
    const int64_t block = std::max<int64_t>(kern.rows, kCopyBytes / (ld * int64_t(sizeof(T))) / kern.rows * kern.rows);
    T* copy = thread_scratch<T>(2, std::min(block, M) * ld);
    for (int64_t i0 = 0; i0 < M; i0 += block) {
        const int64_t rows = min64(block, M - i0);
        for (int64_t i = 0; i < rows; ++i) std::copy_n(A + (i0 + i) * lda, K, copy + i * ld);
        kern.row_major_a(rows, N, K, copy, ld, Bp, C + i0 * ldc, ldc, accumulate);
    }
}

template <class T>
int64_t unaliased_row_stride(int64_t M, int64_t lda, int64_t K) {
    if (!rows_share_l1_set<T>(M, lda)) return 0;
    constexpr int64_t kLine = 64 / sizeof(T);
    const int64_t ld = ceil_div(K, kLine) * kLine;
    return rows_share_l1_set<T>(2, ld) ? ld + kLine : ld;
}

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* B,
          int64_t b_rs, int64_t b_cs, T* C, int64_t ldc, bool accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate) fill_rows(M, N, C, ldc);
        return;
    }
    const GemmKernels<T>& kern = kernels<T>();

    int threads = 1;
#ifdef _OPENMP
    // Below ~2^18 multiply-adds per thread the fork/join costs more than it saves.
    const int64_t useful_threads = (M * N * K) >> 18;
    threads = static_cast<int>(min64(omp_get_max_threads(), useful_threads < 1 ? 1 : useful_threads));
#endif
    // Thread `part` of a team of `parts` computes its tile of the product over k in [k0, k1) into
    // out (row stride ldo).
    const auto run_part = [&](int parts, int part, int64_t k0, int64_t k1, T* out, int64_t ldo, bool acc) {
        int grid_rows = 1, grid_cols = 1;
        thread_grid(M, N, kern.rows, kPanel<T>, parts, &grid_rows, &grid_cols);
        int64_t i0, i1, j0, j1;
        split_range(M, kern.rows, grid_rows, part / grid_cols, &i0, &i1);
        split_range(N, kPanel<T>, grid_cols, part % grid_cols, &j0, &j1);
        if (i1 <= i0 || j1 <= j0) return;
        gemm_thread_tile(i1 - i0, j1 - j0, k1 - k0, A + i0 * a_rs + k0 * a_cs, a_rs, a_cs, B + k0 * b_rs + j0 * b_cs,
                         b_rs, b_cs, out + i0 * ldo + j0, ldo, acc, kern);
    };
    if (sums_halves_of_k(M, N, K, kern.rows, kPanel<T>)) {
        // The first half into C, the second into a buffer of its own, added to C after.
        const int64_t half = K / 2;
        std::unique_ptr<T[]> second(new T[M * N]);
        // Thread tid of a team: the first half's threads, then the second's; one thread takes both.
        const auto compute_halves = [&](int team, int tid) {
            const auto first_half = [&](int parts, int part) { run_part(parts, part, 0, half, C, ldc, accumulate); };
            const auto second_half = [&](int parts, int part) { run_part(parts, part, half, K, second.get(), N, false); };
            if (team == 1) {
                first_half(1, 0);
                second_half(1, 0);
                return;
            }
            const int first = (team + 1) / 2;
            if (tid < first) {
                first_half(first, tid);
            } else {
                second_half(team - first, tid - first);
            }
        };
        const auto add_second = [&](int team, int tid) {
            int64_t i0, i1;
            split_range(M, 1, team, tid, &i0, &i1);
            for (int64_t i = i0; i < i1; ++i) {
                for (int64_t j = 0; j < N; ++j) C[i * ldc + j] += second[i * N + j];
            }
        };
#ifdef _OPENMP
        if (threads > 1) {
#pragma omp parallel num_threads(threads)
            {
                const int team = omp_get_num_threads(), tid = omp_get_thread_num();
                compute_halves(team, tid);
#pragma omp barrier
                add_second(team, tid);
            }
            return;
        }
#endif
        compute_halves(1, 0);
        add_second(1, 0);
        return;
    }
#ifdef _OPENMP
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        {
            // Fewer threads than asked may start; then each one takes several parts.
            for (int part = omp_get_thread_num(); part < threads; part += omp_get_num_threads())
                run_part(threads, part, 0, K, C, ldc, accumulate);
        }
        return;
    }
#endif
    run_part(1, 0, 0, K, C, ldc, accumulate);
}

const char* isa_compiled() {
#if defined(FUSEDRNN_HAVE_AVX512) && defined(FUSEDRNN_HAVE_AVX2)
    return "avx512,avx2,portable";
#elif defined(FUSEDRNN_HAVE_AVX512)
    return "avx512,portable";
#elif defined(FUSEDRNN_HAVE_AVX2)
    return "avx2,portable";
#else
    return "portable";
#endif
}

namespace detail {
GemmBf16Fn widening_bf16_gemm(int isa) {
    const Isa which = static_cast<Isa>(isa);
    return isa_usable(which) ? kernel_table(which).gemm_bf16 : nullptr;
}

PackABf16Fn pack_a_bf16_for_isa() { return kernel_table(current_isa()).pack_a_bf16; }
}  // namespace detail

template <class T>
GemmBlocking gemm_blocking() {
    const GemmKernels<T>& kern = kernels<T>();
    const Blocks b = blocks_for<T>(cache_sizes().l2, kern.rows);
    return GemmBlocking{b.kc, b.mc, b.nc, kern.rows, kern.panels};
}
template GemmBlocking gemm_blocking<float>();
template GemmBlocking gemm_blocking<double>();

Isa current_isa() { return static_cast<Isa>(selected_isa().load(std::memory_order_relaxed)); }

const char* isa_selected() { return isa_name(current_isa()); }

bool set_isa(const char* name) {
    Isa isa;
    if (!isa_from_name(name, &isa) || !isa_usable(isa)) return false;
    selected_isa().store(static_cast<int>(isa));
    return true;
}

// Explicit instantiations: float and double are the only element types.
#define FUSEDRNN_INSTANTIATE_GEMM(T)                                                              \
    template int64_t packed_b_size<T>(int64_t, int64_t);                                          \
    template void pack_b<T>(int64_t, int64_t, const T*, const int64_t*, int64_t, T*);             \
    template void gemm_packed_b<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*, T*,   \
                                   int64_t, bool);                                                \
    template int64_t unaliased_row_stride<T>(int64_t, int64_t, int64_t);                          \
    template void gemm<T>(int64_t, int64_t, int64_t, const T*, int64_t, int64_t, const T*,       \
                          int64_t, int64_t, T*, int64_t, bool);
FUSEDRNN_INSTANTIATE_GEMM(float)
FUSEDRNN_INSTANTIATE_GEMM(double)
#undef FUSEDRNN_INSTANTIATE_GEMM

}  // namespace fusedrnn::cpu

// Register micro-kernels and the single-threaded blocked loop around them, written once
// as templates over a small SIMD "vector policy". Each ISA file (gemm_avx512.cc,
// gemm_avx2.cc, gemm_portable.cc) defines its policies in an anonymous namespace and
// instantiates these templates with them, compiled with that file's ISA flags.
//
// Every template here takes the policy as a parameter and the policies have internal
// linkage, so each instantiation is private to its file: the linker can never swap an
// AVX-512 copy of a function into the portable path (the classic one-definition-rule trap
// when the same inline code is compiled with different -m flags).
//
// A vector policy V provides:
//   using T, Reg;                   element type and one SIMD register of T
//   kLanes                          elements per Reg (1 for the scalar policy)
//   kRegisters                      architectural vector registers (bounds the tile size)
//   kRows                           rows (MR) of the main micro-kernel
//   zero(), load(p), store(p, r), broadcast(x), fma(a, b, c) = a * b + c, add(a, b)
// load/store take unaligned pointers: packed buffers are 64-byte aligned anyway, and
// callers of gemm_packed_b may hand us any pointer.
#pragma once

#include <cstdint>
#include <cstring>

#include "gemm.h"
#include "gemm_bf16.h"

#if defined(__GNUC__)
#define FUSEDRNN_PRAGMA(x) _Pragma(#x)
// The tile loops have compile-time trip counts; fully unrolling them is what lets the
// accumulators live in registers instead of a stack array.
#define FUSEDRNN_UNROLL FUSEDRNN_PRAGMA(GCC unroll 64)
// Keep each micro-kernel a separate function so register allocation sees one tile shape.
#define FUSEDRNN_NOINLINE __attribute__((noinline))
#define FUSEDRNN_PREFETCH_FOR_WRITE(p) __builtin_prefetch((p), 1)
#else
#define FUSEDRNN_PREFETCH_FOR_WRITE(p)
#define FUSEDRNN_UNROLL
#define FUSEDRNN_NOINLINE
#endif

namespace fusedrnn::cpu::detail {

// ---------------------------------------------------------------------------------------
// What each ISA file exports to the dispatcher in gemm.cc.

// C(M x N) (=|+=) A(M x K) * B, B packed (panel stride K * kPanel). A is either
// row-major with row stride lda, or packed (see pack layout below; lda is then ignored).
template <class T>
using BlockFn = void (*)(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp,
                         T* C, int64_t ldc, bool accumulate);

// Packs A(M x K), element (i, k) at A[i * a_rs + k * a_cs], into the packed-A layout.
template <class T>
using PackAFn = void (*)(int64_t M, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, T* dst);

template <class T>
struct GemmKernels {
    int rows;               // MR: packed A is cut into slabs of this many rows
    BlockFn<T> row_major_a; // A(i, k) = A[i * lda + k]
    // Packed A: slabs of `rows` rows, slab s starting at A + s * rows * K, holding for each
    // k the rows of the slab next to each other: A(s*rows + i, k) = slab[k * rows + i].
    // The last slab may be shorter (m rows) and is then interleaved by m, not rows.
    BlockFn<T> packed_a;
    PackAFn<T> pack_a;      // M * K elements of dst
    int panels;             // panels of the main tile (rows x panels), for reporting
};

// dst[k * 16 + r] = rows[r][k] for r < 16, k < K (K a multiple of 16): packing one full panel of
// float B whose columns are contiguous rows of a weight matrix, 16 x 16 blocks at a time.
using TransposeRows16Fn = void (*)(const float* const* rows, int64_t K, float* dst);

struct KernelTable {
    const char* name;
    GemmKernels<float> f32;
    GemmKernels<double> f64;
    TransposeRows16Fn transpose_rows16;  // null where the ISA has no fast transpose
    GemmBf16Fn gemm_bf16;                 // bfloat16 weights widened in registers, or null
    PackABf16Fn pack_a_bf16;              // rows rounded to bfloat16 pairs (gemm_bf16_kernels.h)
};

// Defined by each ISA file; gemm.cc references only those its build defines.
const KernelTable& portable_kernel_table();
const KernelTable& avx2_kernel_table();
const KernelTable& avx512_kernel_table();

// ---------------------------------------------------------------------------------------
// Micro-kernel: a kRows x (kPanels panels) block of C held entirely in registers,
// accumulated over all K as rank-1 updates (one row of B, broadcast elements of A).

// How many panels a kRows-row tile can span: kRows accumulator rows plus one row of
// loaded B must fit in the registers (one spare for the broadcast). Capped at 4 because
// more independent accumulators than that buys nothing once FMA latency is hidden.
// A scalar policy gets 1: its "registers" are whatever the compiler makes of them.
template <class V>
constexpr int max_panels(int rows) {
    constexpr int regs_per_panel = static_cast<int>(kPanel<typename V::T>) / V::kLanes;
    const int fit = (V::kRegisters - 1) / ((rows + 1) * regs_per_panel);
    return fit < 1 ? 1 : (fit > 4 ? 4 : fit);
}

template <class T>
struct Tile {
    int64_t K;
    const T* A;
    int64_t lda;             // row stride of row-major A (unused when A is packed)
    const T* B;              // first panel of this tile
    int64_t b_panel_stride;  // elements between consecutive panels (K * kPanel)
    T* C;
    int64_t ldc;
    int64_t n_valid;         // columns of C this tile writes (<= kPanels * kPanel)
    bool accumulate;
};

template <class V, bool kPackedA, int kRows, int kPanels>
FUSEDRNN_NOINLINE void micro_tile(const Tile<typename V::T>& t) {
    using T = typename V::T;
    using Reg = typename V::Reg;
    constexpr int kRegsPerPanel = static_cast<int>(kPanel<T>) / V::kLanes;
    constexpr int kRegsPerRow = kPanels * kRegsPerPanel;
    constexpr int64_t kTileCols = kPanels * kPanel<T>;
    // Packed A keeps the kRows values of one k adjacent, so a k step moves by kRows;
    // row-major A keeps one row's k values adjacent.
    const int64_t a_row_step = kPackedA ? 1 : t.lda;
    const int64_t a_k_step = kPackedA ? kRows : 1;

    // Start fetching the C tile now; it is only needed after the K loop, and for a large K
    // that is cycled in KC slices, C has usually dropped out of L1/L2 since the last slice.
    FUSEDRNN_UNROLL
    for (int i = 0; i < kRows; ++i) {
        FUSEDRNN_UNROLL
        for (int p = 0; p < kPanels; ++p) FUSEDRNN_PREFETCH_FOR_WRITE(t.C + i * t.ldc + p * kPanel<T>);
    }

    Reg acc[kRows][kRegsPerRow];
    FUSEDRNN_UNROLL
    for (int i = 0; i < kRows; ++i) {
        FUSEDRNN_UNROLL
        for (int j = 0; j < kRegsPerRow; ++j) acc[i][j] = V::zero();
    }

    const T* a = t.A;
    const T* b = t.B;
    for (int64_t k = 0; k < t.K; ++k, a += a_k_step, b += kPanel<T>) {
        Reg b_row[kRegsPerRow];
        FUSEDRNN_UNROLL
        for (int p = 0; p < kPanels; ++p) {
            FUSEDRNN_UNROLL
            for (int r = 0; r < kRegsPerPanel; ++r)
                b_row[p * kRegsPerPanel + r] = V::load(b + p * t.b_panel_stride + r * V::kLanes);
        }
        FUSEDRNN_UNROLL
        for (int i = 0; i < kRows; ++i) {
            const Reg a_ik = V::broadcast(a[i * a_row_step]);
            FUSEDRNN_UNROLL
            for (int j = 0; j < kRegsPerRow; ++j) acc[i][j] = V::fma(a_ik, b_row[j], acc[i][j]);
        }
    }

    if (t.n_valid == kTileCols) {
        FUSEDRNN_UNROLL
        for (int i = 0; i < kRows; ++i) {
            T* c = t.C + i * t.ldc;
            FUSEDRNN_UNROLL
            for (int j = 0; j < kRegsPerRow; ++j) {
                Reg v = acc[i][j];
                if (t.accumulate) v = V::add(V::load(c + j * V::kLanes), v);
                V::store(c + j * V::kLanes, v);
            }
        }
        return;
    }
    // Partial last panel: go through a full-width row buffer so we never touch C past
    // column n_valid (it may be the end of the caller's allocation).
    for (int i = 0; i < kRows; ++i) {
        T* c = t.C + i * t.ldc;
        alignas(64) T row[kTileCols];
        for (int64_t j = 0; j < kTileCols; ++j) row[j] = (t.accumulate && j < t.n_valid) ? c[j] : T(0);
        FUSEDRNN_UNROLL
        for (int j = 0; j < kRegsPerRow; ++j)
            V::store(row + j * V::kLanes, V::add(V::load(row + j * V::kLanes), acc[i][j]));
        for (int64_t j = 0; j < t.n_valid; ++j) c[j] = row[j];
    }
}

// Runs the micro-kernel for a rows x panels tile chosen at run time. Only shapes that
// fit the registers (panels <= max_panels(rows)) exist; the chain of compares costs
// nothing next to the K * rows * panels FMAs of a tile.
template <class V, bool kPackedA, int kRows, int kPanels = max_panels<V>(kRows)>
void run_tile_panels(int panels, const Tile<typename V::T>& t) {
    if constexpr (kPanels >= 1) {
        if (panels == kPanels) return micro_tile<V, kPackedA, kRows, kPanels>(t);
        run_tile_panels<V, kPackedA, kRows, kPanels - 1>(panels, t);
    }
}

template <class V, bool kPackedA, int kRows = V::kRows>
void run_tile(int rows, int panels, const Tile<typename V::T>& t) {
    if constexpr (kRows >= 1) {
        if (rows == kRows) return run_tile_panels<V, kPackedA, kRows>(panels, t);
        run_tile<V, kPackedA, kRows - 1>(rows, panels, t);
    }
}

// ---------------------------------------------------------------------------------------
// Single-threaded blocked loop over a whole (M x N) block of C.
//
// Full kRows-row slabs come first, with the column chunk as the outer loop: one chunk of
// B (K x kPanels panels) then stays in L1 while every slab of A streams past it. The
// remaining M % kRows rows (all of M when M is small, e.g. a batch of 1) get their own
// pass with tiles of exactly that many rows, made as wide as the registers allow so that
// enough independent accumulators keep the FMA units busy; no row is computed twice or
// padded.
template <class V, bool kPackedA>
void gemm_block(int64_t M, int64_t N, int64_t K, const typename V::T* A, int64_t lda,
                const typename V::T* Bp, typename V::T* C, int64_t ldc, bool accumulate) {
    using T = typename V::T;
    constexpr int kRows = V::kRows;
    const int64_t panels = (N + kPanel<T> - 1) / kPanel<T>;
    const int64_t full_rows = M / kRows * kRows;

    Tile<T> t{};
    t.K = K;
    t.lda = lda;
    t.b_panel_stride = K * kPanel<T>;
    t.ldc = ldc;
    t.accumulate = accumulate;

    auto sweep = [&](int64_t row_begin, int64_t row_end, int rows, int chunk) {
        for (int64_t p0 = 0; p0 < panels; p0 += chunk) {
            const int64_t np = panels - p0 < chunk ? panels - p0 : chunk;
            const int64_t col = p0 * kPanel<T>;
            t.B = Bp + p0 * t.b_panel_stride;
            t.n_valid = N - col < np * kPanel<T> ? N - col : np * kPanel<T>;
            for (int64_t i = row_begin; i < row_end; i += rows) {
                t.A = kPackedA ? A + i * K : A + i * lda;
                t.C = C + i * ldc + col;
                run_tile<V, kPackedA>(rows, static_cast<int>(np), t);
            }
        }
    };
    if (full_rows > 0) sweep(0, full_rows, kRows, max_panels<V>(kRows));
    const int rest = static_cast<int>(M - full_rows);
    if (rest > 0) sweep(full_rows, M, rest, max_panels<V>(rest));
}

// Packing lives here rather than in gemm.cc so that the slab height is a compile-time
// constant: copying a column-major slab row (kRows contiguous values) then compiles to a
// few vector moves instead of a loop of scalar copies.
template <class V>
void pack_a(int64_t M, int64_t K, const typename V::T* A, int64_t a_rs, int64_t a_cs,
            typename V::T* dst) {
    using T = typename V::T;
    constexpr int kRows = V::kRows;
    const int64_t full_rows = M / kRows * kRows;
    const int64_t m = M - full_rows;  // last, shorter slab: interleaved by m
    if (a_rs == 1) {
        // Column-major A (a transposed operand, the backward's dG^T): its column k is M contiguous
        // values, kRows to each slab. Read slab by slab, each slab took kRows values of every
        // column, a column apart, and the loads waited on memory: packing was a tenth of an RNN
        // layer's backward at B=64, H=128, whose weight gradients have K = T*B. Read column by
        // column, each slab took a piece of a line (kRows values, less than one line) at every
        // column, so each line was written in two or three visits, as many lines at once as
        // there are slabs. So columns go in groups of kGroup: each slab takes its rows of the
        // group, kGroup * kRows values (3 to 12 lines' worth with the AVX2 and AVX-512 tiles), in
        // one visit, while the group's columns stay in L1. Measured against the column order
        // (Zen 4, 2 threads, K = 6400, M x N = the weight gradients' 512 x 32 .. 2048 x 512):
        // 1.01-1.2x, the most where N is small; groups of 4, 16 or 32 columns gained less.
        constexpr int64_t kGroup = 8;
        for (int64_t k0 = 0; k0 < K; k0 += kGroup) {
            const int64_t kn = K - k0 < kGroup ? K - k0 : kGroup;
            for (int64_t i0 = 0; i0 < full_rows; i0 += kRows) {
                T* slab = dst + i0 * K + k0 * kRows;
                for (int64_t k = 0; k < kn; ++k) {
                    std::memcpy(slab + k * kRows, A + (k0 + k) * a_cs + i0, sizeof(T) * kRows);
                }
            }
            for (int64_t k = k0; k < k0 + kn; ++k)
                for (int64_t i = 0; i < m; ++i) dst[full_rows * K + k * m + i] = A[k * a_cs + full_rows + i];
        }
        return;
    }
    for (int64_t i0 = 0; i0 < full_rows; i0 += kRows) {
        const T* src = A + i0 * a_rs;
        T* slab = dst + i0 * K;
        for (int64_t k = 0; k < K; ++k) {
            FUSEDRNN_UNROLL
            for (int i = 0; i < kRows; ++i) slab[k * kRows + i] = src[i * a_rs + k * a_cs];
        }
    }
    for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < m; ++i)
            dst[full_rows * K + k * m + i] = A[(full_rows + i) * a_rs + k * a_cs];
}

template <class V>
GemmKernels<typename V::T> make_kernels() {
    return {V::kRows, &gemm_block<V, false>, &gemm_block<V, true>, &pack_a<V>, max_panels<V>(V::kRows)};
}

}  // namespace fusedrnn::cpu::detail

// Packed GEMM for the CPU backend: our own BLIS-style blocking around small register
// micro-kernels, with AVX-512, AVX2+FMA and portable C++ variants picked at run time.
//
// All matrices are dense and row-major unless a stride says otherwise. Nothing here
// allocates on the caller's behalf except gemm(), which packs into its own scratch.
// Outputs are overwritten (C = A*B) or accumulated (C += A*B) as the caller asks;
// K == 0 makes the product zero, so C becomes 0 (or stays unchanged when accumulating).
#pragma once

#include <cstdint>

namespace fusedrnn::cpu {

// ---------------------------------------------------------------------------------------
// Packed-B layout, shared by every ISA so a caller can pack once and reuse the result:
// a K x N matrix B is stored as ceil(N / kPanel<T>) panels, one after another; panel p
// holds, for k = 0..K-1 in order, the kPanel<T> values B(k, p*kPanel + r), r = 0..kPanel-1,
// with zeros past column N. One panel row is 64 bytes, i.e. exactly one cache line.
template <class T>
inline constexpr int64_t kPanel = 64 / static_cast<int64_t>(sizeof(T));

// Number of T elements needed to hold a K x N matrix in the packed-B layout.
template <class T>
int64_t packed_b_size(int64_t K, int64_t N);

// Packs a K x N matrix B into dst (packed_b_size<T>(K, N) elements).
//   src:        base pointer the columns are read from
//   col_offset: (N,) column j of B is src[col_offset[j] + k * k_stride], k = 0..K-1;
//               col_offset[j] < 0 makes column j all zeros. This lets the recurrence pack
//               gate-interleaved rows of W_hh (k_stride = 1, B = W_hh^T slice) or column
//               slices of a row-major (.., H) matrix (k_stride = H).
//   k_stride:   distance between B(k, j) and B(k + 1, j) in src
//   dst:        (packed_b_size<T>(K, N),) output; every element is written
template <class T>
void pack_b(int64_t K, int64_t N, const T* src, const int64_t* col_offset, int64_t k_stride,
            T* dst);

// Single-threaded C = A * B (or C += A * B when accumulate), B pre-packed by pack_b.
// Meant to be called by each thread of the caller's own OpenMP region on its own rows or
// columns; it starts no threads. Rows of A a multiple of 4 KiB apart are first copied further
// apart, into a scratch buffer of the calling thread (see unaliased_row_stride below).
//   M, N, K:  C is M x N, A is M x K, B is K x N; any of them may be 0
//   A:        (M, K) row-major, element (i, k) at A[i * lda + k]
//   lda:      row stride of A in elements (>= K unless M <= 1)
//   Bp:       (packed_b_size<T>(K, N),) B in the packed-B layout above
//   C:        (M, N) row-major, element (i, j) at C[i * ldc + j]; only the first N
//             columns of each row are touched
//   ldc:      row stride of C in elements
//   accumulate: false writes C = A * B, true adds A * B to C
template <class T>
void gemm_packed_b(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* Bp, T* C,
                   int64_t ldc, bool accumulate);

// 0 when gemm_packed_b reads M rows of A, lda elements apart, in place; else the row stride of
// the copy it would make of them (K rounded up to whole cache lines, one line more if that is
// still a multiple of 4 KiB). A caller running several products on the same rows copies them
// once to that stride itself.
template <class T>
int64_t unaliased_row_stride(int64_t M, int64_t lda, int64_t K);

// General multi-threaded C = A * B (or C += A * B), with OpenMP threads started inside,
// so call it from outside any parallel region. Any element strides are allowed, so
// transposed operands are just swapped strides.
//   M, N, K:  C is M x N, A is M x K, B is K x N; any of them may be 0
//   A:        element (i, k) at A[i * a_rs + k * a_cs]
//   B:        element (k, j) at B[k * b_rs + j * b_cs]
//   C:        (M, N) row-major, element (i, j) at C[i * ldc + j]
//   accumulate: false writes C = A * B, true adds A * B to C
// Deterministic: the same inputs give bitwise identical C for any thread count, because
// each element of C is owned by one thread and summed over k in a fixed order (K is never
// split across threads; K blocks are added to C one after another).
template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* B,
          int64_t b_rs, int64_t b_cs, T* C, int64_t ldc, bool accumulate);

// The general GEMM's block sizes and main micro-kernel tile for element type T, with the current
// ISA and the caches cpu/cpu_caches.h reports (gemm.cc says how each is derived).
struct GemmBlocking {
    int64_t kc, mc, nc;  // K slice, rows of A per L2 block, columns of B per packed buffer
    int rows, panels;    // micro-kernel tile: rows x panels of kPanel<T> columns
};
template <class T>
GemmBlocking gemm_blocking();

// The instruction-set families the CPU kernels come in, lowest first.
enum class Isa : int { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The family in use now (see isa_selected); the recurrence picks its pointwise code by it too.
Isa current_isa();

// Which micro-kernel families this build contains, e.g. "avx512,avx2,portable".
const char* isa_compiled();

// The family in use now: "avx512", "avx2" or "portable". At first use this is the best one
// the CPU supports, or a lower one named by the environment variable
// FUSEDRNN_ISA=portable|avx2|avx512 (a request the CPU or build cannot honour is ignored).
const char* isa_selected();

// Forces a family (used by tests to cover every kernel). Returns false, changing nothing,
// when the name is unknown or that family is not compiled in or not supported by this CPU.
// Not meant to be called while another thread is inside a GEMM.
bool set_isa(const char* name);

}  // namespace fusedrnn::cpu

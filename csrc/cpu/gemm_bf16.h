// Products with bfloat16 weights, for the opt-in bf16 inference mode: at a batch of a few rows a
// step's recurrent product is bound by reading the weights (from L2, or L3 when they do not fit),
// and bfloat16 halves those bytes. The weights are rounded to bfloat16 once, when packed; the
// state is rounded at every step; products and sums are float32 (bfloat16 x bfloat16 is exact in
// float32, so each pair of k adds with one rounding, as AVX512-BF16's VDPBF16PS does).
//
// Packed B (K x N, N split in panels of 16 columns, panel after panel): a panel holds, for each
// pair of k (2q, 2q + 1), its 16 columns' two values side by side, 64 bytes:
//   element (k, j) of panel p at dst[(p * Kp + k / 2) * 32 + 2 * (j % 16) + k % 2],  Kp = ceil(K / 2),
// an odd K padded with a zero row. Packed A: each row as Kp pairs, k even in the low half.
#pragma once

#include <cstdint>

namespace fusedrnn::cpu {

// Rounded to nearest, ties to even (a NaN stays a NaN).
uint16_t to_bf16(float x);
float from_bf16(uint16_t x);

int64_t packed_bf16_size(int64_t K, int64_t N);  // uint16 elements

// Column j of B is src[col_offset[j] + k * k_stride] (a zero column where col_offset[j] < 0).
void pack_b_bf16(int64_t K, int64_t N, const float* src, const int64_t* col_offset, int64_t k_stride,
                 uint16_t* dst);

// A (M x K, row stride lda) into M rows of Kp pairs.
void pack_a_bf16(int64_t M, int64_t K, const float* A, int64_t lda, uint32_t* dst);

// C (M x N, row stride ldc) = A B, overwritten.
void gemm_bf16(int64_t M, int64_t N, int64_t K, const uint32_t* A, const uint16_t* Bp, float* C, int64_t ldc);

// The same from float32 rows of A (row stride lda), rounded to bfloat16 here, a block of rows at a
// time, on OpenMP threads started inside (call it outside any parallel region): the input
// projections x W_ih^T of the bf16 compute mode. Each row is one thread's, so the results' bits do
// not depend on the thread count.
void gemm_bf16_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* Bp, float* C,
                    int64_t ldc);

// Whether gemm_bf16 runs on AVX512-BF16 here (else kernels with the same results, apart from
// float32 denormals, which the instruction flushes to zero).
bool bf16_native();

// The kernel gemm_bf16 runs now: "avx512bf16" (the instruction), "avx512" or "avx2" (the weights
// widened to float32 in registers, cpu/gemm_bf16_kernels.h), or "portable" (a plain loop).
const char* bf16_kernel();

// gemm_bf16 through the kernel named (as bf16_kernel() names them), whatever the current ISA;
// false, computing nothing, when this build or CPU lacks it. For the tests.
bool gemm_bf16_with(const char* kernel, int64_t M, int64_t N, int64_t K, const uint32_t* A, const uint16_t* Bp,
                    float* C, int64_t ldc);

namespace detail {
using GemmBf16Fn = void (*)(int64_t M, int64_t N, int64_t Kp, const uint32_t* A, const uint16_t* Bp, float* C,
                            int64_t ldc);
using PackABf16Fn = void (*)(int64_t M, int64_t K, const float* A, int64_t lda, uint32_t* dst);
PackABf16Fn pack_a_bf16_for_isa();  // pack_a_bf16 compiled for the current ISA (gemm.cc)
GemmBf16Fn avx512bf16_gemm();  // defined where the build has gemm_bf16_avx512.cc
GemmBf16Fn widening_bf16_gemm(int isa);  // an Isa's widening kernel if compiled and usable, else null (gemm.cc)
}  // namespace detail

}  // namespace fusedrnn::cpu

// The bfloat16-weight product (cpu/gemm_bf16.h) on CPUs without AVX512-BF16: the weights stay
// bfloat16 in memory, so a step still reads half the bytes, and become float32 in registers.
// A bfloat16 is the top half of a float32, so the conversion is a shift or a mask: in the packed
// layout each 32-bit lane holds one column's pair of k (k even in the low half, k odd in the high
// half), so
//   odd  = lane & 0xffff0000   (already a float32: the low half is zero)
//   even = lane << 16
// Then two FMAs per lane, odd k first and even k second, as the portable loop and VDPBF16PS add
// them. A product of two bfloat16 values has at most 16 significant bits, so it is exact in
// float32 and FMA's single rounding equals the portable loop's multiply-then-add: the results are
// bitwise the portable loop's (apart from products below float32's normal range, ~1e-38, which
// the portable loop's multiply rounds and FMA does not).
//
// Written once over a vector policy, instantiated by gemm_avx2.cc and gemm_avx512.cc with their
// ISA flags; internal linkage throughout (see gemm_kernels.h on why).
//
// A policy V provides: kLanes (floats per register), Reg, zero(), broadcast(x), fma(a, b, c),
// odd(p) and even(p) (the lanes at p as float32: masked, shifted), store(p, r), and kMaxTile, the
// most accumulator registers a tile may use (the rest hold the converted weights and broadcasts).
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu/gemm_bf16.h"
#include "cpu/gemm_kernels.h"  // FUSEDRNN_UNROLL, FUSEDRNN_NOINLINE

namespace fusedrnn::cpu::detail {
namespace {

constexpr int64_t kBf16Cols = 16;  // columns of a packed panel

// A float32's bits rounded to bfloat16 (to_bf16, cpu/gemm_bf16.h): nearest, ties to even, a NaN
// kept a NaN; in the low half. Branch-free, so that loops of it vectorize.
inline uint32_t bf16_bits(uint32_t bits) {
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x40u;
  return (bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
}

// pack_a_bf16 (cpu/gemm_bf16.h): rows of A as bfloat16 pairs. The loop over full pairs has no
// test in it, so that the compiler vectorizes it with the including file's instruction set: a
// batch's state is rounded so at every step of the bf16 mode, and x for its input projections.
// (inline: no unused-function warning where a file includes this without taking it.)
inline FUSEDRNN_NOINLINE void round_rows_bf16(int64_t M, int64_t K, const float* A, int64_t lda, uint32_t* dst) {
  const int64_t Kp = (K + 1) / 2, full = K / 2;
  for (int64_t i = 0; i < M; ++i) {
    const float* a = A + i * lda;
    uint32_t* out = dst + i * Kp;
    for (int64_t q = 0; q < full; ++q) {
      uint32_t even, odd;
      std::memcpy(&even, a + 2 * q, sizeof even);
      std::memcpy(&odd, a + 2 * q + 1, sizeof odd);
      out[q] = bf16_bits(even) | bf16_bits(odd) << 16;
    }
    if (full < Kp) {  // (an odd K: the last pair's high half is zero)
      uint32_t even;
      std::memcpy(&even, a + 2 * full, sizeof even);
      out[full] = bf16_bits(even);
    }
  }
}

inline float bf16_high(uint32_t pair) {
  const uint32_t bits = pair & 0xffff0000u;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float bf16_low(uint32_t pair) {
  const uint32_t bits = pair << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// R rows x P panels of C: R * P * (16 / kLanes) accumulators.
template <class V, int R, int P>
FUSEDRNN_NOINLINE void bf16_tile(int64_t Kp, const uint32_t* A, const uint16_t* B, int64_t panel_stride, float* C,
                                 int64_t ldc, int64_t n_valid) {
  using Reg = typename V::Reg;
  constexpr int kPerPanel = static_cast<int>(kBf16Cols) / V::kLanes;
  constexpr int kCols = P * kPerPanel;
  Reg acc[R][kCols];
  FUSEDRNN_UNROLL
  for (int r = 0; r < R; ++r) {
    FUSEDRNN_UNROLL
    for (int j = 0; j < kCols; ++j) acc[r][j] = V::zero();
  }
  for (int64_t q = 0; q < Kp; ++q) {
    Reg a_odd[R], a_even[R];
    FUSEDRNN_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint32_t pair = A[r * Kp + q];
      a_odd[r] = V::broadcast(bf16_high(pair));
      a_even[r] = V::broadcast(bf16_low(pair));
    }
    FUSEDRNN_UNROLL
    for (int p = 0; p < P; ++p) {
      FUSEDRNN_UNROLL
      for (int h = 0; h < kPerPanel; ++h) {
        // kLanes columns' pairs: 2 * kLanes uint16 values.
        const uint16_t* lanes = B + p * panel_stride + q * 2 * kBf16Cols + h * 2 * V::kLanes;
        const Reg odd = V::odd(lanes), even = V::even(lanes);
        FUSEDRNN_UNROLL
        for (int r = 0; r < R; ++r) {
          Reg& c = acc[r][p * kPerPanel + h];
          c = V::fma(a_odd[r], odd, c);
          c = V::fma(a_even[r], even, c);
        }
      }
    }
  }
  FUSEDRNN_UNROLL
  for (int r = 0; r < R; ++r) {
    float* c = C + r * ldc;
    if (n_valid >= kCols * V::kLanes) {
      FUSEDRNN_UNROLL
      for (int j = 0; j < kCols; ++j) V::store(c + j * V::kLanes, acc[r][j]);
    } else {
      // A ragged last panel: never write past column n_valid (it may be the end of C).
      alignas(64) float row[kCols * V::kLanes];
      FUSEDRNN_UNROLL
      for (int j = 0; j < kCols; ++j) V::store(row + j * V::kLanes, acc[r][j]);
      std::memcpy(c, row, sizeof(float) * static_cast<size_t>(n_valid));
    }
  }
}

// The widest tile of `rows` rows whose accumulators fit kMaxTile registers.
template <class V>
constexpr int bf16_panels(int rows) {
  constexpr int kPerPanel = static_cast<int>(kBf16Cols) / V::kLanes;
  const int fit = V::kMaxTile / (rows * kPerPanel);
  return fit < 1 ? 1 : (fit > 4 ? 4 : fit);
}

template <class V, int R, int P = bf16_panels<V>(R)>
void bf16_run_panels(int panels, int64_t Kp, const uint32_t* A, const uint16_t* B, int64_t panel_stride, float* C,
                     int64_t ldc, int64_t n_valid) {
  if constexpr (P >= 1) {
    if (panels == P) return bf16_tile<V, R, P>(Kp, A, B, panel_stride, C, ldc, n_valid);
    bf16_run_panels<V, R, P - 1>(panels, Kp, A, B, panel_stride, C, ldc, n_valid);
  }
}

template <class V, int R = V::kMaxRows>
void bf16_run(int rows, int panels, int64_t Kp, const uint32_t* A, const uint16_t* B, int64_t panel_stride, float* C,
              int64_t ldc, int64_t n_valid) {
  if constexpr (R >= 1) {
    if (rows == R) return bf16_run_panels<V, R>(panels, Kp, A, B, panel_stride, C, ldc, n_valid);
    bf16_run<V, R - 1>(rows, panels, Kp, A, B, panel_stride, C, ldc, n_valid);
  }
}

// C (M x N) = A B: column chunks of as many panels as a tile of kMaxRows rows takes (all rows
// stream past one chunk of B while it is in L1), the last M % kMaxRows rows in wider tiles.
template <class V>
void gemm_bf16_shift(int64_t M, int64_t N, int64_t Kp, const uint32_t* A, const uint16_t* Bp, float* C,
                     int64_t ldc) {
  const int64_t panels = (N + kBf16Cols - 1) / kBf16Cols, panel_stride = Kp * 2 * kBf16Cols;
  const int64_t full = M / V::kMaxRows * V::kMaxRows;
  auto sweep = [&](int64_t i0, int64_t i1, int rows) {
    const int chunk = bf16_panels<V>(rows);
    for (int64_t p0 = 0; p0 < panels; p0 += chunk) {
      const int np = static_cast<int>(panels - p0 < chunk ? panels - p0 : chunk);
      const int64_t n_valid = N - p0 * kBf16Cols;
      for (int64_t i = i0; i < i1; i += rows) {
        bf16_run<V>(rows, np, Kp, A + i * Kp, Bp + p0 * panel_stride, panel_stride, C + i * ldc + p0 * kBf16Cols, ldc,
                    n_valid);
      }
    }
  };
  if (full > 0) sweep(0, full, V::kMaxRows);
  if (M > full) sweep(full, M, static_cast<int>(M - full));
}

}  // namespace
}  // namespace fusedrnn::cpu::detail

// The AVX512-BF16 kernel of gemm_bf16 (see gemm_bf16.h). Compiled with -mavx512f -mavx512bf16;
// gemm_bf16.cc only calls it after checking that the CPU has them.
//
// A tile of R rows x P panels of C lives in R*P zmm accumulators; each pair of k loads P panel
// rows (64 bytes each: 16 columns x 2 k) and broadcasts one pair of A per row, for R*P VDPBF16PS.
// With R=1 (a batch of one) the P=4 independent accumulators cover the instruction's latency at
// about one 64-byte load a cycle, more than L2 delivers.
#include <immintrin.h>

#include "cpu/gemm_bf16.h"

namespace fusedrnn::cpu::detail {
namespace {

constexpr int64_t kCols = 16;

template <int R, int P>
void tile(int64_t Kp, const uint32_t* A, const uint16_t* B, int64_t panel_stride, float* C, int64_t ldc,
          int64_t n_valid) {
  __m512 acc[R][P];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < P; ++p) acc[r][p] = _mm512_setzero_ps();
  for (int64_t q = 0; q < Kp; ++q) {
    __m512i b[P];
    for (int p = 0; p < P; ++p) b[p] = _mm512_loadu_si512(B + p * panel_stride + q * 2 * kCols);
    for (int r = 0; r < R; ++r) {
      const __m512i a = _mm512_set1_epi32(static_cast<int>(A[r * Kp + q]));
      for (int p = 0; p < P; ++p) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], (__m512bh)a, (__m512bh)b[p]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int p = 0; p < P; ++p) {
      const int64_t left = n_valid - p * kCols;
      if (left >= kCols) {
        _mm512_storeu_ps(C + r * ldc + p * kCols, acc[r][p]);
      } else if (left > 0) {
        _mm512_mask_storeu_ps(C + r * ldc + p * kCols, static_cast<__mmask16>((1u << left) - 1), acc[r][p]);
      }
    }
  }
}

using TileFn = void (*)(int64_t, const uint32_t*, const uint16_t*, int64_t, float*, int64_t, int64_t);

template <int R>
constexpr TileFn tiles_of_rows[4] = {&tile<R, 1>, &tile<R, 2>, &tile<R, 3>, &tile<R, 4>};
constexpr const TileFn* kTiles[4] = {tiles_of_rows<1>, tiles_of_rows<2>, tiles_of_rows<3>, tiles_of_rows<4>};

void gemm(int64_t M, int64_t N, int64_t Kp, const uint32_t* A, const uint16_t* Bp, float* C, int64_t ldc) {
  const int64_t panels = (N + kCols - 1) / kCols, panel_stride = Kp * 2 * kCols;
  for (int64_t p0 = 0; p0 < panels; p0 += 4) {
    const int64_t np = panels - p0 < 4 ? panels - p0 : 4;
    const int64_t n_valid = N - p0 * kCols;
    for (int64_t i = 0; i < M; i += 4) {
      const int64_t rows = M - i < 4 ? M - i : 4;
      kTiles[rows - 1][np - 1](Kp, A + i * Kp, Bp + p0 * panel_stride, panel_stride, C + i * ldc + p0 * kCols, ldc,
                               n_valid);
    }
  }
}

}  // namespace

GemmBf16Fn avx512bf16_gemm() { return &gemm; }

}  // namespace fusedrnn::cpu::detail

// cuda/gemm.h: the dispatch between cuBLAS (cuda/cublas.h decides) and fusedrnn's tiled GEMM
// kernel, which is here. A block computes a 32 x 32 tile of C with 16 x 16 threads (2 x 2 values
// each), stepping over K in slices of 16 that the block first copies into shared memory; any
// strides (the copies gather), zero padding at the edges.
#include <algorithm>
#include <string>

#include "cuda/cublas.h"
#include "cuda/gemm.h"
#include "cuda/status.h"

namespace fusedrnn::cuda {
namespace {

constexpr int kThreads = 16;            // threads per side of a block
constexpr int kTile = 2 * kThreads;     // C values per side of a block's tile
constexpr int kSlice = 16;              // K values per shared-memory step

template <class T>
__global__ void gemm_kernel(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* B,
                            int64_t b_rs, int64_t b_cs, T* C, int64_t ldc, bool accumulate) {
  __shared__ T a_tile[kTile][kSlice + 1];  // (+1: column reads of a row-stored tile hit distinct banks)
  __shared__ T b_tile[kSlice][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, id = ty * kThreads + tx;
  const int64_t m0 = int64_t(blockIdx.y) * kTile, n0 = int64_t(blockIdx.x) * kTile;
  T acc[2][2] = {{T(0), T(0)}, {T(0), T(0)}};
  for (int64_t k0 = 0; k0 < K; k0 += kSlice) {
    // 256 threads copy the 32 x 16 slice of A and the 16 x 32 slice of B, two values each.
    for (int e = id; e < kTile * kSlice; e += kThreads * kThreads) {
      const int r = e / kSlice, k = e % kSlice;
      const int64_t m = m0 + r, kk = k0 + k;
      a_tile[r][k] = m < M && kk < K ? A[m * a_rs + kk * a_cs] : T(0);
      const int kb = e / kTile, c = e % kTile;
      const int64_t n = n0 + c, kb_ = k0 + kb;
      b_tile[kb][c] = n < N && kb_ < K ? B[kb_ * b_rs + n * b_cs] : T(0);
    }
    __syncthreads();
    for (int k = 0; k < kSlice; ++k) {
      const T a0 = a_tile[ty][k], a1 = a_tile[ty + kThreads][k];
      const T b0 = b_tile[k][tx], b1 = b_tile[k][tx + kThreads];
      acc[0][0] += a0 * b0;
      acc[0][1] += a0 * b1;
      acc[1][0] += a1 * b0;
      acc[1][1] += a1 * b1;
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      const int64_t m = m0 + ty + i * kThreads, n = n0 + tx + j * kThreads;
      if (m < M && n < N) {
        T* c = C + m * ldc + n;
        *c = accumulate ? *c + acc[i][j] : acc[i][j];
      }
    }
  }
}

// Grids are capped at 65535 blocks in y: larger products are cut into bands of rows.
constexpr int64_t kMaxBlocksY = 65535;

}  // namespace

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* B, int64_t b_rs,
          int64_t b_cs, T* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) {
      check(cudaMemset2D(C, ldc * sizeof(T), 0, N * sizeof(T), M), "cudaMemset2D (gemm with K = 0)");
    }
    return;
  }
  std::string why;
  if (cublas::route(M, N, K, a_rs, a_cs, b_rs, b_cs, ldc, &why)) {
    cublas::gemm<T>(cublas::form(M, N, K, a_rs, a_cs, b_rs, b_cs, ldc), A, B, C, accumulate);
    return;
  }
  const int64_t blocks_x = (N + kTile - 1) / kTile;
  for (int64_t m_first = 0; m_first < M; m_first += kMaxBlocksY * kTile) {
    const int64_t rows = std::min(M - m_first, kMaxBlocksY * kTile);
    const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>((rows + kTile - 1) / kTile));
    gemm_kernel<T><<<grid, dim3(kThreads, kThreads)>>>(rows, N, K, A + m_first * a_rs, a_rs, a_cs, B, b_rs, b_cs,
                                                       C + m_first * ldc, ldc, accumulate);
    check_launch("gemm_kernel launch");
  }
}

template void gemm<float>(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, int64_t,
                          float*, int64_t, bool);
template void gemm<double>(int64_t, int64_t, int64_t, const double*, int64_t, int64_t, const double*, int64_t,
                           int64_t, double*, int64_t, bool);

}  // namespace fusedrnn::cuda

// The CUDA backend's one matrix-product interface: C (M x N, row stride ldc) = A (M x K) B (K x N),
// or C += A B with `accumulate`, each operand addressed by element strides (a row stride and a
// column stride), so a transposed operand is only a swap of strides. All arrays on the device.
//
// Large products run in cuBLAS when it is loaded (cuda/cublas.h says when), the rest in fusedrnn's
// own shared-memory tiled kernel (gemm.cu): deterministic (every C element is one thread's sum in
// a fixed order), and it also runs in the CUDA emulator, which has no cuBLAS. Both use the legacy
// default stream, as every kernel of the backend does.
#pragma once

#include <cstdint>

namespace fusedrnn::cuda {

template <class T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t a_rs, int64_t a_cs, const T* B, int64_t b_rs,
          int64_t b_cs, T* C, int64_t ldc, bool accumulate);

}  // namespace fusedrnn::cuda

// The CUDA time-loop driver's shared parts: one driver for every cell (csrc/cells/*.h supply the
// pointwise math, the same headers the CPU backend runs), its forward loop in cuda/forward.cu
// and its backward loop in cuda/backward.cu.
//
// Each step phase is a device function of one (sequence b, unit or state dim) pair that computes
// the pair's recurrent dot products and applies the cell to them in the same thread (the
// product fused with the pointwise step). The drivers call the same functions:
//   stepwise:   one kernel per phase and step, a thread per pair over the whole batch;
//   warp:       the same with a warp per pair: its lanes split the dot products (reduced with
//               shuffles) and the first lane applies the cell (the *_given functions);
//   persistent: one kernel per loop, block b runs sequence b's every step, its threads striding
//               over the units, __syncthreads() between phases (no grid-wide barrier: sequences
//               never read each other's state), weights in shared memory when they fit.
// The state is double-buffered: step s reads buffer s&1 and writes the other.
//
// A kernel reads its step struct (arguments, schedule, buffers: ~300 bytes) from device memory
// (upload_step), not from its parameters: nvcc addresses a parameter block that large through a
// register, which the CUDA emulator used in tests cannot follow. The struct's methods are
// __forceinline__ so that each thread keeps only the fields it uses.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/buffer.h"
#include "cuda/layer.h"
#include "cuda/status.h"
#include "recurrence.h"
#include "schedule.h"

namespace fusedrnn::cuda {
namespace {

constexpr int kStepThreads = 128;  // threads per block of a one-dimensional kernel

// The stepwise form's products: a block of kTileSeqs x kTileCols threads, one per (sequence,
// unit or state dim) pair, steps through the dot products kTileK terms at a time, the block first
// copying that slice of the states and of the weights into shared memory, so that a weight is
// read once per block of sequences, not once per sequence.
constexpr int kTileSeqs = 8, kTileCols = 32, kTileK = 32;

inline unsigned blocks_for(int64_t n, int threads = kStepThreads) {
  return static_cast<unsigned>(std::max<int64_t>(1, (n + threads - 1) / threads));
}

// Threads of a persistent block: one per unit (or state dim) up to 1024, whole warps. (The
// persistent kernels are declared __launch_bounds__(1024), so that nvcc keeps their registers
// within what a block of 1024 threads may have.)
inline int persistent_threads(int64_t width) {
  return static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, (width + 31) / 32 * 32)));
}

// Shared memory of the persistent kernels, aligned for double.
__device__ inline unsigned char* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  return shared_bytes;
}

// Copies n values into shared memory with the whole block (the caller syncs).
template <class T>
__device__ void copy_to_shared(T* dst, const T* src, int64_t n) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

// The persistent kernels' weights in shared memory: copies `first` (n_first values) and, when
// given, `second` (n_second) one after the other, points both there and syncs the block.
template <class T>
__device__ void stage_in_shared(const T*& first, int64_t n_first, const T*& second, int64_t n_second) {
  T* shared = reinterpret_cast<T*>(dynamic_shared());
  copy_to_shared(shared, first, n_first);
  first = shared;
  if (second) {
    copy_to_shared(shared + n_first, second, n_second);
    second = shared + n_first;
  }
  __syncthreads();
}

// Launches a persistent kernel, kernel(step, in_shared), one block per sequence: its
// `weight_bytes` of recurrent weights go into dynamic shared memory when they fit
// (persistent_weights_fit; the kernel's limit is raised first above the default 48 KiB), else it
// reads them from global memory.
template <class Kernel, class Step>
void launch_persistent(Kernel kernel, const char* name, int64_t blocks, int threads, int64_t weight_bytes,
                       const Step* step) {
  const bool in_shared = persistent_weights_fit(weight_bytes);
  const size_t shared = in_shared ? static_cast<size_t>(weight_bytes) : 0;
  if (shared > 48 * 1024) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)),
          "cudaFuncSetAttribute (persistent kernel's shared memory)");
  }
  kernel<<<static_cast<unsigned>(blocks), threads, shared>>>(step, in_shared);
  check_launch(name);
}

// A device copy of a kernel's step struct, in the last workspace slot (one op runs at a time).
template <class Step>
const Step* upload_step(const Step& step) {
  auto* device = static_cast<Step*>(workspace_bytes(kWorkspaceSlots - 1, sizeof(Step)));
  check(cudaMemcpy(device, &step, sizeof(Step), cudaMemcpyHostToDevice), "cudaMemcpy (kernel arguments)");
  return device;
}

template <class T>
__global__ void copy_or_zero_kernel(T* dst, const T* src, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src ? src[i] : T(0);
}

// dst (n values) = src, or zeros without one.
template <class T>
void copy_or_zero(T* dst, const T* src, int64_t n) {
  if (n <= 0) return;
  copy_or_zero_kernel<T><<<blocks_for(n), kStepThreads>>>(dst, src, n);
  check_launch("copy_or_zero_kernel launch");
}

// dst[r, c] = src[r, c] * scale[r % B, c]: rows of states times a [B, cols] scale.
template <class T>
__global__ void scale_rows_kernel(T* dst, const T* src, const T* scale, int64_t rows, int64_t B, int64_t cols) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  dst[i] = src[i] * scale[(r % B) * cols + c];
}

template <class T>
void scale_rows(T* dst, const T* src, const T* scale, int64_t rows, int64_t B, int64_t cols) {
  if (rows * cols <= 0) return;
  scale_rows_kernel<T><<<blocks_for(rows * cols), kStepThreads>>>(dst, src, scale, rows, B, cols);
  check_launch("scale_rows_kernel launch");
}

// dst [cols, rows] = src [rows, cols] transposed.
template <class T>
__global__ void transpose_kernel(T* dst, const T* src, int64_t rows, int64_t cols) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  dst[c * rows + r] = src[i];
}

template <class T>
void transpose(T* dst, const T* src, int64_t rows, int64_t cols) {
  if (rows * cols <= 0) return;
  transpose_kernel<T><<<blocks_for(rows * cols), kStepThreads>>>(dst, src, rows, cols);
  check_launch("transpose_kernel launch");
}

// dst[c] = sum over r of src[r * ld + c]: one thread per column, rows in order, so the bias
// gradients are the same sums at every run (no atomics).
template <class T>
__global__ void column_sums_kernel(T* dst, const T* src, int64_t rows, int64_t cols, int64_t ld) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  T sum = T(0);
  for (int64_t r = 0; r < rows; ++r) sum += src[r * ld + c];
  dst[c] = sum;
}

template <class T>
void column_sums(T* dst, const T* src, int64_t rows, int64_t cols, int64_t ld) {
  if (cols <= 0) return;
  column_sums_kernel<T><<<blocks_for(cols), kStepThreads>>>(dst, src, rows, cols, ld);
  check_launch("column_sums_kernel launch");
}

template <class T>
void copy_device(T* dst, const T* src, int64_t n, const char* what) {
  if (n > 0) check(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice), what);
}

// pairs: (sequence, unit) pairs of a step.
inline Algorithm resolve(Algorithm algorithm, int64_t weight_bytes, int64_t pairs) {
  if (algorithm != Algorithm::kAuto) return algorithm;
  if (persistent_weights_fit(weight_bytes)) return Algorithm::kPersistent;
  return pairs < kWarpPairs ? Algorithm::kWarp : Algorithm::kStepwise;
}

// Every lane of a full warp gets the sum of the warp's 32 values of v.
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace
}  // namespace fusedrnn::cuda

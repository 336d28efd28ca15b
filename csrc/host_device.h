// Qualifiers for code shared by the CPU and the CUDA backend (the cells, the masking schedule).
//
// FUSEDRNN_HOST_DEVICE: runs on the host and, compiled by nvcc, on a GPU.
// FUSEDRNN_HD: the same, always inlined. The cells' pointwise functions are inlined on the CPU
// into functions built for different instruction sets (cpu/simd.h), so an out-of-line copy built
// for one set must never be shared with another.
#pragma once

#if defined(__CUDACC__)
#define FUSEDRNN_HOST_DEVICE __host__ __device__
#define FUSEDRNN_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define FUSEDRNN_HOST_DEVICE
#define FUSEDRNN_HD inline __attribute__((always_inline))
#else
#define FUSEDRNN_HOST_DEVICE
#define FUSEDRNN_HD inline
#endif

// The machine's measured float32 multiply-add peak: the yardstick the benchmarks quote their
// GFLOP/s against ("fraction of peak"), measured in the same process and run as the kernels.
#pragma once

#include <cstdint>

namespace fusedrnn::cpu {

// Runs `iterations` rounds of independent vector multiply-adds on each of `threads` threads
// (an OpenMP team), with the instruction set the kernels use now, and returns GFLOP/s.
double fma_peak_gflops(int threads, int64_t iterations);

}  // namespace fusedrnn::cpu

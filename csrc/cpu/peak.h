// The machine's measured float32 multiply-add peak and read bandwidth: the yardsticks the
// benchmarks quote their GFLOP/s and GB/s against ("fraction of peak", "of the bound"), measured
// in the same process and run as the kernels.
#pragma once

#include <cstdint>

namespace fusedrnn::cpu {

// Runs `iterations` rounds of independent vector multiply-adds on each of `threads` threads
// (an OpenMP team), with the instruction set the kernels use now, and returns GFLOP/s.
double fma_peak_gflops(int threads, int64_t iterations);

// The rate at which `threads` threads read `bytes` of float32 (each its own contiguous share, as
// each reads its slice of the weights in a recurrent step), best of `passes` passes after one
// untimed pass, in GB/s: L1, L2, L3 or memory bandwidth according to the size. The bound of a
// step that reads its weights once (a batch of a few rows). Throws std::bad_alloc if the buffer
// cannot be had.
double read_bandwidth_gbs(int threads, int64_t bytes, int passes);

// The time one thread takes to see a value another thread just wrote, in nanoseconds: half the
// time of a round trip between the two threads of a team of two, over `rounds` round trips. Where
// the process's CPUs are: on a shared virtual machine the same two CPUs answered in 30 ns at some
// moments and 160 ns at others, and at the second kind two threads busy at once (one call's team,
// or two independent calls) ran up to 1.6x slower. NaN when the team has one thread.
double cross_core_latency_ns(int64_t rounds);

}  // namespace fusedrnn::cpu

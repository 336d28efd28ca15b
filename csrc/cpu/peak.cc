#include "cpu/peak.h"

#include <chrono>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/simd.h"

namespace fusedrnn::cpu {
namespace {

// Twelve independent accumulator chains hide the multiply-add latency (4 cycles, 2 units) and
// with the two constants still fit in 16 registers.
constexpr int kChains = 12;

template <class V>
FUSEDRNN_INLINE float multiply_add_chains(int64_t iterations) {
  V acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = V(1.0f + 0.01f * j);
  const V scale(0.999999f), shift(1e-7f);
  for (int64_t i = 0; i < iterations; ++i) {
    for (int j = 0; j < kChains; ++j) acc[j] = acc[j] * scale + shift;
  }
  float sum = 0.0f;  // consumed, so the loop cannot be dropped
  for (int j = 0; j < kChains; ++j) sum += acc[j].v[0];
  return sum;
}

}  // namespace

double fma_peak_gflops(int threads, int64_t iterations) {
  const Isa isa = current_isa();
  volatile float sink = 0.0f;
  int lanes = 1;
  const auto start = std::chrono::steady_clock::now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
  {
    float result = 0.0f;
    run_for_isa(isa, [&](auto bytes) FUSEDRNN_INLINE_LAMBDA {
      using V = Vec<float, decltype(bytes)::value>;
      result = multiply_add_chains<V>(iterations);
      lanes = V::kLanes;
    });
    sink = sink + result;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
#ifdef _OPENMP
  const int team = threads;
#else
  const int team = 1;
#endif
  const double flops = 2.0 * kChains * lanes * static_cast<double>(iterations) * team;
  return flops / seconds / 1e9;
}

}  // namespace fusedrnn::cpu

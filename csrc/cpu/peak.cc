#include "cpu/peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <memory>
#include <new>
#include <thread>

#include "cpu/driver.h"  // thread_id, team_size, barrier, spin_pause
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

// Eight independent sums: the adds' latency stays hidden behind the loads, which are what is timed.
constexpr int kSums = 8;
// The unit a share is cut in: 64 floats, four 64-byte cache lines.
constexpr int64_t kBlockFloats = 64;
// A thread's share is read as this many streams at once, each a contiguous part of it, a block
// from each in turn, as a step's product reads several panels. One sequential stream per core
// keeps too few misses in flight: on a Zen 3 it read L3-sized shares at 26-35 GB/s a core, less
// than the recurrent steps themselves reach, so the roofline built on it was no bound. Four
// streams read them at 65-75 GB/s a core; eight were no faster.
constexpr int kStreams = 4;

template <class V>
FUSEDRNN_INLINE float sum_blocks(const float* p, int64_t blocks) {
  constexpr int64_t kVectors = kBlockFloats / V::kLanes;
  V sums[kSums];
  const int64_t per_stream = blocks / kStreams;
  for (int64_t b = 0; b < per_stream; ++b) {
    for (int s = 0; s < kStreams; ++s) {
      const float* block = p + (s * per_stream + b) * kBlockFloats;
      for (int64_t j = 0; j < kVectors; ++j) sums[(s * kVectors + j) % kSums] += V::load(block + j * V::kLanes);
    }
  }
  for (int64_t b = kStreams * per_stream; b < blocks; ++b) {  // the few blocks left over
    for (int64_t j = 0; j < kVectors; ++j) sums[j % kSums] += V::load(p + b * kBlockFloats + j * V::kLanes);
  }
  float total = 0.0f;
  for (int j = 0; j < kSums; ++j) total += sums[j].v[0];
  return total;
}

}  // namespace

double read_bandwidth_gbs(int threads, int64_t bytes, int passes) {
  const int64_t blocks = bytes / int64_t(kBlockFloats * sizeof(float));
  // Allocated here, outside the team (no exception may leave it), and first written by the thread
  // that reads each share, so that a share lives where its reader's caches and memory are.
  std::unique_ptr<float[]> buffer(new (std::nothrow) float[blocks * kBlockFloats]);
  if (!buffer) throw std::bad_alloc();
  const Isa isa = current_isa();
  // A pass reads the buffer `reads` times, at least 32 MiB in all, so that a small buffer's pass is
  // not timed as mostly the barriers around it (4 MiB, a 3 MiB buffer's pass took 30 us, and the
  // best of several passes still varied 2x).
  const int64_t buffer_bytes = blocks * kBlockFloats * static_cast<int64_t>(sizeof(float));
  const int64_t reads = std::max<int64_t>(1, (int64_t(32) << 20) / std::max<int64_t>(1, buffer_bytes));
  volatile float sink = 0.0f;
  double best = 0.0;
  std::chrono::steady_clock::time_point start;
  StepBarrier pass_edge(threads);
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
  {
    const int64_t tid = thread_id(), team = team_size();
    const int64_t first = blocks * tid / team, last = blocks * (tid + 1) / team;
    float* share = buffer.get() + first * kBlockFloats;
    std::fill(share, share + (last - first) * kBlockFloats, 1e-3f);
    float result = 0.0f;
    for (int pass = 0; pass <= passes; ++pass) {  // pass 0 brings the data in, untimed
      pass_edge.wait();
      if (tid == 0) start = std::chrono::steady_clock::now();
      run_for_isa(isa, [&](auto width) FUSEDRNN_INLINE_LAMBDA {
        for (int64_t r = 0; r < reads; ++r) result += sum_blocks<Vec<float, decltype(width)::value>>(share, last - first);
      });
      pass_edge.wait();
      if (tid == 0 && pass > 0) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        best = std::max(best, static_cast<double>(reads * buffer_bytes) / seconds / 1e9);
      }
    }
#ifdef _OPENMP
#pragma omp critical
#endif
    sink = sink + result;
  }
  return best;
}

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

double cross_core_latency_ns(int64_t rounds) {
  // Thread 0 writes 2r+1, thread 1 answers 2r+2. The counter has a cache line to itself.
  struct alignas(64) Line {
    std::atomic<int64_t> value{0};
  };
  Line line;
  double ns = std::numeric_limits<double>::quiet_NaN();
#ifdef _OPENMP
#pragma omp parallel num_threads(2)
#endif
  {
    const int tid = thread_id();
    // Spin with a pause, yielding the core now and then: the other thread may be waiting for this
    // CPU when the process has more threads than CPUs.
    const auto wait_for = [&](int64_t expected) {
      for (int64_t spins = 1; line.value.load(std::memory_order_acquire) != expected; ++spins) {
        if (spins % 4096 == 0) std::this_thread::yield();
        spin_pause();
      }
    };
    if (team_size() == 2) {
      for (int pass = 0; pass < 2; ++pass) {  // pass 0 brings the line and the code in, untimed
        const int64_t base = 2 * rounds * pass;
#ifdef _OPENMP
#pragma omp barrier
#endif
        const auto start = std::chrono::steady_clock::now();
        for (int64_t r = 0; r < rounds; ++r) {
          if (tid == 0) {
            line.value.store(base + 2 * r + 1, std::memory_order_release);
            wait_for(base + 2 * r + 2);
          } else {
            wait_for(base + 2 * r + 1);
            line.value.store(base + 2 * r + 2, std::memory_order_release);
          }
        }
        if (tid == 0 && pass == 1) {
          const std::chrono::duration<double, std::nano> elapsed = std::chrono::steady_clock::now() - start;
          ns = elapsed.count() / (2.0 * rounds);
        }
      }
    }
  }
  return ns;
}

}  // namespace fusedrnn::cpu

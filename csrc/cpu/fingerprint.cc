#include "cpu/fingerprint.h"

#include <algorithm>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fusedrnn::cpu {
namespace {

// Words per row: 64 independent chains, so the loop below vectorises at any register width
// (the multiply's latency is hidden by the chains) and the digest does not depend on that width.
constexpr int kLanes = 64;
constexpr int64_t kRowBytes = kLanes * 4;
// Blocks are digested independently (in parallel), then folded in order.
constexpr int64_t kBlockBytes = int64_t(256) << 10;

uint64_t mix(uint64_t z) {  // a 64-bit finaliser: every input bit affects every output bit
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Compiled for AVX2 as well, where the CPU has it: the baseline (SSE2) has no 32-bit vector
// multiply, and the loop ran at less than half the speed (in cache: 8.6 against 19.5 GB/s).
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx2", "default")))
#endif
uint64_t digest_block(const unsigned char* p, int64_t bytes) {
  uint32_t acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = 0x9E3779B9u * static_cast<uint32_t>(l + 1);
  int64_t i = 0;
  for (; i + kRowBytes <= bytes; i += kRowBytes) {
    uint32_t w[kLanes];
    std::memcpy(w, p + i, kRowBytes);
    for (int l = 0; l < kLanes; ++l) acc[l] = (acc[l] ^ w[l]) * 0x01000193u;  // odd: a bijection
  }
  uint64_t h = mix(static_cast<uint64_t>(bytes));
  for (int l = 0; l < kLanes; ++l) h = mix(h ^ acc[l]);
  for (; i < bytes; ++i) h = mix(h ^ p[i]);  // the last partial row, byte by byte
  return h;
}

}  // namespace

uint64_t fingerprint(const void* data, int64_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  const int64_t blocks = (bytes + kBlockBytes - 1) / kBlockBytes;
  std::vector<uint64_t> digests(blocks);
#ifdef _OPENMP
  const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), blocks));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
  for (int64_t b = 0; b < blocks; ++b) {
    digests[b] = digest_block(p + b * kBlockBytes, std::min(kBlockBytes, bytes - b * kBlockBytes));
  }
  uint64_t h = mix(static_cast<uint64_t>(blocks));
  for (const uint64_t d : digests) h = mix(h ^ d);
  return h;
}

}  // namespace fusedrnn::cpu

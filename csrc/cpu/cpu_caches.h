// What the CPU says about its data caches, and the block sizes derived from them.
//
// The kernels' blocking used to be constants measured on one machine. Caches differ: an AMD Zen 3
// core has 512 KiB of L2 and a 32 MiB L3 shared by 8 cores, a Zen 5 core 1 MiB, an Intel Ice Lake
// server core 1.25 MiB of L2 and 1.5 MiB of L3 per core, a Sapphire Rapids core 2 MiB. So the sizes
// are read at run time (sysfs, then sysconf, then conservative defaults) and every block size is
// a stated fraction of the cache it must fit (cpu/gemm.cc, cpu/forward.cc say which). Nothing here
// depends on the vendor: the vendor is only reported.
#pragma once

#include <cstdint>

namespace fusedrnn::cpu {

struct CacheSizes {
  int64_t l1d;        // bytes of L1 data cache per core
  int64_t l2;         // bytes of L2 per core
  int64_t l3;         // bytes of L3 per core (the shared L3 divided among the cores sharing it); 0 if none
  const char* source; // "sysfs", "sysconf", "default" or "override"
};

// The caches the kernels plan for: detected once, or the override (see set_cache_sizes).
const CacheSizes& cache_sizes();

// Replaces the detected sizes (tests force other CPUs' parameter choices with it); l1d, l2 <= 0
// restores the detected ones. Not meant to be called while a kernel runs.
void set_cache_sizes(int64_t l1d, int64_t l2, int64_t l3);

// "GenuineIntel", "AuthenticAMD", ... (cpuid), or "unknown" off x86.
const char* cpu_vendor();

}  // namespace fusedrnn::cpu

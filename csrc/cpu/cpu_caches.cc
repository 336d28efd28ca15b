// Cache-size detection (see cpu_caches.h).
#include "cpu/cpu_caches.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#if defined(__unix__)
#include <unistd.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace fusedrnn::cpu {
namespace {

// Sizes to plan for when the system will not say: small enough to fit every current x86-64 server
// core (so blocks are never too large), large enough not to waste much.
constexpr CacheSizes kDefaults{32 << 10, 512 << 10, 1 << 20, "default"};

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// "48K", "1024K", "32M" -> bytes; 0 when unreadable.
int64_t parse_size(const std::string& text) {
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (value <= 0 || end == text.c_str()) return 0;
  const char unit = *end;
  return value * (unit == 'K' ? 1024LL : unit == 'M' ? 1024LL * 1024 : unit == 'G' ? 1024LL * 1024 * 1024 : 1LL);
}

// How many CPUs a "0-7,16-23" list names.
int64_t count_cpus(const std::string& list) {
  int64_t count = 0;
  size_t pos = 0;
  while (pos < list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    const std::string part = list.substr(pos, comma - pos);
    const size_t dash = part.find('-');
    if (dash == std::string::npos) {
      if (!part.empty()) ++count;
    } else {
      count += std::atoll(part.c_str() + dash + 1) - std::atoll(part.c_str()) + 1;
    }
    pos = comma + 1;
  }
  return count;
}

bool from_sysfs(CacheSizes* out) {
  CacheSizes found{0, 0, 0, "sysfs"};
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    const std::string level = read_line(dir + "level"), type = read_line(dir + "type");
    if (level.empty()) break;
    if (type == "Instruction") continue;
    const int64_t size = parse_size(read_line(dir + "size"));
    const int64_t sharing = count_cpus(read_line(dir + "shared_cpu_list"));
    if (size <= 0) continue;
    // L1 and L2 are per core; a core's two hardware threads share them, and plan for a thread per core.
    if (level == "1") found.l1d = size;
    if (level == "2") found.l2 = size;
    if (level == "3") found.l3 = sharing > 0 ? size / sharing : size;
  }
  if (found.l1d <= 0 || found.l2 <= 0) return false;
  *out = found;
  return true;
}

bool from_sysconf(CacheSizes* out) {
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE), cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (l1 <= 0 || l2 <= 0) return false;
  *out = CacheSizes{l1, l2, l3 > 0 ? l3 / (cpus > 0 ? cpus : 1) : 0, "sysconf"};
  return true;
#else
  (void)out;
  return false;
#endif
}

CacheSizes detect() {
  CacheSizes sizes = kDefaults;
  if (!from_sysfs(&sizes) && !from_sysconf(&sizes)) sizes = kDefaults;
  return sizes;
}

CacheSizes& current() {
  static CacheSizes sizes = detect();
  return sizes;
}

}  // namespace

const CacheSizes& cache_sizes() { return current(); }

void set_cache_sizes(int64_t l1d, int64_t l2, int64_t l3) {
  if (l1d <= 0 || l2 <= 0) {
    current() = detect();
  } else {
    current() = CacheSizes{l1d, l2, l3 > 0 ? l3 : 0, "override"};
  }
}

const char* cpu_vendor() {
#if defined(__x86_64__) || defined(__i386__)
  static char vendor[13] = {};
  static const bool read = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    return true;
  }();
  return read ? vendor : "unknown";
#else
  return "unknown";
#endif
}

}  // namespace fusedrnn::cpu

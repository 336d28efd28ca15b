// The kept blocks of recycled_arrays.h.
#include "recycled_arrays.h"

#include <atomic>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

namespace fusedrnn::bind {
namespace {

struct Block {
  void* data;
  int64_t capacity;
};

void free_block(const Block& b) { ::operator delete(b.data, std::align_val_t(64)); }

struct Cache {
  std::mutex mutex;
  std::vector<Block> kept;  // oldest first
  int64_t kept_bytes = 0;
  int64_t limit = int64_t(1) << 30;  // 1 GiB: a few layers' steps of the largest benchmarked sizes
  int64_t hits = 0, misses = 0;
  // (Tests) a reused block is filled with NaN first: an output a kernel leaves partly unwritten shows.
  bool poison = false;

  // Frees the oldest kept blocks until they total at most `limit`. (With the mutex held.)
  void trim() {
    size_t dropped = 0;
    while (kept_bytes > limit && dropped < kept.size()) {
      kept_bytes -= kept[dropped].capacity;
      free_block(kept[dropped++]);
    }
    kept.erase(kept.begin(), kept.begin() + static_cast<std::ptrdiff_t>(dropped));
  }
};

// Never destroyed: arrays freed while the interpreter shuts down still give their blocks back.
Cache& cache() {
  static Cache* const c = new Cache;
  return *c;
}

// 1 MiB: below it glibc serves blocks from its heap, where they stay mapped anyway.
std::atomic<int64_t> min_bytes{int64_t(1) << 20};

void give_back(void* owner) {
  const Block block = *static_cast<Block*>(owner);
  delete static_cast<Block*>(owner);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.kept.push_back(block);
  c.kept_bytes += block.capacity;
  c.trim();
}

}  // namespace

py::capsule recycled_block(int64_t bytes, void** data) {
  Cache& c = cache();
  Block block{nullptr, 0};
  bool poison = false;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    // The smallest kept block that holds `bytes` without wasting more than as much again (a
    // PackedSequence's steps vary from batch to batch), the newest among equals.
    size_t best = c.kept.size();
    for (size_t i = 0; i < c.kept.size(); ++i) {
      const int64_t cap = c.kept[i].capacity;
      if (cap >= bytes && cap <= 2 * bytes && (best == c.kept.size() || cap <= c.kept[best].capacity)) best = i;
    }
    if (best < c.kept.size()) {
      block = c.kept[best];
      c.kept.erase(c.kept.begin() + static_cast<std::ptrdiff_t>(best));
      c.kept_bytes -= block.capacity;
      ++c.hits;
      poison = c.poison;
    } else {
      ++c.misses;
    }
  }
  if (!block.data) {
    block = {::operator new(static_cast<size_t>(bytes > 0 ? bytes : 1), std::align_val_t(64)), bytes};
  } else if (poison) {
    std::memset(block.data, 0xff, static_cast<size_t>(block.capacity));  // NaN in float32 and float64
  }
  *data = block.data;
  try {
    return py::capsule(new Block(block), give_back);
  } catch (...) {
    free_block(block);
    throw;
  }
}

int64_t array_cache_min_bytes() { return min_bytes; }

void def_array_cache(py::module_& m) {
  m.def(
      "set_array_cache",
      [](int64_t limit, int64_t min_size, bool poison) {
        if (limit < 0 || min_size < 0) {
          throw py::value_error("the array cache's limit and minimum size must be at least 0, got " +
                                std::to_string(limit) + " and " + std::to_string(min_size));
        }
        Cache& c = cache();
        std::lock_guard<std::mutex> lock(c.mutex);
        c.limit = limit;
        c.poison = poison;
        min_bytes = min_size;
        c.trim();
      },
      py::arg("limit"), py::arg("min_bytes") = int64_t(1) << 20, py::arg("poison") = false,
      "Keep at most `limit` bytes of freed output arrays' memory for the next ones of `min_bytes` or more "
      "(0 frees it all); poison: fill a reused block with NaN first (for tests).");
  m.def(
      "array_cache_info",
      [] {
        Cache& c = cache();
        std::lock_guard<std::mutex> lock(c.mutex);
        py::dict d;
        d["kept_bytes"] = c.kept_bytes, d["kept_blocks"] = c.kept.size(), d["limit"] = c.limit;
        d["min_bytes"] = min_bytes.load(), d["hits"] = c.hits, d["misses"] = c.misses, d["poison"] = c.poison;
        return d;
      },
      "The output arrays' cache: bytes and blocks kept, its settings, and arrays served from it (hits) or not.");
}

}  // namespace fusedrnn::bind

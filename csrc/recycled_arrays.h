// Memory for the big arrays the binding returns (y, the saved gates and states, dx), kept when
// an array is freed and handed to the next array of about its size.
//
// Why: a training step allocates the same large arrays at every call (an LSTM at T=100, B=64,
// H=1024 saves 157 MB) and frees them after its backward. glibc serves a block above its mmap
// threshold (adaptive, at most 32 MB) from fresh pages and unmaps it on free, so every call paid
// first-touch page faults on all of it: forward + backward of an LSTM or GRU at B=64, H=512
// took 1.02-1.28x as long as with that memory kept, varying from process to process (Zen 4,
// 2 threads). A block here keeps its pages: the next call of the same shapes touches no fresh
// memory.
//
// Bounded: the blocks kept while no array uses them total at most `limit` bytes (the oldest go
// first); arrays below `min_bytes` come from the ordinary allocator. _core.set_array_cache(0)
// frees every kept block.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

namespace fusedrnn::bind {

namespace py = pybind11;

// The memory of a new array of `bytes` (64-byte aligned, uninitialised) and the capsule that
// gives it back when the array is freed. Throws std::bad_alloc (MemoryError) when none is left.
py::capsule recycled_block(int64_t bytes, void** data);

// Arrays smaller than this bypass the cache.
int64_t array_cache_min_bytes();

// _core.set_array_cache and _core.array_cache_info, its settings and state for Python.
void def_array_cache(py::module_& m);

// A new C-contiguous array of `shape`, its memory from the cache when it is big enough.
template <class T>
py::array_t<T> new_array(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (const int64_t n : shape) count *= n;
  const std::vector<py::ssize_t> dims(shape.begin(), shape.end());
  const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
  if (bytes < array_cache_min_bytes()) return py::array_t<T>(dims);
  void* data = nullptr;
  py::capsule owner = recycled_block(bytes, &data);
  return py::array_t<T>(dims, static_cast<T*>(data), owner);
}

}  // namespace fusedrnn::bind

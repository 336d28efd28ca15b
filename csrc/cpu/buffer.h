// An uninitialised, cache-line-aligned scratch array. Kernels overwrite every element they read
// back, so paying for zero-filling (as std::vector would) is wasted memory traffic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

namespace fusedrnn::cpu {

template <class T>
class Buffer {
 public:
  explicit Buffer(int64_t count)
      : data_(count > 0 ? static_cast<T*>(::operator new[](static_cast<size_t>(count) * sizeof(T),
                                                           std::align_val_t(kAlign)))
                        : nullptr) {}
  ~Buffer() {
    if (data_) ::operator delete[](data_, std::align_val_t(kAlign));
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  T* get() const { return data_; }

 private:
  static constexpr size_t kAlign = 64;
  T* data_;
};

}  // namespace fusedrnn::cpu

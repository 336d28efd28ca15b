// Device memory: an owning buffer, and the workspaces of the ops. A workspace slot keeps the
// largest buffer it was asked for and hands it out again, so repeated calls with one shape
// allocate once; each device has its own slots; release_workspaces() gives the memory back. The ops hold workspace_lock() for
// the whole call: one op at a time uses the slots.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "cuda/status.h"

namespace fusedrnn::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { allocate(bytes); }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void allocate(size_t bytes) {
    reset();
    if (bytes == 0) return;
    check(cudaMalloc(&data_, bytes), "cudaMalloc");
    bytes_ = bytes;
  }
  void reset() {
    if (data_) cudaFree(data_);  // (at process exit the runtime may be gone: nothing to report)
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Slot `slot` (0 .. kWorkspaceSlots-1) with room for `count` values of T (null for 0).
constexpr int kWorkspaceSlots = 24;
void* workspace_bytes(int slot, size_t bytes);
template <class T>
T* workspace(int slot, int64_t count) {
  return static_cast<T*>(workspace_bytes(slot, static_cast<size_t>(count) * sizeof(T)));
}
std::mutex& workspace_lock();
void release_workspaces();

}  // namespace fusedrnn::cuda

// The workspace slots of cuda/buffer.h.
#include <map>

#include "cuda/buffer.h"

namespace fusedrnn::cuda {
namespace {

// The slots of each device, by device number.
std::map<int, DeviceBuffer*>& slots_per_device() {
  // Never destroyed: freeing device memory while the process exits, after the runtime has shut
  // down, would only fail.
  static auto* slots = new std::map<int, DeviceBuffer*>;
  return *slots;
}

// The current device's slots: a workspace is memory of the device its kernels run on.
DeviceBuffer* slots() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  DeviceBuffer*& buffers = slots_per_device()[device];
  if (!buffers) buffers = new DeviceBuffer[kWorkspaceSlots];
  return buffers;
}

}  // namespace

void* workspace_bytes(int slot, size_t bytes) {
  if (bytes == 0) return nullptr;
  DeviceBuffer& buffer = slots()[slot];
  if (buffer.bytes() < bytes) buffer.allocate(bytes);
  return buffer.data();
}

std::mutex& workspace_lock() {
  static std::mutex lock;
  return lock;
}

void release_workspaces() {
  for (auto& [device, buffers] : slots_per_device()) {
    for (int i = 0; i < kWorkspaceSlots; ++i) buffers[i].reset();
  }
}

}  // namespace fusedrnn::cuda

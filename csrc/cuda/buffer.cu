// The workspace slots of cuda/buffer.h.
#include "cuda/buffer.h"

namespace fusedrnn::cuda {
namespace {

DeviceBuffer* slots() {
  // Never destroyed: freeing device memory while the process exits, after the runtime has shut
  // down, would only fail.
  static DeviceBuffer* buffers = new DeviceBuffer[kWorkspaceSlots];
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
  for (int i = 0; i < kWorkspaceSlots; ++i) slots()[i].reset();
}

}  // namespace fusedrnn::cuda

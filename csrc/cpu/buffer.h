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

namespace fusedrnn::cpu {

// The slots of workspace(): a call's big arrays, then the packed weights of a call without a
// PackedWeights cache (kPackedSlots + its slot there: forward's, or backward's own matrices), then
// the copies of the time-major arrays of a call run in another order of its batch (cpu/batch_order.h),
// then the rows of a step's products copied apart (cpu/driver.h).
constexpr int kPackedSlots = 4;
constexpr int kBatchOrderSlots = kPackedSlots + 6;  // (PackedWeights::kSlotCount)
constexpr int kRowsApartSlot = kBatchOrderSlots + 4;
constexpr int kWorkspaceSlots = kRowsApartSlot + 1;

// A scratch array that stays with the calling thread between calls (slot by slot), grown when a
// call needs more. The big per-call workspaces (xp, the gate gradients: T*B*G*H values, 52 MB for
// an LSTM at T=100, B=64, H=512) would otherwise be mapped afresh by every call, and touching
// new pages cost a quarter of such a call's time here. The same holds for the packed weights of a
// call without a cache: 8 MB of them (an RNN at H=1024) took 3.7 ms of page faults, against 0.1 ms
// for the step itself. Each calling thread has its own, so calls from several Python threads at
// once never share one. Uninitialised, 64-byte aligned; null for count 0.
template <class T>
T* workspace(int slot, int64_t count) {
  constexpr int kSlots = kWorkspaceSlots;
  if (count <= 0) return nullptr;
  struct Slot {
    void* data = nullptr;
    int64_t bytes = 0;
    ~Slot() { ::operator delete[](data, std::align_val_t(64)); }
  };
  thread_local Slot slots[kSlots];
  Slot& s = slots[slot];
  const int64_t bytes = count * static_cast<int64_t>(sizeof(T));
  if (s.bytes < bytes) {
    ::operator delete[](s.data, std::align_val_t(64));
    s.data = nullptr;
    s.bytes = 0;
    s.data = ::operator new[](static_cast<size_t>(bytes), std::align_val_t(64));
    s.bytes = bytes;
  }
  return static_cast<T*>(s.data);
}

}  // namespace fusedrnn::cpu

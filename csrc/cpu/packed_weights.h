// Packed copies of one layer direction's weights, kept from one forward call to the next.
//
// Every forward packs W_hh (and W_ih, W_hr, a two-phase cell's W_hn) into the GEMM's panel
// layout before its first step. Over a long sequence that is noise; for a one-step call (a
// generation loop: T = 1, B = 1) it is most of the call, as packing reads and writes every weight
// once more than the step itself reads it. A PackedWeights given to forward keeps those packed
// copies: the first call packs into it, later calls find them ready and skip packing.
//
// The cache knows nothing of the weights' values: whoever owns it calls clear() whenever they may
// have changed (fusedrnn.functional.PackedWeights decides that from a version or a fingerprint).
// It does track everything else the packed copies depend on (the cell, the element type, the
// sizes, bfloat16 or not, and where the weights are: their addresses) and starts afresh when a
// call differs in any of those. The owner keeps the weight arrays alive while their copies are
// here, so that no other array can take their addresses meanwhile.
// The packed values do not depend on the thread count or the instruction set, so a cached copy
// gives bitwise the results a fresh one would.
//
// One forward at a time uses a cache (it holds the mutex for the call); a forward that finds it
// busy packs into its own buffers as if it had none.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <new>

namespace fusedrnn::cpu {

class PackedWeights {
 public:
  // The matrices a forward packs.
  enum Slot : int { kHh, kHhBf16, kHn, kHr, kIh, kIhBf16, kSlotCount };

  // What the packed copies depend on besides the weights' values.
  struct Layout {
    int cell = -1;
    int element_bytes = 0;
    int64_t H = 0, P = 0, I = 0;
    bool bf16 = false;
    const void* w_ih = nullptr;
    const void* w_hh = nullptr;
    const void* w_hr = nullptr;
    bool operator==(const Layout& o) const {
      return cell == o.cell && element_bytes == o.element_bytes && H == o.H && P == o.P && I == o.I &&
             bf16 == o.bf16 && w_ih == o.w_ih && w_hh == o.w_hh && w_hr == o.w_hr;
    }
  };

  std::mutex& mutex() { return mutex_; }

  // Forgets every packed matrix and frees its memory (the weights changed). Takes the mutex.
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    clear_locked();
  }

  // The following are for the forward holding the mutex.

  // Clears the cache when `layout` differs from the one its matrices were packed for; counts a
  // hit (the copies are current) or a miss (this call packs).
  void use_layout(const Layout& layout) {
    if (layout == layout_) {
      ++hits_;
      return;
    }
    ++misses_;
    clear_locked();
    layout_ = layout;
  }

  // Storage for `count` elements of E in `slot` (64-byte aligned), allocated on first use.
  template <class E>
  E* storage(Slot slot, int64_t count) {
    Entry& e = entries_[slot];
    const int64_t bytes = count * static_cast<int64_t>(sizeof(E));
    if (bytes <= 0) return nullptr;
    if (e.bytes != bytes) {
      e.data.reset(::operator new(static_cast<size_t>(bytes), std::align_val_t(64)));
      e.bytes = bytes;
      e.ready = false;
    }
    return static_cast<E*>(e.data.get());
  }
  bool ready(Slot slot) const { return entries_[slot].ready; }
  void set_ready(Slot slot) {
    entries_[slot].ready = true;
    ++packs_;
  }

  // Bytes held, and how many matrices were packed into the cache since it was made (a call that
  // finds its matrices ready adds nothing: the tests' evidence of a hit).
  int64_t bytes() const {
    int64_t total = 0;
    for (const Entry& e : entries_) total += e.bytes;
    return total;
  }
  int64_t packs() const { return packs_; }
  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }

 private:
  struct AlignedFree {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  struct Entry {
    std::unique_ptr<void, AlignedFree> data;
    int64_t bytes = 0;
    bool ready = false;
  };

  void clear_locked() {
    for (Entry& e : entries_) {
      e.data.reset();
      e.bytes = 0;
      e.ready = false;
    }
    layout_ = Layout{};
  }

  std::mutex mutex_;
  Layout layout_;
  Entry entries_[kSlotCount];
  int64_t packs_ = 0, hits_ = 0, misses_ = 0;
};

}  // namespace fusedrnn::cpu

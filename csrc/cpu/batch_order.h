// Running a batch whose sequences take their steps in an order other than the batch's: lengths
// in any order, or Keras's masks of padded sequences. The kernels leave a step's finished (or not
// yet started) sequences out of its products only when the running ones come first
// (schedule.h's active_prefix_rows), as they do in a PackedSequence's order. Otherwise the entry
// points (forward.cc, backward.cc) copy the batch's rows into the order running_first_order finds,
// run the kernels on the copies and put the results' rows back.
//
// The saved values and states of a training forward stay in the kernels' order: the backward
// finds the same order from the same lengths or mask, and copies its own arguments into it.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <utility>
#include <vector>

#include "cpu/buffer.h"
#include "cpu/driver.h"
#include "schedule.h"

namespace fusedrnn::cpu {
namespace {

// running_first_order(a), when running the sequences in it saves more than the copies cost; else
// empty. Each (step, sequence) pair left out saves G*H multiply-adds for each of its row's I + P
// inputs (the input and recurrent products; the backward's products save twice that), and the
// copies move every row's input and output, I + P values a step (the backward's x, dy and dx);
// kCopyCost says what a value copied costs in multiply-adds. (So a batch with little padding is
// not even sorted.) Forward and backward decide alike, on the same arguments, so the backward
// reads the saved values in the order they were written.
template <class Args>
std::vector<int64_t> batch_order_worth_running(const Args& a, int gates) {
  if (!a.lengths && !a.mask) return {};
  const std::vector<int64_t> steps = steps_taken(a);
  const int64_t left_out = a.T_ * a.B - std::accumulate(steps.begin(), steps.end(), int64_t(0));
  if (left_out * gates * a.H <= kCopyCost * a.T_ * a.B) return {};
  return running_first_order(a, steps);
}

// Copies of the arguments of one call with the batch in the kernels' order. An array of `blocks`
// blocks of B rows (a time-major [T, B, width] array, or one [B, width] block) has each block's
// rows reordered: in(src) returns a copy, row i = the caller's row order[i]; out(dst) returns
// scratch that finish() copies to dst, row i to the caller's row order[i]. Null stays null.
// The time-major copies live in the calling thread's workspace (cpu/buffer.h says why), and the
// team makes them: an RNN layer's x and y (T=100, B=64, H=512, 2 threads) copied by one thread
// into fresh memory added 2-5 ms to its 45 ms forward, this way 1-2 ms.
class BatchOrder {
 public:
  explicit BatchOrder(std::vector<int64_t> order) : order_(std::move(order)) {}

  template <class E>
  const E* in(const E* src, int64_t blocks, int64_t width) {
    if (!src) return nullptr;
    auto* copy = scratch(blocks, width * sizeof(E));
    move_rows(reinterpret_cast<const unsigned char*>(src), copy, blocks, width * sizeof(E), true);
    return reinterpret_cast<const E*>(copy);
  }

  template <class E>
  E* out(E* dst, int64_t blocks, int64_t width) {
    if (!dst) return nullptr;
    auto* results = scratch(blocks, width * sizeof(E));
    outputs_.push_back({reinterpret_cast<unsigned char*>(dst), results, blocks, int64_t(width * sizeof(E))});
    return reinterpret_cast<E*>(results);
  }

  // The arguments that forward and backward both take: x, the recurrent scale, lengths, mask.
  template <class Args>
  void inputs_of_both(Args& a) {
    a.x = in(a.x, a.T_, a.I);
    a.recurrent_scale = in(a.recurrent_scale, 1, a.P);
    a.lengths = in(a.lengths, 1, 1);
    a.mask = in(a.mask, a.T_, 1);
  }

  void finish() {
    for (const Output& o : outputs_) move_rows(o.results, o.dst, o.blocks, o.row_bytes, false);
  }

 private:
  struct Output {
    unsigned char* dst;
    const unsigned char* results;
    int64_t blocks, row_bytes;
  };

  // Room for `blocks` blocks of B rows of `row_bytes`.
  unsigned char* scratch(int64_t blocks, int64_t row_bytes) {
    const int64_t bytes = blocks * static_cast<int64_t>(order_.size()) * row_bytes;
    if (blocks > 1 && next_slot_ < kWorkspaceSlots) return workspace<unsigned char>(next_slot_++, bytes);
    buffers_.push_back(std::make_unique<Buffer<unsigned char>>(bytes));
    return buffers_.back()->get();
  }

  // Into the kernels' order (row i from the caller's order[i]), or back out of it.
  void move_rows(const unsigned char* src, unsigned char* dst, int64_t blocks, int64_t row_bytes, bool into) const {
    const int64_t B = static_cast<int64_t>(order_.size());
    const bool large = blocks * B * row_bytes >= kTeamCopyBytes;
#ifdef _OPENMP
#pragma omp parallel for if (large) schedule(static)
#endif
    for (int64_t k = 0; k < blocks; ++k) {
      for (int64_t i = 0; i < B; ++i) {
        const int64_t theirs = (k * B + order_[i]) * row_bytes, ours = (k * B + i) * row_bytes;
        std::memcpy(dst + (into ? ours : theirs), src + (into ? theirs : ours), row_bytes);
      }
    }
  }

  // Below this, starting a team costs more than it saves (a few microseconds).
  static constexpr int64_t kTeamCopyBytes = int64_t(1) << 18;

  std::vector<int64_t> order_;
  std::vector<std::unique_ptr<Buffer<unsigned char>>> buffers_;
  std::vector<Output> outputs_;
  int next_slot_ = kBatchOrderSlots;
};

}  // namespace
}  // namespace fusedrnn::cpu

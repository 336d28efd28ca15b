// The masking schedule of one layer in one direction: which (time row, sequence) pairs take a
// step, in the order the loop visits the rows, and which saved-state slot each reads and writes.
// Shared by every backend; the methods run on the host and, under nvcc, on a GPU, so the schedule
// holds only pointers: arrays it reads belong to the caller.
//
// Steps and rows: loop step s visits time row t = s, or t = T-1-s in reverse. A (row, sequence)
// pair that is masked out (lengths, or a mask) carries the state unchanged; its output is zero,
// or (Keras) repeats the last output. With lengths, reversing the whole time axis this way is the
// same as starting each sequence at its own last step (the rows before it only carry h0).
// Saved states: row t reads slot t + reverse of saved_h and writes slot t + !reverse, so a
// masked row writes the carried state into its slot and every row's input is in place.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "host_device.h"

namespace fusedrnn {

class Schedule {
 public:
  // args: a ForwardArgs or BackwardArgs (recurrence.h). first_step: with repeat_masked_output,
  // the B values of first_active_steps(args) (else unread, may be null); kept by the caller for
  // as long as the schedule is used.
  template <class Args>
  FUSEDRNN_HOST_DEVICE Schedule(const Args& a, const int64_t* first_step)
      : T_(a.T_), B_(a.B), reverse_(a.reverse), lengths_(a.lengths), mask_(a.mask),
        repeat_output_(a.repeat_masked_output), first_step_(first_step) {}

  FUSEDRNN_HOST_DEVICE int64_t row(int64_t s) const { return reverse_ ? T_ - 1 - s : s; }
  FUSEDRNN_HOST_DEVICE bool active(int64_t t, int64_t b) const {
    return mask_ ? mask_[t * B_ + b] != 0 : !lengths_ || t < lengths_[b];
  }
  // Whether a masked step's output repeats the state (else it is zero).
  FUSEDRNN_HOST_DEVICE bool repeats_output(int64_t s, int64_t b) const {
    return repeat_output_ && s > first_step_[b];
  }
  FUSEDRNN_HOST_DEVICE int64_t prev_slot(int64_t t) const { return t + (reverse_ ? 1 : 0); }
  FUSEDRNN_HOST_DEVICE int64_t new_slot(int64_t t) const { return t + (reverse_ ? 0 : 1); }
  FUSEDRNN_HOST_DEVICE int64_t initial_slot() const { return reverse_ ? T_ : 0; }

 private:
  int64_t T_, B_;
  bool reverse_;
  const int64_t* lengths_;
  const uint8_t* mask_;
  bool repeat_output_;
  const int64_t* first_step_;  // [B] or null
};

// Keras repeats the last *output* at a masked step, and that is zero until a first step: for
// repeat_masked_output, the loop step at which each sequence is first active (T if never), B
// values; empty without it.
template <class Args>
std::vector<int64_t> first_active_steps(const Args& a) {
  std::vector<int64_t> first_step(a.repeat_masked_output ? a.B : 0, a.T_);
  const Schedule sch(a, nullptr);
  for (int64_t s = a.T_ - 1; s >= 0 && a.repeat_masked_output; --s) {
    for (int64_t b = 0; b < a.B; ++b) {
      if (sch.active(sch.row(s), b)) first_step[b] = s;
    }
  }
  return first_step;
}

// For each time row, how many leading sequences take a step there when exactly those do
// (b < n active, b >= n masked), else B. Sequences sorted by length, longest first (a
// PackedSequence's order), give such prefixes in both directions, so a step's recurrent products
// can leave out the rows of sequences that are done (or, in reverse, not yet started): their
// results are never read.
template <class Args>
std::vector<int64_t> active_prefix_rows(const Args& a) {
  std::vector<int64_t> rows(a.T_, a.B);
  if (!a.lengths && !a.mask) return rows;
  const Schedule sch(a, nullptr);
  for (int64_t t = 0; t < a.T_; ++t) {
    int64_t n = 0;
    while (n < a.B && sch.active(t, n)) ++n;
    bool prefix = true;
    for (int64_t b = n + 1; b < a.B && prefix; ++b) prefix = !sch.active(t, b);
    if (prefix) rows[t] = n;
  }
  return rows;
}

// How many steps each sequence takes (B values).
template <class Args>
std::vector<int64_t> steps_taken(const Args& a) {
  std::vector<int64_t> steps(a.B, a.T_);
  if (!a.lengths && !a.mask) return steps;
  const Schedule sch(a, nullptr);
  for (int64_t b = 0; b < a.B; ++b) {
    steps[b] = 0;
    for (int64_t t = 0; t < a.T_; ++t) steps[b] += sch.active(t, b);
  }
  return steps;
}

// An order of the sequences that makes every time row's active ones a prefix (what
// active_prefix_rows looks for): order[i] is the sequence to run as row i. Exists when the rows'
// sets of active sequences are nested, as they are for lengths in any order and for the masks of
// padded sequences (Keras's, padding at either end); then the sequences with the most steps
// (`steps`: steps_taken) first, ties in their order, is one. Empty when the batch is in such an
// order already or none exists.
template <class Args>
std::vector<int64_t> running_first_order(const Args& a, const std::vector<int64_t>& steps) {
  std::vector<int64_t> order(a.B);
  for (int64_t i = 0; i < a.B; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) { return steps[p] > steps[q]; });
  bool moved = false;
  for (int64_t i = 0; i < a.B; ++i) moved |= order[i] != i;
  if (!moved) return {};
  const Schedule sch(a, nullptr);
  for (int64_t t = 0; t < a.T_; ++t) {
    for (int64_t i = 1; i < a.B; ++i) {
      if (sch.active(t, order[i]) && !sch.active(t, order[i - 1])) return {};
    }
  }
  return order;
}

}  // namespace fusedrnn

// Vanilla RNN cell (Elman), one hidden unit of one sequence.
//
//   a  = W_ih x + b_ih + W_hh h + b_hh          (xg + hg, one gate)
//   h' = act(a),  act = tanh or relu
//
// Backward, from h' alone (nothing else is saved):
//   tanh: da = dh' * (1 - h'^2)      relu: da = dh' * [h' > 0]
//   dgx = dgh = da;  the previous state gets nothing except through W_hh.
#pragma once

#include "cells/common.h"

namespace fusedrnn {

enum class Activation { kTanh, kRelu };

template <Activation kAct>
struct RnnCell {
  static constexpr const char* kName = kAct == Activation::kTanh ? "rnn_tanh" : "rnn_relu";
  static constexpr int kGates = 1;
  static constexpr int kSaved = 0;
  static constexpr bool kHasCell = false;
  static constexpr bool kSplitGradient = false;
  static constexpr bool kTwoPhase = false;
  static constexpr int kActivated = 0;  // (one activation: nothing to overlap it with)

  template <class T>
  FUSEDRNN_HD static void activate(const T* /*xg*/, const T* /*hg*/, T* /*act*/) {}

  template <class T>
  FUSEDRNN_HD static void update(const T* xg, const T* hg, const T* /*act*/, const State<T>& /*prev*/,
                                 State<T>& next, T* /*saved*/) {
    const T a = xg[0] + hg[0];
    if constexpr (kAct == Activation::kTanh) {
      next.h = tanh_(a);
    } else {
      next.h = relu(a);
    }
  }

  template <class T>
  FUSEDRNN_HD static void forward(const T* xg, const T* hg, const State<T>& prev, State<T>& next,
                                  T* saved) {
    forward_in_two_stages<RnnCell>(xg, hg, prev, next, saved);
  }

  template <class T>
  FUSEDRNN_HD static void backward(const T* /*saved*/, const State<T>& /*prev*/,
                                   const State<T>& next, const State<T>& d_next, T* dgx, T* dgh,
                                   State<T>& d_prev) {
    T da;
    if constexpr (kAct == Activation::kTanh) {
      da = d_next.h * (T(1) - next.h * next.h);
    } else {
      da = relu_backward(next.h, d_next.h);
    }
    dgx[0] = da;
    dgh[0] = da;
    d_prev.h = T(0);
  }
};

}  // namespace fusedrnn

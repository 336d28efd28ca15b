// LSTM cell, one hidden unit of one sequence. Gate order i, f, g, o (PyTorch's).
//
//   a_k = (W_ih x + b_ih)_k + (W_hh h + b_hh)_k          k in {i, f, g, o}
//   i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
//   c' = f * c + i * g
//   h' = o * tanh(c')
//
// Saved for backward: i, f, g, o (post-activation). c and c' come from the saved cell states.
//
// Backward, given dh' and dc' (the gradient reaching c' from the next step):
//   dc  = dc' + dh' * o * (1 - tanh(c')^2)
//   da_i = dc * g * i (1 - i)      da_f = dc * c * f (1 - f)
//   da_g = dc * i * (1 - g^2)      da_o = dh' * tanh(c') * o (1 - o)
//   dgx = dgh = da;   previous state: dc_prev = dc * f, dh_prev only through W_hh.
#pragma once

#include "cells/common.h"

namespace fusedrnn {

struct LstmCell {
  static constexpr const char* kName = "lstm";
  static constexpr int kGates = 4;
  static constexpr int kSaved = 4;
  static constexpr bool kHasCell = true;
  static constexpr bool kSplitGradient = false;
  static constexpr bool kTwoPhase = false;
  static constexpr int kActivated = 4;

  template <class T>
  FUSEDRNN_HD static void activate(const T* xg, const T* hg, T* act) {
    act[0] = sigmoid(xg[0] + hg[0]);
    act[1] = sigmoid(xg[1] + hg[1]);
    act[2] = tanh_(xg[2] + hg[2]);
    act[3] = sigmoid(xg[3] + hg[3]);
  }

  template <class T>
  FUSEDRNN_HD static void update(const T* /*xg*/, const T* /*hg*/, const T* act, const State<T>& prev,
                                 State<T>& next, T* saved) {
    const T i = act[0], f = act[1], g = act[2], o = act[3];
    next.c = f * prev.c + i * g;
    next.h = o * tanh_(next.c);
    saved[0] = i;
    saved[1] = f;
    saved[2] = g;
    saved[3] = o;
  }

  template <class T>
  FUSEDRNN_HD static void forward(const T* xg, const T* hg, const State<T>& prev, State<T>& next,
                                  T* saved) {
    forward_in_two_stages<LstmCell>(xg, hg, prev, next, saved);
  }

  template <class T>
  FUSEDRNN_HD static void backward(const T* saved, const State<T>& prev, const State<T>& next,
                                   const State<T>& d_next, T* dgx, T* dgh, State<T>& d_prev) {
    const T i = saved[0], f = saved[1], g = saved[2], o = saved[3];
    const T tc = tanh_(next.c);
    const T dc = d_next.c + d_next.h * o * (T(1) - tc * tc);
    dgx[0] = dc * g * i * (T(1) - i);
    dgx[1] = dc * prev.c * f * (T(1) - f);
    dgx[2] = dc * i * (T(1) - g * g);
    dgx[3] = d_next.h * tc * o * (T(1) - o);
    for (int k = 0; k < kGates; ++k) dgh[k] = dgx[k];
    d_prev.h = T(0);
    d_prev.c = dc * f;
  }
};

}  // namespace fusedrnn

// GRU cell, linear-before-reset form (PyTorch's and cuDNN's), one hidden unit of one sequence.
// Gate order r, z, n.
//
//   x_k = (W_ih x + b_ih)_k     h_k = (W_hh h + b_hh)_k      k in {r, z, n}
//   r  = sigmoid(x_r + h_r)     z = sigmoid(x_z + h_z)
//   n  = tanh(x_n + r * h_n)
//   h' = (1 - z) * n + z * h
//
// Saved for backward: r, z, n and h_n (the reset gate scales it, so its gradient needs it).
//
// Backward, given dh':
//   da_n = dh' * (1 - z) * (1 - n^2)
//   da_z = dh' * (h - n) * z (1 - z)
//   da_r = da_n * h_n * r (1 - r)
//   dgx = (da_r, da_z, da_n);   dgh = (da_r, da_z, da_n * r)   (hence kSplitGradient)
//   previous state: dh_prev = dh' * z besides what flows through W_hh.
#pragma once

#include "cells/common.h"

namespace fusedrnn {

struct GruCell {
  static constexpr const char* kName = "gru";
  static constexpr int kGates = 3;
  static constexpr int kSaved = 4;
  static constexpr bool kHasCell = false;
  static constexpr bool kSplitGradient = true;
  static constexpr bool kTwoPhase = false;
  static constexpr int kActivated = 2;  // r, z

  template <class T>
  FUSEDRNN_HD static void activate(const T* xg, const T* hg, T* act) {
    act[0] = sigmoid(xg[0] + hg[0]);
    act[1] = sigmoid(xg[1] + hg[1]);
  }

  template <class T>
  FUSEDRNN_HD static void update(const T* xg, const T* hg, const T* act, const State<T>& prev, State<T>& next,
                                 T* saved) {
    const T r = act[0], z = act[1];
    const T n = tanh_(xg[2] + r * hg[2]);
    next.h = (T(1) - z) * n + z * prev.h;
    saved[0] = r;
    saved[1] = z;
    saved[2] = n;
    saved[3] = hg[2];
  }

  template <class T>
  FUSEDRNN_HD static void forward(const T* xg, const T* hg, const State<T>& prev, State<T>& next,
                                  T* saved) {
    forward_in_two_stages<GruCell>(xg, hg, prev, next, saved);
  }

  template <class T>
  FUSEDRNN_HD static void backward(const T* saved, const State<T>& prev, const State<T>& /*next*/,
                                   const State<T>& d_next, T* dgx, T* dgh, State<T>& d_prev) {
    const T r = saved[0], z = saved[1], n = saved[2], h_n = saved[3];
    const T dh = d_next.h;
    const T da_n = dh * (T(1) - z) * (T(1) - n * n);
    const T da_z = dh * (prev.h - n) * z * (T(1) - z);
    const T da_r = da_n * h_n * r * (T(1) - r);
    dgx[0] = da_r;
    dgx[1] = da_z;
    dgx[2] = da_n;
    dgh[0] = da_r;
    dgh[1] = da_z;
    dgh[2] = da_n * r;
    d_prev.h = dh * z;
  }
};

}  // namespace fusedrnn

namespace fusedrnn {

// GRU cell, reset-before-product form (Keras's reset_after=False, the original GRU paper's),
// one hidden unit of one sequence. Gate order r, z, n; weights laid out as for GruCell.
//
//   r  = sigmoid(x_r + h_r)     z = sigmoid(x_z + h_z)          h_k = (W_hh h + b_hh)_k, k in {r, z}
//   n  = tanh(x_n + W_hn (r * h) + b_hn)
//   h' = (1 - z) * n + z * h
//
// The reset gate scales h BEFORE the n gate's product, so a step has two phases (kTwoPhase):
// reset() gives r, z and r*h from the r, z pre-activations; once every unit's r*h is known the
// driver computes hn = W_hn (r*h) + b_hn and output() finishes the step.
// Saved for backward: r, z, n and r*h (the input of W_hn, for its weight gradient).
//
// Backward, given dh' (output_backward, then, once every unit's da_n is known,
// reset_backward with d_rh = (W_hn^T da_n) of this unit):
//   da_n = dh' * (1 - z) * (1 - n^2)       da_z = dh' * (h - n) * z (1 - z)
//   da_r = d_rh * h * r (1 - r)
//   dh_prev = dh' * z + d_rh * r   besides what flows through W_hr, W_hz
struct GruResetBeforeCell {
  static constexpr const char* kName = "gru_reset_before";
  static constexpr int kGates = 3;
  static constexpr int kSaved = 4;
  static constexpr bool kHasCell = false;
  static constexpr bool kSplitGradient = false;
  static constexpr bool kTwoPhase = true;
  static constexpr int kActivated = 0;  // (no activate(): its stages are reset() and output())

  template <class T>
  FUSEDRNN_HD static void reset(const T* xg, const T* hg, const State<T>& prev, T* rz, T& rh) {
    rz[0] = sigmoid(xg[0] + hg[0]);
    rz[1] = sigmoid(xg[1] + hg[1]);
    rh = rz[0] * prev.h;
  }

  template <class T>
  FUSEDRNN_HD static void output(const T& x_n, const T& hn, const T* rz, const T& rh,
                                 const State<T>& prev, State<T>& next, T* saved) {
    const T n = tanh_(x_n + hn);
    next.h = (T(1) - rz[1]) * n + rz[1] * prev.h;
    saved[0] = rz[0];
    saved[1] = rz[1];
    saved[2] = n;
    saved[3] = rh;
  }

  template <class T>
  FUSEDRNN_HD static void output_backward(const T* saved, const State<T>& prev, const State<T>& d_next,
                                          T* dg, State<T>& d_prev) {
    const T z = saved[1], n = saved[2];
    const T dh = d_next.h;
    dg[1] = dh * (prev.h - n) * z * (T(1) - z);
    dg[2] = dh * (T(1) - z) * (T(1) - n * n);
    d_prev.h = dh * z;
  }

  template <class T>
  FUSEDRNN_HD static void reset_backward(const T* saved, const State<T>& prev, const T& d_rh, T* dg,
                                         State<T>& d_prev) {
    const T r = saved[0];
    dg[0] = d_rh * prev.h * r * (T(1) - r);
    d_prev.h += d_rh * r;
  }
};

}  // namespace fusedrnn

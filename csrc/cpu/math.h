// exp, sigmoid, tanh and relu on Vec<T, kBytes> (cpu/simd.h), for the cells' pointwise math.
//
// float:  branch-free polynomial and rational versions, computed on all lanes at once (measured
//         worst errors: tests/test_math.py).
// double: the C library's functions lane by lane. float64 exists for gradient checks, where
//         accuracy is the point and speed is not.
//
// A NaN input gives a NaN output (the clamps and selects are comparisons that keep NaN), never a crash.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/simd.h"

namespace fusedrnn::cpu {
namespace {

template <int kBytes>
using Floats = Vec<float, kBytes>;
template <int kBytes>
using Doubles = Vec<double, kBytes>;

// Casts between vector types of one size reinterpret the bits (the extension's rule).
template <int kBytes>
struct FloatBits {
  typedef int32_t Ints __attribute__((vector_size(kBytes)));
  static FUSEDRNN_INLINE Ints of(Floats<kBytes> x) { return (Ints)x.v; }
  static FUSEDRNN_INLINE Floats<kBytes> as_floats(Ints bits) {
    return Floats<kBytes>::wrap((typename Floats<kBytes>::Native)bits);
  }
};

// e^x: x = k*ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial, 2^k built in the exponent
// bits. x is clamped to [-87, 88] so that 2^k stays a normal float (e^-87 ~ 1.6e-38 and
// e^88 ~ 1.7e38 are as far as float goes anyway); the clamps are comparisons that keep NaN.
// k = round(x/ln2) without a float-to-int conversion: adding 1.5 * 2^23 leaves k in the low
// bits of the sum's mantissa (the rounding of that addition is the rounding to an integer),
// and shifting those bits left by 23 puts k in an exponent field. A NaN makes r, and so the
// result, NaN whatever bits k gets.
template <int kBytes>
FUSEDRNN_INLINE Floats<kBytes> exp_(Floats<kBytes> x) {
  using F = Floats<kBytes>;
  using Bits = FloatBits<kBytes>;
  x = select_less(x, F(-87.0f), F(-87.0f), x);
  x = select_greater(x, F(88.0f), F(88.0f), x);
  const F magic(12582912.0f);  // 1.5 * 2^23
  const F shifted = x * F(1.44269504088896341f) + magic;
  const F kf = shifted - magic;
  // ln2 split in a part exact in float and the rest, so r = x - k*ln2 loses no bits.
  const F r = (x - kf * F(0.693359375f)) - kf * F(-2.12194440e-4f);
  // e^r = 1 + r + r^2 p(r), p of degree 5 in Estrin's form: three independent pairs, then r^2
  // and r^4, so the chain of dependent operations is half as long as in Horner's (the pointwise
  // steps wait on it: each gate's exp, then tanh(c')).
  const F r2 = r * r;
  const F p01 = F(1.6666665459e-1f) * r + F(5.0000001201e-1f);
  const F p23 = F(8.3334519073e-3f) * r + F(4.1665795894e-2f);
  const F p45 = F(1.9875691500e-4f) * r + F(1.3981999507e-3f);
  const F p = p45 * (r2 * r2) + (p23 * r2 + p01);
  const F er = p * r2 + (r + F(1.0f));
  return er * Bits::as_floats((Bits::of(shifted) << 23) + (127 << 23));
}

template <int kBytes>
FUSEDRNN_INLINE Floats<kBytes> sigmoid(Floats<kBytes> x) {
  using F = Floats<kBytes>;
  return F(1.0f) / (F(1.0f) + exp_(-x));
}

// tanh(x) = x P(x^2) / Q(x^2), P of degree 5 and Q of degree 4, on |x| <= 9.02; beyond, +-1 (the
// exact tanh rounds to +-1 in float from 9.011 on). The coefficients were fitted in float64 for
// the least maximum relative error on [0, 9.02] (1.3e-9: the float roundings of the evaluation
// are what is left; over every float, worst 2.42 x 2^-23 relative with FMA, 3.22 without).
// Why not 1 - 2/(e^2x + 1) with a polynomial near zero, as before (1.22 x 2^-23): both branches
// were computed and one selected per lane, 33 operations against 16 here, and the activations
// are most of the pointwise step: RNN and LSTM layers at B=64, H=128, I=32 (one thread,
// inference) ran 11-15% faster.
template <int kBytes>
FUSEDRNN_INLINE Floats<kBytes> tanh_(Floats<kBytes> x) {
  using F = Floats<kBytes>;
  const F s = x * x;
  F p(-1.2203446587e-11f);
  p = p * s + F(3.0585010080e-08f);
  p = p * s + F(2.8007460060e-05f);
  p = p * s + F(3.8683279417e-03f);
  p = p * s + F(1.3679915667e-01f);
  p = p * s + F(1.0f);
  F q(1.2873664446e-06f);
  q = q * s + F(3.9386315621e-04f);
  q = q * s + F(2.7245840058e-02f);
  q = q * s + F(4.7013247013e-01f);
  q = q * s + F(1.0f);
  // Past 9.02 the quotient is meaningless (and NaN from inf/inf): the selects replace it. A NaN x
  // fails both comparisons and gives NaN.
  const F r = (x * p) / q;
  return select_greater(x, F(9.02f), F(1.0f), select_less(x, F(-9.02f), F(-1.0f), r));
}

template <int kBytes, class Fn>
FUSEDRNN_INLINE Doubles<kBytes> each_lane(Doubles<kBytes> x, Fn f) {
  Doubles<kBytes> r;
  for (int64_t i = 0; i < Doubles<kBytes>::kLanes; ++i) r.v[i] = f(x.v[i]);
  return r;
}

template <int kBytes>
FUSEDRNN_INLINE Doubles<kBytes> sigmoid(Doubles<kBytes> x) {
  return each_lane(x, [](double a) { return 1.0 / (1.0 + std::exp(-a)); });
}
template <int kBytes>
FUSEDRNN_INLINE Doubles<kBytes> tanh_(Doubles<kBytes> x) {
  return each_lane(x, [](double a) { return std::tanh(a); });
}

// relu and its gradient given the output (relu' taken as 0 at 0, as PyTorch does).
template <class T, int kBytes>
FUSEDRNN_INLINE Vec<T, kBytes> relu(Vec<T, kBytes> a) {
  return select_greater(a, Vec<T, kBytes>(T(0)), a, Vec<T, kBytes>(T(0)));
}
template <class T, int kBytes>
FUSEDRNN_INLINE Vec<T, kBytes> relu_backward(Vec<T, kBytes> out, Vec<T, kBytes> d_out) {
  return select_greater(out, Vec<T, kBytes>(T(0)), d_out, Vec<T, kBytes>(T(0)));
}

}  // namespace
}  // namespace fusedrnn::cpu

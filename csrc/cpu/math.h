// exp, sigmoid, tanh and relu on Vec<T> (cpu/simd.h), for the cells' pointwise math.
//
// float:  branch-free polynomial versions accurate to a few ulp, computed on all lanes at once.
// double: the C library's functions lane by lane. float64 exists for gradient checks, where
//         accuracy is the point and speed is not.
//
// A NaN input gives a NaN output (the clamps are comparisons that keep NaN), never a crash.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/simd.h"

namespace fusedrnn::cpu {
namespace {

using Floats = Vec<float>;
using Ints = int32_t __attribute__((vector_size(64)));

// Casts between vector types of one size reinterpret the bits (the extension's rule).
FUSEDRNN_INLINE Floats bits_as_floats(Ints bits) { return Floats::wrap((Floats::Native)bits); }
FUSEDRNN_INLINE Ints float_bits(Floats x) { return (Ints)x.v; }

FUSEDRNN_INLINE Floats abs_(Floats x) { return bits_as_floats(float_bits(x) & 0x7fffffff); }

// |magnitude| with the sign of `sign`.
FUSEDRNN_INLINE Floats copysign_(Floats magnitude, Floats sign) {
  return bits_as_floats((float_bits(magnitude) & 0x7fffffff) | (float_bits(sign) & int32_t(0x80000000u)));
}

// e^x: x = k*ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial, 2^k built in the exponent
// bits. x is clamped to [-87, 88] so that 2^k stays a normal float (e^-87 ~ 1.6e-38 and
// e^88 ~ 1.7e38 are as far as float goes anyway); k is taken from a NaN-free copy because
// converting NaN to an integer is undefined.
FUSEDRNN_INLINE Floats exp_(Floats x) {
  x = select_less(x, Floats(-87.0f), Floats(-87.0f), x);
  x = select_greater(x, Floats(88.0f), Floats(88.0f), x);
  Floats t = x * Floats(1.44269504088896341f);  // x / ln2
  t = Floats::wrap(t.v == t.v ? t.v : Floats().v);
  const Floats half = select_less(t, Floats(0.0f), Floats(-0.5f), Floats(0.5f));
  const Ints k = __builtin_convertvector((t + half).v, Ints);  // round to nearest
  const Floats kf = Floats::wrap(__builtin_convertvector(k, Floats::Native));
  // ln2 split in a part exact in float and the rest, so r = x - k*ln2 loses no bits.
  const Floats r = (x - kf * Floats(0.693359375f)) - kf * Floats(-2.12194440e-4f);
  Floats p(1.9875691500e-4f);
  p = p * r + Floats(1.3981999507e-3f);
  p = p * r + Floats(8.3334519073e-3f);
  p = p * r + Floats(4.1665795894e-2f);
  p = p * r + Floats(1.6666665459e-1f);
  p = p * r + Floats(5.0000001201e-1f);
  const Floats er = p * r * r + r + Floats(1.0f);
  const Floats scale = bits_as_floats((k + 127) << 23);
  return er * scale;
}

FUSEDRNN_INLINE Floats sigmoid(Floats x) { return Floats(1.0f) / (Floats(1.0f) + exp_(-x)); }

// Near zero, 1 - 2/(e^2x + 1) would lose the relative precision of tiny results, so |x| < 0.625
// uses an odd polynomial; both are computed and one is selected per lane.
FUSEDRNN_INLINE Floats tanh_(Floats x) {
  const Floats ax = abs_(x);
  const Floats z = x * x;
  Floats p(-5.70498872745e-3f);
  p = p * z + Floats(2.06390887954e-2f);
  p = p * z - Floats(5.37397155531e-2f);
  p = p * z + Floats(1.33314422036e-1f);
  p = p * z - Floats(3.33332819422e-1f);
  const Floats small = p * z * x + x;
  const Floats large = copysign_(Floats(1.0f) - Floats(2.0f) / (exp_(Floats(2.0f) * ax) + Floats(1.0f)), x);
  return select_less(ax, Floats(0.625f), small, large);
}

using Doubles = Vec<double>;

template <class F>
FUSEDRNN_INLINE Doubles each_lane(Doubles x, F f) {
  Doubles r;
  for (int64_t i = 0; i < Doubles::kLanes; ++i) r.v[i] = f(x.v[i]);
  return r;
}

FUSEDRNN_INLINE Doubles sigmoid(Doubles x) {
  return each_lane(x, [](double a) { return 1.0 / (1.0 + std::exp(-a)); });
}
FUSEDRNN_INLINE Doubles tanh_(Doubles x) {
  return each_lane(x, [](double a) { return std::tanh(a); });
}

// relu and its gradient given the output (relu' taken as 0 at 0, as PyTorch does).
template <class T>
FUSEDRNN_INLINE Vec<T> relu(Vec<T> a) { return select_greater(a, Vec<T>(T(0)), a, Vec<T>(T(0))); }
template <class T>
FUSEDRNN_INLINE Vec<T> relu_backward(Vec<T> out, Vec<T> d_out) {
  return select_greater(out, Vec<T>(T(0)), d_out, Vec<T>(T(0)));
}

}  // namespace
}  // namespace fusedrnn::cpu

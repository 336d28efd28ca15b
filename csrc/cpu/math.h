// exp, sigmoid, tanh and relu on Vec<T, kBytes> (cpu/simd.h), for the cells' pointwise math.
//
// float:  branch-free polynomial versions (within 1.1 ulp of the exact result, measured),
//         computed on all lanes at once.
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

template <int kBytes>
FUSEDRNN_INLINE Floats<kBytes> abs_(Floats<kBytes> x) {
  using Bits = FloatBits<kBytes>;
  return Bits::as_floats(Bits::of(x) & 0x7fffffff);
}

// |magnitude| with the sign of `sign`.
template <int kBytes>
FUSEDRNN_INLINE Floats<kBytes> copysign_(Floats<kBytes> magnitude, Floats<kBytes> sign) {
  using Bits = FloatBits<kBytes>;
  return Bits::as_floats((Bits::of(magnitude) & 0x7fffffff) | (Bits::of(sign) & int32_t(0x80000000u)));
}

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

// Near zero, 1 - 2/(e^2x + 1) would lose the relative precision of tiny results, so |x| < 0.625
// uses an odd polynomial; both are computed and one is selected per lane.
template <int kBytes>
FUSEDRNN_INLINE Floats<kBytes> tanh_(Floats<kBytes> x) {
  using F = Floats<kBytes>;
  const F ax = abs_(x);
  const F z = x * x;
  F p(-5.70498872745e-3f);
  p = p * z + F(2.06390887954e-2f);
  p = p * z - F(5.37397155531e-2f);
  p = p * z + F(1.33314422036e-1f);
  p = p * z - F(3.33332819422e-1f);
  const F small = p * z * x + x;
  const F large = copysign_(F(1.0f) - F(2.0f) / (exp_(F(2.0f) * ax) + F(1.0f)), x);
  return select_less(ax, F(0.625f), small, large);
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

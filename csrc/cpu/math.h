// Elementwise exp / sigmoid / tanh for the cells' pointwise math on the CPU.
//
// float:  branch-free polynomial versions (a few ulp), written so that a loop over hidden units
//         that calls them vectorizes: no calls into libm, no data-dependent branches.
// double: the C library's functions. float64 exists for gradient checks, where accuracy is the
//         point and speed is not.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fusedrnn {

// e^x in float: x = k*ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial, 2^k built in the
// exponent bits. The input is clamped so that 2^k stays a normal float; e^-87 ~ 1.6e-38 and
// e^88 ~ 1.7e38 are as far as float goes anyway. The clamp is written with comparisons (not
// fmin/fmax) so that a NaN stays NaN; k is taken from a NaN-free copy because converting NaN to
// an integer is undefined.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float t = x * 1.44269504088896341f;  // x / ln2
  t = t == t ? t : 0.0f;
  const int32_t k = static_cast<int32_t>(t + (t >= 0.0f ? 0.5f : -0.5f));  // round to nearest
  const float kf = static_cast<float>(k);
  // ln2 split in a part exact in float and the rest, so r = x - k*ln2 loses no bits.
  const float r = (x - kf * 0.693359375f) - kf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(k + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return er * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// tanh in float: near zero 1 - 2/(e^2x + 1) would lose the relative precision of tiny results,
// so |x| < 0.625 uses an odd polynomial; both branches are computed and one is selected.
inline float tanh_approx(float x) {
  const float ax = std::fabs(x);
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float large_abs = 1.0f - 2.0f / (exp_approx(2.0f * ax) + 1.0f);
  const float large = std::copysign(large_abs, x);
  return ax < 0.625f ? small : large;
}

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Overloads so that cell code reads `tanh_(x)` whatever its type.
inline float tanh_(float x) { return tanh_approx(x); }
inline double tanh_(double x) { return std::tanh(x); }

}  // namespace fusedrnn

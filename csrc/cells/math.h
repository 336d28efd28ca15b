// Scalar sigmoid, tanh and relu on float and double, for the cells (cells/*.h): on the host, and
// on a GPU where nvcc compiles them (with CUDA's math functions there).
//
// The CPU driver runs the same cell code on Vec<T> (several units at once); those overloads are
// in cpu/math.h, in fusedrnn::cpu beside Vec, and argument-dependent lookup finds them from the
// cells, so a cell calls these on scalars and the vectorised ones on vectors without naming either.
// relu' is taken as 0 at 0, as PyTorch does; a NaN gives NaN from sigmoid and tanh, 0 from relu
// (like the vector versions).
#pragma once

#include "host_device.h"

#if !defined(__CUDACC__)
#include <cmath>
#endif

namespace fusedrnn {

#if defined(__CUDACC__)
FUSEDRNN_HD float sigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }
FUSEDRNN_HD double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
FUSEDRNN_HD float tanh_(float x) { return ::tanhf(x); }
FUSEDRNN_HD double tanh_(double x) { return ::tanh(x); }
#else
FUSEDRNN_HD float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
FUSEDRNN_HD double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
FUSEDRNN_HD float tanh_(float x) { return std::tanh(x); }
FUSEDRNN_HD double tanh_(double x) { return std::tanh(x); }
#endif

FUSEDRNN_HD float relu(float a) { return a > 0.0f ? a : 0.0f; }
FUSEDRNN_HD double relu(double a) { return a > 0.0 ? a : 0.0; }

// The gradient of relu given its output.
FUSEDRNN_HD float relu_backward(float out, float d_out) { return out > 0.0f ? d_out : 0.0f; }
FUSEDRNN_HD double relu_backward(double out, double d_out) { return out > 0.0 ? d_out : 0.0; }

}  // namespace fusedrnn

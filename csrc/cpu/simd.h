// Vec<T>: one cache line of T (16 floats, 8 doubles) as a single value, so the cells'
// pointwise math runs on a whole chunk of hidden units at once. It is built on the GCC/Clang
// vector extension: the compiler emits one zmm, two ymm or four xmm operations per Vec
// operation, depending on the instruction set of the function it is inlined into.
//
// Everything here is always inlined and lives in an unnamed namespace: it is compiled into
// functions built for different instruction sets (see recurrence.cc), and an out-of-line copy
// built for one set must never be shared with, or picked by the linker for, another.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__GNUC__) || defined(__clang__)
#define FUSEDRNN_INLINE inline __attribute__((always_inline))
#else
#error "fusedrnn's CPU kernels need GCC or Clang (vector extensions)"
#endif

// Passing 64-byte vectors by value would change the calling convention between instruction
// sets; GCC warns about it. Nothing here is ever called: it is all inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace fusedrnn::cpu {
namespace {

template <class T>
struct Vec {
  static constexpr int64_t kLanes = 64 / static_cast<int64_t>(sizeof(T));
  typedef T Native __attribute__((vector_size(64)));
  Native v;

  FUSEDRNN_INLINE Vec() : v{} {}
  FUSEDRNN_INLINE Vec(T x) : v(Native{} + x) {}  // NOLINT: broadcasting a scalar is the point
  // (Not a constructor: GCC cannot overload one on T and on T's vector type.)
  static FUSEDRNN_INLINE Vec wrap(Native native) {
    Vec r;
    r.v = native;
    return r;
  }

  // The first n lanes from p (n <= kLanes), the rest zero; a full line is one load.
  static FUSEDRNN_INLINE Vec load(const T* p, int64_t n = kLanes) {
    Vec r;
    if (n == kLanes) {
      std::memcpy(&r.v, p, sizeof r.v);
    } else {
      for (int64_t i = 0; i < n; ++i) r.v[i] = p[i];
    }
    return r;
  }

  // Writes the first n lanes to p.
  FUSEDRNN_INLINE void store(T* p, int64_t n = kLanes) const {
    if (n == kLanes) {
      std::memcpy(p, &v, sizeof v);
    } else {
      for (int64_t i = 0; i < n; ++i) p[i] = v[i];
    }
  }

  FUSEDRNN_INLINE Vec operator-() const { return wrap(-v); }
  friend FUSEDRNN_INLINE Vec operator+(Vec a, Vec b) { return wrap(a.v + b.v); }
  friend FUSEDRNN_INLINE Vec operator-(Vec a, Vec b) { return wrap(a.v - b.v); }
  friend FUSEDRNN_INLINE Vec operator*(Vec a, Vec b) { return wrap(a.v * b.v); }
  friend FUSEDRNN_INLINE Vec operator/(Vec a, Vec b) { return wrap(a.v / b.v); }
  FUSEDRNN_INLINE Vec& operator+=(Vec b) { v += b.v; return *this; }
};

// Lane-wise a < b ? x : y (and the other comparisons the math needs).
template <class T>
FUSEDRNN_INLINE Vec<T> select_less(Vec<T> a, Vec<T> b, Vec<T> x, Vec<T> y) { return Vec<T>::wrap(a.v < b.v ? x.v : y.v); }
template <class T>
FUSEDRNN_INLINE Vec<T> select_greater(Vec<T> a, Vec<T> b, Vec<T> x, Vec<T> y) { return Vec<T>::wrap(a.v > b.v ? x.v : y.v); }

}  // namespace
}  // namespace fusedrnn::cpu

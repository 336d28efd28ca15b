// Vec<T, kBytes>: kBytes of T (16, 32 or 64: one xmm, ymm or zmm register) as a single value,
// so the cells' pointwise math runs on several hidden units at once. It is built on the
// GCC/Clang vector extension.
//
// run_for_isa(isa, body) calls body(std::integral_constant<int, kBytes>) from a function
// compiled for that instruction set: 64 bytes under AVX-512, 32 under AVX2, 16 on the baseline
// (SSE2 or any other CPU), so body instantiates its Vec code at the register width its target
// has (a 64-byte vector on a 16-byte target would be lowered through memory, badly).
//
// Everything here is always inlined and lives in an unnamed namespace: it is compiled into
// functions built for different instruction sets, and an out-of-line copy built for one set
// must never be shared with, or picked by the linker for, another.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/gemm.h"  // Isa, current_isa()

#if defined(__GNUC__) || defined(__clang__)
#define FUSEDRNN_INLINE inline __attribute__((always_inline))
#define FUSEDRNN_INLINE_LAMBDA __attribute__((always_inline))
#else
#error "fusedrnn's CPU kernels need GCC or Clang (vector extensions)"
#endif

namespace fusedrnn::cpu {
namespace {

template <class T, int kBytes>
struct Vec {
  static constexpr int64_t kLanes = kBytes / static_cast<int64_t>(sizeof(T));
  typedef T Native __attribute__((vector_size(kBytes)));
  Native v;

  FUSEDRNN_INLINE Vec() : v{} {}
  FUSEDRNN_INLINE Vec(T x) : v(Native{} + x) {}  // NOLINT: broadcasting a scalar is the point
  // (Not a constructor: GCC cannot overload one on T and on T's vector type.)
  static FUSEDRNN_INLINE Vec wrap(Native native) {
    Vec r;
    r.v = native;
    return r;
  }

  // The first n lanes from p (n <= kLanes), the rest zero; a full vector is one load.
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

// Lane-wise a < b ? x : y, and a > b ? x : y.
template <class T, int kBytes>
FUSEDRNN_INLINE Vec<T, kBytes> select_less(Vec<T, kBytes> a, Vec<T, kBytes> b, Vec<T, kBytes> x,
                                           Vec<T, kBytes> y) {
  return Vec<T, kBytes>::wrap(a.v < b.v ? x.v : y.v);
}
template <class T, int kBytes>
FUSEDRNN_INLINE Vec<T, kBytes> select_greater(Vec<T, kBytes> a, Vec<T, kBytes> b, Vec<T, kBytes> x,
                                              Vec<T, kBytes> y) {
  return Vec<T, kBytes>::wrap(a.v > b.v ? x.v : y.v);
}

// The sum of v's lanes, halving the width each time (log2(lanes) dependent adds, not lanes): the
// upper half added to the lower as vectors, down to one lane, so that it stays in registers. The
// same sums in the same order as a loop over the lanes in memory, which made a one-step call
// (T = 1, B = 1, the products reading the weights in place) 1.15-1.36x slower at H = 256-512 on a
// Zen 4, every cell.
template <class T, int kBytes>
FUSEDRNN_INLINE T horizontal_sum(Vec<T, kBytes> v) {
  if constexpr (kBytes == static_cast<int>(sizeof(T))) {
    return v.v[0];
  } else {
    using Half = Vec<T, kBytes / 2>;
    typename Half::Native low, high;
    std::memcpy(&low, &v.v, sizeof low);
    std::memcpy(&high, reinterpret_cast<const char*>(&v.v) + sizeof low, sizeof high);
    return horizontal_sum(Half::wrap(low + high));
  }
}

template <int kBytes>
using VectorBytes = std::integral_constant<int, kBytes>;

#if defined(FUSEDRNN_HAVE_AVX512)
template <class F>
__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma"))) void run_avx512(const F& body) {
  body(VectorBytes<64>{});
}
#endif
#if defined(FUSEDRNN_HAVE_AVX2)
template <class F>
__attribute__((target("avx2,fma"))) void run_avx2(const F& body) {
  body(VectorBytes<32>{});
}
#endif
template <class F>
void run_portable(const F& body) {
  body(VectorBytes<16>{});
}

// Runs body (a generic lambda marked FUSEDRNN_INLINE_LAMBDA, taking the vector width) compiled
// for `isa`: the lambda is inlined into one of the functions above, which differ only in their
// target and the width they pass.
template <class F>
void run_for_isa(Isa isa, const F& body) {
  switch (isa) {
#if defined(FUSEDRNN_HAVE_AVX512)
    case Isa::kAvx512: return run_avx512(body);
#endif
#if defined(FUSEDRNN_HAVE_AVX2)
    case Isa::kAvx2: return run_avx2(body);
#endif
    default: return run_portable(body);
  }
}

}  // namespace
}  // namespace fusedrnn::cpu

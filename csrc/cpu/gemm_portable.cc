// Portable C++ micro-kernels: no intrinsics and no ISA flags, so this file builds and is
// correct on any CPU.
//
// With GCC/Clang a "register" is a 16-byte generic vector, which the compiler lowers to
// the baseline SIMD of the target (SSE2 on x86-64, NEON on AArch64) or to scalars where
// there is none. A panel is then 4 registers, and the 3-row x 1-panel tile uses 12
// accumulators + 4 B registers: the 16 registers SSE2 has. Other compilers get plain
// scalars (a 4 x 1-panel tile) and make of them what they can.
#include <cstring>

#include "gemm_bf16_kernels.h"
#include "gemm_kernels.h"

namespace fusedrnn::cpu::detail {
namespace {

#if defined(__GNUC__)
typedef float Float16Bytes __attribute__((vector_size(16)));
typedef double Double16Bytes __attribute__((vector_size(16)));

template <class Scalar, class Vector>
struct Generic16Bytes {
    using T = Scalar;
    using Reg = Vector;
    static constexpr int kLanes = static_cast<int>(sizeof(Vector) / sizeof(Scalar));
    static constexpr int kRegisters = 16;
    static constexpr int kRows = 3;
    static Reg zero() { return Reg{}; }
    static Reg load(const T* p) {
        Reg r;
        std::memcpy(&r, p, sizeof(r));  // unaligned load, without alignment assumptions
        return r;
    }
    static void store(T* p, Reg v) { std::memcpy(p, &v, sizeof(v)); }
    static Reg broadcast(T x) {
        Reg r;
        for (int i = 0; i < kLanes; ++i) r[i] = x;
        return r;
    }
    static Reg fma(Reg a, Reg b, Reg c) { return a * b + c; }
    static Reg add(Reg a, Reg b) { return a + b; }
};
using PortableFloat = Generic16Bytes<float, Float16Bytes>;
using PortableDouble = Generic16Bytes<double, Double16Bytes>;
#else
template <class Scalar>
struct Scalar4Rows {
    using T = Scalar;
    using Reg = Scalar;
    static constexpr int kLanes = 1;
    static constexpr int kRegisters = 16;  // makes max_panels() pick one panel per tile
    static constexpr int kRows = 4;
    static Reg zero() { return T(0); }
    static Reg load(const T* p) { return *p; }
    static void store(T* p, Reg v) { *p = v; }
    static Reg broadcast(T x) { return x; }
    static Reg fma(Reg a, Reg b, Reg c) { return a * b + c; }
    static Reg add(Reg a, Reg b) { return a + b; }
};
using PortableFloat = Scalar4Rows<float>;
using PortableDouble = Scalar4Rows<double>;
#endif

}  // namespace

const KernelTable& portable_kernel_table() {
    static const KernelTable table{"portable", make_kernels<PortableFloat>(),
                                   make_kernels<PortableDouble>(), nullptr,
                                   nullptr,  // bfloat16 products: gemm_bf16.cc's own loop
                                   &round_rows_bf16};
    return table;
}

}  // namespace fusedrnn::cpu::detail

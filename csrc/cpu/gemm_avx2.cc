// AVX2 + FMA micro-kernels. Compiled with -mavx2 -mfma; gemm.cc only calls into this file
// after checking the CPU supports both.
//
// Tile shapes: one panel (64 bytes) is two ymm registers, and there are only 16 of them,
// so the main tile is 6 rows x 1 panel (6 x 16 floats, 6 x 8 doubles): 12 accumulators
// + 2 B registers + 1 broadcast. Leftover rows get wider tiles (1 row x 3 panels, 2 rows
// x 2 panels) so a batch-of-one GEMV still has 6 independent FMA chains.
#include <immintrin.h>

#include "gemm_bf16_kernels.h"
#include "gemm_kernels.h"

namespace fusedrnn::cpu::detail {
namespace {

struct Avx2Float {
    using T = float;
    using Reg = __m256;
    static constexpr int kLanes = 8;
    static constexpr int kRegisters = 16;
    static constexpr int kRows = 6;
    static Reg zero() { return _mm256_setzero_ps(); }
    static Reg load(const T* p) { return _mm256_loadu_ps(p); }
    static void store(T* p, Reg v) { _mm256_storeu_ps(p, v); }
    static Reg broadcast(T x) { return _mm256_set1_ps(x); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
    static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
};

struct Avx2Double {
    using T = double;
    using Reg = __m256d;
    static constexpr int kLanes = 4;
    static constexpr int kRegisters = 16;
    static constexpr int kRows = 6;
    static Reg zero() { return _mm256_setzero_pd(); }
    static Reg load(const T* p) { return _mm256_loadu_pd(p); }
    static void store(T* p, Reg v) { _mm256_storeu_pd(p, v); }
    static Reg broadcast(T x) { return _mm256_set1_pd(x); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
    static Reg add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
};

// bfloat16 weights widened in registers (gemm_bf16_kernels.h). Tiles of up to 3 rows x 1 panel or
// 1 row x 4 panels (8 accumulators): with 2 broadcasts a row and the 2 converted registers that
// keeps every value in the 16 registers.
struct Avx2Bf16 {
    using Reg = __m256;
    static constexpr int kLanes = 8;
    static constexpr int kMaxTile = 8;
    static constexpr int kMaxRows = 3;
    static Reg zero() { return _mm256_setzero_ps(); }
    static Reg broadcast(float x) { return _mm256_set1_ps(x); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
    static void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
    static __m256i bits(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static Reg odd(const uint16_t* p) {
        return _mm256_castsi256_ps(_mm256_and_si256(bits(p), _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
    }
    static Reg even(const uint16_t* p) { return _mm256_castsi256_ps(_mm256_slli_epi32(bits(p), 16)); }
};

}  // namespace

const KernelTable& avx2_kernel_table() {
    static const KernelTable table{"avx2", make_kernels<Avx2Float>(), make_kernels<Avx2Double>(), nullptr,
                                   &gemm_bf16_shift<Avx2Bf16>};
    return table;
}

}  // namespace fusedrnn::cpu::detail

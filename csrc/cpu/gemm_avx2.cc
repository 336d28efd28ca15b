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

// Packing a panel is a transpose (16 weight rows -> K rows of 16), which one element at a time
// was a third of a T=1, B=1 call at H=64 (measured on a Zen 3) and about a tenth of a batch-1 LSTM
// call at H=256. Here each half panel (8 rows) goes 8 x 8 blocks at a time: 8 loads, 24 shuffles
// and 8 stores. Stages: unpack pairs of rows, shuffle within 128-bit lanes, then swap lanes.
void transpose_rows16(const float* const* rows, int64_t K, float* dst) {
    for (int64_t k0 = 0; k0 < K; k0 += 8) {
        float* out = dst + k0 * 16;
        for (int half = 0; half < 2; ++half) {
            const float* const* r8 = rows + 8 * half;
            __m256 r[8], u[8], v[8];
            for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(r8[i] + k0);
            // u[2i], u[2i+1]: rows 2i and 2i+1 interleaved (elements 0,1,4,5 and 2,3,6,7).
            for (int i = 0; i < 4; ++i) {
                u[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                u[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            // v[4i + j], 128-bit lane L: element 4L + j of rows 4i .. 4i + 3.
            for (int i = 0; i < 2; ++i) {
                v[4 * i + 0] = _mm256_shuffle_ps(u[4 * i + 0], u[4 * i + 2], 0x44);
                v[4 * i + 1] = _mm256_shuffle_ps(u[4 * i + 0], u[4 * i + 2], 0xEE);
                v[4 * i + 2] = _mm256_shuffle_ps(u[4 * i + 1], u[4 * i + 3], 0x44);
                v[4 * i + 3] = _mm256_shuffle_ps(u[4 * i + 1], u[4 * i + 3], 0xEE);
            }
            // Element j of the 8 rows: lane 0 of v[j] and v[4 + j] (j < 4), lane 1 of them (j >= 4).
            for (int j = 0; j < 4; ++j) {
                _mm256_storeu_ps(out + j * 16 + 8 * half, _mm256_permute2f128_ps(v[j], v[4 + j], 0x20));
                _mm256_storeu_ps(out + (j + 4) * 16 + 8 * half, _mm256_permute2f128_ps(v[j], v[4 + j], 0x31));
            }
        }
    }
}

}  // namespace

const KernelTable& avx2_kernel_table() {
    static const KernelTable table{"avx2", make_kernels<Avx2Float>(), make_kernels<Avx2Double>(),
                                   &transpose_rows16, &gemm_bf16_shift<Avx2Bf16>, &round_rows_bf16};
    return table;
}

}  // namespace fusedrnn::cpu::detail

// AVX-512 micro-kernels. Compiled with -mavx512f -mavx512vl -mavx512dq -mavx512bw -mfma;
// gemm.cc only calls into this file after checking the CPU supports those extensions.
//
// Tile shapes: one panel (64 bytes) is exactly one zmm register, so a 12-row x 2-panel
// tile (12 x 32 floats, 12 x 16 doubles) uses 24 accumulators + 2 B registers of the 32.
// Per k that is 24 FMAs against 2 vector loads and 12 broadcasts: enough independent FMAs
// to cover the 2 FMA pipes x 4 cycles latency, with loads well below the load ports' rate.
#include <immintrin.h>

#include "gemm_bf16_kernels.h"
#include "gemm_kernels.h"

namespace fusedrnn::cpu::detail {
namespace {

struct Avx512Float {
    using T = float;
    using Reg = __m512;
    static constexpr int kLanes = 16;
    static constexpr int kRegisters = 32;
    static constexpr int kRows = 12;
    static Reg zero() { return _mm512_setzero_ps(); }
    static Reg load(const T* p) { return _mm512_loadu_ps(p); }
    static void store(T* p, Reg v) { _mm512_storeu_ps(p, v); }
    static Reg broadcast(T x) { return _mm512_set1_ps(x); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
    static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
};

struct Avx512Double {
    using T = double;
    using Reg = __m512d;
    static constexpr int kLanes = 8;
    static constexpr int kRegisters = 32;
    static constexpr int kRows = 12;
    static Reg zero() { return _mm512_setzero_pd(); }
    static Reg load(const T* p) { return _mm512_loadu_pd(p); }
    static void store(T* p, Reg v) { _mm512_storeu_pd(p, v); }
    static Reg broadcast(T x) { return _mm512_set1_pd(x); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
    static Reg add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
};

// Packing a panel is a transpose (16 weight rows -> K rows of 16). One element at a time it cost
// 0.37 ns per weight, a tenth of a batch-1 LSTM call at H=256; a 16 x 16 block in registers takes
// 16 loads, 64 shuffles and 16 stores. Stages: unpack pairs of rows, then shuffle within 128-bit
// lanes, then move whole lanes twice.
void transpose_rows16(const float* const* rows, int64_t K, float* dst) {
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
        __m512 r[16], u[16], v[16], w[16];
        for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(rows[i] + k0);
        for (int i = 0; i < 8; ++i) {
            u[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            u[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // v[4i + j], 128-bit lane L: element 4L + j of rows 4i .. 4i + 3.
        for (int i = 0; i < 4; ++i) {
            v[4 * i + 0] = _mm512_shuffle_ps(u[4 * i + 0], u[4 * i + 2], 0x44);
            v[4 * i + 1] = _mm512_shuffle_ps(u[4 * i + 0], u[4 * i + 2], 0xEE);
            v[4 * i + 2] = _mm512_shuffle_ps(u[4 * i + 1], u[4 * i + 3], 0x44);
            v[4 * i + 3] = _mm512_shuffle_ps(u[4 * i + 1], u[4 * i + 3], 0xEE);
        }
        for (int j = 0; j < 4; ++j) {
            w[j] = _mm512_shuffle_f32x4(v[j], v[4 + j], 0x88);
            w[j + 4] = _mm512_shuffle_f32x4(v[j], v[4 + j], 0xDD);
            w[j + 8] = _mm512_shuffle_f32x4(v[8 + j], v[12 + j], 0x88);
            w[j + 12] = _mm512_shuffle_f32x4(v[8 + j], v[12 + j], 0xDD);
        }
        float* out = dst + k0 * 16;
        for (int j = 0; j < 4; ++j) {
            _mm512_storeu_ps(out + j * 16, _mm512_shuffle_f32x4(w[j], w[j + 8], 0x88));
            _mm512_storeu_ps(out + (8 + j) * 16, _mm512_shuffle_f32x4(w[j], w[j + 8], 0xDD));
            _mm512_storeu_ps(out + (4 + j) * 16, _mm512_shuffle_f32x4(w[j + 4], w[j + 12], 0x88));
            _mm512_storeu_ps(out + (12 + j) * 16, _mm512_shuffle_f32x4(w[j + 4], w[j + 12], 0xDD));
        }
    }
}

// bfloat16 weights widened in registers (gemm_bf16_kernels.h), for AVX-512 CPUs without
// AVX512-BF16. Tiles of up to 4 rows x 4 panels (16 accumulators, 8 broadcasts, 2 converted).
struct Avx512Bf16 {
    using Reg = __m512;
    static constexpr int kLanes = 16;
    static constexpr int kMaxTile = 16;
    static constexpr int kMaxRows = 4;
    static Reg zero() { return _mm512_setzero_ps(); }
    static Reg broadcast(float x) { return _mm512_set1_ps(x); }
    static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
    static void store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
    static __m512i bits(const uint16_t* p) { return _mm512_loadu_si512(p); }
    static Reg odd(const uint16_t* p) {
        return _mm512_castsi512_ps(_mm512_and_si512(bits(p), _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
    }
    static Reg even(const uint16_t* p) { return _mm512_castsi512_ps(_mm512_slli_epi32(bits(p), 16)); }
};

}  // namespace

const KernelTable& avx512_kernel_table() {
    static const KernelTable table{"avx512", make_kernels<Avx512Float>(), make_kernels<Avx512Double>(),
                                   &transpose_rows16, &gemm_bf16_shift<Avx512Bf16>, &round_rows_bf16};
    return table;
}

}  // namespace fusedrnn::cpu::detail

// AVX-512 micro-kernels. Compiled with -mavx512f -mavx512vl -mavx512dq -mavx512bw -mfma;
// gemm.cc only calls into this file after checking the CPU supports those extensions.
//
// Tile shapes: one panel (64 bytes) is exactly one zmm register, so a 12-row x 2-panel
// tile (12 x 32 floats, 12 x 16 doubles) uses 24 accumulators + 2 B registers of the 32.
// Per k that is 24 FMAs against 2 vector loads and 12 broadcasts: enough independent FMAs
// to cover the 2 FMA pipes x 4 cycles latency, with loads well below the load ports' rate.
#include <immintrin.h>

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

}  // namespace

const KernelTable& avx512_kernel_table() {
    static const KernelTable table{"avx512", make_kernels<Avx512Float>(), make_kernels<Avx512Double>()};
    return table;
}

}  // namespace fusedrnn::cpu::detail

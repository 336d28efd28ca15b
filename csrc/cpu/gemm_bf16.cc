// bfloat16-weight products: rounding, packing, dispatch, and the portable loop (see gemm_bf16.h).
#include "cpu/gemm_bf16.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "cpu/buffer.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16_kernels.h"  // (bf16_bits: the rounding the kernels' loops use too)

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fusedrnn::cpu {
namespace {

constexpr int64_t kCols = kPanel<float>;  // 16 columns a panel, as the float32 GEMM's

int64_t pairs(int64_t K) { return (K + 1) / 2; }

void gemm_bf16_portable(int64_t M, int64_t N, int64_t Kp, const uint32_t* A, const uint16_t* Bp, float* C,
                        int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    const uint32_t* a = A + i * Kp;
    for (int64_t j0 = 0; j0 < N; j0 += kCols) {
      const uint16_t* panel = Bp + j0 / kCols * Kp * 2 * kCols;
      float acc[kCols] = {};
      for (int64_t q = 0; q < Kp; ++q) {
        const float a_even = from_bf16(static_cast<uint16_t>(a[q]));
        const float a_odd = from_bf16(static_cast<uint16_t>(a[q] >> 16));
        const uint16_t* b = panel + q * 2 * kCols;
        // The odd k first, then the even one, each added with one rounding, as VDPBF16PS does.
        for (int64_t j = 0; j < kCols; ++j) acc[j] += a_odd * from_bf16(b[2 * j + 1]);
        for (int64_t j = 0; j < kCols; ++j) acc[j] += a_even * from_bf16(b[2 * j]);
      }
      const int64_t n = N - j0 < kCols ? N - j0 : kCols;
      std::memcpy(C + i * ldc + j0, acc, sizeof(float) * n);
    }
  }
}

}  // namespace

uint16_t to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return static_cast<uint16_t>(detail::bf16_bits(bits));
}

float from_bf16(uint16_t x) {
  const uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

int64_t packed_bf16_size(int64_t K, int64_t N) { return (N + kCols - 1) / kCols * pairs(K) * 2 * kCols; }

void pack_b_bf16(int64_t K, int64_t N, const float* src, const int64_t* col_offset, int64_t k_stride,
                 uint16_t* dst) {
  // Each panel is packed as float32 first (K rows of 16: the ISA's fast transpose for rows of a
  // weight matrix), then rows 2q and 2q + 1 are rounded and paired, column by column, in a loop
  // the compiler vectorizes. Rounding while walking each column, element by element, scattered
  // 2-byte writes: that took 3x the float32 packing's time (a tenth of a batch-1 bf16 call).
  const int64_t Kp = pairs(K);
  Buffer<float> panel(K * kCols);
  const float zeros[kCols] = {};
  for (int64_t j0 = 0; j0 < N; j0 += kCols, dst += Kp * 2 * kCols) {
    pack_b<float>(K, std::min(kCols, N - j0), src, col_offset + j0, k_stride, panel.get());
    for (int64_t q = 0; q < Kp; ++q) {
      const float* even = panel.get() + 2 * q * kCols;
      const float* odd = 2 * q + 1 < K ? even + kCols : zeros;
      uint16_t* out = dst + q * 2 * kCols;
      for (int64_t j = 0; j < kCols; ++j) {
        out[2 * j] = to_bf16(even[j]);
        out[2 * j + 1] = to_bf16(odd[j]);
      }
    }
  }
}

void pack_a_bf16(int64_t M, int64_t K, const float* A, int64_t lda, uint32_t* dst) {
  detail::pack_a_bf16_for_isa()(M, K, A, lda, dst);
}

bool bf16_native() {
#if defined(FUSEDRNN_HAVE_AVX512BF16)
  static const bool cpu_has_it = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return cpu_has_it && current_isa() == Isa::kAvx512;  // FUSEDRNN_ISA / set_isa may ask for less
#else
  return false;
#endif
}

namespace {

// The kernel named `kernel` if this build and CPU have it, else null.
detail::GemmBf16Fn bf16_kernel_named(const char* kernel) {
  const std::string name = kernel ? kernel : "";
  if (name == "portable") return &gemm_bf16_portable;
  if (name == "avx2") return detail::widening_bf16_gemm(static_cast<int>(Isa::kAvx2));
  if (name == "avx512") return detail::widening_bf16_gemm(static_cast<int>(Isa::kAvx512));
#if defined(FUSEDRNN_HAVE_AVX512BF16)
  static const bool cpu_has_it = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  if (name == "avx512bf16" && cpu_has_it) return detail::avx512bf16_gemm();
#endif
  return nullptr;
}

}  // namespace

const char* bf16_kernel() {
  if (bf16_native()) return "avx512bf16";
  // The widening kernels of the current ISA; the portable loop below AVX2.
  switch (current_isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "portable";
  }
}

bool gemm_bf16_with(const char* kernel, int64_t M, int64_t N, int64_t K, const uint32_t* A, const uint16_t* Bp,
                    float* C, int64_t ldc) {
  const detail::GemmBf16Fn fn = bf16_kernel_named(kernel);
  if (!fn) return false;
  if (M > 0 && N > 0) fn(M, N, pairs(K), A, Bp, C, ldc);
  return true;
}

void gemm_bf16(int64_t M, int64_t N, int64_t K, const uint32_t* A, const uint16_t* Bp, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
#if defined(FUSEDRNN_HAVE_AVX512BF16)
  if (bf16_native()) return detail::avx512bf16_gemm()(M, N, pairs(K), A, Bp, C, ldc);
#endif
  const detail::GemmBf16Fn widening = detail::widening_bf16_gemm(static_cast<int>(current_isa()));
  (widening ? widening : &gemm_bf16_portable)(M, N, pairs(K), A, Bp, C, ldc);
}

void gemm_bf16_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const uint16_t* Bp, float* C,
                    int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  // A block of rows is rounded into pairs that stay in L1 (64 rows of K = 256: 32 KiB) while the
  // product reads them; all of B is read once a block, from L2 where it fits.
  constexpr int64_t kRows = 64;
  const int64_t Kp = pairs(K), blocks = (M + kRows - 1) / kRows;
#ifdef _OPENMP
  const int threads = static_cast<int>(std::min<int64_t>(omp_get_max_threads(), blocks));
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
    Buffer<uint32_t> rows_as_pairs(kRows * Kp);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t r0 = block * kRows, rows = std::min(kRows, M - r0);
      pack_a_bf16(rows, K, A + r0 * lda, lda, rows_as_pairs.get());
      gemm_bf16(rows, N, K, rows_as_pairs.get(), Bp, C + r0 * ldc, ldc);
    }
  }
}

}  // namespace fusedrnn::cpu

// cuBLAS behind cuda/gemm.h, loaded at run time (dlopen), never at build time: the module builds
// with a toolkit that has no cuBLAS, and runs with the system toolkit's cuBLAS or that of the
// nvidia-cublas wheel (whose directory fusedrnn/cuda.py passes in) when one is there, else with
// fusedrnn's own GEMM kernel. An emulated build (FUSEDRNN_CUDA_EMULATED) never loads it: the CUDA
// emulator runs no library shipped as machine code.
//
// Which kernel a product runs in (route()):
//   mode "fusedrnn": always our kernel;
//   mode "cublas":   cuBLAS for every product it can address (form()), our kernel for the rest;
//   mode "auto":     cuBLAS for large products it can address, when it loads; our kernel otherwise.
// "Large": M*N*K of at least min_work() multiply-adds (kDefaultMinWork unless a test sets it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fusedrnn::cuda::cublas {

enum class Mode { kAuto, kCublas, kOwn };

// The row-major product C (M x N, row stride ldc, unit column stride) = A (M x K) B (K x N) of
// gemm.h in cuBLAS's column-major terms. Column-major, C is C^T (N x M, leading dimension ldc),
// and C^T = B^T A^T: cuBLAS's first operand comes from B, its second from A. An operand maps onto
// cuBLAS's (op, leading dimension) form when one of its two strides is 1 (the other is then the
// leading dimension, and which one is 1 decides between "N" and "T").
struct Form {
  bool ok = false;        // false: cuBLAS cannot address these strides (or sizes beyond int)
  bool transpose_first;   // op of the first operand (from B): true = CUBLAS_OP_T
  bool transpose_second;  // op of the second operand (from A)
  int m, n, k;            // cuBLAS's m, n, k: N, M, K
  int ld_first, ld_second, ldc;
};
Form form(int64_t M, int64_t N, int64_t K, int64_t a_rs, int64_t a_cs, int64_t b_rs, int64_t b_cs, int64_t ldc);

// Below this many multiply-adds our tiled kernel is used in "auto" mode: a small product is one
// launch either way and cuBLAS's choice of kernel buys nothing there. A first guess, not yet
// measured on a GPU (bench/gpu_check.py is where to measure it).
constexpr int64_t kDefaultMinWork = int64_t(1) << 21;

void set_mode(Mode mode);  // kCublas first loads cuBLAS and makes this device's handle, or throws
Mode mode();
void set_min_work(int64_t multiply_adds);
int64_t min_work();

// Directories to try after the loader's own search (the nvidia-cublas wheel's lib folder).
void set_search_dirs(std::vector<std::string> dirs);
std::string library_name();  // "libcublas.so.<CUDA major of the build>"

// Loads the library once (no device needed); false with the reason when it cannot.
bool load(std::string* why_not);

struct Info {
  bool loaded = false;
  std::string library;  // the path or name it was loaded from
  std::string version;  // "major.minor.patch" of the loaded library
  std::string why_not;  // why it is not loaded (emulated build, not found: where it looked)
};
Info info();

// Whether gemm() sends this product to cuBLAS now; `why` says why (for tests and build_info).
bool route(int64_t M, int64_t N, int64_t K, int64_t a_rs, int64_t a_cs, int64_t b_rs, int64_t b_cs, int64_t ldc,
           std::string* why);

// C (= or +=) A B in cuBLAS on the legacy default stream, the stream of every kernel here. Only
// for a product that route() sent here. A failing status throws, naming the call.
template <class T>
void gemm(const Form& f, const T* A, const T* B, T* C, bool accumulate);

}  // namespace fusedrnn::cuda::cublas

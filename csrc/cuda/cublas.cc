// cuBLAS loaded at run time (see cublas.h). The few entry points used are declared here from
// cuBLAS's documented C API (the v2 names the library exports): no cuBLAS header or library is
// needed to build.
//
// Determinism: cuBLAS's documentation ("Results reproducibility") promises bitwise identical
// results from run to run for one toolkit version on GPUs of one architecture and SM count, as
// long as a single stream is active. Every call here goes to the legacy default stream, the one
// all of fusedrnn's kernels use (a new handle's stream), and the handle keeps its defaults: the
// atomics mode "not allowed" (no split-K with float atomics) and the default math mode, which
// computes float32 products in float32 (no TF32).
#include "cuda/cublas.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <atomic>
#include <climits>
#include <mutex>
#include <stdexcept>

#include "cuda/status.h"

namespace fusedrnn::cuda::cublas {
namespace {

// --- the C API used (cublas_api.h's types, written out) -------------------------------------
struct Context;                 // cublasContext: opaque
using Handle = Context*;        // cublasHandle_t
using Status = int;             // cublasStatus_t
constexpr Status kSuccess = 0;  // CUBLAS_STATUS_SUCCESS
constexpr int kOpN = 0, kOpT = 1;                         // cublasOperation_t
constexpr int kMajorVersion = 0, kMinorVersion = 1, kPatchLevel = 2;  // libraryPropertyType

struct Api {
  Status (*create)(Handle*);             // cublasCreate_v2
  Status (*get_property)(int, int*);     // cublasGetProperty
  Status (*sgemm)(Handle, int, int, int, int, int, const float*, const float*, int, const float*, int, const float*,
                  float*, int);          // cublasSgemm_v2
  Status (*dgemm)(Handle, int, int, int, int, int, const double*, const double*, int, const double*, int,
                  const double*, double*, int);  // cublasDgemm_v2
};

const char* status_name(Status status) {
  switch (status) {
    case 0: return "CUBLAS_STATUS_SUCCESS";
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case 16: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "an unknown cuBLAS status";
  }
}

std::string status_text(Status status, const char* call) {
  return std::string("fusedrnn.cuda: ") + call + " failed: " + status_name(status) + " (" + std::to_string(status) +
         ")";
}

// As check() in status.h does for the CUDA runtime: a failed allocation is a MemoryError in
// Python, every other status a RuntimeError, both naming the call.
void check_cublas(Status status, const char* call) {
  if (status == kSuccess) return;
  if (status == 3) throw OutOfDeviceMemory(status_text(status, call));
  throw std::runtime_error(status_text(status, call));
}

// --- state (guarded by `lock`, but the mode and threshold, read on every product) -----------
std::mutex lock;
std::vector<std::string> search_dirs;
bool tried = false;
Api api{};
Info loaded_info;
// One handle per device, made on the first product there. Handles live as long as the process:
// destroying one from a static destructor may run after the CUDA runtime is gone (the order of
// destructors across libraries is not defined), and the driver frees them when the process ends.
std::vector<Handle> handles;
std::vector<std::string> handle_errors;  // per device, why its handle could not be made ("" = not tried)
std::atomic<Mode> current_mode{Mode::kAuto};
std::atomic<int64_t> current_min_work{kDefaultMinWork};

template <class F>
bool find_symbol(void* library, const char* name, F* out, std::string* why_not) {
  *out = reinterpret_cast<F>(dlsym(library, name));
  if (*out == nullptr) *why_not = std::string("it has no ") + name;
  return *out != nullptr;
}

bool load_locked(std::string* why_not) {
  if (tried) {
    *why_not = loaded_info.why_not;
    return loaded_info.loaded;
  }
  tried = true;
#ifdef FUSEDRNN_CUDA_EMULATED
  loaded_info.why_not = "this build runs in the CUDA emulator, which has no cuBLAS";
#else
  // First the loader's own search (LD_LIBRARY_PATH, the system's toolkit), then the wheel.
  const std::string name = library_name();
  std::vector<std::string> candidates{name};
  for (const std::string& dir : search_dirs) candidates.push_back(dir + "/" + name);
  std::string looked;
  for (const std::string& candidate : candidates) {
    void* library = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      const char* error = dlerror();
      looked += (looked.empty() ? "" : "; ") + (candidate == name ? "the loader's search path" : candidate) + " (" +
                (error ? error : "not loadable") + ")";
      continue;
    }
    std::string missing;
    if (!find_symbol(library, "cublasCreate_v2", &api.create, &missing) ||
        !find_symbol(library, "cublasGetProperty", &api.get_property, &missing) ||
        !find_symbol(library, "cublasSgemm_v2", &api.sgemm, &missing) ||
        !find_symbol(library, "cublasDgemm_v2", &api.dgemm, &missing)) {
      looked += (looked.empty() ? "" : "; ") + candidate + " (" + missing + ")";
      dlclose(library);
      api = Api{};
      continue;
    }
    int major = 0, minor = 0, patch = 0;
    api.get_property(kMajorVersion, &major);
    api.get_property(kMinorVersion, &minor);
    api.get_property(kPatchLevel, &patch);
    loaded_info.loaded = true;
    loaded_info.library = candidate;
    loaded_info.version = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
    loaded_info.why_not.clear();
    return true;
  }
  if (search_dirs.empty()) looked += "; no nvidia-cublas wheel installed";
  loaded_info.why_not = name + " not found (looked in " + looked +
                        "); install it with pip install nvidia-cublas, or a CUDA toolkit that has it";
#endif
  *why_not = loaded_info.why_not;
  return false;
}

// This device's handle, made on first use; nullptr with the reason when cublasCreate fails (tried
// once per device: a later product then runs in our kernel, or set_gemm('cublas') raises again).
Handle handle_locked(std::string* why_not) {
  int device = 0;
  const cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) {
    cudaGetLastError();  // read, so that it does not surface at an unrelated later call
    *why_not = std::string("no CUDA device for a cuBLAS handle: cudaGetDevice failed: ") + cudaGetErrorName(status);
    return nullptr;
  }
  if (static_cast<size_t>(device) >= handles.size()) {
    handles.resize(device + 1, nullptr);
    handle_errors.resize(device + 1);
  }
  if (handles[device] == nullptr && handle_errors[device].empty()) {
    Handle made = nullptr;
    const Status created = api.create(&made);
    if (created == kSuccess) {
      handles[device] = made;
    } else {
      handle_errors[device] = status_text(created, "cublasCreate_v2");
    }
  }
  *why_not = handle_errors[device];
  return handles[device];
}

// An operand R x C at element strides (rs, cs) as cuBLAS sees its transpose (C x R) column-major:
// with cs = 1 the memory already is that transpose (op N, leading dimension rs); with rs = 1 it
// is the operand itself column-major (op T, leading dimension cs).
struct Operand {
  bool ok = false, transpose = false;
  int ld = 0;
};
Operand operand(int64_t R, int64_t C, int64_t rs, int64_t cs) {
  // The stride along a dimension of size 1 is never used: take the one that makes a valid form.
  if (C == 1) cs = rs == 1 ? R : 1;
  if (R == 1) rs = cs == 1 ? C : 1;
  Operand o;
  if (cs == 1 && rs >= C && rs <= INT_MAX) {
    o.ok = true, o.transpose = false, o.ld = static_cast<int>(rs);
  } else if (rs == 1 && cs >= R && cs <= INT_MAX) {
    o.ok = true, o.transpose = true, o.ld = static_cast<int>(cs);
  }
  return o;
}

}  // namespace

Form form(int64_t M, int64_t N, int64_t K, int64_t a_rs, int64_t a_cs, int64_t b_rs, int64_t b_cs, int64_t ldc) {
  Form f{};
  if (M <= 0 || N <= 0 || K <= 0 || M > INT_MAX || N > INT_MAX || K > INT_MAX) return f;
  if (M == 1) ldc = N;  // never used
  if (ldc < N || ldc > INT_MAX) return f;
  const Operand first = operand(K, N, b_rs, b_cs), second = operand(M, K, a_rs, a_cs);
  if (!first.ok || !second.ok) return f;
  f.ok = true;
  f.transpose_first = first.transpose;
  f.transpose_second = second.transpose;
  f.m = static_cast<int>(N), f.n = static_cast<int>(M), f.k = static_cast<int>(K);
  f.ld_first = first.ld, f.ld_second = second.ld, f.ldc = static_cast<int>(ldc);
  return f;
}

std::string library_name() {
  return "libcublas.so." + std::to_string(CUDART_VERSION / 1000);
}

void set_search_dirs(std::vector<std::string> dirs) {
  std::lock_guard<std::mutex> guard(lock);
  search_dirs = std::move(dirs);
  if (!loaded_info.loaded) tried = false;  // look again, there too
}

bool load(std::string* why_not) {
  std::lock_guard<std::mutex> guard(lock);
  return load_locked(why_not);
}

Info info() {
  std::lock_guard<std::mutex> guard(lock);
  std::string ignored;
  load_locked(&ignored);
  return loaded_info;
}

void set_mode(Mode mode) {
  if (mode == Mode::kCublas) {
    std::lock_guard<std::mutex> guard(lock);
    std::string why_not;
    if (!load_locked(&why_not)) throw std::runtime_error("fusedrnn.cuda: cuBLAS cannot be used: " + why_not);
    if (handle_locked(&why_not) == nullptr) {
      throw std::runtime_error("fusedrnn.cuda: cuBLAS (" + loaded_info.library + ") cannot be used: " + why_not);
    }
  }
  current_mode = mode;
}

Mode mode() { return current_mode; }

void set_min_work(int64_t multiply_adds) {
  if (multiply_adds < 0) throw std::invalid_argument("the cuBLAS threshold must not be negative");
  current_min_work = multiply_adds;
}

int64_t min_work() { return current_min_work; }

bool route(int64_t M, int64_t N, int64_t K, int64_t a_rs, int64_t a_cs, int64_t b_rs, int64_t b_cs, int64_t ldc,
           std::string* why) {
  const Mode m = current_mode;
  if (m == Mode::kOwn) return *why = "set_gemm('fusedrnn')", false;
  if (!form(M, N, K, a_rs, a_cs, b_rs, b_cs, ldc).ok) {
    return *why = "cuBLAS cannot address these strides or sizes", false;
  }
  // Multiply-adds, saturating rather than overflowing.
  const double work = double(M) * double(N) * double(K);
  if (m == Mode::kAuto && work < double(current_min_work.load())) {
    return *why = "below the threshold of " + std::to_string(current_min_work.load()) + " multiply-adds", false;
  }
  std::lock_guard<std::mutex> guard(lock);
  std::string why_not;
  if (!load_locked(&why_not) || handle_locked(&why_not) == nullptr) return *why = why_not, false;
  *why = m == Mode::kCublas ? "set_gemm('cublas')" : "a large product";
  return true;
}

template <class T>
void gemm(const Form& f, const T* A, const T* B, T* C, bool accumulate) {
  Handle handle = nullptr;
  {
    std::lock_guard<std::mutex> guard(lock);
    std::string why_not;
    handle = handle_locked(&why_not);  // made by route()
    if (handle == nullptr) throw std::runtime_error("fusedrnn.cuda: no cuBLAS handle: " + why_not);
  }
  const T one = 1, beta = accumulate ? 1 : 0;  // beta 0: C is only written (cuBLAS reads no C then)
  const int op_first = f.transpose_first ? kOpT : kOpN, op_second = f.transpose_second ? kOpT : kOpN;
  if constexpr (sizeof(T) == sizeof(float)) {
    check_cublas(api.sgemm(handle, op_first, op_second, f.m, f.n, f.k, &one, B, f.ld_first, A, f.ld_second, &beta, C,
                           f.ldc),
                 "cublasSgemm_v2");
  } else {
    check_cublas(api.dgemm(handle, op_first, op_second, f.m, f.n, f.k, &one, B, f.ld_first, A, f.ld_second, &beta, C,
                           f.ldc),
                 "cublasDgemm_v2");
  }
}

template void gemm<float>(const Form&, const float*, const float*, float*, bool);
template void gemm<double>(const Form&, const double*, const double*, double*, bool);

}  // namespace fusedrnn::cuda::cublas

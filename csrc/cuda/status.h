// Every CUDA runtime status the backend sees goes through check(): anything but cudaSuccess
// becomes a C++ exception naming the call and the error, which the binding turns into a Python
// exception (std::bad_alloc -> MemoryError for an allocation that failed for want of memory,
// std::runtime_error -> RuntimeError for everything else).
#pragma once

#include <cuda_runtime.h>

#include <new>
#include <stdexcept>
#include <string>

namespace fusedrnn::cuda {

class OutOfDeviceMemory : public std::bad_alloc {
 public:
  explicit OutOfDeviceMemory(std::string what) : what_(std::move(what)) {}
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  std::string what_;
};

inline void check(cudaError_t status, const char* call) {
  if (status == cudaSuccess) return;
  const std::string what = std::string("fusedrnn.cuda: ") + call + " failed: " + cudaGetErrorName(status) + " (" +
                           cudaGetErrorString(status) + ")";
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it: the context is still usable
    throw OutOfDeviceMemory(what);
  }
  throw std::runtime_error(what);
}

// After a kernel launch: a bad configuration shows at once, a failing kernel at the next
// synchronisation (each op ends with one, named after the op).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

}  // namespace fusedrnn::cuda

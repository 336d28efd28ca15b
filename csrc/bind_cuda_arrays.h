// fusedrnn.cuda.DeviceArray: a C-contiguous array in CUDA device memory, the type of the CUDA
// backend's results, and its ways in and out: host copies, and DLPack both ways (a capsule of one
// for other frameworks, a view of another framework's array). bind_device_array() adds the type
// and those functions to fusedrnn._cuda.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bind.h"
#include "cuda/buffer.h"
#include "cuda/status.h"

namespace fusedrnn::bind_cuda {

namespace py = pybind11;

// A C-contiguous array in device memory: a buffer of its own, or another framework's memory
// imported through DLPack (from_dlpack), which it keeps alive.
struct DeviceArray {
  std::shared_ptr<void> memory;  // owns the data: a DeviceBuffer, or the producer's DLPack tensor
  void* ptr = nullptr;
  std::vector<int64_t> shape;
  py::dtype dtype;
  int device = 0;

  DeviceArray(std::vector<int64_t> shape_, py::dtype dtype_) : shape(std::move(shape_)), dtype(std::move(dtype_)) {
    for (const int64_t d : shape) {
      if (d < 0) throw py::value_error("a device array's shape must not be negative, got " + fusedrnn::bind::shape_str(shape));
    }
    fusedrnn::cuda::check(cudaGetDevice(&device), "cudaGetDevice");
    auto buffer = std::make_shared<fusedrnn::cuda::DeviceBuffer>(nbytes());
    ptr = buffer->data();
    memory = std::move(buffer);
  }
  DeviceArray(std::vector<int64_t> shape_, py::dtype dtype_, std::shared_ptr<void> memory_, void* ptr_, int device_)
      : memory(std::move(memory_)), ptr(ptr_), shape(std::move(shape_)), dtype(std::move(dtype_)), device(device_) {}
  int64_t size() const {
    int64_t n = 1;
    for (const int64_t d : shape) n *= d;
    return n;
  }
  int64_t nbytes() const { return size() * dtype.itemsize(); }
  void* data() const { return ptr; }

  py::array numpy() const {
    py::array out(dtype, std::vector<py::ssize_t>(shape.begin(), shape.end()));
    if (nbytes() > 0) {
      fusedrnn::cuda::check(cudaMemcpy(out.mutable_data(), data(), nbytes(), cudaMemcpyDeviceToHost), "cudaMemcpy (device to host)");
    }
    return out;
  }

  py::dict cuda_array_interface() const {
    py::dict d;
    d["shape"] = py::tuple(py::cast(shape));
    d["typestr"] = dtype.attr("str");
    d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(data()), false);
    d["strides"] = py::none();
    d["version"] = 3;
    return d;
  }
};

// A device copy of a host array.
DeviceArray to_device(const py::array& host);

// The DeviceArray type and to_device / from_dlpack / empty, in module m.
void bind_device_array(py::module_& m);

}  // namespace fusedrnn::bind_cuda

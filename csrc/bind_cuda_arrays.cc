// DLPack for fusedrnn.cuda.DeviceArray (bind_cuda_arrays.h), host copies, and the type's binding.
#include "bind_cuda_arrays.h"

#include <Python.h>

namespace fusedrnn::bind_cuda {
namespace {

using fusedrnn::bind::shape_str;
using fusedrnn::cuda::check;

// DLPack (the stable C ABI of dlpack.h, version 0.x "dltensor" capsules), written out here: a
// consumer such as torch.from_dlpack takes the array without a copy.
struct DLDevice {
  int32_t device_type;  // kDLCUDA = 2
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;  // kDLInt 0, kDLUInt 1, kDLFloat 2
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
constexpr int32_t kDLCUDA = 2;

// What a capsule keeps alive: the memory and the shape the DLTensor points at.
struct DLPackHolder {
  DLManagedTensor managed;
  std::shared_ptr<void> memory;
  std::vector<int64_t> shape;
};

py::capsule to_dlpack(const DeviceArray& array) {
  auto* holder = new DLPackHolder{};
  holder->memory = array.memory;
  holder->shape = array.shape;
  const char kind = py::str(array.dtype.attr("kind")).cast<std::string>()[0];
  const uint8_t code = kind == 'f' ? 2 : kind == 'u' ? 1 : kind == 'i' ? 0 : 255;
  if (code == 255) {
    delete holder;
    throw py::type_error("__dlpack__: dtype " + std::string(py::str(array.dtype)) + " has no DLPack code here");
  }
  DLTensor& t = holder->managed.dl_tensor;
  t.data = array.data();
  t.device = DLDevice{kDLCUDA, array.device};
  t.ndim = static_cast<int32_t>(holder->shape.size());
  t.dtype = DLDataType{code, static_cast<uint8_t>(array.dtype.itemsize() * 8), 1};
  t.shape = holder->shape.data();
  t.strides = nullptr;  // C-contiguous
  t.byte_offset = 0;
  holder->managed.manager_ctx = holder;
  holder->managed.deleter = [](DLManagedTensor* self) { delete static_cast<DLPackHolder*>(self->manager_ctx); };
  // A consumer renames the capsule "used_dltensor" and calls the deleter itself; an unused one
  // is deleted here.
  PyObject* capsule = PyCapsule_New(&holder->managed, "dltensor", [](PyObject* self) {
    if (PyCapsule_IsValid(self, "dltensor")) {
      auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(self, "dltensor"));
      if (managed && managed->deleter) managed->deleter(managed);
    }
  });
  if (!capsule) {
    delete holder;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::capsule>(capsule);
}

// Another framework's device array through DLPack, without a copy: a DeviceArray that keeps the
// producer's tensor and calls its deleter when the last reference goes. Legacy "dltensor"
// capsules (what __dlpack__ gives when no max_version is asked), C-contiguous CUDA memory.
DeviceArray from_dlpack(const py::object& obj) {
  py::object capsule_object;
  try {
    // stream 1: the legacy default stream, where these kernels run; the producer orders its
    // pending work before it.
    capsule_object = obj.attr("__dlpack__")(py::arg("stream") = 1);
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    capsule_object = obj.attr("__dlpack__")();
  }
  PyObject* capsule = capsule_object.ptr();
  if (!PyCapsule_IsValid(capsule, "dltensor")) {
    throw py::type_error("__dlpack__ did not return an unused DLPack capsule (\"dltensor\")");
  }
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
  std::shared_ptr<void> owner(managed, [](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter) m->deleter(m);
  });
  // Consumed: the capsule no longer deletes it; `owner` does.
  if (PyCapsule_SetName(capsule, "used_dltensor") != 0) throw py::error_already_set();
  const DLTensor& t = managed->dl_tensor;
  constexpr int32_t kDLCUDAManaged = 13;
  if (t.device.device_type != kDLCUDA && t.device.device_type != kDLCUDAManaged) {
    throw py::type_error("a DLPack device array must be in CUDA memory, got DLPack device type " +
                         std::to_string(t.device.device_type));
  }
  const char kind = t.dtype.code == 2 ? 'f' : t.dtype.code == 1 ? 'u' : t.dtype.code == 0 ? 'i' : '?';
  if (kind == '?' || t.dtype.lanes != 1 || t.dtype.bits % 8 != 0) {
    throw py::type_error("a DLPack device array's dtype must be a plain float or integer type");
  }
  const py::dtype dtype(std::string(1, kind) + std::to_string(t.dtype.bits / 8));
  std::vector<int64_t> shape(t.shape, t.shape + t.ndim);
  if (t.strides) {
    int64_t expected = 1;
    for (int32_t d = t.ndim; d-- > 0;) {
      if (shape[d] > 1 && t.strides[d] != expected) throw py::value_error("a DLPack device array must be C-contiguous");
      expected *= shape[d];
    }
  }
  void* data = static_cast<char*>(t.data) + t.byte_offset;
  return DeviceArray(std::move(shape), dtype, std::move(owner), data, t.device.device_id);
}

}  // namespace

DeviceArray to_device(const py::array& host_in) {
  const py::array host = py::array::ensure(host_in, py::array::c_style);
  if (!host) throw py::type_error("to_device needs an array");
  DeviceArray out(std::vector<int64_t>(host.shape(), host.shape() + host.ndim()), host.dtype());
  if (out.nbytes() > 0) {
    check(cudaMemcpy(out.data(), host.data(), out.nbytes(), cudaMemcpyHostToDevice), "cudaMemcpy (host to device)");
  }
  return out;
}

void bind_device_array(py::module_& m) {
  py::class_<DeviceArray>(m, "DeviceArray", "A C-contiguous array in CUDA device memory (fusedrnn.cuda).")
      .def_property_readonly("shape", [](const DeviceArray& a) { return py::tuple(py::cast(a.shape)); })
      .def_property_readonly("dtype", [](const DeviceArray& a) { return a.dtype; })
      .def_property_readonly("ndim", [](const DeviceArray& a) { return a.shape.size(); })
      .def_property_readonly("size", &DeviceArray::size)
      .def_property_readonly("nbytes", &DeviceArray::nbytes)
      .def_property_readonly("device", [](const DeviceArray& a) { return a.device; })
      .def_property_readonly("__cuda_array_interface__", &DeviceArray::cuda_array_interface)
      .def("numpy", &DeviceArray::numpy, "A host copy as a NumPy array.")
      .def(
          "__dlpack__",
          [](const DeviceArray& a, const py::kwargs&) { return to_dlpack(a); },
          "A DLPack capsule of this array (no copy; the kernels finished before it was returned).")
      .def("__dlpack_device__", [](const DeviceArray& a) { return py::make_tuple(kDLCUDA, a.device); })
      .def("__len__", [](const DeviceArray& a) { return a.shape.empty() ? 0 : a.shape[0]; })
      .def("__repr__", [](const DeviceArray& a) {
        return "DeviceArray(shape=" + shape_str(a.shape) + ", dtype=" + std::string(py::str(a.dtype)) +
               ", device=" + std::to_string(a.device) + ")";
      });
  m.def("to_device", &to_device, py::arg("array"), "A device copy of a host array.");
  m.def("from_dlpack", &from_dlpack, py::arg("array"),
        "A DeviceArray viewing another framework's CUDA array through its __dlpack__, without a copy.");
  m.def(
      "empty",
      [](const std::vector<int64_t>& shape, const py::object& dtype) {
        return DeviceArray(shape, py::dtype::from_args(dtype));
      },
      py::arg("shape"), py::arg("dtype"), "An uninitialised device array.");
}

}  // namespace fusedrnn::bind_cuda

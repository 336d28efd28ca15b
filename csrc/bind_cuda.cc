// The Python module fusedrnn._cuda: the CUDA backend's kernels over device arrays (their type,
// fusedrnn.cuda.DeviceArray, and DLPack: bind_cuda_arrays.h; the GEMM switch: bind_cuda_gemm.cc).
//
// Its caller is fusedrnn.functional (through fusedrnn/_cuda_op.py), which validates arguments
// with messages written for users; the checks here are the last line, as in bind.cc: an input
// must be a C-contiguous device array (anything with __cuda_array_interface__) of the expected
// dtype and shape, read in place without a copy. lengths and mask are host arrays (small: the
// schedule's first steps are computed from them on the host) and are uploaded per call.
// Every CUDA status becomes an exception naming the call (cuda/status.h).
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "bind.h"
#include "bind_cuda_arrays.h"
#include "cuda/buffer.h"
#include "cuda/gemm.h"
#include "cuda/layer.h"
#include "cuda/status.h"
#include "recurrence.h"
#include "schedule.h"

namespace py = pybind11;

namespace fusedrnn::bind_cuda {  // bind_cuda_gemm.cc: the switch between cuBLAS and our GEMM
py::dict gemm_info();
void bind_gemm_switch(py::module_& m);
}  // namespace fusedrnn::bind_cuda

using fusedrnn::CellInfo;
using fusedrnn::CellKind;
using fusedrnn::bind::shape_str;
using fusedrnn::cuda::check;
using fusedrnn::bind_cuda::DeviceArray;

namespace {

// --- device inputs --------------------------------------------------------------------------

// The data pointer of `obj`, a C-contiguous device array of dtype T and exactly `shape` (read
// through its __cuda_array_interface__); None gives null when `optional`.
template <class T>
T* device_checked(const py::object& obj, const char* name, const std::vector<int64_t>& shape, bool optional = false) {
  if (obj.is_none()) {
    if (optional) return nullptr;
    throw py::type_error(std::string(name) + " must be a device array, not None");
  }
  if (!py::hasattr(obj, "__cuda_array_interface__")) {
    throw py::type_error(std::string(name) + " must be a CUDA device array (with __cuda_array_interface__), got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  const py::dict cai = obj.attr("__cuda_array_interface__");
  const auto actual = py::cast<std::vector<int64_t>>(cai["shape"]);
  const std::string typestr = py::cast<std::string>(cai["typestr"]);
  const std::string expected_type = py::cast<std::string>(py::dtype::of<T>().attr("str"));
  if (typestr != expected_type) {
    throw py::type_error(std::string(name) + " has typestr " + typestr + ", expected " + expected_type);
  }
  if (actual != shape) {
    throw py::value_error(std::string(name) + " has shape " + shape_str(actual) + ", expected " + shape_str(shape));
  }
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    const auto strides = py::cast<std::vector<int64_t>>(cai["strides"]);
    int64_t expected = sizeof(T);
    for (size_t d = shape.size(); d-- > 0;) {
      if (shape[d] > 1 && strides[d] != expected) throw py::value_error(std::string(name) + " must be C-contiguous");
      expected *= shape[d];
    }
  }
  auto* data = reinterpret_cast<T*>(py::cast<uintptr_t>(py::tuple(cai["data"])[0]));
  int64_t size = 1;
  for (const int64_t d : shape) size *= d;
  if (size > 0) {
    cudaPointerAttributes attributes{};
    check(cudaPointerGetAttributes(&attributes, data), "cudaPointerGetAttributes");
    if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
      throw py::value_error(std::string(name) + " does not point to device memory");
    }
  }
  return data;
}

// The B values of first_active_steps(args), computed on the host from host lengths/mask, and
// the lengths, mask and first steps uploaded into workspace slots 20..22 (device pointers).
template <class Args>
void upload_schedule(Args& a, const int64_t* lengths, const uint8_t* mask, const int64_t** first_step) {
  Args host = a;
  host.lengths = lengths;
  host.mask = mask;
  const std::vector<int64_t> first = fusedrnn::first_active_steps(host);
  using fusedrnn::cuda::workspace;
  a.lengths = nullptr;
  a.mask = nullptr;
  *first_step = nullptr;
  if (lengths) {
    int64_t* d = workspace<int64_t>(20, a.B);
    check(cudaMemcpy(d, lengths, a.B * sizeof(int64_t), cudaMemcpyHostToDevice), "cudaMemcpy (lengths)");
    a.lengths = d;
  }
  if (mask) {
    uint8_t* d = workspace<uint8_t>(21, a.T_ * a.B);
    check(cudaMemcpy(d, mask, a.T_ * a.B, cudaMemcpyHostToDevice), "cudaMemcpy (mask)");
    a.mask = d;
  }
  if (!first.empty()) {
    int64_t* d = workspace<int64_t>(22, a.B);
    check(cudaMemcpy(d, first.data(), a.B * sizeof(int64_t), cudaMemcpyHostToDevice), "cudaMemcpy (first steps)");
    *first_step = d;
  }
}

const int64_t* host_lengths(const py::object& obj, int64_t B, int64_t T) {
  if (obj.is_none()) return nullptr;
  const int64_t* len = fusedrnn::bind::checked<int64_t>(obj, "lengths", {B});
  for (int64_t b = 0; b < B; ++b) {
    if (len[b] < 0 || len[b] > T) throw py::value_error("lengths[" + std::to_string(b) + "] is outside [0, T]");
  }
  return len;
}

const uint8_t* host_mask(const py::object& obj, const py::object& lengths, int64_t T, int64_t B) {
  if (obj.is_none()) return nullptr;
  if (!lengths.is_none()) throw py::value_error("give lengths or a mask, not both");
  return fusedrnn::bind::checked<uint8_t>(obj, "mask", {T, B});
}

fusedrnn::cuda::Algorithm parse_algorithm(const std::string& name) {
  if (name == "auto") return fusedrnn::cuda::Algorithm::kAuto;
  if (name == "stepwise") return fusedrnn::cuda::Algorithm::kStepwise;
  if (name == "persistent") return fusedrnn::cuda::Algorithm::kPersistent;
  if (name == "warp") return fusedrnn::cuda::Algorithm::kWarp;
  throw py::value_error("algorithm must be 'auto', 'stepwise', 'warp' or 'persistent', got '" + name + "'");
}

std::vector<int64_t> shape_of(const py::object& obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__")) {
    throw py::type_error(std::string(name) + " must be a CUDA device array (with __cuda_array_interface__)");
  }
  return py::cast<std::vector<int64_t>>(py::dict(obj.attr("__cuda_array_interface__"))["shape"]);
}

// The element type named by x's typestr: f(Dtype<float>) or f(Dtype<double>).
template <class F>
decltype(auto) with_device_dtype(const py::object& x, F&& f) {
  const std::string typestr = py::cast<std::string>(py::dict(x.attr("__cuda_array_interface__"))["typestr"]);
  if (typestr == "<f4") return f(fusedrnn::bind::Dtype<float>{});
  if (typestr == "<f8") return f(fusedrnn::bind::Dtype<double>{});
  throw py::type_error("x has typestr " + typestr + ", expected <f4 (float32) or <f8 (float64)");
}

template <class T>
py::object new_device(std::vector<int64_t> shape, T** data, bool wanted = true) {
  if (!wanted) return py::none();
  DeviceArray array(std::move(shape), py::dtype::of<T>());
  *data = static_cast<T*>(array.data());
  return py::cast(std::move(array));
}

// Sizes, x, the weights and the masks that forward and backward share (see bind.cc).
template <class T, class Args>
void check_shared(Args& a, CellKind cell, const CellInfo& info, const py::object& x, const py::object& w_ih,
                  const py::object& w_hh, const py::object& w_hr, const py::object& recurrent_scale, bool reverse,
                  bool repeat_masked_output) {
  const auto x_shape = shape_of(x, "x");
  if (x_shape.size() != 3) throw py::value_error("x must have 3 dimensions (T, B, I)");
  const auto hh_shape = shape_of(w_hh, "w_hh");
  if (hh_shape.size() != 2) throw py::value_error("w_hh must be a 2-d array (G*H, P)");
  int64_t H = hh_shape[1];
  const int64_t P = hh_shape[1];
  if (!w_hr.is_none()) {
    if (cell != CellKind::kLstm) throw py::value_error("only the LSTM takes a projection w_hr");
    const auto hr_shape = shape_of(w_hr, "w_hr");
    if (hr_shape.size() != 2) throw py::value_error("w_hr must be a 2-d array (P, H)");
    H = hr_shape[1];
  }
  const int64_t G = info.gates;
  a.T_ = x_shape[0], a.B = x_shape[1], a.I = x_shape[2], a.H = H, a.P = P;
  a.reverse = reverse;
  a.repeat_masked_output = repeat_masked_output;
  a.x = device_checked<T>(x, "x", {a.T_, a.B, a.I});
  a.w_ih = device_checked<T>(w_ih, "w_ih", {G * H, a.I});
  a.w_hh = device_checked<T>(w_hh, "w_hh", {G * H, P});
  a.w_hr = device_checked<T>(w_hr, "w_hr", {P, H}, true);
  if (!recurrent_scale.is_none() && a.w_hr) {
    throw py::value_error("recurrent_scale (recurrent dropout) does not combine with a projection");
  }
  a.recurrent_scale = device_checked<T>(recurrent_scale, "recurrent_scale", {a.B, P}, true);
}

// forward(cell, x, h0, c0, w_ih, w_hh, w_hr, b_ih, b_hh, recurrent_scale, lengths, mask,
//         repeat_masked_output, reverse, training, algorithm)
//   -> (y, h_n, c_n | None, saved | None), as _core.forward, all device arrays.
py::tuple forward(const std::string& cell_name, const py::object& x, const py::object& h0, const py::object& c0,
                  const py::object& w_ih, const py::object& w_hh, const py::object& w_hr, const py::object& b_ih,
                  const py::object& b_hh, const py::object& recurrent_scale, const py::object& lengths,
                  const py::object& mask, bool repeat_masked_output, bool reverse, bool training,
                  const std::string& algorithm) {
  const CellKind cell = fusedrnn::bind::parse_cell(cell_name);
  const CellInfo info = fusedrnn::cell_info(cell);
  const auto algo = parse_algorithm(algorithm);
  return with_device_dtype(x, [&](auto dtype) -> py::tuple {
    using T = typename decltype(dtype)::type;
    fusedrnn::ForwardArgs<T> a{};
    check_shared<T>(a, cell, info, x, w_ih, w_hh, w_hr, recurrent_scale, reverse, repeat_masked_output);
    const int64_t steps = a.T_, B = a.B, H = a.H, P = a.P, G = info.gates, S = info.saved;
    const bool has_c = info.has_cell_state;
    a.h0 = device_checked<T>(h0, "h0", {B, P}, true);
    a.c0 = has_c ? device_checked<T>(c0, "c0", {B, H}, true) : nullptr;
    a.b_ih = device_checked<T>(b_ih, "b_ih", {G * H}, true);
    a.b_hh = device_checked<T>(b_hh, "b_hh", {G * H}, true);
    const int64_t* len = host_lengths(lengths, B, steps);
    const uint8_t* msk = host_mask(mask, lengths, steps, B);

    py::object y = new_device<T>({steps, B, P}, &a.y);
    py::object h_n = new_device<T>({B, P}, &a.h_n);
    py::object c_n = new_device<T>({B, H}, &a.c_n, has_c);
    py::object saved = py::none();
    if (training) {
      py::object gates = new_device<T>({steps, B, S * H}, &a.saved_gates);
      py::object hs = new_device<T>({steps + 1, B, P}, &a.saved_h);
      py::object cs = new_device<T>({steps + 1, B, H}, &a.saved_c, has_c);
      py::object ms = new_device<T>({steps, B, H}, &a.saved_m, a.w_hr != nullptr);
      saved = py::make_tuple(gates, hs, cs, ms);
    }
    if (steps > 0 && B > 0) {
      std::lock_guard<std::mutex> lock(fusedrnn::cuda::workspace_lock());
      const int64_t* first_step = nullptr;
      upload_schedule(a, len, msk, &first_step);
      py::gil_scoped_release release;
      fusedrnn::cuda::forward<T>(cell, a, first_step, algo);
    }
    return py::make_tuple(y, h_n, c_n, saved);
  });
}

// backward(cell, x, w_ih, w_hh, w_hr, recurrent_scale, lengths, mask, repeat_masked_output,
//          reverse, saved, dy, dh_n, dc_n, want_db_ih, want_db_hh, algorithm, want_dx)
//   -> (dx | None, dh0, dc0 | None, dw_ih, dw_hh, db_ih | None, db_hh | None, dw_hr | None)
py::tuple backward(const std::string& cell_name, const py::object& x, const py::object& w_ih, const py::object& w_hh,
                   const py::object& w_hr, const py::object& recurrent_scale, const py::object& lengths,
                   const py::object& mask, bool repeat_masked_output, bool reverse, const py::tuple& saved,
                   const py::object& dy, const py::object& dh_n, const py::object& dc_n, bool want_db_ih,
                   bool want_db_hh, const std::string& algorithm, bool want_dx) {
  const CellKind cell = fusedrnn::bind::parse_cell(cell_name);
  const CellInfo info = fusedrnn::cell_info(cell);
  const auto algo = parse_algorithm(algorithm);
  return with_device_dtype(x, [&](auto dtype) -> py::tuple {
    using T = typename decltype(dtype)::type;
    if (saved.size() != 4) throw py::value_error("saved must be the 4-tuple that forward returned");
    fusedrnn::BackwardArgs<T> a{};
    check_shared<T>(a, cell, info, x, w_ih, w_hh, w_hr, recurrent_scale, reverse, repeat_masked_output);
    const int64_t steps = a.T_, B = a.B, I = a.I, H = a.H, P = a.P, G = info.gates, S = info.saved;
    const bool has_c = info.has_cell_state;
    a.saved_gates = device_checked<T>(saved[0], "saved gates", {steps, B, S * H});
    a.saved_h = device_checked<T>(saved[1], "saved h", {steps + 1, B, P});
    a.saved_c = has_c ? device_checked<T>(saved[2], "saved c", {steps + 1, B, H}) : nullptr;
    a.saved_m = a.w_hr ? device_checked<T>(saved[3], "saved m", {steps, B, H}) : nullptr;
    a.dy = device_checked<T>(dy, "dy", {steps, B, P}, true);
    a.dh_n = device_checked<T>(dh_n, "dh_n", {B, P}, true);
    a.dc_n = has_c ? device_checked<T>(dc_n, "dc_n", {B, H}, true) : nullptr;
    const int64_t* len = host_lengths(lengths, B, steps);
    const uint8_t* msk = host_mask(mask, lengths, steps, B);

    py::object dx = new_device<T>({steps, B, I}, &a.dx, want_dx);
    py::object dh0 = new_device<T>({B, P}, &a.dh0);
    py::object dc0 = new_device<T>({B, H}, &a.dc0, has_c);
    py::object dw_ih = new_device<T>({G * H, I}, &a.dw_ih);
    py::object dw_hh = new_device<T>({G * H, P}, &a.dw_hh);
    py::object db_ih = new_device<T>({G * H}, &a.db_ih, want_db_ih);
    py::object db_hh = new_device<T>({G * H}, &a.db_hh, want_db_hh);
    py::object dw_hr = new_device<T>({P, H}, &a.dw_hr, a.w_hr != nullptr);
    if (steps > 0 && B > 0) {
      std::lock_guard<std::mutex> lock(fusedrnn::cuda::workspace_lock());
      const int64_t* first_step = nullptr;
      upload_schedule(a, len, msk, &first_step);
      py::gil_scoped_release release;
      fusedrnn::cuda::backward<T>(cell, a, first_step, algo);
    }
    return py::make_tuple(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr);
  });
}

// a @ b (device arrays, 2-d, C-contiguous) through the backend's GEMM interface (cuBLAS or our
// kernel, by the route cuda/cublas.h chooses); transposes are views of the same memory with
// swapped strides (for the tests of every stride pattern).
py::object gemm(const py::object& a, const py::object& b, bool transpose_a, bool transpose_b) {
  const auto a_shape = shape_of(a, "a"), b_shape = shape_of(b, "b");
  if (a_shape.size() != 2 || b_shape.size() != 2) throw py::value_error("a and b must be 2-d");
  const int64_t M = transpose_a ? a_shape[1] : a_shape[0], K = transpose_a ? a_shape[0] : a_shape[1];
  const int64_t N = transpose_b ? b_shape[0] : b_shape[1];
  if ((transpose_b ? b_shape[1] : b_shape[0]) != K) throw py::value_error("the inner dimensions of a and b differ");
  return with_device_dtype(a, [&](auto dtype) -> py::object {
    using T = typename decltype(dtype)::type;
    const T* A = device_checked<T>(a, "a", a_shape);
    const T* Bm = device_checked<T>(b, "b", b_shape);
    T* C = nullptr;
    py::object c = new_device<T>({M, N}, &C);
    {
      std::lock_guard<std::mutex> lock(fusedrnn::cuda::workspace_lock());
      py::gil_scoped_release release;
      fusedrnn::cuda::gemm<T>(M, N, K, A, transpose_a ? 1 : K, transpose_a ? M : 1, Bm, transpose_b ? 1 : N,
                              transpose_b ? K : 1, C, N, false);
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (end of gemm)");
    }
    return c;
  });
}

// A host copy of any C-contiguous device array (anything with __cuda_array_interface__).
py::array to_host(const py::object& obj) {
  const auto shape = shape_of(obj, "array");
  const py::dict cai = obj.attr("__cuda_array_interface__");
  const py::dtype dtype(py::cast<std::string>(cai["typestr"]));
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    const auto strides = py::cast<std::vector<int64_t>>(cai["strides"]);
    int64_t expected = dtype.itemsize();
    for (size_t d = shape.size(); d-- > 0;) {
      if (shape[d] > 1 && strides[d] != expected) throw py::value_error("to_host needs a C-contiguous array");
      expected *= shape[d];
    }
  }
  py::array out(dtype, std::vector<py::ssize_t>(shape.begin(), shape.end()));
  if (out.nbytes() > 0) {
    const auto* data = reinterpret_cast<const void*>(py::cast<uintptr_t>(py::tuple(cai["data"])[0]));
    check(cudaMemcpy(out.mutable_data(), data, out.nbytes(), cudaMemcpyDeviceToHost), "cudaMemcpy (device to host)");
  }
  return out;
}

// Makes `device` current for the calls that follow on this thread (a framework's tensors may live
// on any device; each device has its own workspaces).
void set_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

int device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: none usable, not an error to keep
    return 0;
  }
  return count;
}

py::dict build_info() {
  py::dict info;
#ifdef FUSEDRNN_CUDA_EMULATED
  info["emulator"] = true;
#else
  info["emulator"] = false;
#endif
  info["architectures"] = FUSEDRNN_CUDA_ARCHITECTURES;
  info["nvcc"] = FUSEDRNN_NVCC_VERSION;
  int runtime = 0;
  info["runtime_version"] = cudaRuntimeGetVersion(&runtime) == cudaSuccess ? py::object(py::int_(runtime)) : py::none();
  int driver = 0;
  info["driver_version"] = cudaDriverGetVersion(&driver) == cudaSuccess ? py::object(py::int_(driver)) : py::none();
  cudaGetLastError();
  py::list devices;
  for (int i = 0, n = device_count(); i < n; ++i) {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, i), "cudaGetDeviceProperties");
    py::dict d;
    d["name"] = std::string(prop.name);
    d["compute_capability"] = py::make_tuple(prop.major, prop.minor);
    d["multiprocessors"] = prop.multiProcessorCount;
    d["memory_bytes"] = static_cast<int64_t>(prop.totalGlobalMem);
    devices.append(d);
  }
  info["devices"] = devices;
  info["gemm"] = fusedrnn::bind_cuda::gemm_info();
  return info;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fusedrnn CUDA kernels (see fusedrnn.cuda and fusedrnn.functional for the documented API)";
  py::register_exception<fusedrnn::cuda::OutOfDeviceMemory>(m, "OutOfDeviceMemory", PyExc_MemoryError);

  fusedrnn::bind_cuda::bind_device_array(m);

  m.def("to_host", &to_host, py::arg("array"), "A host copy of a device array (__cuda_array_interface__).");
  m.def("forward", &forward, py::arg("cell"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("w_hr"), py::arg("b_ih"), py::arg("b_hh"), py::arg("recurrent_scale"),
        py::arg("lengths"), py::arg("mask"), py::arg("repeat_masked_output"), py::arg("reverse"), py::arg("training"),
        py::arg("algorithm") = "auto");
  m.def("backward", &backward, py::arg("cell"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("w_hr"),
        py::arg("recurrent_scale"), py::arg("lengths"), py::arg("mask"), py::arg("repeat_masked_output"),
        py::arg("reverse"), py::arg("saved"), py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("want_db_ih"),
        py::arg("want_db_hh"), py::arg("algorithm") = "auto", py::arg("want_dx") = true);
  m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("transpose_a") = false, py::arg("transpose_b") = false,
        "a @ b (or with either transposed) through the backend's GEMM (cuBLAS or its own kernel, as set_gemm says).");
  m.def("persistent_weights_fit", &fusedrnn::cuda::persistent_weights_fit, py::arg("bytes"),
        "Whether this many bytes of weights fit in one block's shared memory (the persistent kernel's cache).");
  m.def("release_workspaces", [] {
    std::lock_guard<std::mutex> lock(fusedrnn::cuda::workspace_lock());
    fusedrnn::cuda::release_workspaces();
  });
  m.def("device_count", &device_count);
  m.def("set_device", &set_device, py::arg("device"), "Makes a device current for the following calls.");
  m.def("build_info", &build_info);
  fusedrnn::bind_cuda::bind_gemm_switch(m);
}

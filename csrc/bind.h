// What the binding's files share (bind.cc, bind_cells.cc): argument checks, new arrays (their
// memory: recycled_arrays.h), the one dtype dispatch and the cell names.
//
// The checks are the last line behind fusedrnn.functional (which validates arguments with
// messages written for users): whatever reaches a kernel has the shape, dtype and layout it
// assumes, so a misuse of _core raises instead of reading out of bounds.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "recurrence.h"
#include "recycled_arrays.h"

namespace fusedrnn::bind {

namespace py = pybind11;

// The CellKind named `name` (the cell table's names, recurrence.h), or ValueError listing them.
inline CellKind parse_cell(const std::string& name) {
  for (const CellKind kind : kCellKinds) {
    if (name == cell_info(kind).name) return kind;
  }
  std::string expected;
  const size_t count = std::size(kCellKinds);
  for (size_t i = 0; i < count; ++i) {
    expected += (i == 0 ? "" : i + 1 < count ? ", " : " or ") + std::string(cell_info(kCellKinds[i]).name);
  }
  throw py::value_error("unknown cell '" + name + "': expected " + expected);
}

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// Checks that `obj` is a C-contiguous array of dtype T and exactly `shape`; returns its data.
// None is allowed (and gives null) only when `optional`.
template <class T>
T* checked(const py::object& obj, const char* name, const std::vector<int64_t>& shape,
           bool optional = false, bool writable = false) {
  if (obj.is_none()) {
    if (optional) return nullptr;
    throw py::type_error(std::string(name) + " must be an array, not None");
  }
  if (!py::isinstance<py::array>(obj)) throw py::type_error(std::string(name) + " must be a numpy array");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().equal(py::dtype::of<T>())) {
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(arr.dtype())) +
                         ", expected " + std::string(py::str(py::dtype::of<T>())));
  }
  std::vector<int64_t> actual(arr.shape(), arr.shape() + arr.ndim());
  if (actual != shape) {
    throw py::value_error(std::string(name) + " has shape " + shape_str(actual) + ", expected " +
                          shape_str(shape));
  }
  if (!(arr.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  if (writable && !arr.writeable()) throw py::value_error(std::string(name) + " must be writable");
  // Inputs may be read-only arrays: the kernels only read them (data(), not mutable_data(),
  // which refuses a read-only array); only `writable` ones are written.
  return static_cast<T*>(const_cast<void*>(arr.data()));
}

// A new array of `shape` for an optional output: stores its data in *data and returns it, or,
// unless `wanted`, leaves *data null and returns None.
template <class T>
py::object new_array_if(bool wanted, const std::vector<int64_t>& shape, T** data) {
  if (!wanted) return py::none();
  auto arr = new_array<T>(shape);
  *data = arr.mutable_data();
  return arr;
}

template <class T>
struct Dtype {
  using type = T;
};

// The one dtype dispatch: calls f(Dtype<float>{}) or f(Dtype<double>{}) by the dtype of `array`
// (float32 or float64, else TypeError naming it `name`) and returns what f returns.
template <class F>
decltype(auto) with_dtype(const char* name, const py::array& array, F&& f) {
  if (array.dtype().equal(py::dtype::of<float>())) return f(Dtype<float>{});
  if (array.dtype().equal(py::dtype::of<double>())) return f(Dtype<double>{});
  throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(array.dtype())) +
                       ", expected float32 or float64");
}

// Defines cell_info() and the scalar cells' test functions (bind_cells.cc).
void def_cells(py::module_& m);

}  // namespace fusedrnn::bind
